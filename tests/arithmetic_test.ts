// Tests for core/data/rng.ts and core/data/arithmetic.ts (+ templates.ts): the seeded PRNG against an
// independent BigInt mulberry32, FNV-1a test vectors, and property tests of the problem generator
// (determinism, exact arithmetic, GSM8K format, quantities, splits).
import assert from "node:assert/strict";
import fc from "fast-check";
import { fnv1a32, Rng } from "../core/data/rng.ts";
import {
  applyOp,
  ARITHMETIC_TEMPLATES,
  type ArithmeticProblem,
  generateProblem,
  generateProblems,
  problemSplit,
  toMathExample,
} from "../core/data/arithmetic.ts";
import { extractAnswer, isCorrect } from "../core/rewards/answer.ts";
import { splitSteps } from "../core/rewards/steps.ts";

/** Independent mulberry32 in BigInt arithmetic mod 2^32. */
function* mulberryRef(seed: number): Generator<number> {
  const M = 1n << 32n;
  const mul = (a: bigint, b: bigint) => (a * b) % M;
  let s = BigInt(seed >>> 0);
  while (true) {
    s = (s + 0x6d2b79f5n) % M;
    let t = s;
    t = mul(t ^ (t >> 15n), t | 1n);
    t = (t ^ ((t + mul(t ^ (t >> 7n), t | 61n)) % M)) % M;
    yield Number(t ^ (t >> 14n));
  }
}

Deno.test("rng: mulberry32 matches a BigInt reference; draws are in range", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), (seed) => {
      const rng = new Rng(seed);
      const ref = mulberryRef(seed);
      for (let i = 0; i < 20; i++) assert.equal(rng.nextU32(), ref.next().value, `seed ${seed}, draw ${i}`);
    }),
    { seed: 11, numRuns: 200 },
  );
  const rng = new Rng("x");
  const seen = new Set<number>();
  for (let i = 0; i < 2000; i++) {
    const v = rng.int(-3, 4);
    assert.ok(Number.isInteger(v) && v >= -3 && v <= 4, `int out of range: ${v}`);
    seen.add(v);
    const f = rng.next();
    assert.ok(f >= 0 && f < 1);
  }
  assert.equal(seen.size, 8, "every value of [-3, 4] is drawn");
  assert.deepEqual(new Rng(5).shuffle([1, 2, 3, 4, 5]).sort(), [1, 2, 3, 4, 5]);
  assert.throws(() => rng.int(3, 2), /Cannot draw an integer from \[3, 2\]/);
  assert.throws(() => rng.pick([]), /empty array/);
  assert.throws(() => new Rng(NaN), /finite number/);
  // forks are reproducible and differ by label
  assert.equal(new Rng(1).fork("a").nextU32(), new Rng(1).fork("a").nextU32());
  assert.notEqual(new Rng(1).fork("a").nextU32(), new Rng(1).fork("b").nextU32());
});

Deno.test("rng: FNV-1a 32-bit test vectors", () => {
  assert.equal(fnv1a32(""), 0x811c9dc5);
  assert.equal(fnv1a32("a"), 0xe40c292c);
  assert.equal(fnv1a32("foobar"), 0xbf9cf968);
  assert.equal(new Rng("a").nextU32(), new Rng(0xe40c292c).nextU32());
});

/** Numbers written with digits in a text. */
const numbersIn = (s: string) => [...s.matchAll(/\d+/g)].map((m) => Number(m[0]));

/** Checks every invariant of one generated problem. */
function checkProblem(p: ArithmeticProblem): void {
  const n = p.steps.length;
  assert.ok(n >= 2 && n <= 5, `${p.id}: ${n} steps`);
  assert.ok(ARITHMETIC_TEMPLATES.includes(p.template));
  assert.match(p.id, new RegExp(`^${p.template}-[0-9a-f]{8}$`));
  const qNums = numbersIn(p.question);
  for (const q of qNums) assert.ok(p.quantities.includes(q), `${p.id}: question number ${q} not a quantity`);
  for (const q of p.quantities) {
    assert.ok(qNums.includes(q) || q === 2 || q === 12, `${p.id}: quantity ${q} is not in the question`);
  }
  assert.ok(qNums.every((q) => q <= 60 || [100, 200, 500].includes(q)), `${p.id}: large given ${qNums}`);
  p.steps.forEach((s, i) => {
    const ops = s.inputs.map((inp) => {
      if (inp.kind === "given") {
        assert.ok(p.quantities.includes(inp.value), `${p.id} step ${i}: given ${inp.value} not a quantity`);
        return inp.value;
      }
      assert.ok(inp.index < i, `${p.id} step ${i}: refers to a later step`);
      return p.steps[inp.index].value;
    });
    assert.deepEqual(ops, s.operands);
    assert.equal(applyOp(s.op, s.operands[0], s.operands[1]), s.value);
    assert.ok(Number.isInteger(s.value) && s.value >= 0 && s.value < 1000, `${p.id}: value ${s.value}`);
    assert.equal(s.expr, `${s.operands[0]}${s.op}${s.operands[1]}`);
    assert.ok(s.text.includes(`${s.expr}=<<${s.expr}=${s.value}>>${s.value}`), `${p.id}: ${s.text}`);
    assert.ok(!s.text.includes("\n") && !s.text.includes("{"), s.text);
    assert.ok(p.acceptedValues.includes(s.value));
  });
  assert.equal(p.finalAnswer, p.steps[n - 1].value);
  assert.equal(p.answer, [...p.steps.map((s) => s.text), `#### ${p.finalAnswer}`].join("\n"));
  assert.equal(extractAnswer(p.answer), String(p.finalAnswer));
  assert.ok(isCorrect(p.answer, String(p.finalAnswer)));
  assert.deepEqual(splitSteps(p.answer).map((s) => s.text), [
    ...p.steps.map((s) => s.text),
    `#### ${p.finalAnswer}`,
  ]);
  assert.deepEqual(p.acceptedValues, [...new Set(p.acceptedValues)].sort((a, b) => a - b));
  assert.deepEqual(JSON.parse(JSON.stringify(p)), p, "plain JSON data");
}

Deno.test("arithmetic: generated problems are exact, GSM8K-formatted and self-consistent", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 1e9 }), (seed) => {
      for (const p of generateProblems(25, { seed })) checkProblem(p);
    }),
    { seed: 7, numRuns: 40 },
  );
  const p = generateProblems(1, { seed: 1 })[0];
  assert.deepEqual(toMathExample(p), {
    question: p.question,
    answer: p.answer,
    finalAnswer: String(p.finalAnswer),
  });
});

Deno.test("arithmetic: generation is deterministic in the seed", () => {
  fc.assert(
    fc.property(fc.oneof(fc.integer({ min: 0, max: 1e9 }), fc.string()), (seed) => {
      const a = generateProblems(15, { seed });
      assert.deepEqual(generateProblems(15, { seed }), a);
      assert.deepEqual(generateProblems(5, { seed }), a.slice(0, 5), "a prefix of a longer run");
      assert.notDeepEqual(generateProblems(15, { seed: `${seed}x` }), a);
    }),
    { seed: 8, numRuns: 30 },
  );
});

Deno.test("arithmetic: every template and step count 2–5 occurs; filters apply", () => {
  const ps = generateProblems(1500, { seed: "coverage" });
  const templates = new Set(ps.map((p) => p.template));
  assert.deepEqual([...templates].sort(), [...ARITHMETIC_TEMPLATES].sort());
  assert.ok(ARITHMETIC_TEMPLATES.length >= 6);
  const steps = new Set(ps.map((p) => p.steps.length));
  assert.deepEqual([...steps].sort(), [2, 3, 4, 5]);
  assert.equal(new Set(ps.map((p) => p.question)).size, ps.length, "no repeated question");
  for (const p of generateProblems(100, { seed: 1, minSteps: 4, maxSteps: 5 })) {
    assert.ok(p.steps.length >= 4, p.id);
  }
  for (const p of generateProblems(50, { seed: 1, templates: ["ages", "baking"] })) {
    assert.ok(["ages", "baking"].includes(p.template));
  }
  const rng = new Rng(3);
  assert.throws(() => generateProblem(rng, { templates: ["nope"] }), /unknown template "nope"/);
  assert.throws(() => generateProblem(rng, { templates: ["teams"], minSteps: 5 }), /with 5–5 steps/);
  assert.throws(() => generateProblems(-1), /count must be a non-negative integer, got -1/);
  assert.throws(() => generateProblems(1, { testFraction: 1 }), /testFraction must be in \(0, 1\), got 1/);
});

Deno.test("arithmetic: train and test splits are disjoint and sized by testFraction", () => {
  const train = generateProblems(3000, { seed: 1, split: "train" });
  const test = generateProblems(300, { seed: 2, split: "test" });
  const trainQ = new Set(train.map((p) => p.question));
  for (const p of test) {
    assert.ok(!trainQ.has(p.question), `test question in train: ${p.question}`);
    assert.equal(problemSplit(p.question), "test");
  }
  for (const p of train) assert.equal(problemSplit(p.question), "train");
  // Fraction of raw draws landing in the test split ≈ testFraction (binomial, 3σ ≈ 0.013 at n = 5000).
  const rng = new Rng("fraction");
  let inTest = 0;
  for (let i = 0; i < 5000; i++) if (problemSplit(generateProblem(rng).question, 0.1) === "test") inTest++;
  assert.ok(Math.abs(inTest / 5000 - 0.1) < 0.015, `test fraction ${inTest / 5000}`);
  assert.equal(problemSplit("anything", 0.999999), "test");
});
