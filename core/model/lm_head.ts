/**
 * The LM head with fused target log-probs, forward and backward side by side, over chunks of rows so that no
 * (N, V) logits matrix is ever kept whole:
 *
 * ```
 * forward:  logits_r = hidden_r · Wlmᵀ;  logp_r = logits_r[t_r] − lse_r;  entropy_r = −Σ p log p
 * backward: dlogits_r = dlogp_r·(onehot(t_r) − p_r) − dentropy_r·p_r⊙(log p_r + entropy_r)
 *           dhidden_r = dlogits_r · Wlm  (written);  dWlm += dlogitsᵀ · hidden  (accumulated)
 * ```
 * The backward recomputes each chunk's logits (one more matmul) instead of storing them.
 *
 * @module
 */
import type { Batch } from "../gpu/batch.ts";
import { Tensor } from "../gpu/tensor.ts";
import type { Qwen2Config } from "./config.ts";
import { linear, linearBackward } from "./linear.ts";
import { logprobsBackward, logprobsForward } from "./logprobs.ts";
import type { Qwen2Params } from "./params.ts";

/** Rows per chunk so that one chunk's logits take about `bytes` (default 64 MiB). */
export function logitChunkRows(cfg: Qwen2Config, N: number, bytes = 64 << 20): number {
  return Math.max(1, Math.min(N, Math.floor(bytes / (4 * cfg.vocabSize))));
}

/**
 * Copies rows [r0, r0+R) of a (N, X) or (N) tensor into a new (R, X) or (R) tensor (so kernels can bind it
 * whole).
 */
function rowsOf(batch: Batch, t: Tensor, r0: number, R: number, label: string): Tensor {
  const X = t.size / t.shape[0];
  const out = new Tensor(batch.gpu, t.shape.length === 1 ? [R] : [R, X], t.dtype, label);
  batch.copy(t.view(r0 * X, R * X), out);
  return out;
}

/**
 * Forward: per-row target log-probs, logsumexp and entropy for `hidden` (N, C) and `targets` (N) i32 (−1 = no
 * target, logp 0). Outputs (N) tensors are written.
 */
export function lmHeadForward(
  batch: Batch,
  out: { logp: Tensor; lse: Tensor; entropy: Tensor },
  hidden: Tensor,
  targets: Tensor,
  cfg: Qwen2Config,
  params: Qwen2Params,
): void {
  const N = hidden.shape[0], V = cfg.vocabSize;
  const rows = logitChunkRows(cfg, N);
  for (let r0 = 0; r0 < N; r0 += rows) {
    const R = Math.min(rows, N - r0);
    const h = rowsOf(batch, hidden, r0, R, "lm.hidden_rows"),
      tg = rowsOf(batch, targets, r0, R, "lm.targets");
    const logits = new Tensor(batch.gpu, [R, V], "f32", "lm.logits");
    linear(batch, logits, h, params.lmHead);
    const o = {
      logp: new Tensor(batch.gpu, [R], "f32", "lm.logp"),
      lse: new Tensor(batch.gpu, [R], "f32", "lm.lse"),
      entropy: new Tensor(batch.gpu, [R], "f32", "lm.entropy"),
    };
    logprobsForward(batch, o, logits, tg);
    batch.copy(o.logp, out.logp.view(r0, R));
    batch.copy(o.lse, out.lse.view(r0, R));
    batch.copy(o.entropy, out.entropy.view(r0, R));
    for (const t of [h, tg, logits, o.logp, o.lse, o.entropy]) t.release();
  }
}

/**
 * Backward of {@linkcode lmHeadForward} for upstream gradients `dlogp`, `dentropy` (N): writes `dhidden` (N, C) and
 * accumulates the LM head weight gradient into `dWlm` (the embedding gradient when tied).
 */
export function lmHeadBackward(
  batch: Batch,
  grads: { dhidden: Tensor; dWlm: Tensor },
  dlogp: Tensor,
  dentropy: Tensor,
  hidden: Tensor,
  targets: Tensor,
  cfg: Qwen2Config,
  params: Qwen2Params,
): void {
  const N = hidden.shape[0], V = cfg.vocabSize;
  const rows = logitChunkRows(cfg, N);
  for (let r0 = 0; r0 < N; r0 += rows) {
    const R = Math.min(rows, N - r0);
    const h = rowsOf(batch, hidden, r0, R, "lm.hidden_rows"),
      tg = rowsOf(batch, targets, r0, R, "lm.targets");
    const dlp = rowsOf(batch, dlogp, r0, R, "lm.dlogp"), den = rowsOf(batch, dentropy, r0, R, "lm.dentropy");
    const logits = new Tensor(batch.gpu, [R, V], "f32", "lm.logits");
    linear(batch, logits, h, params.lmHead);
    const saved = {
      logp: new Tensor(batch.gpu, [R], "f32", "lm.logp"),
      lse: new Tensor(batch.gpu, [R], "f32", "lm.lse"),
      entropy: new Tensor(batch.gpu, [R], "f32", "lm.entropy"),
    };
    logprobsForward(batch, saved, logits, tg);
    const dlogits = new Tensor(batch.gpu, [R, V], "f32", "lm.dlogits");
    logprobsBackward(batch, dlogits, { dlogp: dlp, dentropy: den }, logits, tg, saved);
    const dh = new Tensor(batch.gpu, [R, cfg.hiddenSize], "f32", "lm.dhidden_rows");
    linearBackward(batch, { dx: dh, dw: grads.dWlm }, dlogits, h, params.lmHead);
    batch.copy(dh, grads.dhidden.view(r0 * cfg.hiddenSize, R * cfg.hiddenSize));
    for (const t of [h, tg, dlp, den, logits, saved.logp, saved.lse, saved.entropy, dlogits, dh]) t.release();
  }
}
