// Token embedding gather (forward) and its deterministic scatter-add (backward).
//
// Forward, one thread per (token, column) of an output shard, per vocab shard of the table:
//   out[t, c] = table[ids[t], c]                   // ids: (T) i32, table: (V, C), out: (T, C)
// A table shard holds rows [vStart, vStart + vCount) and writes only the tokens whose id falls in it. Ids outside
// [0, V) never read memory: the vStart = 0 shard writes zeros for them, and `forward_checked` also counts them in
// status[0] (one count per token) and keeps 0xFFFFFFFF − (first such token) in status[1] (atomicMax).
//
// Backward: dTable[ids[t], c] += dOut[t, c], without float atomics and bit-for-bit deterministic:
//   1. sort_init + sort_step: bitonic sort of the token indices by (id, token) into perm (N = T padded to a
//      power of two with PAD entries, which sort last); one dispatch per (k, j) stage.
//   2. scatter: one thread per (sorted position s, column c); the first position of each run of equal ids sums
//      dOut over the run in token order and adds the sum to its dTable row. Every (row, column) has one writer.
// Out-of-range ids get no gradient (their forward output did not depend on the table).
// Token shards of dOut (tokens [tStart, tStart + tCount)) take the part of each run inside the window, which is
// contiguous because runs are sorted by token.

override WG: u32 = 256u;

struct Params {
  n: u32,       // forward: elements of the out shard (tCount·C); backward: T (tokens)
  C: u32,       // embedding width
  vStart: u32,  // first vocab row of the bound table (forward) or dTable (backward) shard
  vCount: u32,  // vocab rows in that shard
  V: u32,       // vocabulary size
  tStart: u32,  // first token of the bound out (forward) or dOut (backward) shard
  tCount: u32,  // tokens in that shard
  N: u32,       // sort size: T rounded up to a power of two
  k: u32,       // bitonic block size of this stage
  j: u32,       // bitonic compare distance of this stage
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;          // forward: table shard; backward: dOut shard
@group(0) @binding(2) var<storage, read> ids: array<i32>;          // (T) token ids
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;    // forward: out shard; backward: dTable shard
@group(0) @binding(4) var<storage, read_write> status: array<atomic<u32>, 2>;
@group(0) @binding(5) var<storage, read_write> perm: array<u32>;   // (N) token indices sorted by (id, token)

const PAD: u32 = 0xffffffffu;

fn linear(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
  return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

fn in_shard(id: i32) -> bool {
  return id >= 0 && u32(id) >= p.vStart && u32(id) - p.vStart < p.vCount;
}

fn out_of_range(id: i32) -> bool {
  return id < 0 || u32(id) >= p.V;
}

// Gathers element i of the out shard; returns true when its id is out of range (and a zero was written).
fn gather(i: u32) -> bool {
  let t = i / p.C;
  let c = i % p.C;
  let id = ids[p.tStart + t];
  if (in_shard(id)) {
    dst[i] = src[(u32(id) - p.vStart) * p.C + c];
  } else if (out_of_range(id) && p.vStart == 0u) {
    dst[i] = 0.0;
    return c == 0u;
  }
  return false;
}

// out[t, c] = table[ids[t], c] (zeros for out-of-range ids)
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = linear(wid, nwg, lid);
  if (i < p.n) { _ = gather(i); }
}

// forward, and counts out-of-range tokens into status
@compute @workgroup_size(WG)
fn forward_checked(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = linear(wid, nwg, lid);
  if (i < p.n && gather(i)) {
    atomicAdd(&status[0], 1u);
    atomicMax(&status[1], PAD - (p.tStart + i / p.C));
  }
}

// perm[i] = i for i < T, PAD after
@compute @workgroup_size(WG)
fn sort_init(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = linear(wid, nwg, lid);
  if (i < p.N) { perm[i] = select(PAD, i, i < p.n); }
}

// (id, token) order of token indices a, b; PAD is greater than every token.
fn before(a: u32, b: u32) -> bool {
  if (b == PAD) { return a != PAD; }
  if (a == PAD) { return false; }
  let ia = ids[a];
  let ib = ids[b];
  return ia < ib || (ia == ib && a < b);
}

// One bitonic stage: pair q compares positions i and i + j, ascending when (i & k) == 0.
@compute @workgroup_size(WG)
fn sort_step(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let q = linear(wid, nwg, lid);
  if (q >= p.N / 2u) { return; }
  let i = (q / p.j) * 2u * p.j + q % p.j;
  let l = i + p.j;
  let a = perm[i];
  let b = perm[l];
  let ascending = (i & p.k) == 0u;
  if (select(before(a, b), before(b, a), ascending)) {
    perm[i] = b;
    perm[l] = a;
  }
}

// dTable[id, c] += Σ_{t in run, t in token window} dOut[t, c], one thread per (sorted position, column)
@compute @workgroup_size(WG)
fn scatter(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = linear(wid, nwg, lid);
  let s = i / p.C;
  let c = i % p.C;
  if (s >= p.n) { return; }
  let a = perm[s];
  let id = ids[a];
  let tEnd = p.tStart + p.tCount;
  if (!in_shard(id) || a < p.tStart || a >= tEnd) { return; }
  if (s > 0u) {
    let prev = perm[s - 1u];
    if (ids[prev] == id && prev >= p.tStart) { return; } // not the first of its run inside the window
  }
  var acc = 0.0;
  for (var r = s; r < p.n; r++) {
    let b = perm[r];
    if (ids[b] != id || b >= tEnd) { break; }
    acc += src[(b - p.tStart) * p.C + c];
  }
  let o = (u32(id) - p.vStart) * p.C + c;
  dst[o] = dst[o] + acc;
}
