/**
 * Backward pass of the Qwen2 trunk (`trunkForward` with `save: true`), layer by layer in reverse, mirroring the
 * forward in `qwen2.ts`:
 *
 * ```
 * hidden = rmsnorm(x_L)                          → dx_L, dw_norm
 * per layer l = L−1 … 0 (dx3 = gradient of the layer's output):
 *   mlp:  dact = dx3·Wd, dWd += dx3ᵀ·act → dgate, dup (SwiGLU) → dh2 = dgate·Wg + dup·Wu, dWg, dWu
 *         dx2 = dx3 + rmsnorm_backward(dh2)      (residual)
 *   attn: datt = dx2·Wo, dWo += dx2ᵀ·att → dq, dk, dv (attention) → un-rotate dq, dk (RoPE)
 *         dh = dq·Wq + dk·Wk + dv·Wv, dWq/dWk/dWv += …ᵀ·h, biases += Σ rows
 *         dx = dx2 + rmsnorm_backward(dh)
 * embedding: dE[ids] += dx_0
 * ```
 *
 * Gradient convention (llm.c): parameter gradients accumulate (`+=`, so micro-batches add up — zero them at the
 * start of a step), activation gradients are written. Tied embeddings share one gradient tensor with the LM head.
 *
 * @module
 */
import type { Batch } from "../gpu/batch.ts";
import { Tensor } from "../gpu/tensor.ts";
import { add } from "../ops/elementwise.ts";
import { embeddingBackward } from "../ops/embedding.ts";
import { attentionBackward } from "./attention.ts";
import type { Qwen2Config } from "./config.ts";
import { linearBackward } from "./linear.ts";
import type { LayerParams, Qwen2Params } from "./params.ts";
import type { ForwardInputs, TrunkOutput } from "./qwen2.ts";
import { rmsnormBackward } from "./rmsnorm.ts";
import { ropeBackward } from "./rope.ts";
import { swigluBackward } from "./swiglu.ts";

/** Gradient tensors with the same names and shapes as the parameters (tied: no separate lm_head). */
export type Grads = Map<string, Tensor>;

/** Allocates zeroed gradients for every parameter. */
export function createGrads(params: Qwen2Params): Grads {
  const gpu = params.embed.gpu;
  const out: Grads = new Map();
  for (const [name, p] of params.byName) {
    const g = new Tensor(gpu, p.shape, "f32", `grad.${name}`);
    const enc = gpu.device.createCommandEncoder({ label: "grads.zero" });
    enc.clearBuffer(g.buffer, 0, g.size * 4);
    gpu.device.queue.submit([enc.finish()]);
    out.set(name, g);
  }
  return out;
}

/** The gradient of the LM head weight (the embedding's when tied). */
export function lmHeadGrad(cfg: Qwen2Config, grads: Grads): Tensor {
  return grads.get(cfg.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight")!;
}

function layerGrads(grads: Grads, l: number): Record<keyof LayerParams, Tensor> {
  const g = (s: string) => grads.get(`model.layers.${l}.${s}`)!;
  return {
    inputNorm: g("input_layernorm.weight"),
    q: g("self_attn.q_proj.weight"),
    qBias: g("self_attn.q_proj.bias"),
    k: g("self_attn.k_proj.weight"),
    kBias: g("self_attn.k_proj.bias"),
    v: g("self_attn.v_proj.weight"),
    vBias: g("self_attn.v_proj.bias"),
    o: g("self_attn.o_proj.weight"),
    postNorm: g("post_attention_layernorm.weight"),
    gate: g("mlp.gate_proj.weight"),
    up: g("mlp.up_proj.weight"),
    down: g("mlp.down_proj.weight"),
  };
}

/**
 * Backpropagates `dhidden` (N, C) — the gradient of the final hidden states — through the trunk, accumulating
 * every parameter gradient into `grads`. `saved` comes from `trunkForward(..., { save: true })` on the same inputs;
 * `dhidden` is consumed (released).
 */
export function trunkBackward(
  batch: Batch,
  grads: Grads,
  dhidden: Tensor,
  cfg: Qwen2Config,
  params: Qwen2Params,
  inputs: ForwardInputs,
  saved: NonNullable<TrunkOutput["saved"]>,
): void {
  const gpu = batch.gpu;
  const [B, T] = inputs.ids.shape;
  const N = B * T;
  const { hiddenSize: C, intermediateSize: I, numAttentionHeads: H, numKeyValueHeads: KVH, headDim: D } = cfg;
  const theta = cfg.ropeTheta;
  const t = (shape: number[], label: string) => new Tensor(gpu, shape, "f32", label);

  // hidden = rmsnorm(x_L, w_norm)
  let dx = t([N, C], "d.x_final");
  rmsnormBackward(
    batch,
    dx,
    grads.get("model.norm.weight")!,
    dhidden,
    saved.xFinal,
    params.norm,
    saved.rstdFinal,
  );
  dhidden.release();

  for (let l = cfg.numHiddenLayers - 1; l >= 0; l--) {
    const p = params.layers[l], a = saved.layers[l], g = layerGrads(grads, l);
    const name = (s: string) => `d.l${l}.${s}`;
    // MLP: x3 = x2 + (silu(h2·Wgᵀ) ⊙ h2·Wuᵀ)·Wdᵀ
    const dact = t([N, I], name("act"));
    linearBackward(batch, { dx: dact, dw: g.down }, dx, a.act, p.down);
    const dgate = t([N, I], name("gate")), dup = t([N, I], name("up"));
    swigluBackward(batch, dgate, dup, dact, a.gate, a.up);
    dact.release();
    const dh2 = t([N, C], name("h2"));
    linearBackward(batch, { dx: dh2, dw: g.gate }, dgate, a.h2, p.gate);
    linearBackward(batch, { dx: dh2, dw: g.up }, dup, a.h2, p.up, { accumulateDx: true });
    dgate.release();
    dup.release();
    const dx2n = t([N, C], name("x2_norm"));
    rmsnormBackward(batch, dx2n, g.postNorm, dh2, a.x2, p.postNorm, a.rstd2);
    dh2.release();
    const dx2 = t([N, C], name("x2"));
    add(batch, dx2, dx, dx2n);
    dx.release();
    dx2n.release();
    // Attention: x2 = x + attention(rope(h·Wqᵀ + bq), rope(h·Wkᵀ + bk), h·Wvᵀ + bv)·Woᵀ
    const datt = t([B, T, H, D], name("att"));
    linearBackward(batch, { dx: datt.reshape([N, H * D]), dw: g.o }, dx2, a.att.reshape([N, H * D]), p.o);
    const dq = t([B, T, H, D], name("q")),
      dk = t([B, T, KVH, D], name("k")),
      dv = t([B, T, KVH, D], name("v"));
    attentionBackward(batch, dq, dk, dv, datt, a.q, a.k, a.v, a.att, a.lse, { keyMask: inputs.mask });
    datt.release();
    const dqRaw = t([B, T, H, D], name("q_raw")), dkRaw = t([B, T, KVH, D], name("k_raw"));
    ropeBackward(batch, dqRaw, dq, inputs.positions, { theta });
    ropeBackward(batch, dkRaw, dk, inputs.positions, { theta });
    dq.release();
    dk.release();
    const dh = t([N, C], name("h"));
    linearBackward(batch, { dx: dh, dw: g.q, db: g.qBias }, dqRaw.reshape([N, H * D]), a.h, p.q);
    linearBackward(batch, { dx: dh, dw: g.k, db: g.kBias }, dkRaw.reshape([N, KVH * D]), a.h, p.k, {
      accumulateDx: true,
    });
    linearBackward(batch, { dx: dh, dw: g.v, db: g.vBias }, dv.reshape([N, KVH * D]), a.h, p.v, {
      accumulateDx: true,
    });
    dqRaw.release();
    dkRaw.release();
    dv.release();
    const dxn = t([N, C], name("x_norm"));
    rmsnormBackward(batch, dxn, g.inputNorm, dh, a.x, p.inputNorm, a.rstd);
    dh.release();
    dx = t([N, C], name("x"));
    add(batch, dx, dx2, dxn);
    dx2.release();
    dxn.release();
  }
  embeddingBackward(batch, grads.get("model.embed_tokens.weight")!, dx, inputs.ids.reshape([N]));
  dx.release();
}
