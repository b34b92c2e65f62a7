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
 * aligned for binding offsets. `extraBytes` reserves room when other rows share the binding budget.
 *
 * @example
 * ```ts
 * for (const { start, count } of rowShards(gpu, vocab, hidden)) { ... }
 * ```
 */
export function rowShards(gpu: Gpu, rows: number, rowElems: number): RowRange[] {
  const rowBytes = Math.max(1, rowElems) * 4;
  const align = gpu.limits.storageOffsetAlignment;
  const step = align / gcd(rowBytes, align); // rows per aligned block
  const fit = Math.floor(gpu.limits.maxBindingSize / rowBytes);
  const perShard = Math.floor(fit / step) * step;
  if (perShard < 1) {
    throw new Error(
      `A row of ${rowElems} elements (${rowBytes} bytes, aligned in blocks of ${step} rows) does not fit the ` +
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
