/**
 * GAE and masked whitening on the GPU (`shaders/gae.wgsl`): the WGSL twins of `gaeBatch` and
 * `whiten` in `gae.ts`, with the same definitions and mask semantics, in f32.
 *
 * GAE runs one invocation per row, scanning t = T−1 … 0 over the row's valid tokens. Whitening is a corrected
 * two-pass mean/variance over the whole batch (fixed-order partial sums, no atomics: bit-reproducible), then an
 * elementwise normalisation. Unlike the reference, which throws, whitening an all-masked input gives zeros.
 *
 * Accuracy: the GAE recursion accumulates f32 rounding like a running sum, |ΔA_t| ≈ 2⁻²⁴·√T·max|A|; for
 * rewards and values of magnitude ≤ 2 and T ≤ 64 it stays within 1e-5 of the f64 reference.
 *
 * @module
 */
import src from "../../shaders/gae.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import { grid1d, type KernelSpec, type ParamField } from "../gpu/kernel.ts";
import { rowShards } from "../gpu/shard.ts";
import { expectShape, Tensor, type TensorView } from "../gpu/tensor.ts";
import type { WhitenOptions } from "./gae.ts";

const WG = 256;
/** Rows per workgroup of the GAE scan (one invocation each). */
const WG_ROWS = 64;
/** Entries summed by one workgroup of a whitening pass. */
const CHUNK = 4096;
/** Sums per whitening partial (NPART in the shader). */
const NPART = 3;

const PARAMS: ParamField[] = [
  ["rows", "u32"],
  ["T", "u32"],
  ["n", "u32"],
  ["chunk", "u32"],
  ["groupBase", "u32"],
  ["groups", "u32"],
  ["phase", "u32"],
  ["hasMask", "u32"],
  ["unbiased", "u32"],
  ["shiftMean", "u32"],
  ["gamma", "f32"],
  ["lambda", "f32"],
];
const spec = (entry: string, wg: number, bindings: string[]): KernelSpec => ({
  name: `gae.${entry}`,
  code: src,
  entry,
  constants: { WG: wg },
  params: PARAMS,
  bindings,
});
const KERNELS = {
  gae: spec("gae", WG_ROWS, ["rewards", "values", "mask", "advantages", "returns", "", "", "", ""]),
  partials: spec("whiten_partials", WG, ["", "", "mask", "", "", "x", "partials", "scalars", ""]),
  finalize: spec("whiten_finalize", WG, ["", "", "", "", "", "", "partials", "scalars", ""]),
  apply: spec("whiten_apply", WG, ["", "", "mask", "", "", "x", "", "scalars", "y"]),
};
const ZERO = {
  rows: 0,
  T: 0,
  n: 0,
  chunk: 0,
  groupBase: 0,
  groups: 0,
  phase: 0,
  hasMask: 0,
  unbiased: 0,
  shiftMean: 0,
  gamma: 0,
  lambda: 0,
};

/** Outputs of {@linkcode gaeGpu}: (B, T) f32 tensors. */
export interface GAEGpuOutputs {
  /** Advantages A_t (0 at masked tokens). */
  advantages: Tensor;
  /** Returns R_t = A_t + V_t (0 at masked tokens). */
  returns: Tensor;
}

/** Inputs of {@linkcode gaeGpu}: (B, T) f32 tensors. */
export interface GAEGpuInputs {
  /** Per-token rewards r_t. */
  rewards: Tensor;
  /** Value predictions V_t. */
  values: Tensor;
  /** Optional 0/1 mask (1 = valid token); masked tokens are absent from the recursion. */
  mask?: Tensor;
}

/** Options of {@linkcode gaeGpu}. */
export interface GAEGpuOptions {
  /** Discount γ ∈ [0, 1]. */
  gamma: number;
  /** GAE parameter λ ∈ [0, 1]. */
  lambda: number;
}

/** Inputs of {@linkcode whitenGpu}: f32 tensors of one shape. */
export interface WhitenGpuInputs {
  /** Values to whiten (e.g. advantages). */
  x: Tensor;
  /** Optional 0/1 mask (1 = valid entry). */
  mask?: Tensor;
}

function checkF32(what: string, name: string, t: Tensor): void {
  if (t.dtype !== "f32") {
    throw new Error(`${what}: "${name}" (tensor "${t.label}") has dtype ${t.dtype}, expected f32`);
  }
}

function checkUnit(name: string, v: number): number {
  if (typeof v !== "number" || !(v >= 0 && v <= 1)) {
    throw new Error(`gae: invalid option "${name}": expected a number in [0, 1], got "${v}"`);
  }
  return v;
}

function checkNoAlias(what: string, outs: [string, Tensor][], ins: [string, Tensor | undefined][]): void {
  for (const [o, ot] of outs) {
    for (const [i, it] of ins) {
      if (it && it.buffer === ot.buffer) throw new Error(`${what}: output "${o}" aliases input "${i}"`);
    }
  }
}

/**
 * Batched GAE (as `gaeBatch`) of (B, T) rewards and values with an optional (B, T) mask:
 *
 *   δ_t = r_t + γ V_{t+1} − V_t,   A_t = δ_t + γλ A_{t+1},   R_t = A_t + V_t,
 *
 * where t+1 is the next valid token of the row and V, A after the last valid token are 0 (terminal).
 */
export function gaeGpu(batch: Batch, out: GAEGpuOutputs, inputs: GAEGpuInputs, opts: GAEGpuOptions): void {
  const what = "gae";
  const { rewards } = inputs;
  if (rewards.shape.length !== 2 || rewards.size === 0) {
    throw new Error(
      `${what}: tensor "${rewards.label}" has shape [${rewards.shape}], expected non-empty (B, T)`,
    );
  }
  const [B, T] = rewards.shape;
  const tensors: [string, Tensor | undefined][] = [
    ["rewards", rewards],
    ["values", inputs.values],
    ["mask", inputs.mask],
    ["advantages", out.advantages],
    ["returns", out.returns],
  ];
  for (const [name, t] of tensors) {
    if (!t) continue;
    checkF32(what, name, t);
    expectShape(t, [B, T], `${what}: "${name}"`);
  }
  checkNoAlias(what, [["advantages", out.advantages], ["returns", out.returns]], tensors.slice(0, 3));
  if (out.advantages.buffer === out.returns.buffer) {
    throw new Error(`${what}: outputs "advantages" and "returns" share tensor "${out.returns.label}"`);
  }
  const gamma = checkUnit("gamma", opts.gamma);
  const lambda = checkUnit("lambda", opts.lambda);
  const gpu = batch.gpu;
  const placeholder = inputs.mask ? undefined : new Tensor(gpu, [1], "f32", "gae.unused");
  for (const { start, count } of rowShards(gpu, B, T)) {
    const v = (t: Tensor) => t.view(start * T, count * T);
    const bindings = {
      rewards: v(rewards),
      values: v(inputs.values),
      mask: inputs.mask ? v(inputs.mask) : placeholder!,
      advantages: v(out.advantages),
      returns: v(out.returns),
    };
    const groups = grid1d(Math.ceil(count / WG_ROWS), gpu.limits.maxWorkgroupsPerDimension);
    batch.dispatch(KERNELS.gae, bindings, groups, {
      ...ZERO,
      rows: count,
      T,
      hasMask: inputs.mask ? 1 : 0,
      gamma,
      lambda,
    });
  }
  placeholder?.release();
}

/**
 * Masked whitening (as `whiten`) of `inputs.x` (any shape) into `out` (same shape), over all entries:
 *
 *   μ = Σ m x / n,   σ² = Σ m (x − μ)² / (n − 1),   y = (x − μ)/√(σ² + 1e−8)  (+ μ if !shiftMean),   0 if masked
 *
 * with n = Σ m; σ² divides by n when `unbiased` is false or n = 1. All entries masked gives all zeros.
 */
export function whitenGpu(
  batch: Batch,
  out: Tensor,
  inputs: WhitenGpuInputs,
  opts: WhitenOptions = {},
): void {
  const what = "whiten";
  const { x, mask } = inputs;
  const { shiftMean = true, unbiased = true } = opts;
  const N = x.size;
  if (N === 0) throw new Error(`${what}: tensor "${x.label}" of shape [${x.shape}] is empty`);
  for (const [name, t] of [["x", x], ["mask", mask], ["out", out]] as const) {
    if (!t) continue;
    checkF32(what, name, t);
    expectShape(t, x.shape, `${what}: "${name}"`);
  }
  checkNoAlias(what, [["out", out]], [["x", x], ["mask", mask]]);
  const gpu = batch.gpu;
  const shards = rowShards(gpu, N, 1);
  const groupsOf = (count: number) => Math.ceil(count / Math.min(CHUNK, count));
  const groups = shards.reduce((g, s) => g + groupsOf(s.count), 0);
  if (groups * NPART * 4 > gpu.limits.maxBindingSize) {
    throw new Error(`${what}: ${N} entries need ${groups} partial sums, more than one binding holds`);
  }
  const partials = new Tensor(gpu, [groups, NPART], "f32", "whiten.partials");
  const scalars = new Tensor(gpu, [4], "f32", "whiten.scalars");
  const placeholder = mask ? undefined : new Tensor(gpu, [1], "f32", "whiten.unused");
  const maxDim = gpu.limits.maxWorkgroupsPerDimension;
  const params = { ...ZERO, hasMask: mask ? 1 : 0, unbiased: unbiased ? 1 : 0, shiftMean: shiftMean ? 1 : 0 };
  const views = (start: number, count: number): { x: TensorView; mask: Tensor | TensorView } => ({
    x: x.view(start, count),
    mask: mask ? mask.view(start, count) : placeholder!,
  });
  for (const phase of [0, 1]) {
    let groupBase = 0;
    for (const { start, count } of shards) {
      const chunk = Math.min(CHUNK, count);
      const groups = grid1d(groupsOf(count), maxDim);
      batch.dispatch(KERNELS.partials, { ...views(start, count), partials, scalars }, groups, {
        ...params,
        n: count,
        chunk,
        groupBase,
        phase,
      });
      groupBase += groupsOf(count);
    }
    batch.dispatch(KERNELS.finalize, { partials, scalars }, [1, 1, 1], { ...params, groups, phase });
  }
  for (const { start, count } of shards) {
    const groups = grid1d(Math.ceil(count / WG), maxDim);
    const bindings = { ...views(start, count), scalars, y: out.view(start, count) };
    batch.dispatch(KERNELS.apply, bindings, groups, { ...params, n: count });
  }
  for (const t of [partials, scalars, placeholder]) t?.release();
}
