/**
 * The PPO update: several epochs over seeded shuffled minibatches of one {@link Experience}. Per minibatch:
 *
 * ```
 * actor   logp, H = lmHeadForward(trunkForward(prompt + response))         training mode, activations saved
 *         loss_π = mean_j max(−A_j ρ_j, −A_j clip(ρ_j, 1 ± ε)) − c_H·mean_j H_j (+ β·mean_j k_j in-loss KL)
 *         dlogp_j (GPU, ppoLossGpu) → lmHeadBackward (dlogp, dH = −c_H m_j/n) → trunkBackward
 *         AdamW (or SGD) with global-norm clipping;  early stop when approx-KL > 1.5·targetKL (before the step)
 * critic  clipped value loss → Critic.step (critic.ts)
 * ```
 * with ρ_j = exp(logp_j − logpOld_j). A minibatch may be split into micro-batches whose gradients add up to
 * the minibatch's token mean (each micro-batch's dlogp, a mean over its n_μ tokens, is scaled by n_μ / n).
 * Every kernel is deterministic and the minibatch order is a seeded shuffle: the same seed gives the same
 * weights, bit for bit.
 *
 * @module
 */
import { Batch, runBatch } from "../gpu/batch.ts";
import { upload } from "../gpu/io.ts";
import { Tensor } from "../gpu/tensor.ts";
import { lmHeadBackward, lmHeadForward } from "../model/lm_head.ts";
import { type Qwen2Model, uploadPacked } from "../model/model.ts";
import { releaseActivations, trunkForward } from "../model/qwen2.ts";
import { createGrads, type Grads, lmHeadGrad, trunkBackward } from "../model/qwen2_backward.ts";
import { scale } from "../ops/elementwise.ts";
import { AdamW, type AdamWOptions, GradClip, SGD, zeroGrads } from "../optim/mod.ts";
import { Rng } from "../data/rng.ts";
import type { Critic } from "./critic.ts";
import { type Experience, packRollouts, selectExperience, toRows } from "./experience.ts";
import type { KLEstimator } from "./kl.ts";
import { parsePPOStats, PPO_STATS, ppoLossGpu, type PPOStats } from "./ppo_loss_gpu.ts";

/** The policy being trained, with its gradients and optimiser. */
export interface Actor {
  model: Qwen2Model;
  grads: Grads;
  opt: AdamW | SGD;
  clip: GradClip;
}

/**
 * Creates gradients, the optimiser (AdamW unless `optimizer: "sgd"`) and clipping for `model` (release with
 * {@linkcode releaseActor}).
 */
export function createActor(
  model: Qwen2Model,
  opts: AdamWOptions & { maxGradNorm?: number; optimizer?: "adamw" | "sgd" } = {},
): Actor {
  const { maxGradNorm, optimizer, ...adam } = opts;
  return {
    model,
    grads: createGrads(model.params),
    opt: optimizer === "sgd"
      ? new SGD(model.gpu, model.params.byName)
      : new AdamW(model.gpu, model.params.byName, { weightDecay: 0, ...adam }),
    clip: new GradClip(model.gpu, { maxNorm: maxGradNorm ?? 1 }),
  };
}

/** Releases the actor's gradients and optimiser state (not the model). */
export function releaseActor(actor: Actor): void {
  for (const g of actor.grads.values()) g.release();
  actor.opt.release();
  actor.clip.release();
}

/** Options of the policy loss. */
export interface PolicyLossOptions {
  /** Ratio clip ε (default 0.2). */
  clipRange?: number;
  /** Entropy bonus coefficient c_H (default 0). */
  entCoef?: number;
  /** In-loss KL penalty β·mean(k(logp, logpRef)) (default none: the KL is in the reward). */
  klInLoss?: { coef: number; estimator?: KLEstimator };
}

/**
 * Forward and backward of the clipped policy loss over `mb` (see the module doc), accumulating `weight`·∇loss
 * into `actor.grads`. Returns the loss statistics (one readback).
 */
export async function policyLossAndGrads(
  actor: Actor,
  mb: Experience,
  opts: PolicyLossOptions & { weight?: number } = {},
): Promise<PPOStats> {
  const { gpu, config: cfg, params } = actor.model;
  const pr = packRollouts(mb.prompts, mb.responses);
  const [B, T] = [pr.packed.B, pr.packed.T], N = B * T;
  const weight = opts.weight ?? 1, entCoef = opts.entCoef ?? 0;
  const mask = toRows(pr, mb.policyMask);
  let n = 0;
  for (const m of mask) n += m;
  const temps: Tensor[] = [];
  const keep = (t: Tensor) => (temps.push(t), t);
  const f32 = (data: Float32Array, label: string) => keep(upload(gpu, data, { label }));
  const inputs = uploadPacked(gpu, pr.packed, "ppo");
  temps.push(inputs.ids, inputs.positions, inputs.mask);
  const targets = keep(upload(gpu, pr.targets, { label: "ppo.targets" }));
  const lm = {
    logp: keep(new Tensor(gpu, [N], "f32", "ppo.logp")),
    lse: keep(new Tensor(gpu, [N], "f32", "ppo.lse")),
    entropy: keep(new Tensor(gpu, [N], "f32", "ppo.entropy")),
  };
  const loss = {
    stats: keep(new Tensor(gpu, [PPO_STATS.length], "f32", "ppo.stats")),
    dLogp: keep(new Tensor(gpu, [N], "f32", "ppo.dlogp")),
  };
  const maskT = f32(mask, "ppo.action_mask");
  const lossInputs = {
    logp: lm.logp,
    logpOld: f32(toRows(pr, mb.logp), "ppo.logp_old"),
    advantages: f32(toRows(pr, mb.advantages), "ppo.advantages"),
    mask: maskT,
    entropy: lm.entropy,
    logpRef: opts.klInLoss ? f32(toRows(pr, mb.logpRef), "ppo.logp_ref") : undefined,
  };
  // Entropy bonus −c_H·mean(H): its gradient flows through the logits via dH = −c_H·m/n (scaled by weight).
  const dentropy = f32(mask.map((m) => (n > 0 ? (-entCoef * weight * m) / n : 0)), "ppo.dentropy");
  const read = await runBatch(gpu, "ppo.policy", (batch) => {
    const { hidden, saved } = trunkForward(batch, cfg, params, inputs, { save: true });
    keep(hidden);
    lmHeadForward(batch, lm, hidden, targets, cfg, params);
    ppoLossGpu(batch, loss, lossInputs, {
      clipRange: opts.clipRange ?? 0.2,
      entCoef,
      vfCoef: 0,
      klInLoss: opts.klInLoss,
    });
    let dlogp = loss.dLogp;
    if (weight !== 1) {
      dlogp = keep(new Tensor(gpu, [N], "f32", "ppo.dlogp_scaled"));
      scale(batch, dlogp, loss.dLogp, { alpha: weight });
    }
    const dhidden = new Tensor(gpu, [N, cfg.hiddenSize], "f32", "ppo.dhidden");
    const g = { dhidden, dWlm: lmHeadGrad(cfg, actor.grads) };
    lmHeadBackward(batch, g, dlogp, dentropy, hidden, targets, cfg, params);
    trunkBackward(batch, actor.grads, dhidden, cfg, params, inputs, saved!); // consumes dhidden
    releaseActivations(saved!);
    return batch.read(loss.stats);
  }, { release: temps });
  return parsePPOStats((await read) as Float32Array);
}

/** Options of {@linkcode ppoUpdate}. */
export interface PPOUpdateOptions extends PolicyLossOptions {
  /** Passes over the experience (default 1). */
  epochs?: number;
  /** Sequences per minibatch, i.e. per optimiser step (default: the whole batch). */
  miniBatchSize?: number;
  /** Sequences per forward/backward pass (default: the minibatch). */
  microBatchSize?: number;
  /** Actor learning rate of each optimiser step (called with the actor's step count). */
  lr: (step: number) => number;
  /** Critic learning rate of each critic step (called with the critic's step count). */
  criticLr?: (step: number) => number;
  /** Value clip ε_v (default 0.2). */
  clipRangeValue?: number;
  /** Stop the update when a minibatch's approx-KL exceeds 1.5·targetKL (before its step; default off). */
  targetKL?: number;
  /** Seed of the minibatch shuffles (default 0); epoch e shuffles with `ppo-minibatch:<seed>:<e>`. */
  seed?: number | string;
}

/** Mean statistics of one {@linkcode ppoUpdate}. */
export interface PPOUpdateStats {
  policyLoss: number;
  entropy: number;
  clipFrac: number;
  /** k3 approx-KL(π_old ‖ π_θ) over the minibatches, before each step. */
  approxKL: number;
  /** β-free in-loss KL (0 when the KL is in the reward). */
  klLoss: number;
  /** Actor gradient norm before clipping. */
  gradNorm: number;
  valueLoss: number;
  valueClipFrac: number;
  criticGradNorm: number;
  /** Actor optimiser steps taken. */
  steps: number;
  /** Whether the approx-KL early stop fired. */
  earlyStopped: boolean;
}

/** Minibatch index lists of one epoch: a seeded shuffle of 0..B−1 cut into chunks of `size`. */
export function minibatchOrder(B: number, size: number, seed: string): number[][] {
  const order = new Rng(seed).shuffle([...Array(B).keys()]);
  const out: number[][] = [];
  for (let i = 0; i < B; i += size) out.push(order.slice(i, i + size));
  return out;
}

/**
 * Runs PPO on `exp`: `epochs` passes over seeded shuffled minibatches, one actor step (and one critic step when a
 * critic is given) per minibatch (see the module doc).
 */
export async function ppoUpdate(
  actor: Actor,
  critic: Critic | null,
  exp: Experience,
  opts: PPOUpdateOptions,
): Promise<PPOUpdateStats> {
  const epochs = opts.epochs ?? 1, mbSize = Math.min(exp.B, opts.miniBatchSize ?? exp.B);
  const micro = Math.min(mbSize, opts.microBatchSize ?? mbSize);
  for (const [k, v] of [["epochs", epochs], ["miniBatchSize", mbSize], ["microBatchSize", micro]] as const) {
    if (!(Number.isSafeInteger(v) && v >= 1)) throw new Error(`Invalid PPO option "${k}": "${v}"`);
  }
  const sum = { policyLoss: 0, entropy: 0, clipFrac: 0, approxKL: 0, klLoss: 0, gradNorm: 0 };
  const vsum = { valueLoss: 0, valueClipFrac: 0, criticGradNorm: 0 };
  let steps = 0, criticSteps = 0, earlyStopped = false;
  for (let e = 0; e < epochs && !earlyStopped; e++) {
    for (const idx of minibatchOrder(exp.B, mbSize, `ppo-minibatch:${opts.seed ?? 0}:${e}`)) {
      const mb = selectExperience(exp, idx);
      let n = 0;
      for (const m of mb.policyMask) n += m;
      const acc = { policyLoss: 0, entropy: 0, clipFrac: 0, approxKL: 0, klLoss: 0 };
      // Micro-batches of similar lengths: less padding in each (B, T) pass.
      const byLength = [...Array(mb.B).keys()].sort((a, b) =>
        mb.prompts[a].length + mb.responseLength[a] - mb.prompts[b].length - mb.responseLength[b] || a - b
      );
      for (let b0 = 0; b0 < mb.B; b0 += micro) {
        const part = selectExperience(mb, byLength.slice(b0, b0 + micro));
        let m = 0;
        for (const x of part.policyMask) m += x;
        const weight = n > 0 ? m / n : 0; // share of the minibatch's policy tokens (none: all calculator-written)
        const s = await policyLossAndGrads(actor, part, { ...opts, weight });
        for (const k of Object.keys(acc) as (keyof typeof acc)[]) acc[k] += s[k] * weight;
      }
      if (opts.targetKL !== undefined && acc.approxKL > 1.5 * opts.targetKL) {
        const batch = new Batch(actor.model.gpu, "ppo.early_stop");
        zeroGrads(batch, actor.grads);
        await batch.submit();
        earlyStopped = true;
        break;
      }
      const batch = new Batch(actor.model.gpu, "ppo.actor_step");
      actor.opt.step(batch, actor.grads, { lr: opts.lr(actor.opt.stepCount), clip: actor.clip });
      const norm = actor.clip.read(batch);
      zeroGrads(batch, actor.grads);
      await batch.submit();
      for (const k of Object.keys(acc) as (keyof typeof acc)[]) sum[k] += acc[k];
      sum.gradNorm += (await norm).norm;
      steps++;
      if (critic) {
        const lr = (opts.criticLr ?? opts.lr)(critic.opt.stepCount);
        const c = await critic.step(mb, { lr, clipRangeValue: opts.clipRangeValue, microBatch: micro });
        vsum.valueLoss += c.valueLoss;
        vsum.valueClipFrac += c.valueClipFrac;
        vsum.criticGradNorm += c.gradNorm;
        criticSteps++;
      }
    }
  }
  const avg = (x: number, d: number) => (d ? x / d : 0);
  return {
    policyLoss: avg(sum.policyLoss, steps),
    entropy: avg(sum.entropy, steps),
    clipFrac: avg(sum.clipFrac, steps),
    approxKL: avg(sum.approxKL, steps),
    klLoss: avg(sum.klLoss, steps),
    gradNorm: avg(sum.gradNorm, steps),
    valueLoss: avg(vsum.valueLoss, criticSteps),
    valueClipFrac: avg(vsum.valueClipFrac, criticSteps),
    criticGradNorm: avg(vsum.criticGradNorm, criticSteps),
    steps,
    earlyStopped,
  };
}
