/**
 * Finding and checking the arithmetic of a solution step, exactly: GSM8K calculator annotations
 * `<<48/2=24>>` and visible equations such as `48/2 = 24`, `3 x 4 = 12` or `$1,200 - 300 = $900`, evaluated
 * with exact rationals (bigint), so `7/2 = 3.5` holds and `10/3 = 3.33` does not.
 *
 * Grammar of an expression (usual precedence, left associative):
 * `expr := term (("+" | "-") term)*`, `term := factor (("*" | "/") factor)*`,
 * `factor := "-" factor | number | "(" expr ")"`, where a number is `\d+(\.\d+)?` or has thousands commas,
 * `$` is ignored, `×`/`x`/`X` (between numbers) is `*`, `÷` is `/` and `−` is `-`.
 *
 * @module
 */

/** An exact rational `n/d` with `d > 0` and `gcd(|n|, d) = 1`. */
export interface Rational {
  n: bigint;
  d: bigint;
}

function gcd(a: bigint, b: bigint): bigint {
  if (a < 0n) a = -a;
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

/** `n/d` reduced; null when `d = 0`. */
export function rational(n: bigint, d = 1n): Rational | null {
  if (d === 0n) return null;
  if (d < 0n) [n, d] = [-n, -d];
  const g = gcd(n, d);
  return g > 1n ? { n: n / g, d: d / g } : { n, d };
}

/** Canonical key of a rational: `"12"`, `"-3"`, `"7/2"`. */
export function ratKey(r: Rational): string {
  return r.d === 1n ? String(r.n) : `${r.n}/${r.d}`;
}

/** Key of an integer or a decimal string, as {@link ratKey} of its value. */
export function numberKey(x: number | string): string {
  const r = parseNumber(String(x));
  if (r === null) throw new Error(`Cannot read number "${x}"`);
  return ratKey(r);
}

/** Value of a number literal (`"1,234.50"`, `"$12"`, `"7"`), or null when it is not one. */
export function parseNumber(s: string): Rational | null {
  const m = /^-?\$?\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?$/.exec(s.trim());
  if (!m) return null;
  const dec = m[2] ?? "";
  const n = BigInt(m[1].replaceAll(",", "") + dec);
  return rational(s.trim().startsWith("-") ? -n : n, 10n ** BigInt(dec.length));
}

type Op = "+" | "-" | "*" | "/";
/** A lexical token of arithmetic text; `brk` is anything else, which ends an equation. */
type Tok =
  | { t: "num"; v: Rational; at: number; len: number }
  | { t: "op"; v: Op }
  | { t: "(" }
  | { t: ")" }
  | { t: "=" }
  | { t: "brk" };

const NUM_RE = /\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?/y;
const OPS: Record<string, Op> = {
  "+": "+",
  "-": "-",
  "−": "-",
  "*": "*",
  "×": "*",
  "·": "*",
  "/": "/",
  "÷": "/",
};

/** Tokens of `s`; whitespace and `$` are dropped. */
function lex(s: string): Tok[] {
  const out: Tok[] = [];
  for (let i = 0; i < s.length;) {
    const c = s[i];
    if (/\s|\$/.test(c)) {
      i++;
      continue;
    }
    NUM_RE.lastIndex = i;
    const m = /\d/.test(c) && !/[A-Za-z]/.test(s[i - 1] ?? "") ? NUM_RE.exec(s) : null;
    if (m) {
      out.push({ t: "num", v: parseNumber(m[0])!, at: i, len: m[0].length });
      i += m[0].length;
      continue;
    }
    const prev = out.at(-1);
    const afterOperand = prev !== undefined && (prev.t === "num" || prev.t === ")");
    if (
      (c === "x" || c === "X") && afterOperand && !/[A-Za-z]/.test(s[i - 1]) &&
      /^\s*[\d($]/.test(s.slice(i + 1))
    ) {
      out.push({ t: "op", v: "*" });
    } else if (c in OPS) out.push({ t: "op", v: OPS[c] });
    else if (c === "(" || c === ")" || c === "=") out.push({ t: c });
    else out.push({ t: "brk" });
    i++;
  }
  return out;
}

/** Result of parsing tokens as one expression: its value (null: division by zero) and its number literals. */
interface Parsed {
  value: Rational | null;
  literals: Rational[];
}

/** Parses `toks` as a whole expression; null when they are not exactly one. */
function parseExpr(toks: readonly Tok[]): Parsed | null {
  let i = 0;
  const literals: Rational[] = [];
  const bin = (a: Rational | null, op: Op, b: Rational | null): Rational | null => {
    if (a === null || b === null) return null;
    if (op === "+") return rational(a.n * b.d + b.n * a.d, a.d * b.d);
    if (op === "-") return rational(a.n * b.d - b.n * a.d, a.d * b.d);
    if (op === "*") return rational(a.n * b.n, a.d * b.d);
    return rational(a.n * b.d, a.d * b.n);
  };
  const factor = (): Rational | null | undefined => {
    const t = toks[i];
    if (t?.t === "op" && t.v === "-") {
      i++;
      const f = factor();
      return f === undefined ? undefined : f && { n: -f.n, d: f.d };
    }
    if (t?.t === "num") {
      i++;
      literals.push(t.v);
      return t.v;
    }
    if (t?.t === "(") {
      i++;
      const e = expr();
      if (e === undefined || toks[i]?.t !== ")") return undefined;
      i++;
      return e;
    }
    return undefined;
  };
  const chain = (ops: Op[], next: () => Rational | null | undefined) => (): Rational | null | undefined => {
    let v = next();
    for (let t = toks[i]; v !== undefined && t?.t === "op" && ops.includes(t.v); t = toks[i]) {
      i++;
      const w = next();
      v = w === undefined ? undefined : bin(v, t.v, w);
    }
    return v;
  };
  const term = chain(["*", "/"], factor);
  const expr = chain(["+", "-"], term);
  const v = expr();
  return v === undefined || i !== toks.length ? null : { value: v, literals };
}

/** One equation `s₀ = s₁ = … = sₖ` (k ≥ 1) found in a step. */
export interface Equation {
  /** Where it was found: a `<<…>>` calculator annotation or the visible text. */
  source: "annotation" | "text";
  /** Whether every side has the same (defined) value. */
  holds: boolean;
  /** Value of the last side (the stated result), or null when undefined (division by zero). */
  value: Rational | null;
  /** Number literals of all sides but the last (the operands). */
  operands: Rational[];
}

/** What {@link findEquations} returns: the equations, and the numbers of the text outside them. */
export interface StepArithmetic {
  equations: Equation[];
  /** Numbers of the visible text that are not part of an equation. */
  proseNumbers: Rational[];
}

/** An equation from parsed sides; a malformed annotation is an equation that does not hold. */
function equation(source: Equation["source"], sides: (Parsed | null)[]): Equation {
  const parsed = sides.filter((p): p is Parsed => p !== null);
  const last = parsed.at(-1)?.value ?? null;
  const holds = parsed.length === sides.length && last !== null &&
    parsed.every((p) => p.value !== null && p.value.n === last.n && p.value.d === last.d);
  return { source, holds, value: last, operands: parsed.slice(0, -1).flatMap((p) => p.literals) };
}

/** Splits a token run at "=" into sides, trimming the first side to its longest parseable suffix. */
function textEquations(run: Tok[], out: Equation[], prose: Rational[]): void {
  const sides: Tok[][] = [[]];
  for (const t of run) t.t === "=" ? sides.push([]) : sides.at(-1)!.push(t);
  const nums = (ts: Tok[]) => ts.flatMap((t) => (t.t === "num" ? [t.v] : []));
  // First side: the shortest prefix to drop so that the rest parses; drop whole sides while none parses.
  let first: Parsed | null = null;
  while (sides.length > 1 && first === null) {
    const side = sides[0];
    for (let s = 0; s < side.length && first === null; s++) {
      first = parseExpr(side.slice(s));
      if (first) prose.push(...nums(side.slice(0, s)));
    }
    if (first === null) prose.push(...nums(sides.shift()!));
  }
  if (first === null) {
    prose.push(...nums(sides[0]));
    return;
  }
  // Last side: its longest parseable prefix; the rest of it is prose.
  const lastSide = sides.at(-1)!;
  let last: Parsed | null = null;
  for (let e = lastSide.length; e > 0 && last === null; e--) {
    last = parseExpr(lastSide.slice(0, e));
    if (last) prose.push(...nums(lastSide.slice(e)));
  }
  if (last === null) {
    prose.push(...nums(lastSide));
    sides.pop();
    if (sides.length < 2) return;
    last = parseExpr(sides.at(-1)!);
  }
  const middle = sides.slice(1, -1).map(parseExpr);
  out.push(equation("text", [first, ...middle, last]));
}

/**
 * The equations of one step: first each `<<lhs=rhs>>` annotation, then the equations of the visible text
 * (annotations removed). Text equations are maximal runs of numbers, operators, brackets and "=" (anything
 * else ends a run); the first side of a run is trimmed to its longest valid suffix and the last to its longest
 * valid prefix, so `he has 3*4=12 pens` yields `3*4 = 12`.
 */
export function findEquations(step: string): StepArithmetic {
  const equations: Equation[] = [];
  const proseNumbers: Rational[] = [];
  for (const m of step.matchAll(/<<([^<>]*)>>/g)) {
    const sides = m[1].split("=").map((s) => {
      const toks = lex(s);
      return toks.some((t) => t.t === "brk") ? null : parseExpr(toks);
    });
    equations.push(equation("annotation", sides.length < 2 ? [null, null] : sides));
  }
  const visible = step.replace(/<<[^<>]*>>/g, "");
  let run: Tok[] = [];
  const flush = () => {
    if (run.some((t) => t.t === "=")) textEquations(run, equations, proseNumbers);
    else proseNumbers.push(...run.flatMap((t) => (t.t === "num" ? [t.v] : [])));
    run = [];
  };
  for (const t of lex(visible)) t.t === "brk" ? flush() : run.push(t);
  flush();
  return { equations, proseNumbers };
}
