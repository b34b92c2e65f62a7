// Grouped-query causal attention (Hugging Face Qwen2 semantics), fused forward with online softmax and its
// backward, side by side (llm.c / flash-attention style: no T×S matrix in global memory).
//
// q: (B, T, H, D), k, v: (B, S, KVH, D) with S ≥ T (a KV cache may precede the T new tokens), key_mask: (B, S)
// (0 = padding key). G = H / KVH query heads share kv head h / G (HF repeat_kv). Query t sits at key position
// t + (S − T) and sees key s iff s ≤ t + (S − T) and key_mask[b, s] ≠ 0. With x_s = scale·q·k_s:
//   forward:        out = Σ_s softmax_s(x)·v_s,  lse = log Σ_s e^(x_s)    (no visible key: out = 0, lse = 0)
//   backward_delta: stats = [lse, δ],  δ = Σ_d dout·out                   (per query row)
//   backward_dq:    P_s = e^(x_s − lse),  dS_s = P_s·(dout·v_s − δ),  dq = scale·Σ_s dS_s·k_s                (=)
//   backward_dkv:   dv_s = Σ_(t,h) P·dout,  dk_s = scale·Σ_(t,h) dS·q   (all G heads of the kv head)         (=)
// Every output element is accumulated by one thread in a fixed order: deterministic, no atomics.
//
// Tiling: the query rows of one (batch, kv head) are its (t, g) pairs flattened as t·G + g, so the G heads
// sharing a kv head reuse every staged K/V tile. forward / backward_dq: workgroup = (R query rows, kv head,
// batch) looping over tiles of BK keys; backward_dkv: workgroup = (R keys, kv head, batch) looping over tiles of
// BK query rows. Each tile step: stage rows in workgroup memory; one thread per (row, key) pair computes the
// score; (forward) one thread per row updates the online-softmax max/sum; one thread per output element
// (R·D of them, ACC per thread in registers) accumulates. R, BK, D are uniforms with R·D, BK·D, R·BK ≤ CAP,
// so one pipeline serves every head dim.

override WG: u32 = 128u;   // threads per workgroup
override CAP: u32 = 1280u; // floats per workgroup tile
override ACC: u32 = 10u;   // CAP / WG: output elements per thread (≤ ACC_MAX)

const ACC_MAX: u32 = 16u;
const RMAX: u32 = 64u;     // R, BK ≤ RMAX
const NEG: f32 = -3.0e38;  // "minus infinity" that keeps exp() and subtraction finite

struct Params {
  T: u32,        // query tokens
  S: u32,        // key tokens (S ≥ T)
  H: u32,        // query heads
  KVH: u32,      // kv heads (divides H)
  D: u32,        // head dim
  has_mask: u32, // 1 when key_mask is bound, else 0 (a 1-element placeholder is bound)
  scale: f32,    // 1 / sqrt(D)
  rows: u32,     // backward_delta: B·T·H
  R: u32,        // rows (forward, dq) or keys (dkv) per workgroup
  BK: u32,       // keys (forward, dq) or query rows (dkv) per tile
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;           // q:        (B, T, H, D)
@group(0) @binding(2) var<storage, read> k: array<f32>;           // k:        (B, S, KVH, D)
@group(0) @binding(3) var<storage, read> v: array<f32>;           // v:        (B, S, KVH, D)
@group(0) @binding(4) var<storage, read> key_mask: array<i32>;    // key_mask: (B, S)
@group(0) @binding(5) var<storage, read_write> out: array<f32>;   // out:      (B, T, H, D)
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;   // lse:      (B, T, H)
@group(0) @binding(7) var<storage, read> dout: array<f32>;        // dout:     (B, T, H, D)
@group(0) @binding(8) var<storage, read_write> stats: array<f32>; // stats:    (B, T, H, 2) = [lse, δ]
@group(0) @binding(9) var<storage, read_write> dq: array<f32>;    // dq:       (B, T, H, D)
@group(0) @binding(10) var<storage, read_write> dk: array<f32>;   // dk:       (B, S, KVH, D)
@group(0) @binding(11) var<storage, read_write> dv: array<f32>;   // dv:       (B, S, KVH, D)

var<workgroup> sh_a: array<f32, CAP>; // forward, dq: q rows (R·D)       dkv: k rows (R·D)
var<workgroup> sh_b: array<f32, CAP>; // dq: dout rows (R·D)             dkv: v rows (R·D)
var<workgroup> sh_c: array<f32, CAP>; // forward, dq: K tile (BK·D)      dkv: q tile (BK·D)
var<workgroup> sh_d: array<f32, CAP>; // forward, dq: V tile (BK·D)      dkv: dout tile (BK·D)
var<workgroup> sh_p: array<f32, CAP>; // forward: scores → P; dq: dS     dkv: P        (R·BK, row stride BK)
var<workgroup> sh_s: array<f32, CAP>; // dkv: dS (R·BK)
var<workgroup> row_m: array<f32, RMAX>; // forward: running max;   dq: lse   dkv: lse of the q tile
var<workgroup> row_l: array<f32, RMAX>; // forward: running sum;   dq: δ     dkv: δ of the q tile
var<workgroup> row_c: array<f32, RMAX>; // forward: tile rescale;            dkv: key visible (1 or 0)

fn key_visible(b: u32, s: u32) -> bool {
  return p.has_mask == 0u || key_mask[b * p.S + s] != 0;
}

// Flat (B, T, H) row of query row f = t·G + g of kv head kvh.
fn q_row(b: u32, kvh: u32, f: u32) -> u32 {
  let G = p.H / p.KVH;
  return (b * p.T + f / G) * p.H + kvh * G + f % G;
}

// Flat (B, S, KVH) row of key s.
fn k_row(b: u32, kvh: u32, s: u32) -> u32 {
  return (b * p.S + s) * p.KVH + kvh;
}

// Dot product of rows i of `a` and j of `c` (both D wide) in workgroup memory.
fn dot_ac(i: u32, j: u32) -> f32 {
  var x = 0.0;
  for (var d = 0u; d < p.D; d++) { x += sh_a[i * p.D + d] * sh_c[j * p.D + d]; }
  return x;
}

fn dot_bd(i: u32, j: u32) -> f32 {
  var x = 0.0;
  for (var d = 0u; d < p.D; d++) { x += sh_b[i * p.D + d] * sh_d[j * p.D + d]; }
  return x;
}

// Stages keys [s0, s0 + n) of (b, kvh) into sh_c (K) and sh_d (V).
fn stage_kv(b: u32, kvh: u32, s0: u32, n: u32, lid: u32) {
  for (var e = lid; e < n * p.D; e += WG) {
    let gi = k_row(b, kvh, s0 + e / p.D) * p.D + e % p.D;
    sh_c[e] = k[gi];
    sh_d[e] = v[gi];
  }
}

// Exclusive end of the keys visible to query rows [f0, f0 + n) (same for the whole workgroup).
fn keys_end(f0: u32, n: u32) -> u32 {
  return min(p.S, (f0 + n - 1u) / (p.H / p.KVH) + (p.S - p.T) + 1u);
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid3: vec3u) {
  let lid = lid3.x;
  let G = p.H / p.KVH;
  let kvh = wid.y;
  let b = wid.z;
  let f0 = wid.x * p.R;
  let nr = min(p.R, p.T * G - f0);
  let offs = p.S - p.T;
  for (var e = lid; e < nr * p.D; e += WG) { sh_a[e] = q[q_row(b, kvh, f0 + e / p.D) * p.D + e % p.D] * p.scale; }
  for (var r = lid; r < nr; r += WG) {
    row_m[r] = NEG;
    row_l[r] = 0.0;
  }
  var acc: array<f32, ACC_MAX>;
  for (var i = 0u; i < ACC; i++) { acc[i] = 0.0; }
  let s_end = keys_end(f0, nr);
  for (var s0 = 0u; s0 < s_end; s0 += p.BK) {
    let nk = min(p.BK, s_end - s0);
    workgroupBarrier();
    stage_kv(b, kvh, s0, nk, lid);
    workgroupBarrier();
    for (var e = lid; e < nr * nk; e += WG) { // scores
      let r = e / nk;
      let j = e % nk;
      let s = s0 + j;
      var x = NEG;
      if (s <= (f0 + r) / G + offs && key_visible(b, s)) { x = dot_ac(r, j); }
      sh_p[r * p.BK + j] = x;
    }
    workgroupBarrier();
    for (var r = lid; r < nr; r += WG) { // online softmax: new max, rescale, probabilities
      var mt = row_m[r];
      for (var j = 0u; j < nk; j++) { mt = max(mt, sh_p[r * p.BK + j]); }
      let c = exp(row_m[r] - mt);
      var sum = 0.0;
      for (var j = 0u; j < nk; j++) {
        let x = sh_p[r * p.BK + j];
        let pj = select(0.0, exp(x - mt), x != NEG);
        sh_p[r * p.BK + j] = pj;
        sum += pj;
      }
      row_m[r] = mt;
      row_l[r] = row_l[r] * c + sum;
      row_c[r] = c;
    }
    workgroupBarrier();
    for (var i = 0u; i < ACC; i++) { // acc = acc·c + P·V
      let e = lid + i * WG;
      if (e < nr * p.D) {
        let r = e / p.D;
        let d = e % p.D;
        var a = acc[i] * row_c[r];
        for (var j = 0u; j < nk; j++) { a += sh_p[r * p.BK + j] * sh_d[j * p.D + d]; }
        acc[i] = a;
      }
    }
  }
  for (var i = 0u; i < ACC; i++) {
    let e = lid + i * WG;
    if (e < nr * p.D) {
      let r = e / p.D;
      let l = row_l[r];
      out[q_row(b, kvh, f0 + r) * p.D + e % p.D] = select(0.0, acc[i] / l, l > 0.0);
    }
  }
  for (var r = lid; r < nr; r += WG) {
    let l = row_l[r];
    lse[q_row(b, kvh, f0 + r)] = select(0.0, row_m[r] + log(l), l > 0.0);
  }
}

// stats[row] = [lse, Σ_d dout·out], one thread per query row (B·T·H rows, 2-D grid past 65535 workgroups).
@compute @workgroup_size(WG)
fn backward_delta(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_id) lid: vec3u) {
  let row = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (row >= p.rows) { return; }
  var delta = 0.0;
  for (var d = 0u; d < p.D; d++) { delta += dout[row * p.D + d] * out[row * p.D + d]; }
  stats[2u * row] = lse[row];
  stats[2u * row + 1u] = delta;
}

@compute @workgroup_size(WG)
fn backward_dq(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid3: vec3u) {
  let lid = lid3.x;
  let G = p.H / p.KVH;
  let kvh = wid.y;
  let b = wid.z;
  let f0 = wid.x * p.R;
  let nr = min(p.R, p.T * G - f0);
  let offs = p.S - p.T;
  for (var e = lid; e < nr * p.D; e += WG) {
    let gi = q_row(b, kvh, f0 + e / p.D) * p.D + e % p.D;
    sh_a[e] = q[gi] * p.scale;
    sh_b[e] = dout[gi];
  }
  for (var r = lid; r < nr; r += WG) {
    let row = q_row(b, kvh, f0 + r);
    row_m[r] = stats[2u * row];
    row_l[r] = stats[2u * row + 1u];
  }
  var acc: array<f32, ACC_MAX>;
  for (var i = 0u; i < ACC; i++) { acc[i] = 0.0; }
  let s_end = keys_end(f0, nr);
  for (var s0 = 0u; s0 < s_end; s0 += p.BK) {
    let nk = min(p.BK, s_end - s0);
    workgroupBarrier();
    stage_kv(b, kvh, s0, nk, lid);
    workgroupBarrier();
    for (var e = lid; e < nr * nk; e += WG) { // dS = P·(dout·v − δ)
      let r = e / nk;
      let j = e % nk;
      let s = s0 + j;
      var ds = 0.0;
      if (s <= (f0 + r) / G + offs && key_visible(b, s)) {
        ds = exp(dot_ac(r, j) - row_m[r]) * (dot_bd(r, j) - row_l[r]);
      }
      sh_p[r * p.BK + j] = ds;
    }
    workgroupBarrier();
    for (var i = 0u; i < ACC; i++) { // dq += dS·K
      let e = lid + i * WG;
      if (e < nr * p.D) {
        let r = e / p.D;
        let d = e % p.D;
        var a = acc[i];
        for (var j = 0u; j < nk; j++) { a += sh_p[r * p.BK + j] * sh_c[j * p.D + d]; }
        acc[i] = a;
      }
    }
  }
  for (var i = 0u; i < ACC; i++) {
    let e = lid + i * WG;
    if (e < nr * p.D) { dq[q_row(b, kvh, f0 + e / p.D) * p.D + e % p.D] = acc[i] * p.scale; }
  }
}

@compute @workgroup_size(WG)
fn backward_dkv(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid3: vec3u) {
  let lid = lid3.x;
  let G = p.H / p.KVH;
  let kvh = wid.y;
  let b = wid.z;
  let k0 = wid.x * p.R;
  let nkeys = min(p.R, p.S - k0);
  let offs = p.S - p.T;
  for (var e = lid; e < nkeys * p.D; e += WG) {
    let gi = k_row(b, kvh, k0 + e / p.D) * p.D + e % p.D;
    sh_a[e] = k[gi];
    sh_b[e] = v[gi];
  }
  for (var i = lid; i < nkeys; i += WG) { row_c[i] = select(0.0, 1.0, key_visible(b, k0 + i)); }
  var dk_acc: array<f32, ACC_MAX>;
  var dv_acc: array<f32, ACC_MAX>;
  for (var i = 0u; i < ACC; i++) {
    dk_acc[i] = 0.0;
    dv_acc[i] = 0.0;
  }
  // Query rows t·G + g that see any of these keys: t ≥ k0 − offs.
  let f_end = p.T * G;
  for (var f0 = select(0u, (k0 - offs) * G, k0 > offs); f0 < f_end; f0 += p.BK) {
    let nq = min(p.BK, f_end - f0);
    workgroupBarrier();
    for (var e = lid; e < nq * p.D; e += WG) {
      let gi = q_row(b, kvh, f0 + e / p.D) * p.D + e % p.D;
      sh_c[e] = q[gi] * p.scale;
      sh_d[e] = dout[gi];
    }
    for (var j = lid; j < nq; j += WG) {
      let row = q_row(b, kvh, f0 + j);
      row_m[j] = stats[2u * row];
      row_l[j] = stats[2u * row + 1u];
    }
    workgroupBarrier();
    for (var e = lid; e < nkeys * nq; e += WG) { // P and dS of (key i, query row j)
      let i = e / nq;
      let j = e % nq;
      var pj = 0.0;
      var ds = 0.0;
      if (k0 + i <= (f0 + j) / G + offs && row_c[i] != 0.0) {
        pj = exp(dot_ac(i, j) - row_m[j]);
        ds = pj * (dot_bd(i, j) - row_l[j]);
      }
      sh_p[i * p.BK + j] = pj;
      sh_s[i * p.BK + j] = ds;
    }
    workgroupBarrier();
    for (var ii = 0u; ii < ACC; ii++) { // dv += P·dout, dk += dS·q
      let e = lid + ii * WG;
      if (e < nkeys * p.D) {
        let i = e / p.D;
        let d = e % p.D;
        var a = dv_acc[ii];
        var c = dk_acc[ii];
        for (var j = 0u; j < nq; j++) {
          a += sh_p[i * p.BK + j] * sh_d[j * p.D + d];
          c += sh_s[i * p.BK + j] * sh_c[j * p.D + d];
        }
        dv_acc[ii] = a;
        dk_acc[ii] = c;
      }
    }
  }
  for (var ii = 0u; ii < ACC; ii++) {
    let e = lid + ii * WG;
    if (e < nkeys * p.D) {
      let gi = k_row(b, kvh, k0 + e / p.D) * p.D + e % p.D;
      dk[gi] = dk_acc[ii];
      dv[gi] = dv_acc[ii];
    }
  }
}
