/**
 * Optimiser state files: every state tensor of an optimiser (AdamW: `exp_avg.<param>` = m and
 * `exp_avg_sq.<param>` = v, one pair per parameter, in parameter order) as F32 tensors of one safetensors file,
 * with metadata `{"format": "pt", "optimizer": "adamw", "step": "<t>", …hyperparameters}`.
 *
 * Saving streams each tensor from the GPU in slices of at most {@linkcode STATE_SLICE_BYTES} (host memory stays
 * bounded for embedding-sized tensors; loading reads whole rows, so a slice is at least one row) into a temporary file that is fsynced and renamed over `path`, so a crash
 * leaves the previous file intact. Loading validates the whole file first (optimiser kind, step, every name,
 * dtype and shape, no extra tensors) and only then writes the GPU tensors and the step count.
 *
 * @example
 * ```ts
 * await saveOptimizerState("runs/a/optimizer.safetensors", opt); // after the step's batch is submitted
 * await loadOptimizerState("runs/a/optimizer.safetensors", opt);
 * ```
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { readF32 } from "../gpu/io.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { buildSafetensorsHeader } from "../model/checkpoint.ts";
import { SafetensorsFile } from "../model/safetensors.ts";
import { withAtomicFile, writeAll } from "../util/atomic.ts";

/** Largest slice of a tensor held on the host while saving or loading. */
export const STATE_SLICE_BYTES = 64 << 20;

/** Options of {@linkcode saveOptimizerState} and {@linkcode loadOptimizerState}. */
export interface StateFileOptions {
  /** Largest slice of one tensor held on the host at a time (default {@linkcode STATE_SLICE_BYTES}). */
  sliceBytes?: number;
}

function sliceElems(opts: StateFileOptions): number {
  const bytes = opts.sliceBytes ?? STATE_SLICE_BYTES;
  if (!(Number.isSafeInteger(bytes) && bytes >= 4)) {
    throw new Error(`Invalid optimizer state slice size "${bytes}": expected an integer ≥ 4 bytes`);
  }
  return Math.floor(bytes / 4);
}

/** What {@linkcode saveOptimizerState} and {@linkcode loadOptimizerState} need of an optimiser. */
export interface StatefulOptimizer {
  /** Optimiser name stored as metadata "optimizer", checked on load. */
  readonly kind: string;
  /** The device holding the state. */
  readonly gpu: Gpu;
  /** Steps taken, stored as metadata "step". */
  stepCount: number;
  /** State tensors by file name, in file order. */
  stateTensors(): ReadonlyMap<string, Tensor>;
  /** Extra metadata (hyperparameters) recorded for reference. */
  hyperparameters(): Record<string, string>;
}

const sameShape = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Saves `opt`'s state tensors and step count to `path` (atomically). Submit the batch of the last step first:
 * the tensors are read after all submitted GPU work.
 */
export async function saveOptimizerState(
  path: string,
  opt: StatefulOptimizer,
  opts: StateFileOptions = {},
): Promise<void> {
  const slice = sliceElems(opts);
  const tensors = [...opt.stateTensors()];
  const metadata = {
    ...opt.hyperparameters(),
    format: "pt",
    optimizer: opt.kind,
    step: String(opt.stepCount),
  };
  const header = buildSafetensorsHeader(
    tensors.map(([name, t]) => ({ name, dtype: "F32" as const, shape: t.shape })),
    metadata,
  );
  await withAtomicFile(path, async (file) => {
    await writeAll(file, header);
    for (const [, t] of tensors) {
      for (let s = 0; s < t.size; s += slice) {
        const data = await readF32(t.view(s, Math.min(slice, t.size - s)));
        await writeAll(file, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      }
    }
  });
}

/**
 * Restores `opt`'s state tensors and step count from a file written by {@linkcode saveOptimizerState}. Throws
 * `Cannot load optimizer state "<path>": …` naming the first problem, before anything is modified.
 */
export async function loadOptimizerState(
  path: string,
  opt: StatefulOptimizer,
  opts: StateFileOptions = {},
): Promise<void> {
  const slice = sliceElems(opts);
  const fail = (msg: string): never => {
    throw new Error(`Cannot load optimizer state "${path}": ${msg}`);
  };
  const file = await SafetensorsFile.open(path);
  try {
    const md = file.metadata;
    if (md.optimizer !== opt.kind) {
      fail(`metadata "optimizer" is ${JSON.stringify(md.optimizer ?? null)}, expected "${opt.kind}"`);
    }
    const step = Number(md.step);
    if (!/^[0-9]+$/.test(md.step ?? "") || !Number.isSafeInteger(step)) {
      fail(`metadata "step" is ${JSON.stringify(md.step ?? null)}, expected an integer ≥ 0`);
    }
    const want = opt.stateTensors();
    for (const [name, t] of want) {
      if (!file.has(name)) fail(`tensor "${name}" is missing`);
      const info = file.info(name);
      if (info.dtype !== "F32") fail(`tensor "${name}" has dtype ${info.dtype}, expected F32`);
      if (!sameShape(info.shape, t.shape)) {
        fail(`tensor "${name}" has shape [${info.shape}], expected [${t.shape}]`);
      }
    }
    for (const info of file.list()) {
      if (!want.has(info.name)) fail(`tensor "${info.name}" matches no state of this ${opt.kind} optimizer`);
    }
    for (const [name, t] of want) await upload(file, name, t, slice);
    opt.stepCount = step;
  } finally {
    await file.close();
  }
}

/** Streams tensor `name` of `file` into `t` in slices of whole leading-dimension rows (≤ `slice` elements). */
async function upload(file: SafetensorsFile, name: string, t: Tensor, slice: number): Promise<void> {
  if (t.size === 0) return;
  const queue = t.gpu.device.queue;
  if (t.shape.length === 0 || t.size <= slice) {
    queue.writeBuffer(t.buffer, 0, (await file.readTensorF32(name)) as BufferSource);
    return;
  }
  const rows = t.shape[0], rowElems = t.size / rows;
  const per = Math.max(1, Math.floor(slice / rowElems));
  for (let r = 0; r < rows; r += per) {
    const data = await file.readTensorF32(name, { rowStart: r, rowCount: Math.min(per, rows - r) });
    queue.writeBuffer(t.buffer, r * rowElems * 4, data as BufferSource);
  }
}
