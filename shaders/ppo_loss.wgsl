// PPO clipped surrogate loss, value loss, entropy bonus and in-loss KL over N tokens (a (B, T) batch, flat),
// forward and backward side by side (llm.c style). Twin of core/rl/ppo_loss.ts (ppoLoss); same definitions:
//
//   ρ_t   = exp(clamp(logp_t − logpOld_t, −20, 20))                       (LOG_RATIO_CLAMP)
//   pg_t  = max(−A_t ρ_t, −A_t clip(ρ_t, 1−ε, 1+ε)), clipped iff (A > 0, ρ > 1+ε) or (A < 0, ρ < 1−ε)
//   vf_t  = ½ max((V_t − R_t)², (clip(V_t, V_old ± ε_v) − R_t)²),   clipped iff the second square is larger
//   k_t   = k1 Δ | k2 ½Δ² | k3 e^x − 1 − x with Δ = logp − logpRef, x = clamp(−Δ, ±20)
//   loss  = mean(pg) + vfCoef·mean(vf) − entCoef·mean(H) + β·mean(k),    mean = masked mean over n = Σ m
//   dloss/dlogp_t = m_t/n · (−A_t ρ_t [unclipped, |logp − logpOld| < 20] + β dk_t/dlogp_t)
//   dloss/dV_t    = m_t/n · vfCoef (V_t − R_t) [value term unclipped]
//
// Entry points, in dispatch order:
//   forward_partials: per-token terms, one workgroup per `chunk` tokens; each thread sums a strided slice in
//                     order, then a fixed-order tree in workgroup memory → partials[(groupBase + g)·NSUM + s].
//                     Sharded dispatches bind views of the token arrays and offset their workgroups by groupBase.
//   forward_finalize: one workgroup sums the `groups` partials (strided, then tree), writes the statistics.
//   backward:         one thread per token; reads n = stats[STAT_TOKENS], writes dLogp and/or dValues.
// No atomics: every sum has a fixed order, so results are bit-reproducible. n = 0 (all masked) gives 0
// statistics and 0 gradients (the TS reference throws instead).
// Optional inputs (mask, values/valuesOld/returns, entropy, logpRef) are switched by flags; their bindings are
// still declared and get a placeholder buffer when absent. Mask entries ≠ 0 count as valid (give 0/1).

override WG: u32 = 256u; // power of two

const LOG_RATIO_CLAMP: f32 = 20.0;
const K3_LOG_RATIO_CLAMP: f32 = 20.0;

// Per-token sums of `partials` (slot s of each workgroup's partial).
const NSUM: u32 = 9u;
const S_COUNT: u32 = 0u;
const S_PG: u32 = 1u;
const S_VF: u32 = 2u;
const S_ENT: u32 = 3u;
const S_KL: u32 = 4u;
const S_CLIP: u32 = 5u;
const S_VCLIP: u32 = 6u;
const S_K3: u32 = 7u;
const S_K2: u32 = 8u;

// Statistics written by `finalize` (PPO_STATS in core/rl/ppo_loss_gpu.ts).
const STAT_LOSS: u32 = 0u;
const STAT_POLICY: u32 = 1u;
const STAT_VALUE: u32 = 2u;
const STAT_ENTROPY: u32 = 3u;
const STAT_CLIPFRAC: u32 = 4u;
const STAT_APPROXKL: u32 = 5u;
const STAT_APPROXKL_K2: u32 = 6u;
const STAT_KL: u32 = 7u;
const STAT_VCLIPFRAC: u32 = 8u;
const STAT_TOKENS: u32 = 9u;

struct Params {
  n: u32,              // tokens in the bound views (partials, backward)
  chunk: u32,          // tokens per workgroup (partials)
  groupBase: u32,      // partials slot of this dispatch's workgroup 0
  groups: u32,         // partials slots in total (finalize)
  hasMask: u32,        // 0: all tokens valid
  hasValues: u32,      // values, valuesOld, returns bound
  hasEntropy: u32,     // entropy bound
  klEstimator: u32,    // 0 none, 1 k1, 2 k2, 3 k3 (logpRef bound unless 0)
  writeDLogp: u32,     // backward writes dLogp
  writeDValues: u32,   // backward writes dValues
  clipRange: f32,      // ε
  clipRangeValue: f32, // ε_v
  vfCoef: f32,
  entCoef: f32,
  klCoef: f32,         // β
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logp: array<f32>;           // (N)
@group(0) @binding(2) var<storage, read> logpOld: array<f32>;        // (N)
@group(0) @binding(3) var<storage, read> advantages: array<f32>;     // (N)
@group(0) @binding(4) var<storage, read> mask: array<f32>;           // (N) 0/1
@group(0) @binding(5) var<storage, read> values: array<f32>;         // (N)
@group(0) @binding(6) var<storage, read> valuesOld: array<f32>;      // (N)
@group(0) @binding(7) var<storage, read> returns: array<f32>;        // (N)
@group(0) @binding(8) var<storage, read> entropy: array<f32>;        // (N)
@group(0) @binding(9) var<storage, read> logpRef: array<f32>;        // (N)
@group(0) @binding(10) var<storage, read_write> partials: array<f32>; // (groups, NSUM)
@group(0) @binding(11) var<storage, read_write> stats: array<f32>;    // (NSTAT)
@group(0) @binding(12) var<storage, read_write> dLogp: array<f32>;    // (N)
@group(0) @binding(13) var<storage, read_write> dValues: array<f32>;  // (N)

var<workgroup> sm: array<f32, NSUM * WG>; // sm[s·WG + lid]

// e^x − 1 − x without cancellation near 0: Taylor series Σ_{k=2..10} x^k/k! for |x| < ½ (truncation < 1e-9·x²).
fn expm1_minus_x(x: f32) -> f32 {
  if (abs(x) < 0.5) {
    var s = 1.0 / 3628800.0;
    s = s * x + 1.0 / 362880.0;
    s = s * x + 1.0 / 40320.0;
    s = s * x + 1.0 / 5040.0;
    s = s * x + 1.0 / 720.0;
    s = s * x + 1.0 / 120.0;
    s = s * x + 1.0 / 24.0;
    s = s * x + 1.0 / 6.0;
    s = s * x + 0.5;
    return s * x * x;
  }
  return (exp(x) - 1.0) - x;
}

fn expm1(x: f32) -> f32 {
  if (abs(x) < 0.5) { return x + expm1_minus_x(x); }
  return exp(x) - 1.0;
}

// Everything one token contributes: its sums and its (undivided) gradients.
struct Token {
  sums: array<f32, NSUM>,
  dlogp: f32, // −A ρ [unclipped] + β dk/dlogp
  dv: f32,    // vfCoef (V − R) [unclipped]
}

fn token(i: u32) -> Token {
  var t: Token; // zero
  if (p.hasMask != 0u && mask[i] == 0.0) { return t; }
  t.sums[S_COUNT] = 1.0;
  // Policy term.
  let diff = logp[i] - logpOld[i];
  let logRatio = clamp(diff, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP);
  let ratio = exp(logRatio);
  let a = advantages[i];
  let lo = 1.0 - p.clipRange;
  let hi = 1.0 + p.clipRange;
  let pg1 = -a * ratio;
  let pg2 = -a * clamp(ratio, lo, hi);
  // The clipped branch of max(pg1, pg2), decided by the trust-region condition as in the reference.
  let clipped = (a > 0.0 && ratio > hi) || (a < 0.0 && ratio < lo);
  t.sums[S_PG] = select(pg1, pg2, clipped);
  t.sums[S_CLIP] = select(0.0, 1.0, clipped);
  t.dlogp = select(0.0, pg1, !clipped && abs(diff) < LOG_RATIO_CLAMP);
  t.sums[S_K3] = expm1_minus_x(logRatio);
  t.sums[S_K2] = 0.5 * logRatio * logRatio;
  // In-loss KL k(logp, logpRef) and its derivative in logp.
  if (p.klEstimator != 0u) {
    let d = logp[i] - logpRef[i];
    var k = d;
    var dk = 1.0;
    if (p.klEstimator == 2u) {
      k = 0.5 * d * d;
      dk = d;
    } else if (p.klEstimator == 3u) {
      k = expm1_minus_x(clamp(-d, -K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP));
      dk = select(0.0, -expm1(-d), abs(d) < K3_LOG_RATIO_CLAMP);
    }
    t.sums[S_KL] = k;
    t.dlogp += p.klCoef * dk;
  }
  // Value term.
  if (p.hasValues != 0u) {
    let v = values[i];
    let vOld = valuesOld[i];
    let err = v - returns[i];
    let vClip = clamp(v, vOld - p.clipRangeValue, vOld + p.clipRangeValue) - returns[i];
    let vClipped = vClip * vClip > err * err;
    t.sums[S_VF] = 0.5 * select(err * err, vClip * vClip, vClipped);
    t.sums[S_VCLIP] = select(0.0, 1.0, vClipped);
    t.dv = select(p.vfCoef * err, 0.0, vClipped);
  }
  return t;
}

// Tree-sums sm[s·WG + ·] for every s into sm[s·WG] (fixed pairing order). All threads must call it.
fn tree_sum(lid: u32) {
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      for (var s = 0u; s < NSUM; s++) { sm[s * WG + lid] += sm[s * WG + lid + stride]; }
    }
    workgroupBarrier();
  }
}

// forward, pass 1: partials[groupBase + g] = Σ over tokens [g·chunk, (g+1)·chunk) of the per-token sums
@compute @workgroup_size(WG)
fn forward_partials(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let g = wid.x + wid.y * nwg.x;
  let start = g * p.chunk;
  if (start >= p.n) { return; } // whole workgroup (padding of a 2-D grid)
  let end = min(start + p.chunk, p.n);
  var acc: array<f32, NSUM>;
  for (var i = start + lid.x; i < end; i += WG) {
    var t = token(i);
    // Entropy is summed here only, so that backward does not bind it.
    if (p.hasEntropy != 0u && t.sums[S_COUNT] != 0.0) { t.sums[S_ENT] = entropy[i]; }
    for (var s = 0u; s < NSUM; s++) { acc[s] += t.sums[s]; }
  }
  for (var s = 0u; s < NSUM; s++) { sm[s * WG + lid.x] = acc[s]; }
  tree_sum(lid.x);
  if (lid.x == 0u) {
    for (var s = 0u; s < NSUM; s++) { partials[(p.groupBase + g) * NSUM + s] = sm[s * WG]; }
  }
}

// forward, pass 2 (one workgroup): stats = means of the summed partials
@compute @workgroup_size(WG)
fn forward_finalize(@builtin(local_invocation_id) lid: vec3u) {
  var acc: array<f32, NSUM>;
  for (var g = lid.x; g < p.groups; g += WG) {
    for (var s = 0u; s < NSUM; s++) { acc[s] += partials[g * NSUM + s]; }
  }
  for (var s = 0u; s < NSUM; s++) { sm[s * WG + lid.x] = acc[s]; }
  tree_sum(lid.x);
  if (lid.x == 0u) {
    let n = sm[S_COUNT * WG];
    var mean: array<f32, NSUM>; // 0 when n = 0
    if (n > 0.0) {
      for (var s = 0u; s < NSUM; s++) { mean[s] = sm[s * WG] / n; }
    }
    stats[STAT_POLICY] = mean[S_PG];
    stats[STAT_VALUE] = mean[S_VF];
    stats[STAT_ENTROPY] = mean[S_ENT];
    stats[STAT_KL] = mean[S_KL];
    stats[STAT_CLIPFRAC] = mean[S_CLIP];
    stats[STAT_VCLIPFRAC] = mean[S_VCLIP];
    stats[STAT_APPROXKL] = mean[S_K3];
    stats[STAT_APPROXKL_K2] = mean[S_K2];
    stats[STAT_TOKENS] = n;
    let kl = select(0.0, p.klCoef * mean[S_KL], p.klEstimator != 0u);
    stats[STAT_LOSS] = mean[S_PG] + p.vfCoef * mean[S_VF] - p.entCoef * mean[S_ENT] + kl;
  }
}

// backward: dLogp[i] = dloss/dlogp_i, dValues[i] = dloss/dV_i (gradients of the masked means; 0 when masked)
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (i >= p.n) { return; }
  let n = stats[STAT_TOKENS];
  let t = token(i);
  if (p.writeDLogp != 0u) { dLogp[i] = select(0.0, t.dlogp / n, n > 0.0); }
  if (p.writeDValues != 0u) { dValues[i] = select(0.0, t.dv / n, n > 0.0); }
}
