/**
 * Batched KV-cache generation. Prompts are left-padded to one length P; the prompt pass fills the cache, then each
 * decoding step embeds the token sampled on the GPU at the previous step (no readback), appends its keys and
 * values at column P + s, and samples the next token on the GPU. Steps are recorded `chunk` at a time into one
 * command encoder, and the host reads only the `done` flags after each chunk to stop once every row has finished.
 * With `calculator`, the GSM8K calculator (calculator.ts) writes the values of `<<expr=` annotations.
 *
 * @module
 */
import { Batch } from "../gpu/batch.ts";
import {
  calculatorForce,
  type CalculatorTable,
  calculatorUpdate,
  createCalculatorRun,
  releaseCalculatorRun,
} from "./calculator.ts";
import { upload } from "../gpu/io.ts";
import { Tensor } from "../gpu/tensor.ts";
import { embedding } from "../ops/embedding.ts";
import { createSamplerState, releaseSamplerState, sampleTokens } from "../ops/sampling.ts";
import { createKVCache, type KVCache, kvStep, releaseKVCache } from "./kv_cache.ts";
import { lmHead, trunkForward } from "./qwen2.ts";
import type { Qwen2Model } from "./model.ts";

/** Options of {@linkcode generate}. */
export interface GenerateOptions {
  /** New tokens at most per sequence (including the stop token). */
  maxNewTokens: number;
  /** 0 = greedy (default), else sampling temperature. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off). */
  topK?: number;
  /** Nucleus sampling mass (1 = off). */
  topP?: number;
  /** Run seed (default 0). */
  seed?: number;
  /**
   * Per-sequence seeds (default: the sequence's index). A sequence generates the same tokens whatever batch it is
   * in, given the same run seed and its own seed.
   */
  sequenceSeeds?: number[];
  /** Token ids that end a sequence (default: the config's eos ids). */
  stopIds?: number[];
  /** Id written after a sequence ends (default: first stop id, else 0). */
  padId?: number;
  /** Decoding steps recorded per submit before the host checks for completion (default 16). */
  chunk?: number;
  /**
   * GSM8K calculator (see calculator.ts): inside `<<expr=`, force the exact value and `>>`. The tokens it wrote
   * are marked in {@linkcode GenerateResult.forced}.
   */
  calculator?: CalculatorTable;
}

/** Result of {@linkcode generate}: per sequence, the new tokens and their log-probs. */
export interface GenerateResult {
  /** New token ids per sequence, up to and including the stop token. */
  tokens: number[][];
  /** log π(token | prefix) under the raw logits (temperature 1), per new token. */
  logprobs: number[][];
  /** Whether each sequence ended with a stop token (false: hit maxNewTokens). */
  stopped: boolean[];
  /** Per sequence, whether each new token was written by the calculator (all false without one). */
  forced: boolean[][];
  /** GPU→CPU readbacks performed. */
  readbacks: number;
  /** Decoding steps run (≤ maxNewTokens). */
  steps: number;
}

/** Generates continuations of `prompts` (token id lists) with the model's KV cache. */
export async function generate(
  model: Qwen2Model,
  prompts: number[][],
  opts: GenerateOptions,
): Promise<GenerateResult> {
  const { gpu, config: cfg, params } = model;
  const B = prompts.length;
  const maxNew = opts.maxNewTokens;
  if (B === 0) return { tokens: [], logprobs: [], forced: [], stopped: [], readbacks: 0, steps: 0 };
  if (!Number.isInteger(maxNew) || maxNew < 1) {
    throw new Error(`Invalid maxNewTokens "${maxNew}": expected a positive integer`);
  }
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new Error(`Prompt ${i} is empty: generation needs at least one token`);
    for (const id of p) {
      if (!Number.isInteger(id) || id < 0 || id >= cfg.vocabSize) {
        throw new Error(`Prompt ${i} has token id "${id}" outside the vocabulary [0, ${cfg.vocabSize})`);
      }
    }
  });
  const P = Math.max(...prompts.map((p) => p.length));
  const capacity = P + maxNew;
  if (capacity > cfg.maxPositionEmbeddings) {
    throw new Error(
      `Prompt length ${P} + maxNewTokens ${maxNew} exceeds max_position_embeddings ${cfg.maxPositionEmbeddings}`,
    );
  }
  const stopIds = opts.stopIds ?? cfg.eosTokenIds;
  const padId = opts.padId ?? stopIds[0] ?? 0;
  const chunk = Math.max(1, opts.chunk ?? 16);

  // Left-padded prompt batch: positions count real tokens only.
  const ids = new Int32Array(B * P), mask = new Int32Array(B * P), positions = new Int32Array(B * P);
  const cacheMask = new Int32Array(B * capacity);
  prompts.forEach((p, b) => {
    const pad = P - p.length;
    p.forEach((id, j) => {
      ids[b * P + pad + j] = id;
      mask[b * P + pad + j] = 1;
      positions[b * P + pad + j] = j;
      cacheMask[b * capacity + pad + j] = 1;
    });
  });
  const temps: Tensor[] = [];
  const keep = <T extends Tensor>(t: T) => (temps.push(t), t);
  const idsT = keep(upload(gpu, ids, { shape: [B, P], label: "gen.ids" }));
  const maskT = keep(upload(gpu, mask, { shape: [B, P], label: "gen.mask" }));
  const posT = keep(upload(gpu, positions, { shape: [B, P], label: "gen.positions" }));
  const lastRows = keep(
    upload(gpu, Int32Array.from({ length: B }, (_, b) => b * P + P - 1), { label: "gen.last" }),
  );
  const stepIds = keep(new Tensor(gpu, [B, 1], "i32", "gen.step_ids"));
  const stepPos = keep(
    upload(gpu, Int32Array.from(prompts, (p) => p.length - 1), { shape: [B, 1], label: "gen.pos" }),
  );
  const seeds = keep(
    upload(gpu, Uint32Array.from({ length: B }, (_, b) => opts.sequenceSeeds?.[b] ?? b), {
      label: "gen.seeds",
    }),
  );
  const stopT = stopIds.length > 0
    ? keep(upload(gpu, Int32Array.from(stopIds), { label: "gen.stop" }))
    : undefined;
  const cache: KVCache = createKVCache(gpu, {
    layers: cfg.numHiddenLayers,
    batch: B,
    capacity,
    kvHeads: cfg.numKeyValueHeads,
    headDim: cfg.headDim,
  });
  gpu.device.queue.writeBuffer(cache.mask.buffer, 0, cacheMask as BufferSource);
  const state = createSamplerState(gpu, { batch: B, maxNew });
  const logits = keep(new Tensor(gpu, [B, cfg.vocabSize], "f32", "gen.logits"));
  if (opts.calculator && opts.calculator.vocab !== cfg.vocabSize) {
    throw new Error(
      `The calculator table has ${opts.calculator.vocab} tokens, the model's vocabulary ${cfg.vocabSize}`,
    );
  }
  const calc = opts.calculator ? createCalculatorRun(gpu, opts.calculator, prompts, maxNew) : undefined;
  const sample = (batch: Batch, step: number) => {
    if (calc) calculatorForce(batch, calc, logits, state.done);
    sampleTokens(batch, state, logits, {
      step,
      temperature: opts.temperature ?? 0,
      topK: opts.topK ?? 0,
      topP: opts.topP ?? 1,
      seed: opts.seed ?? 0,
      seeds,
      stopIds: stopT,
      padId,
    });
    if (calc) calculatorUpdate(batch, calc, state.tokens, state.done, step, cfg.vocabSize);
    kvStep(batch, stepIds.reshape([B]), stepPos.reshape([B]), state.tokens, step);
  };
  let readbacks = 0, steps = 0;
  try {
    for (let s0 = 0; s0 < maxNew; s0 += chunk) {
      const batch = new Batch(gpu, `generate.steps.${s0}`);
      try {
        for (let s = s0; s < Math.min(maxNew, s0 + chunk); s++) {
          if (s === 0) {
            const { hidden } = trunkForward(batch, cfg, params, { ids: idsT, positions: posT, mask: maskT }, {
              cache: { cache, col0: 0 },
            });
            const last = new Tensor(gpu, [B, cfg.hiddenSize], "f32", "gen.last_hidden");
            embedding(batch, last, hidden, lastRows); // gather row b·P + P − 1 of every sequence
            hidden.release();
            lmHead(batch, logits, last, params);
            last.release();
          } else {
            const { hidden } = trunkForward(batch, cfg, params, { ids: stepIds, positions: stepPos }, {
              cache: { cache, col0: P + s - 1 },
            });
            lmHead(batch, logits, hidden, params);
            hidden.release();
          }
          sample(batch, s);
          steps = s + 1;
        }
      } catch (e) {
        batch.abandon();
        throw e;
      }
      const done = batch.read(state.done);
      await batch.submit();
      readbacks++;
      if ((await done).every((d) => d !== 0)) break;
    }
    const batch = new Batch(gpu, "generate.read");
    const reads = [
      batch.read(state.tokens),
      batch.read(state.lengths),
      batch.read(state.logprobs),
      batch.read(state.done),
      ...(calc ? [batch.read(calc.forced)] : []),
    ];
    await batch.submit();
    readbacks++;
    const [tokens, lengths, logprobs, done, forced] = await Promise.all(reads);
    return {
      tokens: prompts.map((_, b) => Array.from(tokens.subarray(b * maxNew, b * maxNew + lengths[b]))),
      logprobs: prompts.map((_, b) => Array.from(logprobs.subarray(b * maxNew, b * maxNew + lengths[b]))),
      forced: prompts.map((_, b) =>
        Array.from({ length: lengths[b] }, (_, j) => forced !== undefined && forced[b * maxNew + j] !== 0)
      ),
      stopped: prompts.map((_, b) => done[b] !== 0),
      readbacks,
      steps,
    };
  } finally {
    releaseSamplerState(state);
    releaseKVCache(cache);
    if (calc) releaseCalculatorRun(calc);
    for (const t of temps) t.release();
  }
}
