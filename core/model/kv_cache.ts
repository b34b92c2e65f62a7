/**
 * KV cache for batched decoding (`shaders/kvcache.wgsl`): per layer, keys and values of shape (B, SMAX, KVH, D)
 * with a shared key mask (B, SMAX). Prompts are left-padded to one length P and written at columns [0, P);
 * decoding step s writes column P + s, so every row appends at the same column and padded slots stay masked.
 *
 * @module
 */
import src from "../../shaders/kvcache.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import { zeros } from "../gpu/io.ts";
import { grid1d, type KernelSpec, type ParamField } from "../gpu/kernel.ts";
import { expectShape, type Tensor } from "../gpu/tensor.ts";

const WG = 256;
const PARAMS: ParamField[] = [["B", "u32"], ["T", "u32"], ["SMAX", "u32"], ["ROW", "u32"], ["col0", "u32"], [
  "max_new",
  "u32",
]];
const spec = (entry: string, bindings: string[]): KernelSpec => ({
  name: `kvcache.${entry}`,
  code: src,
  entry,
  constants: { WG },
  params: PARAMS,
  bindings,
});
const WRITE = spec("write", ["src", "cache", "", "", "", ""]);
const MARK = spec("mark", ["", "", "mask", "", "", ""]);
const STEP = spec("step", ["", "", "", "tokens", "ids", "pos"]);

/** Keys and values of every layer plus the key mask. */
export interface KVCache {
  /** Per layer (B, SMAX, KVH, D). */
  keys: Tensor[];
  /** Per layer (B, SMAX, KVH, D). */
  values: Tensor[];
  /** (B, SMAX) i32: 1 where a real token's key is stored. */
  mask: Tensor;
  /** Columns allocated. */
  capacity: number;
}

/** Allocates a zeroed cache. */
export function createKVCache(
  gpu: Gpu,
  dims: { layers: number; batch: number; capacity: number; kvHeads: number; headDim: number },
): KVCache {
  const { layers, batch: B, capacity, kvHeads, headDim } = dims;
  const shape = [B, capacity, kvHeads, headDim];
  return {
    keys: Array.from({ length: layers }, (_, l) => zeros(gpu, shape, { label: `kv.${l}.k` })),
    values: Array.from({ length: layers }, (_, l) => zeros(gpu, shape, { label: `kv.${l}.v` })),
    mask: zeros(gpu, [B, capacity], { dtype: "i32", label: "kv.mask" }),
    capacity,
  };
}

/** Releases every tensor of the cache. */
export function releaseKVCache(cache: KVCache): void {
  for (const t of [...cache.keys, ...cache.values, cache.mask]) t.release();
}

/** cache[b, col0 + t] = src[b, t] for src (B, T, KVH, D). */
export function kvWrite(batch: Batch, cache: Tensor, src: Tensor, col0: number): void {
  const [B, T, KVH, D] = src.shape;
  const SMAX = cache.shape[1];
  expectShape(cache, [B, SMAX, KVH, D], "kvcache.write");
  if (col0 + T > SMAX) {
    throw new Error(`kvcache.write: columns [${col0}, ${col0 + T}) exceed the cache capacity ${SMAX}`);
  }
  const n = B * T * KVH * D;
  batch.dispatch(
    WRITE,
    { src, cache },
    grid1d(Math.ceil(n / WG), batch.gpu.limits.maxWorkgroupsPerDimension),
    {
      B,
      T,
      SMAX,
      ROW: KVH * D,
      col0,
      max_new: 0,
    },
  );
}

/** mask[b, col] = 1 for every row. */
export function kvMark(batch: Batch, mask: Tensor, col: number): void {
  const [B, SMAX] = mask.shape;
  batch.dispatch(MARK, { mask }, [Math.ceil(B / WG)], { B, T: 1, SMAX, ROW: 0, col0: col, max_new: 0 });
}

/** ids[b] = tokens[b, step] and pos[b] += 1: the next decoding step's inputs, without a readback. */
export function kvStep(batch: Batch, ids: Tensor, pos: Tensor, tokens: Tensor, step: number): void {
  const [B, maxNew] = tokens.shape;
  expectShape(ids, [B], "kvcache.step");
  expectShape(pos, [B], "kvcache.step");
  batch.dispatch(STEP, { tokens, ids, pos }, [Math.ceil(B / WG)], {
    B,
    T: 1,
    SMAX: 0,
    ROW: 0,
    col0: step,
    max_new: maxNew,
  });
}
