// The oracle PRM of `train --prm exact` (core/rm/exact_scorer.ts): step scores are the exact prefix labels of
// the built-in task, shaped like a trained PRM's, with the success reward; unknown questions are errors; the
// raw sum of even these scores pays for repeated steps while Clip and Delta do not.
import assert from "node:assert/strict";
import {
  applyOp,
  generateProblems,
  renderSolution,
  renderStep,
  toMathExample,
} from "../core/data/arithmetic.ts";
import { labelSteps } from "../core/data/step_labels.ts";
import { shapeStepRewards } from "../core/rewards/shaping.ts";
import { repeatProbe } from "../core/rl/repeat_probe.ts";
import { ExactStepScorer } from "../core/rm/exact_scorer.ts";
import { assertClose } from "./util/close.ts";

const problems = generateProblems(40, { seed: "exact-scorer", split: "train" });
const scorer = new ExactStepScorer(problems);

Deno.test("a reference solution scores 1 at every step; a miscopied operand scores 0 from its step on", async () => {
  for (const p of problems) {
    const lines = p.steps.map((s) => s.text);
    const k = p.steps.length - 1, s = p.steps[k];
    const bad = renderStep(s.template, s.op, 7777, s.operands[1], applyOp(s.op, 7777, s.operands[1]));
    const wrong = renderSolution([...lines.slice(0, k), bad], p.finalAnswer);
    const [ok, ko] = await scorer.score([
      { question: p.question, solution: p.answer, goldAnswer: String(p.finalAnswer) },
      {
        question: p.question,
        solution: wrong,
        goldAnswer: String(p.finalAnswer),
        shaping: { kind: "clip_delta", eta: 0.5 },
      },
    ]);
    assert.deepEqual(ok.stepScores, lines.map(() => 1).concat(1));
    assert.equal(ok.success, 1);
    // The miscopied step k and everything after it (the final answer line) score 0; the labels agree.
    const want = lines.map((_, i) => (i < k ? 1 : 0)).concat(0);
    assert.deepEqual(ko.stepScores, want);
    assert.deepEqual(ko.stepScores, labelSteps(p, wrong).labels);
    assert.deepEqual(ko.shapedRewards, Array.from(shapeStepRewards(want, { kind: "clip_delta", eta: 0.5 })));
    // Its final line still gives the gold answer: the outcome is a success although a step is wrong.
    assert.equal(ko.success, 1);
  }
});

Deno.test("steps given as a list score like the same solution text; no gold answer, no success", async () => {
  const p = problems[3];
  const steps = p.answer.split("\n");
  const [a, b] = await scorer.score([{ question: p.question, steps }, {
    question: p.question,
    solution: p.answer,
  }]);
  assert.deepEqual(a, b);
  assert.equal(a.success, null);
  assert.equal(a.ormScore, null);
  assert.deepEqual(scorer.models(), []);
});

Deno.test("a question that is not one of the problems is an error naming the item", async () => {
  await assert.rejects(
    scorer.score([{ question: problems[0].question, solution: "1" }, {
      question: "What is 2+2?",
      solution: "4",
    }]),
    /Cannot score item 1 with exact step labels: its question is not one of the 40 built-in problems/,
  );
});

Deno.test("a PRM that makes no mistakes is still farmed by the raw sum: each repeat of a correct step pays 1", async () => {
  const rows = await repeatProbe(scorer, problems.map(toMathExample), {
    repeats: [0, 1, 3],
    shaping: { eta: 0.5, finalStepZero: true },
  });
  const raw = rows.map((r) => r.returns.none), flat = (k: string) => rows.map((r) => r.returns[k]);
  assert.deepEqual(rows.map((r) => r.copyScore), [1, 1, 1], "a repeated correct step is a correct step");
  assertClose([raw[1] - raw[0], raw[2] - raw[0]], [1, 3], { atol: 1e-9, rtol: 0 }, "raw gain per copy");
  for (const k of ["clip", "delta", "clip_delta"]) {
    const v = flat(k);
    assertClose(v, [v[0], v[0], v[0]], { atol: 1e-9, rtol: 0 }, `${k} return`);
  }
});
