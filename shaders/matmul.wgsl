// Matrix multiply family: C (M,N) = op(A)·op(B) [+ C] [+ bias], batched over workgroup_id.z.
// Backward of C = A·Bᵀ (the forward of a linear layer with HF weights W (out,in)): dA = dC·B (nn),
// dB = dCᵀ·A (tn, accumulated into the weight gradient) — the same kernels with other transposes.
//
// Entry points:
// - tiled: workgroup-memory tiled kernel for real GPUs. 64×64 C tile per workgroup of 16×16 invocations, 4×4
//   outputs per invocation, K in steps of 16 through workgroup memory. Reads the tensors directly (row strides,
//   element offsets and batch strides as parameters), any shape.
// - pack_texture / pack_buffer: copy a (rows, cols) block of a row-major matrix into the packed layout the CPU
//   kernel (core/ops/matmul_codegen.ts) reads: texels of 4 consecutive elements of a row, zero outside the block.
//   pack_texture4 / pack_buffer4: the same reading the source as vec4 (offset, row and batch strides multiples of 4).
//
// Index math is u32: every binding holds < 2^32 / 4 elements (the runtime's binding limit).

override WG: u32 = 64u; // invocations per workgroup of the pack entry points
override TRANS_A: bool = false; // tiled: A is stored (K, M)
override TRANS_B: bool = false; // tiled: B is stored (N, K)

const BM: u32 = 64u; // tiled: C tile rows
const BN: u32 = 64u; // tiled: C tile columns
const BK: u32 = 16u; // tiled: K step
const TT: u32 = 4u; // tiled: outputs per invocation along each axis

struct Params {
  M: u32, // rows of C
  N: u32, // columns of C
  K: u32, // inner dimension
  lda: u32, // row stride of the stored A (K, or M when TRANS_A)
  ldb: u32, // row stride of the stored B (N, or K when TRANS_B)
  ldc: u32, // row stride of C
  offA: u32, // element offsets of the first element in each binding
  offB: u32,
  offC: u32,
  offBias: u32,
  strideA: u32, // batch strides (elements)
  strideB: u32,
  strideC: u32,
  flags: u32, // bit 0: C += (accumulate), bit 1: add bias[n]
}

struct PackParams {
  rows: u32, // rows of the source block
  cols: u32, // columns of the source block
  ld: u32, // row stride of the source
  off: u32, // element offset of the block's first element in the binding
  stride: u32, // batch stride of the source (elements)
  outRows: u32, // packed rows per batch (>= rows; the extra rows are zero)
  outTexels: u32, // texels per packed row (>= cols / 4; the extra columns are zero)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<uniform> pp: PackParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> src: array<f32>;
@group(0) @binding(6) var dstTex: texture_storage_2d<rgba32float, write>;
@group(0) @binding(7) var<storage, read_write> dstBuf: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> src4: array<vec4<f32>>;

var<workgroup> As: array<f32, 1024>; // [BK][BM]: As[k * BM + m]
var<workgroup> Bs: array<f32, 1024>; // [BK][BN]: Bs[k * BN + n]

// A[m, k] of batch z, 0 outside
fn loadA(z: u32, m: u32, k: u32) -> f32 {
  if (m >= p.M || k >= p.K) { return 0.0; }
  if (TRANS_A) { return a[p.offA + z * p.strideA + k * p.lda + m]; }
  return a[p.offA + z * p.strideA + m * p.lda + k];
}

// B[k, n] of batch z, 0 outside
fn loadB(z: u32, k: u32, n: u32) -> f32 {
  if (n >= p.N || k >= p.K) { return 0.0; }
  if (TRANS_B) { return b[p.offB + z * p.strideB + n * p.ldb + k]; }
  return b[p.offB + z * p.strideB + k * p.ldb + n];
}

// C = op(A)·op(B) [+ C] [+ bias]; dispatch [ceil(N/64), ceil(M/64), batches]
@compute @workgroup_size(16, 16)
fn tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let tid = lid.y * 16u + lid.x;
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  let z = wid.z;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    // each invocation stages 4 elements of each tile; the fast index follows the stored layout (coalesced)
    for (var i = 0u; i < 4u; i++) {
      let e = tid + i * 256u;
      if (TRANS_A) {
        let kk = e / BM;
        let mm = e % BM;
        As[kk * BM + mm] = loadA(z, m0 + mm, k0 + kk);
      } else {
        let mm = e / BK;
        let kk = e % BK;
        As[kk * BM + mm] = loadA(z, m0 + mm, k0 + kk);
      }
      if (TRANS_B) {
        let nn = e / BK;
        let kk = e % BK;
        Bs[kk * BN + nn] = loadB(z, k0 + kk, n0 + nn);
      } else {
        let kk = e / BN;
        let nn = e % BN;
        Bs[kk * BN + nn] = loadB(z, k0 + kk, n0 + nn);
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let av = vec4<f32>(As[kk * BM + lid.y * TT], As[kk * BM + lid.y * TT + 1u], As[kk * BM + lid.y * TT + 2u],
        As[kk * BM + lid.y * TT + 3u]);
      let bv = vec4<f32>(Bs[kk * BN + lid.x * TT], Bs[kk * BN + lid.x * TT + 1u], Bs[kk * BN + lid.x * TT + 2u],
        Bs[kk * BN + lid.x * TT + 3u]);
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
          acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y * TT + i;
    if (m >= p.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x * TT + j;
      if (n >= p.N) { continue; }
      let idx = p.offC + z * p.strideC + m * p.ldc + n;
      var v = acc[i * 4u + j];
      if ((p.flags & 2u) != 0u) { v += bias[p.offBias + n]; }
      if ((p.flags & 1u) != 0u) { v += c[idx]; }
      c[idx] = v;
    }
  }
}

// Texel `t` of batch `z`: 4 consecutive source elements of one row, zero outside the (rows, cols) block.
fn packTexel(z: u32, t: u32) -> vec4<f32> {
  let row = t / pp.outTexels;
  let col = (t % pp.outTexels) * 4u;
  var v = vec4<f32>(0.0);
  if (row < pp.rows) {
    let base = pp.off + z * pp.stride + row * pp.ld + col;
    for (var i = 0u; i < 4u; i++) {
      if (col + i < pp.cols) { v[i] = src[base + i]; }
    }
  }
  return v;
}

// packTexel with one vec4 load (pp.off, pp.ld and pp.stride are multiples of 4); lanes past `cols` are zeroed.
fn packTexel4(z: u32, t: u32) -> vec4<f32> {
  let row = t / pp.outTexels;
  let col = (t % pp.outTexels) * 4u;
  if (row >= pp.rows || col >= pp.cols) { return vec4<f32>(0.0); }
  let v = src4[(pp.off + z * pp.stride + row * pp.ld + col) / 4u];
  return select(vec4<f32>(0.0), v, vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(pp.cols - col));
}

// Packs into a rgba32float storage texture; batch z occupies texture rows [z·outRows, (z+1)·outRows).
// Dispatch grid1d(ceil(outRows·outTexels / WG)) × batches.
@compute @workgroup_size(WG)
fn pack_texture(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (t >= pp.outRows * pp.outTexels) { return; }
  let z = wid.z;
  let xy = vec2<u32>(t % pp.outTexels, z * pp.outRows + t / pp.outTexels);
  textureStore(dstTex, xy, packTexel(z, t));
}

// Packs into an array<vec4<f32>> with rows of outTexels texels; batch z starts at texel z·outRows·outTexels.
@compute @workgroup_size(WG)
fn pack_buffer(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (t >= pp.outRows * pp.outTexels) { return; }
  let z = wid.z;
  dstBuf[z * pp.outRows * pp.outTexels + t] = packTexel(z, t);
}

@compute @workgroup_size(WG)
fn pack_texture4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (t >= pp.outRows * pp.outTexels) { return; }
  let z = wid.z;
  let xy = vec2<u32>(t % pp.outTexels, z * pp.outRows + t / pp.outTexels);
  textureStore(dstTex, xy, packTexel4(z, t));
}

@compute @workgroup_size(WG)
fn pack_buffer4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (t >= pp.outRows * pp.outTexels) { return; }
  let z = wid.z;
  dstBuf[z * pp.outRows * pp.outTexels + t] = packTexel4(z, t);
}
