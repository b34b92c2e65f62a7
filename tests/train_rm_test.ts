// PRM training sequences (core/rm/train_rm.ts prmTrainExamples): the step-end reads carry the step labels, and
// with numberLabels each number's last token up to the first wrong step is read too, 1 until the first number a
// correct step could not contain, 0 from it on.
import assert from "node:assert/strict";
import { applyOp, generateProblems, renderSolution, renderStep } from "../core/data/arithmetic.ts";
import { builtinStepExamples, exactLabels, knownNumbers, type StepExample } from "../core/rm/labels.ts";
import { prmTrainExamples } from "../core/rm/train_rm.ts";
import { tinyTokenizer } from "./util/mini.ts";

const tokenizer = tinyTokenizer();
const problems = generateProblems(30, { seed: "train-rm", split: "train" });

/** Digit runs of a step, in order. */
const numbersOf = (step: string) => [...step.matchAll(/\d+/g)].map((m) => m[0]);

Deno.test("without number labels, or without known numbers, only the step ends are read", () => {
  const examples = builtinStepExamples(problems.slice(0, 5), { corruptions: 2 });
  const plain = prmTrainExamples(tokenizer, examples);
  const unknown = prmTrainExamples(tokenizer, examples.map(({ known: _, ...ex }) => ex), {
    numberLabels: true,
  });
  for (const [i, ex] of examples.entries()) {
    assert.deepEqual(plain[i].targets, ex.labels);
    assert.equal(plain[i].reads.length, ex.steps.length);
    assert.deepEqual(unknown[i], plain[i]);
  }
});

Deno.test("a reference solution reads every number's last digit with target 1", () => {
  for (const p of problems) {
    const ex: StepExample = {
      ...exactLabels(p, p.answer),
      question: p.question,
      gold: String(p.finalAnswer),
      source: "reference",
      known: knownNumbers(p),
    };
    const [plain] = prmTrainExamples(tokenizer, [ex]);
    const [t] = prmTrainExamples(tokenizer, [ex], { numberLabels: true });
    assert.deepEqual(t.reads.slice(0, ex.steps.length), plain.reads, "the step ends come first, unchanged");
    assert.ok(t.targets.every((y) => y === 1));
    const extra = t.reads.slice(ex.steps.length);
    const digits = ex.steps.flatMap(numbersOf);
    // Every number is read at a token ending in its last digit, except where that token is a step end.
    assert.ok(
      extra.length > 0 && extra.length <= digits.length,
      `${extra.length} reads for ${digits.length}`,
    );
    for (const r of extra) assert.match(tokenizer.decode([t.ids[r]]), /\d$/);
    assert.equal(new Set(t.reads).size, t.reads.length, "no position is read twice");
  }
});

Deno.test("a miscopied operand: 1 before it, 0 from it to its step's end, nothing read after that step", () => {
  for (const p of problems) {
    if (p.steps.length < 2) continue;
    const s = p.steps[1], y = s.operands[1];
    const bad = renderStep(s.template, s.op, 7777, y, applyOp(s.op, 7777, y));
    const lines = p.steps.map((t) => t.text);
    const solution = renderSolution([lines[0], bad, ...lines.slice(2)], p.finalAnswer);
    const ex: StepExample = {
      ...exactLabels(p, solution),
      question: p.question,
      gold: String(p.finalAnswer),
      source: "policy",
      known: knownNumbers(p),
    };
    assert.deepEqual(ex.labels.slice(0, 2), [1, 0]);
    const [t] = prmTrainExamples(tokenizer, [ex], { numberLabels: true });
    const K = ex.steps.length;
    assert.deepEqual(t.targets.slice(0, K), ex.labels);
    const step0 = numbersOf(ex.steps[0]), step1 = numbersOf(ex.steps[1]);
    const extra = t.targets.slice(K);
    // Step 0's numbers (minus any read as a step end) are all 1; in step 1 the numbers before 7777 are 1 and
    // 7777 and all after it 0; later steps add no reads.
    const before = step1.indexOf("7777");
    assert.ok(before >= 0, ex.steps[1]);
    const ones = extra.filter((y) => y === 1).length, zeros = extra.filter((y) => y === 0).length;
    assert.ok(ones >= before && ones <= step0.length + before, `${ones} ones (${step0.length} + ${before})`);
    assert.ok(zeros >= step1.length - before - 1 && zeros <= step1.length - before, `${zeros} zeros`);
    assert.deepEqual(extra, [...extra].sort((a, b) => b - a), "all 1s come before all 0s");
  }
});
