/**
 * SwiGLU kernels (`shaders/swiglu.wgsl`) of the Qwen2 MLP: `h = silu(gate) ⊙ up` with `silu(g) = g·σ(g)`.
 *
 * Backward: `dgate = dh ⊙ up ⊙ σ(g)·(1 + g·(1 − σ(g)))`, `dup = dh ⊙ silu(g)` (activation grads, written).
 * Two layouts: separate `gate`/`up` tensors of the same shape, or one fused `(..., 2I)` tensor holding
 * `[gate | up]` per row. Tensors over the storage-binding limit are sharded.
 *
 * @module
 */
import src from "../../shaders/swiglu.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import { grid1d, type KernelSpec, type ParamField } from "../gpu/kernel.ts";
import { type RowRange, rowShards } from "../gpu/shard.ts";
import { expectShape, type Tensor } from "../gpu/tensor.ts";

const WG = 256;
const PARAMS: ParamField[] = [["n", "u32"], ["I", "u32"]];
const spec = (entry: string, bindings: string[]): KernelSpec => ({
  name: `swiglu.${entry}`,
  code: src,
  entry,
  constants: { WG },
  params: PARAMS,
  bindings,
});
const KERNELS = {
  forward: spec("forward", ["gate", "up", "out", "", "", "", "", ""]),
  backward: spec("backward", ["gate", "up", "", "dout", "dgate", "dup", "", ""]),
  forwardFused: spec("forward_fused", ["", "", "out", "", "", "", "gateUp", ""]),
  backwardFused: spec("backward_fused", ["", "", "", "dout", "", "", "gateUp", "dGateUp"]),
};

function groups(batch: Batch, n: number): [number, number, number] {
  return grid1d(Math.ceil(n / WG), batch.gpu.limits.maxWorkgroupsPerDimension);
}

/** `out = silu(gate) ⊙ up`. Shapes: `gate`, `up`, `out`: any shape, all equal (e.g. (B, T, I)). */
export function swigluForward(batch: Batch, out: Tensor, gate: Tensor, up: Tensor): void {
  expectShape(up, gate.shape, "swiglu.forward");
  expectShape(out, gate.shape, "swiglu.forward");
  for (const { start, count } of rowShards(batch.gpu, gate.size, 1)) {
    if (count === 0) continue;
    const v = (t: Tensor) => t.view(start, count);
    batch.dispatch(KERNELS.forward, { gate: v(gate), up: v(up), out: v(out) }, groups(batch, count), {
      n: count,
      I: 1,
    });
  }
}

/**
 * Backward of {@linkcode swigluForward}: writes `dgate = dout ⊙ up ⊙ σ(g)(1 + g(1 − σ(g)))` and
 * `dup = dout ⊙ silu(g)`. Shapes: all equal to `gate`'s.
 */
export function swigluBackward(
  batch: Batch,
  dgate: Tensor,
  dup: Tensor,
  dout: Tensor,
  gate: Tensor,
  up: Tensor,
): void {
  for (const t of [up, dout, dgate, dup]) expectShape(t, gate.shape, "swiglu.backward");
  for (const { start, count } of rowShards(batch.gpu, gate.size, 1)) {
    if (count === 0) continue;
    const v = (t: Tensor) => t.view(start, count);
    const views = { gate: v(gate), up: v(up), dout: v(dout), dgate: v(dgate), dup: v(dup) };
    batch.dispatch(KERNELS.backward, views, groups(batch, count), { n: count, I: 1 });
  }
}

/** Row ranges whose `(rows, 2I)` views fit one binding and whose `(rows, I)` views start aligned too. */
function fusedShards(gpu: Gpu, rows: number, I: number): RowRange[] {
  const whole = rowShards(gpu, rows, 2 * I);
  if (whole.length <= 1) return whole;
  const align = gpu.limits.storageOffsetAlignment;
  let step = 1; // rows per aligned block of an (rows, I) view (a power of two: align is one)
  while (((step * I * 4) % align) !== 0) step *= 2;
  const per = Math.floor(whole[0].count / step) * step;
  if (per < 1) {
    throw new Error(
      `A fused SwiGLU row of ${2 * I} elements cannot be bound in aligned blocks of ${step} rows`,
    );
  }
  const out: RowRange[] = [];
  for (let start = 0; start < rows; start += per) out.push({ start, count: Math.min(per, rows - start) });
  return out;
}

/** Rows and inner width I of a fused `(..., 2I)` tensor, checking `half` is `(..., I)`. */
function fusedDims(gateUp: Tensor, half: Tensor, what: string): { rows: number; I: number } {
  const last = gateUp.shape[gateUp.shape.length - 1] ?? 0;
  if (gateUp.shape.length < 1 || last % 2 !== 0) {
    throw new Error(`${what}: tensor "${gateUp.label}" has shape [${gateUp.shape}], expected (..., 2I)`);
  }
  const I = last / 2;
  expectShape(half, [...gateUp.shape.slice(0, -1), I], what);
  return { rows: I === 0 ? 0 : gateUp.size / last, I };
}

/**
 * Fused forward: `out[r, :] = silu(gateUp[r, :I]) ⊙ gateUp[r, I:]`.
 * Shapes: `gateUp`: (..., 2I); `out`: (..., I).
 */
export function swigluFusedForward(batch: Batch, out: Tensor, gateUp: Tensor): void {
  const { rows, I } = fusedDims(gateUp, out, "swiglu.forward_fused");
  for (const { start, count } of fusedShards(batch.gpu, rows, I)) {
    if (count === 0) continue;
    const views = { out: out.view(start * I, count * I), gateUp: gateUp.view(start * 2 * I, count * 2 * I) };
    batch.dispatch(KERNELS.forwardFused, views, groups(batch, count * I), { n: count * I, I });
  }
}

/**
 * Fused backward: writes `dGateUp[r, :I] = dgate` and `dGateUp[r, I:] = dup` (formulas of
 * {@linkcode swigluBackward}). Shapes: `gateUp`, `dGateUp`: (..., 2I); `dout`: (..., I).
 */
export function swigluFusedBackward(batch: Batch, dGateUp: Tensor, dout: Tensor, gateUp: Tensor): void {
  const { rows, I } = fusedDims(gateUp, dout, "swiglu.backward_fused");
  expectShape(dGateUp, gateUp.shape, "swiglu.backward_fused");
  for (const { start, count } of fusedShards(batch.gpu, rows, I)) {
    if (count === 0) continue;
    const views = {
      dout: dout.view(start * I, count * I),
      gateUp: gateUp.view(start * 2 * I, count * 2 * I),
      dGateUp: dGateUp.view(start * 2 * I, count * 2 * I),
    };
    batch.dispatch(KERNELS.backwardFused, views, groups(batch, count * I), { n: count * I, I });
  }
}
