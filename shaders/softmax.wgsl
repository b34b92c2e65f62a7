// Row softmax and log-softmax over a (rows, cols) tensor, forward and backward, with an optional causal mask.
// One workgroup per row (workgroup index r = wid.x + wid.y * nwg.x); each thread strides over the row's columns and
// the workgroup combines the per-thread results with a shared-memory tree (WG must be a power of two).
//
// Forward is numerically stable and reads x twice: an online pass keeps a running (max m, Σ exp(x − m)) per
// thread (rescaling the sum when the max grows), the tree merges the pairs, then a second pass writes
//   softmax:     y = exp(x − m) / s
//   log-softmax: y = x − m − log(s)
// Backward (y is the forward output, dy the upstream gradient):
//   softmax:     dx = y ⊙ (dy − Σ_c dy⊙y)
//   log-softmax: dx = dy − exp(y) · Σ_c dy
//
// Causal mask (causal = 1): rows come in blocks of T query rows (e.g. (B, NH, T) rows of attention scores). Row r
// (absolute, r = rowStart + local row) is query position q = (r mod T) + offset and sees columns c ≤ q; columns
// c > q are masked: softmax writes 0, log-softmax writes −∞, both backward passes write dx = 0, and masked inputs
// are never read. `offset` is the number of cached key positions before the first query (KV-cache decode).

override WG: u32 = 256u;

struct Params {
  rows: u32,      // rows in this dispatch
  cols: u32,      // columns per row
  rowStart: u32,  // absolute index of the first row (for the causal mask when rows are sharded)
  causal: u32,    // 1: apply the causal mask
  T: u32,         // query rows per causal block
  offset: u32,    // query position of the first row of a block
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;    // forward: x (rows, cols); backward: y (rows, cols)
@group(0) @binding(2) var<storage, read> dy: array<f32>;   // backward: dy (rows, cols)
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // forward: y; backward: dx (rows, cols)

const NEG_MAX: f32 = -3.40282347e38;

var<workgroup> sm_m: array<f32, WG>;
var<workgroup> sm_s: array<f32, WG>;

// Number of unmasked columns of local row r.
fn valid_cols(r: u32) -> u32 {
  if (p.causal == 0u) { return p.cols; }
  let q = (p.rowStart + r) % p.T + p.offset;
  return min(p.cols, q + 1u);
}

fn neg_inf() -> f32 {
  return bitcast<f32>(0xff800000u);
}

// Merges the partial (max, Σexp) pairs of the workgroup: (m1, s1) ⊕ (m2, s2) = (m, s1·e^(m1−m) + s2·e^(m2−m)).
fn reduce_max_sum(m_in: f32, s_in: f32, lid: u32) -> vec2f {
  sm_m[lid] = m_in;
  sm_s[lid] = s_in;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      let m1 = sm_m[lid];
      let m2 = sm_m[lid + stride];
      let m = max(m1, m2);
      sm_s[lid] = sm_s[lid] * exp(m1 - m) + sm_s[lid + stride] * exp(m2 - m);
      sm_m[lid] = m;
    }
    workgroupBarrier();
  }
  let r = vec2f(sm_m[0], sm_s[0]);
  workgroupBarrier();
  return r;
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
  sm_s[lid] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { sm_s[lid] += sm_s[lid + stride]; }
    workgroupBarrier();
  }
  let r = sm_s[0];
  workgroupBarrier();
  return r;
}

// (max, Σ exp(x − max)) of x[base .. base + n).
fn row_stats(base: u32, n: u32, lid: u32) -> vec2f {
  var m = NEG_MAX;
  var s = 0.0;
  for (var c = lid; c < n; c += WG) {
    let v = x[base + c];
    if (v > m) {
      s = s * exp(m - v) + 1.0;
      m = v;
    } else {
      s += exp(v - m);
    }
  }
  return reduce_max_sum(m, s, lid);
}

// out = softmax(x) per row
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.rows) { return; }
  let base = r * p.cols;
  let n = valid_cols(r);
  let st = row_stats(base, n, lid.x);
  let inv = 1.0 / st.y;
  for (var c = lid.x; c < p.cols; c += WG) {
    var y = 0.0;
    if (c < n) { y = exp(x[base + c] - st.x) * inv; }
    out[base + c] = y;
  }
}

// out = log_softmax(x) per row
@compute @workgroup_size(WG)
fn log_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.rows) { return; }
  let base = r * p.cols;
  let n = valid_cols(r);
  let st = row_stats(base, n, lid.x);
  let lse = st.x + log(st.y);
  for (var c = lid.x; c < p.cols; c += WG) {
    var y = neg_inf();
    if (c < n) { y = x[base + c] - lse; }
    out[base + c] = y;
  }
}

// dx = y ⊙ (dy − Σ dy⊙y), with y = softmax(x) bound at binding 1
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.rows) { return; }
  let base = r * p.cols;
  let n = valid_cols(r);
  var acc = 0.0;
  for (var c = lid.x; c < n; c += WG) { acc += dy[base + c] * x[base + c]; }
  let dot = reduce_sum(acc, lid.x);
  for (var c = lid.x; c < p.cols; c += WG) {
    var g = 0.0;
    if (c < n) { g = x[base + c] * (dy[base + c] - dot); }
    out[base + c] = g;
  }
}

// dx = dy − exp(y) · Σ dy, with y = log_softmax(x) bound at binding 1
@compute @workgroup_size(WG)
fn log_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.rows) { return; }
  let base = r * p.cols;
  let n = valid_cols(r);
  var acc = 0.0;
  for (var c = lid.x; c < n; c += WG) { acc += dy[base + c]; }
  let total = reduce_sum(acc, lid.x);
  for (var c = lid.x; c < p.cols; c += WG) {
    var g = 0.0;
    if (c < n) { g = dy[base + c] - exp(x[base + c]) * total; }
    out[base + c] = g;
  }
}
