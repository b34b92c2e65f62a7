/**
 * Sharding of tensors larger than the storage-binding limit: kernels are dispatched once per shard, each binding
 * a view of at most `maxBindingSize` bytes that starts on an aligned offset.
 *
 * @module
 */
import type { Gpu } from "./device.ts";

/** A range of rows `[start, start + count)`. */
export interface RowRange {
  start: number;
  count: number;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Splits `rows` rows of `rowElems` f32 elements into ranges whose bytes fit one binding and whose starts are
 * aligned for binding offsets (and, with `maxRows`, hold at most that many rows: a kernel whose invocations loop
 * over the rows stays within `MAX_LOOP_ITERATIONS` of kernel.ts). When several tensors are sharded by the same rows (e.g. logits (R, V) and their
 * per-row outputs (R)), pass every row size: each shard start is then aligned for all of them and the largest
 * fits the binding limit.
 *
 * @example
 * ```ts
 * for (const { start, count } of rowShards(gpu, vocab, hidden)) { ... }
 * ```
 */
export function rowShards(
  gpu: Gpu,
  rows: number,
  rowElems: number | readonly number[],
  opts: { maxRows?: number } = {},
): RowRange[] {
  const sizes = typeof rowElems === "number" ? [rowElems] : rowElems;
  const align = gpu.limits.storageOffsetAlignment;
  let step = 1; // rows per block aligned for every size: lcm of each size's step
  for (const e of sizes) {
    const s = align / gcd(Math.max(1, e) * 4, align);
    step = (step * s) / gcd(step, s);
  }
  const rowBytes = Math.max(1, ...sizes) * 4;
  const fit = Math.floor(gpu.limits.maxBindingSize / rowBytes);
  const perShard = Math.floor(Math.min(fit, opts.maxRows ?? Infinity) / step) * step;
  if (perShard < 1) {
    throw new Error(
      `A row of ${
        rowBytes / 4
      } elements (${rowBytes} bytes, aligned in blocks of ${step} rows) does not fit the ` +
        `storage binding limit of ${gpu.limits.maxBindingSize} bytes`,
    );
  }
  const out: RowRange[] = [];
  for (let start = 0; start < rows; start += perShard) {
    out.push({ start, count: Math.min(perShard, rows - start) });
  }
  if (out.length === 0) out.push({ start: 0, count: 0 });
  return out;
}
