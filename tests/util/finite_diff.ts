/**
 * Central-difference gradient checks of backward references.
 *
 * For a function `f(inputs) → outputs` and random output gradients `dout`, the scalar loss is
 * `L = Σ_k Σ_i outputs[k][i] · dout[k][i]`, so the analytic gradient of an input is exactly what a backward pass
 * returns for those `dout`. Each checked element is compared with
 * `(L(x + h·e_i) − L(x − h·e_i)) / 2h` within `atol + rtol·|analytic|`.
 *
 * `dtype: "f32"` emulates a naive float32 check (inputs, perturbed inputs, outputs and the loss sum rounded to
 * f32 with `Math.fround`): with a small step the difference is dominated by rounding, which is why gradient
 * checks run in f64.
 *
 * @module
 */

/** Float inputs by name. */
export type GradInputs = Record<string, Float64Array>;

/** Options of {@linkcode checkGradients}. */
export interface GradCheckOptions {
  /** Analytic gradients for the given output gradients, by input name (inputs left out are not checked). */
  grads: (douts: Float64Array[]) => GradInputs;
  /** Step h (default 1e-6). */
  h?: number;
  /** Absolute tolerance (default 1e-6). */
  atol?: number;
  /** Relative tolerance (default 1e-5). */
  rtol?: number;
  /** Arithmetic of the loss evaluation: "f64" (default) or an emulated "f32". */
  dtype?: "f64" | "f32";
  /** Check at most this many elements per input, chosen at random (default: all). */
  maxChecks?: number;
  /** Seed of `dout` and of the element choice (default 1). */
  seed?: number;
}

/** Outcome of {@linkcode checkGradients}. */
export interface GradCheckReport {
  /** True when every checked element is within tolerance. */
  ok: boolean;
  /** Number of elements checked. */
  checked: number;
  /** Largest `|numeric − analytic|`. */
  maxAbs: number;
  /** The element with the largest tolerance excess. */
  worst: { input: string; index: number; analytic: number; numeric: number } | null;
}

/** Deterministic PRNG (mulberry32) returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Compares the analytic gradients of `fn` with central differences; returns a report (see
 * {@linkcode assertGradients} for the throwing form).
 *
 * @example
 * ```ts
 * const r = checkGradients((i) => [i.x.map((v) => v * v)], { x: new Float64Array([1, 2]) }, {
 *   grads: ([d]) => ({ x: new Float64Array([2 * d[0], 4 * d[1]]) }),
 * });
 * ```
 */
export function checkGradients(
  fn: (inputs: GradInputs) => Float64Array[],
  inputs: GradInputs,
  opts: GradCheckOptions,
): GradCheckReport {
  const { h = 1e-6, atol = 1e-6, rtol = 1e-5, dtype = "f64", seed = 1 } = opts;
  const round = dtype === "f32" ? Math.fround : (v: number) => v;
  const rand = mulberry32(seed);
  const base: GradInputs = {};
  for (const [k, v] of Object.entries(inputs)) base[k] = v.map(round);
  const douts = fn(base).map((o) => o.map(() => round(rand() * 2 - 1)));
  const analytic = opts.grads(douts);
  const loss = (): number => {
    let l = 0;
    fn(base).forEach((o, k) => {
      for (let i = 0; i < o.length; i++) l = round(l + round(round(o[i]) * douts[k][i]));
    });
    return l;
  };
  const report: GradCheckReport = { ok: true, checked: 0, maxAbs: 0, worst: null };
  let worstExcess = -Infinity;
  for (const [name, grad] of Object.entries(analytic)) {
    const x = base[name];
    if (!x) throw new Error(`Gradient check: analytic gradient "${name}" has no matching input`);
    if (grad.length !== x.length) {
      throw new Error(`Gradient check: gradient "${name}" has ${grad.length} elements, expected ${x.length}`);
    }
    let indices = Array.from(x.keys());
    if (opts.maxChecks !== undefined && indices.length > opts.maxChecks) {
      for (let i = indices.length - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [indices[i], indices[j]] = [indices[j], indices[i]];
      }
      indices = indices.slice(0, opts.maxChecks);
    }
    for (const i of indices) {
      const orig = x[i];
      x[i] = round(orig + h);
      const plus = loss();
      x[i] = round(orig - h);
      const minus = loss();
      x[i] = orig;
      const numeric = (plus - minus) / (2 * h);
      const diff = Math.abs(numeric - grad[i]);
      const excess = Number.isNaN(diff) ? Infinity : diff - atol - rtol * Math.abs(grad[i]);
      report.checked++;
      report.maxAbs = Math.max(report.maxAbs, Number.isNaN(diff) ? Infinity : diff);
      if (excess > worstExcess) {
        worstExcess = excess;
        report.worst = { input: name, index: i, analytic: grad[i], numeric };
      }
      if (excess > 0) report.ok = false;
    }
  }
  return report;
}

/** {@linkcode checkGradients}, throwing with the worst element when a gradient is outside tolerance. */
export function assertGradients(
  fn: (inputs: GradInputs) => Float64Array[],
  inputs: GradInputs,
  opts: GradCheckOptions,
): GradCheckReport {
  const r = checkGradients(fn, inputs, opts);
  if (!r.ok) {
    const w = r.worst!;
    throw new Error(
      `Gradient check failed: d/d${w.input}[${w.index}] analytic ${w.analytic} vs numeric ${w.numeric} ` +
        `(max |Δ| ${r.maxAbs} over ${r.checked} elements, h ${opts.h ?? 1e-6}, atol ${opts.atol ?? 1e-6}, ` +
        `rtol ${opts.rtol ?? 1e-5})`,
    );
  }
  return r;
}

/** `n` seeded uniform values in [lo, hi). */
export function randomArray(n: number, rand: () => number, lo = -1, hi = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * rand();
  return a;
}
