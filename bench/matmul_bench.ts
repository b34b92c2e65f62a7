/**
 * Matmul throughput: 256³, 1024³, 2048³ and the Qwen2-0.5B MLP shape M=512, K=896, N=4864, for `a·b`, `a·bᵀ`
 * (linear layer forward) and `aᵀ·b` (weight gradient), each with the kernel the adapter gets by default (on a CPU
 * adapter that includes packing both operands every call).
 *
 * Time per call: after a warm-up, `(t(2·reps) − t(reps)) / reps` (submit until the queue reports the work done),
 * which cancels the fixed per-batch latency; the best of `trials` such measurements is kept, since on a shared
 * CPU other processes only ever slow a run down. GFLOP/s = 2·M·N·K / time.
 *
 * @example
 * ```ts
 * import { formatTable } from "./table.ts";
 * console.log(formatTable("matmul", await benchMatmul()));
 * ```
 *
 * @module
 */
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import {
  DEFAULT_GPU_TILE,
  GPU_TILES,
  type GpuTile,
  matmul,
  type MatmulOptions,
  tileName,
} from "../core/ops/matmul.ts";
import { median, type Row } from "./table.ts";

/** Options of {@linkcode benchMatmul}. */
export interface MatmulBenchOptions {
  /** Device to use (default: a new one, destroyed at the end). */
  gpu?: Gpu;
  /** Calls in the shorter timed batch (default: enough for ~0.2 s of work, at least 1). */
  reps?: number;
  /** Timed measurements per case, best kept (default 3). */
  trials?: number;
  /** Cases to run, by name (default all). */
  cases?: string[];
  /** Transposes to run (default `["nn", "nt", "tn"]`). */
  layouts?: ("nn" | "nt" | "tn" | "tt")[];
  /** Kernel family override (default: by adapter). */
  variant?: MatmulOptions["variant"];
  /** Tile configuration of the GPU kernel (default `DEFAULT_GPU_TILE`). */
  tile?: GpuTile;
  /** Shapes `[name, M, K, N]` to run instead of {@linkcode MATMUL_CASES}. */
  shapes?: [string, number, number, number][];
}

/** Benchmark shapes `[name, M, K, N]`. */
export const MATMUL_CASES: [string, number, number, number][] = [
  ["256³", 256, 256, 256],
  ["1024³", 1024, 1024, 1024],
  ["2048³", 2048, 2048, 2048],
  ["qwen mlp 512×896×4864", 512, 896, 4864],
];

function patterned(gpu: Gpu, shape: number[], label: string, seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (((i + seed) * 7919) % 8192) / 8192 - 0.5;
  return upload(gpu, data, { shape, label });
}

async function run(gpu: Gpu, reps: number, record: (b: Batch) => void): Promise<number> {
  const batch = new Batch(gpu, "bench.matmul");
  for (let i = 0; i < reps; i++) record(batch);
  const t0 = performance.now();
  await batch.submit();
  await gpu.device.queue.onSubmittedWorkDone();
  return (performance.now() - t0) / 1000;
}

/** Returns one row per case and layout: `{ case, layout, kernel, ms, "GFLOP/s" }`. */
export async function benchMatmul(opts: MatmulBenchOptions = {}): Promise<Row[]> {
  const gpu = opts.gpu ?? await Gpu.create();
  const trials = opts.trials ?? 5;
  const rows: Row[] = [];
  try {
    for (const [name, M, K, N] of opts.shapes ?? MATMUL_CASES) {
      if (opts.cases && !opts.cases.includes(name)) continue;
      for (const layout of opts.layouts ?? ["nn", "nt", "tn"]) {
        const transA = layout[0] === "t", transB = layout[1] === "t";
        const a = patterned(gpu, transA ? [K, M] : [M, K], "a", 1);
        const b = patterned(gpu, transB ? [N, K] : [K, N], "b", 2);
        const out = new Tensor(gpu, [M, N], "f32", "out");
        const record = (batch: Batch) =>
          matmul(batch, { out, a, b, transA, transB, variant: opts.variant, tile: opts.tile });
        await run(gpu, 1, record); // warm-up: compiles the kernels
        const second = await run(gpu, 1, record);
        const reps = opts.reps ?? Math.max(1, Math.min(50, Math.round(0.2 / Math.max(second, 1e-4))));
        // Per trial: marginal time per call (t(2r) − t(r))/r, and the plain average t(2r)/2r, which still includes
        // the per-batch sync. The median marginal time is reported; it falls back to the plain average when noise
        // makes the difference non-positive, and never claims less than half the plain average.
        const marginal: number[] = [], plain: number[] = [];
        for (let t = 0; t < trials; t++) {
          const once = await run(gpu, reps, record);
          const twice = await run(gpu, 2 * reps, record);
          marginal.push((twice - once) / reps);
          plain.push(twice / (2 * reps));
        }
        const avg = median(plain);
        const best = Math.max(median(marginal) > 0 ? median(marginal) : avg, avg / 2);
        const family = (opts.variant ?? "auto") === "auto" ? (gpu.isCpu ? "cpu" : "tiled") : opts.variant!;
        const textures = (Batch as unknown as { textureBindings?: boolean }).textureBindings === true;
        const kernel = family === "cpu"
          ? (textures ? "cpu/texture" : "cpu/buffer")
          : `tiled ${tileName(opts.tile ?? DEFAULT_GPU_TILE)}`;
        const flop = 2 * M * N * K;
        rows.push({
          case: name,
          layout,
          kernel,
          ms: best * 1e3,
          "GFLOP/s": flop / best / 1e9,
          "GFLOP/s incl. sync": flop / avg / 1e9,
        });
        for (const t of [a, b, out]) t.release();
      }
    }
  } finally {
    if (!opts.gpu) gpu.destroy();
  }
  return rows;
}

if (import.meta.main) {
  // deno run -A bench/matmul_bench.ts [case names...] [--tiles]: --tiles times every GPU_TILES configuration of the
  // GPU kernel (to choose DEFAULT_GPU_TILE for an adapter), not just the default kernel.
  const { formatTable } = await import("./table.ts");
  const gpu = await Gpu.create();
  const names = Deno.args.filter((a) => a !== "--tiles");
  const cases = names.length > 0 ? names : undefined;
  if (Deno.args.includes("--tiles")) {
    for (const [name, tile] of Object.entries(GPU_TILES)) {
      const rows = await benchMatmul({ gpu, cases, variant: "tiled", tile });
      console.log(formatTable(`matmul, tile ${name}, on ${gpu.adapterName}`, rows));
    }
  } else {
    console.log(formatTable(`matmul on ${gpu.adapterName}`, await benchMatmul({ gpu, cases })));
  }
  gpu.destroy();
}
