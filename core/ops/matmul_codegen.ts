/**
 * WGSL generator for the register-blocked matmul used on CPU adapters (lavapipe / llvmpipe).
 *
 * llvmpipe runs a compute shader "SoA": 8 (or 16) invocations share one SIMD register per scalar, every storage
 * buffer load is a per-lane scalar loop with a bounds check (~10 instructions per lane and component), workgroup
 * barriers are coroutine switches, and arrays live in stack memory. What runs fast there is therefore:
 *
 * - each invocation computes a big `TM × TN` block of C with *named* `vec4` accumulators (no arrays), so one
 *   loaded element feeds `TN` (or `TM`) multiply-adds,
 * - the K loop unrolled `KU` deep (one exec-mask blend per accumulator per iteration instead of per k),
 * - operands read from a packed copy: a read-only `rgba32float` storage texture (a texel fetch is 8 vector loads
 *   and a transpose, ~4× cheaper per element than a storage-buffer load) or, where textures cannot be bound, a
 *   padded `array<vec4<f32>>`; an operand whose elements are each read by only a few invocations (the weight of
 *   a small-batch forward) is read in place as `array<vec4<f32>>` instead, since packing costs more than it saves,
 * - no workgroup memory and no barriers.
 *
 * Packed operand layout (written by `matmul.wgsl`'s pack entry points): each operand keeps the orientation it
 * is stored in — one texel holds 4 consecutive elements of a stored row — and the K dimension is zero-padded to a
 * multiple of `KU`, so the kernel reads no bounds-checked tail. Batches are stacked along texture rows.
 *
 * - A, `transA = false`: rows m, texels along k.  A, `transA = true`: rows k, texels along m.
 * - B, `transB = false`: rows k, texels along n.  B, `transB = true`: rows n, texels along k.
 *
 * @module
 */

/** One compiled variant of the CPU matmul kernel. */
export interface CpuMatmulConfig {
  /** A is stored (K, M) and used transposed. */
  readonly transA: boolean;
  /** B is stored (N, K) and used transposed (`x·Wᵀ` with HF weights). */
  readonly transB: boolean;
  /** A as a read-only storage texture, or as `array<vec4<f32>>` (packed copy or the tensor in place). */
  readonly srcA: "texture" | "buffer";
  /** B likewise. */
  readonly srcB: "texture" | "buffer";
  /** Rows of C per invocation (multiple of 4). */
  readonly tm: number;
  /** Columns of C per invocation (multiple of 4). */
  readonly tn: number;
  /** K unroll depth (multiple of 4); the packed K is padded to a multiple of it. */
  readonly ku: number;
  /** Invocations per workgroup; the uniforms `wgx × wgy ≤ wg` lay them out along N and M per call. */
  readonly wg: number;
  /** Store C as `vec4` (requires N, ldc, the C offset and batch stride to be multiples of 4). */
  readonly vec4Out: boolean;
}

/** Uniform fields of the generated kernel, in declaration order. */
export const CPU_PARAMS = [
  ["M", "u32"], // rows of C
  ["N", "u32"], // columns of C
  ["K", "u32"], // inner dimension
  ["Kp", "u32"], // K rounded up to a multiple of KU (loop bound)
  ["aOff4", "u32"], // texel offset of A's first row in its binding (buffer source)
  ["bOff4", "u32"], // texel offset of B's first row
  ["aRows", "u32"], // packed rows of A per batch
  ["aLd4", "u32"], // texels per packed row of A (buffer source)
  ["bRows", "u32"], // packed rows of B per batch
  ["bLd4", "u32"], // texels per packed row of B (buffer source)
  ["ldc", "u32"], // row stride of C (elements)
  ["offC", "u32"], // element offset of C's first row in its binding
  ["strideC", "u32"], // batch stride of C (elements)
  ["offBias", "u32"], // element offset of the bias in its binding
  ["flags", "u32"], // bit 0: accumulate into C, bit 1: add bias
  ["wgx", "u32"], // invocations of a workgroup along N (wgx·wgy ≤ WG; the rest exit)
  ["wgy", "u32"], // invocations of a workgroup along M
] as const;

/** Short name of a config, used in kernel labels, e.g. `"nt.tex.16x16k8"`. */
export function cpuConfigName(c: CpuMatmulConfig): string {
  const src = (s: string) => s === "texture" ? "t" : "b";
  return `${c.transA ? "t" : "n"}${c.transB ? "t" : "n"}.${src(c.srcA)}${src(c.srcB)}.` +
    `${c.tm}x${c.tn}k${c.ku}w${c.wg}${c.vec4Out ? ".v4" : ""}`;
}

function check(c: CpuMatmulConfig): void {
  for (const [k, v] of [["tm", c.tm], ["tn", c.tn], ["ku", c.ku]] as const) {
    if (!Number.isInteger(v) || v < 4 || v % 4 !== 0) {
      throw new Error(`Invalid matmul config "${k}": expected a positive multiple of 4, got ${v}`);
    }
  }
  if (!Number.isInteger(c.wg) || c.wg < 1) {
    throw new Error(`Invalid matmul config "wg": expected a positive integer, got ${c.wg}`);
  }
}

const XYZW = "xyzw";

/**
 * Generates the WGSL of one CPU matmul variant. Entry point `main`; bindings: 0 params, 1 packed A, 2 packed B,
 * 3 C (`read_write`), 4 bias. Dispatch `[ceil(N / (TN·wgx)), ceil(M / (TM·wgy)), batches]`.
 *
 * Computes, for batch z: `C[m, n] = (flags&1 ? C[m, n] : 0) + Σ_k A[m, k]·B[k, n] + (flags&2 ? bias[n] : 0)`.
 */
export function cpuMatmulWgsl(c: CpuMatmulConfig): string {
  check(c);
  const { tm: TM, tn: TN, ku: KU } = c;
  const TNv = TN / 4, G = KU / 4;
  const L: string[] = [];
  L.push(
    `// Generated by core/ops/matmul_codegen.ts (${cpuConfigName(c)}): C (M,N) = A·B on packed operands.`,
  );
  L.push(`struct Params { ${CPU_PARAMS.map(([n, t]) => `${n}: ${t}`).join(", ")} }`);
  L.push(`@group(0) @binding(0) var<uniform> p: Params;`);
  for (const [name, bind, src] of [["pa", 1, c.srcA], ["pb", 2, c.srcB]] as const) {
    L.push(
      src === "texture"
        ? `@group(0) @binding(${bind}) var ${name}: texture_storage_2d<rgba32float, read>;`
        : `@group(0) @binding(${bind}) var<storage, read> ${name}: array<vec4<f32>>;`,
    );
  }
  L.push(`@group(0) @binding(3) var<storage, read_write> c: array<${c.vec4Out ? "vec4<f32>" : "f32"}>;`);
  L.push(`@group(0) @binding(4) var<storage, read> bias: array<f32>;`);
  // texel (x, y) of an operand: 4 consecutive elements of stored row y. Buffer operands whose rows run along K
  // (`kRow` given) read rows k >= K as zero: an operand read in place has no zero padding there.
  const load = (name: "a" | "b", x: string, y: string, kRow?: string) => {
    const src = name === "a" ? c.srcA : c.srcB, P = name === "a" ? "pa" : "pb";
    const v = src === "texture"
      ? `textureLoad(${P}, vec2<u32>(${x}, ${y}))`
      : `${P}[p.${name}Off4 + (${y}) * p.${name}Ld4 + ${x}]`;
    return src === "buffer" && kRow ? `select(vec4<f32>(0.0), ${v}, ${kRow} < p.K)` : v;
  };
  const ldA = (x: string, y: string, kRow?: string) => load("a", x, y, kRow);
  const ldB = (x: string, y: string, kRow?: string) => load("b", x, y, kRow);
  L.push(`@compute @workgroup_size(${c.wg})`);
  L.push(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {`);
  L.push(`  let n0 = (wid.x * p.wgx + lid.x % p.wgx) * ${TN}u;`);
  L.push(`  let m0 = (wid.y * p.wgy + lid.x / p.wgx) * ${TM}u;`);
  L.push(`  if (lid.x >= p.wgx * p.wgy || m0 >= p.M || n0 >= p.N) { return; }`);
  L.push(`  let ar = wid.z * p.aRows;`);
  L.push(`  let br = wid.z * p.bRows;`);
  for (let r = 0; r < TM; r++) for (let j = 0; j < TNv; j++) L.push(`  var c${r}_${j} = vec4<f32>(0.0);`);
  L.push(`  for (var k = 0u; k < p.Kp; k += ${KU}u) {`);
  // a(r, q) = A[m0 + r, k + q]
  const a: string[][] = [];
  if (!c.transA) {
    for (let r = 0; r < TM; r++) {
      for (let g = 0; g < G; g++) L.push(`    let a${r}_${g} = ${ldA(`k / 4u + ${g}u`, `ar + m0 + ${r}u`)};`);
      a.push(Array.from({ length: KU }, (_, q) => `a${r}_${q >> 2}.${XYZW[q & 3]}`));
    }
  } else {
    for (let q = 0; q < KU; q++) {
      for (let i = 0; i < TM / 4; i++) {
        L.push(`    let a${q}_${i} = ${ldA(`m0 / 4u + ${i}u`, `ar + k + ${q}u`, `k + ${q}u`)};`);
      }
    }
    for (let r = 0; r < TM; r++) {
      a.push(Array.from({ length: KU }, (_, q) => `a${q}_${r >> 2}.${XYZW[r & 3]}`));
    }
  }
  // bv(q, j) = B[k + q, n0 + 4j .. n0 + 4j + 3] as a vec4
  const bv: string[][] = [];
  if (!c.transB) {
    for (let q = 0; q < KU; q++) {
      for (let j = 0; j < TNv; j++) {
        L.push(`    let b${q}_${j} = ${ldB(`n0 / 4u + ${j}u`, `br + k + ${q}u`, `k + ${q}u`)};`);
      }
      bv.push(Array.from({ length: TNv }, (_, j) => `b${q}_${j}`));
    }
  } else {
    for (let n = 0; n < TN; n++) {
      for (let g = 0; g < G; g++) L.push(`    let b${n}_${g} = ${ldB(`k / 4u + ${g}u`, `br + n0 + ${n}u`)};`);
    }
    for (let q = 0; q < KU; q++) {
      const comp = (n: number) => `b${n}_${q >> 2}.${XYZW[q & 3]}`;
      bv.push(Array.from({ length: TNv }, (_, j) => {
        const cs = [0, 1, 2, 3].map((i) => comp(4 * j + i));
        return `vec4<f32>(${cs.join(", ")})`;
      }));
    }
  }
  for (let r = 0; r < TM; r++) {
    for (let j = 0; j < TNv; j++) {
      let e = `c${r}_${j}`;
      for (let q = 0; q < KU; q++) e = `fma(vec4<f32>(${a[r][q]}), ${bv[q][j]}, ${e})`;
      L.push(`    c${r}_${j} = ${e};`);
    }
  }
  L.push(`  }`);
  // epilogue: bias, accumulate, masked stores
  L.push(`  let cb = wid.z * p.strideC + p.offC;`);
  L.push(`  let acc = (p.flags & 1u) != 0u;`);
  L.push(`  let hasBias = (p.flags & 2u) != 0u;`);
  for (let j = 0; j < TNv; j++) {
    L.push(`  var bias${j} = vec4<f32>(0.0);`);
    L.push(`  if (hasBias) {`);
    for (let i = 0; i < 4; i++) {
      L.push(`    bias${j}.${XYZW[i]} = bias[p.offBias + min(n0 + ${4 * j + i}u, p.N - 1u)];`);
    }
    L.push(`  }`);
  }
  for (let r = 0; r < TM; r++) {
    L.push(`  if (m0 + ${r}u < p.M) {`);
    L.push(`    let row = cb + (m0 + ${r}u) * p.ldc;`);
    for (let j = 0; j < TNv; j++) {
      const n = `n0 + ${4 * j}u`;
      if (c.vec4Out) {
        L.push(`    if (${n} < p.N) {`);
        L.push(`      let i = (row + ${n}) / 4u;`);
        L.push(`      var v = c${r}_${j} + bias${j};`);
        L.push(`      if (acc) { v += c[i]; }`);
        L.push(`      c[i] = v;`);
        L.push(`    }`);
      } else {
        for (let i = 0; i < 4; i++) {
          L.push(`    if (${n} + ${i}u < p.N) {`);
          L.push(`      let i = row + ${n} + ${i}u;`);
          L.push(`      var v = c${r}_${j}.${XYZW[i]} + bias${j}.${XYZW[i]};`);
          L.push(`      if (acc) { v += c[i]; }`);
          L.push(`      c[i] = v;`);
          L.push(`    }`);
        }
      }
    }
    L.push(`  }`);
  }
  L.push(`}`);
  return L.join("\n") + "\n";
}
