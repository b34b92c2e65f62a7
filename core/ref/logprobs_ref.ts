/**
 * Plain-TS f64 reference of `core/model/logprobs.ts`.
 *
 * @module
 */

/** Per-row target log-prob, logsumexp and entropy of `x` (R×V row-major); target −1 gives logp 0. */
export function logprobsForwardRef(
  x: ArrayLike<number>,
  targets: ArrayLike<number>,
  dims: { rows: number; vocab: number },
): { logp: Float64Array; lse: Float64Array; entropy: Float64Array } {
  const { rows: R, vocab: V } = dims;
  const logp = new Float64Array(R), lse = new Float64Array(R), entropy = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, x[r * V + v]);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(x[r * V + v] - m);
    lse[r] = m + Math.log(s);
    let h = 0;
    for (let v = 0; v < V; v++) {
      const lp = x[r * V + v] - lse[r];
      h -= Math.exp(lp) * lp;
    }
    entropy[r] = h;
    logp[r] = targets[r] >= 0 ? x[r * V + targets[r]] - lse[r] : 0;
  }
  return { logp, lse, entropy };
}

/** Gradient of Σ_r dlogp_r·logp_r + dentropy_r·entropy_r with respect to x. */
export function logprobsBackwardRef(
  x: ArrayLike<number>,
  targets: ArrayLike<number>,
  dlogp: ArrayLike<number>,
  dentropy: ArrayLike<number>,
  dims: { rows: number; vocab: number },
): Float64Array {
  const { rows: R, vocab: V } = dims;
  const { lse, entropy } = logprobsForwardRef(x, targets, dims);
  const dx = new Float64Array(R * V);
  for (let r = 0; r < R; r++) {
    const g = targets[r] >= 0 ? dlogp[r] : 0;
    for (let v = 0; v < V; v++) {
      const lp = x[r * V + v] - lse[r];
      const p = Math.exp(lp);
      dx[r * V + v] = -g * p - dentropy[r] * p * (lp + entropy[r]) + (v === targets[r] ? g : 0);
    }
  }
  return dx;
}
