/**
 * Row softmax and log-softmax (`shaders/softmax.wgsl`), forward and backward, over the last dimension of a
 * tensor, with an optional causal mask for attention scores and KV-cache decode.
 *
 * Rows are reduced by one workgroup each (columns up to a full vocabulary of ~152k); tensors larger than the
 * storage-binding limit are processed in row shards.
 *
 * @module
 */
import src from "../../shaders/softmax.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import { grid1d, type KernelSpec, type ParamField, withConstants } from "../gpu/kernel.ts";
import { type RowRange, rowShards } from "../gpu/shard.ts";
import { expectShape, type Tensor } from "../gpu/tensor.ts";
import { rowWorkgroupSize } from "./reduce.ts";

const PARAMS: ParamField[] = [
  ["rows", "u32"],
  ["cols", "u32"],
  ["rowStart", "u32"],
  ["causal", "u32"],
  ["T", "u32"],
  ["offset", "u32"],
];
const spec = (name: string, entry: string, bindings: string[]): KernelSpec => ({
  name,
  code: src,
  entry,
  constants: { WG: 256 },
  params: PARAMS,
  bindings,
});
const KERNELS = {
  forward: spec("softmax.forward", "forward", ["x", "", "out"]),
  logForward: spec("softmax.log_forward", "log_forward", ["x", "", "out"]),
  backward: spec("softmax.backward", "backward", ["x", "dy", "out"]),
  logBackward: spec("softmax.log_backward", "log_backward", ["x", "dy", "out"]),
};

/**
 * Causal mask of {@linkcode SoftmaxOptions}: rows come in blocks of `T` query rows (a `(B, NH, T, Tk)` score
 * tensor has `B·NH·T` rows), and row `r` is query position `q = (r mod T) + offset`. Columns `c ≤ q` are kept;
 * columns `c > q` are masked: softmax gives 0 there, log-softmax −∞, and both backward passes a zero gradient.
 * Masked inputs are never read.
 */
export interface CausalMask {
  /** Query rows per block (the number of rows must be a multiple of it). */
  T: number;
  /** Position of the first query of a block: the number of cached keys before it (KV-cache decode). Default 0. */
  offset?: number;
}

/** Options of the softmax kernels. */
export interface SoftmaxOptions {
  /** Apply a causal mask (see {@linkcode CausalMask}); default: no mask. */
  causal?: CausalMask;
}

/** {@linkcode rowShards} with the kernel named in its error. */
function shardRows(name: string, batch: Batch, rows: number, cols: number): RowRange[] {
  try {
    return rowShards(batch.gpu, rows, cols);
  } catch (e) {
    throw new Error(`${name}: ${(e as Error).message}`);
  }
}

function run(
  batch: Batch,
  kernel: KernelSpec,
  out: Tensor,
  inputs: Record<string, Tensor>,
  opts: SoftmaxOptions,
): void {
  const name = kernel.name;
  const first = Object.values(inputs)[0];
  if (first.shape.length === 0) {
    throw new Error(`${name}: tensor "${first.label}" is a scalar, expected rows`);
  }
  for (const t of [out, ...Object.values(inputs)]) {
    expectShape(t, first.shape, name);
    if (t.dtype !== "f32") throw new Error(`${name}: tensor "${t.label}" has dtype ${t.dtype}, expected f32`);
  }
  const cols = first.shape[first.shape.length - 1];
  const rows = cols === 0 ? 0 : first.size / cols;
  if (rows === 0) return;
  const T = opts.causal?.T ?? 1;
  const offset = opts.causal?.offset ?? 0;
  if (opts.causal) {
    if (!Number.isInteger(T) || T < 1 || rows % T !== 0) {
      throw new Error(
        `${name}: causal block size T must be a positive divisor of the ${rows} rows, got ${T}`,
      );
    }
    if (!Number.isInteger(offset) || offset < 0) {
      throw new Error(`${name}: causal offset must be a non-negative integer, got ${offset}`);
    }
  }
  const k = withConstants(kernel, {
    WG: rowWorkgroupSize(cols, batch.gpu.limits.maxInvocationsPerWorkgroup),
  });
  const maxPerDim = batch.gpu.limits.maxWorkgroupsPerDimension;
  for (const { start, count } of shardRows(name, batch, rows, cols)) {
    const bindings: Record<string, ReturnType<Tensor["view"]>> = {
      out: out.view(start * cols, count * cols),
    };
    for (const [key, t] of Object.entries(inputs)) bindings[key] = t.view(start * cols, count * cols);
    batch.dispatch(k, bindings, grid1d(count, maxPerDim), {
      rows: count,
      cols,
      rowStart: start,
      causal: opts.causal ? 1 : 0,
      T,
      offset,
    });
  }
}

/**
 * Row softmax over the last dimension, numerically stable:
 * `out[r, c] = exp(x[r, c] − m_r) / Σ_c' exp(x[r, c'] − m_r)` with `m_r = max_c x[r, c]` (masked columns excluded).
 *
 * @example
 * ```ts
 * softmax(batch, probs, scores, { causal: { T } }); // scores: (B, NH, T, T)
 * ```
 */
export function softmax(batch: Batch, out: Tensor, x: Tensor, opts: SoftmaxOptions = {}): void {
  run(batch, KERNELS.forward, out, { x }, opts);
}

/**
 * Row log-softmax over the last dimension, numerically stable: `out[r, c] = x[r, c] − m_r − log Σ_c' exp(x[r, c'] − m_r)`
 * (masked columns get −∞). Used for LM token log-probabilities.
 */
export function logSoftmax(batch: Batch, out: Tensor, x: Tensor, opts: SoftmaxOptions = {}): void {
  run(batch, KERNELS.logForward, out, { x }, opts);
}

/**
 * Softmax backward from the forward output `y = softmax(x)`: `dx = y ⊙ (dy − Σ_c dy⊙y)` per row (zero at masked
 * columns). Pass the same `opts` as the forward call.
 */
export function softmaxBackward(
  batch: Batch,
  dx: Tensor,
  y: Tensor,
  dy: Tensor,
  opts: SoftmaxOptions = {},
): void {
  run(batch, KERNELS.backward, dx, { x: y, dy }, opts);
}

/**
 * Log-softmax backward from the forward output `y = log_softmax(x)`: `dx = dy − exp(y) · Σ_c dy` per row (zero at
 * masked columns). Pass the same `opts` as the forward call.
 */
export function logSoftmaxBackward(
  batch: Batch,
  dx: Tensor,
  y: Tensor,
  dy: Tensor,
  opts: SoftmaxOptions = {},
): void {
  run(batch, KERNELS.logBackward, dx, { x: y, dy }, opts);
}
