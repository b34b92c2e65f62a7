/**
 * Rotary position embedding kernels (`shaders/rope.wgsl`), Hugging Face Qwen2 `rotate_half` semantics:
 *
 * for head dim D and j < D/2, `inv_freq[j] = 1 / θ^(2j/D)` (float32, as HF), `a = f32(pos) · inv_freq[j]`;
 * `out[j] = x[j]·cos a − x[j+D/2]·sin a`, `out[j+D/2] = x[j+D/2]·cos a + x[j]·sin a`.
 * The backward is the rotation by −a. Apply once to q (H heads) and once to k (KV heads).
 *
 * Positions are an i32 tensor with one entry per token, supplied by the caller (`cumsum(mask) − 1`), so left and
 * right padding give the same per-sequence result.
 *
 * @module
 */
import src from "../../shaders/rope.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import { upload } from "../gpu/io.ts";
import { grid1d, type KernelSpec, type ParamField } from "../gpu/kernel.ts";
import { rowShards } from "../gpu/shard.ts";
import { expectShape, type Tensor } from "../gpu/tensor.ts";

const WG = 256;
const PARAMS: ParamField[] = [["rows", "u32"], ["H", "u32"], ["D", "u32"], ["row0", "u32"], ["zero", "u32"]];
const spec = (entry: string, bindings: string[]): KernelSpec => ({
  name: `rope.${entry}`,
  code: src,
  entry,
  constants: { WG },
  params: PARAMS,
  bindings,
});
const KERNELS = {
  forward: spec("forward", ["x", "positions", "invFreq", "out", "", ""]),
  backward: spec("backward", ["", "positions", "invFreq", "", "dout", "dx"]),
};

/** Options of {@linkcode ropeForward} and {@linkcode ropeBackward}. */
export interface RopeOptions {
  /** RoPE base θ (`rope_theta`). */
  theta: number;
}

/**
 * Inverse frequencies exactly as Hugging Face computes them in float32:
 * `inv_freq[j] = f32(1 / f32(θ ^ f32(2j / D)))` for j < D/2.
 */
export function ropeInvFreq(headDim: number, theta: number): Float32Array {
  const f = Math.fround;
  const out = new Float32Array(headDim / 2);
  for (let j = 0; j < out.length; j++) out[j] = f(1 / f(theta ** f((2 * j) / headDim)));
  return out;
}

const invFreqCache = new WeakMap<Gpu, Map<string, Tensor>>();

/** The `inv_freq` table of (D, θ) on the GPU, uploaded once per device. */
function invFreqTensor(gpu: Gpu, D: number, theta: number): Tensor {
  let byKey = invFreqCache.get(gpu);
  if (!byKey) invFreqCache.set(gpu, byKey = new Map());
  const key = `${D}:${theta}`;
  let t = byKey.get(key);
  if (!t || t.released) {
    t = upload(gpu, ropeInvFreq(D, theta), { label: `rope.inv_freq(D=${D}, theta=${theta})` });
    byKey.set(key, t);
  }
  return t;
}

/** Tokens N, heads H and head dim D of `x` (`(..., H, D)`), validated against `positions` and θ. */
function dims(
  x: Tensor,
  positions: Tensor,
  opts: RopeOptions,
  what: string,
): { N: number; H: number; D: number } {
  if (x.shape.length < 2) {
    throw new Error(`${what}: tensor "${x.label}" has shape [${x.shape}], expected (..., H, D)`);
  }
  const [H, D] = x.shape.slice(-2);
  if (D % 2 !== 0) throw new Error(`${what}: head dim of tensor "${x.label}" must be even, got ${D}`);
  const N = H * D === 0 ? 0 : x.size / (H * D);
  if (positions.dtype !== "i32") {
    throw new Error(`${what}: tensor "${positions.label}" must be i32 positions, got ${positions.dtype}`);
  }
  if (positions.size !== N) {
    throw new Error(
      `${what}: tensor "${positions.label}" has ${positions.size} positions, expected one per token (${N})`,
    );
  }
  if (!(opts.theta > 0)) throw new Error(`${what}: theta must be a positive number, got ${opts.theta}`);
  return { N, H, D };
}

function run(
  batch: Batch,
  kernel: KernelSpec,
  io: { src: string; dst: string },
  dst: Tensor,
  srcT: Tensor,
  positions: Tensor,
  opts: RopeOptions,
): void {
  const { N, H, D } = dims(srcT, positions, opts, kernel.name);
  expectShape(dst, srcT.shape, kernel.name);
  if (D === 0) return;
  const invFreq = invFreqTensor(batch.gpu, D, opts.theta);
  const row = H * D;
  for (const { start, count } of rowShards(batch.gpu, N, row)) {
    if (count === 0) continue;
    const views = {
      [io.src]: srcT.view(start * row, count * row),
      [io.dst]: dst.view(start * row, count * row),
      positions,
      invFreq,
    };
    const groups = grid1d(Math.ceil((count * row) / 2 / WG), batch.gpu.limits.maxWorkgroupsPerDimension);
    batch.dispatch(kernel, views, groups, { rows: count, H, D, row0: start, zero: 0 });
  }
}

/**
 * RoPE forward: rotates every head of `x` by its token's position. Shapes: `x`, `out`: (..., H, D) with N tokens;
 * `positions`: i32, N elements (e.g. (B, T)).
 */
export function ropeForward(
  batch: Batch,
  out: Tensor,
  x: Tensor,
  positions: Tensor,
  opts: RopeOptions,
): void {
  run(batch, KERNELS.forward, { src: "x", dst: "out" }, out, x, positions, opts);
}

/**
 * RoPE backward: `dx` = `dout` rotated by −angle (RoPE is orthogonal, so its transpose is its inverse).
 * Shapes as {@linkcode ropeForward}.
 */
export function ropeBackward(
  batch: Batch,
  dx: Tensor,
  dout: Tensor,
  positions: Tensor,
  opts: RopeOptions,
): void {
  run(batch, KERNELS.backward, { src: "dout", dst: "dx" }, dx, dout, positions, opts);
}
