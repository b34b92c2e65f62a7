/**
 * Qwen2 model configuration: parse and validate a Hugging Face `config.json` (`model_type: "qwen2"`) into a
 * typed camelCase {@link Qwen2Config}, and write it back in the HF format so `transformers` can load our
 * checkpoints. Anything our kernels do not implement (sliding window, rope scaling, non-SiLU activations,
 * dropout, …) is rejected with an error naming the file, the field, what was expected and what was found.
 *
 * @module
 */

import { joinPath } from "../util/atomic.ts";

/** Model heads we support on top of the Qwen2 decoder. */
export type Qwen2Architecture =
  | "Qwen2ForCausalLM"
  | "Qwen2ForTokenClassification"
  | "Qwen2ForSequenceClassification";

/** Supported values of `architectures[0]`. */
export const QWEN2_ARCHITECTURES: readonly Qwen2Architecture[] = [
  "Qwen2ForCausalLM",
  "Qwen2ForTokenClassification",
  "Qwen2ForSequenceClassification",
];

/** A validated Qwen2 configuration. Invariants: `numAttentionHeads · headDim = hiddenSize`, headDim even. */
export interface Qwen2Config {
  /** Head on top of the decoder (`architectures[0]`). */
  architecture: Qwen2Architecture;
  /** Model width C. */
  hiddenSize: number;
  /** SwiGLU inner width. */
  intermediateSize: number;
  /** Number of decoder layers L. */
  numHiddenLayers: number;
  /** Query heads NH. */
  numAttentionHeads: number;
  /** Key/value heads (grouped-query attention); divides NH. */
  numKeyValueHeads: number;
  /** Per-head dim hs = C / NH (even, for RoPE pairs). */
  headDim: number;
  /** RoPE base θ: frequency of pair i is θ^(−2i/hs). */
  ropeTheta: number;
  /** RMSNorm epsilon: y = x / sqrt(mean(x²) + eps) · w. */
  rmsNormEps: number;
  /** Whether lm_head shares the embedding matrix. */
  tieWordEmbeddings: boolean;
  /** Vocabulary size V (embedding rows, may exceed the tokenizer's vocabulary). */
  vocabSize: number;
  /** Maximum sequence length the model was trained for. */
  maxPositionEmbeddings: number;
  /** `bos_token_id`, or null. */
  bosTokenId: number | null;
  /** `eos_token_id` as a list (HF allows an int or a list). */
  eosTokenIds: number[];
  /** `pad_token_id`, or null (sequence classification uses it to find the last token). */
  padTokenId: number | null;
  /** Classification labels (`len(id2label)`, else `num_labels`, else 2 as in HF). */
  numLabels: number;
  /** `id2label` mapping, or null when absent. */
  id2label: Record<string, string> | null;
  /** `torch_dtype`/`dtype` string from the file (e.g. "bfloat16"), or null. */
  torchDtype: string | null;
  /** The original JSON object (unknown fields are preserved by {@link configToJson}). */
  raw: Record<string, unknown>;
}

type Json = Record<string, unknown>;

/** Error helper: `Cannot load config "<source>": <msg>`. */
function fail(source: string, msg: string): never {
  throw new Error(`Cannot load config "${source}": ${msg}`);
}

const show = (v: unknown): string => (v === undefined ? "missing" : JSON.stringify(v));

function posInt(j: Json, key: string, source: string, dflt?: number): number {
  const v = j[key] ?? dflt;
  if (v === undefined) fail(source, `required field "${key}" is missing`);
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    fail(source, `field "${key}" must be a positive integer, got ${show(v)}`);
  }
  return v;
}

function posNum(j: Json, key: string, source: string, dflt: number): number {
  const v = j[key] ?? dflt;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    fail(source, `field "${key}" must be a positive number, got ${show(v)}`);
  }
  return v;
}

function optId(j: Json, key: string, source: string): number | null {
  const v = j[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    fail(source, `field "${key}" must be a non-negative integer or null, got ${show(v)}`);
  }
  return v;
}

/** `rope_theta` from the top level, or from transformers-v5 style `rope_parameters` (default rope only). */
function ropeTheta(j: Json, source: string): number {
  const rp = j.rope_parameters;
  if (rp !== undefined && rp !== null) {
    if (typeof rp !== "object") fail(source, `field "rope_parameters" must be an object, got ${show(rp)}`);
    const type = (rp as Json).rope_type ?? (rp as Json).type ?? "default";
    if (type !== "default") {
      fail(
        source,
        `field "rope_parameters.rope_type" must be "default" (no rope scaling), got ${show(type)}`,
      );
    }
    if ((rp as Json).rope_theta !== undefined) return posNum(rp as Json, "rope_theta", source, 10000);
  }
  return posNum(j, "rope_theta", source, 10000);
}

/**
 * Validate a parsed `config.json` object and convert it to a {@link Qwen2Config}. `source` names the file in
 * error messages. Defaults follow `transformers.Qwen2Config` for optional fields; shape fields are required.
 */
export function parseQwen2Config(json: unknown, source: string): Qwen2Config {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    fail(source, `expected a JSON object, got ${Array.isArray(json) ? "an array" : show(json)}`);
  }
  const j = json as Json;
  if (j.model_type !== "qwen2") fail(source, `field "model_type" must be "qwen2", got ${show(j.model_type)}`);
  const archs = j.architectures ?? ["Qwen2ForCausalLM"];
  if (!Array.isArray(archs) || archs.length !== 1 || !QWEN2_ARCHITECTURES.includes(archs[0])) {
    fail(
      source,
      `field "architectures" must be one of ${QWEN2_ARCHITECTURES.join(", ")}, got ${show(archs)}`,
    );
  }
  const act = j.hidden_act ?? "silu";
  if (act !== "silu") fail(source, `field "hidden_act" must be "silu", got ${show(act)}`);
  if (j.use_sliding_window !== undefined && j.use_sliding_window !== false) {
    fail(
      source,
      `field "use_sliding_window" must be false (sliding-window attention is not supported), got ${
        show(j.use_sliding_window)
      }`,
    );
  }
  if (j.rope_scaling !== undefined && j.rope_scaling !== null) {
    fail(
      source,
      `field "rope_scaling" must be null (rope scaling is not supported), got ${show(j.rope_scaling)}`,
    );
  }
  const drop = j.attention_dropout ?? 0;
  if (drop !== 0) fail(source, `field "attention_dropout" must be 0, got ${show(drop)}`);
  if (j.layer_types !== undefined) {
    const lt = j.layer_types;
    if (!Array.isArray(lt) || lt.some((t) => t !== "full_attention")) {
      fail(source, `field "layer_types" must list only "full_attention", got ${show(lt)}`);
    }
  }
  const hiddenSize = posInt(j, "hidden_size", source);
  const numAttentionHeads = posInt(j, "num_attention_heads", source);
  const numKeyValueHeads = posInt(j, "num_key_value_heads", source, numAttentionHeads);
  if (hiddenSize % numAttentionHeads !== 0) {
    fail(
      source,
      `field "hidden_size" (${hiddenSize}) must be divisible by "num_attention_heads" (${numAttentionHeads})`,
    );
  }
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    fail(
      source,
      `field "num_attention_heads" (${numAttentionHeads}) must be divisible by "num_key_value_heads" (${numKeyValueHeads})`,
    );
  }
  const headDim = hiddenSize / numAttentionHeads;
  if (j.head_dim !== undefined && j.head_dim !== null && j.head_dim !== headDim) {
    fail(
      source,
      `field "head_dim" must equal hidden_size / num_attention_heads = ${headDim}, got ${show(j.head_dim)}`,
    );
  }
  if (headDim % 2 !== 0) {
    fail(source, `head dim hidden_size / num_attention_heads must be even for RoPE, got ${headDim}`);
  }
  const tie = j.tie_word_embeddings ?? false;
  if (typeof tie !== "boolean") {
    fail(source, `field "tie_word_embeddings" must be a boolean, got ${show(tie)}`);
  }
  const eos = j.eos_token_id;
  const eosTokenIds = Array.isArray(eos) ? eos : eos === undefined || eos === null ? [] : [eos];
  if (eosTokenIds.some((e) => typeof e !== "number" || !Number.isInteger(e) || e < 0)) {
    fail(source, `field "eos_token_id" must be a non-negative integer or a list of them, got ${show(eos)}`);
  }
  let id2label: Record<string, string> | null = null;
  if (j.id2label !== undefined && j.id2label !== null) {
    if (typeof j.id2label !== "object" || Array.isArray(j.id2label)) {
      fail(source, `field "id2label" must be an object, got ${show(j.id2label)}`);
    }
    id2label = j.id2label as Record<string, string>;
  }
  const numLabels = id2label ? Object.keys(id2label).length : posInt(j, "num_labels", source, 2);
  const dtype = j.torch_dtype ?? j.dtype ?? null;
  if (dtype !== null && typeof dtype !== "string") {
    fail(source, `field "torch_dtype" must be a string, got ${show(dtype)}`);
  }
  return {
    architecture: archs[0] as Qwen2Architecture,
    hiddenSize,
    intermediateSize: posInt(j, "intermediate_size", source),
    numHiddenLayers: posInt(j, "num_hidden_layers", source),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    ropeTheta: ropeTheta(j, source),
    rmsNormEps: posNum(j, "rms_norm_eps", source, 1e-6),
    tieWordEmbeddings: tie,
    vocabSize: posInt(j, "vocab_size", source),
    maxPositionEmbeddings: posInt(j, "max_position_embeddings", source, 32768),
    bosTokenId: optId(j, "bos_token_id", source),
    eosTokenIds: eosTokenIds as number[],
    padTokenId: optId(j, "pad_token_id", source),
    numLabels,
    id2label,
    torchDtype: dtype as string | null,
    raw: { ...j },
  };
}

/** Read and validate `<dir>/config.json` (or the file itself when `path` ends in `.json`). */
export async function loadConfig(path: string): Promise<Qwen2Config> {
  const file = path.endsWith(".json") ? path : joinPath(path, "config.json");
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) fail(file, "file not found");
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(file, `invalid JSON (${(e as Error).message})`);
  }
  return parseQwen2Config(json, file);
}

/** Options of {@link qwen2Config}: the shape fields plus any optional overrides. */
export type Qwen2ConfigInit =
  & Pick<
    Qwen2Config,
    "hiddenSize" | "intermediateSize" | "numHiddenLayers" | "numAttentionHeads" | "vocabSize"
  >
  & Partial<Omit<Qwen2Config, "headDim" | "raw">>;

/**
 * Build a validated config from camelCase fields (tiny test models, new heads), with the same defaults as
 * `transformers.Qwen2Config`; equivalent to `parseQwen2Config(configToJson(...))`.
 */
export function qwen2Config(init: Qwen2ConfigInit): Qwen2Config {
  const base: Qwen2Config = {
    architecture: "Qwen2ForCausalLM",
    numKeyValueHeads: init.numAttentionHeads,
    headDim: 0,
    ropeTheta: 10000,
    rmsNormEps: 1e-6,
    tieWordEmbeddings: false,
    maxPositionEmbeddings: 32768,
    bosTokenId: null,
    eosTokenIds: [],
    padTokenId: null,
    numLabels: 2,
    id2label: null,
    torchDtype: "float32",
    raw: {},
    ...init,
  };
  return parseQwen2Config(configToJson(base), "<qwen2Config>");
}

/**
 * Serialise to a HF-compatible `config.json` object (snake_case, `model_type: "qwen2"`). Unknown fields of
 * `cfg.raw` are kept; `torchDtype` overrides the recorded `torch_dtype` (e.g. "float32" for F32 weights).
 */
export function configToJson(cfg: Qwen2Config, opts: { torchDtype?: string } = {}): Record<string, unknown> {
  const out: Json = { ...cfg.raw };
  delete out.dtype;
  delete out.rope_parameters;
  delete out.head_dim;
  Object.assign(out, {
    architectures: [cfg.architecture],
    model_type: "qwen2",
    hidden_act: "silu",
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numHiddenLayers,
    num_attention_heads: cfg.numAttentionHeads,
    num_key_value_heads: cfg.numKeyValueHeads,
    rope_theta: cfg.ropeTheta,
    rope_scaling: null,
    rms_norm_eps: cfg.rmsNormEps,
    tie_word_embeddings: cfg.tieWordEmbeddings,
    vocab_size: cfg.vocabSize,
    max_position_embeddings: cfg.maxPositionEmbeddings,
    use_sliding_window: false,
    attention_dropout: 0.0,
    bos_token_id: cfg.bosTokenId,
    eos_token_id: cfg.eosTokenIds.length === 1
      ? cfg.eosTokenIds[0]
      : cfg.eosTokenIds.length
      ? cfg.eosTokenIds
      : null,
  });
  if (cfg.padTokenId !== null) out.pad_token_id = cfg.padTokenId;
  const dtype = opts.torchDtype ?? cfg.torchDtype;
  if (dtype !== null) out.torch_dtype = dtype;
  if (cfg.architecture !== "Qwen2ForCausalLM" || cfg.id2label !== null || cfg.numLabels !== 2) {
    const id2label = cfg.id2label ?? Object.fromEntries(
      Array.from({ length: cfg.numLabels }, (_, i) => [String(i), `LABEL_${i}`]),
    );
    out.id2label = id2label;
    out.label2id = Object.fromEntries(Object.entries(id2label).map(([k, v]) => [v, Number(k)]));
    delete out.num_labels;
  }
  return out;
}
