/**
 * Language-model loss and gradients on the GPU: mean cross-entropy over completion tokens, forward and backward
 * through the LM head and the whole trunk in one command batch.
 *
 * `loss = −(1/n) Σ_{(b,t): m[b,t]=1} log p(x[b,t] | x[b,<t])` with the completion mask m (token t is a target,
 * predicted from position t−1; `n = Σ m`).
 *
 * @module
 */
import { runBatch } from "../gpu/batch.ts";
import { upload } from "../gpu/io.ts";
import { Tensor } from "../gpu/tensor.ts";
import { lmHeadBackward, lmHeadForward } from "../model/lm_head.ts";
import { type PackedBatch, packSequences, type Qwen2Model, uploadPacked } from "../model/model.ts";
import { releaseActivations, trunkForward } from "../model/qwen2.ts";
import { type Grads, lmHeadGrad, trunkBackward } from "../model/qwen2_backward.ts";

/** One training example: token ids and which of them are targets. */
export interface LMExample {
  /** Token ids. */
  ids: readonly number[];
  /** 1 where the token is a target (predicted from the previous position); same length as `ids`. */
  completionMask: readonly number[];
}

/** Result of {@linkcode lmLossAndGrads}. */
export interface LMLossResult {
  /** Mean cross-entropy over the target tokens of this batch. */
  loss: number;
  /** Number of target tokens n. */
  tokens: number;
  /** Tokens in the batch (real, not padding). */
  inputTokens: number;
}

/** Targets (−1 = none) and per-row dlogp for a packed batch: row (b, t) predicts token t+1. */
function targetsOf(pk: PackedBatch, examples: readonly LMExample[]): { targets: Int32Array; n: number } {
  const targets = new Int32Array(pk.B * pk.T).fill(-1);
  let n = 0;
  examples.forEach((ex, b) => {
    if (ex.completionMask.length !== ex.ids.length) {
      throw new Error(
        `Example ${b}: completion_mask has ${ex.completionMask.length} entries, expected ${ex.ids.length} (one per token)`,
      );
    }
    for (let t = 1; t < ex.ids.length; t++) {
      if (ex.completionMask[t]) {
        targets[b * pk.T + pk.starts[b] + t - 1] = ex.ids[t];
        n++;
      }
    }
  });
  return { targets, n };
}

/**
 * Forward and backward of the mean completion cross-entropy over `examples`, accumulating `scale`·∇loss into
 * `grads` (scale = 1/micro-batches for gradient accumulation). Returns the loss (one readback).
 */
export async function lmLossAndGrads(
  model: Qwen2Model,
  grads: Grads,
  examples: readonly LMExample[],
  opts: { scale?: number } = {},
): Promise<LMLossResult> {
  const { gpu, config: cfg, params } = model;
  const pk = packSequences(examples.map((e) => [...e.ids]));
  const { targets, n } = targetsOf(pk, examples);
  if (n === 0) throw new Error("The batch has no target tokens: every completion_mask is 0");
  const N = pk.B * pk.T;
  const dlogp = new Float32Array(N);
  for (let r = 0; r < N; r++) if (targets[r] >= 0) dlogp[r] = -(opts.scale ?? 1) / n;
  const temps: Tensor[] = [];
  const keep = (t: Tensor) => (temps.push(t), t);
  const inputs = uploadPacked(gpu, pk, "lm");
  temps.push(inputs.ids, inputs.positions, inputs.mask);
  const targetsT = keep(upload(gpu, targets, { label: "lm.targets" }));
  const dlogpT = keep(upload(gpu, dlogp, { label: "lm.dlogp" }));
  const dentropy = keep(upload(gpu, new Float32Array(N), { label: "lm.dentropy" }));
  const logp = keep(new Tensor(gpu, [N], "f32", "lm.logp"));
  const read = await runBatch(gpu, "lm.step", (batch) => {
    const { hidden, saved } = trunkForward(batch, cfg, params, inputs, { save: true });
    keep(hidden);
    const lse = keep(new Tensor(gpu, [N], "f32", "lm.lse")),
      entropy = keep(new Tensor(gpu, [N], "f32", "lm.ent"));
    lmHeadForward(batch, { logp, lse, entropy }, hidden, targetsT, cfg, params);
    const dhidden = new Tensor(gpu, [N, cfg.hiddenSize], "f32", "lm.dhidden");
    lmHeadBackward(
      batch,
      { dhidden, dWlm: lmHeadGrad(cfg, grads) },
      dlogpT,
      dentropy,
      hidden,
      targetsT,
      cfg,
      params,
    );
    trunkBackward(batch, grads, dhidden, cfg, params, inputs, saved!);
    releaseActivations(saved!);
    return batch.read(logp);
  }, { release: temps });
  const lp = (await read) as Float32Array;
  let sum = 0;
  for (let r = 0; r < N; r++) if (targets[r] >= 0) sum += lp[r];
  return { loss: -sum / n, tokens: n, inputTokens: examples.reduce((a, e) => a + e.ids.length, 0) };
}
