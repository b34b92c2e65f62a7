import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import type { KLEstimator } from "../core/rl/kl.ts";
import { ppoLoss } from "../core/rl/ppo_loss.ts";
import {
  parsePPOStats,
  PPO_STATS,
  ppoLossGpu,
  type PPOLossGpuInputs,
  type PPOLossGpuOptions,
  readPPOStats,
} from "../core/rl/ppo_loss_gpu.ts";
import { assertClose, type Tolerance } from "./util/close.ts";
import { mulberry32 as rng } from "./util/finite_diff.ts";

const gpu = await Gpu.create();

// |gpu − ref| ≤ atol + rtol·|ref|, ref = ppoLoss in f64 on the same f32 inputs, for the statistics, dLogp and
// dValues alike. The rtol term covers f32 exp(x) for |x| ≤ 20 (ρ up to e²⁰ ≈ 4.9e8 with extreme log-ratios).
const TOL: Tolerance = { atol: 1e-5, rtol: 1e-5 };

type MaskKind = "none" | "right" | "left" | "gaps";

interface Case {
  B: number;
  T: number;
  mask: MaskKind;
  extremes: boolean;
  withValues: boolean;
  withEntropy: boolean;
  kl?: { coef: number; estimator: KLEstimator };
  opts: { clipRange: number; clipRangeValue: number; vfCoef: number; entCoef: number };
  seed: number;
}

/** A (B, T) 0/1 mask with ragged row lengths: valid prefix (right padding), suffix (left padding) or holes. */
function makeMask(kind: MaskKind, B: number, T: number, rand: () => number): Float32Array | undefined {
  if (kind === "none") return undefined;
  const m = new Float32Array(B * T);
  for (let b = 0; b < B; b++) {
    const len = Math.floor(rand() * (T + 1));
    for (let t = 0; t < T; t++) {
      const on = kind === "right" ? t < len : kind === "left" ? t >= T - len : rand() < 0.7;
      m[b * T + t] = on ? 1 : 0;
    }
  }
  return m;
}

/** Near a branch boundary f32 and f64 may legitimately choose different branches: keep clear of them. */
const nearBoundary = (x: number, at: number) => Math.abs(x - at) <= 1e-5 * Math.max(1, Math.abs(at));

/** Random f32 inputs of a case: log-ratios in ±0.6 (crossing the clip range), optionally ±25, ±50, ±1e4. */
function makeInputs(c: Case): Record<keyof PPOLossGpuInputs, Float32Array | undefined> {
  const N = c.B * c.T, rand = rng(c.seed), f = Math.fround;
  const uniform = (lo: number, hi: number) => Float32Array.from({ length: N }, () => lo + (hi - lo) * rand());
  const mask = makeMask(c.mask, c.B, c.T, rand);
  const logpOld = uniform(-10, 0);
  const advantages = uniform(-3, 3);
  const EXTREME = [25, -25, 50, -50, 1e4, -1e4];
  const logp = logpOld.map((old) => {
    const u = rand();
    const diff = c.extremes && u < 0.3
      ? EXTREME[Math.floor(rand() * EXTREME.length)]
      : u < 0.35
      ? 0
      : -0.6 + 1.2 * rand();
    let lp = f(old + diff);
    const { clipRange: eps } = c.opts;
    while (nearBoundary(Math.exp(lp - old), 1 + eps) || nearBoundary(Math.exp(lp - old), 1 - eps)) {
      lp = f(lp + 1e-3);
    }
    return lp;
  });
  const out: Record<keyof PPOLossGpuInputs, Float32Array | undefined> = {
    logp,
    logpOld,
    advantages,
    mask,
    values: undefined,
    valuesOld: undefined,
    returns: undefined,
    entropy: c.withEntropy ? uniform(0, 5) : undefined,
    logpRef: undefined,
  };
  if (c.withValues) {
    const values = uniform(-2, 2), returns = uniform(-2, 2), epsV = c.opts.clipRangeValue;
    const valuesOld = values.map((v) => f(v + (rand() - 0.5)));
    for (let t = 0; t < N; t++) {
      const [v, vo] = [values[t], valuesOld[t]];
      // Keep V off the clip bounds and, when V is clipped, the two squared errors apart.
      if (nearBoundary(v, vo - epsV) || nearBoundary(v, vo + epsV)) values[t] = f(v + 1e-3);
      const vc = Math.min(Math.max(values[t], vo - epsV), vo + epsV);
      if (vc !== values[t]) {
        while (nearBoundary(Math.abs(vc - returns[t]), Math.abs(values[t] - returns[t]))) {
          returns[t] = f(returns[t] + 1e-3);
        }
      }
    }
    Object.assign(out, { values, valuesOld, returns });
  }
  if (c.kl) {
    const OFF = [30, -30, 19.5, -19.5];
    out.logpRef = logp.map((lp) =>
      f(lp + (c.extremes && rand() < 0.2 ? OFF[Math.floor(rand() * 4)] : -3 + 6 * rand()))
    );
  }
  return out;
}

/** Statistics of the reference in {@linkcode PPO_STATS} order, or all 0 when no token is valid. */
function refStats(c: Case, x: Record<keyof PPOLossGpuInputs, Float32Array | undefined>) {
  const N = c.B * c.T;
  const n = x.mask ? x.mask.reduce((a, m) => a + m, 0) : N;
  if (n === 0) {
    return {
      stats: new Float64Array(PPO_STATS.length),
      dLogp: new Float64Array(N),
      dValues: new Float64Array(N),
    };
  }
  const r = ppoLoss(
    {
      logp: x.logp!,
      logpOld: x.logpOld!,
      advantages: x.advantages!,
      mask: x.mask,
      values: x.values,
      valuesOld: x.valuesOld,
      returns: x.returns,
      entropy: x.entropy,
    },
    { ...c.opts, klInLoss: c.kl ? { ...c.kl, logpRef: x.logpRef! } : undefined },
  );
  const stats = PPO_STATS.map((name) => (name === "tokens" ? n : r[name]));
  return { stats: Float64Array.from(stats), dLogp: r.dLogp, dValues: r.dValues };
}

/** Runs all cases in one batch (one submit, one readback) and checks each against the f64 reference. */
async function checkCases(g: Gpu, cases: Case[]): Promise<void> {
  const batch = new Batch(g, "ppo_loss_test");
  const pending = cases.map((c) => {
    const data = makeInputs(c), shape = [c.B, c.T];
    const inputs: Record<string, Tensor> = {};
    for (const [name, d] of Object.entries(data)) if (d) inputs[name] = upload(g, d, { shape, label: name });
    const out = {
      stats: new Tensor(g, [PPO_STATS.length], "f32", "stats"),
      dLogp: new Tensor(g, shape, "f32", "dLogp"),
      dValues: new Tensor(g, shape, "f32", "dValues"),
    };
    const opts: PPOLossGpuOptions = { ...c.opts, klInLoss: c.kl };
    ppoLossGpu(batch, out, inputs as unknown as PPOLossGpuInputs, opts);
    const reads = [out.stats, out.dLogp, out.dValues].map((t) => batch.read(t));
    return { c, data, reads, tensors: [...Object.values(inputs), ...Object.values(out)] };
  });
  await batch.submit();
  for (const t of pending.flatMap((p) => p.tensors)) t.release();
  for (const { c, data, reads } of pending) {
    const [stats, dLogp, dValues] = await Promise.all(reads);
    const want = refStats(c, data);
    const what =
      `B=${c.B} T=${c.T} mask=${c.mask} extremes=${c.extremes} kl=${c.kl?.estimator} seed=${c.seed}`;
    assertClose(stats, want.stats, TOL, `stats [${PPO_STATS}] (${what})`);
    assertClose(dLogp, want.dLogp, TOL, `dLogp (${what})`);
    assertClose(dValues, want.dValues, TOL, `dValues (${what})`);
  }
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  B: fc.constantFrom(1, 2, 5, 17),
  T: fc.constantFrom(1, 3, 13, 64),
  mask: fc.constantFrom<MaskKind>("none", "right", "left", "gaps"),
  extremes: fc.boolean(),
  withValues: fc.boolean(),
  withEntropy: fc.boolean(),
  kl: fc.option(
    fc.record({
      coef: fc.constantFrom(0.01, 0.1, 1),
      estimator: fc.constantFrom<KLEstimator>("k1", "k2", "k3"),
    }),
    { nil: undefined },
  ),
  opts: fc.record({
    clipRange: fc.constantFrom(0.1, 0.2, 0.3),
    clipRangeValue: fc.constantFrom(0.1, 0.2, 0.5),
    vfCoef: fc.constantFrom(0.1, 0.5, 1),
    entCoef: fc.constantFrom(0, 0.01),
  }),
  seed: fc.integer(),
});

Deno.test("ppoLossGpu matches ppoLoss on ragged masked batches with extreme log-ratios (property)", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(caseArb, { minLength: 1, maxLength: 6 }), (cases) => checkCases(gpu, cases)),
    { seed: 20240611, numRuns: 30 },
  );
});

Deno.test("ppoLossGpu: defaults, every mask shape at the sizes of the brief, all options on", async () => {
  const cases: Case[] = [];
  for (const B of [1, 2, 5, 17]) {
    for (const T of [1, 3, 13, 64]) {
      for (const mask of ["none", "right", "left", "gaps"] as const) {
        cases.push({
          B,
          T,
          mask,
          extremes: true,
          withValues: true,
          withEntropy: true,
          kl: { coef: 0.1, estimator: "k3" },
          opts: { clipRange: 0.2, clipRangeValue: 0.2, vfCoef: 0.1, entCoef: 0.01 },
          seed: B * 1000 + T * 10 + mask.length,
        });
      }
    }
  }
  await checkCases(gpu, cases);
  // Defaults: no options and no optional inputs give ppoLoss's defaults (ε = 0.2, vfCoef 0.1, entCoef 0).
  const c = { ...cases[cases.length - 1], withValues: false, withEntropy: false, kl: undefined };
  const data = makeInputs(c);
  const shape = [c.B, c.T];
  const [logp, logpOld, advantages] = [data.logp!, data.logpOld!, data.advantages!].map((d) =>
    upload(gpu, d, { shape })
  );
  const stats = new Tensor(gpu, [PPO_STATS.length], "f32", "stats");
  const batch = new Batch(gpu, "defaults");
  ppoLossGpu(batch, { stats }, { logp, logpOld, advantages });
  await batch.submit();
  const got = await readPPOStats(stats);
  const want = ppoLoss({ logp: data.logp!, logpOld: data.logpOld!, advantages: data.advantages! });
  for (const name of PPO_STATS) {
    const w = name === "tokens" ? c.B * c.T : want[name];
    assertClose([got[name]], [w], TOL, `default ${name}`);
  }
  for (const t of [logp, logpOld, advantages, stats]) t.release();
});

Deno.test("ppoLossGpu: an all-masked batch gives zero statistics and gradients, no NaN", async () => {
  const N = 2 * 13, shape = [2, 13];
  const t = (v: number, label: string) => upload(gpu, new Float32Array(N).fill(v), { shape, label });
  const inputs = {
    logp: t(-1, "logp"),
    logpOld: t(-2, "logpOld"),
    advantages: t(1, "adv"),
    mask: t(0, "mask"),
    values: t(1, "v"),
    valuesOld: t(0, "vo"),
    returns: t(2, "r"),
    entropy: t(1, "h"),
    logpRef: t(-3, "ref"),
  };
  const out = {
    stats: upload(gpu, new Float32Array(PPO_STATS.length).fill(Number.NaN), { label: "stats" }),
    dLogp: t(Number.NaN, "dl"),
    dValues: t(Number.NaN, "dv"),
  };
  const batch = new Batch(gpu, "all_masked");
  ppoLossGpu(batch, out, inputs, { entCoef: 0.01, klInLoss: { coef: 0.1 } });
  const reads = [out.stats, out.dLogp, out.dValues].map((x) => batch.read(x));
  await batch.submit();
  const [stats, dLogp, dValues] = await Promise.all(reads);
  for (const x of [...Object.values(inputs), ...Object.values(out)]) x.release();
  // Outputs start as NaN: every entry is written.
  assert.deepEqual(Array.from(stats), new Array(PPO_STATS.length).fill(0));
  assert.deepEqual(Array.from(dLogp), new Array(N).fill(0));
  assert.deepEqual(Array.from(dValues), new Array(N).fill(0));
  assert.throws(() => ppoLoss({ logp: [0], logpOld: [0], advantages: [1], mask: [0] }), /no valid tokens/);
});

Deno.test("ppoLossGpu is deterministic and shards over a lowered binding limit", async () => {
  const c: Case = {
    B: 17,
    T: 64,
    mask: "gaps",
    extremes: true,
    withValues: true,
    withEntropy: true,
    kl: { coef: 0.05, estimator: "k2" },
    opts: { clipRange: 0.2, clipRangeValue: 0.2, vfCoef: 0.5, entCoef: 0.01 },
    seed: 99,
  };
  const small = await Gpu.create({ maxBindingSize: 1024 }); // 256-token shards: 5 partials dispatches
  try {
    await checkCases(small, [c, { ...c, mask: "right", seed: 100 }, { ...c, B: 5, T: 13, seed: 101 }]);
  } finally {
    small.destroy();
  }
  const data = makeInputs(c);
  const inputs: Record<string, Tensor> = {};
  for (const [name, d] of Object.entries(data)) {
    if (d) inputs[name] = upload(gpu, d, { shape: [c.B, c.T], label: name });
  }
  const outs = [0, 1].map((i) => new Tensor(gpu, [PPO_STATS.length], "f32", `stats${i}`));
  const batch = new Batch(gpu, "determinism");
  for (const stats of outs) {
    ppoLossGpu(batch, { stats }, inputs as unknown as PPOLossGpuInputs, { ...c.opts, klInLoss: c.kl });
  }
  const reads = outs.map((t) => batch.read(t));
  await batch.submit();
  const [a, b] = await Promise.all(reads);
  assert.deepEqual(Array.from(a), Array.from(b));
  for (const t of [...Object.values(inputs), ...outs]) t.release();
});

Deno.test("ppoLossGpu rejects bad inputs and options naming the problem; parsePPOStats names the values", () => {
  const shape = [2, 3];
  const x = new Tensor(gpu, shape, "f32", "x"), y = new Tensor(gpu, shape, "f32", "y");
  const stats = new Tensor(gpu, [PPO_STATS.length], "f32", "stats");
  const base = { logp: x, logpOld: x, advantages: x };
  const batch = new Batch(gpu, "errors");
  try {
    assert.throws(
      () => ppoLossGpu(batch, { stats }, { ...base, advantages: new Tensor(gpu, [3, 2], "f32", "adv") }),
      /ppo_loss: input "advantages": tensor "adv" has shape \[3,2\], expected \[2,3\]/,
    );
    assert.throws(
      () => ppoLossGpu(batch, { stats }, { ...base, values: x }),
      /"values", "valuesOld" and "returns" must be given together/,
    );
    assert.throws(
      () => ppoLossGpu(batch, { stats }, { ...base, logpRef: x }),
      /"klInLoss" option and the "logpRef"/,
    );
    assert.throws(
      () => ppoLossGpu(batch, { stats }, base, { clipRange: -0.1 }),
      /invalid option "clipRange": expected a finite number >= 0, got "-0.1"/,
    );
    assert.throws(
      () => ppoLossGpu(batch, { stats, dLogp: x }, base),
      /output tensor "x" aliases input "logp"/,
    );
    assert.throws(
      () => ppoLossGpu(batch, { stats: new Tensor(gpu, [3], "f32", "s3") }, base),
      /output "stats": tensor "s3" has shape \[3\], expected \[10\]/,
    );
    assert.throws(
      () =>
        ppoLossGpu(batch, { stats, dLogp: y }, base, {
          klInLoss: { coef: 1, estimator: "k4" as KLEstimator },
        }),
      /klInLoss|logpRef/,
    );
    assert.throws(
      () =>
        ppoLossGpu(batch, { stats, dLogp: y }, { ...base, logpRef: x }, {
          klInLoss: { coef: 1, estimator: "k4" as KLEstimator },
        }),
      /invalid KL estimator "k4"/,
    );
  } finally {
    batch.abandon();
  }
  const named = parsePPOStats(PPO_STATS.map((_, i) => i));
  assert.equal(named.loss, 0);
  assert.equal(named.tokens, 9);
  assert.throws(() => parsePPOStats([1, 2]), /expected 10 values, got 2/);
});
