/**
 * A loaded Qwen2 model: config + parameters on the GPU, and the scoring entry points that run whole sequences
 * (log-probs of given tokens, logits, last hidden states).
 *
 * @example
 * ```ts
 * const model = await loadModel("Qwen/Qwen2.5-0.5B-Instruct");
 * const { tokenLogprobs } = await scoreSequences(model, [[1, 2, 3]]);
 * ```
 *
 * @module
 */
import { runBatch } from "../gpu/batch.ts";
import { getGpu, type Gpu } from "../gpu/device.ts";
import { upload } from "../gpu/io.ts";
import { Tensor } from "../gpu/tensor.ts";
import { openCheckpointDir, saveCheckpointDir } from "./checkpoint.ts";
import type { Qwen2Config } from "./config.ts";
import { type HubOptions, resolveModel } from "./hub.ts";
import { logprobsForward } from "./logprobs.ts";
import { initParams, loadParams, type Qwen2Params, readParams, releaseParams } from "./params.ts";
import { type ForwardInputs, lmHead, trunkForward } from "./qwen2.ts";

/** A Qwen2 model whose weights live on the GPU. */
export interface Qwen2Model {
  gpu: Gpu;
  config: Qwen2Config;
  params: Qwen2Params;
  /** Directory the model was loaded from (null when built in memory). */
  dir: string | null;
}

/**
 * Loads a model from a local directory or a Hugging Face hub id (resolved through the HF cache, downloading when
 * missing), streaming its weights to the GPU.
 */
export async function loadModel(
  idOrPath: string,
  opts: { gpu?: Gpu; hub?: HubOptions } = {},
): Promise<Qwen2Model> {
  const resolved = await resolveModel(idOrPath, opts.hub);
  const gpu = opts.gpu ?? await getGpu();
  const ckpt = await openCheckpointDir(resolved.dir);
  try {
    const params = await loadParams(gpu, ckpt.weights, ckpt.config);
    return { gpu, config: ckpt.config, params, dir: ckpt.dir };
  } finally {
    await ckpt.weights.close();
  }
}

/** Releases the model's GPU memory. */
export function releaseModel(model: Qwen2Model): void {
  releaseParams(model.params);
}

/** A ragged batch laid out for one forward pass. */
export interface PackedBatch {
  /** (B, T) ids, pads 0. */
  ids: Int32Array;
  /** (B, T) 1 = real token. */
  mask: Int32Array;
  /** (B, T) cumsum(mask) − 1 for real tokens, 0 for pads. */
  positions: Int32Array;
  B: number;
  T: number;
  /** Column of each sequence's first token (left padding offset). */
  starts: number[];
}

/** Packs sequences right-padded (default) or left-padded into (B, T) arrays with positions counting real tokens. */
export function packSequences(seqs: number[][], opts: { padSide?: "left" | "right" } = {}): PackedBatch {
  const B = seqs.length, T = Math.max(1, ...seqs.map((s) => s.length));
  const ids = new Int32Array(B * T), mask = new Int32Array(B * T), positions = new Int32Array(B * T);
  const starts: number[] = [];
  seqs.forEach((s, b) => {
    const start = opts.padSide === "left" ? T - s.length : 0;
    starts.push(start);
    s.forEach((id, j) => {
      ids[b * T + start + j] = id;
      mask[b * T + start + j] = 1;
      positions[b * T + start + j] = j;
    });
  });
  return { ids, mask, positions, B, T, starts };
}

/** Uploads a packed batch as a forward's inputs: (B, T) tensors labelled `<label>.ids`, `.positions`, `.mask`. */
export function uploadPacked(gpu: Gpu, pk: PackedBatch, label: string): Required<ForwardInputs> {
  const shape = [pk.B, pk.T];
  return {
    ids: upload(gpu, pk.ids, { shape, label: `${label}.ids` }),
    positions: upload(gpu, pk.positions, { shape, label: `${label}.positions` }),
    mask: upload(gpu, pk.mask, { shape, label: `${label}.mask` }),
  };
}

/** Options of {@linkcode scoreSequences}. */
export interface ScoreOptions {
  /** Also return the full log-softmax at each sequence's last position (V floats per sequence). */
  lastLogprobs?: boolean;
  /** Also return the final hidden states (T_b × C per sequence). */
  hidden?: boolean;
  /** Also return every position's logits (T_b × V per sequence: memory grows with T·V). */
  logits?: boolean;
  /** Padding side of the packed batch (default "right"); results do not depend on it. */
  padSide?: "left" | "right";
  /** Rows of logits materialised at once (bounds memory to rows × V floats; default fits 64 MiB). */
  logitRows?: number;
}

/** Result of {@linkcode scoreSequences}. */
export interface ScoreResult {
  /** log p(x_t | x_<t) for t = 1..T_b−1, per sequence. */
  tokenLogprobs: Float32Array[];
  /** Entropy of the next-token distribution at positions 0..T_b−2, per sequence. */
  entropies: Float32Array[];
  /** Log-softmax over the vocabulary at the last position, per sequence (with `lastLogprobs`). */
  lastLogprobs?: Float32Array[];
  /** Final hidden states (T_b, C) per sequence (with `hidden`). */
  hidden?: Float32Array[];
  /** Logits (T_b, V) per sequence (with `logits`). */
  logits?: Float32Array[];
}

/**
 * One forward pass over ragged sequences (right-padded into one batch) returning the log-prob of every next
 * token, computed by the fused target-log-prob kernel over chunks of logit rows, so no (B·T, V) matrix is kept.
 */
export async function scoreSequences(
  model: Qwen2Model,
  seqs: number[][],
  opts: ScoreOptions = {},
): Promise<ScoreResult> {
  const { gpu, config: cfg, params } = model;
  for (const [i, s] of seqs.entries()) {
    if (s.length === 0) throw new Error(`Sequence ${i} is empty`);
    for (const id of s) {
      if (!Number.isInteger(id) || id < 0 || id >= cfg.vocabSize) {
        throw new Error(`Sequence ${i} has token id "${id}" outside the vocabulary [0, ${cfg.vocabSize})`);
      }
    }
  }
  const pk = packSequences(seqs, { padSide: opts.padSide });
  const { B, T, starts } = pk;
  const N = B * T, V = cfg.vocabSize;
  // Target of row (b, t) is x[b, t+1] when that is a real token, else −1 (ignored).
  const targets = new Int32Array(N).fill(-1);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t + 1 < seqs[b].length; t++) targets[b * T + starts[b] + t] = seqs[b][t + 1];
  }
  const temps: Tensor[] = [];
  const keep = (t: Tensor) => (temps.push(t), t);
  const { ids, positions, mask } = uploadPacked(gpu, pk, "score");
  temps.push(ids, positions, mask);
  const targetsT = keep(upload(gpu, targets, { label: "score.targets" }));
  const logp = keep(new Tensor(gpu, [N], "f32", "score.logp"));
  const lse = keep(new Tensor(gpu, [N], "f32", "score.lse"));
  const entropy = keep(new Tensor(gpu, [N], "f32", "score.entropy"));
  let hiddenRead: Promise<Float32Array | Int32Array | Uint32Array> | undefined;
  const lastReads: Promise<Float32Array | Int32Array | Uint32Array>[] = [];
  const logitReads: Promise<Float32Array | Int32Array | Uint32Array>[] = [];
  const reads = await runBatch(gpu, "score", (batch) => {
    const { hidden } = trunkForward(batch, cfg, params, { ids, positions, mask });
    keep(hidden);
    if (opts.hidden) hiddenRead = batch.read(hidden);
    const rows = Math.max(1, Math.min(N, opts.logitRows ?? Math.floor((64 << 20) / (4 * V))));
    for (let r0 = 0; r0 < N; r0 += rows) {
      const R = Math.min(rows, N - r0);
      const logits = new Tensor(gpu, [R, V], "f32", "score.logits");
      const h = hidden.reshape([N, cfg.hiddenSize]);
      // The LM head over a slice of rows: bind the hidden rows [r0, r0 + R) as their own tensor.
      const slice = new Tensor(gpu, [R, cfg.hiddenSize], "f32", "score.hidden_rows");
      batch.copy(h.view(r0 * cfg.hiddenSize, R * cfg.hiddenSize), slice);
      lmHead(batch, logits, slice, params);
      const sub = (t: Tensor) => t.view(r0, R);
      const lp = new Tensor(gpu, [R], "f32", "lp"), ls = new Tensor(gpu, [R], "f32", "ls");
      const en = new Tensor(gpu, [R], "f32", "en"), tg = new Tensor(gpu, [R], "i32", "tg");
      batch.copy(sub(targetsT), tg);
      logprobsForward(batch, { logp: lp, lse: ls, entropy: en }, logits, tg);
      batch.copy(lp, sub(logp));
      batch.copy(ls, sub(lse));
      batch.copy(en, sub(entropy));
      if (opts.lastLogprobs) {
        for (let b = 0; b < B; b++) {
          const row = b * T + starts[b] + seqs[b].length - 1;
          if (row >= r0 && row < r0 + R) lastReads[b] = batch.read(logits.view((row - r0) * V, V));
        }
      }
      if (opts.logits) logitReads.push(batch.read(logits));
      for (const t of [logits, slice, lp, ls, en, tg]) t.release();
    }
    return [batch.read(logp), batch.read(entropy), batch.read(lse)];
  }, { release: temps });
  const [lpAll, enAll, lseAll] = (await Promise.all(reads)) as Float32Array[];
  const first = (b: number) => b * T + starts[b]; // flat row of sequence b's first token
  const result: ScoreResult = {
    tokenLogprobs: seqs.map((s, b) => lpAll.slice(first(b), first(b) + s.length - 1)),
    entropies: seqs.map((s, b) => enAll.slice(first(b), first(b) + s.length - 1)),
  };
  if (opts.lastLogprobs) {
    const rows = (await Promise.all(lastReads)) as Float32Array[];
    result.lastLogprobs = rows.map((row, b) => {
      const l = lseAll[first(b) + seqs[b].length - 1];
      return row.map((x) => x - l);
    });
  }
  if (hiddenRead) {
    const h = (await hiddenRead) as Float32Array;
    const C = cfg.hiddenSize;
    result.hidden = seqs.map((s, b) => h.slice(first(b) * C, (first(b) + s.length) * C));
  }
  if (opts.logits) {
    const all = new Float32Array(N * V);
    let off = 0;
    for (const chunk of (await Promise.all(logitReads)) as Float32Array[]) {
      all.set(chunk, off), off += chunk.length;
    }
    result.logits = seqs.map((s, b) => all.slice(first(b) * V, (first(b) + s.length) * V));
  }
  return result;
}

/**
 * Writes the model as a Hugging Face checkpoint directory (config.json + model.safetensors in f32, plus the
 * tokenizer files of `tokenizerDir`), atomically: a crash leaves the previous checkpoint in place.
 */
export async function saveModel(
  model: Qwen2Model,
  dir: string,
  opts: { tokenizerDir?: string } = {},
): Promise<void> {
  const values = await readParams(model.params);
  await saveCheckpointDir(dir, {
    config: model.config,
    tensors: [...values].map(([name, data]) => ({
      name,
      dtype: "F32" as const,
      shape: [...model.params.byName.get(name)!.shape],
      data,
    })),
    tokenizerFiles: opts.tokenizerDir,
  });
}

/** A model with seeded random weights (HF initialisation: N(0, std²) weights, zero biases, unit norms). */
export function randomModel(gpu: Gpu, config: Qwen2Config, opts: { seed: number; std?: number }): Qwen2Model {
  return { gpu, config, params: initParams(gpu, config, opts), dir: null };
}
