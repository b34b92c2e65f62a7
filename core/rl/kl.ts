/**
 * Per-token KL estimators between the policy π and the reference policy π_ref, the KL penalty, and the
 * KL-coefficient controllers of Ziegler et al. 2019.
 *
 * For a sampled token with log-probabilities logp = log π(a) and logpRef = log π_ref(a), the estimators of
 * KL(π ‖ π_ref) = E_{a∼π}[log π(a) − log π_ref(a)] are (Schulman, "Approximating KL divergence", 2020):
 * - k1 = logp − logpRef (unbiased, can be negative),
 * - k2 = ½ (logp − logpRef)² (biased, ≥ 0),
 * - k3 = exp(logpRef − logp) − (logpRef − logp) − 1 (unbiased, ≥ 0).
 *
 * Two ways to use the penalty ({@link KLMode}):
 * - "in_reward" (default, Ziegler et al.; TRL/OpenRLHF PPO): r_t ← r_t − β·k_t before GAE, see
 *   `combineRewards({ klPenalty: klPenalty(logp, logpRef, { coef: beta }) })`;
 * - "in_loss" (GRPO style): loss ← loss + β·mean_t(k_t), with the gradient from {@link klEstimateGrad}; see the
 *   `klInLoss` option of `ppoLoss`.
 *
 * @module
 */

/** KL estimator name: "k1", "k2" or "k3" (see the module doc for the formulas). */
export type KLEstimator = "k1" | "k2" | "k3";

/** Where the KL penalty enters PPO: subtracted from per-token rewards, or added to the loss. */
export type KLMode = "in_reward" | "in_loss";

/** Options of {@link klEstimate} and {@link klEstimateGrad}. */
export interface KLEstimateOptions {
  /** Estimator (default "k1"). */
  estimator?: KLEstimator;
}

/** Options of {@link klPenalty}. */
export interface KLPenaltyOptions extends KLEstimateOptions {
  /** KL coefficient β (e.g. the `value` of a {@link KLController}). */
  coef: number;
}

/**
 * Bound on |logpRef − logp| inside the exponential of k3: exp(±20) stays finite in f32 and f64, so extreme
 * log-probability gaps give a large finite penalty instead of Inf/NaN (the gradient is 0 beyond the bound).
 */
export const K3_LOG_RATIO_CLAMP = 20;

function checkPair(logp: ArrayLike<number>, logpRef: ArrayLike<number>): void {
  if (logp.length !== logpRef.length) {
    throw new Error(`Invalid KL input: logp has ${logp.length} entries, logpRef has ${logpRef.length}`);
  }
}

function checkEstimator(estimator: string): KLEstimator {
  if (estimator !== "k1" && estimator !== "k2" && estimator !== "k3") {
    throw new Error(`Invalid KL estimator "${estimator}": expected "k1", "k2" or "k3"`);
  }
  return estimator;
}

/**
 * Per-token KL estimates k_t(logp_t, logpRef_t) with the chosen estimator:
 * k1 = Δ, k2 = ½Δ², k3 = e^{−Δ} + Δ − 1 with Δ = logp − logpRef (−Δ clamped to ±{@link K3_LOG_RATIO_CLAMP}
 * for k3). All three are 0 where the policies agree; k2 and k3 are ≥ 0.
 */
export function klEstimate(
  logp: ArrayLike<number>,
  logpRef: ArrayLike<number>,
  opts: KLEstimateOptions = {},
): Float64Array {
  checkPair(logp, logpRef);
  const estimator = checkEstimator(opts.estimator ?? "k1");
  const out = new Float64Array(logp.length);
  for (let t = 0; t < out.length; t++) {
    const d = logp[t] - logpRef[t];
    if (estimator === "k1") out[t] = d;
    else if (estimator === "k2") out[t] = 0.5 * d * d;
    else {
      const x = Math.min(Math.max(-d, -K3_LOG_RATIO_CLAMP), K3_LOG_RATIO_CLAMP); // log(π_ref/π)
      out[t] = Math.expm1(x) - x;
    }
  }
  return out;
}

/**
 * Derivative of each per-token estimate with respect to its own logp (logpRef held fixed):
 * dk1/dlogp = 1, dk2/dlogp = Δ, dk3/dlogp = 1 − e^{−Δ} (0 where |Δ| exceeds {@link K3_LOG_RATIO_CLAMP}).
 */
export function klEstimateGrad(
  logp: ArrayLike<number>,
  logpRef: ArrayLike<number>,
  opts: KLEstimateOptions = {},
): Float64Array {
  checkPair(logp, logpRef);
  const estimator = checkEstimator(opts.estimator ?? "k1");
  const out = new Float64Array(logp.length);
  for (let t = 0; t < out.length; t++) {
    const d = logp[t] - logpRef[t];
    if (estimator === "k1") out[t] = 1;
    else if (estimator === "k2") out[t] = d;
    else out[t] = Math.abs(d) < K3_LOG_RATIO_CLAMP ? -Math.expm1(-d) : 0;
  }
  return out;
}

/** Per-token KL penalty β·k_t (see {@link klEstimate}); subtract it from the rewards for in-reward KL. */
export function klPenalty(
  logp: ArrayLike<number>,
  logpRef: ArrayLike<number>,
  opts: KLPenaltyOptions,
): Float64Array {
  const { coef } = opts;
  if (typeof coef !== "number" || !Number.isFinite(coef)) {
    throw new Error(`Invalid KL coefficient "coef": expected a finite number, got "${coef}"`);
  }
  const k = klEstimate(logp, logpRef, opts);
  for (let t = 0; t < k.length; t++) k[t] *= coef;
  return k;
}

/** A KL coefficient β that may be adapted after each PPO batch. */
export interface KLController {
  /** Current coefficient β. */
  readonly value: number;
  /** Updates β from the observed mean KL of the last batch of `nSteps` samples. */
  update(currentKL: number, nSteps: number): void;
}

/** Constant KL coefficient: `update` leaves β unchanged. */
export class FixedKLController implements KLController {
  /** Current coefficient β. */
  readonly value: number;

  /** Creates a controller whose coefficient is always `coef`. */
  constructor(coef: number) {
    if (!Number.isFinite(coef) || coef < 0) {
      throw new Error(`Invalid KL coefficient "coef": expected a finite number >= 0, got "${coef}"`);
    }
    this.value = coef;
  }

  /** No-op: the coefficient is fixed. */
  update(_currentKL: number, _nSteps: number): void {}
}

/** Options of {@link AdaptiveKLController}. */
export interface AdaptiveKLOptions {
  /** Initial coefficient β_0 ≥ 0. */
  initKLCoef: number;
  /** Target KL per sample, > 0. */
  target: number;
  /** Horizon H > 0, in samples: how fast β adapts. */
  horizon: number;
}

/**
 * Adaptive KL coefficient of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences"):
 *
 *   e = clip(KL / target − 1, −0.2, 0.2),   β ← β · (1 + e · nSteps / H)
 */
export class AdaptiveKLController implements KLController {
  /** Current coefficient β. */
  value: number;
  /** Target KL. */
  readonly target: number;
  /** Horizon H in samples. */
  readonly horizon: number;

  /** Creates a controller starting at `initKLCoef`. */
  constructor(opts: AdaptiveKLOptions) {
    const { initKLCoef, target, horizon } = opts;
    if (!(Number.isFinite(initKLCoef) && initKLCoef >= 0)) {
      throw new Error(
        `Invalid adaptive KL option "initKLCoef": expected a finite number >= 0, got "${initKLCoef}"`,
      );
    }
    if (!(Number.isFinite(target) && target > 0)) {
      throw new Error(`Invalid adaptive KL option "target": expected a finite number > 0, got "${target}"`);
    }
    if (!(Number.isFinite(horizon) && horizon > 0)) {
      throw new Error(`Invalid adaptive KL option "horizon": expected a finite number > 0, got "${horizon}"`);
    }
    this.value = initKLCoef;
    this.target = target;
    this.horizon = horizon;
  }

  /** β ← β · (1 + clip(currentKL / target − 1, −0.2, 0.2) · nSteps / horizon). */
  update(currentKL: number, nSteps: number): void {
    if (!Number.isFinite(currentKL) || !Number.isFinite(nSteps) || nSteps < 0) {
      throw new Error(
        `Invalid KL update: expected a finite KL and nSteps >= 0, got KL "${currentKL}", nSteps "${nSteps}"`,
      );
    }
    const error = Math.min(Math.max(currentKL / this.target - 1, -0.2), 0.2);
    this.value *= 1 + (error * nSteps) / this.horizon;
  }
}
