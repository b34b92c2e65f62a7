/**
 * Linear layers with Hugging Face weight layout (W stored (out, in)), forward and backward side by side:
 *
 * forward:  y (N, out) = x (N, in) · Wᵀ + b
 * backward: dx (N, in) = dy · W            (activation gradient: overwritten, or accumulated with `accumulate`)
 *           dW (out, in) += dyᵀ · x        (parameter gradients accumulate, llm.c convention)
 *           db (out) += Σ_n dy[n]
 *
 * @module
 */
import type { Batch } from "../gpu/batch.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { matmul } from "../ops/matmul.ts";
import { reduceColumns } from "../ops/columns.ts";

/** y = x·Wᵀ (+ b). Shapes: x (N, in), w (out, in), bias (out), y (N, out). */
export function linear(batch: Batch, out: Tensor, x: Tensor, w: Tensor, bias?: Tensor): void {
  matmul(batch, { out, a: x, b: w, transB: true, bias });
}

/**
 * Backward of {@linkcode linear}: dx = dy·W (written, or added with `accumulateDx`), dW += dyᵀ·x, db += Σ_rows dy.
 * Pass `dx: undefined` to skip the input gradient (e.g. for the first layer's inputs).
 */
export function linearBackward(
  batch: Batch,
  grads: { dx?: Tensor; dw: Tensor; db?: Tensor },
  dy: Tensor,
  x: Tensor,
  w: Tensor,
  opts: { accumulateDx?: boolean } = {},
): void {
  if (grads.dx) matmul(batch, { out: grads.dx, a: dy, b: w, accumulate: opts.accumulateDx });
  matmul(batch, { out: grads.dw, a: dy, b: x, transA: true, accumulate: true });
  if (grads.db) reduceColumns(batch, grads.db, dy, { accumulate: true });
}
