// Generalized Advantage Estimation and masked whitening: twin of core/rl/gae.ts (gaeBatch, whiten).
//
// gae (one invocation per row b of a (B, T) batch, t from T−1 down to 0, masked tokens skipped as absent):
//   δ_t = r_t + γ V_next − V_t,   A_t = δ_t + γλ A_next,   R_t = A_t + V_t,
//   with V_next, A_next those of the next valid token of the row (0 after the last one); A = R = 0 when masked.
//
// whiten over all N entries with mask m (n = Σ m), a corrected two-pass mean/variance:
//   whiten_partials phase 0:  per workgroup (Σ m, Σ m x)                       → partials
//   whiten_finalize phase 0:  n, μ₀ = Σ m x / n                                → scalars[0], scalars[1]
//   whiten_partials phase 1:  per workgroup (Σ m, Σ m d, Σ m d²), d = x − μ₀    → partials
//   whiten_finalize phase 1:  μ = μ₀ + Σd/n,  σ² = max(Σd² − (Σd)²/n, 0) / (n − 1 if unbiased, n > 1; else n)
//                             and 1/√(σ² + 1e−8)                               → scalars[2], scalars[3]
//   whiten_apply:             y = m ? (x − μ)/√(σ² + 1e−8) (+ μ unless shiftMean) : 0
// The shift by μ₀ keeps the sums well conditioned (a constant input gives exactly 0). Partial sums have a fixed
// order (strided per thread, then a tree in workgroup memory; no atomics), so results are bit-reproducible.
// n = 0 gives y = 0 (the TS reference throws). Sharded dispatches bind views of x/mask/y and offset their
// workgroups by groupBase; gae shards rows the same way.

override WG: u32 = 256u; // power of two

const NPART: u32 = 3u; // sums per whitening partial
const EPS: f32 = 1e-8;
// scalars[]
const SC_COUNT: u32 = 0u;
const SC_SHIFT: u32 = 1u;
const SC_MEAN: u32 = 2u;
const SC_INV_STD: u32 = 3u;

struct Params {
  rows: u32,      // gae: rows in this dispatch
  T: u32,         // gae: tokens per row
  n: u32,         // whiten: entries in the bound views
  chunk: u32,     // whiten: entries per workgroup
  groupBase: u32, // whiten: partials slot of this dispatch's workgroup 0
  groups: u32,    // whiten: partials slots in total (finalize)
  phase: u32,     // whiten: 0 = sums of x, 1 = sums of x − μ₀
  hasMask: u32,   // 0: all entries valid
  unbiased: u32,  // whiten: divide by n − 1 (n > 1)
  shiftMean: u32, // whiten: keep the zero mean
  gamma: f32,
  lambda: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rewards: array<f32>;          // (rows, T)
@group(0) @binding(2) var<storage, read> values: array<f32>;           // (rows, T)
@group(0) @binding(3) var<storage, read> mask: array<f32>;             // (rows, T) or (N) 0/1
@group(0) @binding(4) var<storage, read_write> advantages: array<f32>; // (rows, T)
@group(0) @binding(5) var<storage, read_write> returns: array<f32>;    // (rows, T)
@group(0) @binding(6) var<storage, read> x: array<f32>;                // (N) values to whiten
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;   // (groups, NPART)
@group(0) @binding(8) var<storage, read_write> scalars: array<f32>;    // (4)
@group(0) @binding(9) var<storage, read_write> y: array<f32>;          // (N) whitened

var<workgroup> sm: array<f32, NPART * WG>; // sm[s·WG + lid]

fn valid(i: u32) -> bool {
  return p.hasMask == 0u || mask[i] != 0.0;
}

// advantages, returns = GAE of each row
@compute @workgroup_size(WG)
fn gae(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let b = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (b >= p.rows) { return; }
  let gl = p.gamma * p.lambda;
  var nextValue = 0.0;
  var nextAdv = 0.0;
  for (var k = 1u; k <= p.T; k++) {
    let t = b * p.T + p.T - k;
    if (!valid(t)) {
      advantages[t] = 0.0;
      returns[t] = 0.0;
      continue;
    }
    let v = values[t];
    let delta = rewards[t] + p.gamma * nextValue - v;
    nextAdv = delta + gl * nextAdv;
    nextValue = v;
    advantages[t] = nextAdv;
    returns[t] = nextAdv + v;
  }
}

fn tree_sum(lid: u32) {
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      for (var s = 0u; s < NPART; s++) { sm[s * WG + lid] += sm[s * WG + lid + stride]; }
    }
    workgroupBarrier();
  }
}

// partials[groupBase + g] = (Σ m, Σ m d, Σ m d²) over entries [g·chunk, (g+1)·chunk), d = x − (0 | μ₀)
@compute @workgroup_size(WG)
fn whiten_partials(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let g = wid.x + wid.y * nwg.x;
  let start = g * p.chunk;
  if (start >= p.n) { return; } // whole workgroup (padding of a 2-D grid)
  let end = min(start + p.chunk, p.n);
  let shift = select(0.0, scalars[SC_SHIFT], p.phase == 1u);
  var acc = vec3f(0.0);
  for (var i = start + lid.x; i < end; i += WG) {
    if (valid(i)) {
      let d = x[i] - shift;
      acc += vec3f(1.0, d, d * d);
    }
  }
  sm[lid.x] = acc.x;
  sm[WG + lid.x] = acc.y;
  sm[2u * WG + lid.x] = acc.z;
  tree_sum(lid.x);
  if (lid.x == 0u) {
    for (var s = 0u; s < NPART; s++) { partials[(p.groupBase + g) * NPART + s] = sm[s * WG]; }
  }
}

// One workgroup: sums the partials, then phase 0 writes n and μ₀, phase 1 the mean and 1/std.
@compute @workgroup_size(WG)
fn whiten_finalize(@builtin(local_invocation_id) lid: vec3u) {
  var acc = vec3f(0.0);
  for (var g = lid.x; g < p.groups; g += WG) {
    acc += vec3f(partials[g * NPART], partials[g * NPART + 1u], partials[g * NPART + 2u]);
  }
  sm[lid.x] = acc.x;
  sm[WG + lid.x] = acc.y;
  sm[2u * WG + lid.x] = acc.z;
  tree_sum(lid.x);
  if (lid.x != 0u) { return; }
  let n = sm[0];
  if (p.phase == 0u) {
    scalars[SC_COUNT] = n;
    scalars[SC_SHIFT] = select(0.0, sm[WG] / n, n > 0.0);
    return;
  }
  let sd = sm[WG];
  let sd2 = sm[2u * WG];
  var mean = 0.0;
  var inv = 0.0;
  if (n > 0.0) {
    mean = scalars[SC_SHIFT] + sd / n;
    let denom = select(n, n - 1.0, p.unbiased != 0u && n > 1.0);
    let variance = max(sd2 - sd * sd / n, 0.0) / denom;
    inv = 1.0 / sqrt(variance + EPS);
  }
  scalars[SC_MEAN] = mean;
  scalars[SC_INV_STD] = inv;
}

// y = whitened x (0 where masked)
@compute @workgroup_size(WG)
fn whiten_apply(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (i >= p.n) { return; }
  let mean = scalars[SC_MEAN];
  let out = (x[i] - mean) * scalars[SC_INV_STD] + select(mean, 0.0, p.shiftMean != 0u);
  y[i] = select(0.0, out, valid(i));
}
