// SwiGLU activation of the Qwen2 MLP, forward and backward side by side (llm.c style).
//
// forward:  out = silu(gate) ⊙ up,   silu(g) = g·σ(g),  σ(g) = 1 / (1 + e^−g)
// backward: dgate = dout ⊙ up ⊙ σ(g)·(1 + g·(1 − σ(g))),   dup = dout ⊙ silu(g)        (both written, =)
// Separate variant: gate, up, out: (N, I) flat (any shape). Fused variant: gate_up: (N, 2I) with row r holding
// [gate[r, :] | up[r, :]] (one matmul producing both), out: (N, I), dgate_up: (N, 2I).
// σ is evaluated without overflow (e^−|g| only). One thread per output element; 2-D workgroup grid past 65535.

override WG: u32 = 256u;

struct Params {
  n: u32, // output elements in this dispatch (rows · I)
  I: u32, // inner width (fused variant)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;             // gate:     (N, I)
@group(0) @binding(2) var<storage, read> up: array<f32>;               // up:       (N, I)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;        // out:      (N, I)
@group(0) @binding(4) var<storage, read> dout: array<f32>;             // dout:     (N, I)
@group(0) @binding(5) var<storage, read_write> dgate: array<f32>;      // dgate:    (N, I)
@group(0) @binding(6) var<storage, read_write> dup: array<f32>;        // dup:      (N, I)
@group(0) @binding(7) var<storage, read> gate_up: array<f32>;          // gate_up:  (N, 2I)
@group(0) @binding(8) var<storage, read_write> dgate_up: array<f32>;   // dgate_up: (N, 2I)

fn index(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
  return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

fn sigmoid(g: f32) -> f32 {
  let e = exp(-abs(g));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), g >= 0.0);
}

// d silu(g) / dg = σ(g)·(1 + g·(1 − σ(g)))
fn dsilu(g: f32) -> f32 {
  let s = sigmoid(g);
  return s * (1.0 + g * (1.0 - s));
}

// Flat index of gate[i] inside gate_up (row r = i / I, column c = i % I → r·2I + c); up is I further.
fn fused(i: u32) -> u32 {
  return (i / p.I) * 2u * p.I + i % p.I;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_id) lid: vec3u) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let g = gate[i];
  out[i] = g * sigmoid(g) * up[i];
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_id) lid: vec3u) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let g = gate[i];
  let d = dout[i];
  dgate[i] = d * up[i] * dsilu(g);
  dup[i] = d * g * sigmoid(g);
}

@compute @workgroup_size(WG)
fn forward_fused(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_id) lid: vec3u) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let j = fused(i);
  let g = gate_up[j];
  out[i] = g * sigmoid(g) * gate_up[j + p.I];
}

@compute @workgroup_size(WG)
fn backward_fused(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_id) lid: vec3u) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let j = fused(i);
  let g = gate_up[j];
  let d = dout[i];
  dgate_up[j] = d * gate_up[j + p.I] * dsilu(g);
  dgate_up[j + p.I] = d * g * sigmoid(g);
}
