/**
 * Global gradient-norm clipping on the GPU, without a readback (torch.nn.utils.clip_grad_norm_ with norm_type 2):
 * ```
 * norm = gradScale · √(Σ_tensors Σ_i grad_i²)
 * coef = min(1, maxNorm / (norm + 1e-6))          (1 when maxNorm is Infinity: only measure)
 * ```
 * The sums of squares run as deterministic fixed-order trees: one partial per chunk of
 * {@linkcode NORM_CHUNK} elements of each gradient (in the map's order), then `reduceAll` over the partials, so
 * the same gradients always give the bitwise same norm. `[norm, coef]` lands in a 2-element GPU tensor that
 * the update kernels of {@linkcode AdamW} and {@linkcode SGD} read, so clipped updates are
 * `p ← update(grad · gradScale · coef)`; the norm is read back only when asked for (for logging).
 *
 * A non-finite norm (overflowing or NaN gradients) makes `coef` NaN or 0, as in PyTorch with
 * `error_if_nonfinite=False`: check the logged norm and skip such steps at the call site.
 *
 * @module
 */
import type { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import { readF32, upload } from "../gpu/io.ts";
import { grid1d } from "../gpu/kernel.ts";
import { expectShape, Tensor } from "../gpu/tensor.ts";
import { reduceAll } from "../ops/reduce.ts";
import { OPTIM_KERNELS, optimParams } from "./adamw.ts";

/** Elements per partial sum of squares (one workgroup each), unless the binding limit is smaller. */
export const NORM_CHUNK = 4096;

/** Options of {@linkcode gradNorm}. */
export interface GradNormOptions {
  /** Clip to this total norm; Infinity (default) only measures the norm (coef = 1). */
  maxNorm?: number;
  /** Factor applied to the gradients before the norm (micro-batch averaging), default 1. */
  gradScale?: number;
}

/** Norm and clip coefficient of one step. */
export interface GradNormStats {
  /** Total 2-norm of the (scaled) gradients, before clipping. */
  norm: number;
  /** Factor the updates applied: min(1, maxNorm / (norm + 1e-6)). */
  coef: number;
}

function checkMaxNorm(maxNorm: number): void {
  if (!(maxNorm > 0)) throw new Error(`Gradient clipping: maxNorm must be > 0, got "${maxNorm}"`);
}

/**
 * Records the global gradient norm of `grads` into `stats` (shape [2]: `[norm, coef]`), see the module
 * documentation for the formula. Temporaries go back to the pool when the batch is submitted.
 *
 * @example
 * ```ts
 * gradNorm(batch, stats, grads.values(), { maxNorm: 1, gradScale: 1 / 4 }); // stats: (2)
 * ```
 */
export function gradNorm(
  batch: Batch,
  stats: Tensor,
  grads: Iterable<Tensor>,
  opts: GradNormOptions = {},
): void {
  const maxNorm = opts.maxNorm ?? Infinity, gradScale = opts.gradScale ?? 1;
  checkMaxNorm(maxNorm);
  if (!(Number.isFinite(gradScale) && gradScale > 0)) {
    throw new Error(`Gradient clipping: gradScale must be a finite number > 0, got "${gradScale}"`);
  }
  expectShape(stats, [2], "Gradient clipping");
  const gpu = batch.gpu;
  const list = [...grads].filter((g) => g.size > 0);
  for (const g of list) {
    if (g.dtype !== "f32") throw new Error(`Gradient clipping: tensor "${g.label}" has dtype ${g.dtype}`);
  }
  const align = gpu.limits.storageOffsetAlignment / 4;
  const limit = Math.floor(gpu.limits.maxBindingSize / 4);
  const chunk = Math.min(NORM_CHUNK, Math.floor(limit / align) * align);
  // Chunks per dispatch: the input view (per·chunk elements) and the output view (< align + per) both fit.
  const per = Math.min(Math.floor(limit / chunk), limit - align + 1);
  const parts = list.reduce((s, g) => s + Math.ceil(g.size / chunk), 0);
  const total = new Tensor(gpu, [1], "f32", "grad_norm.sumsq");
  if (parts === 0) {
    batch.clear(total);
  } else {
    const partials = new Tensor(gpu, [parts], "f32", "grad_norm.partials");
    let base = 0;
    for (const g of list) {
      const chunks = Math.ceil(g.size / chunk);
      for (let c0 = 0; c0 < chunks; c0 += per) {
        const count = Math.min(per, chunks - c0);
        const inStart = c0 * chunk, inLen = Math.min(count * chunk, g.size - inStart);
        const out = base + c0, outStart = out - (out % align), outBase = out - outStart;
        const views = { grad: g.view(inStart, inLen), partials: partials.view(outStart, outBase + count) };
        const groups = grid1d(count, gpu.limits.maxWorkgroupsPerDimension);
        batch.dispatch(OPTIM_KERNELS.sumsq, views, groups, optimParams({ n: inLen, chunk, outBase }));
      }
      base += chunks;
    }
    reduceAll(batch, total, partials, { op: "sum" });
    partials.release();
  }
  const clip = Number.isFinite(maxNorm) ? 1 : 0;
  batch.dispatch(
    OPTIM_KERNELS.clipCoef,
    { total, statsOut: stats },
    [1],
    optimParams({ gradScale, maxNorm: clip ? maxNorm : 0, clip }),
  );
  total.release();
}

/**
 * Global gradient-norm clipping state: the threshold and the `[norm, coef]` GPU tensor of the last recorded
 * step. Pass it to an optimiser step (`step(batch, grads, { lr, clip })`), which records {@linkcode gradNorm}
 * before the updates; read the norm afterwards with {@linkcode GradClip.read}.
 */
export class GradClip {
  /** The device. */
  readonly gpu: Gpu;
  /** Clipping threshold on the total norm (Infinity: measure only). */
  readonly maxNorm: number;
  /** `[norm, coef]` of the last recorded step, (2). */
  readonly stats: Tensor;

  /** Allocates the `[norm, coef]` tensor (initially `[0, 1]`); `maxNorm` > 0, Infinity to only measure. */
  constructor(gpu: Gpu, opts: { maxNorm: number }) {
    checkMaxNorm(opts.maxNorm);
    this.gpu = gpu;
    this.maxNorm = opts.maxNorm;
    this.stats = upload(gpu, new Float32Array([0, 1]), { label: "grad_clip.stats" });
  }

  /** Records the norm and clip coefficient of `grads` into {@linkcode GradClip.stats}. */
  record(
    batch: Batch,
    grads: ReadonlyMap<string, Tensor> | Iterable<Tensor>,
    opts: { gradScale?: number } = {},
  ): void {
    const list = grads instanceof Map ? grads.values() : grads as Iterable<Tensor>;
    gradNorm(batch, this.stats, list, { maxNorm: this.maxNorm, gradScale: opts.gradScale });
  }

  /**
   * The norm and coefficient of the last recorded step: read in `batch` (resolves once it is submitted, no extra
   * sync) or, without a batch, by one readback now.
   */
  async read(batch?: Batch): Promise<GradNormStats> {
    const [norm, coef] = batch ? await batch.read(this.stats) : await readF32(this.stats);
    return { norm, coef };
  }

  /** Releases the stats tensor. */
  release(): void {
    this.stats.release();
  }
}
