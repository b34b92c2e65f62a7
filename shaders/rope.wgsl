// Rotary position embedding, Hugging Face rotate_half convention, forward and backward side by side.
//
// For head dim D, half = D/2, j < half, angle = f32(pos) · inv_freq[j] (one f32 rounding, as HF's float32
// `inv_freq @ position_ids`), c = cos(angle), s = sin(angle):
//   forward:  out[j] = x[j]·c − x[j+half]·s        out[j+half] = x[j+half]·c + x[j]·s
//   backward: dx[j]  = dout[j]·c + dout[j+half]·s   dx[j+half]  = dout[j+half]·c − dout[j]·s   (rotation by −angle)
// inv_freq (half) is computed on the host exactly as HF does in float32. cos/sin are evaluated here with a
// Cody–Waite reduction by π/2 (π/2 split in 8-bit pieces, exact for |angle| < 65536·π/2 ≈ 1.0e5) and Cephes
// minimax polynomials on [−π/4, π/4]: |error| ≲ 1e-7 over that range, whereas WGSL's cos/sin only promise
// 2^-11 inside [−π, π] and nothing outside it.
// One thread per (token, head, j) pair; tokens may be dispatched in shards (x/out/dout/dx are views of the shard,
// positions is bound whole and indexed from p.row0). Workgroups are laid out 2-D past 65535.

override WG: u32 = 256u;

struct Params {
  rows: u32, // tokens in this dispatch
  H: u32,    // heads
  D: u32,    // head dim (even)
  row0: u32, // index of the shard's first token in positions
  zero: u32, // always 0: an opaque zero that keeps the compiler from fusing the angle product into an fma
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;             // x:         (rows, H, D)
@group(0) @binding(2) var<storage, read> positions: array<i32>;     // positions: (N)
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;      // inv_freq:  (D/2)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;     // out:       (rows, H, D)
@group(0) @binding(5) var<storage, read> dout: array<f32>;          // dout:      (rows, H, D)
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;      // dx:        (rows, H, D)

// π/2 = PIO2_1 + PIO2_2 + PIO2_3 + PIO2_4; the first three have 8 significant bits so k·PIO2_i is exact in f32
// for |k| < 2^16.
const PIO2_1: f32 = 1.5703125;
const PIO2_2: f32 = 4.84466552734375e-4;
const PIO2_3: f32 = -6.407499313354492e-7;
const PIO2_4: f32 = 9.920935184482005e-10;
const TWO_OVER_PI: f32 = 0.6366197723675814;

// (cos a, sin a) for an f32 angle a.
fn cos_sin(a: f32) -> vec2f {
  let k = round(a * TWO_OVER_PI);
  var r = a - k * PIO2_1;
  r = r - k * PIO2_2;
  r = r - k * PIO2_3;
  r = r - k * PIO2_4;
  let z = r * r;
  let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
  let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
  switch (i32(k) & 3) {
    case 0: { return vec2f(c, s); }
    case 1: { return vec2f(-s, c); }
    case 2: { return vec2f(-c, -s); }
    default: { return vec2f(s, -c); }
  }
}

// Element indices (i, i + half) of pair `e` and its (cos, sin), or i = 0xffffffff when e is out of range.
struct Pair {
  i: u32,
  half: u32,
  cs: vec2f,
}

fn pair(e: u32) -> Pair {
  let half = p.D / 2u;
  let per_row = p.H * half;
  if (e >= p.rows * per_row) { return Pair(0xffffffffu, half, vec2f(0.0)); }
  let row = e / per_row;
  let rem = e % per_row;
  let j = rem % half;
  let i = row * p.H * p.D + (rem / half) * p.D + j;
  let pos = positions[p.row0 + row];
  // Product rounded to f32 once; the integer round trip through an opaque zero blocks fma contraction.
  let a = bitcast<f32>(bitcast<u32>(f32(pos) * inv_freq[j]) | p.zero);
  return Pair(i, half, cos_sin(a));
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_id) lid: vec3u) {
  let q = pair((wid.x + wid.y * nwg.x) * WG + lid.x);
  if (q.i == 0xffffffffu) { return; }
  let x1 = x[q.i];
  let x2 = x[q.i + q.half];
  out[q.i] = x1 * q.cs.x - x2 * q.cs.y;
  out[q.i + q.half] = x2 * q.cs.x + x1 * q.cs.y;
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_id) lid: vec3u) {
  let q = pair((wid.x + wid.y * nwg.x) * WG + lid.x);
  if (q.i == 0xffffffffu) { return; }
  let g1 = dout[q.i];
  let g2 = dout[q.i + q.half];
  dx[q.i] = g1 * q.cs.x + g2 * q.cs.y;
  dx[q.i + q.half] = g2 * q.cs.x - g1 * q.cs.y;
}
