/**
 * Dispatch batching: all kernels of one step go into one command encoder and one compute pass, their uniforms
 * into shared uniform buffers, and their readbacks into one staging buffer mapped once.
 *
 * Validation errors (bad bindings, failed compiles, out of memory) are turned into thrown errors naming the
 * kernel when the batch is submitted.
 *
 * @example
 * ```ts
 * const batch = new Batch(gpu, "step");
 * batch.dispatch(ADD, { a, b, out }, [groups], { n });
 * const result = batch.read(out);
 * await batch.submit();
 * console.log(await result);
 * ```
 *
 * @module
 */
import type { Gpu } from "./device.ts";
import { type KernelSpec, packParams } from "./kernel.ts";
import { type Binding, bindingRange, type DType, type Tensor } from "./tensor.ts";

const UNIFORM_CHUNK = 1 << 16;
/** Timestamp queries per query set (WebGPU allows at most 4096). */
const QUERIES_PER_SET = 4096;
const freeChunks = new WeakMap<Gpu, GPUBuffer[]>();

interface UniformChunk {
  buffer: GPUBuffer;
  data: Uint8Array<ArrayBuffer>;
  used: number;
}

interface PendingRead {
  offset: number;
  bytes: number;
  dtype: DType;
  resolve: (v: Float32Array | Int32Array | Uint32Array) => void;
  reject: (e: unknown) => void;
}

/** Typed array of a dtype over bytes. */
function typed(dtype: DType, bytes: ArrayBuffer): Float32Array | Int32Array | Uint32Array {
  return dtype === "f32"
    ? new Float32Array(bytes)
    : dtype === "i32"
    ? new Int32Array(bytes)
    : new Uint32Array(bytes);
}

/** One command encoder's worth of GPU work. Submit it exactly once. */
export class Batch {
  /** Dispatch bindings may be texture views (storage or sampled textures), bound as given. */
  static readonly textureBindings = true;
  /** Owning runtime. */
  readonly gpu: Gpu;
  /** Label of the encoder. */
  readonly label: string;
  /** Number of dispatches recorded. */
  dispatches = 0;
  readonly #encoder: GPUCommandEncoder;
  #pass: GPUComputePassEncoder | undefined;
  readonly #chunks: UniformChunk[] = [];
  readonly #checks: Promise<void>[] = [];
  readonly #compiled = new Set<Promise<void>>();
  readonly #reads: { buffer: GPUBuffer; srcOffset: number; read: PendingRead }[] = [];
  readonly #temps: GPUBuffer[] = [];
  #readBytes = 0;
  #submitted = false;
  /** Timestamp query sets and the kernel name of each timed dispatch (profiling only). */
  readonly #timers: { sets: GPUQuerySet[]; names: string[] } | undefined;

  constructor(gpu: Gpu, label: string) {
    gpu.checkAlive();
    this.gpu = gpu;
    this.label = label;
    this.#encoder = gpu.device.createCommandEncoder({ label });
    if (gpu.profiler && gpu.features.has("timestamp-query")) this.#timers = { sets: [], names: [] };
    gpu.pool.batchOpened();
  }

  /**
   * Records one dispatch of `spec` with its storage `bindings` (by name, as listed in the spec), `workgroups`
   * counts and uniform `params`.
   */
  dispatch(
    spec: KernelSpec,
    bindings: Readonly<Record<string, Binding | GPUTextureView>>,
    workgroups: readonly number[],
    params: Readonly<Record<string, number>> = {},
  ): void {
    this.#open();
    const [x, y = 1, z = 1] = workgroups;
    const max = this.gpu.limits.maxWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new Error(
        `Kernel "${spec.name}": workgroup count [${x}, ${y}, ${z}] exceeds ${max} per dimension`,
      );
    }
    if (x * y * z === 0) return;
    const compiled = this.gpu.pipelines.get(spec);
    if (!this.#compiled.has(compiled.check)) {
      this.#compiled.add(compiled.check);
      this.#checks.push(compiled.check);
    }
    const entries: GPUBindGroupEntry[] = [];
    if (spec.params) {
      entries.push({ binding: 0, resource: this.#uniform(packParams(spec.name, spec.params, params)) });
    } else if (Object.keys(params).length > 0) {
      throw new Error(`Kernel "${spec.name}" takes no parameters, got ${Object.keys(params).join(", ")}`);
    }
    spec.bindings.forEach((name, i) => {
      if (name === "") return;
      const b = bindings[name];
      if (!b) throw new Error(`Kernel "${spec.name}": binding "${name}" is missing`);
      const resource = b instanceof GPUTextureView ? b : this.#storage(spec.name, name, b);
      entries.push({ binding: i + 1, resource });
    });
    for (const name of Object.keys(bindings)) {
      if (!spec.bindings.includes(name)) throw new Error(`Kernel "${spec.name}": unknown binding "${name}"`);
    }
    const device = this.gpu.device;
    device.pushErrorScope("validation");
    const group = device.createBindGroup({ label: spec.name, layout: compiled.layout, entries });
    this.#checks.push(this.#scope(`Kernel "${spec.name}"`));
    if (this.#timers) this.#timedPass(spec.name);
    const pass = this.#pass!;
    pass.setPipeline(compiled.pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(x, y, z);
    if (this.#timers) this.#close();
    this.dispatches++;
  }

  /** Copies `src` into `dst` (same element count). */
  copy(src: Binding, dst: Binding): void {
    const s = bindingRange(src), d = bindingRange(dst);
    if (s.length !== d.length) {
      throw new Error(
        `Cannot copy ${s.length} elements of "${s.tensor.label}" into ${d.length} of "${d.tensor.label}"`,
      );
    }
    this.#close();
    this.#encoder.copyBufferToBuffer(
      s.tensor.buffer,
      s.offset * 4,
      d.tensor.buffer,
      d.offset * 4,
      s.length * 4,
    );
  }

  /** Writes host data into `dst` at its position in this batch (ordered with the batch's dispatches). */
  write(dst: Binding, data: Float32Array | Int32Array | Uint32Array): void {
    const d = bindingRange(dst);
    if (data.length !== d.length) {
      throw new Error(`Cannot write ${data.length} elements into ${d.length} of tensor "${d.tensor.label}"`);
    }
    if (data.length === 0) return;
    this.#close();
    const staging = this.gpu.device.createBuffer({
      label: `${this.label}.write`,
      size: data.byteLength,
      usage: GPUBufferUsage.COPY_SRC,
      mappedAtCreation: true,
    });
    new Uint8Array(staging.getMappedRange()).set(
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    );
    staging.unmap();
    this.#temps.push(staging);
    this.#encoder.copyBufferToBuffer(staging, 0, d.tensor.buffer, d.offset * 4, data.byteLength);
  }

  /** Reads `src` back after this batch runs; the promise resolves once {@linkcode Batch.submit} has completed. */
  read(src: Binding): Promise<Float32Array | Int32Array | Uint32Array> {
    const r = bindingRange(src);
    const buffer = r.tensor.buffer; // captured now: the tensor may be released before submit
    return new Promise((resolve, reject) => {
      const read: PendingRead = {
        offset: this.#readBytes,
        bytes: r.length * 4,
        dtype: r.tensor.dtype,
        resolve,
        reject,
      };
      this.#readBytes += r.length * 4;
      this.#reads.push({ buffer, srcOffset: r.offset * 4, read });
    });
  }

  /** Zeroes `dst` at its position in this batch. */
  clear(dst: Binding): void {
    const d = bindingRange(dst);
    this.#close();
    if (d.length > 0) this.#encoder.clearBuffer(d.tensor.buffer, d.offset * 4, d.length * 4);
  }

  /** Drops the batch without running it (after an error while recording). */
  abandon(): void {
    if (this.#submitted) return;
    this.#submitted = true;
    this.#close();
    for (const t of this.#temps) t.destroy();
    this.gpu.pool.batchClosed();
  }

  /** Submits the work, waits for reads, and throws the first validation error naming its kernel. */
  async submit(): Promise<void> {
    if (this.#submitted) throw new Error(`Batch "${this.label}" was submitted twice`);
    this.#submitted = true;
    this.#close();
    const device = this.gpu.device;
    let staging: GPUBuffer | undefined;
    if (this.#readBytes > 0) {
      staging = device.createBuffer({
        label: `${this.label}.readback`,
        size: this.#readBytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      for (const { buffer, srcOffset, read } of this.#reads) {
        if (read.bytes > 0) {
          this.#encoder.copyBufferToBuffer(buffer, srcOffset, staging, read.offset, read.bytes);
        }
      }
    }
    const times = this.#resolveTimers();
    for (const c of this.#chunks) device.queue.writeBuffer(c.buffer, 0, c.data, 0, c.used);
    device.pushErrorScope("validation");
    device.pushErrorScope("out-of-memory");
    device.queue.submit([this.#encoder.finish()]);
    this.#checks.push(this.#scope(`Batch "${this.label}" (out of memory)`));
    this.#checks.push(this.#scope(`Batch "${this.label}"`));
    this.gpu.pool.batchClosed();
    const free = freeChunks.get(this.gpu) ?? [];
    freeChunks.set(this.gpu, free);
    for (const c of this.#chunks) free.push(c.buffer);
    try {
      // Report the first failure in recording order (a failed compile before the bind group it invalidates).
      const failed = (await Promise.allSettled(this.#checks)).find((r) => r.status === "rejected");
      if (failed) throw (failed as PromiseRejectedResult).reason;
      if (staging) {
        await staging.mapAsync(GPUMapMode.READ);
        const bytes = staging.getMappedRange();
        for (const { read } of this.#reads) {
          read.resolve(typed(read.dtype, bytes.slice(read.offset, read.offset + read.bytes)));
        }
        staging.unmap();
      }
      if (times) await this.#addTimes(times);
    } catch (e) {
      for (const { read } of this.#reads) read.reject(e);
      throw e;
    } finally {
      staging?.destroy();
      for (const t of this.#temps) t.destroy();
    }
  }

  #open(): void {
    if (this.#submitted) throw new Error(`Batch "${this.label}" was already submitted`);
    this.#pass ??= this.#encoder.beginComputePass({ label: this.label });
  }

  /** Opens a pass of its own for one timed dispatch (profiling). */
  #timedPass(name: string): void {
    const t = this.#timers!;
    this.#close();
    const i = t.names.length % (QUERIES_PER_SET / 2);
    if (i === 0) {
      t.sets.push(
        this.gpu.device.createQuerySet({
          label: `${this.label}.timers`,
          type: "timestamp",
          count: QUERIES_PER_SET,
        }),
      );
    }
    t.names.push(name);
    this.#pass = this.#encoder.beginComputePass({
      label: name,
      timestampWrites: {
        querySet: t.sets.at(-1)!,
        beginningOfPassWriteIndex: 2 * i,
        endOfPassWriteIndex: 2 * i + 1,
      },
    });
  }

  /** Resolves the timestamp queries into a mappable buffer (profiling). */
  #resolveTimers(): GPUBuffer | undefined {
    const t = this.#timers;
    if (!t || t.names.length === 0) return undefined;
    const device = this.gpu.device, bytes = t.sets.length * QUERIES_PER_SET * 8;
    const resolved = device.createBuffer({
      label: `${this.label}.timers.resolve`,
      size: bytes,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const out = device.createBuffer({
      label: `${this.label}.timers.read`,
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    t.sets.forEach((set, k) =>
      this.#encoder.resolveQuerySet(set, 0, QUERIES_PER_SET, resolved, k * QUERIES_PER_SET * 8)
    );
    this.#encoder.copyBufferToBuffer(resolved, 0, out, 0, bytes);
    this.#temps.push(resolved);
    return out;
  }

  /** Adds the timed dispatches' durations to the profiler (profiling). */
  async #addTimes(out: GPUBuffer): Promise<void> {
    await out.mapAsync(GPUMapMode.READ);
    const ts = new BigInt64Array(out.getMappedRange().slice(0));
    out.destroy();
    const profiler = this.gpu.profiler;
    this.#timers!.names.forEach((name, i) => {
      const ns = Number(ts[2 * i + 1] - ts[2 * i]);
      profiler?.add(name, Math.max(0, ns) / 1e6);
    });
    for (const set of this.#timers!.sets) set.destroy();
  }

  #close(): void {
    this.#pass?.end();
    this.#pass = undefined;
  }

  #scope(what: string): Promise<void> {
    return this.gpu.device.popErrorScope().then((err) => {
      if (err) throw new Error(`${what}: ${err.message.trim()}`);
    });
  }

  #uniform(bytes: Uint8Array): GPUBufferBinding {
    const align = this.gpu.limits.uniformOffsetAlignment;
    let chunk = this.#chunks.at(-1);
    if (!chunk || chunk.used + bytes.length > UNIFORM_CHUNK) {
      const buffer = freeChunks.get(this.gpu)?.pop() ?? this.gpu.device.createBuffer({
        label: "uniforms",
        size: UNIFORM_CHUNK,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      chunk = { buffer, data: new Uint8Array(UNIFORM_CHUNK), used: 0 };
      this.#chunks.push(chunk);
    }
    const offset = chunk.used;
    chunk.data.set(bytes, offset);
    chunk.used = Math.ceil((offset + bytes.length) / align) * align;
    return { buffer: chunk.buffer, offset, size: bytes.length };
  }

  #storage(kernel: string, name: string, b: Binding): GPUBufferBinding {
    const { tensor, offset, length } = bindingRange(b);
    const bytes = Math.max(4, length * 4);
    const limits = this.gpu.limits;
    if (bytes > limits.maxBindingSize) {
      throw new Error(
        `Kernel "${kernel}": binding "${name}" (tensor "${tensor.label}", ${bytes} bytes) exceeds the storage ` +
          `binding limit of ${limits.maxBindingSize} bytes: bind it in views`,
      );
    }
    if ((offset * 4) % limits.storageOffsetAlignment !== 0) {
      throw new Error(
        `Kernel "${kernel}": binding "${name}" starts at element ${offset} of "${tensor.label}", not a multiple of ` +
          `${limits.storageOffsetAlignment} bytes`,
      );
    }
    return { buffer: tensor.buffer, offset: offset * 4, size: bytes };
  }
}

/**
 * Runs `fn` on a fresh batch and submits it (abandoning the batch if `fn` throws). `opts.release` lists tensors
 * (step temporaries, possibly added to by `fn`) released once the batch is submitted or abandoned.
 */
export async function runBatch<T>(
  gpu: Gpu,
  label: string,
  fn: (batch: Batch) => T,
  opts: { release?: readonly Tensor[] } = {},
): Promise<T> {
  const batch = new Batch(gpu, label);
  const release = () => {
    for (const t of opts.release ?? []) t.release();
  };
  let out: T;
  try {
    out = fn(batch);
  } catch (e) {
    batch.abandon();
    release();
    throw e;
  }
  try {
    await batch.submit();
  } finally {
    release();
  }
  return out;
}
