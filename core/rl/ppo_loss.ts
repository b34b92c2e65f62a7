/**
 * PPO clipped surrogate losses with analytic per-token gradients: the CPU reference for the PPO loss kernels.
 *
 * All per-token inputs are flat arrays of N tokens (e.g. a (B, T) batch in row-major order); every mean is a
 * masked mean over the valid tokens, mean(x) = Σ_t m_t x_t / Σ_t m_t, with a 0/1 mask (default all valid).
 *
 * @module
 */

import { klEstimate, klEstimateGrad, type KLEstimator } from "./kl.ts";

/**
 * Bound on logp − logpOld before the exponential: ρ = exp(clamp(logp − logpOld, −20, 20)), so extreme
 * log-probability gaps never overflow to Inf/NaN. The clamp has zero gradient beyond the bound.
 */
export const LOG_RATIO_CLAMP = 20;

/** Per-token inputs of {@link ppoLoss}, each of length N. */
export interface PPOBatch {
  /** log π_θ(a_t) of the current policy. */
  logp: ArrayLike<number>;
  /** log π_old(a_t) of the policy that sampled the tokens. */
  logpOld: ArrayLike<number>;
  /** Advantages A_t (usually whitened GAE advantages). */
  advantages: ArrayLike<number>;
  /** Optional 0/1 mask (1 = valid token). */
  mask?: ArrayLike<number>;
  /** Value predictions V_t of the current critic; give with `valuesOld` and `returns` for the value loss. */
  values?: ArrayLike<number>;
  /** Value predictions V_old,t at sampling time (centre of the value clip). */
  valuesOld?: ArrayLike<number>;
  /** Return targets R_t. */
  returns?: ArrayLike<number>;
  /** Optional per-token policy entropy H_t for the entropy bonus (enters the loss value only, see below). */
  entropy?: ArrayLike<number>;
}

/** In-loss KL term β·mean(k_t) between the current policy and a reference policy (mode "in_loss"). */
export interface PPOKLInLoss {
  /** log π_ref(a_t) per token. */
  logpRef: ArrayLike<number>;
  /** Coefficient β. */
  coef: number;
  /** Estimator (default "k3", as GRPO). */
  estimator?: KLEstimator;
}

/** Options of {@link ppoLoss}. */
export interface PPOLossOptions {
  /** Policy ratio clip ε (default 0.2). */
  clipRange?: number;
  /** Value clip ε_v around V_old (default 0.2). */
  clipRangeValue?: number;
  /** Weight of the value loss in the total loss (default 0.1, as TRL). */
  vfCoef?: number;
  /** Weight of the entropy bonus (default 0). */
  entCoef?: number;
  /** Optional in-loss KL penalty. */
  klInLoss?: PPOKLInLoss;
}

/** Loss values, statistics and gradients of {@link ppoLoss}. */
export interface PPOLossResult {
  /** policyLoss + vfCoef·valueLoss − entCoef·entropy + β·klLoss. */
  loss: number;
  /** mean_t max(−A_t ρ_t, −A_t clip(ρ_t, 1−ε, 1+ε)). */
  policyLoss: number;
  /** ½ mean_t max((V_t − R_t)², (clip(V_t, V_old ± ε_v) − R_t)²); 0 without values. */
  valueLoss: number;
  /** mean(H_t); 0 without entropy. */
  entropy: number;
  /** β-free in-loss KL mean(k_t); 0 without `klInLoss`. */
  klLoss: number;
  /** Fraction of tokens whose policy term takes the clipped branch. */
  clipFrac: number;
  /** Fraction of tokens whose value term takes the clipped branch. */
  valueClipFrac: number;
  /** k3-style estimate of KL(π_old ‖ π_θ): mean((ρ − 1) − log ρ). */
  approxKL: number;
  /** ½·mean((logp − logpOld)²) (TRL's `approxkl`), with the log-ratio clamped as for ρ. */
  approxKLk2: number;
  /** d loss / d logp_t, length N (0 at masked tokens). */
  dLogp: Float64Array;
  /** d loss / d V_t, length N (all 0 without values). */
  dValues: Float64Array;
}

function checkLength(name: string, a: ArrayLike<number> | undefined, n: number): void {
  if (a !== undefined && a.length !== n) {
    throw new Error(`Invalid PPO input "${name}": expected ${n} entries (as logp), got ${a.length}`);
  }
}

function positive(name: string, v: number): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
    throw new Error(`Invalid PPO option "${name}": expected a finite number >= 0, got "${v}"`);
  }
  return v;
}

/**
 * PPO losses over N tokens with ρ_t = exp(clamp(logp_t − logpOld_t, ±{@link LOG_RATIO_CLAMP})):
 *
 *   policyLoss = mean_t max(−A_t ρ_t, −A_t clip(ρ_t, 1−ε, 1+ε))
 *   valueLoss  = ½ mean_t max((V_t − R_t)², (clip(V_t, V_old,t − ε_v, V_old,t + ε_v) − R_t)²)
 *   loss       = policyLoss + vfCoef·valueLoss − entCoef·mean_t H_t + β·mean_t k_t(logp_t, logpRef_t)
 *
 * with analytic gradients (n = Σ m):
 *   d loss/d logp_t = m_t/n · (−A_t ρ_t · [policy term unclipped] + β dk_t/dlogp_t), zero for tokens clipped on
 *     the side the advantage pushes (A > 0, ρ > 1+ε or A < 0, ρ < 1−ε);
 *   d loss/d V_t = vfCoef · m_t/n · (V_t − R_t) · [value term unclipped].
 * The entropy bonus adds to the loss value only: its gradient flows through the logits, not through logp_t.
 */
export function ppoLoss(batch: PPOBatch, opts: PPOLossOptions = {}): PPOLossResult {
  const { logp, logpOld, advantages: A, mask, values: V, valuesOld: Vold, returns: R, entropy: H } = batch;
  const eps = positive("clipRange", opts.clipRange ?? 0.2);
  const epsV = positive("clipRangeValue", opts.clipRangeValue ?? 0.2);
  const vfCoef = positive("vfCoef", opts.vfCoef ?? 0.1);
  const entCoef = positive("entCoef", opts.entCoef ?? 0);
  const N = logp.length;
  const fields = { logpOld, advantages: A, mask, values: V, valuesOld: Vold, returns: R, entropy: H };
  for (const [name, a] of Object.entries(fields)) checkLength(name, a, N);
  const withValues = V !== undefined || Vold !== undefined || R !== undefined;
  if (withValues && (V === undefined || Vold === undefined || R === undefined)) {
    throw new Error('Invalid PPO input: "values", "valuesOld" and "returns" must be given together');
  }
  let n = 0;
  for (let t = 0; t < N; t++) {
    if (mask !== undefined && mask[t] !== 0 && mask[t] !== 1) {
      throw new Error(`Invalid PPO input "mask" at index ${t}: expected 0 or 1, got "${mask[t]}"`);
    }
    n += mask === undefined ? 1 : mask[t];
  }
  if (n === 0) throw new Error(`Cannot compute PPO loss: mask has no valid tokens among ${N}`);

  const kl = opts.klInLoss;
  let klTerm: Float64Array | undefined;
  let klGrad: Float64Array | undefined;
  const beta = kl === undefined ? 0 : positive("klInLoss.coef", kl.coef);
  if (kl !== undefined) {
    checkLength("klInLoss.logpRef", kl.logpRef, N);
    klTerm = klEstimate(logp, kl.logpRef, { estimator: kl.estimator ?? "k3" });
    klGrad = klEstimateGrad(logp, kl.logpRef, { estimator: kl.estimator ?? "k3" });
  }

  const dLogp = new Float64Array(N);
  const dValues = new Float64Array(N);
  let pgSum = 0, vfSum = 0, entSum = 0, klSum = 0, clipped = 0, vClipped = 0, k3Sum = 0, k2Sum = 0;
  for (let t = 0; t < N; t++) {
    if (mask !== undefined && mask[t] === 0) continue;
    // Policy: ρ = exp(clamp(Δ)), per-token loss max(pg1, pg2).
    const diff = logp[t] - logpOld[t];
    const logRatio = Math.min(Math.max(diff, -LOG_RATIO_CLAMP), LOG_RATIO_CLAMP);
    const ratio = Math.exp(logRatio);
    const pg1 = -A[t] * ratio;
    const pg2 = -A[t] * Math.min(Math.max(ratio, 1 - eps), 1 + eps);
    // max(pg1, pg2) takes the clipped branch exactly when the ratio left the trust region on the side the
    // advantage pushes; deciding by this condition (not by comparing pg1, pg2) is immune to round-off.
    const isClipped = (A[t] > 0 && ratio > 1 + eps) || (A[t] < 0 && ratio < 1 - eps);
    pgSum += isClipped ? pg2 : pg1;
    if (isClipped) clipped++;
    let g = !isClipped && Math.abs(diff) < LOG_RATIO_CLAMP ? pg1 : 0; // d pg1/d logp = −A ρ
    k3Sum += Math.expm1(logRatio) - logRatio;
    k2Sum += 0.5 * logRatio * logRatio;
    if (klTerm !== undefined) {
      klSum += klTerm[t];
      g += beta * klGrad![t];
    }
    dLogp[t] = g / n;
    if (H !== undefined) entSum += H[t];
    if (withValues) {
      const err = V![t] - R![t];
      const vClip = Math.min(Math.max(V![t], Vold![t] - epsV), Vold![t] + epsV) - R![t];
      const vIsClipped = vClip * vClip > err * err;
      vfSum += 0.5 * (vIsClipped ? vClip * vClip : err * err);
      if (vIsClipped) vClipped++;
      else dValues[t] = (vfCoef * err) / n;
    }
  }
  const policyLoss = pgSum / n;
  const valueLoss = vfSum / n;
  const entropy = entSum / n;
  const klLoss = klSum / n;
  return {
    loss: policyLoss + vfCoef * valueLoss - entCoef * entropy + beta * klLoss,
    policyLoss,
    valueLoss,
    entropy,
    klLoss,
    clipFrac: clipped / n,
    valueClipFrac: vClipped / n,
    approxKL: k3Sum / n,
    approxKLk2: k2Sum / n,
    dLogp,
    dValues,
  };
}
