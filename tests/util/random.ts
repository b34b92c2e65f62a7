/** Deterministic test data from the mulberry32 generator of `finite_diff.ts`. @module */
import { mulberry32 } from "./finite_diff.ts";

/** `n` f32 values `scale·u`, u uniform in [-1, 1), from `seed`. */
export function randomF32(n: number, seed: number, scale = 1): Float32Array {
  const rng = mulberry32(seed), out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * (2 * rng() - 1);
  return out;
}

/** `n` f32 values uniform in [lo, hi), from `seed`. */
export function uniformF32(n: number, seed: number, lo: number, hi: number): Float32Array {
  const rng = mulberry32(seed), out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rng();
  return out;
}
