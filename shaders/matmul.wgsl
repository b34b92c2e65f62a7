// Matrix multiply family: C (M,N) = op(A)·op(B) [+ C] [+ bias], batched over workgroup_id.z.
// Backward of C = A·Bᵀ (the forward of a linear layer with HF weights W (out,in)): dA = dC·B (nn),
// dB = dCᵀ·A (tn, accumulated into the weight gradient) — the same kernels with other transposes.
//
// Entry points:
// - tiled: workgroup-memory tiled kernel for real GPUs. A BM×BN C tile per workgroup of (BN/TN)×(BM/TM)
//   invocations, TM×TN outputs per invocation, K in steps of BK through workgroup memory (the constants below,
//   which core/ops/matmul.ts sets per tile configuration: DEFAULT_GPU_TILE unless the caller passes one). Reads the tensors directly (row strides, element offsets
//   and batch strides as parameters), any shape.
// - pack_texture / pack_buffer: copy a (rows, cols) block of a row-major matrix into the packed layout the CPU
//   kernel (core/ops/matmul_codegen.ts) reads: texels of 4 consecutive elements of a row, zero outside the block.
//   pack_texture4 / pack_buffer4: the same reading the source as vec4 (offset, row and batch strides multiples of 4).
//
// Index math is u32: every binding holds < 2^32 / 4 elements (the runtime's binding limit).

override WG: u32 = 64u; // invocations per workgroup of the pack entry points
override TRANS_A: bool = false; // tiled: A is stored (K, M)
override TRANS_B: bool = false; // tiled: B is stored (N, K)

// tiled: the tile configuration; core/ops/matmul.ts rewrites these five lines per configuration (GPU_TILES)
const BM: u32 = 64u; // C tile rows per workgroup
const BN: u32 = 64u; // C tile columns per workgroup
const BK: u32 = 16u; // K step staged through workgroup memory
const TM: u32 = 4u; // C rows per invocation (a multiple of 4)
const TN: u32 = 4u; // C columns per invocation (a multiple of 4)
const WX: u32 = BN / TN; // invocations per workgroup along N
const WY: u32 = BM / TM; // invocations per workgroup along M

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

var<workgroup> As: array<vec4<f32>, BK * BM / 4u>; // [BK][BM/4]: As[k * BM/4 + m/4][m % 4]
var<workgroup> Bs: array<vec4<f32>, BK * BN / 4u>; // [BK][BN/4]: Bs[k * BN/4 + n/4][n % 4]

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

// C = op(A)·op(B) [+ C] [+ bias]; dispatch [ceil(N/BN), ceil(M/BM), batches].
// Invocation (tx, ty) owns TM rows × TN columns of the workgroup's C tile, as TM/4 × TN/4 blocks of 4×4: rows
// 4·(i4·WY + ty) + r and columns 4·(j4·WX + tx) + c, so neighbouring invocations read neighbouring vec4s of the
// staged tiles (no bank conflicts) and every vec4 read from workgroup memory feeds 4 (A) or TM (B) FMAs.
@compute @workgroup_size(WX, WY)
fn tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let tid = lid.y * WX + lid.x;
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  let z = wid.z;
  var acc: array<vec4<f32>, TM * TN / 4u>; // acc[i * (TN / 4) + j4]: row i of the invocation, column block j4
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    // stage the (BM, BK) block of A and the (BK, BN) block of B; the fast index follows the stored layout
    for (var e = tid; e < BM * BK; e += WX * WY) {
      var mm: u32;
      var kk: u32;
      if (TRANS_A) {
        kk = e / BM;
        mm = e % BM;
      } else {
        mm = e / BK;
        kk = e % BK;
      }
      As[kk * (BM / 4u) + mm / 4u][mm % 4u] = loadA(z, m0 + mm, k0 + kk);
    }
    for (var e = tid; e < BK * BN; e += WX * WY) {
      var nn: u32;
      var kk: u32;
      if (TRANS_B) {
        nn = e / BK;
        kk = e % BK;
      } else {
        kk = e / BN;
        nn = e % BN;
      }
      Bs[kk * (BN / 4u) + nn / 4u][nn % 4u] = loadB(z, k0 + kk, n0 + nn);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      for (var i4 = 0u; i4 < TM / 4u; i4++) {
        let av = As[kk * (BM / 4u) + i4 * WY + lid.y];
        for (var j4 = 0u; j4 < TN / 4u; j4++) {
          let bv = Bs[kk * (BN / 4u) + j4 * WX + lid.x];
          for (var r = 0u; r < 4u; r++) {
            let i = (i4 * 4u + r) * (TN / 4u) + j4;
            acc[i] = fma(vec4<f32>(av[r]), bv, acc[i]);
          }
        }
      }
    }
    workgroupBarrier();
  }
  for (var i4 = 0u; i4 < TM / 4u; i4++) {
    for (var r = 0u; r < 4u; r++) {
      let m = m0 + (i4 * WY + lid.y) * 4u + r;
      if (m >= p.M) { continue; }
      for (var j4 = 0u; j4 < TN / 4u; j4++) {
        let v4 = acc[(i4 * 4u + r) * (TN / 4u) + j4];
        for (var cc = 0u; cc < 4u; cc++) {
          let n = n0 + (j4 * WX + lid.x) * 4u + cc;
          if (n >= p.N) { continue; }
          let idx = p.offC + z * p.strideC + m * p.ldc + n;
          var v = v4[cc];
          if ((p.flags & 2u) != 0u) { v += bias[p.offBias + n]; }
          if ((p.flags & 1u) != 0u) { v += c[idx]; }
          c[idx] = v;
        }
      }
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
