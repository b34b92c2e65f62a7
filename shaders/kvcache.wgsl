// KV-cache bookkeeping for batched decoding (no backward: generation only).
//
// write:  cache[b, col0 + t, :] = src[b, t, :]     src (B, T, ROW), cache (B, SMAX, ROW), ROW = KVH·D
// mark:   mask[b, col0] = 1                         mask (B, SMAX) i32 key mask of the cache
// step:   ids[b] = tokens[b, step]; pos[b] += 1     feeds the token sampled at `step` to the next forward

override WG: u32 = 256u;

struct Params {
  B: u32,
  T: u32,
  SMAX: u32,
  ROW: u32,
  col0: u32,  // first cache column written (write, mark); sampled column (step)
  max_new: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> cache: array<f32>;
@group(0) @binding(3) var<storage, read_write> mask: array<i32>;
@group(0) @binding(4) var<storage, read> tokens: array<i32>;
@group(0) @binding(5) var<storage, read_write> ids: array<i32>;
@group(0) @binding(6) var<storage, read_write> pos: array<i32>;

@compute @workgroup_size(WG)
fn write(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_id) lid: vec3u) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (i >= p.B * p.T * p.ROW) { return; }
  let e = i % p.ROW;
  let bt = i / p.ROW;
  let t = bt % p.T;
  let b = bt / p.T;
  cache[(b * p.SMAX + p.col0 + t) * p.ROW + e] = src[i];
}

@compute @workgroup_size(WG)
fn mark(@builtin(global_invocation_id) gid: vec3u) {
  let b = gid.x;
  if (b < p.B) { mask[b * p.SMAX + p.col0] = 1; }
}

@compute @workgroup_size(WG)
fn step(@builtin(global_invocation_id) gid: vec3u) {
  let b = gid.x;
  if (b < p.B) {
    ids[b] = tokens[b * p.max_new + p.col0];
    pos[b] = pos[b] + 1;
  }
}
