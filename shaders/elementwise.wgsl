// Elementwise kernels over flat f32 arrays: out[i] = f(a[i], b[i]). Outputs never alias inputs (WebGPU forbids a
// buffer bound both read-only and read-write in one dispatch); in-place updates have their own entry points.
// Backward: add passes the gradient through; mul's gradient is another mul; scale's is a scale.
// Workgroups are laid out 2-D when there are more than 65535 of them: i = (wid.x + wid.y * nwg.x) * WG + lid.x.

override WG: u32 = 256u;

struct Params {
  n: u32,      // number of elements
  alpha: f32,  // scale factor (scale, axpy)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn index(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
  return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

// out = a + b
@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = index(wid, nwg, lid);
  if (i < p.n) { out[i] = a[i] + b[i]; }
}

// out = a * b
@compute @workgroup_size(WG)
fn mul(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = index(wid, nwg, lid);
  if (i < p.n) { out[i] = a[i] * b[i]; }
}

// out += alpha * a  (in place; b unused) — gradient accumulation
@compute @workgroup_size(WG)
fn axpy(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = index(wid, nwg, lid);
  if (i < p.n) { out[i] = out[i] + p.alpha * a[i]; }
}

// out = alpha * a  (b unused)
@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = index(wid, nwg, lid);
  if (i < p.n) { out[i] = p.alpha * a[i]; }
}
