/**
 * Plain-TS f64 reference of `core/ops/columns.ts`.
 *
 * @module
 */

/** Σ_r x[r, j] for x (rows, cols) row-major. */
export function reduceColumnsRef(x: ArrayLike<number>, dims: { rows: number; cols: number }): Float64Array {
  const out = new Float64Array(dims.cols);
  for (let r = 0; r < dims.rows; r++) for (let j = 0; j < dims.cols; j++) out[j] += x[r * dims.cols + j];
  return out;
}
