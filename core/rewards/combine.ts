/**
 * Per-token reward assembly for PPO on one response: shaped process rewards on step-end tokens, the outcome
 * (success) reward on the final token, and the per-token KL penalty.
 *
 * @module
 */

/** Inputs of {@link combineRewards}. Token indices are relative to the response (0 = first response token). */
export interface CombineRewardsInput {
  /** Shaped per-step rewards (e.g. from `shapeStepRewards`), length K. */
  stepRewards: ArrayLike<number>;
  /** Index of the token that ends each step (from `stepEndTokens`), length K, each in [0, length). */
  stepEndTokens: ArrayLike<number>;
  /** Outcome reward added on the final token (e.g. from `successReward`). */
  success: number;
  /** Number of response tokens T ≥ 1. */
  length: number;
  /** Weight α of the process rewards. */
  alpha: number;
  /**
   * Per-token KL penalty, ALREADY multiplied by β (e.g. `klPenalty(logp, logpRef, { coef: beta })`), length T.
   * It is subtracted from the reward ("in-reward" KL, Ziegler et al. 2019). Omit it for in-loss KL.
   */
  klPenalty?: ArrayLike<number>;
}

function finite(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new Error(`Invalid reward input "${name}": expected a finite number, got "${v}"`);
  }
  return v;
}

/**
 * Per-token rewards of one response, a Float64Array of length T:
 *
 *   reward_t = α · Σ_{k : end_k = t} s_k  +  [t = T−1] · success  −  klPenalty_t
 *
 * where s_k is the shaped reward of step k and end_k its end token (two steps ending on one token add up).
 * `klPenalty` is the per-token penalty already scaled by β; β is not a separate argument.
 */
export function combineRewards(input: CombineRewardsInput): Float64Array {
  const { stepRewards, stepEndTokens, length } = input;
  if (!Number.isInteger(length) || length < 1) {
    throw new Error(`Invalid reward input "length": expected an integer >= 1, got "${length}"`);
  }
  const alpha = finite("alpha", input.alpha);
  const success = finite("success", input.success);
  if (stepRewards.length !== stepEndTokens.length) {
    throw new Error(
      `Invalid reward input "stepEndTokens": expected ${stepRewards.length} entries (one per step reward), ` +
        `got ${stepEndTokens.length}`,
    );
  }
  const out = new Float64Array(length);
  for (let k = 0; k < stepRewards.length; k++) {
    const t = stepEndTokens[k];
    if (!Number.isInteger(t) || t < 0 || t >= length) {
      throw new Error(
        `Invalid reward input "stepEndTokens[${k}]": expected a token index in [0, ${length}), got "${t}"`,
      );
    }
    out[t] += alpha * finite(`stepRewards[${k}]`, stepRewards[k]);
  }
  out[length - 1] += success;
  const kl = input.klPenalty;
  if (kl !== undefined) {
    if (kl.length !== length) {
      throw new Error(`Invalid reward input "klPenalty": expected ${length} entries, got ${kl.length}`);
    }
    for (let t = 0; t < length; t++) out[t] -= finite(`klPenalty[${t}]`, kl[t]);
  }
  return out;
}
