// Tests for core/data/equations.ts, core/data/step_labels.ts and core/data/corrupt.ts: worked examples of the
// exact labelling rules, and property tests over generated problems: reference solutions are all-correct,
// every corruption has the promised first error and a wrong final answer, labels are stable and prefix-local.
import assert from "node:assert/strict";
import fc from "fast-check";
import { type ArithmeticProblem, generateProblems } from "../core/data/arithmetic.ts";
import { findEquations, ratKey } from "../core/data/equations.ts";
import { labelSteps } from "../core/data/step_labels.ts";
import { CORRUPTION_KINDS, type CorruptionKind, corruptSolution } from "../core/data/corrupt.ts";
import { Rng } from "../core/data/rng.ts";
import { isCorrect } from "../core/rewards/answer.ts";

/** Equations of a step as [source, holds, value, operands] tuples with exact keys. */
const eqs = (s: string) =>
  findEquations(s).equations.map((e) => [
    e.source,
    e.holds,
    e.value && ratKey(e.value),
    e.operands.map(ratKey).join(" "),
  ]);
const prose = (s: string) => findEquations(s).proseNumbers.map(ratKey);

Deno.test("equations: annotations and visible equations, exact rationals", () => {
  assert.deepEqual(eqs("Tom has 3*4=<<3*4=12>>12 pens."), [
    ["annotation", true, "12", "3 4"],
    ["text", true, "12", "3 4"],
  ]);
  assert.deepEqual(eqs("He pays $1,200 - 300 = $900 in total."), [["text", true, "900", "1200 300"]]);
  assert.deepEqual(eqs("She works 3 x 4 = 12 hours and 2 × (5 + 1) = 12 more."), [
    ["text", true, "12", "3 4"],
    ["text", true, "12", "2 5 1"],
  ]);
  assert.deepEqual(eqs("Half is 7/2 = 3.5 cups"), [["text", true, "7/2", "7 2"]]);
  assert.deepEqual(eqs("Each gets 10/3 = 3.33 apples"), [["text", false, "333/100", "10 3"]]);
  assert.deepEqual(eqs("So 48/2 = <<48/2=24>>24 clips."), [
    ["annotation", true, "24", "48 2"],
    ["text", true, "24", "48 2"],
  ]);
  assert.deepEqual(
    eqs("bad <<3*4=13>>12"),
    [["annotation", false, "13", "3 4"]],
  );
  assert.deepEqual(eqs("<<3*4>>12"), [["annotation", false, null, ""]]);
  assert.deepEqual(eqs("<<5/0=1>>"), [["annotation", false, "1", "5 0"]]);
  assert.deepEqual(eqs("2+3=5=5"), [["text", true, "5", "2 3 5"]]);
  assert.deepEqual(eqs("2+3=5=6"), [["text", false, "6", "2 3 5"]]);
  assert.deepEqual(eqs("Max has 6 boxes"), []);
  assert.deepEqual(prose("Max has 6 boxes, 2 of them 3x bigger"), ["6", "2", "3"]);
  assert.deepEqual(eqs("Total = 12 pens"), []);
  assert.deepEqual(prose("Total = 12 pens"), ["12"]);
  assert.deepEqual(eqs("In week 2, 5+3=8 pens"), [["text", true, "8", "5 3"]]);
  assert.deepEqual(prose("In week 2, 5+3=8 pens"), ["2"]);
  assert.deepEqual(eqs("-4+10=6"), [["text", true, "6", "4 10"]]);
});

/** A fixed problem: Tom buys 3 packs of 4 pens, gives 5 away, buys 6 more. */
const TOM = {
  quantities: [3, 4, 5, 6],
  acceptedValues: [7, 12, 13, 18],
  finalAnswer: 13,
};
const L1 = "Tom buys 3 packs of 4 pens, so he has 3*4=<<3*4=12>>12 pens.";
const L2 = "After giving 5 pens to his sister, he has 12-5=<<12-5=7>>7 pens.";
const L3 = "After buying 6 more pens, he has 7+6=<<7+6=13>>13 pens.";

Deno.test("labelSteps: verdicts of worked examples", () => {
  const verdicts = (text: string) => labelSteps(TOM, text).steps.map((s) => s.verdict);
  const ok = labelSteps(TOM, [L1, L2, L3, "#### 13"].join("\n"));
  assert.deepEqual(ok.labels, [1, 1, 1, 1]);
  assert.deepEqual(ok.steps.map((s) => [s.kind, s.value]), [
    ["equation", "12"],
    ["equation", "7"],
    ["equation", "13"],
    ["answer", "13"],
  ]);
  assert.equal(ok.firstError, -1);
  assert.equal(ok.finalCorrect, true);
  // alternative order (buy before giving): 12+6=18 is an accepted value
  assert.deepEqual(verdicts(`${L1}\nHe has 12+6=18 pens, then 18-5=13.\n#### 13`), [
    "correct",
    "correct",
    "correct",
  ]);
  // arithmetic slip; then propagation: ungrounded operand, off-path result, wrong answer
  assert.deepEqual(
    verdicts("He has 3*4=<<3*4=14>>14 pens.\nThen 14-5=<<14-5=9>>9.\nThen 12-5=9.\n#### 15"),
    ["arithmetic", "ungrounded", "arithmetic", "wrong_answer"],
  );
  // wrong operand from the problem: correct arithmetic, off the solution path
  assert.deepEqual(verdicts(`${L1}\nHe has 12-6=<<12-6=6>>6 pens.`), ["correct", "off_path"]);
  // prose steps: numbers must be quantities or true values
  assert.deepEqual(verdicts("First find the pens.\nHe has 12 pens.\nHe has 11 pens."), [
    "correct",
    "correct",
    "unknown_number",
  ]);
  // an equation step mentioning an unknown number in its prose
  assert.deepEqual(verdicts("After 9 days he has 12-5=7 pens."), ["unknown_number"]);
  // answers in other formats
  assert.deepEqual(verdicts("#### 13.0\n#### $13\n####\n#### 12"), [
    "correct",
    "correct",
    "wrong_answer",
    "wrong_answer",
  ]);
  assert.equal(labelSteps(TOM, "#### 12\n#### 13").finalCorrect, true, "the last #### line decides");
  assert.equal(labelSteps(TOM, L1).finalCorrect, null);
  assert.deepEqual(labelSteps(TOM, "").steps, []);
});

Deno.test("labelSteps: first_error vs independent labels", () => {
  const text = [L1, "He has 12-5=<<12-5=8>>8 pens.", "Recomputing, 12-5=7 and 7+6=13.", "#### 13"].join("\n");
  const first = labelSteps(TOM, text);
  assert.deepEqual(first.labels, [1, 0, 0, 0]);
  assert.equal(first.firstError, 1);
  const indep = labelSteps(TOM, text, { mode: "independent" });
  assert.deepEqual(indep.labels, [1, 0, 1, 1], "later steps that recover are correct on their own");
  assert.deepEqual(indep.steps.map((s) => s.correct), first.steps.map((s) => s.correct));
  assert.throws(
    () => labelSteps(TOM, text, { mode: "nope" as "independent" }),
    /mode must be "first_error" or "independent", got "nope"/,
  );
  assert.throws(() => labelSteps({ ...TOM, finalAnswer: "x" }, text), /final answer "x" is not a number/);
});

const problems = generateProblems(400, { seed: "labels" });
const arbProblem = fc.nat({ max: problems.length - 1 }).map((i) => problems[i]);

Deno.test("labelSteps: every reference solution is all-correct in both modes", () => {
  for (const p of problems) {
    for (const mode of ["first_error", "independent"] as const) {
      const l = labelSteps(p, p.answer, { mode });
      assert.equal(l.firstError, -1, `${p.id}: ${JSON.stringify(l.steps.find((s) => !s.correct))}`);
      assert.deepEqual(l.labels, Array(p.steps.length + 1).fill(1));
      assert.equal(l.finalCorrect, true);
      assert.deepEqual(l.steps.slice(0, -1).map((s) => s.value), p.steps.map((s) => String(s.value)));
    }
  }
});

/** Labels under first_error are a run of 1s then 0s starting at firstError. */
function assertPrefixShape(labels: number[], firstError: number): void {
  const expected = labels.map((_, i) => (firstError < 0 || i < firstError ? 1 : 0));
  assert.deepEqual(labels, expected);
}

Deno.test("corruptSolution: the error is where the kind says, labels are exact and the answer is wrong", () => {
  const nulls: Record<string, number> = {};
  fc.assert(
    fc.property(arbProblem, fc.constantFrom(...CORRUPTION_KINDS), fc.nat(), (p, kind, seed) => {
      const c = corruptSolution(p, new Rng(seed), { kind });
      if (c === null) {
        assert.equal(kind, "repeated_step", `${p.id}: only repeated_step may not apply`);
        nulls[kind] = (nulls[kind] ?? 0) + 1;
        return;
      }
      const lines = c.solution.split("\n");
      const n = p.steps.length;
      assert.equal(
        lines.length,
        { arithmetic_slip: n, wrong_operand: n, skipped_step: n - 1, repeated_step: n + 1 }[kind] + 1,
      );
      assert.equal(lines.at(-1), `#### ${c.finalAnswer}`);
      assert.notEqual(c.finalAnswer, p.finalAnswer);
      assert.ok(!isCorrect(c.solution, String(p.finalAnswer)));
      assert.equal(c.labels.finalCorrect, false);
      assert.ok(c.labels.labels.includes(0));
      const expectedFirst: Record<CorruptionKind, number> = {
        arithmetic_slip: c.step,
        wrong_operand: c.step,
        repeated_step: c.step + 1,
        skipped_step: c.labels.firstError,
      };
      assert.equal(c.labels.firstError, expectedFirst[kind]);
      assert.ok(c.labels.firstError >= c.step);
      assertPrefixShape(c.labels.labels, c.labels.firstError);
      // steps before the error are the reference steps verbatim
      assert.deepEqual(lines.slice(0, c.step), p.steps.slice(0, c.step).map((s) => s.text));
      if (kind === "arithmetic_slip") assert.equal(c.labels.steps[c.step].verdict, "arithmetic");
      // re-labelling is stable: the label of a step depends only on the text
      assert.deepEqual(labelSteps(p, c.solution), c.labels);
    }),
    { seed: 21, numRuns: 600 },
  );
  assert.ok((nulls.repeated_step ?? 0) < 60, `repeated_step did not apply ${nulls.repeated_step} times`);
});

Deno.test("corruptSolution: options, determinism and independent-mode labels", () => {
  const p = problems.find((q) => q.steps.length === 3 && q.template === "shopping")!;
  const a = corruptSolution(p, new Rng(1), { kind: "arithmetic_slip", step: 1 })!;
  assert.equal(a.step, 1);
  assert.deepEqual(corruptSolution(p, new Rng(1), { kind: "arithmetic_slip", step: 1 }), a);
  assert.deepEqual(a.labels.labels, [1, 0, 0, 0]);
  const ind = corruptSolution(p, new Rng(1), { kind: "arithmetic_slip", step: 1, mode: "independent" })!;
  assert.equal(ind.solution, a.solution);
  assert.deepEqual(ind.labels, labelSteps(p, a.solution, { mode: "independent" }));
  assert.equal(ind.labels.labels[0], 1);
  assert.equal(ind.labels.labels[1], 0);
  const skip = corruptSolution(p, new Rng(2), { kind: "skipped_step", step: 2 })!;
  assert.equal(skip.solution, `${p.steps[0].text}\n${p.steps[1].text}\n#### ${p.steps[1].value}`);
  assert.deepEqual(skip.labels.labels, [1, 1, 0]);
  assert.throws(
    () => corruptSolution(p, new Rng(1), { kind: "nope" as CorruptionKind }),
    /unknown kind "nope"/,
  );
  assert.throws(
    () => corruptSolution(p, new Rng(1), { kind: "wrong_operand", step: 3 }),
    /step 3 is not in \[0, 3\)/,
  );
});

/** Random edits of a reference solution: digit changes, dropped and duplicated lines. */
const arbEdited = fc.tuple(
  arbProblem,
  fc.array(fc.tuple(fc.nat(), fc.nat({ max: 9 }), fc.nat({ max: 2 })), { maxLength: 4 }),
)
  .map(([p, edits]): [ArithmeticProblem, string] => {
    let lines = p.answer.split("\n");
    for (const [at, digit, op] of edits) {
      const i = at % lines.length;
      if (op === 0) lines = lines.toSpliced(i, 1);
      else if (op === 1) lines = lines.toSpliced(i, 0, lines[i]);
      else lines[i] = lines[i].replace(/\d(?=\D*$)/, String(digit));
      if (lines.length === 0) lines = ["#### 0"];
    }
    return [p, lines.join("\n")];
  });

Deno.test("labelSteps: labels are deterministic and prefix-local on arbitrary edits", () => {
  fc.assert(
    fc.property(arbEdited, ([p, text]) => {
      const full = labelSteps(p, text, { mode: "independent" });
      assert.deepEqual(labelSteps(p, text, { mode: "independent" }), full);
      const lines = text.split("\n");
      for (let k = 1; k <= lines.length; k++) {
        const prefix = labelSteps(p, lines.slice(0, k).join("\n"), { mode: "independent" });
        assert.deepEqual(prefix.labels, full.labels.slice(0, k), `prefix of ${k} lines`);
      }
      const first = labelSteps(p, text);
      assertPrefixShape(first.labels, first.firstError);
      assert.equal(first.firstError, full.labels.indexOf(0));
      // an untouched reference line is always correct on its own
      full.steps.forEach((s) => {
        if (p.steps.some((r) => r.text === s.text)) assert.equal(s.verdict, "correct", s.text);
      });
    }),
    { seed: 31, numRuns: 300 },
  );
});

Deno.test("labelSteps: finalCorrect is the outcome reward isCorrect", () => {
  fc.assert(
    fc.property(arbEdited, ([p, text]) => {
      const l = labelSteps(p, text);
      assert.equal(l.finalCorrect, text.includes("####") ? isCorrect(text, String(p.finalAnswer)) : null);
      const answers = l.steps.filter((s) => s.kind === "answer");
      if (answers.length) assert.equal(answers.at(-1)!.correct, l.finalCorrect);
    }),
    { seed: 41, numRuns: 200 },
  );
  assert.deepEqual(labelSteps(TOM, "#### \n13").finalCorrect, true, "number on the line after ####");
  assert.deepEqual(labelSteps(TOM, "#### \n13").steps.map((s) => s.verdict), ["wrong_answer", "correct"]);
});
