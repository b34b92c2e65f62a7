// PPO rollouts (core/rl/rollout.ts, experience.ts): step → token alignment of decoded responses, reward placement
// against the pure-TS reward math, GAE/whitening on the GPU against the TS reference, training-mode log-probs
// against an independent scoring path and the sampler, reproducibility and batching independence of sampling.
import assert from "node:assert/strict";
import { Gpu } from "../core/gpu/device.ts";
import { randomModel, releaseModel, scoreSequences } from "../core/model/model.ts";
import { combineRewards } from "../core/rewards/combine.ts";
import { shapeStepRewards } from "../core/rewards/shaping.ts";
import { createPrm } from "../core/rm/prm.ts";
import { rewardModel, RewardScorer } from "../core/rm/scorer.ts";
import type { ScoreItem, ScoreOutput, Scorer } from "../core/rm/types.ts";
import { Critic } from "../core/rl/critic.ts";
import { packRollouts, selectExperience, tokenRow } from "../core/rl/experience.ts";
import { gaeBatch, whiten } from "../core/rl/gae.ts";
import { klEstimate } from "../core/rl/kl.ts";
import {
  collectRollouts,
  policyLogprobs,
  repeatedStepCount,
  responseSteps,
  scoreRollouts,
} from "../core/rl/rollout.ts";
import { promptIds } from "../core/train/sft_data.ts";
import { assertClose } from "./util/close.ts";
import { miniConfig, tinyTokenizer } from "./util/mini.ts";

const gpu = await Gpu.create();
const tokenizer = tinyTokenizer();
const IM_END = tokenizer.imEndId!;
const config = miniConfig({ eosTokenIds: [IM_END] });
const tinyModel = (seed: number) => randomModel(gpu, config, { seed, std: 0.05 });

const QUESTION =
  "Tom buys 3 packs of 4 pens. He gives 5 pens to his sister. How many pens does Tom have now?";
const SOLUTION = "Tom buys 3 packs of 4 pens, so he has 3*4=<<3*4=12>>12 pens.\n" +
  "After giving 5 pens to his sister, he has 12-5=<<12-5=7>>7 pens.\n#### 7";

/** A PRM stand-in with fixed step scores 0.9, 0.3, 0.8, … (cycled), shaped as asked. */
class FixedScorer implements Scorer {
  static readonly SCORES = [0.9, 0.3, 0.8, 0.6];
  score(items: readonly ScoreItem[]): Promise<ScoreOutput[]> {
    return Promise.resolve(items.map((it) => {
      const scores = it.steps!.map((_, k) => FixedScorer.SCORES[k % 4]);
      return {
        steps: it.steps!,
        stepScores: scores,
        ormScore: null,
        success: null,
        shapedRewards: Array.from(shapeStepRewards(scores, it.shaping ?? { kind: "none" })),
      };
    }));
  }
  models() {
    return [];
  }
}

Deno.test("responseSteps: each step ends on the token covering its last character, stop token ignored", () => {
  const ids = [...tokenizer.encode(SOLUTION, { addSpecialTokens: false }), IM_END];
  const r = responseSteps(tokenizer, ids);
  assert.equal(r.text, SOLUTION);
  assert.equal(r.steps.length, 3);
  assert.equal(r.steps[2], "#### 7");
  // Independent offsets: the tokenizer's own encodeWithOffsets of the same text.
  const enc = tokenizer.encodeWithOffsets(SOLUTION, { addSpecialTokens: false });
  assert.deepEqual(enc.ids, ids.slice(0, -1));
  let from = 0;
  r.steps.forEach((s, k) => {
    const last = SOLUTION.indexOf(s, from) + s.length - 1;
    from = last;
    const [a, b] = enc.offsets[r.stepEnds[k]];
    assert.ok(a <= last && last < b, `step ${k} ends at char ${last}, its end token covers [${a}, ${b})`);
    assert.ok(
      r.stepEnds[k] + 1 === ids.length - 1 || enc.offsets[r.stepEnds[k] + 1][0] > last,
      `token after`,
    );
  });
  // Invalid UTF-8 among sampled bytes: the prefix-decoding fallback still aligns the steps.
  const byte = tokenizer.tokenToId("Ã")!; // the byte-level symbol of 0xC3: a lone UTF-8 lead byte
  const broken = [
    ...tokenizer.encode("a+b=3\n", { addSpecialTokens: false }),
    byte,
    ...tokenizer.encode("x\nok", { addSpecialTokens: false }),
  ];
  const rb = responseSteps(tokenizer, broken);
  assert.equal(rb.steps.length, 3);
  assert.equal(rb.steps[2], "ok");
  assert.equal(rb.stepEnds[2], broken.length - 1);
});

Deno.test("repeatedStepCount counts verbatim repeats (whitespace collapsed)", () => {
  assert.equal(repeatedStepCount(["a = 1", "b = 2", "a  =  1", "a = 1", "c"]), 2);
  assert.equal(repeatedStepCount([]), 0);
});

Deno.test("scoreRollouts: rewards, KL and GAE match the TS reference math", async () => {
  const policy = tinyModel(1), ref = tinyModel(2), critic = new Critic(createPrm(tinyModel(3), { std: 0.5 }));
  try {
    const prompt = promptIds(tokenizer, QUESTION);
    const good = [...tokenizer.encode(SOLUTION, { addSpecialTokens: false }), IM_END];
    const bad = tokenizer.encode("He has 3*4=<<3*4=12>>12 pens.\nHe has 12 pens.\nHe has 12 pens.\n#### 9", {
      addSpecialTokens: false,
    });
    const responses = [good, bad, tokenizer.encode("no steps here", { addSpecialTokens: false })];
    const shaping = { kind: "clip_delta", eta: 0.7, finalStepZero: true } as const;
    const reward = { shaping, alpha: 0.5, klCoef: 0.05, klEstimator: "k3" as const, correct: 1, wrong: -0.5 };
    const exp = await scoreRollouts({ policy, ref, tokenizer, critic, scorer: new FixedScorer() }, [
      { question: QUESTION, finalAnswer: "7" },
    ], {
      prompts: responses.map(() => prompt),
      responses,
      genLogp: responses.map((r) => r.map(() => 0)),
      stopped: [true, false, false],
      questionIndex: [0, 0, 0],
    }, { reward, gamma: 0.99, lambda: 0.9 });
    assert.deepEqual([exp.B, exp.T], [3, Math.max(...responses.map((r) => r.length))]);
    assert.deepEqual(Array.from(exp.correct), [1, 0, 0]);
    assert.deepEqual(Array.from(exp.success), [1, -0.5, -0.5]);
    assert.deepEqual(Array.from(exp.numSteps), [3, 4, 1]);
    assert.deepEqual(Array.from(exp.repeatedSteps), [0, 1, 0]);
    // Independent log-probs: the fused scoring path of model.ts.
    const seqs = responses.map((r) => [...prompt, ...r]);
    const [sp, sr] = [await scoreSequences(policy, seqs), await scoreSequences(ref, seqs)];
    for (let b = 0; b < 3; b++) {
      const n = responses[b].length, P = prompt.length;
      assertClose(tokenRow(exp, "logp", b), sp.tokenLogprobs[b].slice(P - 1, P - 1 + n), {
        atol: 1e-5,
        rtol: 1e-5,
      }, `logp ${b}`);
      assertClose(tokenRow(exp, "logpRef", b), sr.tokenLogprobs[b].slice(P - 1, P - 1 + n), {
        atol: 1e-5,
        rtol: 1e-5,
      }, `ref ${b}`);
      assertClose(tokenRow(exp, "entropy", b), sp.entropies[b].slice(P - 1, P - 1 + n), {
        atol: 1e-4,
        rtol: 1e-5,
      }, `H ${b}`);
      const kl = klEstimate(tokenRow(exp, "logp", b), tokenRow(exp, "logpRef", b), { estimator: "k3" });
      assertClose(tokenRow(exp, "kl", b), kl, { atol: 1e-6, rtol: 1e-6 }, `kl ${b}`);
      const scores = exp.numSteps[b]
        ? Array.from({ length: exp.numSteps[b] }, (_, k) => FixedScorer.SCORES[k % 4])
        : [];
      assert.deepEqual(exp.stepScores[b], scores);
      const want = combineRewards({
        stepRewards: shapeStepRewards(scores, shaping),
        stepEndTokens: exp.stepEnds[b],
        success: exp.success[b],
        length: n,
        alpha: 0.5,
        klPenalty: Array.from(kl, (k) => 0.05 * k),
      });
      assertClose(tokenRow(exp, "rewards", b), want, { atol: 1e-6, rtol: 1e-6 }, `rewards ${b}`);
      for (let j = n; j < exp.T; j++) assert.equal(exp.actionMask[b * exp.T + j], 0);
    }
    // The good solution: 3 steps, Delta over steps 1..2 of c = min(r − η, 0) = [0, −0.4] → d = [0.4, −0.4], 0.
    assert.deepEqual(exp.shapedRewards[0].map((x) => Number(x.toFixed(6))), [0.4, -0.4, 0]);
    // GAE + whitening on the GPU = the f64 reference.
    const ref64 = gaeBatch(exp.rewards, exp.values, {
      gamma: 0.99,
      lambda: 0.9,
      seqLen: exp.T,
      mask: exp.actionMask,
    });
    assertClose(exp.returns, ref64.returns, { atol: 1e-5, rtol: 1e-5 }, "returns");
    assertClose(
      exp.advantages,
      whiten(ref64.advantages, exp.actionMask),
      { atol: 1e-4, rtol: 1e-4 },
      "advantages",
    );
    // Critic values are read at the row predicting each token.
    assertClose(exp.values, await critic.values(exp.prompts, exp.responses), { atol: 0, rtol: 0 }, "values");
    // Sub-batches keep their rows.
    const sub = selectExperience(exp, [2, 0]);
    assert.deepEqual(Array.from(tokenRow(sub, "rewards", 1)), Array.from(tokenRow(exp, "rewards", 0)));
    assert.equal(sub.T, responses[0].length);
  } finally {
    [policy, ref].forEach(releaseModel);
    critic.release();
  }
});

Deno.test("scoreRollouts with RLOO: advantages are the return-to-go minus the siblings' mean return", async () => {
  const policy = tinyModel(1), ref = tinyModel(2), critic = new Critic(createPrm(tinyModel(3), { std: 0.5 }));
  try {
    const prompt = promptIds(tokenizer, QUESTION);
    const enc = (s: string) => tokenizer.encode(s, { addSpecialTokens: false });
    const responses = [
      [...enc(SOLUTION), IM_END],
      enc("He has 3*4=<<3*4=12>>12 pens.\n#### 12"),
      enc("#### 7"),
      enc("He has 7 pens.\n#### 7"),
    ];
    const questions = [{ question: QUESTION, finalAnswer: "7" }, { question: QUESTION, finalAnswer: "12" }];
    const sampled = {
      prompts: responses.map(() => prompt),
      responses,
      genLogp: responses.map((r) => r.map(() => 0)),
      stopped: responses.map(() => true),
      questionIndex: [0, 0, 0, 1], // the last sample is alone in its group: baseline 0
    };
    const reward = { shaping: { kind: "clip", eta: 0.5 } as const, alpha: 0.5, klCoef: 0.05 };
    const opts = { reward, whiten: false, advantage: "rloo" as const };
    const exp = await scoreRollouts(
      { policy, ref, tokenizer, critic, scorer: new FixedScorer() },
      questions,
      sampled,
      opts,
    );
    const T = exp.T, total = (b: number) => tokenRow(exp, "rewards", b).reduce((a, x) => a + x, 0);
    const base = [(total(1) + total(2)) / 2, (total(0) + total(2)) / 2, (total(0) + total(1)) / 2, 0];
    for (let b = 0; b < exp.B; b++) {
      const r = tokenRow(exp, "rewards", b),
        want = new Float64Array(r.length),
        ret = new Float64Array(r.length);
      for (let j = r.length - 1, g = 0; j >= 0; j--) (g += r[j], ret[j] = g, want[j] = g - base[b]);
      assertClose(tokenRow(exp, "advantages", b), want, { atol: 1e-5, rtol: 1e-5 }, `advantages ${b}`);
      assertClose(tokenRow(exp, "returns", b), ret, { atol: 1e-5, rtol: 1e-5 }, `returns ${b}`);
      for (let j = r.length; j < T; j++) assert.equal(exp.advantages[b * T + j], 0);
    }
    // The critic's own values are kept for its clipped value loss.
    assertClose(exp.values, await critic.values(exp.prompts, exp.responses), { atol: 0, rtol: 0 }, "values");
  } finally {
    [policy, ref].forEach(releaseModel);
    critic.release();
  }
});

Deno.test("policyLogprobs: packing and chunking do not change a sequence's log-probs (bitwise)", async () => {
  const model = tinyModel(4);
  try {
    const prompts = [[5, 6, 7], [8], [9, 10, 11, 12, 13]], responses = [[20, 21], [22, 23, 24, 25], [26]];
    const all = await policyLogprobs(model, { prompts, responses });
    const one = await policyLogprobs(model, { prompts, responses }, { maxBatchTokens: 1 });
    assert.deepEqual(Array.from(one.logp), Array.from(all.logp));
    const pr = packRollouts(prompts, responses);
    assert.equal(pr.T, 4);
    assert.equal(pr.targets[pr.actionRows[1 * 4 + 3]], 25);
    assert.throws(() => packRollouts([[]], [[1]]), /prompt is empty/);
  } finally {
    releaseModel(model);
  }
});

Deno.test("collectRollouts: seeded, batching-independent sampling; recomputed log-probs match the sampler", async () => {
  const policy = tinyModel(5), ref = tinyModel(5);
  const prm = createPrm(tinyModel(6), { seed: 1, std: 0.5 });
  const scorer = new RewardScorer({ prm: rewardModel(prm, tokenizer) });
  try {
    const questions = [
      { question: QUESTION, finalAnswer: "7" },
      { question: "Mia has 5 apples and buys 3 more. How many apples does she have?", finalAnswer: "8" },
    ];
    const models = { policy, ref, tokenizer, scorer };
    const opts = { samplesPerQuestion: 3, maxNewTokens: 24, seed: 11, temperature: 1.3 };
    const a = await collectRollouts(models, questions, opts);
    const b = await collectRollouts(models, questions, { ...opts, generateBatch: 4 });
    assert.deepEqual(b.experience.responses, a.experience.responses, "batching changes the samples");
    const e = a.experience;
    assert.equal(e.B, 6);
    assert.deepEqual(Array.from(e.questionIndex), [0, 0, 0, 1, 1, 1]);
    assert.ok(new Set(e.responses.map((r) => r.join(","))).size > 1, "samples of a question differ");
    assert.ok(a.logpGenMaxDiff < 1e-4, `sampler vs training-mode log-probs differ by ${a.logpGenMaxDiff}`);
    // The reference is an equal but separate copy: KL exactly 0, and the policy itself is refused.
    assert.ok(e.kl.every((x) => x === 0));
    await assert.rejects(
      () => collectRollouts({ ...models, ref: policy }, questions, opts),
      /separate frozen copy/,
    );
    const c = await collectRollouts(models, questions, { ...opts, seed: 12 });
    assert.notDeepEqual(c.experience.responses, e.responses, "another seed gives other samples");
    e.stepScores.forEach((s, i) => assert.equal(s.length, e.numSteps[i]));
  } finally {
    [policy, ref].forEach(releaseModel);
    scorer.release();
  }
});
