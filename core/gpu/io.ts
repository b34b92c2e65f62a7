/**
 * Host ↔ GPU transfers: uploads, zero-filled tensors and readbacks.
 *
 * @module
 */
import { Batch } from "./batch.ts";
import type { Gpu } from "./device.ts";
import { type Binding, type DType, numel, Tensor } from "./tensor.ts";

/** Host data accepted by {@linkcode upload}. */
export type HostData = Float32Array | Int32Array | Uint32Array | readonly number[];

function dtypeOf(data: HostData, dtype?: DType): DType {
  if (dtype) return dtype;
  if (data instanceof Int32Array) return "i32";
  if (data instanceof Uint32Array) return "u32";
  return "f32";
}

function toTyped(data: HostData, dtype: DType): Float32Array | Int32Array | Uint32Array {
  if (dtype === "f32") return data instanceof Float32Array ? data : Float32Array.from(data);
  if (dtype === "i32") return data instanceof Int32Array ? data : Int32Array.from(data);
  return data instanceof Uint32Array ? data : Uint32Array.from(data);
}

/**
 * Uploads host data as a new tensor of `shape` (defaults to 1-D). The dtype follows the array type unless given.
 *
 * @example
 * ```ts
 * const x = upload(gpu, new Float32Array([1, 2, 3, 4]), { shape: [2, 2], label: "x" });
 * ```
 */
export function upload(
  gpu: Gpu,
  data: HostData,
  opts: { shape?: readonly number[]; dtype?: DType; label?: string } = {},
): Tensor {
  const shape = opts.shape ?? [data.length];
  const label = opts.label ?? "upload";
  if (numel(shape) !== data.length) {
    throw new Error(`Cannot upload "${label}": ${data.length} values do not fill shape [${shape}]`);
  }
  const dtype = dtypeOf(data, opts.dtype);
  const t = new Tensor(gpu, shape, dtype, label);
  const typed = toTyped(data, dtype);
  if (typed.length > 0) gpu.device.queue.writeBuffer(t.buffer, 0, typed as BufferSource);
  return t;
}

/** A new tensor filled with zeros. */
export function zeros(
  gpu: Gpu,
  shape: readonly number[],
  opts: { dtype?: DType; label?: string } = {},
): Tensor {
  const t = new Tensor(gpu, shape, opts.dtype ?? "f32", opts.label ?? "zeros");
  if (t.size > 0) {
    const enc = gpu.device.createCommandEncoder({ label: `${t.label}.clear` });
    enc.clearBuffer(t.buffer, 0, t.size * 4);
    gpu.device.queue.submit([enc.finish()]);
  }
  return t;
}

/** Reads a tensor (or view) back as Float32Array (one readback; the tensor must be f32). */
export async function readF32(src: Binding): Promise<Float32Array> {
  const t = src instanceof Tensor ? src : src.tensor;
  if (t.dtype !== "f32") throw new Error(`Cannot read tensor "${t.label}" as f32: its dtype is ${t.dtype}`);
  return (await readAny(src)) as Float32Array;
}

/** Reads an i32 tensor (or view) back (one readback). */
export async function readI32(src: Binding): Promise<Int32Array> {
  const t = src instanceof Tensor ? src : src.tensor;
  if (t.dtype !== "i32") throw new Error(`Cannot read tensor "${t.label}" as i32: its dtype is ${t.dtype}`);
  return (await readAny(src)) as Int32Array;
}

async function readAny(src: Binding): Promise<Float32Array | Int32Array | Uint32Array> {
  const t = src instanceof Tensor ? src : src.tensor;
  const batch = new Batch(t.gpu, `read.${t.label}`);
  const out = batch.read(src);
  await batch.submit();
  return await out;
}
