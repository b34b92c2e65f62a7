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
import {
  grid1d,
  type KernelSpec,
  MAX_LOOP_ITERATIONS,
  type ParamField,
  useRowsVariant,
} from "../gpu/kernel.ts";
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
/** One invocation per row (per column for dw), no barriers: for CPU adapters. */
const ROWS_WG = 16;
const ROWS = {
  forward: spec("forward_rows", { WG: ROWS_WG }, ["x", "w", "rstd", "out", "", "", ""]),
  backward: spec("backward_rows", { WG: ROWS_WG }, ["x", "w", "rstd", "", "dout", "dx", ""]),
  backwardDw: spec("backward_dw_cols", { WG: ROWS_WG }, ["x", "", "rstd", "", "dout", "", "dw"]),
};

/**
 * Whether the rows family runs (see {@linkcode RmsnormOptions.variant}): its invocations loop twice over the C
 * channels, which must stay within the loop budget of CPU adapters.
 */
function useRows(batch: Batch, C: number, variant: RmsnormOptions["variant"]): boolean {
  const unfit = 2 * C > MAX_LOOP_ITERATIONS
    ? `the rows kernel loops over C twice, at most ${MAX_LOOP_ITERATIONS} times; C = ${C}`
    : undefined;
  return useRowsVariant(batch.gpu, variant, "rmsnorm", unfit);
}

/** Options of {@linkcode rmsnormForward}. */
export interface RmsnormOptions {
  /** Added to the mean square before the reciprocal square root (`rms_norm_eps`). */
  eps: number;
  /**
   * `"workgroup"` (one workgroup per row, tree reductions: GPUs), `"rows"` (one invocation per row, no
   * barriers: CPU adapters) or `"auto"` (default: rows on a CPU adapter).
   */
  variant?: "auto" | "workgroup" | "rows";
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
  const rows = useRows(batch, C, opts.variant), max = batch.gpu.limits.maxWorkgroupsPerDimension;
  for (const { start, count } of rowShards(batch.gpu, N, C)) {
    if (count === 0) continue;
    const views = { x: x.view(start * C, count * C), w, rstd, out: out.view(start * C, count * C) };
    const groups = rows ? grid1d(Math.ceil(count / ROWS_WG), max) : grid1d(count, max);
    batch.dispatch((rows ? ROWS : KERNELS).forward, views, groups, {
      rows: count,
      C,
      row0: start,
      eps: opts.eps,
    });
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
  opts: Pick<RmsnormOptions, "variant"> = {},
): void {
  const { N, C } = dims(x, w, "rmsnorm.backward");
  expectShape(dx, x.shape, "rmsnorm.backward");
  expectShape(dout, x.shape, "rmsnorm.backward");
  expectShape(dw, [C], "rmsnorm.backward");
  expectShape(rstd, [N], "rmsnorm.backward");
  const max = batch.gpu.limits.maxWorkgroupsPerDimension;
  const useR = useRows(batch, C, opts.variant);
  // dw invocations loop over the dispatch's rows: chunks of rows within the loop budget of CPU adapters.
  const shards = rowShards(batch.gpu, N, C, { maxRows: MAX_LOOP_ITERATIONS });
  for (const { start, count } of shards) {
    if (count === 0) continue;
    const rows = { x: x.view(start * C, count * C), dout: dout.view(start * C, count * C), rstd };
    const params = { rows: count, C, row0: start, eps: 0 };
    batch.dispatch(
      (useR ? ROWS : KERNELS).backward,
      { ...rows, w, dx: dx.view(start * C, count * C) },
      useR ? grid1d(Math.ceil(count / ROWS_WG), max) : grid1d(count, max),
      params,
    );
    if (useR) batch.dispatch(ROWS.backwardDw, { ...rows, dw }, [Math.ceil(C / ROWS_WG)], params);
    else batch.dispatch(KERNELS.backwardDw, { ...rows, dw }, [Math.ceil(C / WG_X)], params);
  }
}
