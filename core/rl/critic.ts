/**
 * The PPO critic: a value head on its own Qwen2 trunk (a `Qwen2ForTokenClassification` with one label, saved in
 * Hugging Face layout), initialised from the policy or from the PRM, trained with PPO's clipped value loss:
 *
 * ```
 * V_j        = w · trunk(prompt + response)[P − 1 + j] + b         value of the state before action j
 * valueLoss  = ½ mean_j max((V_j − R_j)², (clip(V_j, V_old,j ± ε_v) − R_j)²)        (ppoLoss in ppo_loss.ts)
 * ∂/∂V_j     = m_j/n · (V_j − R_j) · [unclipped]
 * ```
 * The values are read back after the forward pass, the loss and its gradient are computed on the host in f64 by
 * the reference `ppoLoss`, and the gradient is backpropagated through the head and the whole trunk
 * (`headBackward`). The head starts at zero (V ≡ 0) unless `headStd` is set.
 *
 * @module
 */
import { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import { headBackward, headForward, headLogits, withScoreHead } from "../model/heads.ts";
import { loadModel, type Qwen2Model, releaseModel, saveModel } from "../model/model.ts";
import { createGrads, type Grads } from "../model/qwen2_backward.ts";
import { AdamW, GradClip, zeroGrads } from "../optim/mod.ts";
import { type Experience, tokenMatrix } from "./experience.ts";
import { ppoLoss } from "./ppo_loss.ts";
import type { ValueModel } from "./rollout.ts";

/** Optimiser settings of the critic. */
export interface CriticOptions {
  /** AdamW weight decay (default 0). */
  weightDecay?: number;
  /** AdamW betas (default 0.9, 0.999) and ε (default 1e-8). */
  betas?: readonly [number, number];
  eps?: number;
  /** Global gradient-norm clip (default 1; Infinity disables). */
  maxGradNorm?: number;
  /** Padded tokens per forward pass when computing values (default 8192). */
  maxBatchTokens?: number;
}

/** Statistics of one critic update. */
export interface CriticStepStats {
  /** Clipped value loss of the minibatch before the update. */
  valueLoss: number;
  /** Fraction of tokens whose value term took the clipped branch. */
  valueClipFrac: number;
  /** Gradient norm before clipping. */
  gradNorm: number;
  /** Valid tokens n. */
  tokens: number;
}

/** Reads of the value head: the row predicting each response token, (B) ragged. */
function valueReads(prompts: readonly number[][], responses: readonly number[][]): number[][] {
  return responses.map((r, b) => Array.from(r, (_, j) => prompts[b].length - 1 + j));
}

/** A value model with its gradients and optimiser (see the module doc). */
export class Critic implements ValueModel {
  /** The value model (Qwen2ForTokenClassification, 1 label). */
  readonly model: Qwen2Model;
  /** Gradients, one per parameter. */
  readonly grads: Grads;
  /** AdamW over every parameter. */
  readonly opt: AdamW;
  /** Global-norm clipping. */
  readonly clip: GradClip;
  readonly #maxBatchTokens?: number;

  /** Wraps a one-label token-classification model (consumed: released with the critic). */
  constructor(model: Qwen2Model, opts: CriticOptions = {}) {
    if (model.config.architecture !== "Qwen2ForTokenClassification" || model.config.numLabels !== 1) {
      throw new Error(
        `Cannot build a critic from "${model.dir ?? "<memory>"}": expected a Qwen2ForTokenClassification ` +
          `with num_labels 1, got ${model.config.architecture} with num_labels ${model.config.numLabels}`,
      );
    }
    this.model = model;
    this.grads = createGrads(model.params);
    this.opt = new AdamW(model.gpu, model.params.byName, {
      weightDecay: opts.weightDecay ?? 0,
      betas: opts.betas,
      eps: opts.eps,
    });
    this.clip = new GradClip(model.gpu, { maxNorm: opts.maxGradNorm ?? 1 });
    this.#maxBatchTokens = opts.maxBatchTokens;
  }

  /**
   * A critic on the trunk of the model in `dir` (the policy or the PRM) with a fresh value head
   * (`score.weight` ~ N(0, headStd²), default 0 = zeros, and a zero bias); a saved critic (`resume`) keeps its
   * head.
   */
  static async load(
    dir: string,
    opts: CriticOptions & { gpu?: Gpu; headStd?: number; resume?: boolean; seed?: number } = {},
  ): Promise<Critic> {
    const base = await loadModel(dir, { gpu: opts.gpu });
    if (opts.resume) return new Critic(base, opts);
    const model = withScoreHead(base, "Qwen2ForTokenClassification", {
      numLabels: 1,
      std: opts.headStd ?? 0,
      seed: opts.seed ?? 0,
      extraConfig: { ppo_value_head: { init: dir, reads: "the row predicting each response token" } },
    });
    return new Critic(model, opts);
  }

  /** (B, T) values V(s_j) of every response token's state, T = the longest response (0 past each response). */
  async values(prompts: readonly number[][], responses: readonly number[][]): Promise<Float32Array> {
    const B = responses.length, T = Math.max(1, ...responses.map((r) => r.length));
    const seqs = prompts.map((p, b) => [...p, ...responses[b]]);
    const logits = await headLogits(this.model, seqs, {
      reads: valueReads(prompts, responses),
      maxBatchTokens: this.#maxBatchTokens,
    });
    const out = tokenMatrix(B, T);
    logits.forEach((v, b) => out.set(v, b * T));
    return out;
  }

  /**
   * One clipped-value-loss step on a minibatch (split into micro-batches of at most `microBatch` sequences whose
   * gradients add up to the minibatch mean), then AdamW with global-norm clipping at learning rate `lr`.
   */
  async step(
    mb: Experience,
    opts: { lr: number; clipRangeValue?: number; microBatch?: number },
  ): Promise<CriticStepStats> {
    const micro = Math.max(1, opts.microBatch ?? mb.B);
    let n = 0;
    for (let i = 0; i < mb.actionMask.length; i++) n += mb.actionMask[i];
    let lossSum = 0, clipSum = 0;
    // Micro-batches of similar lengths: less padding in each (B, T) pass.
    const byLength = [...Array(mb.B).keys()].sort((a, b) =>
      mb.prompts[a].length + mb.responseLength[a] - mb.prompts[b].length - mb.responseLength[b] || a - b
    );
    for (let b0 = 0; b0 < mb.B; b0 += micro) {
      const idx = byLength.slice(b0, b0 + micro);
      const prompts = idx.map((b) => mb.prompts[b]), responses = idx.map((b) => mb.responses[b]);
      const reads = valueReads(prompts, responses);
      const { logits, state } = await headForward(
        this.model,
        prompts.map((p, k) => [...p, ...responses[k]]),
        {
          reads,
          save: true,
        },
      );
      // Flat per-token arrays over the micro-batch's response tokens, in read order.
      const pick = (f: Float32Array) =>
        Float32Array.from(idx.flatMap((b) => [...f.subarray(b * mb.T, b * mb.T + mb.responseLength[b])]));
      const values = Float32Array.from(logits.flatMap((l) => [...l]));
      const zeros = new Float32Array(values.length);
      const r = ppoLoss({
        logp: zeros,
        logpOld: zeros,
        advantages: zeros,
        values,
        valuesOld: pick(mb.values),
        returns: pick(mb.returns),
      }, { clipRangeValue: opts.clipRangeValue ?? 0.2, vfCoef: 1 });
      const m = values.length;
      lossSum += r.valueLoss * m;
      clipSum += r.valueClipFrac * m;
      await headBackward(state!, this.grads, Float32Array.from(r.dValues, (g) => (g * m) / n));
    }
    const batch = new Batch(this.model.gpu, "critic.step");
    this.opt.step(batch, this.grads, { lr: opts.lr, clip: this.clip });
    const stats = this.clip.read(batch);
    zeroGrads(batch, this.grads);
    await batch.submit();
    return { valueLoss: lossSum / n, valueClipFrac: clipSum / n, gradNorm: (await stats).norm, tokens: n };
  }

  /** Saves the value model in Hugging Face layout (atomically). */
  save(dir: string, opts: { tokenizerDir?: string } = {}): Promise<void> {
    return saveModel(this.model, dir, opts);
  }

  /** Releases the model, gradients and optimiser state. */
  release(): void {
    for (const g of this.grads.values()) g.release();
    this.opt.release();
    this.clip.release();
    releaseModel(this.model);
  }
}
