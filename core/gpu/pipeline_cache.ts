/**
 * Pipeline cache: one compiled compute pipeline per (source, entry point, constants). Compilation errors are
 * reported with the kernel name and WGSL line:column.
 *
 * @module
 */
import type { KernelSpec } from "./kernel.ts";

/** A compiled kernel. */
export interface CompiledKernel {
  /** The pipeline (invalid if compilation failed; {@linkcode CompiledKernel.check} then rejects). */
  readonly pipeline: GPUComputePipeline;
  /** The bind group layout of group 0. */
  readonly layout: GPUBindGroupLayout;
  /** Resolves when compilation succeeded, rejects with a message naming the kernel and line otherwise. */
  readonly check: Promise<void>;
}

/** Compiles each distinct kernel once. */
export class PipelineCache {
  readonly #device: GPUDevice;
  readonly #sources = new Map<string, number>();
  readonly #modules = new Map<string, GPUShaderModule>();
  readonly #pipelines = new Map<string, CompiledKernel>();

  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /** Number of distinct pipelines compiled so far. */
  get size(): number {
    return this.#pipelines.size;
  }

  /** Returns the compiled kernel, compiling it synchronously on first use. */
  get(spec: KernelSpec): CompiledKernel {
    let id = this.#sources.get(spec.code);
    if (id === undefined) {
      id = this.#sources.size;
      this.#sources.set(spec.code, id);
    }
    const constants = spec.constants ?? {};
    const key = `${id}|${spec.entry}|${JSON.stringify(Object.entries(constants).sort())}`;
    const hit = this.#pipelines.get(key);
    if (hit) return hit;
    const compiled = this.#compile(spec, id, constants);
    this.#pipelines.set(key, compiled);
    return compiled;
  }

  /** Compiles a kernel ahead of use and waits for its result. */
  async prepare(spec: KernelSpec): Promise<void> {
    await this.get(spec).check;
  }

  #compile(spec: KernelSpec, id: number, constants: Record<string, number>): CompiledKernel {
    const device = this.#device;
    device.pushErrorScope("validation");
    let module = this.#modules.get(String(id));
    if (!module) {
      module = device.createShaderModule({ label: spec.name, code: spec.code });
      this.#modules.set(String(id), module);
    }
    const pipeline = device.createComputePipeline({
      label: spec.name,
      layout: "auto",
      compute: { module, entryPoint: spec.entry, constants },
    });
    const scope = device.popErrorScope();
    const shader = module;
    const check = scope.then(async (err) => {
      if (!err) return;
      const info = await shader.getCompilationInfo();
      const lines = info.messages
        .filter((m) => m.type === "error")
        .map((m) => `line ${m.lineNum}:${m.linePos}: ${m.message.trim().split("\n")[0]}`);
      const detail = lines.length > 0 ? lines.join("; ") : err.message.trim();
      throw new Error(`Kernel "${spec.name}" (entry "${spec.entry}") failed to compile: ${detail}`);
    });
    check.catch(() => {}); // observed by whoever dispatches the kernel
    // getBindGroupLayout on an invalid pipeline returns an invalid layout; errors surface through `check`.
    device.pushErrorScope("validation");
    const layout = pipeline.getBindGroupLayout(0);
    device.popErrorScope().catch(() => {});
    return { pipeline, layout, check };
  }
}
