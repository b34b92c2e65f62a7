/**
 * Plain-TS float64 reference of RMSNorm (`shaders/rmsnorm.wgsl`), same argument order as
 * `core/model/rmsnorm.ts`. Used by tests only; slow and simple on purpose.
 *
 * @module
 */

/** Options of {@linkcode rmsnormForwardRef}. */
export interface RmsnormRefOptions {
  /** `rms_norm_eps`. */
  eps: number;
}

/**
 * `out[r, i] = x[r, i] · rstd[r] · w[i]`, `rstd[r] = 1/sqrt(mean_i x[r, i]² + eps)`.
 * Shapes: `x`, `out`: (N, C) flat; `w`: (C); `rstd`: (N).
 */
export function rmsnormForwardRef(
  out: Float64Array,
  rstd: Float64Array,
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  opts: RmsnormRefOptions,
): void {
  const C = w.length;
  const N = C === 0 ? 0 : x.length / C;
  for (let r = 0; r < N; r++) {
    let ss = 0;
    for (let i = 0; i < C; i++) ss += x[r * C + i] ** 2;
    const s = 1 / Math.sqrt(ss / C + opts.eps);
    rstd[r] = s;
    for (let i = 0; i < C; i++) out[r * C + i] = x[r * C + i] * s * w[i];
  }
}

/**
 * Backward of {@linkcode rmsnormForwardRef}: `dx` is written, `dw` accumulated (`+=`).
 *
 * With `s = rstd[r]` and `m = mean_i dout[i]·w[i]·x[i]`: `dx[j] = s·(w[j]·dout[j] − x[j]·s²·m)`,
 * `dw[i] += Σ_r dout[r, i]·x[r, i]·s`.
 */
export function rmsnormBackwardRef(
  dx: Float64Array,
  dw: Float64Array,
  dout: ArrayLike<number>,
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  rstd: ArrayLike<number>,
): void {
  const C = w.length;
  const N = C === 0 ? 0 : x.length / C;
  for (let r = 0; r < N; r++) {
    const s = rstd[r];
    let m = 0;
    for (let i = 0; i < C; i++) m += dout[r * C + i] * w[i] * x[r * C + i];
    m /= C;
    for (let j = 0; j < C; j++) {
      const k = r * C + j;
      dx[k] = s * (w[j] * dout[k] - x[k] * s * s * m);
      dw[j] += dout[k] * x[k] * s;
    }
  }
}
