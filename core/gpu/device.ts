/**
 * WebGPU adapter and device acquisition.
 *
 * `Gpu` owns one `GPUDevice` opened with the adapter's maximum buffer limits, a buffer pool, a pipeline cache and
 * a uniform arena. Everything that touches the GPU goes through it.
 *
 * @module
 */
import { KernelProfiler } from "./profiler.ts";
import { BufferPool } from "./buffer_pool.ts";
import { PipelineCache } from "./pipeline_cache.ts";

/** Options for {@linkcode Gpu.create}. */
export interface GpuOptions {
  /**
   * Lower the storage-binding limit the runtime enforces (bytes), e.g. to test sharding of large tensors on a
   * machine whose real limit is high. Defaults to the adapter's `maxStorageBufferBindingSize`.
   */
  maxBindingSize?: number;
  /** Adapter power preference. */
  powerPreference?: GPUPowerPreference;
  /** Bytes of released buffers the pool keeps for reuse before destroying the oldest (default 1 GiB). */
  poolCapacity?: number;
}

/** Limits the runtime works with (a subset of the device's, possibly lowered by {@linkcode GpuOptions}). */
export interface GpuLimits {
  /** Largest storage-buffer binding, bytes. */
  maxBindingSize: number;
  /** Largest buffer, bytes. */
  maxBufferSize: number;
  /** Storage binding offsets must be multiples of this, bytes. */
  storageOffsetAlignment: number;
  /** Uniform binding offsets must be multiples of this, bytes. */
  uniformOffsetAlignment: number;
  /** Largest workgroup count per dimension. */
  maxWorkgroupsPerDimension: number;
  /** Bytes of workgroup memory. */
  maxWorkgroupStorageSize: number;
  /** Invocations per workgroup. */
  maxInvocationsPerWorkgroup: number;
}

/** Message used when no WebGPU adapter can be found. */
export const NO_ADAPTER_MESSAGE =
  "No WebGPU adapter found: install a Vulkan driver (on a machine without a GPU: apt-get install mesa-vulkan-drivers) " +
  "or run on a machine with a GPU (with only an OpenGL driver: set DENO_WEBGPU_BACKEND=gl)";

/** One WebGPU device with the project's runtime services attached. */
export class Gpu {
  /** The WebGPU device. */
  readonly device: GPUDevice;
  /** Adapter description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  readonly adapterName: string;
  /** True when the adapter is a CPU implementation (lavapipe, SwiftShader, WARP). */
  readonly isCpu: boolean;
  /** Features the device was opened with. */
  readonly features: ReadonlySet<string>;
  /** Limits the runtime enforces. */
  readonly limits: GpuLimits;
  /** Storage buffer pool (reuse across steps). */
  readonly pool: BufferPool;
  /** Compiled pipelines keyed by shader, entry point and constants. */
  readonly pipelines: PipelineCache;
  /**
   * Per-kernel GPU timer: while set (and the device has `timestamp-query`), every dispatch is timed. Set it from
   * the start when `WEBGPU_PROFILE=1`.
   */
  profiler: KernelProfiler | undefined;
  #lost: string | undefined;

  private constructor(device: GPUDevice, info: GPUAdapterInfo, limits: GpuLimits, opts: GpuOptions) {
    this.device = device;
    this.adapterName = info.description || info.vendor || "unknown adapter";
    this.isCpu = info.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader|warp/i.test(this.adapterName);
    this.features = new Set(device.features);
    this.limits = limits;
    this.pool = new BufferPool(device, opts.poolCapacity ?? 1 << 30);
    this.pipelines = new PipelineCache(device);
    if (this.features.has("timestamp-query") && envFlag("WEBGPU_PROFILE")) {
      this.profiler = new KernelProfiler();
    }
    device.lost.then((info) => {
      this.#lost = `${info.reason}: ${info.message}`;
    });
  }

  /**
   * Requests an adapter and a device with the adapter's maximum buffer limits. Unless `DENO_WEBGPU_BACKEND` is
   * set, it first limits WebGPU to the native backends ({@linkcode NATIVE_BACKENDS}); that takes effect when
   * nothing in the process has used WebGPU yet.
   */
  static async create(opts: GpuOptions = {}): Promise<Gpu> {
    preferNativeBackends();
    if (typeof navigator === "undefined" || !navigator.gpu) throw new Error(NO_ADAPTER_MESSAGE);
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: opts.powerPreference });
    if (!adapter) throw new Error(NO_ADAPTER_MESSAGE);
    const a = adapter.limits;
    const requiredLimits: Record<string, number> = {
      maxStorageBufferBindingSize: a.maxStorageBufferBindingSize,
      maxBufferSize: a.maxBufferSize,
      maxStorageBuffersPerShaderStage: a.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: a.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: a.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: a.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: a.maxComputeWorkgroupSizeY,
      maxTextureDimension2D: a.maxTextureDimension2D,
      minStorageBufferOffsetAlignment: a.minStorageBufferOffsetAlignment,
      minUniformBufferOffsetAlignment: a.minUniformBufferOffsetAlignment,
    };
    const wanted: GPUFeatureName[] = ["shader-f16", "timestamp-query"];
    const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
    const device = await adapter.requestDevice({ label: "prm-rl", requiredLimits, requiredFeatures });
    const d = device.limits;
    if (opts.maxBindingSize !== undefined && !(opts.maxBindingSize >= 256)) {
      throw new Error(`Invalid maxBindingSize "${opts.maxBindingSize}": expected at least 256 bytes`);
    }
    const limits: GpuLimits = {
      maxBindingSize: Math.min(d.maxStorageBufferBindingSize, opts.maxBindingSize ?? Infinity),
      maxBufferSize: d.maxBufferSize,
      storageOffsetAlignment: d.minStorageBufferOffsetAlignment,
      uniformOffsetAlignment: d.minUniformBufferOffsetAlignment,
      maxWorkgroupsPerDimension: d.maxComputeWorkgroupsPerDimension,
      maxWorkgroupStorageSize: d.maxComputeWorkgroupStorageSize,
      maxInvocationsPerWorkgroup: d.maxComputeInvocationsPerWorkgroup,
    };
    return new Gpu(device, adapter.info, limits, opts);
  }

  /** Throws if the device was lost. */
  checkAlive(): void {
    if (this.#lost) throw new Error(`The WebGPU device was lost: ${this.#lost}`);
  }

  /** Releases every pooled buffer and destroys the device. */
  destroy(): void {
    this.pool.clear();
    this.device.destroy();
  }
}

/**
 * The WebGPU backends the project asks for unless `DENO_WEBGPU_BACKEND` says otherwise: Vulkan, Metal and D3D12,
 * not OpenGL.
 *
 * Why: wgpu initialises every backend it is allowed, and its OpenGL backend loads `libEGL.so.1` even when the
 * adapter used is a Vulkan one. At process exit glibc runs libEGL's destructor on the main thread while a worker
 * thread frees its thread-local data, and the two free the same block: the process aborts ("double free or
 * corruption", exit 134) *after* it has finished its work. Measured on lavapipe (core dump: `_dl_fini` →
 * libEGL's destructor on one thread, `__nptl_deallocate_tsd` → `free` on another), about 1 process in 120
 * that had used the GPU. Without the OpenGL backend wgpu does not load libEGL (NVIDIA's Vulkan driver loads it
 * itself; no abort was seen there). A machine whose only driver is OpenGL can still be used with
 * `DENO_WEBGPU_BACKEND=gl`.
 */
export const NATIVE_BACKENDS = "vulkan,metal,dx12";

/**
 * Sets `DENO_WEBGPU_BACKEND` to {@linkcode NATIVE_BACKENDS} when it is unset (WebGPU reads it when it starts).
 * Without permission to read and write it (no prompt is shown), WebGPU keeps its default backends.
 */
function preferNativeBackends(): void {
  const variable = "DENO_WEBGPU_BACKEND";
  if (Deno.permissions.querySync({ name: "env", variable }).state !== "granted") return;
  if (Deno.env.get(variable) === undefined) Deno.env.set(variable, NATIVE_BACKENDS);
}

let shared: Promise<Gpu> | undefined;

/**
 * Returns the process-wide {@linkcode Gpu}, creating it on first use.
 *
 * @example
 * ```ts
 * const gpu = await getGpu();
 * console.log(gpu.adapterName);
 * ```
 */
export function getGpu(): Promise<Gpu> {
  shared ??= Gpu.create().catch((e) => {
    shared = undefined;
    throw e;
  });
  return shared;
}

/** True when the environment variable `name` is set to something other than "", "0" or "false". */
function envFlag(name: string): boolean {
  try {
    const v = Deno.env.get(name);
    return v !== undefined && v !== "" && v !== "0" && v !== "false";
  } catch {
    return false; // no --allow-env
  }
}
