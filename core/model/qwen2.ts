/**
 * The Qwen2 decoder on WebGPU: forward pass for training and scoring (every position, optional saved activations
 * for the backward pass) and for KV-cache decoding.
 *
 * ```
 * ids (B,T) → embed → x (N,C)                                  N = B·T
 * per layer l:
 *   h = rmsnorm(x, w_in)                       (N,C), rstd (N)
 *   q = h·Wqᵀ + bq (N,H·D) · k = h·Wkᵀ + bk, v = h·Wvᵀ + bv (N,KVH·D)
 *   q, k = rope(q, k; positions)
 *   a = attention(q, k, v; key mask)           (N,H·D), lse (B,T,H)
 *   x = x + a·Woᵀ
 *   h2 = rmsnorm(x, w_post)
 *   g = h2·Wgᵀ, u = h2·Wuᵀ (N,I);  s = silu(g) ⊙ u
 *   x = x + s·Wdᵀ
 * hidden = rmsnorm(x, w_norm)                   (N,C)
 * logits = hidden·Wlmᵀ                          (N,V)
 * ```
 *
 * @module
 */
import type { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../gpu/tensor.ts";
import { add } from "../ops/elementwise.ts";
import { embedding } from "../ops/embedding.ts";
import { attentionForward } from "./attention.ts";
import type { Qwen2Config } from "./config.ts";
import { type KVCache, kvMark, kvWrite } from "./kv_cache.ts";
import { linear } from "./linear.ts";
import type { LayerParams, Qwen2Params } from "./params.ts";
import { rmsnormForward } from "./rmsnorm.ts";
import { ropeForward } from "./rope.ts";
import { swigluForward } from "./swiglu.ts";

/** Inputs of one forward pass. */
export interface ForwardInputs {
  /** (B, T) i32 token ids (pads may hold any valid id). */
  ids: Tensor;
  /** (B, T) i32 positions: cumsum(mask) − 1 for real tokens (left and right padding give the same result). */
  positions: Tensor;
  /** (B, T) i32 attention mask, 1 = real token; omitted = all real. */
  mask?: Tensor;
}

/** Where a forward pass reads and writes the KV cache. */
export interface CacheStep {
  cache: KVCache;
  /** First cache column written by this pass (0 for the prompt, P + s for decoding step s). */
  col0: number;
}

/** Activations of one layer kept for the backward pass. */
export interface LayerActivations {
  /** (N, C) residual stream entering the layer. */
  x: Tensor;
  h: Tensor;
  rstd: Tensor;
  /** (B, T, H, D) roped queries; k, v: (B, T, KVH, D) roped keys and values. */
  q: Tensor;
  k: Tensor;
  v: Tensor;
  /** (B, T, H, D) attention output and (B, T, H) its logsumexp. */
  att: Tensor;
  lse: Tensor;
  /** (N, C) residual after attention. */
  x2: Tensor;
  h2: Tensor;
  rstd2: Tensor;
  /** (N, I) gate, up and silu(gate)⊙up. */
  gate: Tensor;
  up: Tensor;
  act: Tensor;
}

/** Result of {@linkcode trunkForward}. */
export interface TrunkOutput {
  /** (B·T, C) final hidden states (after the last RMSNorm). */
  hidden: Tensor;
  /** Saved activations (only with `save`); release with {@linkcode releaseActivations}. */
  saved?: { layers: LayerActivations[]; xFinal: Tensor; rstdFinal: Tensor };
}

/** Runs the decoder trunk over `inputs`; the caller releases `hidden` (and `saved`). */
export function trunkForward(
  batch: Batch,
  cfg: Qwen2Config,
  params: Qwen2Params,
  inputs: ForwardInputs,
  opts: { save?: boolean; cache?: CacheStep } = {},
): TrunkOutput {
  const gpu = batch.gpu;
  const [B, T] = inputs.ids.shape;
  const N = B * T;
  const { hiddenSize: C, intermediateSize: I, numAttentionHeads: H, numKeyValueHeads: KVH, headDim: D } = cfg;
  const eps = cfg.rmsNormEps, theta = cfg.ropeTheta;
  const t = (shape: number[], label: string) => new Tensor(gpu, shape, "f32", label);

  let x = t([N, C], "x.embed");
  embedding(batch, x, params.embed, inputs.ids.reshape([N]));
  const saved: LayerActivations[] = [];
  params.layers.forEach((p: LayerParams, l) => {
    const name = (s: string) => `l${l}.${s}`;
    const h = t([N, C], name("h")), rstd = t([N], name("rstd"));
    rmsnormForward(batch, h, rstd, x, p.inputNorm, { eps });
    const qRaw = t([N, H * D], name("q_raw")), kRaw = t([N, KVH * D], name("k_raw"));
    const v = t([B, T, KVH, D], name("v"));
    linear(batch, qRaw, h, p.q, p.qBias);
    linear(batch, kRaw, h, p.k, p.kBias);
    linear(batch, v.reshape([N, KVH * D]), h, p.v, p.vBias);
    const q = t([B, T, H, D], name("q")), k = t([B, T, KVH, D], name("k"));
    ropeForward(batch, q, qRaw.reshape([B, T, H, D]), inputs.positions, { theta });
    ropeForward(batch, k, kRaw.reshape([B, T, KVH, D]), inputs.positions, { theta });
    qRaw.release();
    kRaw.release();
    const att = t([B, T, H, D], name("att")), lse = t([B, T, H], name("lse"));
    if (opts.cache && opts.cache.col0 > 0) {
      // Decoding: append this step's keys, then attend over the whole cache (unfilled slots are masked).
      const { cache, col0 } = opts.cache;
      kvWrite(batch, cache.keys[l], k, col0);
      kvWrite(batch, cache.values[l], v, col0);
      if (l === 0) { for (let c = col0; c < col0 + T; c++) kvMark(batch, cache.mask, c); }
      if (T !== 1) throw new Error(`Decoding steps take one token per row, got ${T}`);
      attentionForward(batch, att, lse, q, cache.keys[l], cache.values[l], { keyMask: cache.mask });
    } else {
      attentionForward(batch, att, lse, q, k, v, { keyMask: inputs.mask });
      if (opts.cache) {
        kvWrite(batch, opts.cache.cache.keys[l], k, 0);
        kvWrite(batch, opts.cache.cache.values[l], v, 0);
      }
    }
    const o = t([N, C], name("o"));
    linear(batch, o, att.reshape([N, H * D]), p.o);
    const x2 = t([N, C], name("x2"));
    add(batch, x2, x, o);
    o.release();
    const h2 = t([N, C], name("h2")), rstd2 = t([N], name("rstd2"));
    rmsnormForward(batch, h2, rstd2, x2, p.postNorm, { eps });
    const gate = t([N, I], name("gate")), up = t([N, I], name("up")), act = t([N, I], name("act"));
    linear(batch, gate, h2, p.gate);
    linear(batch, up, h2, p.up);
    swigluForward(batch, act, gate, up);
    const mlp = t([N, C], name("mlp"));
    linear(batch, mlp, act, p.down);
    const x3 = t([N, C], name("x3"));
    add(batch, x3, x2, mlp);
    mlp.release();
    if (opts.save) {
      saved.push({ x, h, rstd, q, k, v, att, lse, x2, h2, rstd2, gate, up, act });
    } else {
      for (const a of [x, h, rstd, q, k, v, att, lse, x2, h2, rstd2, gate, up, act]) a.release();
    }
    x = x3;
  });
  const hidden = t([N, C], "hidden"), rstdFinal = t([N], "rstd.final");
  rmsnormForward(batch, hidden, rstdFinal, x, params.norm, { eps });
  if (!opts.save) {
    x.release();
    rstdFinal.release();
    return { hidden };
  }
  return { hidden, saved: { layers: saved, xFinal: x, rstdFinal } };
}

/** Releases the activations saved by {@linkcode trunkForward}. */
export function releaseActivations(saved: NonNullable<TrunkOutput["saved"]>): void {
  for (const a of saved.layers) for (const v of Object.values(a)) (v as Tensor).release();
  saved.xFinal.release();
  saved.rstdFinal.release();
}

/** logits (R, V) = hidden (R, C) · Wlmᵀ. */
export function lmHead(batch: Batch, logits: Tensor, hidden: Tensor, params: Qwen2Params): void {
  linear(batch, logits, hidden, params.lmHead);
}

/** Allocates a (rows, V) logits tensor for the model's vocabulary. */
export function logitsTensor(gpu: Gpu, cfg: Qwen2Config, rows: number): Tensor {
  return new Tensor(gpu, [rows, cfg.vocabSize], "f32", "logits");
}
