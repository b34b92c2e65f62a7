// Next-token sampling on the GPU for batched KV-cache decoding: one workgroup per row of logits (B, V) picks
// the next token and writes it at column `step` of the (B, max_new) token buffer, with per-row stop
// bookkeeping, so generation never reads logits back. Wrapper: core/ops/sampling.ts; plain-TS reference:
// core/ref/sampling_ref.ts.
//
// Exact definition (the reference implements the same one by sorting):
// - Order: tokens sorted by order_key(logit) descending, ties by lower id. order_key maps f32 bits to a u32
//   whose unsigned order is the float order (−0 ranks just below +0; logits must not be NaN).
// - Greedy (temperature 0): the first token in that order (argmax, ties → lowest id).
// - Weights: q_i = weight(x_i) ≈ 2^34 · exp((x_i − m) / T) in 64-bit fixed point, m = max logit, from an
//   exact integer evaluation of 2^(−n/2^20) with n = ⌊(m − x_i) · scale20⌋, scale20 = f32(2^20 · log2(e) /
//   T); q_i = 0 when n ≥ 34 · 2^20 (tokens more than 23.5·T nats below the max: each has probability <
//   2^-34). Sums of integers are exact and order-independent, so every decision below is bit-reproducible.
// - Top-k (k > 0, k < V): keep the first k tokens of the order.
// - Top-p (p < 1): with Z_k = Σ q over the kept tokens and p32 = ⌊p · 2^32⌋ (≥ 1), keep the shortest prefix
//   whose mass reaches max(⌊Z_k · p32 / 2^32⌋, 1) (always at least the first token).
// - Sample: r = Philox4x32-10(counter (step, seeds[row], 0, 0), key (seed_lo, seed_hi)).x, u = r / 2^32; with
//   Z_p the kept mass, pick the first kept token whose cumulative mass exceeds ⌊Z_p · r / 2^32⌋ (inverse
//   CDF).
// Outputs at (row, step): the token; log softmax(x)[token] (raw logits, temperature 1) in `logprobs`; ln(q /
// Z_p), the log-probability under the distribution actually sampled from (0 when greedy), in
// `sampled_logprobs`. Rows already done write pad_id and 0 log-probs; otherwise length += 1 and done = 1 when
// the token is a stop id.
//
// Search: every kept set is a prefix of the order. A token's position is the 64-bit pos = (key, ~id) (larger
// = earlier); a prefix is {pos ≥ P}. find() narrows an interval [lo, hi] of positions holding the answer:
// each pass splits it at three pivots, sums the measure (count or mass) of each quarter in one sweep over the
// row, keeps the quarter where the prefix measure crosses the goal and snaps it to the smallest and largest
// position present. At most 32 passes, typically ≈ log4(V) + 3; no sort, exact ties (ids are part of the
// position).

override WG: u32 = 256u; // threads per row, a power of two ≤ 256

struct Params {
  rows: u32, // rows of this dispatch (a shard of the batch)
  row0: u32, // first row of the shard in the per-row buffers
  vocab: u32, // V
  max_new: u32, // columns of tokens / logprobs / sampled_logprobs
  step: u32, // column written; Philox counter word 0
  greedy: u32, // 1 when temperature is 0
  scale20: f32, // 2^20 · log2(e) / temperature
  top_k: u32, // 0 = off
  top_p: u32, // ⌊p · 2^32⌋ (≥ 1); 0 = off
  seed_lo: u32, // Philox key
  seed_hi: u32,
  n_stop: u32, // number of stop ids
  pad_id: i32, // token written for rows that are done
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>; // (rows, V) view of this shard
@group(0) @binding(2) var<storage, read> seeds: array<u32>; // (B) per-row Philox counter word 1
@group(0) @binding(3) var<storage, read> stop_ids: array<i32>; // (n_stop) or a 1-element dummy
@group(0) @binding(4) var<storage, read_write> tokens: array<i32>; // (B, max_new)
@group(0) @binding(5) var<storage, read_write> done: array<i32>; // (B)
@group(0) @binding(6) var<storage, read_write> lengths: array<i32>; // (B)
@group(0) @binding(7) var<storage, read_write> logprobs: array<f32>; // (B, max_new)
@group(0) @binding(8) var<storage, read_write> sampled_logprobs: array<f32>; // (B, max_new)

const ONE_Q31: u32 = 0x80000000u;
const LN2_Q31: u32 = 1488522236u; // round(ln 2 · 2^31)
const N_LIMIT: f32 = 35651584.0; // 34 · 2^20
// EXP2_Q31[a] = round(2^31 · 2^(−a/64)) (checked against the TS table by tests/sampling_test.ts)
const EXP2_Q31 = array<u32, 64>(
  0x80000000u, 0x7e9f0606u, 0x7d41d96eu, 0x7be86fbau, 0x7a92be8bu, 0x7940bb9eu, 0x77f25cceu, 0x76a7980fu,
  0x75606374u, 0x741cb528u, 0x72dc8374u, 0x719fc4b9u, 0x70666f76u, 0x6f307a41u, 0x6dfddbccu, 0x6cce8ae1u,
  0x6ba27e65u, 0x6a79ad56u, 0x69540ec9u, 0x683199edu, 0x6712460bu, 0x65f60a7fu, 0x64dcdec3u, 0x63c6ba64u,
  0x62b39509u, 0x61a3666du, 0x60962665u, 0x5f8bccdbu, 0x5e8451d0u, 0x5d7fad59u, 0x5c7dd7a4u, 0x5b7ec8f2u,
  0x5a82799au, 0x5988e209u, 0x5891fac1u, 0x579dbc57u, 0x56ac1f75u, 0x55bd1cdbu, 0x54d0ad5au, 0x53e6c9dau,
  0x52ff6b55u, 0x521a8ad7u, 0x51382182u, 0x50582888u, 0x4f7a9930u, 0x4e9f6cd4u, 0x4dc69cddu, 0x4cf022cau,
  0x4c1bf829u, 0x4b4a169cu, 0x4a7a77d4u, 0x49ad1598u, 0x48e1e9bau, 0x4818ee22u, 0x47521cc6u, 0x468d6faeu,
  0x45cae0f2u, 0x450a6abbu, 0x444c0740u, 0x438fb0cbu, 0x42d561b4u, 0x421d1462u, 0x4166c34cu, 0x40b268fau,
);

var<workgroup> red: array<vec2u, 4 * WG>; // reduction scratch, 4 slots per thread
var<workgroup> res4: array<vec2u, 4>; // reduced results, read back with workgroupUniformLoad
var<workgroup> res2: array<vec2u, 2>;
var<private> lid: u32;
var<private> base: u32; // first logit of this row in the shard view
var<private> m: f32; // row max

// ---- integer helpers (mirrored in core/ref/sampling_ref.ts) ----

// ⌊a·b / 2^32⌋ from 16-bit limbs
fn mulhi(a: u32, b: u32) -> u32 {
  let a0 = a & 0xffffu;
  let a1 = a >> 16u;
  let b0 = b & 0xffffu;
  let b1 = b >> 16u;
  let p01 = a0 * b1;
  let p10 = a1 * b0;
  let mid = ((a0 * b0) >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
  return a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
}

// ⌊a·b / 2^31⌋ for a, b ≤ 2^31 (Q31 product)
fn mul_q31(a: u32, b: u32) -> u32 {
  return (mulhi(a, b) << 1u) | ((a * b) >> 31u);
}

// 64-bit values as vec2u(lo, hi)
fn add64(a: vec2u, b: vec2u) -> vec2u {
  let lo = a.x + b.x;
  return vec2u(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

fn sub64(a: vec2u, b: vec2u) -> vec2u {
  return vec2u(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}

fn ge64(a: vec2u, b: vec2u) -> bool {
  return a.y > b.y || (a.y == b.y && a.x >= b.x);
}

fn min64(a: vec2u, b: vec2u) -> vec2u {
  return select(a, b, ge64(a, b));
}

fn max64(a: vec2u, b: vec2u) -> vec2u {
  return select(b, a, ge64(a, b));
}

// ⌊z · r / 2^32⌋
fn mul64x32hi(z: vec2u, r: u32) -> vec2u {
  return add64(vec2u(z.y * r, mulhi(z.y, r)), vec2u(mulhi(z.x, r), 0u));
}

fn to_f32(z: vec2u) -> f32 {
  return f32(z.y) * 4294967296.0 + f32(z.x);
}

// Philox4x32-10 (Salmon et al. 2011), Random123 round and key schedule
fn philox(ctr: vec4u, key: vec2u) -> vec4u {
  var c = ctr;
  var k = key;
  for (var i = 0u; i < 10u; i++) {
    if (i > 0u) { k += vec2u(0x9E3779B9u, 0xBB67AE85u); }
    let h0 = mulhi(0xD2511F53u, c.x);
    let l0 = 0xD2511F53u * c.x;
    let h1 = mulhi(0xCD9E8D57u, c.z);
    let l1 = 0xCD9E8D57u * c.z;
    c = vec4u(h1 ^ c.y ^ k.x, l1, h0 ^ c.w ^ k.y, l0);
  }
  return c;
}

fn order_key(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// q = 2^34 · 2^(−n/2^20) in fixed point: n = k·2^20 + a·2^14 + r; EXP2_Q31[a] times a cubic for 2^(−r/2^20)
fn weight(x: f32) -> vec2u {
  let y = (m - x) * p.scale20;
  if (!(y < N_LIMIT)) { return vec2u(0u); }
  let n = u32(y);
  let k = n >> 20u;
  let f = n & 0xfffffu;
  let t = mulhi((f & 0x3fffu) << 12u, LN2_Q31); // r·ln2/2^20 in Q31, < 0.0109
  let h3 = ONE_Q31 - t / 3u;
  let h2 = ONE_Q31 - (mul_q31(t, h3) >> 1u);
  let h1 = ONE_Q31 - mul_q31(t, h2); // e^(−t) = 1 − t(1 − t/2 (1 − t/3))
  let w = mul_q31(EXP2_Q31[f >> 14u], h1);
  if (k <= 3u) {
    let s = 3u - k;
    return vec2u(w << s, select(w >> (32u - s), 0u, s == 0u));
  }
  return vec2u(w >> (k - 3u), 0u);
}

// Position of token i in the order: vec2u(lo = ~i, hi = key) as a 64-bit number, larger = earlier.
fn position(x: f32, i: u32) -> vec2u {
  return vec2u(~i, order_key(x));
}

// ---- workgroup passes over one row (called in uniform control flow; results via workgroupUniformLoad) ----

// Tree reduction of slots [0, n) of red (n·WG entries); op 0: 64-bit sum, 1: min, 2: max (slot 0 min, 1 max).
fn reduce(n: u32, op: u32) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      for (var j = 0u; j < n; j++) {
        let a = red[j * WG + lid];
        let b = red[j * WG + lid + s];
        let o = select(op, j + 1u, op != 0u);
        red[j * WG + lid] = select(select(max64(a, b), min64(a, b), o == 1u), add64(a, b), o == 0u);
      }
    }
    workgroupBarrier();
  }
}

// Smallest and largest position of the row: the last and the first token of the order.
fn extremes() -> array<vec2u, 2> {
  var lo = vec2u(0xffffffffu);
  var hi = vec2u(0u);
  for (var i = lid; i < p.vocab; i += WG) {
    let q = position(logits[base + i], i);
    lo = min64(lo, q);
    hi = max64(hi, q);
  }
  red[lid] = lo;
  red[WG + lid] = hi;
  reduce(2u, 1u);
  if (lid == 0u) { res2 = array<vec2u, 2>(red[0], red[WG]); }
  return workgroupUniformLoad(&res2);
}

// Σ exp(x_i − m) in f32 (normaliser of the raw distribution) and, when `mass`, Σ q_i over {pos ≥ mask} (u64).
fn totals(mask: vec2u, mass: bool) -> array<vec2u, 2> {
  var s = 0.0;
  var z = vec2u(0u);
  for (var i = lid; i < p.vocab; i += WG) {
    let x = logits[base + i];
    s += exp(x - m);
    if (mass && ge64(position(x, i), mask)) { z = add64(z, weight(x)); }
  }
  red[lid] = z;
  red[WG + lid] = vec2u(bitcast<u32>(s), 0u);
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (lid < h) {
      red[lid] = add64(red[lid], red[lid + h]);
      red[WG + lid].x = bitcast<u32>(bitcast<f32>(red[WG + lid].x) + bitcast<f32>(red[WG + lid + h].x));
    }
    workgroupBarrier();
  }
  if (lid == 0u) { res2 = array<vec2u, 2>(red[0], red[WG]); }
  return workgroupUniformLoad(&res2);
}

// Entry j of a 4-array without dynamic indexing (keeps the arrays in registers).
fn pick4(a: array<vec2u, 4>, j: u32) -> vec2u {
  return select(select(a[0], a[1], j == 1u), select(a[2], a[3], j == 3u), j >= 2u);
}

// The position P of the token where the prefix measure over {pos ≥ mask} first reaches `goal`:
// M({pos ≥ P}) ≥ goal > M({pos > P}), M = count (or Σq when `mass`), 1 ≤ goal ≤ M({pos ≥ mask}); `top` is the
// first position of the order. Returns [P, M({pos ≥ P})]. The interval width shrinks at least 4× per pass, so
// at most 32 passes (64-bit positions); typically ≈ log4(V) + 3.
fn find(goal: vec2u, mask: vec2u, top: vec2u, mass: bool) -> array<vec2u, 2> {
  var lo = mask; // invariant: M({pos ≥ lo}) ≥ goal > M({pos > hi}) = above
  var hi = top;
  var above = vec2u(0u);
  var at_lo = vec2u(1u, 0u); // M({pos ≥ lo}); for a single token from the start, its own measure
  if (mass) { at_lo = weight(logits[base + ~lo.x]); }
  for (var it = 0u; it < 40u && any(lo != hi); it++) {
    let d = sub64(hi, lo);
    let step = add64(vec2u((d.x >> 2u) | (d.y << 30u), d.y >> 2u), vec2u(1u, 0u)); // ⌊d/4⌋ + 1
    let c1 = add64(lo, step);
    let c2 = add64(c1, step);
    let c3 = add64(c2, step);
    let end = add64(hi, vec2u(1u, 0u));
    var acc = array<vec2u, 4>(); // measure, smallest and largest position of each quarter [c_j, c_j+1)
    var mn = array<vec2u, 4>(vec2u(0xffffffffu), vec2u(0xffffffffu), vec2u(0xffffffffu), vec2u(0xffffffffu));
    var mx = array<vec2u, 4>();
    for (var i = lid; i < p.vocab; i += WG) {
      let x = logits[base + i];
      let q = position(x, i);
      if (!ge64(q, lo) || ge64(q, end)) { continue; }
      var w = vec2u(1u, 0u);
      if (mass) { w = weight(x); }
      switch (u32(ge64(q, c1)) + u32(ge64(q, c2)) + u32(ge64(q, c3))) {
        case 0u: {
          acc[0] = add64(acc[0], w);
          mn[0] = min64(mn[0], q);
          mx[0] = max64(mx[0], q);
        }
        case 1u: {
          acc[1] = add64(acc[1], w);
          mn[1] = min64(mn[1], q);
          mx[1] = max64(mx[1], q);
        }
        case 2u: {
          acc[2] = add64(acc[2], w);
          mn[2] = min64(mn[2], q);
          mx[2] = max64(mx[2], q);
        }
        default: {
          acc[3] = add64(acc[3], w);
          mn[3] = min64(mn[3], q);
          mx[3] = max64(mx[3], q);
        }
      }
    }
    red[lid] = acc[0];
    red[WG + lid] = acc[1];
    red[2u * WG + lid] = acc[2];
    red[3u * WG + lid] = acc[3];
    reduce(4u, 0u);
    if (lid == 0u) { res4 = array<vec2u, 4>(red[0], red[WG], red[2u * WG], red[3u * WG]); }
    let sums = workgroupUniformLoad(&res4);
    // the last quarter j (in order: the largest) with above + Σ_{i ≥ j} sums[i] ≥ goal
    var pick = 0u;
    var tail = above;
    for (var j = 3u; j > 0u; j--) {
      let t = add64(tail, pick4(sums, j));
      if (ge64(t, goal)) {
        pick = j;
        break;
      }
      tail = t;
    }
    at_lo = add64(tail, pick4(sums, pick));
    above = tail;
    red[lid] = pick4(mn, pick);
    red[WG + lid] = pick4(mx, pick);
    reduce(2u, 1u);
    if (lid == 0u) { res2 = array<vec2u, 2>(red[0], red[WG]); }
    let snapped = workgroupUniformLoad(&res2);
    lo = snapped[0];
    hi = snapped[1];
  }
  return array<vec2u, 2>(lo, at_lo);
}

// One token per row: tokens[row, step], logprobs, sampled_logprobs, done and lengths (see the header).
@compute @workgroup_size(WG)
fn sample(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_id) l: vec3u,
) {
  lid = l.x;
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.rows) { return; }
  let g = p.row0 + r;
  let col = g * p.max_new + p.step;
  base = r * p.vocab;
  if (lid == 0u) { res2[0] = vec2u(u32(done[g] != 0), 0u); }
  if (workgroupUniformLoad(&res2)[0].x != 0u) {
    if (lid == 0u) {
      tokens[col] = p.pad_id;
      logprobs[col] = 0.0;
      sampled_logprobs[col] = 0.0;
    }
    return;
  }
  let ext = extremes();
  let top = ext[1];
  m = logits[base + ~top.x];
  let sampling = p.greedy == 0u;
  let u = philox(vec4u(p.step, seeds[g], 0u, 0u), vec2u(p.seed_lo, p.seed_hi)).x;
  // Phases: 0 top-k (count), 1 top-p (mass), 2 inverse-CDF draw (mass); each narrows the kept prefix
  // {pos ≥ mask}. z: kept mass; the raw normaliser is summed in the same sweep as the first z.
  var mask = ext[0];
  var z = vec2u(0u);
  var z_raw = 0.0;
  for (var phase = 0u; phase < 3u; phase++) {
    if (phase == 1u) {
      let t = totals(mask, sampling);
      z = t[0];
      z_raw = bitcast<f32>(t[1].x);
    }
    let top_k = p.top_k != 0u && p.top_k < p.vocab;
    if (!sampling || (phase == 0u && !top_k) || (phase == 1u && p.top_p == 0u)) { continue; }
    var goal = vec2u(p.top_k, 0u);
    if (phase > 0u) {
      goal = mul64x32hi(z, select(u, p.top_p, phase == 1u));
      if (phase == 2u) {
        goal = add64(goal, vec2u(1u, 0u)); // first token whose cumulative mass exceeds ⌊z·u/2^32⌋
      } else if (all(goal == vec2u(0u))) {
        goal.x = 1u; // top-p keeps at least one token
      }
    }
    let f = find(goal, mask, top, phase > 0u);
    mask = f[0];
    if (phase < 2u) { z = f[1]; }
  }
  let tok = ~select(top, mask, sampling).x;
  var lp_sampled = 0.0;
  if (sampling) { lp_sampled = log(to_f32(weight(logits[base + tok])) / to_f32(z)); }
  if (lid == 0u) {
    let id = i32(tok);
    tokens[col] = id;
    logprobs[col] = (logits[base + tok] - m) - log(z_raw);
    sampled_logprobs[col] = lp_sampled;
    lengths[g] += 1;
    var stop = false;
    for (var j = 0u; j < p.n_stop; j++) { stop = stop || stop_ids[j] == id; }
    if (stop) { done[g] = 1; }
  }
}
