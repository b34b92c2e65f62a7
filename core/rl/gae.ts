/**
 * Generalized Advantage Estimation (Schulman et al. 2016) and masked whitening: the CPU reference for the
 * PPO advantage pipeline.
 *
 * Masks are 0/1 per token (1 = valid). Masked tokens are treated as absent: GAE runs over the valid tokens
 * only, in order, so right padding, left padding and holes all work, and the last valid token is terminal
 * (the value after it is 0). Masked positions get 0 advantage, 0 return and 0 whitened value.
 *
 * @module
 */

/** Options of {@link gae}. */
export interface GAEOptions {
  /** Discount γ ∈ [0, 1]. */
  gamma: number;
  /** GAE parameter λ ∈ [0, 1]. */
  lambda: number;
  /** Optional 0/1 mask of length T (1 = valid token); default all valid. */
  mask?: ArrayLike<number>;
}

/** Options of {@link gaeBatch}: GAE options plus the row length of the (B, T) row-major inputs. */
export interface GAEBatchOptions extends GAEOptions {
  /** Tokens per row T ≥ 1; the inputs hold B·T entries. The mask, if given, is (B, T) too. */
  seqLen: number;
}

/** Advantages A_t and returns R_t = A_t + V_t (0 at masked positions). */
export interface GAEResult {
  advantages: Float64Array;
  returns: Float64Array;
}

/** Options of {@link whiten}. */
export interface WhitenOptions {
  /** Keep the zero mean of the whitened values (default true); false adds the mean back. */
  shiftMean?: boolean;
  /** Bessel-corrected variance Σ(x−μ)²/(n−1) (default true, as TRL; falls back to /n when n = 1). */
  unbiased?: boolean;
}

function checkUnit(name: string, v: number): void {
  if (typeof v !== "number" || !(v >= 0 && v <= 1)) {
    throw new Error(`Invalid GAE option "${name}": expected a number in [0, 1], got "${v}"`);
  }
}

function checkMask(mask: ArrayLike<number>, n: number): void {
  if (mask.length !== n) throw new Error(`Invalid mask: expected ${n} entries, got ${mask.length}`);
  for (let i = 0; i < n; i++) {
    if (mask[i] !== 0 && mask[i] !== 1) {
      throw new Error(`Invalid mask at index ${i}: expected 0 or 1, got "${mask[i]}"`);
    }
  }
}

// One row [off, off + T): backward recursion over valid tokens.
//   δ_t = r_t + γ V_next − V_t,   A_t = δ_t + γλ A_next,   with V_next = A_next = 0 after the last valid token.
function gaeRow(
  r: ArrayLike<number>,
  v: ArrayLike<number>,
  m: ArrayLike<number> | undefined,
  off: number,
  T: number,
  gamma: number,
  lambda: number,
  adv: Float64Array,
  ret: Float64Array,
): void {
  let nextValue = 0;
  let nextAdv = 0;
  for (let t = off + T - 1; t >= off; t--) {
    if (m !== undefined && m[t] === 0) continue; // adv[t] = ret[t] = 0 (fresh arrays)
    const delta = r[t] + gamma * nextValue - v[t];
    nextAdv = delta + gamma * lambda * nextAdv;
    nextValue = v[t];
    adv[t] = nextAdv;
    ret[t] = nextAdv + v[t];
  }
}

/**
 * GAE for one sequence of T tokens (rewards r, values V, both length T):
 *
 *   δ_t = r_t + γ V_{t+1} − V_t,   A_t = Σ_{l≥0} (γλ)^l δ_{t+l},   R_t = A_t + V_t,
 *
 * where t+1 is the next valid token and V after the last valid token is 0 (terminal).
 * λ = 1 gives Monte-Carlo returns minus values; λ = 0 gives one-step TD errors.
 */
export function gae(rewards: ArrayLike<number>, values: ArrayLike<number>, opts: GAEOptions): GAEResult {
  const T = rewards.length;
  if (values.length !== T) {
    throw new Error(`Invalid GAE input: rewards has ${T} entries, values has ${values.length}`);
  }
  checkUnit("gamma", opts.gamma);
  checkUnit("lambda", opts.lambda);
  if (opts.mask !== undefined) checkMask(opts.mask, T);
  const advantages = new Float64Array(T);
  const returns = new Float64Array(T);
  gaeRow(rewards, values, opts.mask, 0, T, opts.gamma, opts.lambda, advantages, returns);
  return { advantages, returns };
}

/**
 * Batched GAE over (B, T) row-major rewards and values (`number[]`, `Float32Array` or `Float64Array`, B·T
 * entries, T = `opts.seqLen`), with an optional (B, T) 0/1 mask: each row is {@link gae} of that row.
 */
export function gaeBatch(
  rewards: ArrayLike<number>,
  values: ArrayLike<number>,
  opts: GAEBatchOptions,
): GAEResult {
  const { seqLen: T, mask } = opts;
  const n = rewards.length;
  if (!Number.isInteger(T) || T < 1 || n % T !== 0) {
    throw new Error(`Invalid GAE option "seqLen": expected an integer >= 1 dividing ${n}, got "${T}"`);
  }
  if (values.length !== n) {
    throw new Error(`Invalid GAE input: rewards has ${n} entries, values has ${values.length}`);
  }
  checkUnit("gamma", opts.gamma);
  checkUnit("lambda", opts.lambda);
  if (mask !== undefined) checkMask(mask, n);
  const advantages = new Float64Array(n);
  const returns = new Float64Array(n);
  for (let off = 0; off < n; off += T) {
    gaeRow(rewards, values, mask, off, T, opts.gamma, opts.lambda, advantages, returns);
  }
  return { advantages, returns };
}

/**
 * Masked whitening over the valid entries (n = Σ mask):
 *
 *   μ = Σ m_i x_i / n,   σ² = Σ m_i (x_i − μ)² / (n − 1),   y_i = (x_i − μ) / √(σ² + 1e−8)  (+ μ if !shiftMean)
 *
 * Masked entries give 0. Throws when no entry is valid (empty input gives empty output).
 */
export function whiten(
  values: ArrayLike<number>,
  mask?: ArrayLike<number>,
  opts: WhitenOptions = {},
): Float64Array {
  const { shiftMean = true, unbiased = true } = opts;
  const N = values.length;
  const out = new Float64Array(N);
  if (N === 0) return out;
  if (mask !== undefined) checkMask(mask, N);
  let count = 0;
  let sum = 0;
  for (let i = 0; i < N; i++) {
    if (mask === undefined || mask[i] === 1) {
      count++;
      sum += values[i];
    }
  }
  if (count === 0) throw new Error(`Cannot whiten: mask has no valid entries among ${N}`);
  const mean = sum / count;
  let sq = 0;
  for (let i = 0; i < N; i++) if (mask === undefined || mask[i] === 1) sq += (values[i] - mean) ** 2;
  const variance = sq / (unbiased && count > 1 ? count - 1 : count);
  const inv = 1 / Math.sqrt(variance + 1e-8);
  for (let i = 0; i < N; i++) {
    if (mask === undefined || mask[i] === 1) out[i] = (values[i] - mean) * inv + (shiftMean ? 0 : mean);
  }
  return out;
}
