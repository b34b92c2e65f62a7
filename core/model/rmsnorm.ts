/**
 * RMSNorm kernels (`shaders/rmsnorm.wgsl`), Hugging Face `Qwen2RMSNorm` semantics:
 *
 * `y[r, i] = x[r, i] · rstd[r] · w[i]` with `rstd[r] = 1 / sqrt(mean_i x[r, i]² + eps)` over the last dim C.
 *
 * Backward follows llm.c's convention: `dx` is written, `dw` is accumulated (`+=`) by a separate deterministic
 * reduction over rows. Rows are sharded when `x` exceeds the storage-binding limit.
 *
 * @module
 */
import src from "../../shaders/rmsnorm.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import { grid1d, type KernelSpec, type ParamField } from "../gpu/kernel.ts";
import { rowShards } from "../gpu/shard.ts";
import { expectShape, type Tensor } from "../gpu/tensor.ts";

const WG = 64;
const WG_X = 32;
const WG_Y = 8;
const PARAMS: ParamField[] = [["rows", "u32"], ["C", "u32"], ["row0", "u32"], ["eps", "f32"]];
const spec = (entry: string, constants: Record<string, number>, bindings: string[]): KernelSpec => ({
  name: `rmsnorm.${entry}`,
  code: src,
  entry,
  constants,
  params: PARAMS,
  bindings,
});
const KERNELS = {
  forward: spec("forward", { WG }, ["x", "w", "rstd", "out", "", "", ""]),
  backward: spec("backward", { WG }, ["x", "w", "rstd", "", "dout", "dx", ""]),
  backwardDw: spec("backward_dw", { WG_X, WG_Y }, ["x", "", "rstd", "", "dout", "", "dw"]),
};

/** Options of {@linkcode rmsnormForward}. */
export interface RmsnormOptions {
  /** Added to the mean square before the reciprocal square root (`rms_norm_eps`). */
  eps: number;
}

/** Rows N and channels C of `x` (shape `(..., C)`), checking that `w` is `(C)`. */
function dims(x: Tensor, w: Tensor, what: string): { N: number; C: number } {
  if (x.shape.length < 1) {
    throw new Error(`${what}: tensor "${x.label}" has shape [${x.shape}], expected (..., C)`);
  }
  const C = x.shape[x.shape.length - 1];
  expectShape(w, [C], what);
  return { N: C === 0 ? 0 : x.size / C, C };
}

/**
 * RMSNorm forward. `out = x · rstd · w` with `rstd = 1/sqrt(mean(x²) + eps)` per row.
 *
 * Shapes: `x`, `out`: (..., C) with N rows; `w`: (C); `rstd`: (N) (saved for backward).
 */
export function rmsnormForward(
  batch: Batch,
  out: Tensor,
  rstd: Tensor,
  x: Tensor,
  w: Tensor,
  opts: RmsnormOptions,
): void {
  const { N, C } = dims(x, w, "rmsnorm.forward");
  expectShape(out, x.shape, "rmsnorm.forward");
  expectShape(rstd, [N], "rmsnorm.forward");
  if (!(opts.eps >= 0)) {
    throw new Error(`rmsnorm.forward: eps must be a non-negative number, got ${opts.eps}`);
  }
  for (const { start, count } of rowShards(batch.gpu, N, C)) {
    if (count === 0) continue;
    const views = { x: x.view(start * C, count * C), w, rstd, out: out.view(start * C, count * C) };
    const groups = grid1d(count, batch.gpu.limits.maxWorkgroupsPerDimension);
    batch.dispatch(KERNELS.forward, views, groups, { rows: count, C, row0: start, eps: opts.eps });
  }
}

/**
 * RMSNorm backward: writes `dx` and accumulates `dw` (`+=`; zero it before the first micro-batch).
 *
 * `dx[j] = rstd · (w[j]·dout[j] − x[j] · rstd² · mean_i(dout[i]·w[i]·x[i]))`,
 * `dw[i] += Σ_rows dout[i] · x[i] · rstd`.
 *
 * Shapes: `dout`, `x`, `dx`: (..., C) with N rows; `w`, `dw`: (C); `rstd`: (N) from {@linkcode rmsnormForward}.
 */
export function rmsnormBackward(
  batch: Batch,
  dx: Tensor,
  dw: Tensor,
  dout: Tensor,
  x: Tensor,
  w: Tensor,
  rstd: Tensor,
): void {
  const { N, C } = dims(x, w, "rmsnorm.backward");
  expectShape(dx, x.shape, "rmsnorm.backward");
  expectShape(dout, x.shape, "rmsnorm.backward");
  expectShape(dw, [C], "rmsnorm.backward");
  expectShape(rstd, [N], "rmsnorm.backward");
  const max = batch.gpu.limits.maxWorkgroupsPerDimension;
  for (const { start, count } of rowShards(batch.gpu, N, C)) {
    if (count === 0) continue;
    const rows = { x: x.view(start * C, count * C), dout: dout.view(start * C, count * C), rstd };
    const params = { rows: count, C, row0: start, eps: 0 };
    batch.dispatch(
      KERNELS.backward,
      { ...rows, w, dx: dx.view(start * C, count * C) },
      grid1d(count, max),
      params,
    );
    batch.dispatch(KERNELS.backwardDw, { ...rows, dw }, [Math.ceil(C / WG_X)], params);
  }
}
