/**
 * Plain-TS references of the optimiser kernels (`shaders/adamw.wgsl`): AdamW, SGD and global-norm clipping.
 *
 * Each update has two variants: float64 (exact math, for loose comparison) and f32-emulating (`f32: true`), which
 * rounds every scalar to f32 and every operation's result with `Math.fround`, in the kernel's (and PyTorch's
 * `_single_tensor_adamw`'s) order of operations:
 * ```
 * g  = fl(fl(grad · gradScale) · coef)
 * p  = fl(p · decay)                                   decay    = fl(1 − lr·wd)
 * m  = fl(fl(m · β1) + fl(fl(1 − β1) · g))
 * v  = fl(fl(v · β2) + fl(fl(fl(1 − β2) · g) · g))
 * d  = fl(fl(√v / bc2Sqrt) + eps)                      bc2Sqrt  = fl(√(1 − β2^t))
 * p  = fl(p − fl(stepSize · fl(m / d)))                stepSize = fl(lr / (1 − β1^t))
 * ```
 * The GPU may fuse a multiply and an add (FMA) or use a sqrt/divide a few ulp from correctly rounded; the tests
 * state the tolerance this implies.
 *
 * @module
 */

/** A mutable array of numbers (Float32Array for f32 state, Float64Array or number[] for f64). */
export type NumArray = { [i: number]: number; readonly length: number };

/** Options of {@linkcode adamwStepRef}. */
export interface AdamWRefOptions {
  /** Learning rate. */
  lr: number;
  /** β1. */
  beta1: number;
  /** β2. */
  beta2: number;
  /** ε. */
  eps: number;
  /** Weight decay of this tensor (0 for undecayed tensors). */
  weightDecay: number;
  /** Step number t ≥ 1 of this update (after the increment). */
  step: number;
  /** Gradient factor (micro-batch averaging), default 1. */
  gradScale?: number;
  /** Clip coefficient, default 1. */
  clipCoef?: number;
  /** Emulate f32 arithmetic (round every operation), default false (float64). */
  f32?: boolean;
}

/** Effective gradient `grad · gradScale · coef` of element `i`. */
function effectiveGrad(
  grad: ArrayLike<number>,
  i: number,
  gs: number,
  coef: number,
  r: (x: number) => number,
) {
  return r(r(grad[i] * gs) * coef);
}

/**
 * One AdamW step on `state` in place (torch.optim.AdamW with decoupled weight decay and bias correction):
 * `p ← p(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;`
 * `p ← p − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + ε)`.
 */
export function adamwStepRef(
  state: { param: NumArray; m: NumArray; v: NumArray },
  grad: ArrayLike<number>,
  opts: AdamWRefOptions,
): void {
  const r = opts.f32 ? Math.fround : (x: number) => x;
  const { lr, beta1, beta2, step: t } = opts;
  if (!(Number.isInteger(t) && t >= 1)) {
    throw new Error(`Reference AdamW: step must be an integer ≥ 1, got "${t}"`);
  }
  const gs = r(opts.gradScale ?? 1), coef = r(opts.clipCoef ?? 1);
  const decay = r(1 - lr * opts.weightDecay);
  const b1 = r(beta1), c1 = r(1 - beta1), b2 = r(beta2), c2 = r(1 - beta2);
  const stepSize = r(lr / (1 - beta1 ** t)), bc2Sqrt = r(Math.sqrt(1 - beta2 ** t)), eps = r(opts.eps);
  const { param, m, v } = state;
  for (let i = 0; i < param.length; i++) {
    const g = effectiveGrad(grad, i, gs, coef, r);
    const w = r(param[i] * decay);
    const mi = r(r(m[i] * b1) + r(c1 * g));
    const vi = r(r(v[i] * b2) + r(r(c2 * g) * g));
    const denom = r(r(r(Math.sqrt(vi)) / bc2Sqrt) + eps);
    m[i] = mi;
    v[i] = vi;
    param[i] = r(w - r(stepSize * r(mi / denom)));
  }
}

/** One SGD step on `param` in place: `p ← p − lr · (grad · gradScale · clipCoef)`. */
export function sgdStepRef(
  param: NumArray,
  grad: ArrayLike<number>,
  opts: { lr: number; gradScale?: number; clipCoef?: number; f32?: boolean },
): void {
  const r = opts.f32 ? Math.fround : (x: number) => x;
  const lr = r(opts.lr), gs = r(opts.gradScale ?? 1), coef = r(opts.clipCoef ?? 1);
  for (let i = 0; i < param.length; i++) {
    param[i] = r(param[i] - r(lr * effectiveGrad(grad, i, gs, coef, r)));
  }
}

/** Global 2-norm of all gradients in float64: `gradScale · √(Σ_tensors Σ_i grad_i²)`. */
export function gradNormRef(grads: Iterable<ArrayLike<number>>, opts: { gradScale?: number } = {}): number {
  let s = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) s += g[i] * g[i];
  return (opts.gradScale ?? 1) * Math.sqrt(s);
}

/** Clip coefficient of a total norm: `min(1, maxNorm / (norm + 1e-6))` (1 when maxNorm is Infinity). */
export function clipCoefRef(norm: number, opts: { maxNorm: number; f32?: boolean }): number {
  if (!Number.isFinite(opts.maxNorm)) return 1;
  const r = opts.f32 ? Math.fround : (x: number) => x;
  return Math.min(1, r(r(opts.maxNorm) / r(r(norm) + r(1e-6))));
}
