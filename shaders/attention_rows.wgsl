// Grouped-query causal attention for CPU adapters (lavapipe): the same math and masking as attention.wgsl, but
// one invocation per output row and no workgroup memory or barriers (costly on a CPU), with the row's vectors
// held in registers: head dim D = 4·D4 (D4 an override, so every loop over it unrolls and the vec4 arrays
// become registers).
//
// q: (B, T, H, D), k, v: (B, S, KVH, D), key_mask: (B, S) (0 = padding key). Query head h uses kv head
// h / (H / KVH); query t sits at key position t + (S − T) and sees key s iff s ≤ t + (S − T) and
// key_mask[b, s] ≠ 0. With x_s = scale·q·k_s:
//   forward:  one invocation per query row (b, t, h): online softmax over the visible keys,
//             out = Σ_s softmax_s(x)·v_s, lse = log Σ_s e^(x_s)          (no visible key: out = 0, lse = 0)
//   dq:       one invocation per query row: P_s = e^(x_s − lse), dS_s = P_s·(dout·v_s − δ),
//             dq = scale·Σ_s dS_s·k_s                  (stats = [lse, δ] from attention.wgsl's backward_delta)
//   dkv:      one invocation per key row (b, s, kv head): dv = Σ_(t,g) P·dout, dk = scale·Σ_(t,g) dS·q over the
//             query rows (t, g) of the G heads sharing the kv head that see key s
// Each output element is accumulated by one invocation in a fixed order: deterministic, no atomics. (Sharing each
// key's loads among the G query heads of a kv head measured 2–4× slower on lavapipe: register spills.)

override WG: u32 = 32u; // invocations per workgroup
override D4: u32 = 8u;  // head dim / 4

const DMAX4: u32 = 64u;  // head dim ≤ 256

struct Params {
  T: u32,        // query tokens
  S: u32,        // key tokens (S ≥ T)
  H: u32,        // query heads
  KVH: u32,      // kv heads (divides H)
  D: u32,        // head dim (= 4·D4)
  has_mask: u32, // 1 when key_mask is bound, else 0 (a 1-element placeholder is bound)
  scale: f32,    // 1 / sqrt(D)
  rows: u32,     // invocations: B·T·H (forward, dq) or B·S·KVH (dkv)
  R: u32,        // unused (layout shared with attention.wgsl)
  BK: u32,       // unused
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4f>;         // q:        (B, T, H, D)
@group(0) @binding(2) var<storage, read> k: array<vec4f>;         // k:        (B, S, KVH, D)
@group(0) @binding(3) var<storage, read> v: array<vec4f>;         // v:        (B, S, KVH, D)
@group(0) @binding(4) var<storage, read> key_mask: array<i32>;    // key_mask: (B, S)
@group(0) @binding(5) var<storage, read_write> out: array<vec4f>; // out:      (B, T, H, D)
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;   // lse:      (B, T, H)
@group(0) @binding(7) var<storage, read> dout: array<vec4f>;      // dout:     (B, T, H, D)
@group(0) @binding(8) var<storage, read> stats: array<f32>;       // stats:    (B, T, H, 2) = [lse, δ]
@group(0) @binding(9) var<storage, read_write> dq: array<vec4f>;  // dq:       (B, T, H, D)
@group(0) @binding(10) var<storage, read_write> dk: array<vec4f>; // dk:       (B, S, KVH, D)
@group(0) @binding(11) var<storage, read_write> dv: array<vec4f>; // dv:       (B, S, KVH, D)

fn key_visible(b: u32, s: u32) -> bool {
  return p.has_mask == 0u || key_mask[b * p.S + s] != 0;
}

// Invocation index over a 2-D grid of 1-D workgroups (grids past 65535 workgroups).
fn index(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// Query row (b·T + t)·H + h: its batch, its position, the key range it sees and its kv head's first vec4.
struct QueryRow {
  b: u32,
  s_end: u32, // keys [0, s_end) are causally visible: s ≤ t + (S − T)
  kvh: u32,
}

fn query_row(row: u32) -> QueryRow {
  let h = row % p.H;
  let t = (row / p.H) % p.T;
  return QueryRow(row / (p.H * p.T), t + (p.S - p.T) + 1u, h / (p.H / p.KVH));
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_id) lid: vec3u) {
  let row = index(wid, nwg, lid); // (b·T + t)·H + h
  if (row >= p.rows) { return; }
  let r = query_row(row);
  var qr: array<vec4f, DMAX4>;
  var acc: array<vec4f, DMAX4>;
  for (var i = 0u; i < D4; i++) {
    qr[i] = q[row * D4 + i] * p.scale;
    acc[i] = vec4f(0.0);
  }
  var m = -3.0e38;
  var l = 0.0;
  for (var s = 0u; s < r.s_end; s++) {
    if (!key_visible(r.b, s)) { continue; }
    let kb = ((r.b * p.S + s) * p.KVH + r.kvh) * D4;
    var x4 = vec4f(0.0);
    for (var i = 0u; i < D4; i++) { x4 += qr[i] * k[kb + i]; }
    let x = x4.x + x4.y + x4.z + x4.w;
    let mn = max(m, x);
    let c = exp(m - mn);
    let e = exp(x - mn);
    l = l * c + e;
    m = mn;
    for (var i = 0u; i < D4; i++) { acc[i] = acc[i] * c + e * v[kb + i]; }
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var i = 0u; i < D4; i++) { out[row * D4 + i] = acc[i] * inv; }
  lse[row] = select(0.0, m + log(l), l > 0.0);
}

@compute @workgroup_size(WG)
fn backward_dq(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_id) lid: vec3u) {
  let row = index(wid, nwg, lid);
  if (row >= p.rows) { return; }
  let r = query_row(row);
  let lse_r = stats[2u * row];
  let delta = stats[2u * row + 1u];
  var qr: array<vec4f, DMAX4>;
  var gr: array<vec4f, DMAX4>;
  var acc: array<vec4f, DMAX4>;
  for (var i = 0u; i < D4; i++) {
    qr[i] = q[row * D4 + i] * p.scale;
    gr[i] = dout[row * D4 + i];
    acc[i] = vec4f(0.0);
  }
  for (var s = 0u; s < r.s_end; s++) {
    if (!key_visible(r.b, s)) { continue; }
    let kb = ((r.b * p.S + s) * p.KVH + r.kvh) * D4;
    var x4 = vec4f(0.0);
    var dp4 = vec4f(0.0);
    for (var i = 0u; i < D4; i++) {
      x4 += qr[i] * k[kb + i];
      dp4 += gr[i] * v[kb + i];
    }
    let pr = exp(x4.x + x4.y + x4.z + x4.w - lse_r);
    let ds = pr * (dp4.x + dp4.y + dp4.z + dp4.w - delta);
    for (var i = 0u; i < D4; i++) { acc[i] += ds * k[kb + i]; }
  }
  for (var i = 0u; i < D4; i++) { dq[row * D4 + i] = acc[i] * p.scale; }
}

@compute @workgroup_size(WG)
fn backward_dkv(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u) {
  let key = index(wid, nwg, lid); // (b·S + s)·KVH + kvh
  if (key >= p.rows) { return; }
  let kvh = key % p.KVH;
  let s = (key / p.KVH) % p.S;
  let b = key / (p.KVH * p.S);
  let G = p.H / p.KVH;
  var kr: array<vec4f, DMAX4>;
  var vr: array<vec4f, DMAX4>;
  var gk: array<vec4f, DMAX4>;
  var gv: array<vec4f, DMAX4>;
  for (var i = 0u; i < D4; i++) {
    kr[i] = k[key * D4 + i] * p.scale;
    vr[i] = v[key * D4 + i];
    gk[i] = vec4f(0.0);
    gv[i] = vec4f(0.0);
  }
  if (key_visible(b, s)) {
    let offs = p.S - p.T;
    // Query t sees key s iff s ≤ t + offs.
    for (var t = select(0u, s - offs, s > offs); t < p.T; t++) {
      for (var gi = 0u; gi < G; gi++) {
        let row = (b * p.T + t) * p.H + kvh * G + gi;
        let qb = row * D4;
        var x4 = vec4f(0.0);
        var dp4 = vec4f(0.0);
        for (var i = 0u; i < D4; i++) {
          x4 += kr[i] * q[qb + i];
          dp4 += vr[i] * dout[qb + i];
        }
        let pr = exp(x4.x + x4.y + x4.z + x4.w - stats[2u * row]);
        let ds = pr * (dp4.x + dp4.y + dp4.z + dp4.w - stats[2u * row + 1u]);
        for (var i = 0u; i < D4; i++) {
          gv[i] += pr * dout[qb + i];
          gk[i] += ds * q[qb + i];
        }
      }
    }
  }
  for (var i = 0u; i < D4; i++) {
    dk[key * D4 + i] = gk[i] * p.scale;
    dv[key * D4 + i] = gv[i];
  }
}
