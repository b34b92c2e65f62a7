// Grouped-query causal attention for CPU adapters (lavapipe): the same math and masking as attention.wgsl, but
// one invocation per output row and no workgroup memory or barriers (costly on a CPU), with the row's vectors
// held in registers: head dim D = 4·D4 (D4 an override, so every loop over it unrolls and the vec4 arrays
// become registers).
//
// q: (B, T, H, D), k, v: (B, S, KVH, D), key_mask: (B, S) (0 = padding key). Query head h uses kv head
// h / (H / KVH); query t sits at key position t + (S − T) and sees key s iff s ≤ t + (S − T) and
// key_mask[b, s] ≠ 0. With x_s = scale·q·k_s:
//   forward:  one invocation per GQ query rows (b, t, h .. h + GQ − 1) of one kv head: online softmax over the visible keys,
//             out = Σ_s softmax_s(x)·v_s, lse = log Σ_s e^(x_s)          (no visible key: out = 0, lse = 0)
//   dq:       one invocation per GQ query rows: P_s = e^(x_s − lse), dS_s = P_s·(dout·v_s − δ),
//             dq = scale·Σ_s dS_s·k_s                  (stats = [lse, δ] from attention.wgsl's backward_delta)
//   dkv:      one invocation per key row (b, s, kv head): dv = Σ_(t,g) P·dout, dk = scale·Σ_(t,g) dS·q over the
//             query rows (t, g) of the G heads sharing the kv head that see key s
// Each output element is accumulated by one invocation in a fixed order: deterministic, no atomics.

override WG: u32 = 32u; // invocations per workgroup
override D4: u32 = 8u;  // head dim / 4
// Query heads (of one kv head) per invocation of forward and dq. Sharing each key's loads among G heads
// measured 2-4x slower on lavapipe (register spills), so it stays 1; the loops keep the general form.
const GQ: u32 = 1u;

const DMAX4: u32 = 64u;  // head dim ≤ 256
const GMAX: u32 = 16u;   // GQ ≤ GMAX
const RMAX4: u32 = 64u;  // GQ·D4 ≤ RMAX4

struct Params {
  T: u32,        // query tokens
  S: u32,        // key tokens (S ≥ T)
  H: u32,        // query heads
  KVH: u32,      // kv heads (divides H)
  D: u32,        // head dim (= 4·D4)
  has_mask: u32, // 1 when key_mask is bound, else 0 (a 1-element placeholder is bound)
  scale: f32,    // 1 / sqrt(D)
  rows: u32,     // invocations: B·T·H / GQ (forward, dq) or B·S·KVH (dkv)
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

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_id) lid: vec3u) {
  let item = index(wid, nwg, lid); // ((b·T + t)·H + h0) / GQ: query heads h0 .. h0 + GQ − 1 share a kv head
  if (item >= p.rows) { return; }
  let row0 = item * GQ; // (b·T + t)·H + h0
  let h0 = row0 % p.H;
  let t = (row0 / p.H) % p.T;
  let b = row0 / (p.H * p.T);
  let kvh = h0 / (p.H / p.KVH);
  var qr: array<vec4f, RMAX4>;
  var acc: array<vec4f, RMAX4>;
  for (var i = 0u; i < GQ * D4; i++) {
    qr[i] = q[row0 * D4 + i] * p.scale;
    acc[i] = vec4f(0.0);
  }
  var m: array<f32, GMAX>;
  var l: array<f32, GMAX>;
  for (var g = 0u; g < GQ; g++) {
    m[g] = -3.0e38;
    l[g] = 0.0;
  }
  let s_end = t + (p.S - p.T) + 1u;
  for (var s = 0u; s < s_end; s++) {
    if (!key_visible(b, s)) { continue; }
    let kb = ((b * p.S + s) * p.KVH + kvh) * D4;
    for (var g = 0u; g < GQ; g++) {
      var x4 = vec4f(0.0);
      for (var i = 0u; i < D4; i++) { x4 += qr[g * D4 + i] * k[kb + i]; }
      let x = x4.x + x4.y + x4.z + x4.w;
      let mn = max(m[g], x);
      let c = exp(m[g] - mn);
      let e = exp(x - mn);
      l[g] = l[g] * c + e;
      m[g] = mn;
      for (var i = 0u; i < D4; i++) { acc[g * D4 + i] = acc[g * D4 + i] * c + e * v[kb + i]; }
    }
  }
  for (var g = 0u; g < GQ; g++) {
    let inv = select(0.0, 1.0 / l[g], l[g] > 0.0);
    for (var i = 0u; i < D4; i++) { out[(row0 + g) * D4 + i] = acc[g * D4 + i] * inv; }
    lse[row0 + g] = select(0.0, m[g] + log(l[g]), l[g] > 0.0);
  }
}

@compute @workgroup_size(WG)
fn backward_dq(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_id) lid: vec3u) {
  let item = index(wid, nwg, lid); // as forward: GQ query rows sharing a kv head
  if (item >= p.rows) { return; }
  let row0 = item * GQ;
  let h0 = row0 % p.H;
  let t = (row0 / p.H) % p.T;
  let b = row0 / (p.H * p.T);
  let kvh = h0 / (p.H / p.KVH);
  var qr: array<vec4f, RMAX4>;
  var gr: array<vec4f, RMAX4>;
  var acc: array<vec4f, RMAX4>;
  for (var i = 0u; i < GQ * D4; i++) {
    qr[i] = q[row0 * D4 + i] * p.scale;
    gr[i] = dout[row0 * D4 + i];
    acc[i] = vec4f(0.0);
  }
  var lse_r: array<f32, GMAX>;
  var delta: array<f32, GMAX>;
  for (var g = 0u; g < GQ; g++) {
    lse_r[g] = stats[2u * (row0 + g)];
    delta[g] = stats[2u * (row0 + g) + 1u];
  }
  let s_end = t + (p.S - p.T) + 1u;
  for (var s = 0u; s < s_end; s++) {
    if (!key_visible(b, s)) { continue; }
    let kb = ((b * p.S + s) * p.KVH + kvh) * D4;
    for (var g = 0u; g < GQ; g++) {
      var x4 = vec4f(0.0);
      var dp4 = vec4f(0.0);
      for (var i = 0u; i < D4; i++) {
        x4 += qr[g * D4 + i] * k[kb + i];
        dp4 += gr[g * D4 + i] * v[kb + i];
      }
      let pr = exp(x4.x + x4.y + x4.z + x4.w - lse_r[g]);
      let ds = pr * (dp4.x + dp4.y + dp4.z + dp4.w - delta[g]);
      for (var i = 0u; i < D4; i++) { acc[g * D4 + i] += ds * k[kb + i]; }
    }
  }
  for (var i = 0u; i < GQ * D4; i++) { dq[row0 * D4 + i] = acc[i] * p.scale; }
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
