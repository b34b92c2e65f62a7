// The error analysis of `eval` (core/rl/error_analysis.ts): each first-error kind from solutions built with a
// known first mistake, on generated problems of every template; per-template accuracy and kind counts.
import assert from "node:assert/strict";
import {
  applyOp,
  type ArithmeticProblem,
  type ArithOp,
  generateProblems,
  renderSolution,
  renderStep,
} from "../core/data/arithmetic.ts";
import { numberKey } from "../core/data/equations.ts";
import { analyseErrors, FIRST_ERROR_KINDS, firstError } from "../core/rl/error_analysis.ts";

const problems = generateProblems(60, { seed: "error-analysis", split: "test" });

/** The reference step lines of `p`. */
const lines = (p: ArithmeticProblem) => p.steps.map((s) => s.text);

/** `p`'s first step rewritten with operands x, y and operator op (its arithmetic annotation consistent). */
function firstStepWith(p: ArithmeticProblem, op: ArithOp, x: number, y: number, shownValue?: number): string {
  const s = p.steps[0], v = applyOp(op, x, y);
  const text = renderStep(s.template, op, x, y, v);
  return shownValue === undefined ? text : text.replaceAll(`=${v}>>${v}`, `=${shownValue}>>${shownValue}`);
}

/** Keys of Q ∪ R, the numbers a correct step may use. */
const known = (p: ArithmeticProblem) => new Set([...p.quantities, ...p.acceptedValues].map(numberKey));

Deno.test("each first-error kind is recognised at the step where it happens", () => {
  const seen = new Set<string>();
  for (const p of problems) {
    const ref = lines(p), n = ref.length, gold = p.finalAnswer;
    assert.equal(firstError(p, p.answer, true), null, "a correct solution has no first error");
    // Cut off before the answer line.
    assert.deepEqual(firstError(p, ref.join("\n"), false), { kind: "no_answer", step: n });
    // The right steps, then a number that is no value of the problem.
    const other = 100003;
    assert.deepEqual(firstError(p, renderSolution(ref, other), false), { kind: "wrong_answer", step: n });
    // Answering an intermediate value after the first step.
    const v0 = p.steps[0].value;
    if (v0 !== gold) {
      assert.deepEqual(firstError(p, renderSolution(ref.slice(0, 1), v0), false), {
        kind: "premature_answer",
        step: 1,
      });
    }
    // A miscopied operand: 7777 is neither given nor an intermediate value.
    const s0 = p.steps[0], [x, y] = s0.operands;
    const miscopied = [firstStepWith(p, s0.op, 7777, y), ...ref.slice(1)];
    assert.deepEqual(firstError(p, renderSolution(miscopied, gold), false), { kind: "ungrounded", step: 0 });
    // The calculator's value disagreeing with the written equation.
    const wrongValue = [firstStepWith(p, s0.op, x, y, applyOp(s0.op, x, y) + 1), ...ref.slice(1)];
    assert.deepEqual(firstError(p, renderSolution(wrongValue, gold), false), { kind: "arithmetic", step: 0 });
    // Given quantities combined by another operation, when that lands off every correct path.
    const K = known(p);
    for (const op of ["+", "*"] as const) {
      const v = applyOp(op, x, y);
      if (op === s0.op || !K.has(numberKey(x)) || !K.has(numberKey(y))) continue;
      if (p.acceptedValues.map(numberKey).includes(numberKey(v))) continue;
      const offPath = [firstStepWith(p, op, x, y), ...ref.slice(1)];
      assert.deepEqual(firstError(p, renderSolution(offPath, gold), false), { kind: "off_path", step: 0 });
      seen.add("off_path");
      break;
    }
  }
  assert.ok(seen.has("off_path"), "no problem of the sample allowed an off-path step");
});

Deno.test("analyseErrors counts kinds over the wrong solutions and accuracy per template", () => {
  const sols = problems.map((p, i) =>
    i % 3 === 0
      ? { response: p.answer, correct: true }
      : i % 3 === 1
      ? { response: lines(p).join("\n"), correct: false }
      : { response: renderSolution(lines(p), 100003), correct: false }
  );
  const a = analyseErrors(problems, sols);
  assert.equal(a.total, 60);
  assert.equal(a.wrong, 40);
  assert.deepEqual(a.firstErrors.map((e) => e.kind), [...FIRST_ERROR_KINDS]);
  const count = (k: string) => a.firstErrors.find((e) => e.kind === k)!.count;
  assert.equal(count("no_answer"), 20);
  assert.equal(count("wrong_answer"), 20);
  assert.equal(a.firstErrors.reduce((s, e) => s + e.count, 0), a.wrong);
  assert.equal(a.perSolution.filter((e) => e === null).length, 20);
  // Per template: totals add up, and each template's count of correct solutions is the ones with i % 3 == 0.
  assert.equal(a.byTemplate.reduce((s, t) => s + t.total, 0), 60);
  for (const t of a.byTemplate) {
    const idx = problems.flatMap((p, i) => (p.template === t.template ? [i] : []));
    assert.equal(t.total, idx.length);
    assert.equal(t.correct, idx.filter((i) => i % 3 === 0).length);
  }
  for (let i = 1; i < a.byTemplate.length; i++) {
    const [u, v] = [a.byTemplate[i - 1], a.byTemplate[i]];
    assert.ok(u.correct / u.total <= v.correct / v.total, "templates are listed from the lowest accuracy");
  }
  assert.throws(() => analyseErrors(problems, sols.slice(1)), /59 solutions for 60 problems/);
});
