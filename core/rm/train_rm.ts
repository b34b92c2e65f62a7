/**
 * Reward-model training: binary cross-entropy on the score head's logits at the labelled positions, gradients
 * through the head and the whole trunk, AdamW with warmup + schedule and global-norm clipping.
 *
 * A PRM example reads every step's end token with the step labels (0/1 exact or hard, fractions for soft Monte
 * Carlo labels); an ORM example reads the last token with the outcome label. For a batch with n labelled
 * positions (logit z_i, target y_i ∈ [0, 1]):
 * ```
 * loss       = (1/n) Σ_i [softplus(z_i) − y_i·z_i]          (= −y log σ(z) − (1−y) log(1−σ(z)))
 * ∂loss/∂z_i = (σ(z_i) − y_i) / n
 * ```
 * The n logits are read back after the forward pass, the loss and its gradient are computed on the host in f64,
 * and the gradient is uploaded for the backward pass (`headBackward`): exact, at the cost of one readback.
 *
 * @module
 */
import { Rng } from "../data/rng.ts";
import { Batch } from "../gpu/batch.ts";
import { headBackward, headForward, releaseHeadState } from "../model/heads.ts";
import type { Qwen2Model } from "../model/model.ts";
import { createGrads, type Grads } from "../model/qwen2_backward.ts";
import { AdamW, GradClip, lrAt, type ScheduleKind, zeroGrads } from "../optim/mod.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import type { OutcomeExample, StepExample } from "./labels.ts";
import { buildRmInput } from "./prm.ts";
import { numberKey } from "../data/equations.ts";
import { stepEndTokens } from "../rewards/steps.ts";

/** One training sequence: token ids, the positions read and their targets in [0, 1]. */
export interface RmTrainExample {
  /** Token ids of the input. */
  ids: number[];
  /** Positions whose logits are trained. */
  reads: number[];
  /** Target probability per position. */
  targets: number[];
}

/** Options of {@linkcode prmTrainExamples}. */
export interface PrmTrainExampleOptions {
  /** Step separator of the PRM's convention (default the project's). */
  separator?: string;
  /**
   * Also train the last token of every number up to the first wrong step (examples with `known` only; prefix
   * labels): 1 while every number of the step so far is one a correct step may contain, 0 from the first that is
   * not (a miscopied operand, an off-path result). The step-end reads keep the step labels. This marks where a
   * step goes wrong, not just that it does (default false).
   */
  numberLabels?: boolean;
}

/** PRM training sequences: each step's end token with its label (and with `numberLabels`, number tokens). */
export function prmTrainExamples(
  tokenizer: Tokenizer,
  examples: readonly StepExample[],
  opts: PrmTrainExampleOptions = {},
): RmTrainExample[] {
  return examples.map((ex, i) => {
    if (ex.labels.length !== ex.steps.length) {
      throw new Error(`PRM example ${i} has ${ex.labels.length} labels for ${ex.steps.length} steps`);
    }
    const input = buildRmInput(tokenizer, ex.question, ex.steps, { separator: opts.separator });
    const reads = [...input.stepEnds], targets = [...ex.labels];
    if (opts.numberLabels && ex.known) {
      const known = new Set(ex.known), ends = new Set(input.stepEnds);
      for (let k = 0; k < input.steps.length; k++) {
        const { start } = input.spans[k];
        const numbers = [...input.steps[k].matchAll(/\d+(?:\.\d+)?/g)];
        const spans = numbers.map((m) => ({ start: start + m.index!, end: start + m.index! + m[0].length }));
        const tokens = spans.length ? stepEndTokens(spans, input.offsets) : [];
        let ok = true;
        numbers.forEach((m, j) => {
          ok &&= ex.labels[k] === 1 || known.has(numberKey(m[0]));
          if (ends.has(tokens[j])) return;
          reads.push(tokens[j]);
          targets.push(ok ? 1 : 0);
        });
        if (ex.labels[k] !== 1) break; // after the first wrong step every prefix is wrong: the step ends say so
      }
    }
    return { ids: input.ids, reads, targets };
  });
}

/** ORM training sequences: the last token with the outcome label. */
export function ormTrainExamples(
  tokenizer: Tokenizer,
  examples: readonly OutcomeExample[],
  opts: { separator?: string } = {},
): RmTrainExample[] {
  return examples.map((ex) => {
    const input = buildRmInput(tokenizer, ex.question, ex.steps, { separator: opts.separator });
    return { ids: input.ids, reads: [input.ids.length - 1], targets: [ex.label] };
  });
}

/** softplus(z) = log(1 + e^z), stable. */
function softplus(z: number): number {
  return Math.max(z, 0) + Math.log1p(Math.exp(-Math.abs(z)));
}

/** Mean BCE-with-logits and its gradient (see the module doc). */
export function bceWithLogits(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  opts: { scale?: number } = {},
): { loss: number; dlogits: Float32Array } {
  const n = logits.length, scale = opts.scale ?? 1;
  if (targets.length !== n) throw new Error(`BCE: ${targets.length} targets for ${n} logits`);
  let loss = 0;
  const dlogits = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const z = logits[i], y = targets[i];
    if (!(y >= 0 && y <= 1)) throw new Error(`BCE: target ${i} is "${y}", expected a number in [0, 1]`);
    loss += softplus(z) - y * z;
    const p = z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
    dlogits[i] = (scale * (p - y)) / n;
  }
  return { loss: loss / n, dlogits };
}

/** Result of {@linkcode rmLossAndGrads}. */
export interface RmLossResult {
  /** Mean BCE over the batch's labelled positions. */
  loss: number;
  /** Labelled positions n. */
  count: number;
  /** The logits at the labelled positions, in batch order. */
  logits: Float32Array;
}

/**
 * Forward + backward of the mean BCE over `batch`, accumulating `scale`·∇loss into `grads` (zero them at the start
 * of a step).
 */
export async function rmLossAndGrads(
  model: Qwen2Model,
  grads: Grads,
  batch: readonly RmTrainExample[],
  opts: { scale?: number } = {},
): Promise<RmLossResult> {
  batch.forEach((ex, i) => {
    if (ex.reads.length !== ex.targets.length) {
      throw new Error(
        `Training example ${i} has ${ex.targets.length} targets for ${ex.reads.length} positions`,
      );
    }
  });
  const { logits, state } = await headForward(model, batch.map((e) => e.ids), {
    reads: batch.map((e) => e.reads),
    save: true,
  });
  const flat = new Float32Array(logits.reduce((a, l) => a + l.length, 0));
  let off = 0;
  for (const l of logits) flat.set(l, off), off += l.length;
  const targets = batch.flatMap((e) => e.targets);
  let bce: ReturnType<typeof bceWithLogits>;
  try {
    bce = bceWithLogits(flat, targets, opts);
  } catch (e) {
    releaseHeadState(state!);
    throw e;
  }
  await headBackward(state!, grads, bce.dlogits);
  return { loss: bce.loss, count: flat.length, logits: flat };
}

/** Options of {@linkcode trainRewardModel}. */
export interface RmTrainOptions {
  /** Optimiser steps. */
  steps: number;
  /** Peak learning rate. */
  lr: number;
  /** Sequences per step. */
  batchSize: number;
  /** Seed of the data order (default 0). */
  seed?: number;
  /** Linear warmup steps (default 0). */
  warmupSteps?: number;
  /** Schedule after warmup (default "cosine"). */
  schedule?: ScheduleKind;
  /** Final lr as a fraction of `lr` (default 0.1). */
  minLrRatio?: number;
  /** AdamW weight decay (default 0.01). */
  weightDecay?: number;
  /** Global gradient-norm clip (default 1; 0 disables). */
  maxGradNorm?: number;
  /**
   * Length grouping: each run of this many batches is drawn together and cut by sequence length, so a batch pads
   * little (default 1 = plain shuffled batches). Off by default: a solution's length often tells its label (a
   * wrong answer stops early, a repeated step runs long), and batches of one length then hold one label.
   */
  lengthGroup?: number;
  /** Called after every step. */
  onStep?: (log: RmStepLog) => void | Promise<void>;
  /** Stops after the current step when aborted. */
  signal?: AbortSignal;
}

/** One step's record. */
export interface RmStepLog {
  /** Steps done (1-based). */
  step: number;
  /** Mean BCE of the batch. */
  loss: number;
  /** Fraction of the batch's positions with 1[σ(z) > 0.5] = 1[y > 0.5]. */
  accuracy: number;
  /** Learning rate of the step. */
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Labelled positions in the batch. */
  positions: number;
  /** Wall time of the step. */
  seconds: number;
}

/** Result of {@linkcode trainRewardModel}. */
export interface RmTrainResult {
  /** Steps run. */
  steps: number;
  /** Loss of every step. */
  losses: number[];
  /** Wall time of the run. */
  seconds: number;
}

/**
 * Trains `model` (a PRM or ORM) in place on `data` for `opts.steps` AdamW steps over seeded shuffled epochs,
 * batches grouped by length (see the module doc).
 */
export async function trainRewardModel(
  model: Qwen2Model,
  data: readonly RmTrainExample[],
  opts: RmTrainOptions,
): Promise<RmTrainResult> {
  const { gpu } = model;
  if (data.length === 0) throw new Error("Cannot train the reward model: no training examples");
  for (const [k, v] of [["steps", opts.steps], ["batchSize", opts.batchSize]] as const) {
    if (!(Number.isSafeInteger(v) && v >= (k === "steps" ? 0 : 1))) {
      throw new Error(`Cannot train the reward model: ${k} must be a positive integer, got "${v}"`);
    }
  }
  const sched = {
    schedule: opts.schedule ?? "cosine",
    lr: opts.lr,
    warmupSteps: opts.warmupSteps ?? 0,
    totalSteps: opts.steps,
    minLrRatio: opts.minLrRatio ?? 0.1,
  } as const;
  const grads = createGrads(model.params);
  const opt = new AdamW(gpu, model.params.byName, { weightDecay: opts.weightDecay ?? 0.01 });
  const clip = new GradClip(gpu, { maxNorm: (opts.maxGradNorm ?? 1) > 0 ? opts.maxGradNorm ?? 1 : Infinity });
  const rng = new Rng(`rm-train:${opts.seed ?? 0}`);
  let order: number[] = [], pos = 0;
  const next = (): RmTrainExample => {
    if (pos >= order.length) order = rng.shuffle(data.map((_, i) => i)), pos = 0;
    return data[order[pos++]];
  };
  // Length grouping: draw G batches' worth of the stream, sort it by length, cut it into batches, shuffle them.
  const B = Math.min(opts.batchSize, data.length), G = Math.max(1, opts.lengthGroup ?? 1);
  let queue: RmTrainExample[][] = [];
  const nextBatch = (): RmTrainExample[] => {
    if (queue.length === 0) {
      const pool = Array.from({ length: B * G }, next).sort((a, b) => a.ids.length - b.ids.length);
      queue = rng.shuffle(Array.from({ length: G }, (_, g) => pool.slice(g * B, (g + 1) * B)));
    }
    return queue.pop()!;
  };
  const t0 = performance.now(), losses: number[] = [];
  try {
    for (let step = 0; step < opts.steps && !opts.signal?.aborted; step++) {
      const ts = performance.now();
      const batchData = nextBatch();
      const r = await rmLossAndGrads(model, grads, batchData);
      if (!Number.isFinite(r.loss)) {
        throw new Error(`Training diverged at step ${step + 1}: the loss is ${r.loss} (try a lower --lr)`);
      }
      const lr = lrAt(step, sched);
      const batch = new Batch(gpu, "rm.step");
      opt.step(batch, grads, { lr, clip });
      const stats = clip.read(batch);
      zeroGrads(batch, grads);
      await batch.submit();
      const targets = batchData.flatMap((e) => e.targets);
      const correct = targets.filter((y, i) => (r.logits[i] > 0) === (y > 0.5)).length;
      losses.push(r.loss);
      await opts.onStep?.({
        step: step + 1,
        loss: r.loss,
        accuracy: correct / targets.length,
        lr,
        gradNorm: (await stats).norm,
        positions: r.count,
        seconds: (performance.now() - ts) / 1000,
      });
    }
  } finally {
    for (const g of grads.values()) g.release();
    opt.release();
    clip.release();
  }
  return { steps: losses.length, losses, seconds: (performance.now() - t0) / 1000 };
}
