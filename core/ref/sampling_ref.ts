/**
 * Plain-TS reference of GPU token sampling (`shaders/sampling.wgsl`), and the definitions both share: the
 * Philox4x32-10 counter-based RNG, the logit order key and the fixed-point sampling weights.
 *
 * The reference sorts each row (by logit descending, ties by lower id) and walks cumulative sums, where the
 * GPU searches thresholds with workgroup reductions; both use the same integer weights, so token ids agree
 * exactly. Definition, with m = max logit and T the temperature:
 * - weight q_i = {@link sampleWeight}(x_i) ≈ 2^34 · exp((x_i − m)/T), an integer (0 below 2^-34 relative);
 * - top-k keeps the first k of the order; top-p keeps the shortest prefix of the kept tokens whose mass
 *   reaches max(⌊Z_k·p32/2^32⌋, 1) with p32 = {@link topPFixed}(p) and Z_k the kept mass;
 * - the token is the first kept one whose cumulative mass exceeds ⌊Z_p·r/2^32⌋, r = {@link samplingRandom}
 *   (u = r/2^32 ∈ [0, 1)), Z_p the kept mass;
 * - logprob = log softmax(x)[token] (raw logits), sampledLogprob = ln(q_token / Z_p) (0 when greedy).
 *
 * @module
 */

/** ⌊a·b / 2^32⌋ for u32 a, b (16-bit limbs, as in the shader). */
export function mulhi32(a: number, b: number): number {
  const a0 = a & 0xffff, a1 = a >>> 16, b0 = b & 0xffff, b1 = b >>> 16;
  const p01 = a0 * b1, p10 = a1 * b0;
  const mid = ((a0 * b0) >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  return (a1 * b1 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16)) >>> 0;
}

/** ⌊a·b / 2^31⌋ for a, b ≤ 2^31. */
function mulQ31(a: number, b: number): number {
  return ((mulhi32(a, b) << 1) | (Math.imul(a, b) >>> 31)) >>> 0;
}

/**
 * Philox4x32-10 (Salmon et al. 2011, Random123): a counter-based RNG, four u32 outputs per (counter, key).
 *
 * @example
 * ```ts
 * philox4x32([0, 0, 0, 0], [0, 0]); // Uint32Array [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
 * ```
 */
export function philox4x32(counter: readonly number[], key: readonly number[]): Uint32Array {
  let [c0, c1, c2, c3] = counter.map((v) => v >>> 0);
  let [k0, k1] = key.map((v) => v >>> 0);
  for (let i = 0; i < 10; i++) {
    if (i > 0) [k0, k1] = [(k0 + 0x9e3779b9) >>> 0, (k1 + 0xbb67ae85) >>> 0];
    const h0 = mulhi32(0xd2511f53, c0), l0 = Math.imul(0xd2511f53, c0) >>> 0;
    const h1 = mulhi32(0xcd9e8d57, c2), l1 = Math.imul(0xcd9e8d57, c2) >>> 0;
    [c0, c1, c2, c3] = [(h1 ^ c1 ^ k0) >>> 0, l1, (h0 ^ c3 ^ k1) >>> 0, l0];
  }
  return Uint32Array.of(c0, c1, c2, c3);
}

/** Splits a 64-bit sampling seed into its Philox key words `[lo, hi]`. */
export function seedWords(seed: number | bigint): [number, number] {
  const s = BigInt(seed);
  if (s < 0n || s >= 1n << 64n) {
    throw new Error(`Invalid sampling seed "${seed}": expected an integer in [0, 2^64)`);
  }
  return [Number(s & 0xffffffffn), Number(s >> 32n)];
}

/**
 * The random u32 r of one sampling draw: Philox4x32-10 word 0 at counter (step, rowSeed, 0, 0) and key
 * `seed`. It depends on the row only through `rowSeed`, so a sequence samples the same in any batch. u = r /
 * 2^32.
 */
export function samplingRandom(seed: number | bigint, rowSeed: number, step: number): number {
  return philox4x32([step, rowSeed, 0, 0], seedWords(seed))[0];
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Order key of an f32 logit: a u32 whose unsigned order is the float order (−0 just below +0). */
export function orderKey(x: number): number {
  f32[0] = x;
  const b = u32[0];
  return (b & 0x80000000 ? ~b : b | 0x80000000) >>> 0;
}

/** `EXP2_Q31[a] = round(2^31 · 2^(−a/64))`, the table of `shaders/sampling.wgsl`. */
export const EXP2_Q31: readonly number[] = Array.from(
  { length: 64 },
  (_, a) => Math.round(2 ** (31 - a / 64)),
);

const LN2_Q31 = 1488522236;
const N_LIMIT = 34 * 2 ** 20;

/** `scale20 = f32(2^20 · log2(e) / temperature)`, the factor of {@link sampleWeight}. */
export function samplingScale(temperature: number): number {
  return Math.fround(2 ** 20 * Math.LOG2E / temperature);
}

/** Top-p in 32-bit fixed point: ⌊p·2^32⌋ clamped to ≥ 1, or 0 (off) when p ≥ 1. */
export function topPFixed(topP: number): number {
  return topP >= 1 ? 0 : Math.max(1, Math.floor(topP * 2 ** 32));
}

/**
 * Fixed-point sampling weight of a logit x given the row max m: with n = ⌊f32((m − x)·scale20)⌋
 * = k·2^20 + a·2^14 + r, q = ⌊2^34·2^(−n/2^20)⌋ within 1 + 1e-8 relative, evaluated exactly in integers as
 * EXP2_Q31[a] · (1 − t(1 − t/2(1 − t/3))) (t = r·ln2/2^20, Q31) shifted by k; 0 when n ≥ 34·2^20.
 * Returns an integer ≤ 2^34.
 */
export function sampleWeight(x: number, m: number, scale20: number): number {
  const y = Math.fround(Math.fround(m - x) * scale20);
  if (!(y < N_LIMIT)) return 0;
  const n = Math.trunc(y);
  const k = n >>> 20, f = n & 0xfffff;
  const t = mulhi32((f & 0x3fff) << 12, LN2_Q31);
  const h3 = 0x80000000 - Math.floor(t / 3);
  const h2 = 0x80000000 - (mulQ31(t, h3) >>> 1);
  const h1 = 0x80000000 - mulQ31(t, h2);
  const w = mulQ31(EXP2_Q31[f >>> 14], h1);
  return k <= 3 ? w * 2 ** (3 - k) : Math.floor(w / 2 ** (k - 3));
}

/** Host sampler state (mutated by {@link sampleTokensRef}); matrices are (B, maxNew) row-major. */
export interface SamplerStateRef {
  tokens: Int32Array;
  done: Int32Array;
  lengths: Int32Array;
  logprobs: Float32Array;
  sampledLogprobs: Float32Array;
}

/** Settings of {@link sampleTokensRef} (see `SampleOptions` in core/ops/sampling.ts). */
export interface SampleRefOptions {
  vocab: number;
  maxNew: number;
  step: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number | bigint;
  seeds: ArrayLike<number>;
  stopIds?: ArrayLike<number>;
  padId: number;
}

/** Reference of `sampleTokens`: one decoding step for each row of `logits` (B, V), updating `out`. */
export function sampleTokensRef(out: SamplerStateRef, logits: Float32Array, opts: SampleRefOptions): void {
  const { vocab: V, maxNew, step, padId } = opts;
  const temperature = opts.temperature ?? 1, topK = opts.topK ?? 0, p32 = topPFixed(opts.topP ?? 1);
  const seed = opts.seed ?? 0;
  const stops = new Set(Array.from(opts.stopIds ?? []));
  const B = logits.length / V;
  if (!Number.isInteger(B) || V > 2 ** 19) {
    throw new Error(`sampleTokensRef: bad shape (${logits.length}, V ${V})`);
  }
  const scale20 = samplingScale(temperature);
  for (let b = 0; b < B; b++) {
    const col = b * maxNew + step;
    if (out.done[b] !== 0) {
      out.tokens[col] = padId;
      out.logprobs[col] = 0;
      out.sampledLogprobs[col] = 0;
      continue;
    }
    const x = logits.subarray(b * V, (b + 1) * V);
    const keys = Array.from(x, orderKey);
    const order = Array.from({ length: V }, (_, i) => i).sort((i, j) => keys[j] - keys[i] || i - j);
    const m = x[order[0]];
    let zRaw = 0;
    for (const v of x) zRaw += Math.exp(v - m);
    let tok = order[0], lpSampled = 0;
    if (temperature !== 0) {
      const q = order.map((i) => sampleWeight(x[i], m, scale20)); // sums stay below 2^53: exact
      let kept = topK > 0 && topK < V ? topK : V;
      let z = 0;
      for (let j = 0; j < kept; j++) z += q[j];
      if (p32 !== 0) {
        const thr = Math.max(Number((BigInt(z) * BigInt(p32)) >> 32n), 1);
        let cum = 0, j = 0;
        while ((cum += q[j]) < thr) j++;
        kept = j + 1;
        z = cum;
      }
      const target = Number((BigInt(z) * BigInt(samplingRandom(seed, opts.seeds[b], step))) >> 32n);
      let cum = 0, j = 0;
      while ((cum += q[j]) <= target) j++;
      if (j >= kept) throw new Error("sampleTokensRef: inverse CDF left the kept set");
      tok = order[j];
      lpSampled = Math.log(q[j] / z);
    }
    out.tokens[col] = tok;
    out.logprobs[col] = x[tok] - m - Math.log(zRaw);
    out.sampledLogprobs[col] = lpSampled;
    out.lengths[b] += 1;
    if (stops.has(tok)) out.done[b] = 1;
  }
}
