import assert from "node:assert/strict";
import fc from "fast-check";
import { extractAnswer, isCorrect, successReward } from "../core/rewards/answer.ts";

const GSM8K = ["train", "test"].map((split) =>
  new URL(`../../shared/data/gsm8k/${split}.jsonl`, import.meta.url)
);

function readJsonl(url: URL): { question: string; answer: string }[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(url);
  } catch (e) {
    throw new Error(`Cannot read GSM8K data "${url.pathname}": ${(e as Error).message}`);
  }
  return text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l));
}

Deno.test("extractAnswer: worked examples", () => {
  const cases: [string, string | null][] = [
    ["Janet sells 9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"],
    ["#### 1,234", "1234"],
    ["She makes $1,234.00 a day.\n#### $1,234.00.", "1234"],
    ["The answer is 18 dollars.", "18"],
    ["So the final answer is: -7 degrees", "-7"],
    ["Thus \\boxed{\\frac{3}{4}} of the cake", "0.75"],
    ["The answer is $\\boxed{1{,}234}$.", "1234"],
    ["\\boxed{x = 12.50}", "12.5"],
    ["\\boxed{18 \\text{ apples}}", "18"],
    ["He pays 16 - 3 - 4 = 9", "9"],
    ["Total: 16 - 3 - 4", "4"],
    ["He computed 16-3-4", "4"],
    ["The term f(x)-2", "2"],
    ["Interval [1,3]-2", "2"],
    ["Not a thousands group: 12,3456", "3456"],
    ["x = -5", "-5"],
    ["It drops by -$5 overall", "-5"],
    ["Answer: 12.50%", "12.5"],
    ["so it is 1/3 of them", "1/3"],
    ["so it is 2/6 of them", "1/3"],
    ["He has -0.0 left", "0"],
    ["She ate 3/4", "0.75"],
    ["The fraction is 3/0", null],
    ["No numbers here at all", null],
    ["#### (no number)", null],
    ["", null],
    ["Answer = 3 - 4 apples", "3"],
    ["They ran 2.50 km, then 10 km, so 12.5 km total.", "12.5"],
    ["There are 007 agents", "7"],
    ["A huge 123,456,789,012,345,678,901 number", "123456789012345678901"],
    ["1.25", "1.25"],
    ["Cost \u22127 dollars", "-7"],
  ];
  for (const [text, want] of cases) {
    assert.equal(extractAnswer(text), want, `extractAnswer(${JSON.stringify(text)})`);
  }
});

Deno.test("isCorrect and successReward: worked examples", () => {
  assert.equal(isCorrect("so 3/4 of the pie", "0.75"), true);
  assert.equal(isCorrect("The answer is 0.75", "#### 3/4"), true);
  assert.equal(isCorrect("The answer is 0.7", "3/4"), false);
  assert.equal(isCorrect("#### 1234", "Some work.\n#### 1,234"), true);
  assert.equal(isCorrect("I don't know", "#### 5"), false);
  assert.equal(isCorrect("#### 5", "no gold number"), false);
  assert.equal(successReward("The answer is 5.", "#### 5"), 1);
  assert.equal(successReward("The answer is 6.", "#### 5"), 0);
  assert.equal(successReward("The answer is 6.", "5", { correct: 2, wrong: -1 }), -1);
  assert.equal(successReward("\\boxed{5}", "5", { correct: 2, wrong: -1 }), 2);
});

Deno.test("isCorrect: every GSM8K gold answer is correct against itself and wrong against n + 1", () => {
  let total = 0;
  for (const url of GSM8K) {
    const rows = readJsonl(url);
    for (const [i, { answer }] of rows.entries()) {
      const gold = answer.slice(answer.lastIndexOf("####") + 4).trim();
      const n = BigInt(gold.replace(/,/g, ""));
      const where = `${url.pathname} line ${i + 1} (gold "${gold}")`;
      assert.equal(extractAnswer(answer), n.toString(), where);
      assert.ok(isCorrect(answer, answer), `self-check failed: ${where}`);
      assert.ok(isCorrect(answer, gold), `whole text vs number failed: ${where}`);
      assert.ok(!isCorrect(answer, (n + 1n).toString()), `n + 1 accepted: ${where}`);
      assert.ok(!isCorrect(`#### ${n - 1n}`, answer), `n - 1 accepted: ${where}`);
      // Same solution re-phrased as a model would end it.
      const prose = answer.slice(0, answer.lastIndexOf("####")).trimEnd();
      assert.ok(isCorrect(`${prose}\nThe answer is ${gold}.`, answer), `"The answer is" failed: ${where}`);
      assert.ok(isCorrect(`${prose}\nSo the total is $\\boxed{${gold}}$.`, answer), `boxed failed: ${where}`);
      total++;
    }
  }
  assert.equal(total, 7473 + 1319);
});

// Prose without digits or answer markers.
const prose = fc
  .array(
    fc.constantFrom("so", "she", "pays", "in", "total", "then", "we", "get", ",", ".", ":", "\n", "(", "it"),
    {
      maxLength: 8,
    },
  )
  .map((w) => w.join(" "));

/** Decimal string of cents / 100, written with commas, `$`, trailing zeros as chosen. */
function format(cents: number, style: { commas: boolean; dollar: boolean; zeros: number }): string {
  const abs = Math.abs(cents);
  let int = Math.floor(abs / 100).toString();
  if (style.commas) int = int.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const centsPart = (abs % 100).toString().padStart(2, "0");
  let dec = abs % 100 === 0 ? "" : centsPart.replace(/0$/, "");
  if (style.zeros > 0) dec = (dec === "" ? "" : dec) + "0".repeat(style.zeros);
  return `${cents < 0 ? "-" : ""}${style.dollar ? "$" : ""}${int}${dec === "" ? "" : "." + dec}`;
}

Deno.test("isCorrect: formatting and surrounding prose never change the verdict", () => {
  const style = fc.record({
    commas: fc.boolean(),
    dollar: fc.boolean(),
    zeros: fc.integer({ min: 0, max: 3 }),
  });
  fc.assert(
    fc.property(
      fc.integer({ min: -1e11, max: 1e11 }),
      style,
      style,
      prose,
      prose,
      fc.constantFrom("", " dollars", "%", " km per hour", " apples."),
      fc.constantFrom("####", "answer", "boxed", "last"),
      (cents, s1, s2, before, after, unit, marker) => {
        const num = format(cents, s1);
        const body = marker === "####"
          ? `#### ${num}${unit}`
          : marker === "answer"
          ? `The answer is ${num}${unit}`
          : marker === "boxed"
          ? `\\boxed{${num}${unit === "%" ? "\\%" : ""}}`
          : `${num}${unit}`;
        const solution = `${before} ${body} ${marker === "####" ? "" : after}`;
        const want = String(cents / 100);
        assert.equal(extractAnswer(solution), want, JSON.stringify(solution));
        assert.ok(isCorrect(solution, format(cents, s2)));
        assert.ok(isCorrect(solution, `work\n#### ${format(cents, s2)}`));
        assert.ok(!isCorrect(solution, format(cents + 100, s2)));
        assert.ok(!isCorrect(solution, format(cents + 1, s2)));
      },
    ),
    { seed: 4242, numRuns: 2000 },
  );
});

Deno.test("isCorrect: fractions compare by value", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: -1e6, max: 1e6 }),
      fc.integer({ min: 1, max: 1e4 }),
      fc.integer({ min: 1, max: 1e3 }),
      (a, b, k) => {
        assert.equal(extractAnswer(`${a}/${b}`), extractAnswer(`\\frac{${a * k}}{${b * k}}`));
        if (100 % b === 0) assert.ok(isCorrect(`${a}/${b}`, String(a / b)), `${a}/${b} vs ${a / b}`);
        assert.ok(!isCorrect(`${a}/${b}`, `${a + b}/${b}`));
      },
    ),
    { seed: 7, numRuns: 1000 },
  );
});

Deno.test("extractAnswer: never throws and returns null or a canonical number", () => {
  const canonicalRe = /^-?(?:\d+(?:\.\d*[1-9])?|\d+\/\d+)$/;
  const mathy = fc
    .array(
      fc.constantFrom(
        ..."0123456789,.$-/#% \n{}=",
        "\\boxed{",
        "\\frac{",
        "####",
        "answer is",
        "1,234",
        "\u2212",
      ),
      { maxLength: 40 },
    )
    .map((a) => a.join(""));
  fc.assert(
    fc.property(fc.oneof(fc.string({ unit: "binary", maxLength: 200 }), mathy), (text) => {
      const got = extractAnswer(text);
      assert.ok(got === null || canonicalRe.test(got), `non-canonical ${JSON.stringify(got)}`);
      assert.ok(got === null || got !== "-0");
      assert.equal(typeof isCorrect(text, text), "boolean");
    }),
    { seed: 99, numRuns: 3000 },
  );
  assert.equal(extractAnswer(undefined as unknown as string), null);
  assert.equal(extractAnswer("9".repeat(100_000)), "9".repeat(100_000));
});
