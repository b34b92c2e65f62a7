// Column sums of a (rows, cols) matrix: out[j] (+)= Σ_r x[r, j]. One invocation per column sums its rows in
// order (deterministic, no atomics): the bias gradient of a linear layer, db = Σ_n dy[n, :].
// Backward of a column sum is a broadcast, which no layer here needs.

override WG: u32 = 64u;

struct Params {
  rows: u32,
  cols: u32,
  accumulate: u32,  // 1: out += sum, 0: out = sum
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn sum_columns(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  if (j >= p.cols) { return; }
  var s = 0.0;
  for (var r = 0u; r < p.rows; r++) { s += x[r * p.cols + j]; }
  out[j] = select(s, out[j] + s, p.accumulate == 1u);
}
