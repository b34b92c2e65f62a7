/**
 * Qwen2 parameters on the GPU, one tensor per Hugging Face weight name, with typed per-layer views.
 *
 * Shapes follow `transformers` (Linear weights are (out, in)):
 * ```
 * model.embed_tokens.weight                     (V, C)
 * model.layers.{l}.input_layernorm.weight       (C)
 * model.layers.{l}.self_attn.q_proj.{weight,bias}   (H·D, C), (H·D)
 * model.layers.{l}.self_attn.k_proj.{weight,bias}   (KVH·D, C), (KVH·D)
 * model.layers.{l}.self_attn.v_proj.{weight,bias}   (KVH·D, C), (KVH·D)
 * model.layers.{l}.self_attn.o_proj.weight      (C, H·D)
 * model.layers.{l}.post_attention_layernorm.weight  (C)
 * model.layers.{l}.mlp.{gate,up}_proj.weight    (I, C)
 * model.layers.{l}.mlp.down_proj.weight         (C, I)
 * model.norm.weight                             (C)
 * lm_head.weight                                (V, C)   Qwen2ForCausalLM only, absent when tie_word_embeddings
 * score.weight                                  (L, C)   classification heads only (L = num_labels)
 * score.bias                                    (L)      Qwen2ForTokenClassification only
 * ```
 * The classification heads follow `transformers`: Qwen2ForTokenClassification's `score` is
 * `nn.Linear(C, L)` (with bias), Qwen2ForSequenceClassification's is `nn.Linear(C, L, bias=False)`; neither has
 * an LM head.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { Batch } from "../gpu/batch.ts";
import { Tensor } from "../gpu/tensor.ts";
import type { SafetensorsCheckpoint } from "./checkpoint.ts";
import type { Qwen2Config } from "./config.ts";

/** Weights of one decoder layer. */
export interface LayerParams {
  inputNorm: Tensor;
  q: Tensor;
  qBias: Tensor;
  k: Tensor;
  kBias: Tensor;
  v: Tensor;
  vBias: Tensor;
  o: Tensor;
  postNorm: Tensor;
  gate: Tensor;
  up: Tensor;
  down: Tensor;
}

/** All weights of a Qwen2 trunk and its head (LM head, or classification `score` head). */
export interface Qwen2Params {
  /** (V, C) token embeddings. */
  embed: Tensor;
  layers: LayerParams[];
  /** (C) final RMSNorm weight. */
  norm: Tensor;
  /**
   * (V, C) LM head; the same tensor as `embed` when tied. Classification models have none: reading it throws an
   * error naming the architecture.
   */
  lmHead: Tensor;
  /** (L, C) classification head `score.weight` (classification architectures only). */
  score?: Tensor;
  /** (L) `score.bias` (Qwen2ForTokenClassification only). */
  scoreBias?: Tensor;
  /** Every distinct tensor by HF name (tied: no `lm_head.weight`). */
  byName: Map<string, Tensor>;
}

const LAYER_FIELDS: [keyof LayerParams, string][] = [
  ["inputNorm", "input_layernorm.weight"],
  ["q", "self_attn.q_proj.weight"],
  ["qBias", "self_attn.q_proj.bias"],
  ["k", "self_attn.k_proj.weight"],
  ["kBias", "self_attn.k_proj.bias"],
  ["v", "self_attn.v_proj.weight"],
  ["vBias", "self_attn.v_proj.bias"],
  ["o", "self_attn.o_proj.weight"],
  ["postNorm", "post_attention_layernorm.weight"],
  ["gate", "mlp.gate_proj.weight"],
  ["up", "mlp.up_proj.weight"],
  ["down", "mlp.down_proj.weight"],
];

/** HF names and shapes of every parameter of `cfg`, in checkpoint order. */
export function paramShapes(cfg: Qwen2Config): [string, number[]][] {
  const { hiddenSize: C, intermediateSize: I, numAttentionHeads: H, numKeyValueHeads: KVH, headDim: D } = cfg;
  const V = cfg.vocabSize;
  const out: [string, number[]][] = [["model.embed_tokens.weight", [V, C]]];
  const shapes: Record<string, number[]> = {
    "input_layernorm.weight": [C],
    "self_attn.q_proj.weight": [H * D, C],
    "self_attn.q_proj.bias": [H * D],
    "self_attn.k_proj.weight": [KVH * D, C],
    "self_attn.k_proj.bias": [KVH * D],
    "self_attn.v_proj.weight": [KVH * D, C],
    "self_attn.v_proj.bias": [KVH * D],
    "self_attn.o_proj.weight": [C, H * D],
    "post_attention_layernorm.weight": [C],
    "mlp.gate_proj.weight": [I, C],
    "mlp.up_proj.weight": [I, C],
    "mlp.down_proj.weight": [C, I],
  };
  for (let l = 0; l < cfg.numHiddenLayers; l++) {
    for (const [, suffix] of LAYER_FIELDS) out.push([`model.layers.${l}.${suffix}`, shapes[suffix]]);
  }
  out.push(["model.norm.weight", [C]]);
  if (cfg.architecture === "Qwen2ForCausalLM") {
    if (!cfg.tieWordEmbeddings) out.push(["lm_head.weight", [V, C]]);
  } else {
    out.push(["score.weight", [cfg.numLabels, C]]);
    if (cfg.architecture === "Qwen2ForTokenClassification") out.push(["score.bias", [cfg.numLabels]]);
  }
  return out;
}

/**
 * Typed views over tensors by HF name (`byName` must hold every name of `paramShapes(cfg)`, e.g. after swapping a
 * model's head). Throws naming the first missing tensor.
 */
export function assembleParams(cfg: Qwen2Config, byName: Map<string, Tensor>): Qwen2Params {
  for (const [name] of paramShapes(cfg)) {
    if (!byName.has(name)) {
      throw new Error(`Cannot assemble ${cfg.architecture} parameters: tensor "${name}" is missing`);
    }
  }
  const get = (n: string) => byName.get(n)!;
  const layers = Array.from({ length: cfg.numHiddenLayers }, (_, l) => {
    const p = {} as LayerParams;
    for (const [field, suffix] of LAYER_FIELDS) p[field] = get(`model.layers.${l}.${suffix}`);
    return p;
  });
  const embed = get("model.embed_tokens.weight");
  const base = { embed, layers, norm: get("model.norm.weight"), byName };
  if (cfg.architecture === "Qwen2ForCausalLM") {
    return { ...base, lmHead: cfg.tieWordEmbeddings ? embed : get("lm_head.weight") };
  }
  const out = { ...base, score: get("score.weight"), scoreBias: byName.get("score.bias") } as Qwen2Params;
  Object.defineProperty(out, "lmHead", {
    enumerable: false,
    get(): Tensor {
      throw new Error(`A ${cfg.architecture} model has no LM head (it scores with "score.weight")`);
    },
  });
  return out;
}

/** Rows uploaded per read when streaming a large tensor (bounds host memory to one slice). */
const SLICE_BYTES = 64 << 20;

/**
 * Streams every parameter of `cfg` from a checkpoint to the GPU as f32 (F16/BF16 are converted), one tensor — and
 * for large tensors one slice of rows — at a time, so the file is never held in memory. Errors name the checkpoint
 * and tensor (missing, wrong shape).
 */
export async function loadParams(
  gpu: Gpu,
  weights: SafetensorsCheckpoint,
  cfg: Qwen2Config,
): Promise<Qwen2Params> {
  const byName = new Map<string, Tensor>();
  try {
    for (const [name, shape] of paramShapes(cfg)) {
      if (!(await weights.has(name))) {
        throw new Error(`Cannot load checkpoint "${weights.source}": tensor "${name}" is missing`);
      }
      const info = await weights.info(name);
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
        throw new Error(
          `Cannot load checkpoint "${weights.source}": tensor "${name}" has shape [${info.shape}], expected [${shape}]`,
        );
      }
      const t = new Tensor(gpu, shape, "f32", name);
      byName.set(name, t);
      const rowElems = shape.length > 1 ? shape.slice(1).reduce((a, b) => a * b, 1) : shape[0];
      const rows = shape.length > 1 ? shape[0] : 1;
      const perSlice = Math.max(1, Math.floor(SLICE_BYTES / (rowElems * 4)));
      for (let r = 0; r < rows; r += perSlice) {
        const count = Math.min(perSlice, rows - r);
        const data = shape.length > 1
          ? await weights.readTensorF32(name, { rowStart: r, rowCount: count })
          : await weights.readTensorF32(name);
        gpu.device.queue.writeBuffer(t.buffer, r * rowElems * 4, data as BufferSource);
      }
    }
  } catch (e) {
    for (const t of byName.values()) t.release();
    throw e;
  }
  return assembleParams(cfg, byName);
}

/**
 * Random initialisation (seeded): weights ~ N(0, std²) (HF `initializer_range`, default 0.02), biases 0,
 * norm weights 1.
 */
export function initParams(gpu: Gpu, cfg: Qwen2Config, opts: { seed: number; std?: number }): Qwen2Params {
  const std = opts.std ?? 0.02;
  let s = opts.seed >>> 0;
  const uniform = () => {
    // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const byName = new Map<string, Tensor>();
  for (const [name, shape] of paramShapes(cfg)) {
    const t = new Tensor(gpu, shape, "f32", name);
    const n = t.size;
    const data = new Float32Array(n);
    if (name.endsWith("norm.weight")) data.fill(1);
    else if (!name.endsWith(".bias")) {
      for (let i = 0; i < n; i += 2) {
        const r = Math.sqrt(-2 * Math.log(uniform())), a = 2 * Math.PI * uniform();
        data[i] = std * r * Math.cos(a);
        if (i + 1 < n) data[i + 1] = std * r * Math.sin(a);
      }
    }
    gpu.device.queue.writeBuffer(t.buffer, 0, data as BufferSource);
    byName.set(name, t);
  }
  return assembleParams(cfg, byName);
}

/** Reads every parameter back to the host in one readback, e.g. to save a checkpoint. */
export async function readParams(params: Qwen2Params): Promise<Map<string, Float32Array>> {
  const entries = [...params.byName];
  if (entries.length === 0) return new Map();
  const batch = new Batch(entries[0][1].gpu, "params.read");
  const reads = entries.map(([, t]) => batch.read(t));
  await batch.submit();
  const values = await Promise.all(reads);
  return new Map(entries.map(([name], i) => [name, values[i] as Float32Array]));
}

/** Releases every parameter tensor. */
export function releaseParams(params: Qwen2Params): void {
  for (const t of params.byName.values()) t.release();
}
