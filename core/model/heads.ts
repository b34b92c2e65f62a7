/**
 * Classification heads on the Qwen2 trunk (Hugging Face `Qwen2ForTokenClassification` /
 * `Qwen2ForSequenceClassification` layout), forward and backward side by side, read at chosen token positions
 * only — the reward models' heads:
 *
 * ```
 * hidden = trunk(ids)                      (N, C)        N = B·T, right-padded batch
 * g      = hidden[rows]                    (R, C)        rows: flat indices b·T + t of the positions read
 * logits = g · Wᵀ + b                      (R, L)        W = score.weight (L, C), b = score.bias (token cls.)
 * backward (dlogits (R, L) given):
 *   dg = dlogits · W  (R, C);  dW += dlogitsᵀ · g;  db += Σ_r dlogits[r]
 *   dhidden = scatter(dg → rows)           (N, C)        zero at the rows not read
 * ```
 * A PRM reads every step's end token, an ORM the last token of each sequence; both read R ≪ N rows, so the head
 * costs R·C·L instead of N·C·L. {@linkcode headForward} runs the trunk and the head in one command batch and
 * reads back only the R·L logits; with `save` it keeps the activations for {@linkcode headBackward}, which
 * backpropagates host-computed logit gradients through the head and the whole trunk.
 *
 * @module
 */
import { Batch, runBatch } from "../gpu/batch.ts";
import { upload } from "../gpu/io.ts";
import { Tensor } from "../gpu/tensor.ts";
import { embedding, embeddingBackward } from "../ops/embedding.ts";
import { linear, linearBackward } from "./linear.ts";
import { packSequences, type Qwen2Model, uploadPacked } from "./model.ts";
import { assembleParams, type Qwen2Params } from "./params.ts";
import { type ForwardInputs, releaseActivations, trunkForward, type TrunkOutput } from "./qwen2.ts";
import { type Grads, trunkBackward } from "./qwen2_backward.ts";

/** The score head's weight, or an error naming the architecture when the model has none. */
function scoreWeight(params: Qwen2Params, what: string): Tensor {
  if (!params.score) throw new Error(`${what}: the model has no classification head ("score.weight")`);
  return params.score;
}

/**
 * Head forward: `gathered = hidden[rows]` (R, C) and `logits = gathered · Wᵀ + b` (R, L). `rows` is an (R) i32
 * tensor of flat row indices into `hidden` (N, C).
 */
export function scoreHeadForward(
  batch: Batch,
  out: { logits: Tensor; gathered: Tensor },
  hidden: Tensor,
  rows: Tensor,
  params: Qwen2Params,
): void {
  const w = scoreWeight(params, "scoreHeadForward");
  embedding(batch, out.gathered, hidden, rows); // gather: out[r] = hidden[rows[r]]
  linear(batch, out.logits, out.gathered, w, params.scoreBias);
}

/**
 * Head backward: `dgathered = dlogits · W`, `dW += dlogitsᵀ · gathered`, `db += Σ_r dlogits[r]` (accumulated into
 * `grads`), then `dhidden` (N, C) is written: the rows of `dgathered` scattered to `rows`, zero elsewhere.
 */
export function scoreHeadBackward(
  batch: Batch,
  grads: { dhidden: Tensor; dw: Tensor; db?: Tensor },
  dlogits: Tensor,
  gathered: Tensor,
  rows: Tensor,
  params: Qwen2Params,
): void {
  const w = scoreWeight(params, "scoreHeadBackward");
  const dg = new Tensor(batch.gpu, gathered.shape, "f32", "head.dgathered");
  linearBackward(
    batch,
    { dx: dg, dw: grads.dw, db: params.scoreBias ? grads.db : undefined },
    dlogits,
    gathered,
    w,
  );
  batch.clear(grads.dhidden);
  embeddingBackward(batch, grads.dhidden, dg, rows); // scatter-add: dhidden[rows[r]] += dg[r]
  dg.release();
}

/** What {@linkcode headForward} keeps for the backward pass (with `save`). */
export interface HeadState {
  /** The model run. */
  model: Qwen2Model;
  /** (B, T) ids, positions and mask of the packed batch. */
  inputs: ForwardInputs;
  /** (R) flat rows read. */
  rows: Tensor;
  /** (R, C) hidden states at those rows. */
  gathered: Tensor;
  /** Trunk activations. */
  saved: NonNullable<TrunkOutput["saved"]>;
  /** Tensors released with the state. */
  temps: Tensor[];
}

/** Result of {@linkcode headForward}. */
export interface HeadForwardResult {
  /** Logits per sequence: `reads[b].length × L` floats, row-major (position, label). */
  logits: Float32Array[];
  /** Saved state for {@linkcode headBackward} (with `save`); release it with {@linkcode releaseHeadState}. */
  state?: HeadState;
}

/** Checks token ids, lengths and read positions; returns the total number of rows read. */
function checkInputs(model: Qwen2Model, seqs: readonly number[][], reads: readonly number[][]): number {
  const cfg = model.config;
  if (seqs.length === 0) throw new Error("Cannot run the score head: the batch is empty");
  if (reads.length !== seqs.length) {
    throw new Error(`Cannot run the score head: ${reads.length} read lists for ${seqs.length} sequences`);
  }
  let R = 0;
  seqs.forEach((s, b) => {
    if (s.length === 0) throw new Error(`Sequence ${b} is empty`);
    if (s.length > cfg.maxPositionEmbeddings) {
      throw new Error(
        `Sequence ${b} has ${s.length} tokens, more than max_position_embeddings ${cfg.maxPositionEmbeddings}`,
      );
    }
    for (const id of s) {
      if (!Number.isInteger(id) || id < 0 || id >= cfg.vocabSize) {
        throw new Error(`Sequence ${b} has token id "${id}" outside the vocabulary [0, ${cfg.vocabSize})`);
      }
    }
    for (const t of reads[b]) {
      if (!Number.isInteger(t) || t < 0 || t >= s.length) {
        throw new Error(`Sequence ${b}: read position "${t}" is outside its ${s.length} tokens`);
      }
    }
    R += reads[b].length;
  });
  if (R === 0) throw new Error("Cannot run the score head: no positions to read");
  return R;
}

/**
 * Runs the trunk over `seqs` (right-padded into one batch) and the score head at the positions `reads[b]` of each
 * sequence, in one command batch with one readback of the R·L logits. With `save`, the activations are kept for
 * {@linkcode headBackward}.
 */
export async function headForward(
  model: Qwen2Model,
  seqs: readonly number[][],
  opts: { reads: readonly number[][]; save?: boolean },
): Promise<HeadForwardResult> {
  const { gpu, config: cfg, params } = model;
  const R = checkInputs(model, seqs, opts.reads);
  const L = scoreWeight(params, "headForward").shape[0];
  const pk = packSequences(seqs.map((s) => [...s]));
  const rowsHost = new Int32Array(R);
  let r = 0;
  opts.reads.forEach((ts, b) => ts.forEach((t) => (rowsHost[r++] = b * pk.T + t)));
  const temps: Tensor[] = [];
  const keep = (t: Tensor) => (temps.push(t), t);
  const inputs = uploadPacked(gpu, pk, "head");
  temps.push(inputs.ids, inputs.positions, inputs.mask);
  const rows = keep(upload(gpu, rowsHost, { label: "head.rows" }));
  const gathered = keep(new Tensor(gpu, [R, cfg.hiddenSize], "f32", "head.gathered"));
  const logits = keep(new Tensor(gpu, [R, L], "f32", "head.logits"));
  const batch = new Batch(gpu, "head.forward");
  let saved: TrunkOutput["saved"];
  let read: Promise<Float32Array | Int32Array | Uint32Array>;
  try {
    const out = trunkForward(batch, cfg, params, inputs, { save: opts.save });
    keep(out.hidden);
    saved = out.saved;
    scoreHeadForward(batch, { logits, gathered }, out.hidden, rows, params);
    read = batch.read(logits);
  } catch (e) {
    batch.abandon();
    for (const t of temps) t.release();
    if (saved) releaseActivations(saved);
    throw e;
  }
  try {
    await batch.submit();
  } catch (e) {
    for (const t of temps) t.release();
    if (saved) releaseActivations(saved);
    throw e;
  }
  const all = (await read) as Float32Array;
  const result: Float32Array[] = [];
  let off = 0;
  for (const ts of opts.reads) {
    result.push(all.slice(off * L, (off + ts.length) * L));
    off += ts.length;
  }
  if (!opts.save) {
    for (const t of temps) t.release();
    return { logits: result };
  }
  return { logits: result, state: { model, inputs, rows, gathered, saved: saved!, temps } };
}

/**
 * Backward of {@linkcode headForward} (run with `save`) for the logit gradients `dlogits` (R·L floats, in the
 * order of the returned logits): accumulates the gradients of the head and every trunk parameter into `grads`
 * (zero them at the start of a step), then releases the state.
 */
export async function headBackward(state: HeadState, grads: Grads, dlogits: Float32Array): Promise<void> {
  const { model, inputs, rows, gathered, saved } = state;
  const { gpu, config: cfg, params } = model;
  const [R] = gathered.shape, L = scoreWeight(params, "headBackward").shape[0];
  if (dlogits.length !== R * L) {
    releaseHeadState(state);
    throw new Error(
      `headBackward: dlogits has ${dlogits.length} values, expected ${R * L} (R = ${R}, L = ${L})`,
    );
  }
  const dl = upload(gpu, dlogits, { shape: [R, L], label: "head.dlogits" });
  const [B, T] = inputs.ids.shape;
  const dhidden = new Tensor(gpu, [B * T, cfg.hiddenSize], "f32", "head.dhidden");
  try {
    await runBatch(gpu, "head.backward", (batch) => {
      scoreHeadBackward(
        batch,
        { dhidden, dw: grads.get("score.weight")!, db: grads.get("score.bias") },
        dl,
        gathered,
        rows,
        params,
      );
      trunkBackward(batch, grads, dhidden, cfg, params, inputs, saved); // consumes dhidden
    }, { release: [dl] });
  } finally {
    releaseHeadState(state);
  }
}

/** Releases a saved {@linkcode HeadState} (after {@linkcode headBackward} this is done already). */
export function releaseHeadState(state: HeadState): void {
  if (state.temps.length === 0) return;
  for (const t of state.temps) t.release();
  state.temps.length = 0;
  releaseActivations(state.saved);
}

/** Options of {@linkcode withScoreHead}. */
export interface ScoreHeadInit {
  /** Labels L of the new head (default 1: one logit, a sigmoid probability). */
  numLabels?: number;
  /** Seed of the N(0, std²) head weights (default 0). */
  seed?: number;
  /** Standard deviation of the head weights; 0 = zeros (default 0.02, HF's `initializer_range`). */
  std?: number;
  /** Extra config.json fields to record (e.g. the PRM's step convention). */
  extraConfig?: Record<string, unknown>;
}

/**
 * The config of `cfg`'s trunk under a classification head: `architectures = [arch]`, `num_labels = L`
 * (id2label `LABEL_i`), every other field kept, `extraConfig` merged into the raw JSON.
 */
export function headConfig(
  cfg: Qwen2Model["config"],
  arch: "Qwen2ForTokenClassification" | "Qwen2ForSequenceClassification",
  opts: { numLabels?: number; extraConfig?: Record<string, unknown> } = {},
): Qwen2Model["config"] {
  const raw: Record<string, unknown> = { ...cfg.raw, ...opts.extraConfig };
  for (const k of ["id2label", "label2id", "num_labels", "problem_type"]) delete raw[k];
  return { ...cfg, architecture: arch, numLabels: opts.numLabels ?? 1, id2label: null, raw };
}

/** Seeded N(0, std²) values (mulberry32 + Box–Muller, as `initParams`). */
export function normal(n: number, seed: number, std: number): Float32Array {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform())), a = 2 * Math.PI * uniform();
    out[i] = std * r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = std * r * Math.sin(a);
  }
  return out;
}

/**
 * Turns a loaded model into a reward model with a fresh classification head, in place of its own head: the trunk
 * tensors are kept (moved, not copied — `model` must not be used afterwards), `lm_head.weight` or an old
 * `score.*` is released, and `score.weight` (L, C) ~ N(0, std²) (plus a zero `score.bias` for token
 * classification) is added. Use it to start a PRM/ORM from a policy checkpoint (e.g. the SFT model).
 */
export function withScoreHead(
  model: Qwen2Model,
  arch: "Qwen2ForTokenClassification" | "Qwen2ForSequenceClassification",
  opts: ScoreHeadInit = {},
): Qwen2Model {
  const { gpu } = model;
  const config = headConfig(model.config, arch, opts);
  const C = config.hiddenSize, L = config.numLabels;
  const byName = new Map(model.params.byName);
  for (const name of ["lm_head.weight", "score.weight", "score.bias"]) {
    byName.get(name)?.release();
    byName.delete(name);
  }
  const std = opts.std ?? 0.02;
  const w = std > 0 ? normal(L * C, opts.seed ?? 0, std) : new Float32Array(L * C);
  byName.set("score.weight", upload(gpu, w, { shape: [L, C], label: "score.weight" }));
  if (arch === "Qwen2ForTokenClassification") {
    byName.set("score.bias", upload(gpu, new Float32Array(L), { shape: [L], label: "score.bias" }));
  }
  return { gpu, config, params: assembleParams(config, byName), dir: model.dir };
}

/** Default bound on padded tokens (B·T) per forward pass of {@linkcode headLogits}. */
export const HEAD_BATCH_TOKENS = 8192;

/**
 * Score-head logits of many sequences (no gradients): the sequences are sorted by length and packed into forward
 * passes of at most `maxBatchTokens` padded tokens (B·T; a longer sequence runs alone), so memory stays bounded
 * and padding small. Results come back in input order; a sequence's logits do not depend on its batch.
 */
export async function headLogits(
  model: Qwen2Model,
  seqs: readonly number[][],
  opts: { reads: readonly number[][]; maxBatchTokens?: number },
): Promise<Float32Array[]> {
  const budget = opts.maxBatchTokens ?? HEAD_BATCH_TOKENS;
  if (!(Number.isSafeInteger(budget) && budget >= 1)) {
    throw new Error(`Invalid maxBatchTokens "${budget}": expected a positive integer`);
  }
  if (opts.reads.length !== seqs.length) {
    throw new Error(
      `Cannot run the score head: ${opts.reads.length} read lists for ${seqs.length} sequences`,
    );
  }
  const out: Float32Array[] = new Array(seqs.length);
  scoreWeight(model.params, "headLogits");
  // Sequences with nothing to read get no forward pass.
  const order = seqs.map((_, i) => i).filter((i) => opts.reads[i].length > 0);
  for (let i = 0; i < seqs.length; i++) if (opts.reads[i].length === 0) out[i] = new Float32Array(0);
  order.sort((a, b) => seqs[b].length - seqs[a].length || a - b);
  for (let i0 = 0; i0 < order.length;) {
    const T = seqs[order[i0]].length; // longest of the chunk
    const n = Math.max(1, Math.min(order.length - i0, Math.floor(budget / T)));
    const idx = order.slice(i0, i0 + n);
    const { logits } = await headForward(model, idx.map((i) => seqs[i]), {
      reads: idx.map((i) => opts.reads[i]),
    });
    idx.forEach((i, j) => (out[i] = logits[j]));
    i0 += n;
  }
  return out;
}
