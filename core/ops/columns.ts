/**
 * Column sums (`shaders/columns.wgsl`): out (C) (+)= Σ_rows x (R, C) — the bias gradient of a linear layer.
 * Rows are sharded over the storage-binding limit and the loop limit of CPU adapters; shards after the first
 * accumulate.
 *
 * @module
 */
import src from "../../shaders/columns.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import { type KernelSpec, MAX_LOOP_ITERATIONS } from "../gpu/kernel.ts";
import { rowShards } from "../gpu/shard.ts";
import { expectShape, type Tensor } from "../gpu/tensor.ts";

const WG = 64;
const SUM: KernelSpec = {
  name: "columns.sum",
  code: src,
  entry: "sum_columns",
  constants: { WG },
  params: [["rows", "u32"], ["cols", "u32"], ["accumulate", "u32"]],
  bindings: ["x", "out"],
};

/** out[j] = Σ_r x[r, j] (or `+=` with `accumulate`), x viewed as (rows, C) with C = out.size. */
export function reduceColumns(
  batch: Batch,
  out: Tensor,
  x: Tensor,
  opts: { accumulate?: boolean } = {},
): void {
  const C = out.size;
  const R = C === 0 ? 0 : x.size / C;
  if (!Number.isInteger(R)) {
    throw new Error(`columns.sum: tensor "${x.label}" of ${x.size} elements is not a (rows, ${C}) matrix`);
  }
  expectShape(out, [C], "columns.sum");
  if (C === 0) return;
  if (R === 0) {
    if (!opts.accumulate) batch.clear(out);
    return;
  }
  // Each invocation loops over its dispatch's rows: at most MAX_LOOP_ITERATIONS per dispatch (lavapipe).
  rowShards(batch.gpu, R, C, { maxRows: MAX_LOOP_ITERATIONS }).forEach(({ start, count }, i) => {
    const accumulate = opts.accumulate || i > 0 ? 1 : 0;
    batch.dispatch(SUM, { x: x.view(start * C, count * C), out }, [Math.ceil(C / WG)], {
      rows: count,
      cols: C,
      accumulate,
    });
  });
}
