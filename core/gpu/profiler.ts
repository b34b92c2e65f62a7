/**
 * Per-kernel GPU time from timestamp queries: while a {@linkcode KernelProfiler} is attached to a {@linkcode Gpu}
 * (`gpu.profiler = new KernelProfiler()`), every dispatch runs in its own compute pass whose start and end
 * times are written to a query set, and each batch's submit adds the elapsed times per kernel name. One pass
 * per dispatch costs a little, so attach it only to measure (bench, `WEBGPU_PROFILE=1`). On lavapipe the totals
 * miss most of the work (core/gpu/README.md): profile the process with perf there.
 *
 * @example
 * ```ts
 * gpu.profiler = new KernelProfiler();
 * await step();
 * console.log(gpu.profiler.table());
 * gpu.profiler = undefined;
 * ```
 *
 * @module
 */

/** Time and dispatch count of one kernel. */
export interface KernelTime {
  /** Kernel name. */
  name: string;
  /** Dispatches recorded. */
  count: number;
  /** Summed GPU time in milliseconds. */
  ms: number;
}

/** Accumulates per-kernel GPU time over the batches submitted while it is attached. */
export class KernelProfiler {
  readonly #totals = new Map<string, KernelTime>();

  /** Adds `ms` of GPU time to kernel `name`. */
  add(name: string, ms: number): void {
    const t = this.#totals.get(name) ?? { name, count: 0, ms: 0 };
    t.count++;
    t.ms += ms;
    this.#totals.set(name, t);
  }

  /** Kernels by decreasing total time. */
  times(): KernelTime[] {
    return [...this.#totals.values()].sort((a, b) => b.ms - a.ms);
  }

  /** Total GPU time in milliseconds. */
  totalMs(): number {
    let s = 0;
    for (const t of this.#totals.values()) s += t.ms;
    return s;
  }

  /** Forgets everything measured. */
  reset(): void {
    this.#totals.clear();
  }

  /** A plain-text table of the `top` most expensive kernels (name, dispatches, ms, share). */
  table(top = 25): string {
    const total = this.totalMs();
    const rows = this.times().slice(0, top).map((t) =>
      `${t.name.padEnd(36)} ${String(t.count).padStart(7)} ${t.ms.toFixed(1).padStart(10)} ${
        (100 * t.ms / (total || 1)).toFixed(1).padStart(6)
      }%`
    );
    return [
      `${"kernel".padEnd(36)} ${"calls".padStart(7)} ${"ms".padStart(10)} ${"share".padStart(7)}`,
      ...rows,
    ]
      .join("\n");
  }
}
