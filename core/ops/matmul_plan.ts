/**
 * Chunking of a matmul over the storage-binding and texture-size limits.
 *
 * A chunk is a block `(bc batches) × (mc rows of C) × (nc columns of C) × (kc of K)`; each operand of a chunk is
 * bound as one contiguous view (from its first to its last element, rounded down to an aligned start), so a view
 * spans whole rows of the stored matrix. Chunks are ordered batch, K, rows, columns: the K chunks of one C block
 * follow each other from `k0 = 0` on, so later ones accumulate into what earlier ones wrote.
 *
 * @module
 */

/** Problem dimensions of one matmul call (all strides in elements; 0 = shared by every batch). */
export interface MatmulDims {
  M: number;
  N: number;
  K: number;
  batches: number;
  transA: boolean;
  transB: boolean;
  strideA: number;
  strideB: number;
  strideC: number;
}

/** One chunk: batches `[b0, b0+bc)`, rows `[m0, m0+mc)`, columns `[n0, n0+nc)`, K range `[k0, k0+kc)`. */
export interface Chunk {
  b0: number;
  bc: number;
  m0: number;
  mc: number;
  n0: number;
  nc: number;
  k0: number;
  kc: number;
}

/** Chunks of one call, in execution order, and the chunk extents used. */
export interface ChunkPlan {
  chunks: Chunk[];
  sizes: { bc: number; mc: number; nc: number; kc: number };
}

/** Limits that shape a plan. */
export interface PlanLimits {
  /** Kernel family: the CPU kernel also needs its packed copies to fit. */
  kind: "tiled" | "cpu";
  /** Packed storage of the CPU kernel. */
  source: "texture" | "buffer";
  /** K unroll of the CPU kernel (packed K is padded to a multiple of it). */
  ku: number;
  /** Elements per storage binding. */
  maxBindingElems: number;
  /** Binding offsets are multiples of this many elements. */
  alignElems: number;
  /** Texture width/height limit. */
  maxTexture: number;
  /** Workgroups per grid dimension (default 65535). */
  maxGroups?: number;
}

const up = (x: number, m: number) => Math.ceil(x / m) * m;

/** Packed operand extents of a chunk: `rows` per batch and `texels` per row (4 elements each). */
export function packedShape(
  block: { rows: number; cols: number; kAsRows: boolean; ku: number },
): { rows: number; texels: number } {
  const { rows, cols, kAsRows, ku } = block;
  return kAsRows
    ? { rows: up(Math.max(rows, 1), ku), texels: Math.ceil(cols / 4) }
    : { rows, texels: up(Math.max(cols, 1), ku) / 4 };
}

type Dim = "mc" | "nc" | "kc";

/** Splits a call into chunks that satisfy `lim`. Throws if even a 1×1×1 chunk does not fit. */
export function planChunks(d: MatmulDims, lim: PlanLimits): ChunkPlan {
  const s = { bc: Math.max(1, d.batches), mc: d.M, nc: d.N, kc: d.K };
  const maxGroups = lim.maxGroups ?? 65535;
  const slack = lim.alignElems + 4;
  // first failing constraint as [dim to shrink first, fallback dim], or undefined when everything fits
  const failing = (): [Dim, Dim] | "batch" | undefined => {
    const { bc, mc, nc, kc } = s;
    const k1 = Math.max(kc, 1);
    const span = (stride: number, rows: number, ld: number, cols: number) =>
      (stride ? (bc - 1) * stride : 0) + (rows - 1) * ld + cols + slack;
    const viewA = d.transA ? span(d.strideA, k1, d.M, mc) : span(d.strideA, mc, d.K, k1);
    const viewB = d.transB ? span(d.strideB, nc, d.K, k1) : span(d.strideB, k1, d.N, nc);
    const viewC = span(d.strideC, mc, d.N, nc);
    if (viewC > lim.maxBindingElems) return bc > 1 ? "batch" : ["mc", "nc"];
    if (viewA > lim.maxBindingElems) {
      return bc > 1 && d.strideA ? "batch" : d.transA ? ["kc", "mc"] : ["mc", "kc"];
    }
    if (viewB > lim.maxBindingElems) {
      return bc > 1 && d.strideB ? "batch" : d.transB ? ["nc", "kc"] : ["kc", "nc"];
    }
    if (bc > maxGroups) return "batch";
    if (lim.kind === "tiled") {
      if (Math.ceil(mc / 64) > maxGroups) return ["mc", "nc"];
      if (Math.ceil(nc / 64) > maxGroups) return ["nc", "mc"];
      return undefined;
    }
    if (Math.ceil(mc / 4) > maxGroups) return ["mc", "nc"];
    if (Math.ceil(nc / 4) > maxGroups) return ["nc", "mc"];
    const ku = lim.ku;
    const pa = d.transA
      ? packedShape({ rows: kc, cols: mc, kAsRows: true, ku })
      : packedShape({ rows: mc, cols: kc, kAsRows: false, ku });
    const pb = d.transB
      ? packedShape({ rows: nc, cols: kc, kAsRows: false, ku })
      : packedShape({ rows: kc, cols: nc, kAsRows: true, ku });
    const ba = d.strideA ? bc : 1, bb = d.strideB ? bc : 1;
    for (
      const [p, nb, rowDim, colDim] of [
        [pa, ba, d.transA ? "kc" : "mc", d.transA ? "mc" : "kc"],
        [pb, bb, d.transB ? "nc" : "kc", d.transB ? "kc" : "nc"],
      ] as const
    ) {
      if (lim.source === "texture") {
        if (p.texels > lim.maxTexture) return [colDim, rowDim];
        if (p.rows * nb > lim.maxTexture) return nb > 1 ? "batch" : [rowDim, colDim];
      }
      if (p.rows * p.texels * 4 * nb > lim.maxBindingElems) return nb > 1 ? "batch" : [rowDim, colDim];
    }
    return undefined;
  };
  for (let f = failing(); f !== undefined; f = failing()) {
    if (f === "batch") {
      if (s.bc === 1) throw new Error(`matmul: cannot split batches further (dims ${JSON.stringify(d)})`);
      s.bc = Math.ceil(s.bc / 2);
      continue;
    }
    const dim = s[f[0]] > 1 ? f[0] : f[1];
    if (s[dim] <= 1) {
      throw new Error(`matmul: a 1-element chunk does not fit the limits (dims ${JSON.stringify(d)})`);
    }
    // halve; K chunks stay multiples of the unroll so only the last one is padded
    s[dim] = dim === "kc" && s.kc > 2 * lim.ku ? up(Math.ceil(s.kc / 2), lim.ku) : Math.ceil(s[dim] / 2);
  }
  const chunks: Chunk[] = [];
  const ranges = (n: number, step: number) => {
    const r: [number, number][] = [];
    for (let i = 0; i < n; i += step) r.push([i, Math.min(step, n - i)]);
    return r.length ? r : [[0, 0] as [number, number]];
  };
  for (const [b0, bc] of ranges(d.batches, s.bc)) {
    for (const [k0, kc] of ranges(d.K, Math.max(1, s.kc))) {
      for (const [m0, mc] of ranges(d.M, s.mc)) {
        for (const [n0, nc] of ranges(d.N, s.nc)) chunks.push({ b0, bc, m0, mc, n0, nc, k0, kc });
      }
    }
  }
  return { chunks, sizes: s };
}
