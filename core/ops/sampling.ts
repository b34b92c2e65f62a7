/**
 * Token sampling on the GPU (`shaders/sampling.wgsl`) for batched KV-cache decoding: each step writes the
 * next token of every row into a (B, maxNew) buffer, with log-probabilities and stop bookkeeping, so the host
 * reads back only every few steps (`done`, `lengths`) instead of reading logits per token.
 *
 * Semantics (exactly those of {@linkcode sampleTokensRef}): temperature 0 is greedy (argmax, ties → lowest
 * id); otherwise top-k keeps the k largest logits (ties → lower id), top-p the shortest highest-probability
 * prefix of those reaching mass p, and the token is drawn by inverse CDF in that order with u = r/2^32 from
 * Philox4x32-10 keyed by (seed, seeds[row], step). Probabilities use integer weights ≈ 2^34·exp((x − max)/T);
 * tokens more than 23.5·T nats below the max get weight 0 (each has probability < 2^-34).
 *
 * @example
 * ```ts
 * const state = createSamplerState(gpu, { batch: B, maxNew });
 * for (let step = 0; step < maxNew; step++) {
 *   await runBatch(gpu, "decode", (b) => {
 *     forward(b, logits, ...); // (B, V)
 *     sampleTokens(b, state, logits, { step, temperature: 0.7, topP: 0.9, seeds, stopIds, padId });
 *   });
 * }
 * ```
 *
 * @module
 */
import src from "../../shaders/sampling.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import { zeros } from "../gpu/io.ts";
import { grid1d, type KernelSpec } from "../gpu/kernel.ts";
import { rowShards } from "../gpu/shard.ts";
import { type DType, expectShape, type Tensor } from "../gpu/tensor.ts";
import { samplingScale, seedWords, topPFixed } from "../ref/sampling_ref.ts";

const SAMPLE: KernelSpec = {
  name: "sampling.sample",
  code: src,
  entry: "sample",
  constants: { WG: 256 },
  params: [
    ["rows", "u32"],
    ["row0", "u32"],
    ["vocab", "u32"],
    ["max_new", "u32"],
    ["step", "u32"],
    ["greedy", "u32"],
    ["scale20", "f32"],
    ["top_k", "u32"],
    ["top_p", "u32"],
    ["seed_lo", "u32"],
    ["seed_hi", "u32"],
    ["n_stop", "u32"],
    ["pad_id", "i32"],
  ],
  bindings: ["logits", "seeds", "stopIds", "tokens", "done", "lengths", "logprobs", "sampledLogprobs"],
};

/**
 * Per-row decoding state on the GPU, B rows and maxNew steps. `tokens` (B, maxNew) i32: sampled ids (pad
 * after a row is done); `done` (B) i32: 1 once the row emitted a stop id; `lengths` (B) i32: tokens generated
 * up to and including the stop token; `logprobs` (B, maxNew) f32: log softmax(logits)[token] under the raw
 * logits (temperature 1, no truncation — the policy log-probability RL needs); `sampledLogprobs` (B, maxNew)
 * f32: ln q(token) under the distribution actually sampled from (after temperature, top-k, top-p; 0 when
 * greedy). Done rows get 0 in both log-prob buffers.
 */
export interface SamplerState {
  tokens: Tensor;
  done: Tensor;
  lengths: Tensor;
  logprobs: Tensor;
  sampledLogprobs: Tensor;
}

/** Settings of one {@linkcode sampleTokens} step. */
export interface SampleOptions {
  /** Column of `tokens` / log-prob buffers written, and the RNG counter; 0 ≤ step < maxNew. */
  step: number;
  /** Softmax temperature (default 1); 0 means greedy argmax. */
  temperature?: number;
  /** Keep the k largest logits (default 0 = off; k ≥ V is off too). */
  topK?: number;
  /** Nucleus mass p ∈ (0, 1] (default 1 = off). */
  topP?: number;
  /** Philox key, an integer in [0, 2^64) (default 0). */
  seed?: number | bigint;
  /** (B) u32 per-row seeds (Philox counter word): give each sequence its own to decorrelate rows. */
  seeds: Tensor;
  /** Stop token ids, an i32 tensor (default none). */
  stopIds?: Tensor;
  /** Token written for rows that are already done. */
  padId: number;
  /**
   * Threads per row, 8, 64 or 256 (default: by vocabulary and adapter). Token ids are the same for every size;
   * tests pin it.
   */
  workgroupSize?: number;
}

const dummies = new WeakMap<Gpu, Tensor>();

function checkDtype(t: Tensor, dtype: DType, what: string): void {
  if (t.dtype !== dtype) {
    throw new Error(`${what}: tensor "${t.label}" has dtype ${t.dtype}, expected ${dtype}`);
  }
}

function checkInt(v: number, what: string, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new Error(`sampleTokens: invalid ${what} "${v}": expected an integer in [${min}, ${max}]`);
  }
}

/**
 * Threads per row: 8 for tiny vocabularies, 64 up to 4096 logits, 256 beyond (few pipeline variants). On a CPU
 * adapter 8 up to 4096 logits: workgroup barriers are costly there, and 8 invocations fill one SIMD register
 * (lavapipe, 32 rows × 512 logits: 64 threads 16 ms per draw, 8 threads 9 ms, 1 thread 26 ms). Each thread's
 * sweeps stay within the loop budget of CPU adapters (≤ 40 passes × 4096 / 8 < 65535 iterations). Tokens
 * are the same for every size (exact integer sums); the f32 normaliser of `logprobs` is summed in another order.
 */
function workgroupSize(vocab: number, cpu: boolean): number {
  return vocab <= 256 || (cpu && vocab <= 4096) ? 8 : vocab <= 4096 ? 64 : 256;
}

/** A zeroed {@linkcode SamplerState} for `batch` rows and `maxNew` steps (release it when done). */
export function createSamplerState(gpu: Gpu, opts: { batch: number; maxNew: number }): SamplerState {
  const { batch: B, maxNew } = opts;
  return {
    tokens: zeros(gpu, [B, maxNew], { dtype: "i32", label: "sampler.tokens" }),
    done: zeros(gpu, [B], { dtype: "i32", label: "sampler.done" }),
    lengths: zeros(gpu, [B], { dtype: "i32", label: "sampler.lengths" }),
    logprobs: zeros(gpu, [B, maxNew], { label: "sampler.logprobs" }),
    sampledLogprobs: zeros(gpu, [B, maxNew], { label: "sampler.sampled_logprobs" }),
  };
}

/**
 * One decoding step: for each row b of `logits` (B, V), unless done[b], samples a token t (see the module
 * doc), writes tokens[b, step] = t, logprobs[b, step] = x_t − log Σ_i exp(x_i), sampledLogprobs[b, step] =
 * ln(q_t / Σ_kept q), increments lengths[b] and sets done[b] = 1 when t is a stop id; done rows get padId and
 * 0 log-probs. One dispatch (one per shard of rows when logits exceed the binding limit); nothing is read
 * back.
 */
export function sampleTokens(batch: Batch, out: SamplerState, logits: Tensor, opts: SampleOptions): void {
  const what = "sampleTokens";
  if (logits.shape.length !== 2) {
    throw new Error(`${what}: tensor "${logits.label}" has shape [${logits.shape}], expected (B, V)`);
  }
  const [B, V] = logits.shape;
  if (V < 1) throw new Error(`${what}: tensor "${logits.label}" has an empty vocabulary`);
  const maxNew = out.tokens.shape[1];
  expectShape(out.tokens, [B, maxNew], what);
  expectShape(out.done, [B], what);
  expectShape(out.lengths, [B], what);
  expectShape(out.logprobs, [B, maxNew], what);
  expectShape(out.sampledLogprobs, [B, maxNew], what);
  expectShape(opts.seeds, [B], what);
  checkDtype(logits, "f32", what);
  checkDtype(out.tokens, "i32", what);
  checkDtype(out.done, "i32", what);
  checkDtype(out.lengths, "i32", what);
  checkDtype(out.logprobs, "f32", what);
  checkDtype(out.sampledLogprobs, "f32", what);
  checkDtype(opts.seeds, "u32", what);
  if (opts.stopIds) checkDtype(opts.stopIds, "i32", what);
  const temperature = opts.temperature ?? 1, topK = opts.topK ?? 0, topP = opts.topP ?? 1;
  checkInt(opts.step, "step", 0, maxNew - 1);
  checkInt(topK, "topK", 0, 0xffffffff);
  checkInt(opts.padId, "padId", -0x80000000, 0x7fffffff);
  if (!(temperature === 0 || (temperature >= 1e-6 && Number.isFinite(temperature)))) {
    throw new Error(
      `${what}: invalid temperature "${temperature}": expected 0 (greedy) or a finite value ≥ 1e-6`,
    );
  }
  if (!(topP > 0 && topP <= 1)) {
    throw new Error(`${what}: invalid topP "${topP}": expected a value in (0, 1]`);
  }
  const [seedLo, seedHi] = seedWords(opts.seed ?? 0);
  const gpu = batch.gpu;
  let stopIds = opts.stopIds;
  if (!stopIds || stopIds.size === 0) {
    stopIds = dummies.get(gpu) ?? zeros(gpu, [1], { dtype: "i32", label: "sampling.no_stop_ids" });
    dummies.set(gpu, stopIds);
  }
  const wg = opts.workgroupSize ?? workgroupSize(V, gpu.isCpu);
  if (![8, 64, 256].includes(wg)) {
    throw new Error(`${what}: invalid workgroupSize "${wg}": expected 8, 64 or 256`);
  }
  const spec = { ...SAMPLE, constants: { WG: wg } };
  for (const { start, count } of rowShards(gpu, B, V)) {
    if (count === 0) continue;
    batch.dispatch(
      spec,
      {
        logits: logits.view(start * V, count * V),
        seeds: opts.seeds,
        stopIds,
        tokens: out.tokens,
        done: out.done,
        lengths: out.lengths,
        logprobs: out.logprobs,
        sampledLogprobs: out.sampledLogprobs,
      },
      grid1d(count, gpu.limits.maxWorkgroupsPerDimension),
      {
        rows: count,
        row0: start,
        vocab: V,
        max_new: maxNew,
        step: opts.step,
        greedy: temperature === 0 ? 1 : 0,
        scale20: temperature === 0 ? 0 : samplingScale(temperature),
        top_k: topK,
        top_p: topPFixed(topP),
        seed_lo: seedLo,
        seed_hi: seedHi,
        n_stop: opts.stopIds?.size ?? 0,
        pad_id: opts.padId,
      },
    );
  }
}

/** Releases every tensor of a {@linkcode SamplerState}. */
export function releaseSamplerState(state: SamplerState): void {
  for (const t of Object.values(state) as Tensor[]) t.release();
}
