// Optimiser kernels over one flat f32 parameter tensor (or an aligned shard of it) and its gradient:
// AdamW (decoupled weight decay, bias correction — torch.optim.AdamW's arrangement), plain SGD, and the two small
// kernels of global gradient-norm clipping (per-chunk sums of squares, then norm → clip coefficient).
//
// Every update reads the effective gradient  g = grad[i] · gradScale · stats[1]  where gradScale averages
// micro-batches and stats = [‖g‖, clip coefficient] is written on the GPU by `clip_coef` (or is [0, 1] when not
// clipping), so clipping needs no readback.
//
// AdamW, step t (host: t ← t+1, bias corrections in f64, passed as f32 uniforms):
//   p ← p · (1 − lr·wd)                       decay = 1 − lr·wd        (param.mul_(1 - lr * weight_decay))
//   m ← β1·m + (1−β1)·g                                                (exp_avg.mul_(β1).add_(g, alpha=1-β1))
//   v ← β2·v + (1−β2)·g·g                                              (exp_avg_sq.mul_(β2).addcmul_(g, g, 1-β2))
//   denom = √v / √(1−β2^t) + eps              bc2Sqrt = √(1−β2^t)     ((exp_avg_sq.sqrt() / bc2_sqrt).add_(eps))
//   p ← p − stepSize · (m / denom)            stepSize = lr / (1−β1^t) (param.addcdiv_(m, denom, -step_size))
// SGD: p ← p − lr·g.
// Workgroups are laid out 2-D when there are more than 65535 of them: i = (wid.x + wid.y * nwg.x) * WG + lid.x.

override WG: u32 = 256u;

struct Params {
  n: u32,             // elements in the bound views (update kernels); elements of the grad view (sumsq)
  gradScale: f32,     // micro-batch averaging factor (update kernels, clip_coef)
  decay: f32,         // 1 − lr·wd (adamw)
  lr: f32,            // learning rate (sgd)
  beta1: f32,         // β1 (adamw)
  oneMinusBeta1: f32, // 1 − β1 (adamw)
  beta2: f32,         // β2 (adamw)
  oneMinusBeta2: f32, // 1 − β2 (adamw)
  stepSize: f32,      // lr / (1 − β1^t) (adamw)
  bc2Sqrt: f32,       // √(1 − β2^t) (adamw)
  eps: f32,           // ε (adamw)
  chunk: u32,         // elements per partial (sumsq)
  outBase: u32,       // index of chunk 0's partial in the bound `partials` view (sumsq)
  maxNorm: f32,       // clipping threshold (clip_coef)
  clip: u32,          // 1: clip to maxNorm, 0: only measure the norm (clip_coef)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;    // (n)
@group(0) @binding(2) var<storage, read> grad: array<f32>;           // (n)
@group(0) @binding(3) var<storage, read_write> m: array<f32>;        // (n) exp_avg
@group(0) @binding(4) var<storage, read_write> v: array<f32>;        // (n) exp_avg_sq
@group(0) @binding(5) var<storage, read> stats: array<f32>;          // (2) [norm, clip coefficient]
@group(0) @binding(6) var<storage, read_write> partials: array<f32>; // (outBase + ceil(n / chunk))
@group(0) @binding(7) var<storage, read> total: array<f32>;          // (1) Σ g² over all gradients
@group(0) @binding(8) var<storage, read_write> statsOut: array<f32>; // (2) [norm, clip coefficient]

var<workgroup> sm: array<f32, WG>;

fn index(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
  return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

// AdamW update of one shard, in place on param, m, v.
@compute @workgroup_size(WG)
fn adamw(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let g = grad[i] * p.gradScale * stats[1];
  let w = param[i] * p.decay;
  let mi = m[i] * p.beta1 + p.oneMinusBeta1 * g;
  let vi = v[i] * p.beta2 + p.oneMinusBeta2 * g * g;
  let denom = sqrt(vi) / p.bc2Sqrt + p.eps;
  m[i] = mi;
  v[i] = vi;
  param[i] = w - p.stepSize * (mi / denom);
}

// SGD update of one shard: param ← param − lr·g.
@compute @workgroup_size(WG)
fn sgd(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let g = grad[i] * p.gradScale * stats[1];
  param[i] = param[i] - p.lr * g;
}

// partials[outBase + r] = Σ_{i ∈ chunk r} grad[i]², one workgroup per chunk of `chunk` elements (the last one may
// be short). Each thread sums a strided slice in order, then a shared-memory tree (WG a power of two) combines
// them: the summation order depends only on n, chunk and WG, so the result is deterministic.
@compute @workgroup_size(WG)
fn sumsq(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let r = wid.x + wid.y * nwg.x;
  let start = r * p.chunk;
  if (start >= p.n) { return; }
  let end = min(start + p.chunk, p.n);
  var acc = 0.0;
  for (var i = start + lid.x; i < end; i += WG) {
    let x = grad[i];
    acc += x * x;
  }
  sm[lid.x] = acc;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid.x < stride) { sm[lid.x] += sm[lid.x + stride]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { partials[p.outBase + r] = sm[0]; }
}

// statsOut = [norm, coef]:  norm = √(Σ g²) · gradScale,  coef = min(1, maxNorm / (norm + 1e-6)) when clipping,
// else 1 (torch.nn.utils.clip_grad_norm_'s clip_coef_clamped). One invocation.
@compute @workgroup_size(1)
fn clip_coef() {
  let norm = sqrt(total[0]) * p.gradScale;
  var coef = 1.0;
  if (p.clip != 0u) { coef = min(1.0, p.maxNorm / (norm + 1e-6)); }
  statsOut[0] = norm;
  statsOut[1] = coef;
}
