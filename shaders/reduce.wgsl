// Row reductions: out[outBase + r] = ⊕_{i ∈ row r} f(x[i]) for ⊕, f ∈ {(+, x), (max, x), (+, x²)}.
// Row r covers x[r·cols .. min((r + 1)·cols, n)), so the last row may be short: the same kernel reduces the rows of
// a (rows, cols) tensor (n = rows·cols) and the chunks of a flat tensor (the partial sums of a full reduction,
// which the host reduces again level by level until one value is left — a tree with fan-in `cols`).
// One workgroup per row (r = wid.x + wid.y * nwg.x); each thread accumulates a strided slice of the row in order,
// then the workgroup combines the WG partials with a shared-memory tree (WG must be a power of two). The result
// is deterministic: the summation order depends only on n, cols and WG.

override WG: u32 = 256u;

struct Params {
  n: u32,        // elements in the bound input
  cols: u32,     // elements per row (chunk)
  outBase: u32,  // index of row 0's result in the bound output
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // (n)
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // (outBase + ceil(n / cols))

const NEG_MAX: f32 = -3.40282347e38;
const OP_SUM: u32 = 0u;
const OP_MAX: u32 = 1u;
const OP_SUMSQ: u32 = 2u;

var<workgroup> sm: array<f32, WG>;

fn combine(op: u32, a: f32, b: f32) -> f32 {
  if (op == OP_MAX) { return max(a, b); }
  return a + b;
}

fn reduce_row(op: u32, wid: vec3u, nwg: vec3u, lid: u32) {
  let r = wid.x + wid.y * nwg.x;
  let start = r * p.cols;
  if (start >= p.n) { return; }
  let end = min(start + p.cols, p.n);
  var acc = select(0.0, NEG_MAX, op == OP_MAX);
  for (var i = start + lid; i < end; i += WG) {
    let v = x[i];
    if (op == OP_SUMSQ) { acc += v * v; } else { acc = combine(op, acc, v); }
  }
  sm[lid] = acc;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { sm[lid] = combine(op, sm[lid], sm[lid + stride]); }
    workgroupBarrier();
  }
  if (lid == 0u) { out[p.outBase + r] = sm[0]; }
}

// out[r] = Σ_i x[i]
@compute @workgroup_size(WG)
fn sum(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  reduce_row(OP_SUM, wid, nwg, lid.x);
}

// out[r] = max_i x[i]
@compute @workgroup_size(WG)
fn maximum(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  reduce_row(OP_MAX, wid, nwg, lid.x);
}

// out[r] = Σ_i x[i]²
@compute @workgroup_size(WG)
fn sumsq(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  reduce_row(OP_SUMSQ, wid, nwg, lid.x);
}
