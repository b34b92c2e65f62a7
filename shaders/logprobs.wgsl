// Fused log-probabilities of target tokens, without keeping log-softmax of the whole vocabulary.
//
// forward:  for each row r of logits x: (R, V)
//   lse[r]     = log Σ_v exp(x[r, v])                     (saved for backward)
//   logp[r]    = x[r, t_r] − lse[r]                       (0 where t_r < 0: ignored row)
//   entropy[r] = −Σ_v p_v log p_v,  p = softmax(x[r])
// backward: dx[r, v] = dlogp[r]·(1[v = t_r] − p_v) − dentropy[r]·p_v·(log p_v + entropy[r])
//   (activation gradient: written with =, not accumulated)
// forward: one workgroup per row with tree reductions in workgroup memory (GPUs; rows may be split over a 2-D
// grid, row = wid.x + wid.y * nwg.x). forward_rows: the same sums with one invocation per row and no workgroup
// memory or barriers, which are costly on CPU adapters (lavapipe: 1024 rows × 512 logits 40 ms → 3 ms).
// backward: one workgroup per row, no reductions.

override WG: u32 = 256u;

struct Params {
  rows: u32,   // R
  vocab: u32,  // V
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;             // (R, V) logits
@group(0) @binding(2) var<storage, read> targets: array<i32>;       // (R) target ids, −1 = ignore
@group(0) @binding(3) var<storage, read_write> logp: array<f32>;    // (R)
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;     // (R)
@group(0) @binding(5) var<storage, read_write> entropy: array<f32>; // (R)
@group(0) @binding(6) var<storage, read> dlogp: array<f32>;         // (R)
@group(0) @binding(7) var<storage, read> dentropy: array<f32>;      // (R)
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;      // (R, V)

var<workgroup> red_a: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;

fn reduce_max(lid: u32, v: f32) -> f32 {
  red_a[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { red_a[lid] = max(red_a[lid], red_a[lid + s]); }
    workgroupBarrier();
  }
  let m = red_a[0];
  workgroupBarrier();
  return m;
}

fn reduce_sum2(lid: u32, a: f32, b: f32) -> vec2f {
  red_a[lid] = a;
  red_b[lid] = b;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      red_a[lid] = red_a[lid] + red_a[lid + s];
      red_b[lid] = red_b[lid] + red_b[lid + s];
    }
    workgroupBarrier();
  }
  let r = vec2f(red_a[0], red_b[0]);
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_id) lid3: vec3u) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.rows) { return; }  // uniform per workgroup
  let lid = lid3.x;
  let base = r * p.vocab;
  var m = -3.4028235e38;
  for (var v = lid; v < p.vocab; v += WG) { m = max(m, x[base + v]); }
  m = reduce_max(lid, m);
  var s = 0.0;
  var sx = 0.0;  // Σ e^(x−m)·(x−m)
  for (var v = lid; v < p.vocab; v += WG) {
    let d = x[base + v] - m;
    let e = exp(d);
    s += e;
    sx += e * d;
  }
  let tot = reduce_sum2(lid, s, sx);
  if (lid == 0u) { finish_row(r, base, m, tot.x, tot.y); }
}

// Writes lse, entropy and logp of row r from m = max_v x, s = Σ e^(x−m) and sx = Σ e^(x−m)·(x−m).
fn finish_row(r: u32, base: u32, m: f32, s: f32, sx: f32) {
  let l = m + log(s);
  lse[r] = l;
  // H = −Σ p (x − lse) = lse − m − Σ e^(x−m)(x−m) / Σ e^(x−m)
  entropy[r] = log(s) - sx / s;
  let t = targets[r];
  logp[r] = select(0.0, x[base + u32(max(t, 0))] - l, t >= 0);
}

@compute @workgroup_size(WG)
fn forward_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u) {
  let r = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (r >= p.rows) { return; }
  let base = r * p.vocab;
  var m = -3.4028235e38;
  for (var v = 0u; v < p.vocab; v++) { m = max(m, x[base + v]); }
  var s = 0.0;
  var sx = 0.0;
  for (var v = 0u; v < p.vocab; v++) {
    let d = x[base + v] - m;
    let e = exp(d);
    s += e;
    sx += e * d;
  }
  finish_row(r, base, m, s, sx);
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_id) lid3: vec3u) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.rows) { return; }
  let base = r * p.vocab;
  let l = lse[r];
  let h = entropy[r];
  let t = targets[r];
  let g = select(0.0, dlogp[r], t >= 0);
  let gh = dentropy[r];
  for (var v = lid3.x; v < p.vocab; v += WG) {
    let lp = x[base + v] - l;
    let pv = exp(lp);
    var d = -g * pv - gh * pv * (lp + h);
    if (i32(v) == t) { d += g; }
    dx[base + v] = d;
  }
}
