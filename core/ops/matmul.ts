/**
 * Matrix multiply (`shaders/matmul.wgsl`, `core/ops/matmul_codegen.ts`):
 * `out = op(a)·op(b) [+ out] [+ bias]` with `op(x) = x` or `xᵀ`, batched, for tensors of any size.
 *
 * Two kernel families, chosen per adapter:
 * - real GPUs: `tiled`, a workgroup-memory tiled kernel reading the tensors in place, in the tile configuration
 *   `tile` ({@linkcode GPU_TILES}; default {@linkcode DEFAULT_GPU_TILE});
 * - CPU adapters (lavapipe): a generated register-blocked kernel (16×16 outputs per invocation, 4 along a dimension
 *   of at most 8; no workgroup memory) that reads the operands from a packed copy made by a pack kernel in the
 *   same batch — read-only storage textures when the runtime binds textures, otherwise padded `vec4` buffers —
 *   except an operand each of whose elements only a few invocations read (the weight in a forward of a few
 *   rows, e.g. a decode step), which it reads in place.
 *
 * Tensors larger than the storage-binding limit (or the texture size limit) are split into chunks over batches,
 * rows of C, columns of C and K; K chunks after the first accumulate into `out`.
 *
 * @example
 * ```ts
 * // y (T, out) = x (T, in) · Wᵀ + b, with W stored (out, in) as in HF checkpoints
 * matmul(batch, { out: y, a: x, b: w, transB: true, bias: b });
 * // weight gradient dW (out, in) += dYᵀ (out, T) · x (T, in)
 * matmul(batch, { out: dW, a: dY, b: x, transA: true, accumulate: true });
 * ```
 *
 * @module
 */
import src from "../../shaders/matmul.wgsl" with { type: "text" };
import { Batch } from "../gpu/batch.ts";
import type { KernelSpec, ParamField } from "../gpu/kernel.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { CPU_TILE, dummyTensor, runCpu, viewOf } from "./matmul_cpu.ts";
import { type ChunkPlan, type MatmulDims, planChunks } from "./matmul_plan.ts";

export { CPU_TILE } from "./matmul_cpu.ts";
export type { MatmulDims } from "./matmul_plan.ts";

/** Options of {@linkcode matmul}. */
export interface MatmulOptions {
  /** Output `(..., M, N)`; must not alias `a`, `b` or `bias`. */
  out: Tensor;
  /** Left operand `(..., M, K)`, or `(..., K, M)` with `transA`. A 2-D `a` is shared by every batch. */
  a: Tensor;
  /** Right operand `(..., K, N)`, or `(..., N, K)` with `transB`. A 2-D `b` is shared by every batch. */
  b: Tensor;
  /** Use `aᵀ` (a stored `(K, M)`). */
  transA?: boolean;
  /** Use `bᵀ` (b stored `(N, K)`, e.g. a linear layer's weight `(out, in)`). */
  transB?: boolean;
  /** Bias `(N)` added to every row. */
  bias?: Tensor;
  /** Add into `out` (`out += a·b`) instead of overwriting it (gradient accumulation). */
  accumulate?: boolean;
  /** Kernel family: `"auto"` (by adapter), `"tiled"` (GPU kernel) or `"cpu"` (packed register-blocked). */
  variant?: "auto" | "tiled" | "cpu";
  /** Packed-operand storage of the CPU kernel: `"auto"` (textures when the runtime binds them), or forced. */
  cpuSource?: "auto" | "texture" | "buffer";
  /** Tile configuration of the GPU kernel (default {@linkcode DEFAULT_GPU_TILE}). */
  tile?: GpuTile;
}

/**
 * A tile configuration of the GPU (`tiled`) kernel: each workgroup computes a `bm × bn` block of C, staging `bk`
 * columns of A and rows of B at a time through workgroup memory; each invocation owns `tm × tn` outputs, so a
 * workgroup has `(bm/tm)·(bn/tn)` invocations.
 */
export interface GpuTile {
  bm: number;
  bn: number;
  bk: number;
  tm: number;
  tn: number;
}

/** Tile configurations of the GPU kernel, by name `BMxBNxBK/TMxTN`. */
export const GPU_TILES: Readonly<Record<string, GpuTile>> = Object.fromEntries(
  ([
    [64, 64, 16, 4, 4],
    [64, 64, 16, 8, 8],
    [64, 64, 8, 8, 4],
    [128, 64, 16, 8, 4],
    [128, 128, 8, 8, 8],
    [128, 128, 16, 8, 8],
  ] as const).map(([bm, bn, bk, tm, tn]) => {
    const t = { bm, bn, bk, tm, tn };
    return [tileName(t), t];
  }),
);

/** The name of a tile configuration, `BMxBNxBK/TMxTN`. */
export function tileName(t: GpuTile): string {
  return `${t.bm}x${t.bn}x${t.bk}/${t.tm}x${t.tn}`;
}

/**
 * The GPU kernel's default tile configuration: 64×64 C tile, K step 16, 4×4 outputs per invocation (256
 * invocations). On an H200 (Vulkan) it was the fastest of {@linkcode GPU_TILES} on every shape measured, or within
 * 1% (2048×4864×896), from 256³ to a 512×896×32768 LM head: 1.9 TFLOP/s at 1024³, 2.3 at 2048³; the larger
 * tiles lose at most shapes (fewer workgroups than the GPU has SMs, more registers per invocation).
 */
export const DEFAULT_GPU_TILE: GpuTile = GPU_TILES["64x64x16/4x4"];

/** Throws unless `t` is a tile configuration the GPU kernel can run within `limits`. */
export function checkTile(
  t: GpuTile,
  limits: {
    maxInvocationsPerWorkgroup: number;
    maxWorkgroupStorageSize: number;
    maxWorkgroupSizeX?: number;
    maxWorkgroupSizeY?: number;
  },
): void {
  const bad = (why: string) => {
    throw new Error(`matmul: tile ${tileName(t)} ${why}`);
  };
  for (const [k, v] of Object.entries(t)) {
    if (!Number.isInteger(v) || v < 1) bad(`has ${k} = ${v}, expected a positive integer`);
  }
  if (t.tm % 4 || t.tn % 4) bad("needs tm and tn to be multiples of 4");
  if (t.bm % t.tm || t.bn % t.tn) bad("needs bm a multiple of tm and bn a multiple of tn");
  const wx = t.bn / t.tn, wy = t.bm / t.tm, threads = wx * wy;
  if (wx > (limits.maxWorkgroupSizeX ?? Infinity) || wy > (limits.maxWorkgroupSizeY ?? Infinity)) {
    bad(
      `has a ${wx}×${wy} workgroup, the device allows ${limits.maxWorkgroupSizeX}×${limits.maxWorkgroupSizeY}`,
    );
  }
  if (threads > limits.maxInvocationsPerWorkgroup) {
    bad(`has ${threads} invocations per workgroup, the device allows ${limits.maxInvocationsPerWorkgroup}`);
  }
  const bytes = 4 * t.bk * (t.bm + t.bn);
  if (bytes > limits.maxWorkgroupStorageSize) {
    bad(`needs ${bytes} bytes of workgroup memory, the device allows ${limits.maxWorkgroupStorageSize}`);
  }
}

const TILED_PARAMS: ParamField[] = [
  ["M", "u32"],
  ["N", "u32"],
  ["K", "u32"],
  ["lda", "u32"],
  ["ldb", "u32"],
  ["ldc", "u32"],
  ["offA", "u32"],
  ["offB", "u32"],
  ["offC", "u32"],
  ["offBias", "u32"],
  ["strideA", "u32"],
  ["strideB", "u32"],
  ["strideC", "u32"],
  ["flags", "u32"],
];
const tiledSpecs = new Map<string, KernelSpec>();
function tiledSpec(transA: boolean, transB: boolean, tile: GpuTile): KernelSpec {
  const key = `${transA ? "t" : "n"}${transB ? "t" : "n"}.${tileName(tile)}`;
  let s = tiledSpecs.get(key);
  if (!s) {
    s = {
      name: `matmul.tiled.${key}`,
      code: withTile(src, tile),
      entry: "tiled",
      constants: { TRANS_A: transA ? 1 : 0, TRANS_B: transB ? 1 : 0 },
      params: TILED_PARAMS,
      bindings: ["a", "b", "c", "bias"],
    };
    tiledSpecs.set(key, s);
  }
  return s;
}

/** `matmul.wgsl` with the tiled kernel's five tile constants set to `t`. */
function withTile(code: string, t: GpuTile): string {
  for (const [name, v] of [["BM", t.bm], ["BN", t.bn], ["BK", t.bk], ["TM", t.tm], ["TN", t.tn]] as const) {
    const line = new RegExp(`^const ${name}: u32 = \\d+u;`, "m");
    if (!line.test(code)) throw new Error(`matmul.wgsl: no "const ${name}: u32 = …u;" line to set`);
    code = code.replace(line, `const ${name}: u32 = ${v}u;`);
  }
  return code;
}

/**
 * True when the runtime can bind texture views in a dispatch (it advertises that with a static
 * `textureBindings = true` on its Batch class); the CPU kernel then packs operands into storage textures.
 */
export function canBindTextures(batch?: Batch): boolean {
  const cls = (batch?.constructor ?? Batch) as unknown as { textureBindings?: boolean };
  return cls.textureBindings === true;
}

/** Chooses the kernel family and packed storage for a call. */
function choose(batch: Batch, opts: MatmulOptions): { kind: "tiled" | "cpu"; source: "texture" | "buffer" } {
  const variant = opts.variant ?? "auto";
  const kind = variant === "auto" ? (batch.gpu.isCpu ? "cpu" : "tiled") : variant;
  let source = opts.cpuSource ?? "auto";
  if (source === "auto") source = canBindTextures(batch) ? "texture" : "buffer";
  if (kind === "cpu" && source === "texture" && !canBindTextures(batch)) {
    throw new Error(
      `matmul: cpuSource "texture" needs a runtime that binds texture views (Batch.textureBindings)`,
    );
  }
  return { kind, source };
}

function lead(shape: readonly number[]): number {
  return shape.slice(0, -2).reduce((x, y) => x * y, 1);
}

function dims2(t: Tensor, what: string): [number, number] {
  if (t.shape.length < 2) {
    throw new Error(`matmul: ${what} "${t.label}" has shape [${t.shape}], expected 2 or more dims`);
  }
  return [t.shape[t.shape.length - 2], t.shape[t.shape.length - 1]];
}

/** Validates shapes and returns the problem dimensions. */
export function matmulDims(opts: MatmulOptions): MatmulDims {
  const { a, b, out } = opts;
  const transA = opts.transA ?? false, transB = opts.transB ?? false;
  const [ar, ac] = dims2(a, "a"), [br, bc] = dims2(b, "b"), [M, N] = dims2(out, "out");
  const [am, K] = transA ? [ac, ar] : [ar, ac];
  const [bk, bn] = transB ? [bc, br] : [br, bc];
  if (am !== M || bn !== N || bk !== K) {
    throw new Error(
      `matmul: shapes do not agree: out "${out.label}" [${out.shape}], a "${a.label}" [${a.shape}]` +
        `${transA ? "ᵀ" : ""}, b "${b.label}" [${b.shape}]${
          transB ? "ᵀ" : ""
        } (expected out (M,N) = a (M,K) · b (K,N))`,
    );
  }
  const batches = lead(out.shape);
  for (const [t, what] of [[a, "a"], [b, "b"]] as const) {
    const l = lead(t.shape);
    if (t.shape.length > 2 && l !== batches) {
      throw new Error(`matmul: ${what} "${t.label}" has ${l} batches, out "${out.label}" has ${batches}`);
    }
  }
  if (opts.bias && (opts.bias.size !== N)) {
    throw new Error(`matmul: bias "${opts.bias.label}" has ${opts.bias.size} elements, expected N = ${N}`);
  }
  for (const t of [a, b, opts.bias]) {
    if (t && t.buffer === out.buffer) {
      throw new Error(`matmul: out "${out.label}" aliases input "${t.label}"`);
    }
  }
  const strideA = a.shape.length > 2 ? M * K : 0, strideB = b.shape.length > 2 ? K * N : 0;
  if (batches > 1 && strideA && !strideB && !transA) {
    // x (B, T, K) · W: one (B·T, K) product (the batches of a and out are contiguous rows)
    return { M: M * batches, N, K, batches: 1, transA, transB, strideA: 0, strideB: 0, strideC: 0 };
  }
  return { M, N, K, batches, transA, transB, strideA, strideB, strideC: M * N };
}

/** `out = op(a)·op(b) [+ out] [+ bias]`; see {@linkcode MatmulOptions}. Records dispatches into `batch`. */
export function matmul(batch: Batch, opts: MatmulOptions): void {
  const d = matmulDims(opts);
  if (d.M === 0 || d.N === 0 || d.batches === 0) return;
  const { kind, source } = choose(batch, opts);
  const gpu = batch.gpu;
  const plan = planChunks(d, {
    kind,
    source,
    ku: CPU_TILE.ku,
    maxBindingElems: Math.floor(gpu.limits.maxBindingSize / 4),
    alignElems: Math.max(1, gpu.limits.storageOffsetAlignment / 4),
    maxTexture: gpu.device.limits.maxTextureDimension2D,
  });
  if (kind === "tiled") runTiled(batch, opts, d, plan);
  else runCpu(batch, { ...opts, dims: d, plan, source });
}

function runTiled(batch: Batch, opts: MatmulOptions, d: MatmulDims, plan: ChunkPlan): void {
  const al = Math.max(1, batch.gpu.limits.storageOffsetAlignment / 4);
  const tile = opts.tile ?? DEFAULT_GPU_TILE;
  // A caller's tile is checked against this device; the default fits WebGPU's minimum limits, so every device
  // (16×16 invocations, 8 KiB of workgroup memory; tests/matmul_test.ts checks GPU_TILES against such limits).
  if (opts.tile) {
    const dl = batch.gpu.device.limits;
    checkTile(tile, {
      ...batch.gpu.limits,
      maxWorkgroupSizeX: dl.maxComputeWorkgroupSizeX,
      maxWorkgroupSizeY: dl.maxComputeWorkgroupSizeY,
    });
  }
  const spec = tiledSpec(d.transA, d.transB, tile);
  const lda = d.transA ? d.M : d.K, ldb = d.transB ? d.K : d.N;
  for (const ch of plan.chunks) {
    const a0 = ch.b0 * d.strideA + (d.transA ? ch.k0 * lda + ch.m0 : ch.m0 * lda + ch.k0);
    const aLen = (ch.bc - 1) * d.strideA + (d.transA ? (ch.kc - 1) * lda + ch.mc : (ch.mc - 1) * lda + ch.kc);
    const b0 = ch.b0 * d.strideB + (d.transB ? ch.n0 * ldb + ch.k0 : ch.k0 * ldb + ch.n0);
    const bLen = (ch.bc - 1) * d.strideB + (d.transB ? (ch.nc - 1) * ldb + ch.kc : (ch.kc - 1) * ldb + ch.nc);
    const c0 = ch.b0 * d.strideC + ch.m0 * d.N + ch.n0;
    const cLen = (ch.bc - 1) * d.strideC + (ch.mc - 1) * d.N + ch.nc;
    const empty = { view: dummyTensor(batch.gpu), off: 0 };
    const A = ch.kc > 0 ? viewOf(opts.a, { first: a0, len: aLen, align: al }) : empty;
    const B = ch.kc > 0 ? viewOf(opts.b, { first: b0, len: bLen, align: al }) : empty;
    const C = viewOf(opts.out, { first: c0, len: cLen, align: al });
    const bias = opts.bias && ch.k0 === 0
      ? viewOf(opts.bias, { first: ch.n0, len: ch.nc, align: al })
      : undefined;
    const flags = (opts.accumulate || ch.k0 > 0 ? 1 : 0) | (bias ? 2 : 0);
    batch.dispatch(spec, { a: A.view, b: B.view, c: C.view, bias: bias?.view ?? dummyTensor(batch.gpu) }, [
      Math.ceil(ch.nc / tile.bn),
      Math.ceil(ch.mc / tile.bm),
      ch.bc,
    ], {
      M: ch.mc,
      N: ch.nc,
      K: ch.kc,
      lda,
      ldb,
      ldc: d.N,
      offA: A.off,
      offB: B.off,
      offC: C.off,
      offBias: bias?.off ?? 0,
      strideA: d.strideA,
      strideB: d.strideB,
      strideC: d.strideC,
      flags,
    });
  }
}
