/**
 * Elementwise kernels (`shaders/elementwise.wgsl`): add, mul, axpy, scale over flat f32 tensors of any size
 * (sharded over the storage-binding limit).
 *
 * @module
 */
import src from "../../shaders/elementwise.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import { grid1d, type KernelSpec, type ParamField } from "../gpu/kernel.ts";
import { rowShards } from "../gpu/shard.ts";
import type { Tensor } from "../gpu/tensor.ts";

const WG = 256;
const PARAMS: ParamField[] = [["n", "u32"], ["alpha", "f32"]];
const spec = (entry: string, bindings: string[]): KernelSpec => ({
  name: `elementwise.${entry}`,
  code: src,
  entry,
  constants: { WG },
  params: PARAMS,
  bindings,
});
const KERNELS = {
  add: spec("add", ["a", "b", "out"]),
  mul: spec("mul", ["a", "b", "out"]),
  axpy: spec("axpy", ["a", "", "out"]),
  scale: spec("scale", ["a", "", "out"]),
};

/** Elementwise operation name. */
export type ElementwiseOp = keyof typeof KERNELS;

function run(
  batch: Batch,
  op: ElementwiseOp,
  a: Tensor,
  b: Tensor | undefined,
  out: Tensor,
  alpha: number,
): void {
  for (const t of [b, out]) {
    if (t && t.size !== a.size) {
      throw new Error(`elementwise.${op}: tensor "${t.label}" has ${t.size} elements, expected ${a.size}`);
    }
  }
  for (const { start, count } of rowShards(batch.gpu, a.size, 1)) {
    const bindings: Record<string, ReturnType<Tensor["view"]>> = {
      a: a.view(start, count),
      out: out.view(start, count),
    };
    if (b) bindings.b = b.view(start, count);
    const groups = grid1d(Math.ceil(count / WG), batch.gpu.limits.maxWorkgroupsPerDimension);
    batch.dispatch(KERNELS[op], bindings, groups, { n: count, alpha });
  }
}

/** `out = a + b` (`out` must be a different tensor). */
export function add(batch: Batch, out: Tensor, a: Tensor, b: Tensor): void {
  run(batch, "add", a, b, out, 0);
}

/** `out = a ⊙ b` (elementwise product). */
export function mul(batch: Batch, out: Tensor, a: Tensor, b: Tensor): void {
  run(batch, "mul", a, b, out, 0);
}

/** `out += α·a` in place (gradient accumulation). */
export function axpy(batch: Batch, out: Tensor, a: Tensor, opts: { alpha: number }): void {
  run(batch, "axpy", a, undefined, out, opts.alpha);
}

/** `out = α·a`. */
export function scale(batch: Batch, out: Tensor, a: Tensor, opts: { alpha: number }): void {
  run(batch, "scale", a, undefined, out, opts.alpha);
}
