/**
 * WGSL generator for the `rows` attention family: grouped-query causal attention for CPU adapters (lavapipe),
 * the same math and masking as `shaders/attention.wgsl`, with no workgroup memory or barriers (costly on a CPU).
 *
 * q: (B, T, H, D), k, v: (B, S, KVH, D), key_mask: (B, S) (0 = padding key). Query head h uses kv head
 * h / (H / KVH); query t sits at key position t + (S − T) and sees key s iff s ≤ t + (S − T) and
 * key_mask[b, s] ≠ 0. With x_s = scale·q·k_s:
 *
 * - `forward`: online softmax over the visible keys, out = Σ_s softmax_s(x)·v_s, lse = log Σ_s e^(x_s)
 *   (no visible key: out = 0, lse = 0);
 * - `backward_dq`: P_s = e^(x_s − lse), dS_s = P_s·(dout·v_s − δ), dq = scale·Σ_s dS_s·k_s (stats = [lse, δ]
 *   from attention.wgsl's backward_delta);
 * - `backward_dkv`: dv = Σ_(t,g) P·dout, dk = scale·Σ_(t,g) dS·q over the query rows (t, g) of the G heads
 *   sharing the kv head that see key s.
 *
 * Why generated: llvmpipe runs 8 invocations in SIMD lanes and every storage-buffer load is a per-lane scalar
 * loop with a bounds check, so loads dominate. Each invocation therefore handles a *block* of `block`
 * consecutive query positions of one head (forward, dq) or key positions of one kv head (dkv), and each key
 * (query) row it loads feeds all of them; the rows live in *named* `vec4` registers, since function-scope
 * arrays are stack memory there (measured on lavapipe, B 8, T 128, H 4/2, D 32, one forward: the former kernel, one query per
 * invocation with its row in a function-scope array, 15–20 ms; 8 queries in arrays 25–30 ms; 8 queries in named
 * registers 4–5 ms).
 *
 * Each output element is accumulated by one invocation over the keys (queries) in ascending order; a position of
 * the block that a key is not visible to adds exactly 0 (`select`, never a product with a non-finite value), so
 * every result is bitwise independent of the block size and of the other positions in the block: a batch padded
 * to a longer T gives the same bits as the sequence alone. Deterministic, no atomics.
 *
 * @module
 */

/** One generated variant of the rows attention kernels. */
export interface AttentionRowsConfig {
  /** Head dim / 4 (1…64). */
  readonly d4: number;
  /** Query positions (forward, dq) or key positions (dkv) per invocation (1…8). */
  readonly block: number;
}

/** Largest head dim the rows family takes. */
export const ROWS_MAX_HEAD_DIM = 256;

/**
 * Default positions per invocation for head dim `D` and `n` positions: 4 while `block·D/4 ≤ 32` named vec4
 * registers per row set (4 for D ≤ 32, 2 for D = 64, 1 above), a power of two, and no more than `n` needs.
 *
 * Measured on lavapipe (tiny preset training step, B 8, T 128, H 4/2, D 32; attention forward + backward):
 * block 1 88 ms, 2 59 ms, 4 44 ms, 8 42 ms — while llvmpipe's first compile of the backward grows with the
 * unrolled size (1.8 s, 3.3 s and 9.6 s for blocks 2, 4, 8; Mesa caches it on disk afterwards).
 */
export function rowsBlock(D: number, n: number): number {
  let block = Math.max(1, Math.min(4, Math.floor(32 / Math.ceil(D / 4))));
  block = 1 << Math.floor(Math.log2(block));
  while (block > 1 && block / 2 >= n) block /= 2;
  return block;
}

const HEADER = `override WG: u32 = 32u; // invocations per workgroup

struct Params {
  T: u32,        // query tokens
  S: u32,        // key tokens (S ≥ T)
  H: u32,        // query heads
  KVH: u32,      // kv heads (divides H)
  D: u32,        // head dim (= 4·D4)
  has_mask: u32, // 1 when key_mask is bound, else 0 (a 1-element placeholder is bound)
  scale: f32,    // 1 / sqrt(D)
  rows: u32,     // invocations: B·ceil(T/block)·H (forward, dq) or B·ceil(S/block)·KVH (dkv)
  R: u32,        // unused (layout shared with attention.wgsl)
  BK: u32,       // unused
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4f>;         // q:        (B, T, H, D)
@group(0) @binding(2) var<storage, read> k: array<vec4f>;         // k:        (B, S, KVH, D)
@group(0) @binding(3) var<storage, read> v: array<vec4f>;         // v:        (B, S, KVH, D)
@group(0) @binding(4) var<storage, read> key_mask: array<i32>;    // key_mask: (B, S)
@group(0) @binding(5) var<storage, read_write> out: array<vec4f>; // out:      (B, T, H, D)
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;   // lse:      (B, T, H)
@group(0) @binding(7) var<storage, read> dout: array<vec4f>;      // dout:     (B, T, H, D)
@group(0) @binding(8) var<storage, read> stats: array<f32>;       // stats:    (B, T, H, 2) = [lse, δ]
@group(0) @binding(9) var<storage, read_write> dq: array<vec4f>;  // dq:       (B, T, H, D)
@group(0) @binding(10) var<storage, read_write> dk: array<vec4f>; // dk:       (B, S, KVH, D)
@group(0) @binding(11) var<storage, read_write> dv: array<vec4f>; // dv:       (B, S, KVH, D)

const NEG: f32 = -3.0e38;

fn hsum(x: vec4f) -> f32 {
  return x.x + x.y + x.z + x.w;
}

fn key_visible(b: u32, s: u32) -> bool {
  return p.has_mask == 0u || key_mask[b * p.S + s] != 0;
}

// Invocation index over a 2-D grid of 1-D workgroups (grids past 65535 workgroups).
fn index(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid.x;
}
`;

/** The WGSL module (entry points `forward`, `backward_dq`, `backward_dkv`) of one variant. */
export function attentionRowsWgsl(cfg: AttentionRowsConfig): string {
  const { d4: D4, block: Q } = cfg;
  if (!(Number.isInteger(D4) && D4 >= 1 && D4 <= ROWS_MAX_HEAD_DIM / 4)) {
    throw new Error(`attention_rows: d4 must be an integer in 1..${ROWS_MAX_HEAD_DIM / 4}, got ${D4}`);
  }
  if (!(Number.isInteger(Q) && Q >= 1 && Q <= 8)) {
    throw new Error(`attention_rows: block must be an integer in 1..8, got ${Q}`);
  }
  // each(n, f, sep): f(0) sep f(1) … ; I over the head dim's vec4s, J over the block's positions
  const each = (n: number, f: (i: number) => string, sep: string) =>
    Array.from({ length: n }, (_, i) => f(i)).join(sep);
  const I = (f: (i: number) => string, sep = "\n  ") => each(D4, f, sep);
  const J = (f: (j: number) => string, sep = "\n  ") => each(Q, f, sep);
  // Σ_d a·b of two head-dim rows held as named vec4s
  const dot = (a: (i: number) => string, b: (i: number) => string) =>
    `hsum(${I((i) => `${a(i)} * ${b(i)}`, " + ")})`;

  // Query block of one head: invocation (b, block of Q positions, h), h fastest.
  const queryBlock = `let TB = (p.T + ${Q - 1}u) / ${Q}u;
  let inv = index(wid, nwg, lid);
  if (inv >= p.rows) { return; }
  let h = inv % p.H;
  let t0 = ((inv / p.H) % TB) * ${Q}u;
  let b = inv / (p.H * TB);
  let kvh = h / (p.H / p.KVH);
  let offs = p.S - p.T;
  let s_max = min(p.S, min(t0 + ${Q}u, p.T) + offs); // keys any position of the block sees: [0, s_max)`;
  const queryRows = J((j) =>
    `let live${j} = t0 + ${j}u < p.T;
  let row${j} = select(0u, (b * p.T + t0 + ${j}u) * p.H + h, live${j});
  let end${j} = t0 + ${j}u + offs + 1u; // sees keys s < end${j}`
  );

  // The block's query rows, scaled, and the visible key s's k and v rows (forward, dq).
  const scaledQueries = J((j) => I((i) => `let q${j}_${i} = q[row${j} * ${D4}u + ${i}u] * p.scale;`));
  const keyRows = `if (!key_visible(b, s)) { continue; }
    let kb = ((b * p.S + s) * p.KVH + kvh) * ${D4}u;
    ${I((i) => `let k${i} = k[kb + ${i}u];`, "\n    ")}
    ${I((i) => `let v${i} = v[kb + ${i}u];`, "\n    ")}`;

  const forward = `
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_id) lid: vec3u) {
  ${queryBlock}
  ${queryRows}
  ${scaledQueries}
  ${J((j) => I((i) => `var a${j}_${i} = vec4f(0.0);`))}
  ${J((j) => `var m${j} = NEG;\n  var l${j} = 0.0;`)}
  for (var s = 0u; s < s_max; s++) {
    ${keyRows}
    ${
    J((j) =>
      `{
      let x = select(NEG, ${dot((i) => `q${j}_${i}`, (i) => `k${i}`)}, s < end${j});
      let mn = max(m${j}, x);
      let c = exp(m${j} - mn);
      let e = select(0.0, exp(x - mn), s < end${j});
      l${j} = l${j} * c + e;
      m${j} = mn;
      ${I((i) => `a${j}_${i} = a${j}_${i} * c + e * v${i};`, "\n      ")}
    }`, "\n    ")
  }
  }
  ${
    J((j) =>
      `if (live${j}) {
    let inv_l = select(0.0, 1.0 / l${j}, l${j} > 0.0);
    ${I((i) => `out[row${j} * ${D4}u + ${i}u] = a${j}_${i} * inv_l;`, "\n    ")}
    lse[row${j}] = select(0.0, m${j} + log(l${j}), l${j} > 0.0);
  }`
    )
  }
}
`;

  const backwardDq = `
@compute @workgroup_size(WG)
fn backward_dq(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_id) lid: vec3u) {
  ${queryBlock}
  ${queryRows}
  ${J((j) => `let lse${j} = stats[2u * row${j}];\n  let delta${j} = stats[2u * row${j} + 1u];`)}
  ${scaledQueries}
  ${J((j) => I((i) => `let g${j}_${i} = dout[row${j} * ${D4}u + ${i}u];`))}
  ${J((j) => I((i) => `var a${j}_${i} = vec4f(0.0);`))}
  for (var s = 0u; s < s_max; s++) {
    ${keyRows}
    ${
    J((j) =>
      `{
      let pr = exp(${dot((i) => `q${j}_${i}`, (i) => `k${i}`)} - lse${j});
      let ds = select(0.0, pr * (${dot((i) => `g${j}_${i}`, (i) => `v${i}`)} - delta${j}), s < end${j});
      ${I((i) => `a${j}_${i} += ds * k${i};`, "\n      ")}
    }`, "\n    ")
  }
  }
  ${
    J((j) =>
      `if (live${j}) {\n    ${
        I((i) => `dq[row${j} * ${D4}u + ${i}u] = a${j}_${i} * p.scale;`, "\n    ")
      }\n  }`
    )
  }
}
`;

  // Key block of one kv head: invocation (b, block of Q key positions, kvh), kvh fastest.
  const backwardDkv = `
@compute @workgroup_size(WG)
fn backward_dkv(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u) {
  let SB = (p.S + ${Q - 1}u) / ${Q}u;
  let inv = index(wid, nwg, lid);
  if (inv >= p.rows) { return; }
  let kvh = inv % p.KVH;
  let s0 = ((inv / p.KVH) % SB) * ${Q}u;
  let b = inv / (p.KVH * SB);
  let G = p.H / p.KVH;
  let offs = p.S - p.T;
  ${
    J((j) =>
      `let live${j} = s0 + ${j}u < p.S;
  let key${j} = select(0u, (b * p.S + s0 + ${j}u) * p.KVH + kvh, live${j});
  let vis${j} = live${j} && key_visible(b, s0 + ${j}u);`
    )
  }
  ${J((j) => I((i) => `let k${j}_${i} = k[key${j} * ${D4}u + ${i}u] * p.scale;`))}
  ${J((j) => I((i) => `let v${j}_${i} = v[key${j} * ${D4}u + ${i}u];`))}
  ${J((j) => I((i) => `var gk${j}_${i} = vec4f(0.0);\n  var gv${j}_${i} = vec4f(0.0);`))}
  // Query t sees key s iff s ≤ t + offs: the block's first key is seen from t = s0 − offs on.
  for (var t = select(0u, s0 - offs, s0 > offs); t < p.T; t++) {
    for (var gi = 0u; gi < G; gi++) {
      let row = (b * p.T + t) * p.H + kvh * G + gi;
      let lse_r = stats[2u * row];
      let delta = stats[2u * row + 1u];
      ${I((i) => `let q${i} = q[row * ${D4}u + ${i}u];`, "\n      ")}
      ${I((i) => `let g${i} = dout[row * ${D4}u + ${i}u];`, "\n      ")}
      ${
    J((j) =>
      `{
        let seen = vis${j} && s0 + ${j}u <= t + offs;
        let pr = exp(${dot((i) => `k${j}_${i}`, (i) => `q${i}`)} - lse_r);
        let ds = select(0.0, pr * (${dot((i) => `v${j}_${i}`, (i) => `g${i}`)} - delta), seen);
        let pv = select(0.0, pr, seen);
        ${I((i) => `gv${j}_${i} += pv * g${i};\n        gk${j}_${i} += ds * q${i};`, "\n        ")}
      }`, "\n      ")
  }
    }
  }
  ${
    J((j) =>
      `if (live${j}) {\n    ${
        I(
          (i) =>
            `dk[key${j} * ${D4}u + ${i}u] = gk${j}_${i} * p.scale;\n    dv[key${j} * ${D4}u + ${i}u] = gv${j}_${i};`,
          "\n    ",
        )
      }\n  }`
    )
  }
}
`;
  return HEADER + forward + backwardDq + backwardDkv;
}
