/**
 * Fused grouped-query causal attention (`shaders/attention.wgsl`), Hugging Face Qwen2 semantics.
 *
 * With `x_s = scale · q·k_s` (scale = 1/√D by default) over the keys s a query may see:
 * `out = Σ_s softmax(x)_s · v_s`, and `lse = log Σ_s e^(x_s)` is saved for the backward pass. Query head h uses
 * kv head `h / (H / KVH)`. Query t (of T) sits at key position `t + (S − T)`, so a KV cache of `S − T` earlier
 * keys works; it sees key s iff `s ≤ t + (S − T)` and `keyMask[b, s] ≠ 0`. A query that sees no key at all
 * (a left-padding row) outputs 0 with `lse = 0`.
 *
 * The forward keeps no T×S matrix (online softmax, flash-attention style). The backward recomputes the
 * probabilities from `lse`: `dS = P ⊙ (dout·vᵀ − δ)` with `δ = Σ_d dout·out`, `dq = scale·dS·k`,
 * `dk = scale·dSᵀ·q`, `dv = Pᵀ·dout`; dk and dv sum over the query heads sharing a kv head. All outputs are
 * written (activation gradients) and deterministic (each element accumulated by one thread in a fixed order,
 * no atomics).
 *
 * One pipeline per entry point serves every head dim: the tile shape (R rows × BK keys) is a uniform sized to
 * the device's workgroup memory. Every tensor is bound whole: a tensor over the storage-binding limit is
 * reported by the batch.
 *
 * @module
 */
import src from "../../shaders/attention.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import {
  grid1d,
  type KernelSpec,
  MAX_LOOP_ITERATIONS,
  type ParamField,
  useRowsVariant,
} from "../gpu/kernel.ts";
import { expectShape, Tensor } from "../gpu/tensor.ts";
import { attentionRowsWgsl, ROWS_MAX_HEAD_DIM, rowsBlock } from "./attention_rows.ts";

const WG = 128;
const ACC_MAX = 16; // ACC_MAX and RMAX as in the shader
const RMAX = 64;
const PARAMS: ParamField[] = [
  ["T", "u32"],
  ["S", "u32"],
  ["H", "u32"],
  ["KVH", "u32"],
  ["D", "u32"],
  ["has_mask", "u32"],
  ["scale", "f32"],
  ["rows", "u32"],
  ["R", "u32"],
  ["BK", "u32"],
];
const BINDINGS: Record<string, string[]> = {
  forward: ["q", "k", "v", "keyMask", "out", "lse", "", "", "", "", ""],
  backward_delta: ["", "", "", "", "out", "lse", "dout", "stats", "", "", ""],
  backward_dq: ["q", "k", "v", "keyMask", "", "", "dout", "stats", "dq", "", ""],
  backward_dkv: ["q", "k", "v", "keyMask", "", "", "dout", "stats", "", "dk", "dv"],
};

/** Options of {@linkcode attentionForward} and {@linkcode attentionBackward}. */
export interface AttentionOptions {
  /** Key mask (B, S), i32, 0 = padding key (never attended). Omitted: every key is real. */
  keyMask?: Tensor;
  /** Score scale (default `1 / sqrt(D)`). */
  scale?: number;
  /**
   * Kernel family: `"tiled"` (workgroup-memory tiles, for GPUs), `"rows"` (one invocation per row with the
   * row in registers, no workgroup memory: for CPU adapters; head dim a multiple of 4 up to 256) or `"auto"`
   * (default: rows on a CPU adapter when the head dim allows, else tiled).
   */
  variant?: "auto" | "tiled" | "rows";
  /**
   * Rows family: query (forward, dq) or key (dkv) positions per invocation, 1, 2, 4 or 8 (default: by head dim
   * and length, see `rowsBlock`). Results are bitwise the same for every value; tests pin it.
   */
  rowsBlock?: number;
}

interface Dims {
  B: number;
  T: number;
  S: number;
  H: number;
  KVH: number;
  D: number;
}

/**
 * Tile capacity CAP (floats) of the device: the backward_dkv kernel keeps six CAP-float tiles and three
 * RMAX-float row vectors in workgroup memory; CAP is a multiple of WG, at most ACC_MAX·WG.
 */
function tileCapacity(gpu: Gpu): number {
  const fit = Math.floor((gpu.limits.maxWorkgroupStorageSize - 3 * RMAX * 4) / (6 * 4) / WG) * WG;
  return Math.min(ACC_MAX * WG, fit);
}

/** Kernel of one entry point (one pipeline per device: the tile shape is a uniform). */
function kernel(gpu: Gpu, entry: string): KernelSpec {
  const cap = tileCapacity(gpu);
  return {
    name: `attention.${entry}`,
    code: src,
    entry,
    constants: { WG, CAP: cap, ACC: cap / WG },
    params: PARAMS,
    bindings: BINDINGS[entry],
  };
}

const ROWS_WG = 32;
const rowSpecs = new Map<string, KernelSpec>();

/**
 * Kernel of one entry point of the rows family (`attention_rows.ts`) for head dim D and `block` positions per
 * invocation (one pipeline per D and block).
 */
function rowsKernel(entry: string, D: number, block: number): KernelSpec {
  const key = `${entry}.${D}.${block}`;
  let s = rowSpecs.get(key);
  if (!s) {
    s = {
      name: `attention_rows.${entry}`,
      code: attentionRowsWgsl({ d4: D / 4, block }),
      entry,
      constants: { WG: ROWS_WG },
      params: PARAMS,
      bindings: BINDINGS[entry],
    };
    rowSpecs.set(key, s);
  }
  return s;
}

/** Positions per invocation of the rows family for `n` positions (the option, or by head dim). */
function blockOf(d: Dims, n: number, opts: AttentionOptions): number {
  const b = opts.rowsBlock ?? rowsBlock(d.D, n);
  if (![1, 2, 4, 8].includes(b)) throw new Error(`attention: rowsBlock must be 1, 2, 4 or 8, got ${b}`);
  return b;
}

/**
 * Whether the rows family runs this call (see {@linkcode AttentionOptions.variant}). Its invocations loop over
 * the S keys (forward, dq) or over T query positions × (G + 1) (dkv), which must stay within the loop budget of
 * CPU adapters (`MAX_LOOP_ITERATIONS`); longer calls run the tiled kernel under "auto".
 */
function useRows(gpu: Gpu, d: Dims, opts: AttentionOptions, what: string): boolean {
  const loops = d.S * (d.H / d.KVH + 1);
  const unfit = !(d.D % 4 === 0 && d.D <= ROWS_MAX_HEAD_DIM)
    ? `the rows kernel needs a head dim that is a multiple of 4 up to 256, got ${d.D}`
    : loops > MAX_LOOP_ITERATIONS
    ? `the rows kernel's invocations would loop ${loops} times (S ${d.S} × (G ${d.H / d.KVH} + 1)), ` +
      `more than the ${MAX_LOOP_ITERATIONS} a CPU adapter runs`
    : undefined;
  return useRowsVariant(gpu, opts.variant, what, unfit);
}

/** Rows per workgroup R = keys per tile BK, with R·D, BK·D and R·BK within the tile capacity. */
function tileRows(gpu: Gpu, D: number, what: string): number {
  const cap = tileCapacity(gpu);
  if (D > cap) {
    throw new Error(
      `${what}: head dim ${D} exceeds the ${cap}-float attention tile this device's workgroup memory allows`,
    );
  }
  return Math.min(RMAX, Math.floor(cap / D), Math.floor(Math.sqrt(cap)));
}

function dims(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions, what: string): Dims {
  if (q.shape.length !== 4) {
    throw new Error(`${what}: tensor "${q.label}" has shape [${q.shape}], expected (B, T, H, D)`);
  }
  if (k.shape.length !== 4) {
    throw new Error(`${what}: tensor "${k.label}" has shape [${k.shape}], expected (B, S, KVH, D)`);
  }
  const [B, T, H, D] = q.shape;
  const [, S, KVH] = k.shape;
  expectShape(k, [B, S, KVH, D], what);
  expectShape(v, k.shape, what);
  if (KVH === 0 || H % KVH !== 0) {
    throw new Error(
      `${what}: ${H} query heads of "${q.label}" are not a multiple of ${KVH} kv heads of "${k.label}"`,
    );
  }
  if (S < T) {
    throw new Error(
      `${what}: tensor "${k.label}" has ${S} keys, fewer than the ${T} queries of "${q.label}"`,
    );
  }
  if (D < 1) throw new Error(`${what}: tensor "${q.label}" has head dim ${D}, expected at least 1`);
  const m = opts.keyMask;
  if (m) {
    if (m.dtype !== "i32") throw new Error(`${what}: key mask "${m.label}" must be i32, got ${m.dtype}`);
    expectShape(m, [B, S], what);
  }
  if (opts.scale !== undefined && !Number.isFinite(opts.scale)) {
    throw new Error(`${what}: scale must be a finite number, got ${opts.scale}`);
  }
  return { B, T, S, H, KVH, D };
}

const noMask = new WeakMap<Gpu, Tensor>();

/** The mask binding: the caller's mask, or a 1-element placeholder the kernels never read. */
function maskBinding(gpu: Gpu, opts: AttentionOptions): Tensor {
  if (opts.keyMask) return opts.keyMask;
  let t = noMask.get(gpu);
  if (!t || t.released) noMask.set(gpu, t = new Tensor(gpu, [1], "i32", "attention.no_mask"));
  return t;
}

function params(d: Dims, opts: AttentionOptions, R: number, rows = 0): Record<string, number> {
  const { T, S, H, KVH, D } = d;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  return { T, S, H, KVH, D, has_mask: opts.keyMask ? 1 : 0, scale, rows, R, BK: R };
}

/**
 * Attention forward: `out = softmax(scale·q·kᵀ + causal/padding mask)·v`, plus the row log-sum-exp `lse`.
 *
 * Shapes: `q`, `out`: (B, T, H, D); `k`, `v`: (B, S, KVH, D) with S ≥ T; `lse`: (B, T, H);
 * `opts.keyMask`: (B, S) i32.
 */
export function attentionForward(
  batch: Batch,
  out: Tensor,
  lse: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: AttentionOptions = {},
): void {
  const what = "attention.forward";
  const d = dims(q, k, v, opts, what);
  expectShape(out, q.shape, what);
  expectShape(lse, [d.B, d.T, d.H], what);
  const bindings = { q, k, v, keyMask: maskBinding(batch.gpu, opts), out, lse };
  if (useRows(batch.gpu, d, opts, what)) {
    const block = blockOf(d, d.T, opts);
    const rows = d.B * Math.ceil(d.T / block) * d.H;
    const grid = grid1d(Math.ceil(rows / ROWS_WG), batch.gpu.limits.maxWorkgroupsPerDimension);
    batch.dispatch(rowsKernel("forward", d.D, block), bindings, grid, params(d, opts, 0, rows));
    return;
  }
  const R = tileRows(batch.gpu, d.D, what);
  const groups = [Math.ceil((d.T * d.H / d.KVH) / R), d.KVH, d.B];
  batch.dispatch(kernel(batch.gpu, "forward"), bindings, groups, params(d, opts, R));
}

/**
 * Attention backward: writes `dq`, `dk`, `dv` from `dout` and the forward's `out` and `lse`
 * (dk, dv summed over the H/KVH query heads of each kv head). Shapes as {@linkcode attentionForward}, with
 * `dq`, `dout` like `q` and `dk`, `dv` like `k`. Pass the same options as the forward.
 */
export function attentionBackward(
  batch: Batch,
  dq: Tensor,
  dk: Tensor,
  dv: Tensor,
  dout: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  opts: AttentionOptions = {},
): void {
  const what = "attention.backward";
  const d = dims(q, k, v, opts, what);
  for (const t of [dq, dout, out]) expectShape(t, q.shape, what);
  for (const t of [dk, dv]) expectShape(t, k.shape, what);
  expectShape(lse, [d.B, d.T, d.H], what);
  const gpu = batch.gpu;
  const rowsVariant = useRows(gpu, d, opts, what);
  const R = rowsVariant ? 0 : tileRows(gpu, d.D, what);
  const keyMask = maskBinding(gpu, opts);
  const rows = d.B * d.T * d.H;
  const stats = new Tensor(gpu, [d.B, d.T, d.H, 2], "f32", "attention.stats");
  try {
    const grid = grid1d(Math.ceil(rows / WG), gpu.limits.maxWorkgroupsPerDimension);
    batch.dispatch(kernel(gpu, "backward_delta"), { out, lse, dout, stats }, grid, params(d, opts, R, rows));
    if (rowsVariant) {
      const max = gpu.limits.maxWorkgroupsPerDimension;
      const qBlock = blockOf(d, d.T, opts);
      const queries = d.B * Math.ceil(d.T / qBlock) * d.H;
      batch.dispatch(
        rowsKernel("backward_dq", d.D, qBlock),
        { q, k, v, keyMask, dout, stats, dq },
        grid1d(Math.ceil(queries / ROWS_WG), max),
        params(d, opts, 0, queries),
      );
      const kBlock = blockOf(d, d.S, opts);
      const keys = d.B * Math.ceil(d.S / kBlock) * d.KVH;
      const kGrid = grid1d(Math.ceil(keys / ROWS_WG), max);
      const dkvBindings = { q, k, v, keyMask, dout, stats, dk, dv };
      batch.dispatch(rowsKernel("backward_dkv", d.D, kBlock), dkvBindings, kGrid, params(d, opts, 0, keys));
      return;
    }
    const qGroups = [Math.ceil((d.T * d.H / d.KVH) / R), d.KVH, d.B];
    const dqBindings = { q, k, v, keyMask, dout, stats, dq };
    batch.dispatch(kernel(gpu, "backward_dq"), dqBindings, qGroups, params(d, opts, R));
    const kGroups = [Math.ceil(d.S / R), d.KVH, d.B];
    const dkvBindings = { q, k, v, keyMask, dout, stats, dk, dv };
    batch.dispatch(kernel(gpu, "backward_dkv"), dkvBindings, kGroups, params(d, opts, R));
  } finally {
    stats.release(); // reusable once this batch is submitted
  }
}
