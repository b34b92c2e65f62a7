/**
 * Plain-TS float64 reference of grouped-query causal attention (`shaders/attention.wgsl`), same argument order
 * as `core/model/attention.ts`. Materialises each query row's scores; slow and simple on purpose.
 *
 * @module
 */

/** Dimensions and masks of the attention references. */
export interface AttentionRefOptions {
  /** Batch. */
  B: number;
  /** Query tokens. */
  T: number;
  /** Key tokens (S ≥ T; query t sits at key position t + S − T). */
  S: number;
  /** Query heads. */
  H: number;
  /** Key/value heads (divides H; head h reads kv head h / (H / KVH)). */
  KVH: number;
  /** Head dim. */
  D: number;
  /** (B, S), 0 = padding key; omitted: all keys real. */
  keyMask?: ArrayLike<number>;
  /** Score scale, default 1/√D. */
  scale?: number;
}

/** Calls `fn(b, t, h, kvh, row, keys)` for every query row with the list of keys it may attend. */
function eachRow(
  o: AttentionRefOptions,
  fn: (b: number, t: number, h: number, kvh: number, row: number, keys: number[]) => void,
): void {
  const G = o.H / o.KVH;
  for (let b = 0; b < o.B; b++) {
    for (let t = 0; t < o.T; t++) {
      const keys: number[] = [];
      for (let s = 0; s <= t + o.S - o.T; s++) if (!o.keyMask || o.keyMask[b * o.S + s] !== 0) keys.push(s);
      for (let h = 0; h < o.H; h++) fn(b, t, h, Math.floor(h / G), (b * o.T + t) * o.H + h, keys);
    }
  }
}

/** Scaled score `scale · q[row]·k[b, s, kvh]`. */
function score(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  o: AttentionRefOptions,
  row: number,
  kr: number,
): number {
  let x = 0;
  for (let d = 0; d < o.D; d++) x += q[row * o.D + d] * k[kr * o.D + d];
  return x * (o.scale ?? 1 / Math.sqrt(o.D));
}

/**
 * `out[b, t, h] = Σ_s softmax_s(x)·v[b, s, h / G]` with `x_s = scale·q·k_s` over the visible keys
 * (`s ≤ t + S − T`, unmasked), `lse = log Σ_s e^(x_s)`. Rows without a visible key: out = 0, lse = 0.
 * Shapes: q, out (B, T, H, D); k, v (B, S, KVH, D); lse (B, T, H).
 */
export function attentionForwardRef(
  out: Float64Array,
  lse: Float64Array,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  opts: AttentionRefOptions,
): void {
  const { S, KVH, D } = opts;
  eachRow(opts, (b, _t, _h, kvh, row, keys) => {
    out.fill(0, row * D, (row + 1) * D);
    lse[row] = 0;
    if (keys.length === 0) return;
    const xs = keys.map((s) => score(q, k, opts, row, (b * S + s) * KVH + kvh));
    const m = Math.max(...xs);
    const ws = xs.map((x) => Math.exp(x - m));
    const sum = ws.reduce((a, w) => a + w, 0);
    keys.forEach((s, i) => {
      const kr = (b * S + s) * KVH + kvh;
      for (let d = 0; d < D; d++) out[row * D + d] += (ws[i] / sum) * v[kr * D + d];
    });
    lse[row] = m + Math.log(sum);
  });
}

/**
 * Backward of {@linkcode attentionForwardRef} (all written): with `P_s = e^(x_s − lse)`, `δ = Σ_d dout·out`,
 * `dS_s = P_s·(dout·v_s − δ)`: `dq = scale·Σ_s dS_s·k_s`, `dk_s = scale·Σ dS_s·q`, `dv_s = Σ P_s·dout` (dk, dv
 * summed over every query row and head that attends key s).
 */
export function attentionBackwardRef(
  dq: Float64Array,
  dk: Float64Array,
  dv: Float64Array,
  dout: ArrayLike<number>,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  out: ArrayLike<number>,
  lse: ArrayLike<number>,
  opts: AttentionRefOptions,
): void {
  const { S, KVH, D } = opts;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  dq.fill(0);
  dk.fill(0);
  dv.fill(0);
  eachRow(opts, (b, _t, _h, kvh, row, keys) => {
    let delta = 0;
    for (let d = 0; d < D; d++) delta += dout[row * D + d] * out[row * D + d];
    for (const s of keys) {
      const kr = (b * S + s) * KVH + kvh;
      const p = Math.exp(score(q, k, opts, row, kr) - lse[row]);
      let dp = 0;
      for (let d = 0; d < D; d++) dp += dout[row * D + d] * v[kr * D + d];
      const ds = p * (dp - delta);
      for (let d = 0; d < D; d++) {
        dq[row * D + d] += scale * ds * k[kr * D + d];
        dk[kr * D + d] += scale * ds * q[row * D + d];
        dv[kr * D + d] += p * dout[row * D + d];
      }
    }
  });
}
