/**
 * CPU-adapter path of {@linkcode matmul}: per chunk, pack the A and B blocks (pack kernel of `matmul.wgsl`) into
 * scratch storage textures or padded `vec4` buffers, then run the generated register-blocked kernel on them.
 *
 * @module
 */
import src from "../../shaders/matmul.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import { grid1d, type KernelSpec, type ParamField } from "../gpu/kernel.ts";
import { type Binding, Tensor } from "../gpu/tensor.ts";
import { CPU_PARAMS, cpuConfigName, type CpuMatmulConfig, cpuMatmulWgsl } from "./matmul_codegen.ts";
import { type Chunk, type ChunkPlan, type MatmulDims, packedShape } from "./matmul_plan.ts";

/**
 * CPU kernel shape: 16×16 outputs per invocation, K unrolled 4 deep, 16 invocations per workgroup (4×4 by
 * default, a 64×64 C tile; see {@linkcode cpuTile}). The unrolled loop body is ~4.7k x86 instructions (~29 KB), just inside
 * a 32 KB L1 instruction cache; deeper unrolls or bigger blocks execute fewer instructions per multiply-add but
 * ran no faster on the 2-core lavapipe machine, and compile 2–3× slower.
 */
export const CPU_TILE = { tm: 16, tn: 16, ku: 4, wg: 16 } as const;

const PACK_WG = 64;
const PACK_PARAMS: ParamField[] = [
  ["rows", "u32"],
  ["cols", "u32"],
  ["ld", "u32"],
  ["off", "u32"],
  ["stride", "u32"],
  ["outRows", "u32"],
  ["outTexels", "u32"],
];
const PACK_TEXTURE: KernelSpec = {
  name: "matmul.pack_texture",
  code: src,
  entry: "pack_texture",
  constants: { WG: PACK_WG },
  params: PACK_PARAMS,
  bindings: ["", "", "", "", "src", "dst", ""],
};
const PACK_BUFFER: KernelSpec = {
  ...PACK_TEXTURE,
  name: "matmul.pack_buffer",
  entry: "pack_buffer",
  bindings: ["", "", "", "", "src", "", "dst"],
};
// vec4-source variants: same params, the source bound at binding 8
const PACK_TEXTURE4: KernelSpec = {
  ...PACK_TEXTURE,
  name: "matmul.pack_texture4",
  entry: "pack_texture4",
  bindings: ["", "", "", "", "", "dst", "", "src"],
};
const PACK_BUFFER4: KernelSpec = {
  ...PACK_TEXTURE,
  name: "matmul.pack_buffer4",
  entry: "pack_buffer4",
  bindings: ["", "", "", "", "", "", "dst", "src"],
};

const cpuSpecs = new Map<string, KernelSpec>();
/** The kernel spec of one generated CPU variant (generated once per process). */
export function cpuSpec(cfg: CpuMatmulConfig): KernelSpec {
  const name = cpuConfigName(cfg);
  let s = cpuSpecs.get(name);
  if (!s) {
    s = {
      name: `matmul.cpu.${name}`,
      code: cpuMatmulWgsl(cfg),
      entry: "main",
      params: CPU_PARAMS as unknown as ParamField[],
      bindings: ["pa", "pb", "c", "bias"],
    };
    cpuSpecs.set(name, s);
  }
  return s;
}

/** A binding view starting at an aligned element at or before `first`, covering `[first, first + len)`. */
export function viewOf(
  t: Tensor,
  r: { first: number; len: number; align: number; roundTo?: number },
): { view: Binding; off: number } {
  const { first, len, align, roundTo = 1 } = r;
  const start = Math.floor(first / align) * align;
  const need = first - start + Math.max(1, len);
  const length = Math.min(t.size - start, Math.ceil(need / roundTo) * roundTo);
  return { view: t.view(start, length), off: first - start };
}

const dummies = new WeakMap<Gpu, Tensor>();
/** A 4-element tensor bound where a kernel's binding is unused (no bias, empty operand). */
export function dummyTensor(gpu: Gpu): Tensor {
  let t = dummies.get(gpu);
  if (!t) {
    t = new Tensor(gpu, [4], "f32", "matmul.unused");
    dummies.set(gpu, t);
  }
  return t;
}

interface Scratch {
  tex?: GPUTexture;
  retired: GPUTexture[];
}
const scratch = new WeakMap<Gpu, Record<"a" | "b", Scratch>>();

/**
 * A scratch rgba32float texture of at least `w × h` texels for operand slot `slot`. Dispatches within a batch run
 * in order, so consecutive matmuls share it. A grown texture replaces the old one, which is kept alive (it may
 * still be bound by an unsubmitted batch); sizes grow in powers of two, which bounds the waste.
 */
function scratchTexture(gpu: Gpu, slot: "a" | "b", w: number, h: number): GPUTexture {
  let s = scratch.get(gpu);
  if (!s) {
    s = { a: { retired: [] }, b: { retired: [] } };
    scratch.set(gpu, s);
  }
  const cur = s[slot].tex;
  if (cur && cur.width >= w && cur.height >= h) return cur;
  const max = gpu.device.limits.maxTextureDimension2D;
  const grow = (x: number, old = 0) =>
    Math.min(max, Math.max(old, 2 ** Math.ceil(Math.log2(Math.max(x, 16)))));
  const tex = gpu.device.createTexture({
    label: `matmul.packed_${slot}`,
    size: [grow(w, cur?.width), grow(h, cur?.height)],
    format: "rgba32float",
    usage: GPUTextureUsage.STORAGE_BINDING,
  });
  if (cur) s[slot].retired.push(cur);
  s[slot].tex = tex;
  return tex;
}

/** Stored block of one operand in a chunk: rows/cols of the row-major stored matrix and where it starts. */
interface Block {
  rows: number;
  cols: number;
  r0: number;
  c0: number;
  ld: number;
  stride: number;
  kAsRows: boolean;
}

function blockA(d: MatmulDims, ch: Chunk): Block {
  return d.transA
    ? { rows: ch.kc, cols: ch.mc, r0: ch.k0, c0: ch.m0, ld: d.M, stride: d.strideA, kAsRows: true }
    : { rows: ch.mc, cols: ch.kc, r0: ch.m0, c0: ch.k0, ld: d.K, stride: d.strideA, kAsRows: false };
}

function blockB(d: MatmulDims, ch: Chunk): Block {
  return d.transB
    ? { rows: ch.nc, cols: ch.kc, r0: ch.n0, c0: ch.k0, ld: d.K, stride: d.strideB, kAsRows: false }
    : { rows: ch.kc, cols: ch.nc, r0: ch.k0, c0: ch.n0, ld: d.N, stride: d.strideB, kAsRows: true };
}

/** An operand as the kernel reads it: binding, texel row stride and offset, rows per batch. */
interface Operand {
  key: string;
  binding: Binding | GPUTextureView;
  src: "texture" | "buffer";
  ld4: number;
  off4: number;
  rowsPerBatch: number;
  tensor?: Tensor;
}

/**
 * Most invocations that may read one element of an operand for it to be read in place rather than packed:
 * packing costs ~6 in-place reads per element on lavapipe (a packed texel read costs ~1/8 of one).
 */
export const DIRECT_MAX_REUSE = 6;

/**
 * The operand block of a chunk read in place (as `vec4`s of its stored rows), or undefined when its layout does
 * not allow it: row stride, batch stride and first element must be multiples of 4, and a K range along the rows
 * (`!kAsRows`) must be whole texels.
 */
function direct(batch: Batch, t: Tensor, blk: Block, ch: Chunk, key: string): Operand | undefined {
  const al = Math.max(1, batch.gpu.limits.storageOffsetAlignment / 4);
  const nb = blk.stride ? ch.bc : 1;
  const first = (blk.stride ? ch.b0 * blk.stride : 0) + blk.r0 * blk.ld + blk.c0;
  if (blk.rows === 0 || blk.cols === 0 || al % 4 !== 0) return undefined;
  if (blk.ld % 4 !== 0 || blk.stride % 4 !== 0 || first % 4 !== 0) return undefined;
  if (!blk.kAsRows && blk.cols % 4 !== 0) return undefined;
  const len = (nb - 1) * blk.stride + (blk.rows - 1) * blk.ld + blk.cols;
  const v = viewOf(t, { first, len, align: al, roundTo: 4 });
  return {
    key,
    binding: v.view,
    src: "buffer",
    ld4: blk.ld / 4,
    off4: v.off / 4,
    rowsPerBatch: blk.stride / blk.ld,
  };
}

/** Records the pack dispatch of one operand block; returns the packed operand. */
function pack(
  batch: Batch,
  t: Tensor,
  blk: Block,
  ch: Chunk,
  slot: "a" | "b",
  source: "texture" | "buffer",
  key: string,
): Operand {
  const gpu = batch.gpu;
  const al = Math.max(1, gpu.limits.storageOffsetAlignment / 4);
  const nb = blk.stride ? ch.bc : 1;
  const { rows, texels } = packedShape({
    rows: blk.rows,
    cols: blk.cols,
    kAsRows: blk.kAsRows,
    ku: CPU_TILE.ku,
  });
  const first = (blk.stride ? ch.b0 * blk.stride : 0) + blk.r0 * blk.ld + blk.c0;
  const empty = blk.rows === 0 || blk.cols === 0;
  const len = empty ? 1 : (nb - 1) * blk.stride + (blk.rows - 1) * blk.ld + blk.cols;
  const srcView = empty
    ? { view: dummyTensor(gpu), off: 0 }
    : viewOf(t, { first, len, align: al, roundTo: 4 });
  const vec4 = !empty && srcView.off % 4 === 0 && blk.ld % 4 === 0 && (nb === 1 || blk.stride % 4 === 0) &&
    al % 4 === 0;
  let dst: Binding | GPUTextureView;
  let tensor: Tensor | undefined;
  if (source === "texture") {
    dst = scratchTexture(gpu, slot, texels, rows * nb).createView();
  } else {
    tensor = new Tensor(gpu, [Math.max(4, nb * rows * texels * 4)], "f32", `matmul.packed_${slot}`);
    dst = tensor;
  }
  const [gx, gy] = grid1d(Math.ceil((rows * texels) / PACK_WG), gpu.limits.maxWorkgroupsPerDimension);
  batch.dispatch(
    source === "texture" ? (vec4 ? PACK_TEXTURE4 : PACK_TEXTURE) : (vec4 ? PACK_BUFFER4 : PACK_BUFFER),
    // texture views are bindings where the runtime advertises Batch.textureBindings (checked by the caller)
    { src: srcView.view, dst: dst as Binding },
    [gx, gy, nb],
    {
      rows: empty ? 0 : blk.rows,
      cols: empty ? 0 : blk.cols,
      ld: blk.ld,
      off: srcView.off,
      stride: blk.stride,
      outRows: rows,
      outTexels: texels,
    },
  );
  return {
    key,
    binding: dst,
    src: source,
    ld4: texels,
    off4: 0,
    rowsPerBatch: blk.stride ? rows : 0,
    tensor,
  };
}

/**
 * Tile of the CPU kernel for a problem: 16×16 outputs per invocation (4 along a dimension of at most 8, e.g. a
 * decode step's few rows), and 16 invocations per workgroup split between N and M so that a small M or N does
 * not leave most of them idle (4×4 when both are large).
 */
export function cpuTile(M: number, N: number): { tm: number; tn: number; wgx: number; wgy: number } {
  const tm = M <= 8 ? 4 : CPU_TILE.tm, tn = N <= 8 ? 4 : CPU_TILE.tn;
  const fit = (blocks: number) => (blocks <= 1 ? 1 : blocks <= 2 ? 2 : 4);
  let wgy = fit(Math.ceil(M / tm)), wgx = CPU_TILE.wg / wgy;
  if (Math.ceil(N / tn) < wgx) {
    wgx = fit(Math.ceil(N / tn));
    wgy = Math.min(CPU_TILE.wg / wgx, wgy === 4 ? CPU_TILE.wg / wgx : wgy);
  }
  return { tm, tn, wgx, wgy };
}

/** What {@linkcode runCpu} runs: the call's tensors, its dimensions and chunk plan, and the packed storage. */
export interface CpuJob {
  out: Tensor;
  a: Tensor;
  b: Tensor;
  bias?: Tensor;
  accumulate?: boolean;
  dims: MatmulDims;
  plan: ChunkPlan;
  source: "texture" | "buffer";
}

/** Records the CPU-path dispatches of a planned matmul. */
export function runCpu(batch: Batch, job: CpuJob): void {
  const { dims: d, plan, source } = job;
  const opts = job;
  const gpu = batch.gpu;
  const al = Math.max(1, gpu.limits.storageOffsetAlignment / 4);
  const tile = cpuTile(d.M, d.N);
  // Invocations reading one element: A's by every column block, B's by every row block. A is read in place only
  // by the narrow-N tile, which keeps the number of compiled 16×16 variants down (they take seconds each).
  const directA = tile.tn < CPU_TILE.tn && Math.ceil(d.N / tile.tn) <= DIRECT_MAX_REUSE;
  const directB = Math.ceil(d.M / tile.tm) <= DIRECT_MAX_REUSE;
  let pa: Operand | undefined, pb: Operand | undefined;
  const done: Tensor[] = [];
  for (const ch of plan.chunks) {
    const ka = `${ch.b0}|${ch.m0}|${ch.k0}`, kb = `${ch.b0}|${ch.n0}|${ch.k0}`;
    if (pa?.key !== ka) {
      if (pa?.tensor) done.push(pa.tensor);
      const blk = blockA(d, ch);
      pa = (directA ? direct(batch, opts.a, blk, ch, ka) : undefined) ??
        pack(batch, opts.a, blk, ch, "a", source, ka);
    }
    if (pb?.key !== kb) {
      if (pb?.tensor) done.push(pb.tensor);
      const blk = blockB(d, ch);
      pb = (directB ? direct(batch, opts.b, blk, ch, kb) : undefined) ??
        pack(batch, opts.b, blk, ch, "b", source, kb);
    }
    const c0 = ch.b0 * d.strideC + ch.m0 * d.N + ch.n0;
    const cLen = (ch.bc - 1) * d.strideC + (ch.mc - 1) * d.N + ch.nc;
    const vec4Out = d.N % 4 === 0 && ch.nc % 4 === 0 && c0 % 4 === 0 && al % 4 === 0;
    const C = viewOf(opts.out, { first: c0, len: cLen, align: al, roundTo: vec4Out ? 4 : 1 });
    const bias = opts.bias && ch.k0 === 0
      ? viewOf(opts.bias, { first: ch.n0, len: ch.nc, align: al })
      : undefined;
    const cfg: CpuMatmulConfig = {
      transA: d.transA,
      transB: d.transB,
      srcA: pa.src,
      srcB: pb.src,
      ku: CPU_TILE.ku,
      wg: CPU_TILE.wg,
      tm: tile.tm,
      tn: tile.tn,
      vec4Out,
    };
    const kp = Math.ceil(Math.max(ch.kc, 1) / CPU_TILE.ku) * CPU_TILE.ku;
    batch.dispatch(
      cpuSpec(cfg),
      {
        pa: pa.binding as Binding,
        pb: pb.binding as Binding,
        c: C.view,
        bias: bias?.view ?? dummyTensor(gpu),
      },
      [Math.ceil(ch.nc / (tile.tn * tile.wgx)), Math.ceil(ch.mc / (tile.tm * tile.wgy)), ch.bc],
      {
        M: ch.mc,
        N: ch.nc,
        K: ch.kc,
        Kp: ch.kc === 0 ? 0 : kp,
        aOff4: pa.off4,
        bOff4: pb.off4,
        aRows: pa.rowsPerBatch,
        aLd4: pa.ld4,
        bRows: pb.rowsPerBatch,
        bLd4: pb.ld4,
        ldc: d.N,
        offC: C.off,
        strideC: d.strideC,
        offBias: bias?.off ?? 0,
        flags: (opts.accumulate || ch.k0 > 0 ? 1 : 0) | (bias ? 2 : 0),
        wgx: tile.wgx,
        wgy: tile.wgy,
      },
    );
  }
  for (const t of [...done, pa?.tensor, pb?.tensor]) t?.release();
}
