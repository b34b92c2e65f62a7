/**
 * Shaping of per-step process rewards r_1..r_K ∈ [0, 1] (PRM scores of a solution's K steps) into the
 * per-step rewards that RL optimizes.
 *
 * Summing raw PRM scores invites reward hacking: repeating a good step adds r_k each time. The mechanisms here
 * bound the process return (the undiscounted sum of shaped rewards) so that repetition never pays:
 * - Clip (Gao et al. 2024): c_k = min(r_k − η, 0) ≤ 0, so extra steps can only lower the return.
 * - Delta (Gao et al. 2024): d_k = r_k − r_{k+1}, d_K = r_K; the return from step k telescopes to r_k.
 * - Clip-Delta: Delta applied to the clipped scores; returns lie in [−η, 0].
 * - Min-form (PURE, arXiv 2504.15275): the return from step k is min_{j≥k} r_j.
 *
 * Inputs are `number[]`, `Float32Array` or `Float64Array`; outputs are `Float64Array` of the same length.
 *
 * @module
 */

/** Shaping mechanism names accepted by {@link shapeStepRewards}. */
export type ShapingKind = "none" | "clip" | "delta" | "clip_delta" | "min";

/** Options of {@link applyDelta} and {@link applyClipDelta}. */
export interface DeltaOptions {
  /**
   * Apply Delta to steps 1..K−1 only and give step K zero, as in Gao et al. 2024 (the final step is judged by
   * the success reward): d_k = r_k − r_{k+1} for k < K−1, d_{K−1} = r_{K−1}, d_K = 0. Default false.
   */
  finalStepZero?: boolean;
}

/** Options of {@link shapeStepRewards}. */
export interface ShapeOptions extends DeltaOptions {
  /** Shaping mechanism. */
  kind: ShapingKind;
  /** Clip threshold η ∈ [0, 1]; required for "clip" and "clip_delta". */
  eta?: number;
}

function checkScores(r: ArrayLike<number>): void {
  for (let k = 0; k < r.length; k++) {
    const v = r[k];
    if (typeof v !== "number" || !(v >= 0 && v <= 1)) {
      throw new Error(`Invalid step reward at index ${k}: expected a number in [0, 1], got "${v}"`);
    }
  }
}

function checkEta(eta: number | undefined): number {
  if (typeof eta !== "number" || !(eta >= 0 && eta <= 1)) {
    throw new Error(`Invalid clip threshold eta: expected a number in [0, 1], got "${eta}"`);
  }
  return eta;
}

// Delta on already validated values (clipped scores lie in [−η, 0], outside the score range).
function delta(r: ArrayLike<number>, finalStepZero: boolean): Float64Array {
  const K = r.length;
  const out = new Float64Array(K);
  const last = finalStepZero ? K - 1 : K; // number of steps that Delta applies to
  for (let k = 0; k < last; k++) out[k] = k + 1 < last ? r[k] - r[k + 1] : r[k];
  return out;
}

/**
 * Clip mechanism: c_k = min(r_k − η, 0). Every shaped reward is ≤ 0 and equals r_k − η below the threshold,
 * so the process return Σ_k c_k can only decrease when steps are added.
 */
export function applyClip(r: ArrayLike<number>, eta: number): Float64Array {
  checkScores(r);
  checkEta(eta);
  return Float64Array.from(r, (v) => Math.min(v - eta, 0));
}

/**
 * Delta mechanism: d_k = r_k − r_{k+1} for k < K, d_K = r_K, so Σ_{j≥k} d_j = r_k (telescoping) and the total
 * process return is r_1 ∈ [0, 1] whatever the length. With `finalStepZero`: Delta over steps 1..K−1
 * (d_{K−1} = r_{K−1}) and d_K = 0, so Σ_{j≥k} d_j = r_k for k < K and 0 for k = K.
 */
export function applyDelta(r: ArrayLike<number>, opts: DeltaOptions = {}): Float64Array {
  checkScores(r);
  return delta(r, opts.finalStepZero ?? false);
}

/**
 * Clip-Delta mechanism: Delta applied to c_k = min(r_k − η, 0), i.e. d_k = c_k − c_{k+1}, d_K = c_K
 * (or the `finalStepZero` variant). The return from step k is c_k ∈ [−η, 0].
 */
export function applyClipDelta(r: ArrayLike<number>, eta: number, opts: DeltaOptions = {}): Float64Array {
  return delta(applyClip(r, eta), opts.finalStepZero ?? false);
}

/**
 * Min-form credit assignment (PURE, arXiv 2504.15275): with m_k = min_{j≥k} r_j and m_{K+1} = 0, the shaped
 * reward is m_k − m_{k+1}, so the return from step k is Σ_{j≥k} (m_j − m_{j+1}) = m_k = min_{j≥k} r_j.
 * The total return is the worst step score, which repeating steps cannot raise.
 */
export function applyMinForm(r: ArrayLike<number>): Float64Array {
  checkScores(r);
  const K = r.length;
  const out = new Float64Array(K);
  let next = 0; // m_{k+1}
  let min = Infinity;
  for (let k = K - 1; k >= 0; k--) {
    min = Math.min(min, r[k]);
    out[k] = min - next;
    next = min;
  }
  return out;
}

/**
 * Shapes per-step PRM scores with the chosen mechanism:
 * "none" → r_k (raw scores), "clip" → {@link applyClip}, "delta" → {@link applyDelta},
 * "clip_delta" → {@link applyClipDelta}, "min" → {@link applyMinForm}. Empty input gives empty output.
 */
export function shapeStepRewards(r: ArrayLike<number>, opts: ShapeOptions): Float64Array {
  const { kind, eta, finalStepZero = false } = opts;
  switch (kind) {
    case "none":
      checkScores(r);
      return Float64Array.from(r);
    case "clip":
      return applyClip(r, checkEta(eta));
    case "delta":
      return applyDelta(r, { finalStepZero });
    case "clip_delta":
      return applyClipDelta(r, checkEta(eta), { finalStepZero });
    case "min":
      return applyMinForm(r);
    default:
      throw new Error(
        `Invalid shaping kind "${kind}": expected one of "none", "clip", "delta", "clip_delta", "min"`,
      );
  }
}
