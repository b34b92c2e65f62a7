/**
 * GPU tensors: a shape, a dtype and a pooled storage buffer.
 *
 * Tensors are contiguous and row-major. A tensor may be larger than the storage-binding limit; kernels then bind
 * {@linkcode TensorView}s (element ranges) of it, see {@linkcode Tensor.view}.
 *
 * @module
 */
import type { Gpu } from "./device.ts";

/** Element type of a tensor. */
export type DType = "f32" | "i32" | "u32";

/** Typed array matching a {@linkcode DType}. */
export type TypedArrayFor<D extends DType> = D extends "f32" ? Float32Array
  : D extends "i32" ? Int32Array
  : Uint32Array;

/** A contiguous element range of a tensor, bound to a kernel in place of the whole tensor. */
export interface TensorView {
  /** The tensor viewed. */
  readonly tensor: Tensor;
  /** First element (its byte offset must be a multiple of the storage offset alignment). */
  readonly offset: number;
  /** Number of elements. */
  readonly length: number;
}

/** Anything a kernel can bind as a storage buffer. */
export type Binding = Tensor | TensorView;

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new Error(`Invalid shape [${shape}]: dimension "${d}" is not a size`);
    }
    n *= d;
  }
  return n;
}

/** A tensor on the GPU. Call {@linkcode Tensor.release} when done so its buffer is reused. */
export class Tensor {
  /** Owning runtime. */
  readonly gpu: Gpu;
  /** Shape, row-major. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** Debug label, e.g. `"layer3.attn.q"`. */
  readonly label: string;
  #buffer: GPUBuffer | undefined;

  /**
   * Allocates an uninitialised tensor from the pool (see `zeros` and `upload` in ops for contents). With `buffer`,
   * wraps that buffer instead (used by {@linkcode Tensor.reshape}).
   */
  constructor(gpu: Gpu, shape: readonly number[], dtype: DType, label: string, buffer?: GPUBuffer) {
    const bytes = numel(shape) * 4;
    if (bytes > gpu.limits.maxBufferSize) {
      throw new Error(
        `Cannot allocate tensor "${label}" of shape [${shape}]: ${bytes} bytes exceed the device's maxBufferSize ` +
          `${gpu.limits.maxBufferSize}`,
      );
    }
    this.gpu = gpu;
    this.shape = [...shape];
    this.dtype = dtype;
    this.label = label;
    this.#buffer = buffer ?? gpu.pool.acquire(bytes, label);
  }

  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }

  /** Bytes of data (excluding pool rounding). */
  get byteSize(): number {
    return this.size * 4;
  }

  /** The underlying buffer; throws after release. */
  get buffer(): GPUBuffer {
    if (!this.#buffer) throw new Error(`Tensor "${this.label}" was used after release`);
    return this.#buffer;
  }

  /** True once released. */
  get released(): boolean {
    return this.#buffer === undefined;
  }

  /** Returns the buffer to the pool. Releasing twice is an error. */
  release(): void {
    const buf = this.buffer;
    this.#buffer = undefined;
    this.gpu.pool.release(buf);
  }

  /** An element range of this tensor. */
  view(offset: number, length: number): TensorView {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new Error(
        `View [${offset}, ${offset + length}) is outside tensor "${this.label}" of ${this.size} elements`,
      );
    }
    return { tensor: this, offset, length };
  }

  /** Same buffer, new shape with the same number of elements. Both share the buffer: release only one. */
  reshape(shape: readonly number[]): Tensor {
    if (numel(shape) !== this.size) {
      throw new Error(`Cannot reshape tensor "${this.label}" from [${this.shape}] to [${shape}]`);
    }
    return new Tensor(this.gpu, shape, this.dtype, this.label, this.buffer);
  }
}

/** Tensor size check used by kernel wrappers: `t.shape` must equal `shape`. */
export function expectShape(t: Tensor, shape: readonly number[], what: string): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`${what}: tensor "${t.label}" has shape [${t.shape}], expected [${shape}]`);
  }
}

/** Element range covered by a binding. */
export function bindingRange(b: Binding): { tensor: Tensor; offset: number; length: number } {
  return b instanceof Tensor ? { tensor: b, offset: 0, length: b.size } : b;
}
