// The PPO update (core/rl/ppo.ts, critic.ts): the policy gradient (GPU loss kernel → LM head → trunk) against a
// directional finite difference of the host loss, micro-batching equivalence, movement in the direction of the
// advantage, the critic fitting its returns, the approx-KL early stop, and bitwise determinism for a fixed seed.
import assert from "node:assert/strict";
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { type Qwen2Model, randomModel, releaseModel } from "../core/model/model.ts";
import { readParams } from "../core/model/params.ts";
import { zeroGrads } from "../core/optim/mod.ts";
import { createPrm } from "../core/rm/prm.ts";
import { Critic } from "../core/rl/critic.ts";
import { type Experience, tokenMatrix } from "../core/rl/experience.ts";
import { createActor, policyLossAndGrads, ppoUpdate, releaseActor } from "../core/rl/ppo.ts";
import { ppoLoss } from "../core/rl/ppo_loss.ts";
import { collectRollouts, policyLogprobs } from "../core/rl/rollout.ts";
import { Rng } from "../core/data/rng.ts";
import { assertClose } from "./util/close.ts";
import { miniConfig, tinyTokenizer } from "./util/mini.ts";

const gpu = await Gpu.create();
const tokenizer = tinyTokenizer();
const config = miniConfig({ numHiddenLayers: 2, eosTokenIds: [tokenizer.imEndId!] });
const tinyModel = (seed: number) => randomModel(gpu, config, { seed, std: 0.05 });

/** An experience of fixed sequences with the model's own log-probs as logpOld and the given advantages. */
async function fixedExperience(
  model: Qwen2Model,
  advantage: (b: number, j: number) => number,
): Promise<Experience> {
  const rng = new Rng(7);
  const lens = [[6, 9], [4, 12], [9, 5], [3, 7]];
  const prompts = lens.map(([p]) => Array.from({ length: p }, () => rng.int(3, 500)));
  const responses = lens.map(([, r]) => Array.from({ length: r }, () => rng.int(3, 500)));
  const { logp, entropy } = await policyLogprobs(model, { prompts, responses });
  const B = 4, T = 12, mask = tokenMatrix(B, T), adv = tokenMatrix(B, T), returns = tokenMatrix(B, T);
  responses.forEach((r, b) =>
    r.forEach((_, j) => {
      mask[b * T + j] = 1;
      adv[b * T + j] = advantage(b, j);
      returns[b * T + j] = 0.5 + 0.25 * b - 0.03 * j;
    })
  );
  return {
    B,
    T,
    prompts,
    responses,
    texts: responses.map(() => ""),
    questionIndex: new Int32Array(B),
    responseLength: Int32Array.from(responses, (r) => r.length),
    stopped: new Uint8Array(B),
    success: new Float32Array(B),
    correct: new Uint8Array(B),
    numSteps: new Int32Array(B),
    repeatedSteps: new Int32Array(B),
    stepScores: responses.map(() => []),
    shapedRewards: responses.map(() => []),
    stepEnds: responses.map(() => []),
    actionMask: mask,
    policyMask: mask,
    logp,
    logpRef: logp.map((x, i) => x - 0.1 * Math.sin(i)),
    logpGen: logp,
    entropy,
    values: tokenMatrix(B, T),
    kl: tokenMatrix(B, T),
    processRewards: tokenMatrix(B, T),
    rewards: tokenMatrix(B, T),
    advantages: adv,
    returns,
  };
}

/** Host loss L(θ) = ppo policy loss − c_H·mean H + β·mean k3 with the current weights. */
async function hostLoss(model: Qwen2Model, exp: Experience, entCoef: number, beta: number): Promise<number> {
  const { logp, entropy } = await policyLogprobs(model, exp);
  const r = ppoLoss({ logp, logpOld: exp.logp, advantages: exp.advantages, mask: exp.actionMask, entropy }, {
    entCoef,
    klInLoss: { logpRef: exp.logpRef, coef: beta, estimator: "k3" },
  });
  return r.loss;
}

async function gradsOf(actor: ReturnType<typeof createActor>): Promise<Map<string, Float32Array>> {
  const batch = new Batch(gpu, "test.read_grads");
  const entries = [...actor.grads];
  const reads = entries.map(([, g]) => batch.read(g));
  await batch.submit();
  const values = await Promise.all(reads);
  return new Map(entries.map(([n], i) => [n, values[i] as Float32Array]));
}

function setParams(model: Qwen2Model, values: Map<string, Float32Array>): void {
  for (const [name, v] of values) {
    gpu.device.queue.writeBuffer(model.params.byName.get(name)!.buffer, 0, v as BufferSource);
  }
}

Deno.test("policy gradient (GPU loss → LM head → trunk) matches a directional finite difference", async () => {
  const model = tinyModel(1), actor = createActor(model);
  try {
    const rng = new Rng(3);
    const exp = await fixedExperience(model, () => rng.next() * 2 - 1);
    // logpOld off the current policy so the ratio is not 1, but inside the trust region (no clipping).
    exp.logp = exp.logp.map((x, i) => (exp.actionMask[i] ? x + 0.05 * Math.cos(i) : 0));
    const [entCoef, beta] = [0.3, 0.2];
    const stats = await policyLossAndGrads(actor, exp, {
      entCoef,
      klInLoss: { coef: beta, estimator: "k3" },
    });
    const want = await hostLoss(model, exp, entCoef, beta);
    assert.ok(Math.abs(stats.loss - want) < 1e-5, `GPU loss ${stats.loss} vs host ${want}`);
    assert.equal(stats.clipFrac, 0);
    const g = await gradsOf(actor), theta = await readParams(model.params);
    const dir = new Map([...theta].map(([n, v]) => [n, v.map(() => rng.next() * 2 - 1)]));
    let analytic = 0;
    for (const [n, d] of dir) d.forEach((x, i) => (analytic += x * g.get(n)![i]));
    const eps = 1e-3,
      shifted = (s: number) =>
        new Map([...theta].map(([n, v]) => [n, v.map((x, i) => x + s * eps * dir.get(n)![i])]));
    setParams(model, shifted(1));
    const lp = await hostLoss(model, exp, entCoef, beta);
    setParams(model, shifted(-1));
    const lm = await hostLoss(model, exp, entCoef, beta);
    setParams(model, theta);
    const fd = (lp - lm) / (2 * eps);
    assert.ok(
      Math.abs(fd - analytic) <= 2e-3 + 2e-2 * Math.abs(fd),
      `directional derivative: FD ${fd}, analytic ${analytic}`,
    );
  } finally {
    releaseActor(actor);
    releaseModel(model);
  }
});

Deno.test("micro-batches add up to the minibatch gradient", async () => {
  const model = tinyModel(2), actor = createActor(model);
  try {
    const exp = await fixedExperience(model, (b, j) => (b % 2 ? -1 : 1) * (1 + 0.1 * j));
    exp.logp = exp.logp.map((x, i) => (exp.actionMask[i] ? x - 0.03 : 0));
    await policyLossAndGrads(actor, exp, { entCoef: 0.1 });
    const whole = await gradsOf(actor);
    const batch = new Batch(gpu, "zero");
    zeroGrads(batch, actor.grads);
    await batch.submit();
    let n = 0;
    for (const m of exp.actionMask) n += m;
    for (let b = 0; b < exp.B; b++) {
      const { selectExperience } = await import("../core/rl/experience.ts");
      const part = selectExperience(exp, [b]);
      await policyLossAndGrads(actor, part, { entCoef: 0.1, weight: part.responseLength[0] / n });
    }
    const parts = await gradsOf(actor);
    for (const [name, v] of whole) assertClose(parts.get(name)!, v, { atol: 1e-6, rtol: 1e-4 }, name);
  } finally {
    releaseActor(actor);
    releaseModel(model);
  }
});

Deno.test("tokens outside the policy mask (written by the calculator) add nothing to the policy gradient", async () => {
  const model = tinyModel(4), actor = createActor(model);
  try {
    const grads = async (forcedAdvantage: number) => {
      const exp = await fixedExperience(model, (b, j) => (b % 2 ? -1 : 1) * (1 + 0.1 * j));
      exp.policyMask = exp.actionMask.slice();
      for (const i of [1, 2, 12 + 5, 24 + 0, 36 + 6]) {
        exp.policyMask[i] = 0;
        exp.advantages[i] = forcedAdvantage;
      }
      const batch = new Batch(gpu, "zero");
      zeroGrads(batch, actor.grads);
      await batch.submit();
      await policyLossAndGrads(actor, exp, { entCoef: 0.1 });
      return await gradsOf(actor);
    };
    const [a, b] = [await grads(5), await grads(-7)];
    let norm = 0;
    for (const [name, v] of a) {
      assert.deepEqual(b.get(name)!, v, name);
      for (const x of v) norm += x * x;
    }
    assert.ok(norm > 0, "the policy tokens still give a gradient");
  } finally {
    releaseActor(actor);
    releaseModel(model);
  }
});

Deno.test("a PPO update raises positively-advantaged tokens and lowers negatively-advantaged ones", async () => {
  const model = tinyModel(3), actor = createActor(model);
  try {
    const exp = await fixedExperience(model, (b) => (b % 2 === 0 ? 1 : -1));
    const s = await ppoUpdate(actor, null, exp, { epochs: 2, miniBatchSize: 4, lr: () => 3e-3, seed: 0 });
    assert.equal(s.steps, 2);
    assert.equal(s.approxKL >= 0, true);
    const after = await policyLogprobs(model, exp);
    let up = 0, down = 0, agree = 0, n = 0;
    for (let i = 0; i < exp.actionMask.length; i++) {
      if (!exp.actionMask[i]) continue;
      const d = after.logp[i] - exp.logp[i];
      if (exp.advantages[i] > 0) up += d;
      else down += d;
      agree += Math.sign(d) === Math.sign(exp.advantages[i]) ? 1 : 0;
      n++;
    }
    assert.ok(up > 0, `log-prob of A > 0 tokens moved by ${up}`);
    assert.ok(down < 0, `log-prob of A < 0 tokens moved by ${down}`);
    assert.ok(agree / n > 0.9, `only ${agree}/${n} tokens moved in the direction of their advantage`);
  } finally {
    releaseActor(actor);
    releaseModel(model);
  }
});

Deno.test("with --optimizer sgd one PPO step is exactly p − lr·g (g: the policy gradient) and moves log-probs with the advantage", async () => {
  const model = tinyModel(4), actor = createActor(model, { optimizer: "sgd", maxGradNorm: 1e6 });
  try {
    assert.equal(actor.opt.kind, "sgd");
    const exp = await fixedExperience(model, (b, j) => (b % 2 === 0 ? 1 : -1) * (1 + 0.1 * j));
    const before = await readParams(model.params);
    await policyLossAndGrads(actor, exp);
    const g = await gradsOf(actor);
    const zb = new Batch(gpu, "test.zero_grads");
    zeroGrads(zb, actor.grads);
    await zb.submit();
    const lr = 0.5;
    const s = await ppoUpdate(actor, null, exp, { epochs: 1, miniBatchSize: 4, lr: () => lr, seed: 0 });
    assert.equal(s.steps, 1);
    assert.equal(actor.opt.stepCount, 1);
    const after = await readParams(model.params);
    for (const [name, p0] of before) {
      const want = p0.map((x, i) => x - lr * g.get(name)![i]);
      assertClose(after.get(name)!, want, { atol: 1e-6, rtol: 1e-4 }, name);
    }
    const moved = await policyLogprobs(model, exp);
    let up = 0, down = 0;
    for (let i = 0; i < exp.actionMask.length; i++) {
      if (!exp.actionMask[i]) continue;
      const d = moved.logp[i] - exp.logp[i];
      if (exp.advantages[i] > 0) up += d;
      else down += d;
    }
    assert.ok(up > 0, `log-prob of A > 0 tokens moved by ${up}`);
    assert.ok(down < 0, `log-prob of A < 0 tokens moved by ${down}`);
  } finally {
    releaseActor(actor);
    releaseModel(model);
  }
});

Deno.test("the critic fits its returns with the clipped value loss; approx-KL early stop", async () => {
  const model = tinyModel(4), actor = createActor(model);
  const critic = new Critic(createPrm(tinyModel(5), { std: 0 }));
  try {
    const exp = await fixedExperience(model, (b) => (b % 2 === 0 ? 1 : -1));
    exp.values = await critic.values(exp.prompts, exp.responses);
    assert.ok(exp.values.every((v) => v === 0), "a zero head starts at V = 0");
    const losses: number[] = [];
    for (let s = 0; s < 12; s++) {
      const r = await critic.step(exp, { lr: 1e-2, clipRangeValue: 10, microBatch: 3 });
      losses.push(r.valueLoss);
    }
    assert.ok(losses[11] < 0.3 * losses[0], `value loss ${losses[0]} → ${losses[11]}`);
    const u = await ppoUpdate(actor, null, exp, {
      epochs: 3,
      miniBatchSize: 2,
      lr: () => 1e-2,
      targetKL: 1e-9,
      seed: 1,
    });
    assert.equal(u.earlyStopped, true);
    assert.equal(u.steps, 1, "the first minibatch has ratio 1 (no KL yet); the second one stops");
  } finally {
    releaseActor(actor);
    releaseModel(model);
    critic.release();
  }
});

Deno.test("PPO training is deterministic: two runs from one seed give bitwise identical weights", async () => {
  const run = async () => {
    const policy = tinyModel(6), ref = tinyModel(6), actor = createActor(policy);
    const critic = new Critic(createPrm(tinyModel(6), { std: 0.1 }));
    try {
      const questions = [{ question: "Ana has 3 cats and 4 dogs. How many pets?", finalAnswer: "7" }];
      for (let it = 1; it <= 2; it++) {
        const r = await collectRollouts({ policy, ref, tokenizer, critic }, questions, {
          samplesPerQuestion: 4,
          maxNewTokens: 10,
          seed: it,
          reward: { klCoef: 0.1 },
        });
        await ppoUpdate(actor, critic, r.experience, {
          epochs: 2,
          miniBatchSize: 2,
          lr: () => 5e-3,
          criticLr: () => 5e-3,
          seed: `0:${it}`,
        });
      }
      return { policy: await readParams(policy.params), critic: await readParams(critic.model.params) };
    } finally {
      releaseActor(actor);
      [policy, ref].forEach(releaseModel);
      critic.release();
    }
  };
  const [a, b] = [await run(), await run()];
  const init = await readParams(tinyModel(6).params);
  let moved = 0;
  for (const [name, v] of a.policy) {
    assert.deepEqual(b.policy.get(name), v, `policy tensor ${name} differs between runs`);
    moved += v.some((x, i) => x !== init.get(name)![i]) ? 1 : 0;
  }
  for (const [name, v] of a.critic) assert.deepEqual(b.critic.get(name), v, `critic tensor ${name} differs`);
  assert.ok(moved > 0, "training changed the policy");
});
