/**
 * Kernel bandwidth benchmark: softmax on attention-sized and vocabulary-sized rows, log-softmax on vocabulary
 * rows, elementwise add and scale, and a full sum reduction.
 *
 * Each kernel is compiled and run once (warm-up), then dispatched `reps` and `2·reps` times in one batch each; the
 * time per dispatch is the difference of the two wall-clock times (submit until the queue reports the work done)
 * divided by `reps`, so the fixed per-batch latency cancels. Bandwidth counts each input read
 * once and each output written once (the minimum traffic), so kernels that read twice (softmax) show below the
 * device's copy bandwidth.
 *
 * @example
 * ```ts
 * import { formatTable } from "./table.ts";
 * console.log(formatTable("kernels", await benchKernels()));
 * ```
 *
 * @module
 */
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { add, scale } from "../core/ops/elementwise.ts";
import { reduceAll } from "../core/ops/reduce.ts";
import { logSoftmax, softmax } from "../core/ops/softmax.ts";
import { median, type Row } from "./table.ts";

/** Options of {@linkcode benchKernels}. */
export interface KernelBenchOptions {
  /** Device to use (default: a new one, destroyed at the end). */
  gpu?: Gpu;
  /** Dispatches of the shorter timed batch (default 50 on a GPU, 1 on a CPU adapter, where one takes ~0.2–1 s). */
  reps?: number;
  /** Rows of the vocabulary-sized softmax (default 512 on a GPU, 32 on a CPU adapter, where it is slow). */
  vocabRows?: number;
  /** Vocabulary size (default 151936, Qwen2's). */
  vocab?: number;
}

/** Tensor with a cheap deterministic pattern in [-4, 4). */
function patterned(gpu: Gpu, shape: number[], label: string): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = ((i * 7919) % 8192) / 1024 - 4;
  return upload(gpu, data, { shape, label });
}

/** Wall-clock seconds from submitting a batch of `reps` dispatches until the queue reports it done. */
async function run(gpu: Gpu, reps: number, record: (b: Batch) => void): Promise<number> {
  const batch = new Batch(gpu, "bench");
  for (let i = 0; i < reps; i++) record(batch);
  const t0 = performance.now();
  await batch.submit();
  await gpu.device.queue.onSubmittedWorkDone();
  return (performance.now() - t0) / 1000;
}

/**
 * Seconds per dispatch: after a warm-up, the median over 3 trials of `(t(2·reps) − t(reps)) / reps`, which cancels
 * the fixed submit and completion-notification latency (about 12 ms per batch under Deno on an H200, more than many
 * kernels take). Noise can make that difference tiny or negative: the result never goes below half of the plain
 * average `t(2·reps) / (2·reps)`, which includes the latency and so bounds the time from above.
 */
async function time(gpu: Gpu, reps: number, record: (b: Batch) => void): Promise<number> {
  await run(gpu, 1, record);
  const marginal: number[] = [], plain: number[] = [];
  for (let t = 0; t < 3; t++) {
    const once = await run(gpu, reps, record);
    const twice = await run(gpu, 2 * reps, record);
    marginal.push((twice - once) / reps);
    plain.push(twice / (2 * reps));
  }
  const avg = median(plain);
  return Math.max(median(marginal) > 0 ? median(marginal) : avg, avg / 2);
}

/**
 * Measures kernel bandwidth and returns one row per kernel: `{ kernel, shape, "GB/s", ms }` (ms per call;
 * GB/s = minimum bytes moved / time, 10⁹ bytes).
 */
export async function benchKernels(opts: KernelBenchOptions = {}): Promise<Row[]> {
  const gpu = opts.gpu ?? await Gpu.create();
  const reps = opts.reps ?? (gpu.isCpu ? 1 : 50);
  const vocab = opts.vocab ?? 151_936;
  const vocabRows = opts.vocabRows ?? (gpu.isCpu ? 32 : 512);
  const rows: Row[] = [];
  const report = (kernel: string, shape: number[], bytes: number, seconds: number) =>
    rows.push({ kernel, shape: shape.join("×"), "GB/s": bytes / seconds / 1e9, ms: seconds * 1e3 });
  try {
    for (const shape of [[4096, 4096], [vocabRows, vocab]]) {
      const x = patterned(gpu, shape, "x");
      const y = new Tensor(gpu, shape, "f32", "y");
      report("softmax", shape, 2 * x.byteSize, await time(gpu, reps, (b) => softmax(b, y, x)));
      if (shape[1] === vocab) {
        report("logSoftmax", shape, 2 * x.byteSize, await time(gpu, reps, (b) => logSoftmax(b, y, x)));
      }
      x.release();
      y.release();
    }
    const n = 1 << 24;
    const a = patterned(gpu, [n], "a"),
      c = patterned(gpu, [n], "b"),
      out = new Tensor(gpu, [n], "f32", "out");
    report("add", [n], 3 * a.byteSize, await time(gpu, reps, (b) => add(b, out, a, c)));
    report("scale", [n], 2 * a.byteSize, await time(gpu, reps, (b) => scale(b, out, a, { alpha: 0.5 })));
    const s = new Tensor(gpu, [1], "f32", "s");
    report("reduceAll sum", [n], a.byteSize, await time(gpu, reps, (b) => reduceAll(b, s, a, { op: "sum" })));
    for (const t of [a, c, out, s]) t.release();
  } finally {
    if (!opts.gpu) gpu.destroy();
  }
  return rows;
}

if (import.meta.main) {
  const { formatTable } = await import("./table.ts");
  const gpu = await Gpu.create();
  console.log(formatTable(`kernels on ${gpu.adapterName}`, await benchKernels({ gpu })));
  gpu.destroy();
}
