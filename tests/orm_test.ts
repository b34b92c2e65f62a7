// Outcome reward model (core/rm/orm.ts) and the PRM + ORM scorer: the ORM score is the hidden state of the last
// token dotted with score.weight (no bias) on the host, prefix scores equal scoring the prefixes, batches score
// like single items, outcome labels, training on outcome labels, and a scorer running both models at once.
import assert from "node:assert/strict";
import { generateProblems } from "../core/data/arithmetic.ts";
import { writeTinyTokenizer } from "../core/data/tiny_tokenizer.ts";
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { randomModel, releaseModel } from "../core/model/model.ts";
import { readParams } from "../core/model/params.ts";
import { trunkForward } from "../core/model/qwen2.ts";
import { isCorrect } from "../core/rewards/answer.ts";
import { builtinStepExamples, outcomeExamples } from "../core/rm/labels.ts";
import { createOrm, ormScores } from "../core/rm/orm.ts";
import { buildRmInput, createPrm, sigmoid } from "../core/rm/prm.ts";
import { rewardModel, RewardScorer } from "../core/rm/scorer.ts";
import { ormTrainExamples, trainRewardModel } from "../core/rm/train_rm.ts";
import { loadTokenizer } from "../core/tokenizer/tokenizer.ts";
import { assertClose } from "./util/close.ts";
import { miniConfig } from "./util/mini.ts";

const gpu = await Gpu.create();
const dir = await Deno.makeTempDir({ prefix: "orm_test_" });
await writeTinyTokenizer(`${dir}/tok`);
const tokenizer = await loadTokenizer(`${dir}/tok`);
const problems = generateProblems(30, { seed: 9 });
const solutions = builtinStepExamples(problems, { corruptions: 1, seed: 2 });
const mini = miniConfig({ maxPositionEmbeddings: 512, padTokenId: 0 });
const tinyOrm = (seed: number) => createOrm(randomModel(gpu, mini, { seed, std: 0.1 }), { seed, std: 0.5 });

Deno.test("ORM: Qwen2ForSequenceClassification without bias; score = σ(hidden[last] · w) computed on the host", async () => {
  const orm = tinyOrm(3);
  try {
    assert.equal(orm.config.architecture, "Qwen2ForSequenceClassification");
    assert.ok(orm.params.score && !orm.params.scoreBias && !orm.params.byName.has("score.bias"));
    assert.ok((orm.config.raw.orm_step_convention as { separator: string }).separator === "\n");
    const inputs = solutions.slice(0, 4).map((ex) => buildRmInput(tokenizer, ex.question, ex.steps));
    const { scores, prefixScores } = await ormScores(orm, inputs, { prefixes: true });
    const w = (await readParams(orm.params)).get("score.weight")!;
    const C = mini.hiddenSize;
    for (const [i, input] of inputs.entries()) {
      const T = input.ids.length;
      const batch = new Batch(gpu, "test.trunk");
      const ids = upload(gpu, Int32Array.from(input.ids), { shape: [1, T] });
      const positions = upload(gpu, Int32Array.from(input.ids, (_, t) => t), { shape: [1, T] });
      const { hidden } = trunkForward(batch, orm.config, orm.params, { ids, positions });
      const read = batch.read(hidden);
      await batch.submit();
      const h = (await read) as Float32Array;
      for (const t of [ids, positions, hidden]) t.release();
      const at = (t: number) => sigmoid(w.reduce((a, x, c) => a + x * h[t * C + c], 0));
      assertClose([scores[i]], [at(T - 1)], { atol: 1e-6, rtol: 1e-5 }, `item ${i}`);
      assertClose(prefixScores![i], input.sepEnds.map(at), { atol: 1e-6, rtol: 1e-5 }, `prefixes ${i}`);
      assert.equal(prefixScores![i].at(-1), scores[i]);
    }
  } finally {
    releaseModel(orm);
  }
});

Deno.test("ORM: prefix scores equal scoring each prefix on its own; a batch equals one by one", async () => {
  const orm = tinyOrm(5);
  try {
    const ex = solutions[1];
    const full = await ormScores(orm, [buildRmInput(tokenizer, ex.question, ex.steps)], { prefixes: true });
    const alone = await ormScores(
      orm,
      ex.steps.map((_, k) => buildRmInput(tokenizer, ex.question, ex.steps.slice(0, k + 1))),
      { maxBatchTokens: 1 },
    );
    assertClose(full.prefixScores![0], alone.scores, { atol: 1e-6, rtol: 1e-5 }, "prefixes");
    const inputs = solutions.slice(0, 7).map((e) => buildRmInput(tokenizer, e.question, e.steps));
    const batched = await ormScores(orm, inputs);
    const single = await ormScores(orm, inputs, { maxBatchTokens: 1 });
    assertClose(batched.scores, single.scores, { atol: 1e-6, rtol: 1e-5 }, "batch vs single");
  } finally {
    releaseModel(orm);
  }
});

Deno.test("outcomeExamples labels samples by isCorrect and drops empty ones; ORM training fits them", async () => {
  const items = problems.map((p) => ({ question: p.question, gold: String(p.finalAnswer) }));
  const samples = problems.map((
    p,
    i,
  ) => [p.answer, `${p.steps[0].text}\n#### ${p.finalAnswer + 1}`, i % 3 ? "" : "  "]);
  const ex = outcomeExamples(items, samples);
  assert.equal(ex.length, 2 * problems.length);
  for (const e of ex) assert.equal(e.label, isCorrect(e.steps.join("\n"), e.gold) ? 1 : 0);
  assert.equal(ex.filter((e) => e.label === 1).length, problems.length);
  const orm = tinyOrm(7);
  try {
    const data = ormTrainExamples(tokenizer, ex);
    assert.ok(data.every((d) => d.reads.length === 1 && d.reads[0] === d.ids.length - 1));
    const losses: number[] = [];
    await trainRewardModel(orm, data, {
      steps: 20,
      lr: 1e-2,
      batchSize: 6,
      warmupSteps: 2,
      onStep: (l) => void losses.push(l.loss),
    });
    const head = losses.slice(0, 4).reduce((a, b) => a + b) / 4,
      tail = losses.slice(-4).reduce((a, b) => a + b) / 4;
    assert.ok(tail < 0.9 * head, `loss ${head.toFixed(3)} → ${tail.toFixed(3)}`);
  } finally {
    releaseModel(orm);
  }
});

Deno.test("a scorer with a PRM and an ORM returns both scores per item, matching each model alone", async () => {
  const prm = createPrm(randomModel(gpu, mini, { seed: 11, std: 0.1 }), { seed: 1, std: 0.5 });
  const orm = tinyOrm(12);
  try {
    const both = new RewardScorer({
      prm: rewardModel(prm, tokenizer, "p"),
      orm: rewardModel(orm, tokenizer, "o"),
    });
    const items = solutions.slice(0, 5).map((e) => ({
      question: e.question,
      steps: e.steps,
      goldAnswer: e.gold,
    }));
    const out = await both.score(items);
    const prmOnly = await new RewardScorer({ prm: rewardModel(prm, tokenizer) }).score(items);
    const ormOnly = await new RewardScorer({ orm: rewardModel(orm, tokenizer) }).score(items);
    out.forEach((o, i) => {
      assert.deepEqual(o.stepScores, prmOnly[i].stepScores);
      assert.equal(o.ormScore, ormOnly[i].ormScore);
      assert.equal(ormOnly[i].stepScores, null);
      assert.equal(ormOnly[i].shapedRewards, null);
      assert.equal(o.success, isCorrect(items[i].steps.join("\n"), items[i].goldAnswer) ? 1 : 0);
    });
    assert.deepEqual(both.models().map((m) => [m.role, m.source, m.architecture]), [
      ["prm", "p", "Qwen2ForTokenClassification"],
      ["orm", "o", "Qwen2ForSequenceClassification"],
    ]);
    assert.throws(() => new RewardScorer({ prm: rewardModel(orm, tokenizer) }), /is not a PRM/);
  } finally {
    releaseModel(prm);
    releaseModel(orm);
  }
});

globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
