/**
 * Plain-TS float64 reference of RoPE (`shaders/rope.wgsl`), same argument order as `core/model/rope.ts`.
 *
 * Follows Hugging Face Qwen2 exactly: `inv_freq` and the angle `pos · inv_freq` are rounded to float32 as HF
 * computes them in float32; cos, sin and the rotation are then exact (float64).
 *
 * @module
 */

/** Options of the RoPE references. */
export interface RopeRefOptions {
  /** Heads H per token. */
  heads: number;
  /** Head dim D (even). */
  headDim: number;
  /** RoPE base θ. */
  theta: number;
}

/** HF's float32 angle of pair j at position `pos`: `f32(f32(pos) · f32(1 / f32(θ^f32(2j/D))))`. */
export function ropeAngleRef(pos: number, j: number, headDim: number, theta: number): number {
  const f = Math.fround;
  const invFreq = f(1 / f(Math.pow(theta, f((2 * j) / headDim))));
  return f(f(pos) * invFreq);
}

function rotate(
  dst: Float64Array,
  src: ArrayLike<number>,
  positions: ArrayLike<number>,
  opts: RopeRefOptions,
  sign: number,
): void {
  const { heads: H, headDim: D, theta } = opts;
  const half = D / 2;
  for (let n = 0; n < positions.length; n++) {
    for (let j = 0; j < half; j++) {
      const a = ropeAngleRef(positions[n], j, D, theta);
      const c = Math.cos(a), s = sign * Math.sin(a);
      for (let h = 0; h < H; h++) {
        const i = (n * H + h) * D + j;
        const x1 = src[i], x2 = src[i + half];
        dst[i] = x1 * c - x2 * s;
        dst[i + half] = x2 * c + x1 * s;
      }
    }
  }
}

/**
 * `out[n, h, j] = x[j]·cos a − x[j+D/2]·sin a`, `out[n, h, j+D/2] = x[j+D/2]·cos a + x[j]·sin a` with
 * `a = ropeAngleRef(positions[n], j)`. Shapes: `x`, `out`: (N, H, D) flat; `positions`: (N).
 */
export function ropeForwardRef(
  out: Float64Array,
  x: ArrayLike<number>,
  positions: ArrayLike<number>,
  opts: RopeRefOptions,
): void {
  rotate(out, x, positions, opts, 1);
}

/** Backward of {@linkcode ropeForwardRef}: `dout` rotated by −a (written, not accumulated). */
export function ropeBackwardRef(
  dx: Float64Array,
  dout: ArrayLike<number>,
  positions: ArrayLike<number>,
  opts: RopeRefOptions,
): void {
  rotate(dx, dout, positions, opts, -1);
}
