/**
 * Plain-TS float64 references for `core/ops/reduce.ts`: row-wise and full sum, max and sum of squares.
 *
 * @module
 */
import type { ReduceOp } from "../ops/reduce.ts";

/** Reduces `x[start .. end)` with `op` in float64 (`sum` Σ, `max` max, `sumsq` Σx²). */
function reduceRange(x: ArrayLike<number>, start: number, end: number, op: ReduceOp): number {
  let acc = op === "max" ? -Infinity : 0;
  for (let i = start; i < end; i++) {
    const v = x[i];
    if (op === "max") acc = Math.max(acc, v);
    else acc += op === "sumsq" ? v * v : v;
  }
  return acc;
}

/** `out[r] = ⊕_c f(x[r·cols + c])` for the `x.length / cols` rows of `x`. */
export function reduceRowsRef(x: ArrayLike<number>, opts: { cols: number; op: ReduceOp }): Float64Array {
  const { cols, op } = opts;
  if (cols < 1 || x.length % cols !== 0) {
    throw new Error(`Reference reduction: ${x.length} values are not whole rows of ${cols} columns`);
  }
  const out = new Float64Array(x.length / cols);
  for (let r = 0; r < out.length; r++) out[r] = reduceRange(x, r * cols, (r + 1) * cols, op);
  return out;
}

/** `⊕_i f(x[i])` over all of `x`: Σx, max x or Σx². */
export function reduceAllRef(x: ArrayLike<number>, opts: { op: ReduceOp }): number {
  return reduceRange(x, 0, x.length, opts.op);
}
