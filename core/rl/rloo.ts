/**
 * Leave-one-out group baseline (RLOO, Ahmadian et al. 2024 "Back to Basics: Revisiting REINFORCE Style
 * Optimization for Learning from Human Feedback in LLMs"): the K samples of one question are each other's
 * baseline, so the advantage measures how much better a solution is than its siblings, not how easy the question
 * is — which a critic only learns after many iterations.
 *
 * ```
 * R_b         = Σ_t reward_{b,t}                                 total return of sequence b
 * baseline_b  = (Σ_{b' ∈ group(b)} R_b' − R_b) / (K_b − 1)       0 when b is alone (K_b = 1)
 * A_{b,t}     = Σ_{j ≥ t} reward_{b,j} − baseline_b               (γ = 1; GAE with λ = 1 and V ≡ baseline_b)
 * ```
 * The token-level form keeps process rewards where they are: tokens before a step's end collect its shaped
 * reward, tokens after it do not.
 *
 * @module
 */

/**
 * Per-sequence leave-one-out baselines of `totals` (R_b) grouped by `groups` (e.g. the question index): the mean
 * total of the other members of b's group, or 0 for a group of one.
 */
export function rlooBaselines(totals: ArrayLike<number>, groups: ArrayLike<number>): Float64Array {
  if (totals.length !== groups.length) {
    throw new Error(`rlooBaselines: ${totals.length} totals but ${groups.length} group ids`);
  }
  const sum = new Map<number, number>(), count = new Map<number, number>();
  for (let b = 0; b < totals.length; b++) {
    sum.set(groups[b], (sum.get(groups[b]) ?? 0) + totals[b]);
    count.set(groups[b], (count.get(groups[b]) ?? 0) + 1);
  }
  return Float64Array.from({ length: totals.length }, (_, b) => {
    const k = count.get(groups[b])!;
    return k > 1 ? (sum.get(groups[b])! - totals[b]) / (k - 1) : 0;
  });
}
