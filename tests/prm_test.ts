// Process reward model (core/rm/prm.ts, scorer.ts, labels.ts, train_rm.ts): the input layout and step end tokens,
// PRM scores equal to a direct trunk forward + head on the host, batch = one by one, prefix consistency, a
// save/load round trip, training that learns, and Math-Shepherd Monte Carlo labels on a tiny random policy.
import assert from "node:assert/strict";
import fc from "fast-check";
import { generateProblems } from "../core/data/arithmetic.ts";
import { tinyPresetConfig, writeTinyTokenizer } from "../core/data/tiny_tokenizer.ts";
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { headConfig } from "../core/model/heads.ts";
import { randomModel, releaseModel, saveModel } from "../core/model/model.ts";
import { readParams } from "../core/model/params.ts";
import { trunkForward } from "../core/model/qwen2.ts";
import { builtinStepExamples, monteCarloStepLabels } from "../core/rm/labels.ts";
import {
  buildRmInput,
  createPrm,
  itemSteps,
  PRM_STEP_CONVENTION,
  prmStepScores,
  sigmoid,
} from "../core/rm/prm.ts";
import { loadRewardModel, rewardModel, RewardScorer } from "../core/rm/scorer.ts";
import { prmTrainExamples, rmLossAndGrads, trainRewardModel } from "../core/rm/train_rm.ts";
import { loadTokenizer } from "../core/tokenizer/tokenizer.ts";
import { applyChatTemplate } from "../core/tokenizer/chat_template.ts";
import { assertClose } from "./util/close.ts";
import { createGrads } from "../core/model/qwen2_backward.ts";
import { miniConfig } from "./util/mini.ts";
import { sharedPath } from "./util/shared.ts";

const gpu = await Gpu.create();
const dir = await Deno.makeTempDir({ prefix: "prm_test_" });
await writeTinyTokenizer(`${dir}/tok`);
const tokenizer = await loadTokenizer(`${dir}/tok`);
const problems = generateProblems(40, { seed: 3 });
const examples = builtinStepExamples(problems, { corruptions: 2, seed: 1 });

/** A small config on the tiny tokenizer (fast on lavapipe). */
const mini = miniConfig({ maxPositionEmbeddings: 512, padTokenId: 0 });

/** A random mini PRM. */
function tinyPrm(seed: number, std = 0.1) {
  return createPrm(randomModel(gpu, mini, { seed, std }), { seed: seed + 1, std: 0.5 });
}

Deno.test("buildRmInput: chat prompt + steps joined by \\n + \\n, end tokens cover each step's last character", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: examples.length - 1 }), (i) => {
      const ex = examples[i];
      const input = buildRmInput(tokenizer, ex.question, ex.steps);
      const prompt = applyChatTemplate(tokenizer, [{ role: "user", content: ex.question }], {
        addGenerationPrompt: true,
      });
      assert.equal(input.text, prompt + ex.steps.join("\n") + "\n");
      assert.deepEqual(input.ids, tokenizer.encode(input.text, { addSpecialTokens: false }));
      assert.equal(input.stepEnds.length, ex.steps.length);
      assert.equal(input.sepEnds.at(-1), input.ids.length - 1);
      // Decoding through each end token reaches the step's last character; one token fewer does not.
      let at = prompt.length;
      ex.steps.forEach((s, k) => {
        at += s.length;
        const upTo = tokenizer.decode(input.ids.slice(0, input.stepEnds[k] + 1));
        const before = tokenizer.decode(input.ids.slice(0, input.stepEnds[k]));
        assert.ok(
          upTo.length >= at && before.length < at,
          `step ${k}: ${upTo.length} / ${before.length} vs ${at}`,
        );
        at += 1;
        // Prefix consistency: the input of steps 1..k is the full input's tokens up to sepEnds[k].
        const prefix = buildRmInput(tokenizer, ex.question, ex.steps.slice(0, k + 1));
        assert.deepEqual(prefix.ids, input.ids.slice(0, input.sepEnds[k] + 1));
        assert.deepEqual(prefix.stepEnds, input.stepEnds.slice(0, k + 1));
      });
    }),
    { seed: 7, numRuns: 25 },
  );
  assert.throws(() => buildRmInput(tokenizer, "q", ["a", "  "]), /step 1: it is empty/);
});

Deno.test("buildRmInput with the real Qwen tokenizer on GSM8K: end tokens and prefix consistency hold", async () => {
  const qwenDir = await sharedPath("tokenizers/qwen", "the Qwen tokenizer check");
  const gsm8k = await sharedPath("data/gsm8k/test.jsonl", "the Qwen tokenizer check");
  const qwen = await loadTokenizer(qwenDir);
  const rows = (await Deno.readTextFile(gsm8k)).split("\n").slice(0, 30).filter((l) => l).map((l) =>
    JSON.parse(l)
  );
  for (const r of rows) {
    const steps = itemSteps({ solution: r.answer });
    const input = buildRmInput(qwen, r.question, steps);
    assert.ok(input.text.includes(`<|im_start|>user\n${r.question}<|im_end|>`), "ChatML user turn");
    assert.ok(input.text.endsWith(steps.at(-1) + "\n"));
    steps.forEach((s, k) => {
      const last = s.at(-1)!, tok = qwen.decode([input.ids[input.stepEnds[k]]]);
      if (last < "\x80") {
        assert.ok(tok.includes(last), `step ${k} ends in "${last}", its end token is "${tok}"`);
      }
      if (k > 0) {
        assert.ok(input.stepEnds[k] > input.sepEnds[k - 1], `step ${k} ends after the previous separator`);
      }
      const prefix = buildRmInput(qwen, r.question, steps.slice(0, k + 1));
      assert.deepEqual(
        prefix.ids,
        input.ids.slice(0, input.sepEnds[k] + 1),
        `prefix ${k} of "${r.question}"`,
      );
    });
  }
});

Deno.test("PRM scores equal the trunk's hidden states at the step ends dotted with score.weight + bias, sigmoid", async () => {
  const prm = tinyPrm(5);
  try {
    assert.deepEqual(prm.config.raw.prm_step_convention, PRM_STEP_CONVENTION);
    const items = examples.slice(0, 5);
    const inputs = items.map((ex) => buildRmInput(tokenizer, ex.question, ex.steps));
    const got = await prmStepScores(prm, inputs);
    const p = await readParams(prm.params);
    const w = p.get("score.weight")!, b = p.get("score.bias")![0];
    const C = prm.config.hiddenSize;
    for (const [i, input] of inputs.entries()) {
      const T = input.ids.length;
      const batch = new Batch(gpu, "test.trunk");
      const ids = upload(gpu, Int32Array.from(input.ids), { shape: [1, T] });
      const positions = upload(gpu, Int32Array.from(input.ids, (_, t) => t), { shape: [1, T] });
      const { hidden } = trunkForward(batch, prm.config, prm.params, { ids, positions });
      const read = batch.read(hidden);
      await batch.submit();
      const h = (await read) as Float32Array;
      for (const t of [ids, positions, hidden]) t.release();
      const want = input.stepEnds.map((t) => {
        let z = b;
        for (let c = 0; c < C; c++) z += h[t * C + c] * w[c];
        return sigmoid(z);
      });
      assertClose(got[i], want, { atol: 1e-6, rtol: 1e-5 }, `item ${i}`);
      assert.ok(got[i].some((s) => Math.abs(s - 0.5) > 0.01), "scores are not all ½ (the head matters)");
    }
  } finally {
    releaseModel(prm);
  }
});

Deno.test("Scorer: a batch scores like one by one; prefixes score like the full solution's first steps", async () => {
  const prm = tinyPrm(8);
  const scorer = new RewardScorer({ prm: rewardModel(prm, tokenizer), maxBatchTokens: 100_000 });
  const small = new RewardScorer({ prm: rewardModel(prm, tokenizer), maxBatchTokens: 1 }); // one per pass
  try {
    const items = examples.slice(0, 9).map((ex) => ({
      question: ex.question,
      solution: ex.steps.join("\n"),
      goldAnswer: ex.gold,
      shaping: { kind: "clip" as const, eta: 0.5 },
    }));
    const all = await scorer.score(items);
    const one = await small.score(items);
    for (const [i, o] of all.entries()) {
      assertClose(o.stepScores!, one[i].stepScores!, { atol: 1e-6, rtol: 1e-5 }, `item ${i}`);
      assert.deepEqual(o.steps, examples[i].steps);
      assert.equal(o.success, examples[i].source === "reference" ? 1 : 0);
      assert.equal(o.ormScore, null);
      assert.deepEqual(o.shapedRewards, o.stepScores!.map((s) => Math.min(s - 0.5, 0)));
    }
    const ex = examples[0];
    const prefix = await scorer.score([{ question: ex.question, steps: ex.steps.slice(0, 2) }]);
    assertClose(prefix[0].stepScores!, all[0].stepScores!.slice(0, 2), { atol: 1e-6, rtol: 1e-5 }, "prefix");
    assert.equal(scorer.models()[0].role, "prm");
    await assert.rejects(() => scorer.score([{ question: "q" }]), /exactly one of "solution" and "steps"/);
  } finally {
    releaseModel(prm);
  }
});

Deno.test("a saved PRM reloads as Qwen2ForTokenClassification with its step convention and scores the same", async () => {
  const prm = tinyPrm(2);
  try {
    await saveModel(prm, `${dir}/prm`, { tokenizerDir: `${dir}/tok` });
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/prm/config.json`));
    assert.deepEqual(cfg.architectures, ["Qwen2ForTokenClassification"]);
    assert.equal(cfg.prm_step_convention.separator, "\n");
    assert.deepEqual(Object.keys(cfg.id2label), ["0"]);
    const loaded = await loadRewardModel(`${dir}/prm`, "prm", { gpu });
    const inputs = examples.slice(0, 3).map((ex) => buildRmInput(tokenizer, ex.question, ex.steps));
    assert.deepEqual(await prmStepScores(loaded.model, inputs), await prmStepScores(prm, inputs));
    releaseModel(loaded.model);
    await assert.rejects(
      () => loadRewardModel(`${dir}/prm`, "orm", { gpu }),
      /Qwen2ForSequenceClassification/,
    );
  } finally {
    releaseModel(prm);
  }
});

Deno.test("PRM training: BCE matches the host formula and a few steps fit the labels", async () => {
  const prm = tinyPrm(4, 0.05);
  try {
    const data = prmTrainExamples(tokenizer, examples);
    // The loss is the mean BCE of the logits read at the step ends.
    const grads = createGrads(prm.params);
    const r = await rmLossAndGrads(prm, grads, data.slice(0, 3));
    for (const g of grads.values()) g.release();
    const y = data.slice(0, 3).flatMap((d) => d.targets);
    const want = y.reduce((a, t, i) =>
      a - t * Math.log(sigmoid(r.logits[i])) - (1 - t) * Math.log(1 - sigmoid(r.logits[i])), 0) /
      y.length;
    assert.ok(Math.abs(r.loss - want) < 1e-6, `loss ${r.loss} vs ${want}`);
    const logs: number[] = [];
    const res = await trainRewardModel(prm, data, {
      steps: 25,
      lr: 1e-2,
      batchSize: 6,
      warmupSteps: 3,
      seed: 1,
      onStep: (l) =>
        void logs.push(l.loss),
    });
    assert.equal(res.steps, 25);
    const head = logs.slice(0, 5).reduce((a, b) =>
        a + b
      ) / 5,
      tail = logs.slice(-5).reduce((a, b) => a + b) / 5;
    assert.ok(tail < 0.8 * head, `loss ${head.toFixed(3)} → ${tail.toFixed(3)}`);
  } finally {
    releaseModel(prm);
  }
});

Deno.test("Monte Carlo labels on a tiny random policy: counts in [0, N], soft = c/N, hard = 1[c > 0], seeded", async () => {
  const policy = randomModel(gpu, mini, { seed: 1, std: 0.05 });
  try {
    const items = examples.slice(0, 2).map((ex) => ({
      question: ex.question,
      steps: ex.steps,
      gold: ex.gold,
    }));
    const opts = { rollouts: 3, maxNewTokens: 12, seed: 4, batchSize: 5 };
    const soft = await monteCarloStepLabels(policy, tokenizer, items, opts);
    const again = await monteCarloStepLabels(policy, tokenizer, items, { ...opts, batchSize: 64 });
    const hard = await monteCarloStepLabels(policy, tokenizer, items, { ...opts, mode: "hard" });
    assert.deepEqual(again, soft, "same seed, other batching: same labels");
    assert.deepEqual(hard.successes, soft.successes);
    const open = items.reduce(
      (a, it) => a + it.steps.filter((_, k) => !it.steps.slice(0, k + 1).join("\n").includes("####")).length,
      0,
    );
    assert.equal(soft.generated, 3 * open, "answer-bearing prefixes need no rollouts");
    items.forEach((it, i) =>
      it.steps.forEach((s, k) => {
        const c = soft.successes[i][k];
        assert.ok(Number.isInteger(c) && c >= 0 && c <= 3);
        assert.equal(soft.labels[i][k], c / 3);
        assert.equal(hard.labels[i][k], c > 0 ? 1 : 0);
        if (s.includes("####")) {
          assert.equal(c, examples[i].labels[k] ? 3 : 0, "a stated answer is decided exactly");
        }
      })
    );
    await assert.rejects(
      () => monteCarloStepLabels(policy, tokenizer, items, { ...opts, rollouts: 0 }),
      /rollouts/,
    );
  } finally {
    releaseModel(policy);
  }
});

Deno.test("headConfig keeps the policy's shape", () => {
  const c = headConfig(tinyPresetConfig(), "Qwen2ForTokenClassification");
  assert.equal(c.hiddenSize, 128);
  assert.equal(c.numLabels, 1);
});

globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
