/**
 * Final-answer extraction and checking for GSM8K-style math word problems.
 *
 * Answers are compared as exact rationals: every recognised number is turned into a canonical string
 * (`"1234"`, `"-0.75"`, `"1/3"`), and two answers match iff their canonical strings are equal, i.e. iff
 * they denote the same rational number (so `0.75 == 3/4`, `1,234.00 == 1234`, `$18 == 18 dollars`).
 *
 * @module
 */

/** Options of {@link successReward}. */
export interface SuccessRewardOptions {
  /** Reward for a correct final answer (default 1). */
  correct?: number;
  /** Reward for a wrong or missing final answer (default 0). */
  wrong?: number;
}

// A number as written in prose or LaTeX-stripped text:
//   optional sign, directly before the digits or `$` and not after a word char, `.` or a closing bracket
//   (so neither `16-3-4` nor `16 - 3 - 4` ends in `-4`),
//   optional `$`, digits with optional thousands commas, optional decimals, optional `/denominator`.
// Group 1: sign, 2: integer part, 3: decimals, 4: denominator.
const NUMBER_RE =
  /(?:(?<![\w.)\]}])([-\u2212])(?:\$\s?)?|(?<![\w.])\$?\s?)(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.(\d+))?(?:\s?\/\s?(\d+)(?!\.?\d))?/g;

// "The answer is 18", "final answer: 18", "Answer = 18".
const ANSWER_IS_RE = /answer\s*(?:is\b|:|=)/gi;

/** Strips the LaTeX wrappers that models put around numbers so that {@link NUMBER_RE} sees plain text. */
function stripLatex(s: string): string {
  return s
    .replace(/\\[dt]?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}/g, "$1/$2")
    .replace(/\\(?:text|mathrm|textbf|mbox|mathbf)\s*\{([^{}]*)\}/g, " $1 ")
    .replace(/\{,\}/g, ",")
    .replace(/\\[,!;: ]/g, "")
    .replace(/\\\$/g, "$")
    .replace(/\\%/g, "%")
    .replace(/\\(?:left|right)\b/g, "");
}

function gcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

/**
 * Canonical string of the rational `sign · (int.dec) / den`: a reduced fraction `p/q` when q has a prime factor
 * other than 2 and 5, otherwise an exact decimal without trailing zeros. Returns null for a zero denominator.
 */
function canonical(sign: string, int: string, dec: string, den: string | undefined): string | null {
  let num = BigInt(int.replace(/,/g, "") + dec);
  let q = 10n ** BigInt(dec.length);
  if (den !== undefined) {
    const d = BigInt(den);
    if (d === 0n) return null;
    q *= d;
  }
  const g = gcd(num, q);
  if (g > 1n) {
    num /= g;
    q /= g;
  }
  const negative = sign !== "" && num !== 0n;
  // q = 2^a 5^b  <=>  exact decimal with max(a, b) digits.
  let rest = q;
  let twos = 0;
  let fives = 0;
  while (rest % 2n === 0n) [rest, twos] = [rest / 2n, twos + 1];
  while (rest % 5n === 0n) [rest, fives] = [rest / 5n, fives + 1];
  let body: string;
  if (rest !== 1n) {
    body = `${num}/${q}`;
  } else {
    const digits = Math.max(twos, fives);
    const scaled = (num * 10n ** BigInt(digits)) / q;
    const s = scaled.toString().padStart(digits + 1, "0");
    // Reduced p/q with q = 2^a 5^b needs exactly max(a, b) decimals, the last one non-zero.
    body = digits === 0 ? s : `${s.slice(0, -digits)}.${s.slice(-digits)}`;
  }
  return negative ? `-${body}` : body;
}

/** Canonical value of the first (or last) number in `s`, or null when there is none. */
function numberIn(s: string, which: "first" | "last"): string | null {
  const re = new RegExp(NUMBER_RE.source, "g");
  let found: RegExpExecArray | null = null;
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    found = m;
    if (which === "first") break;
  }
  if (found === null) return null;
  return canonical(found[1] ?? "", found[2], found[3] ?? "", found[4]);
}

/** First number of an explicit answer segment; if the segment is an equation, the part after the last `=`. */
function segmentAnswer(segment: string): string | null {
  const plain = stripLatex(segment);
  const eq = plain.lastIndexOf("=");
  return (eq >= 0 ? numberIn(plain.slice(eq + 1), "first") : null) ?? numberIn(plain, "first");
}

/** Content of the last `\boxed{...}` (balanced braces), or null when there is no `\boxed`. */
function lastBoxed(text: string): string | null {
  const boxed = text.lastIndexOf("\\boxed");
  const fbox = text.lastIndexOf("\\fbox");
  const at = Math.max(boxed, fbox);
  if (at < 0) return null;
  const open = at + (at === boxed ? 6 : 5);
  // `\boxed 18` without braces: up to the end of the line or of the math span.
  const stop = text.slice(open).search(/[\n$]/);
  let i = text.indexOf("{", open);
  if (i < 0 || (stop >= 0 && open + stop < i)) return text.slice(open, stop >= 0 ? open + stop : undefined);
  const start = ++i;
  for (let depth = 1; i < text.length; i++) {
    if (text[i] === "{") depth++;
    else if (text[i] === "}" && --depth === 0) return text.slice(start, i);
  }
  return text.slice(start);
}

/**
 * Extracts the final numeric answer of a solution and returns it in canonical form, or null when there is none.
 *
 * The first rule that applies wins:
 * 1. `#### n` (GSM8K format): the first number after the last `####`;
 * 2. `\boxed{n}`: the number in the last `\boxed{...}`;
 * 3. `The answer is n` / `answer: n`: the first number after the last such phrase;
 * 4. otherwise the last number in the text.
 * In rules 1–3, a segment that is an equation (`x = 18`) yields the number after its last `=`; an explicit
 * marker with no number after it gives null (no fallback to rule 4).
 *
 * A number may carry a sign, `$`, thousands commas, decimals and a `/denominator` (`3/4`, `\frac{3}{4}`);
 * units, `%` and prose after it are ignored. The canonical form is the exact rational value: a decimal with
 * no trailing zeros when it terminates (`"1234"`, `"-0.75"`), else a reduced fraction (`"1/3"`).
 * Never throws, whatever the input.
 *
 * @example extractAnswer("She makes $1,234.00 a day.\n#### 1,234") // "1234"
 */
export function extractAnswer(text: string): string | null {
  if (typeof text !== "string") return null;
  try {
    const hashes = text.lastIndexOf("####");
    if (hashes >= 0) return segmentAnswer(text.slice(hashes + 4));
    const boxed = lastBoxed(text);
    if (boxed !== null) return segmentAnswer(boxed);
    let answerAt = -1;
    for (const m of text.matchAll(ANSWER_IS_RE)) answerAt = m.index + m[0].length;
    if (answerAt >= 0) return segmentAnswer(text.slice(answerAt));
    return numberIn(stripLatex(text), "last");
  } catch {
    // Defensive: the rules above do not throw on strings, but a checker must never crash a rollout.
    return null;
  }
}

/**
 * Whether the final answer of `solution` equals the gold answer, compared as exact rationals:
 * `extractAnswer(solution) !== null && extractAnswer(solution) === extractAnswer(goldAnswer)`.
 *
 * `goldAnswer` may be a whole GSM8K answer text (ending in `#### n`) or just the number (`"1,234"`).
 * A solution (or gold) without a number is never correct.
 */
export function isCorrect(solution: string, goldAnswer: string): boolean {
  const predicted = extractAnswer(solution);
  return predicted !== null && predicted === extractAnswer(goldAnswer);
}

/**
 * Outcome reward of a solution: `correct` (default 1) if {@link isCorrect}, else `wrong` (default 0).
 */
export function successReward(solution: string, gold: string, opts: SuccessRewardOptions = {}): number {
  const { correct = 1, wrong = 0 } = opts;
  return isCorrect(solution, gold) ? correct : wrong;
}
