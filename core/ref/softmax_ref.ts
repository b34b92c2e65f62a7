/**
 * Plain-TS float64 references for `core/ops/softmax.ts`: row softmax and log-softmax over the last dimension,
 * forward and backward, with the same causal-mask semantics (row `r` is query position `(r mod T) + offset` and
 * sees columns `c ≤ q`).
 *
 * @module
 */

/** Shape and mask of a reference call: `rows × cols` row-major data, optional causal mask. */
export interface SoftmaxRefOptions {
  /** Columns per row (the last dimension). */
  cols: number;
  /** Causal mask: blocks of `T` query rows, first query at position `offset` (default 0). */
  causal?: { T: number; offset?: number };
}

/** Number of unmasked columns of row `r`: `min(cols, (r mod T) + offset + 1)` under a causal mask, else `cols`. */
export function validCols(r: number, opts: SoftmaxRefOptions): number {
  if (!opts.causal) return opts.cols;
  return Math.min(opts.cols, (r % opts.causal.T) + (opts.causal.offset ?? 0) + 1);
}

function rowsOf(data: ArrayLike<number>, cols: number): number {
  if (cols < 1 || data.length % cols !== 0) {
    throw new Error(`Reference softmax: ${data.length} values are not whole rows of ${cols} columns`);
  }
  return data.length / cols;
}

/** log Σ exp over `x[base .. base + n)`, computed as `m + log Σ exp(x − m)`. */
function logSumExp(x: ArrayLike<number>, base: number, n: number): number {
  let m = -Infinity;
  for (let c = 0; c < n; c++) m = Math.max(m, x[base + c]);
  let s = 0;
  for (let c = 0; c < n; c++) s += Math.exp(x[base + c] - m);
  return m + Math.log(s);
}

/** `y[r, c] = exp(x[r, c] − logΣexp_r)` (0 at masked columns). */
export function softmaxRef(x: ArrayLike<number>, opts: SoftmaxRefOptions): Float64Array {
  const { cols } = opts;
  const rows = rowsOf(x, cols);
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols, n = validCols(r, opts);
    const lse = logSumExp(x, base, n);
    for (let c = 0; c < n; c++) y[base + c] = Math.exp(x[base + c] - lse);
  }
  return y;
}

/** `y[r, c] = x[r, c] − log Σ_c' exp(x[r, c'])` (−∞ at masked columns). */
export function logSoftmaxRef(x: ArrayLike<number>, opts: SoftmaxRefOptions): Float64Array {
  const { cols } = opts;
  const rows = rowsOf(x, cols);
  const y = new Float64Array(x.length).fill(-Infinity);
  for (let r = 0; r < rows; r++) {
    const base = r * cols, n = validCols(r, opts);
    const lse = logSumExp(x, base, n);
    for (let c = 0; c < n; c++) y[base + c] = x[base + c] - lse;
  }
  return y;
}

/** Softmax backward from `y = softmax(x)`: `dx = y ⊙ (dy − Σ_c dy⊙y)` (0 at masked columns). */
export function softmaxBackwardRef(
  y: ArrayLike<number>,
  dy: ArrayLike<number>,
  opts: SoftmaxRefOptions,
): Float64Array {
  const { cols } = opts;
  const rows = rowsOf(y, cols);
  const dx = new Float64Array(y.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols, n = validCols(r, opts);
    let dot = 0;
    for (let c = 0; c < n; c++) dot += dy[base + c] * y[base + c];
    for (let c = 0; c < n; c++) dx[base + c] = y[base + c] * (dy[base + c] - dot);
  }
  return dx;
}

/** Log-softmax backward from `y = log_softmax(x)`: `dx = dy − exp(y) · Σ_c dy` (0 at masked columns). */
export function logSoftmaxBackwardRef(
  y: ArrayLike<number>,
  dy: ArrayLike<number>,
  opts: SoftmaxRefOptions,
): Float64Array {
  const { cols } = opts;
  const rows = rowsOf(y, cols);
  const dx = new Float64Array(y.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols, n = validCols(r, opts);
    let total = 0;
    for (let c = 0; c < n; c++) total += dy[base + c];
    for (let c = 0; c < n; c++) dx[base + c] = dy[base + c] - Math.exp(y[base + c]) * total;
  }
  return dx;
}
