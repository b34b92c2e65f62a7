/**
 * Plain-TS float64 reference of SwiGLU (`shaders/swiglu.wgsl`), same argument order as
 * `core/model/swiglu.ts`: `out = silu(gate) ⊙ up`, `silu(g) = g·σ(g)`.
 *
 * @module
 */

/** Logistic sigmoid σ(g) = 1 / (1 + e^−g), evaluated without overflow. */
export function sigmoidRef(g: number): number {
  return g >= 0 ? 1 / (1 + Math.exp(-g)) : Math.exp(g) / (1 + Math.exp(g));
}

/** `out[i] = gate[i]·σ(gate[i])·up[i]`. All arrays have the same length. */
export function swigluForwardRef(out: Float64Array, gate: ArrayLike<number>, up: ArrayLike<number>): void {
  for (let i = 0; i < gate.length; i++) out[i] = gate[i] * sigmoidRef(gate[i]) * up[i];
}

/**
 * Backward of {@linkcode swigluForwardRef} (written, not accumulated):
 * `dgate = dout·up·σ(g)·(1 + g·(1 − σ(g)))`, `dup = dout·g·σ(g)`.
 */
export function swigluBackwardRef(
  dgate: Float64Array,
  dup: Float64Array,
  dout: ArrayLike<number>,
  gate: ArrayLike<number>,
  up: ArrayLike<number>,
): void {
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i], s = sigmoidRef(g);
    dgate[i] = dout[i] * up[i] * s * (1 + g * (1 - s));
    dup[i] = dout[i] * g * s;
  }
}

/** Splits a fused `(N, 2I)` array into its `gate = [:, :I]` and `up = [:, I:]` halves. */
export function splitGateUpRef(
  gateUp: ArrayLike<number>,
  I: number,
): { gate: Float64Array; up: Float64Array } {
  const N = I === 0 ? 0 : gateUp.length / (2 * I);
  const gate = new Float64Array(N * I), up = new Float64Array(N * I);
  for (let r = 0; r < N; r++) {
    for (let c = 0; c < I; c++) {
      gate[r * I + c] = gateUp[r * 2 * I + c];
      up[r * I + c] = gateUp[r * 2 * I + I + c];
    }
  }
  return { gate, up };
}

/** Options of the fused references. */
export interface SwigluFusedRefOptions {
  /** Inner width I (half the fused row). */
  I: number;
}

/** Fused forward: `out[r, :] = silu(gateUp[r, :I]) ⊙ gateUp[r, I:]`; `out`: (N, I), `gateUp`: (N, 2I). */
export function swigluFusedForwardRef(
  out: Float64Array,
  gateUp: ArrayLike<number>,
  opts: SwigluFusedRefOptions,
): void {
  const { gate, up } = splitGateUpRef(gateUp, opts.I);
  swigluForwardRef(out, gate, up);
}

/** Fused backward: `dGateUp[r, :I] = dgate`, `dGateUp[r, I:] = dup` (formulas of {@linkcode swigluBackwardRef}). */
export function swigluFusedBackwardRef(
  dGateUp: Float64Array,
  dout: ArrayLike<number>,
  gateUp: ArrayLike<number>,
  opts: SwigluFusedRefOptions,
): void {
  const I = opts.I;
  const { gate, up } = splitGateUpRef(gateUp, I);
  const dgate = new Float64Array(gate.length), dup = new Float64Array(up.length);
  swigluBackwardRef(dgate, dup, dout, gate, up);
  for (let r = 0; r * I < gate.length; r++) {
    for (let c = 0; c < I; c++) {
      dGateUp[r * 2 * I + c] = dgate[r * I + c];
      dGateUp[r * 2 * I + I + c] = dup[r * I + c];
    }
  }
}
