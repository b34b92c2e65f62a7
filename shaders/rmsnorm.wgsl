// RMSNorm (Hugging Face Qwen2RMSNorm), forward and backward side by side (llm.c style).
//
// forward:      out[r, i] = x[r, i] · rstd[r] · w[i],   rstd[r] = 1 / sqrt(mean_i x[r, i]² + eps)
// backward:     dx[r, j]  = rstd[r] · (w[j]·dout[r, j] − x[r, j] · rstd[r]² · mean_i dout[r, i]·w[i]·x[r, i])   (=)
// backward_dw:  dw[i]    += Σ_r dout[r, i] · x[r, i] · rstd[r]                                                  (+=)
//
// Gradient convention (llm.c): activation grads are written (=), parameter grads accumulated (+=).
// forward / backward: one workgroup per row, WG threads striding over C, then a fixed-order tree reduction in
// workgroup memory (deterministic). backward_dw: a separate column-parallel reduction over rows, WG_X columns ×
// WG_Y row lanes per workgroup, lanes summed in fixed order (deterministic, no atomics).
// forward_rows / backward_rows / backward_dw_cols: the same sums with one invocation per row (per column for dw)
// and no workgroup memory or barriers, which are costly on CPU adapters (lavapipe, 1024 × 128: forward 4 ms →
// 0.5 ms).
// Rows may be dispatched in shards: x/out/dout/dx are bound as views of the shard, rstd is bound whole and
// indexed from p.row0. Workgroups are laid out 2-D when there are more than 65535 rows.

override WG: u32 = 64u;   // threads per row (power of two)
override WG_X: u32 = 32u; // backward_dw: columns per workgroup
override WG_Y: u32 = 8u;  // backward_dw: row lanes per workgroup (power of two)

struct Params {
  rows: u32, // rows in this dispatch (a shard of N)
  C: u32,    // channels (last dim)
  row0: u32, // index of the shard's first row in rstd
  eps: f32,  // forward only
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;           // x:    (rows, C)
@group(0) @binding(2) var<storage, read> w: array<f32>;           // w:    (C)
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;  // rstd: (N), read by backward
@group(0) @binding(4) var<storage, read_write> out: array<f32>;   // out:  (rows, C)
@group(0) @binding(5) var<storage, read> dout: array<f32>;        // dout: (rows, C)
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;    // dx:   (rows, C)
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;    // dw:   (C)

var<workgroup> red: array<f32, WG>;
var<workgroup> lanes: array<f32, WG_X * WG_Y>;

// Sum of v over the workgroup's WG threads (fixed pairing order); every thread gets the total.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_id) lid3: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let lid = lid3.x;
  let base = row * p.C;
  var ss = 0.0;
  for (var i = lid; i < p.C; i += WG) {
    let v = x[base + i];
    ss += v * v;
  }
  let r = inverseSqrt(workgroup_sum(lid, ss) / f32(p.C) + p.eps);
  for (var i = lid; i < p.C; i += WG) { out[base + i] = x[base + i] * r * w[i]; }
  if (lid == 0u) { rstd[p.row0 + row] = r; }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_id) lid3: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let lid = lid3.x;
  let base = row * p.C;
  var dot = 0.0;
  for (var i = lid; i < p.C; i += WG) { dot += dout[base + i] * w[i] * x[base + i]; }
  let r = rstd[p.row0 + row];
  let k = workgroup_sum(lid, dot) / f32(p.C) * r * r;
  for (var i = lid; i < p.C; i += WG) { dx[base + i] = r * (w[i] * dout[base + i] - x[base + i] * k); }
}

@compute @workgroup_size(WG_X, WG_Y)
fn backward_dw(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let col = wid.x * WG_X + lid.x;
  var acc = 0.0;
  if (col < p.C) {
    for (var r = lid.y; r < p.rows; r += WG_Y) { acc += dout[r * p.C + col] * x[r * p.C + col] * rstd[p.row0 + r]; }
  }
  let slot = lid.y * WG_X + lid.x;
  lanes[slot] = acc;
  workgroupBarrier();
  for (var s = WG_Y / 2u; s > 0u; s = s / 2u) {
    if (lid.y < s) { lanes[slot] = lanes[slot] + lanes[slot + s * WG_X]; }
    workgroupBarrier();
  }
  if (lid.y == 0u && col < p.C) { dw[col] = dw[col] + lanes[lid.x]; }
}

@compute @workgroup_size(WG)
fn forward_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u) {
  let row = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  var ss = 0.0;
  for (var i = 0u; i < p.C; i++) {
    let v = x[base + i];
    ss += v * v;
  }
  let r = inverseSqrt(ss / f32(p.C) + p.eps);
  for (var i = 0u; i < p.C; i++) { out[base + i] = x[base + i] * r * w[i]; }
  rstd[p.row0 + row] = r;
}

@compute @workgroup_size(WG)
fn backward_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_id) lid: vec3u) {
  let row = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  var dot = 0.0;
  for (var i = 0u; i < p.C; i++) { dot += dout[base + i] * w[i] * x[base + i]; }
  let r = rstd[p.row0 + row];
  let k = dot / f32(p.C) * r * r;
  for (var i = 0u; i < p.C; i++) { dx[base + i] = r * (w[i] * dout[base + i] - x[base + i] * k); }
}

@compute @workgroup_size(WG)
fn backward_dw_cols(@builtin(global_invocation_id) gid: vec3u) {
  let col = gid.x;
  if (col >= p.C) { return; }
  var acc = 0.0;
  for (var r = 0u; r < p.rows; r++) { acc += dout[r * p.C + col] * x[r * p.C + col] * rstd[p.row0 + r]; }
  dw[col] = dw[col] + acc;
}
