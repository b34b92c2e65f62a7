/**
 * GPU token sampling (`shaders/sampling.wgsl`, `core/ops/sampling.ts`) against the plain-TS reference
 * (`core/ref/sampling_ref.ts`): token ids exactly equal, log-probs within atol 1e-5 + rtol 1e-6·|ref|; stop
 * bookkeeping over several steps in one batch; empirical distributions of 20k draws; the shared integer math
 * (Philox known answers, fixed-point weights) checked independently.
 *
 * @module
 */
import fc from "fast-check";
import assert from "node:assert/strict";
import src from "../shaders/sampling.wgsl" with { type: "text" };
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import {
  createSamplerState,
  releaseSamplerState,
  type SampleOptions,
  sampleTokens,
} from "../core/ops/sampling.ts";
import {
  EXP2_Q31,
  mulhi32,
  orderKey,
  philox4x32,
  type SampleRefOptions,
  type SamplerStateRef,
  sampleTokensRef,
  sampleWeight,
  samplingScale,
} from "../core/ref/sampling_ref.ts";
import { assertClose } from "./util/close.ts";
import { mulberry32 } from "./util/finite_diff.ts";

const gpu = await Gpu.create();
const LP_TOL = { atol: 1e-5, rtol: 1e-6 };

/** Settings of one test step (host side). */
type Settings = Omit<SampleRefOptions, "vocab" | "maxNew">;

type Mode = "normal1" | "normal4" | "ties" | "peaked";

/** Logits (rows·V): N(0, 1), N(0, 16), heavy ties (in {−1, −0, 0, 0.5, 2}) or N(0, 1) + a +12 spike. */
function makeLogits(rows: number, V: number, mode: Mode, seed: number): Float32Array {
  const rnd = mulberry32(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  const x = new Float32Array(rows * V);
  for (let i = 0; i < x.length; i++) {
    x[i] = mode === "ties"
      ? [-1, -0, 0, 0.5, 2][Math.floor(rnd() * 5)]
      : normal() * (mode === "normal4" ? 4 : 1);
  }
  if (mode === "peaked") { for (let r = 0; r < rows; r++) x[r * V + Math.floor(rnd() * V)] += 12; }
  return x;
}

function freshState(B: number, maxNew: number, seed: number): SamplerStateRef {
  const rnd = mulberry32(seed);
  return {
    tokens: new Int32Array(B * maxNew).fill(-7),
    done: Int32Array.from({ length: B }, () => (rnd() < 0.25 ? 1 : 0)),
    lengths: Int32Array.from({ length: B }, () => Math.floor(rnd() * 4)),
    logprobs: new Float32Array(B * maxNew).fill(9),
    sampledLogprobs: new Float32Array(B * maxNew).fill(9),
  };
}

function cloneState(s: SamplerStateRef): SamplerStateRef {
  return {
    tokens: s.tokens.slice(),
    done: s.done.slice(),
    lengths: s.lengths.slice(),
    logprobs: s.logprobs.slice(),
    sampledLogprobs: s.sampledLogprobs.slice(),
  };
}

/** Runs `steps` decoding steps on `g` in one batch (logits written per step) with one readback at the end. */
async function runGpu(
  g: Gpu,
  init: SamplerStateRef,
  steps: { logits: Float32Array; settings: Settings }[],
  V: number,
  workgroupSize?: number,
): Promise<SamplerStateRef> {
  const B = init.done.length, maxNew = init.tokens.length / B;
  const state = {
    tokens: upload(g, init.tokens, { shape: [B, maxNew], label: "tokens" }),
    done: upload(g, init.done, { label: "done" }),
    lengths: upload(g, init.lengths, { label: "lengths" }),
    logprobs: upload(g, init.logprobs, { shape: [B, maxNew], label: "logprobs" }),
    sampledLogprobs: upload(g, init.sampledLogprobs, { shape: [B, maxNew], label: "sampled" }),
  };
  const logits = upload(g, steps[0].logits, { shape: [B, V], label: "logits" });
  const s0 = steps[0].settings;
  const seeds = upload(g, Uint32Array.from(s0.seeds), { label: "seeds" });
  const stops = s0.stopIds?.length ? upload(g, Int32Array.from(s0.stopIds), { label: "stops" }) : undefined;
  const batch = new Batch(g, "sampling_test");
  steps.forEach(({ logits: x, settings: s }, i) => {
    if (i > 0) batch.write(logits, x);
    const opts: SampleOptions = { ...s, seeds, stopIds: stops, workgroupSize };
    sampleTokens(batch, state, logits, opts);
  });
  const reads = [state.tokens, state.done, state.lengths, state.logprobs, state.sampledLogprobs].map((t) =>
    batch.read(t)
  );
  await batch.submit();
  const [tokens, done, lengths, logprobs, sampledLogprobs] = await Promise.all(reads);
  releaseSamplerState(state);
  for (const t of [logits, seeds, stops]) t?.release();
  return {
    tokens: tokens as Int32Array,
    done: done as Int32Array,
    lengths: lengths as Int32Array,
    logprobs: logprobs as Float32Array,
    sampledLogprobs: sampledLogprobs as Float32Array,
  };
}

function runRef(
  init: SamplerStateRef,
  steps: { logits: Float32Array; settings: Settings }[],
  V: number,
): SamplerStateRef {
  const out = cloneState(init);
  const maxNew = init.tokens.length / init.done.length;
  for (const { logits, settings } of steps) sampleTokensRef(out, logits, { ...settings, vocab: V, maxNew });
  return out;
}

function assertIntsEqual(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      throw new Error(`${what}: index ${i} got ${got[i]}, want ${want[i]} (got [${got}], want [${want}])`);
    }
  }
  assert.equal(got.length, want.length, `${what}: length`);
}

function assertStatesEqual(got: SamplerStateRef, want: SamplerStateRef, what: string): void {
  assertIntsEqual(got.tokens, want.tokens, `${what}: tokens`);
  assertIntsEqual(got.done, want.done, `${what}: done`);
  assertIntsEqual(got.lengths, want.lengths, `${what}: lengths`);
  assertClose(got.logprobs, want.logprobs, LP_TOL, `${what}: logprobs`);
  assertClose(got.sampledLogprobs, want.sampledLogprobs, LP_TOL, `${what}: sampledLogprobs`);
}

Deno.test("philox4x32 matches the Random123 known-answer vectors", () => {
  const kat: [number[], number[], number[]][] = [
    [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
    [[~0, ~0, ~0, ~0], [~0, ~0], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]],
    [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [
      0xd16cfe09,
      0x94fdcceb,
      0x5001e420,
      0x24126ea1,
    ]],
  ];
  for (const [ctr, key, want] of kat) assert.deepEqual(Array.from(philox4x32(ctr, key)), want);
});

Deno.test("mulhi32 is the exact high word; the WGSL exp2 table equals the TS one", () => {
  fc.assert(
    fc.property(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff }), (a, b) => {
      assert.equal(mulhi32(a, b), Number((BigInt(a) * BigInt(b)) >> 32n));
    }),
    { seed: 31, numRuns: 2000 },
  );
  const body = src.match(/const EXP2_Q31 = array<u32, 64>\(([^)]*)\)/);
  assert.ok(body, "shaders/sampling.wgsl: EXP2_Q31 table not found");
  const wgsl = body[1].split(",").map((s) => s.trim()).filter((s) => s).map((s) => parseInt(s, 16));
  assert.deepEqual(wgsl, EXP2_Q31);
});

Deno.test("sampleWeight is 2^34·2^(−n/2^20) within 1 + 1e-8 relative, monotone, 2^34 at the max", () => {
  assert.equal(sampleWeight(1.5, 1.5, samplingScale(0.7)), 2 ** 34);
  assert.equal(sampleWeight(-30, 0, samplingScale(1)), 0); // 30 nats below the max: beyond 2^-34
  fc.assert(
    fc.property(
      fc.float({ min: -40, max: 0, noNaN: true }),
      fc.float({ min: -40, max: 0, noNaN: true }),
      fc.constantFrom(0, 3.5, -2),
      fc.constantFrom(0.7, 1, 1.3),
      (a, b, m, T) => {
        const s = samplingScale(T);
        const x = Math.fround(m + a);
        const y = Math.fround(Math.fround(m - x) * s);
        const q = sampleWeight(x, m, s);
        const exact = y < 34 * 2 ** 20 ? 2 ** 34 * 2 ** (-Math.trunc(y) / 2 ** 20) : 0;
        assert.ok(
          Number.isInteger(q) && Math.abs(q - exact) <= 1 + 1e-8 * exact,
          `x ${x} m ${m}: ${q} vs ${exact}`,
        );
        const x2 = Math.fround(m + b);
        if (x2 >= x) assert.ok(sampleWeight(x2, m, s) >= q, `not monotone at ${x}, ${x2}`);
      },
    ),
    { seed: 32, numRuns: 3000 },
  );
});

Deno.test("orderKey orders like the floats (−0 just below +0)", () => {
  assert.ok(orderKey(-0) < orderKey(0) && orderKey(-1e-45) < orderKey(-0) && orderKey(0) < orderKey(1e-45));
  fc.assert(
    fc.property(fc.float({ noNaN: true }), fc.float({ noNaN: true }), (a, b) => {
      if (a === 0 && b === 0) return;
      assert.equal(Math.sign(orderKey(a) - orderKey(b)), Math.sign(a - b), `${a} vs ${b}`);
    }),
    { seed: 33, numRuns: 3000 },
  );
});

Deno.test("sampleTokens equals the reference exactly on token ids over random shapes, settings", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        B: fc.constantFrom(1, 3, 7),
        V: fc.constantFrom(1, 2, 17, 1000, 50021),
        temperature: fc.constantFrom(0, 0.7, 1.3),
        topK: fc.constantFrom(0, 1, 5),
        topP: fc.constantFrom(1, 0.9, 0.5),
        mode: fc.constantFrom<Mode>("normal1", "normal4", "ties", "peaked"),
        data: fc.nat(),
        seed: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        maxNew: fc.integer({ min: 1, max: 4 }),
        step: fc.nat({ max: 3 }),
      }),
      async (c) => {
        const step = c.step % c.maxNew;
        const rnd = mulberry32(c.data ^ 0x5bd1e995);
        const settings: Settings = {
          step,
          temperature: c.temperature,
          topK: c.topK,
          topP: c.topP,
          seed: c.seed,
          seeds: Array.from({ length: c.B }, () => Math.floor(rnd() * 2 ** 32)),
          stopIds: [Math.floor(rnd() * c.V), 0],
          padId: -3,
        };
        const logits = makeLogits(c.B, c.V, c.mode, c.data);
        const init = freshState(c.B, c.maxNew, c.data + 1);
        const steps = [{ logits, settings }];
        assertStatesEqual(
          await runGpu(gpu, init, steps, c.V),
          runRef(init, steps, c.V),
          JSON.stringify(c, (_, v) => typeof v === "bigint" ? `${v}` : v),
        );
      },
    ),
    { seed: 20250131, numRuns: 40 },
  );
});

Deno.test("token ids equal the reference with 8, 64 and 256 threads per row", async () => {
  // The default size depends on the vocabulary and the adapter (8 on a CPU adapter up to 4096 logits): every
  // size runs here on vocabularies below, at and above one thread's share.
  for (const [V, mode] of [[5, "ties"], [1000, "normal1"], [4096, "peaked"]] as [number, Mode][]) {
    for (const temperature of [0, 1]) {
      const rnd = mulberry32(V + 7);
      const settings: Settings = {
        step: 1,
        temperature,
        topK: 0,
        topP: 0.9,
        seed: 12345n,
        seeds: Array.from({ length: 5 }, () => Math.floor(rnd() * 2 ** 32)),
        stopIds: [3],
        padId: -1,
      };
      const init = freshState(5, 3, V);
      const steps = [{ logits: makeLogits(5, V, mode, V), settings }];
      const want = runRef(init, steps, V);
      for (const wg of [8, 64, 256]) {
        assertStatesEqual(await runGpu(gpu, init, steps, V, wg), want, `V ${V} T ${temperature} WG ${wg}`);
      }
    }
  }
});

Deno.test("greedy is the argmax (ties → lowest id) with raw log-softmax log-probs, any top-k/p", async () => {
  const B = 3, V = 1000;
  const x = makeLogits(B, V, "normal1", 7);
  x[0 * V + 500] = x[0 * V + 10] = 9; // tied max: id 10
  x[1 * V + 999] = x[1 * V + 0] = 9; // tied max: id 0
  const argmax: number[] = [], lsm: number[] = [];
  for (let b = 0; b < B; b++) {
    const row = x.subarray(b * V, (b + 1) * V);
    let best = 0;
    for (let i = 1; i < V; i++) if (row[i] > row[best]) best = i;
    let s = 0;
    for (const v of row) s += Math.exp(v - row[best]);
    argmax.push(best);
    lsm.push(-Math.log(s));
  }
  assert.deepEqual(argmax.slice(0, 2), [10, 0]);
  for (const [temperature, topK, topP] of [[0, 0, 1], [0, 5, 0.5], [1.3, 1, 1], [0.7, 0, 1e-9]]) {
    const init = freshState(B, 1, 0);
    init.done.fill(0);
    const settings = { step: 0, temperature, topK, topP, seeds: [1, 2, 3], padId: 0 };
    const got = await runGpu(gpu, init, [{ logits: x, settings }], V);
    assertIntsEqual(got.tokens, argmax, `T ${temperature} k ${topK} p ${topP}`);
    assertClose(got.logprobs, lsm, LP_TOL, "greedy logprobs vs log-softmax");
    assert.deepEqual(Array.from(got.sampledLogprobs), [0, 0, 0], "a point mass has log-prob 0");
  }
});

Deno.test("stop ids, done flags and lengths over several steps in one batch and one readback", async () => {
  const B = 4, V = 17, maxNew = 6, pad = 16, stopIds = [3, 11];
  // greedy plan: row 0 stops at step 1, row 1 at step 0, row 2 at the last step, row 3 never
  const plan = [[5, 3, 7, 7, 7, 7], [11, 2, 2, 2, 2, 2], [1, 2, 4, 5, 6, 11], [0, 1, 2, 4, 5, 6]];
  const greedySteps = plan[0].map((_, s) => {
    const x = makeLogits(B, V, "normal1", 100 + s);
    for (let b = 0; b < B; b++) x[b * V + plan[b][s]] += 10;
    return { logits: x, settings: { step: s, temperature: 0, seeds: [0, 1, 2, 3], stopIds, padId: pad } };
  });
  const init = freshState(B, maxNew, 5);
  init.done.fill(0);
  init.lengths.fill(0);
  const got = await runGpu(gpu, init, greedySteps, V);
  const want = plan.map((row) => {
    const stop = row.findIndex((t) => stopIds.includes(t));
    return row.map((t, s) => (stop >= 0 && s > stop ? pad : t));
  });
  assertIntsEqual(got.tokens, want.flat(), "greedy tokens");
  assertIntsEqual(got.done, [1, 1, 1, 0], "done");
  assertIntsEqual(got.lengths, [2, 1, 6, 6], "lengths");
  assertStatesEqual(got, runRef(init, greedySteps, V), "greedy steps");

  // sampled steps: stop id 3 is favoured, so rows finish at different steps
  const B2 = 8;
  const sampledSteps = plan[0].map((_, s) => {
    const x = makeLogits(B2, V, "normal1", 200 + s);
    for (let b = 0; b < B2; b++) x[b * V + 3] += 0.5;
    const seeds = Array.from({ length: B2 }, (_, b) => 1000 + b);
    return {
      logits: x,
      settings: { step: s, temperature: 0.9, topP: 0.95, seed: 77, seeds, stopIds, padId: pad },
    };
  });
  const init2 = freshState(B2, maxNew, 6);
  init2.done.fill(0);
  const got2 = await runGpu(gpu, init2, sampledSteps, V);
  assertStatesEqual(got2, runRef(init2, sampledSteps, V), "sampled steps");
  const stopped = Array.from(got2.done).filter((d) => d === 1).length;
  assert.ok(
    stopped > 0 && stopped < B2,
    `expected some rows to stop and some to run on, got done [${got2.done}]`,
  );
});

Deno.test("a row samples the same alone as inside a batch (per-row seeds)", async () => {
  const B = 5, V = 1000, row = 3;
  const x = makeLogits(B, V, "normal1", 9);
  const seeds = [11, 22, 33, 44, 55];
  const settings = { step: 2, temperature: 1.3, topP: 0.9, seed: 5n, seeds, padId: 0 };
  const init = freshState(B, 4, 1);
  init.done.fill(0);
  const all = await runGpu(gpu, init, [{ logits: x, settings }], V);
  const alone = await runGpu(gpu, freshState(1, 4, 1), [{
    logits: x.slice(row * V, (row + 1) * V),
    settings: { ...settings, seeds: [seeds[row]] },
  }], V);
  assert.equal(alone.tokens[2], all.tokens[row * 4 + 2]);
  assert.equal(alone.logprobs[2], all.logprobs[row * 4 + 2]);
});

/** Independent f64 probabilities of the sampling distribution (softmax at T, top-k, top-p). */
function expectedProbs(x: number[], T: number, topK: number, topP: number): number[] {
  const order = x.map((_, i) => i).sort((a, b) => x[b] - x[a] || a - b);
  const keep = order.slice(0, topK > 0 ? topK : x.length);
  let w = keep.map((i) => Math.exp((x[i] - x[order[0]]) / T));
  let z = w.reduce((a, b) => a + b);
  let cum = 0, n = 0;
  while (n < w.length && cum < topP * z) cum += w[n++];
  w = w.slice(0, n);
  z = w.reduce((a, b) => a + b);
  const p = new Array(x.length).fill(0);
  keep.slice(0, n).forEach((i, j) => (p[i] = w[j] / z));
  return p;
}

Deno.test("20k draws from a V = 5 distribution match it (max |Δ| < 0.02, χ² at p = 0.001)", async () => {
  const x = [1.2, 0.3, -0.5, 2.0, 0.0], V = 5, N = 20000;
  const chi2Critical = [0, 10.83, 13.82, 16.27, 18.47]; // df 1..4 at p = 0.001
  const logits = new Float32Array(N * V);
  for (let b = 0; b < N; b++) logits.set(x, b * V);
  for (const [temperature, topK, topP] of [[1, 0, 1], [0.7, 4, 0.95]]) {
    const settings = { step: 0, temperature, topK, topP, seed: 2025, padId: 0 };
    const seeds = Array.from({ length: N }, (_, b) => b);
    const init = freshState(N, 1, 0);
    init.done.fill(0);
    const steps = [{ logits, settings: { ...settings, seeds } }];
    const got = await runGpu(gpu, init, steps, V);
    assertIntsEqual(got.tokens, runRef(init, steps, V).tokens, "draws vs reference");
    const p = expectedProbs(x, temperature, topK, topP);
    const counts = new Array(V).fill(0);
    for (const t of got.tokens) counts[t]++;
    let chi2 = 0, maxDiff = 0, df = -1;
    p.forEach((pi, i) => {
      maxDiff = Math.max(maxDiff, Math.abs(counts[i] / N - pi));
      if (pi > 0) [chi2, df] = [chi2 + (counts[i] - N * pi) ** 2 / (N * pi), df + 1];
      else assert.equal(counts[i], 0, `token ${i} is outside the kept set but was drawn ${counts[i]} times`);
    });
    const what = `T ${temperature} k ${topK} p ${topP}: freq [${counts.map((c) => c / N)}] vs [${p}]`;
    assert.ok(maxDiff < 0.02, `${what}: max |Δ| ${maxDiff}`);
    assert.ok(chi2 < chi2Critical[df], `${what}: χ² ${chi2} with ${df} df`);
  }
});

Deno.test("rows are sharded under a lowered storage binding limit", async () => {
  const small = await Gpu.create({ maxBindingSize: 512 }); // 2 rows of V = 64 per shard
  try {
    const B = 7, V = 64;
    const x = makeLogits(B, V, "normal4", 12);
    const settings = { step: 1, temperature: 0.7, topK: 5, seed: 3, seeds: [1, 2, 3, 4, 5, 6, 7], padId: -1 };
    const init = freshState(B, 2, 2);
    const steps = [{ logits: x, settings }];
    assertStatesEqual(await runGpu(small, init, steps, V), runRef(init, steps, V), "sharded");
  } finally {
    small.destroy();
  }
});

Deno.test("sampleTokens rejects bad shapes, dtypes and settings with clear errors", () => {
  const state = createSamplerState(gpu, { batch: 2, maxNew: 3 });
  const logits = upload(gpu, new Float32Array(2 * 5), { shape: [2, 5], label: "logits" });
  const seeds = upload(gpu, new Uint32Array(2), { label: "seeds" });
  const badSeeds = upload(gpu, new Int32Array(2), { label: "seeds_i32" });
  const batch = new Batch(gpu, "errors");
  const base = { step: 0, seeds, padId: 0 };
  const cases: [Partial<SampleOptions>, RegExp][] = [
    [{ step: 3 }, /invalid step "3": expected an integer in \[0, 2\]/],
    [{ topP: 0 }, /invalid topP "0"/],
    [{ temperature: -1 }, /invalid temperature "-1"/],
    [{ topK: 1.5 }, /invalid topK "1.5"/],
    [{ seeds: badSeeds }, /tensor "seeds_i32" has dtype i32, expected u32/],
    [{ seed: -1 }, /Invalid sampling seed "-1"/],
  ];
  for (const [opts, re] of cases) {
    assert.throws(() => sampleTokens(batch, state, logits, { ...base, ...opts }), re);
  }
  assert.throws(
    () => sampleTokens(batch, state, logits.reshape([10]), base),
    /tensor "logits" has shape \[10\], expected \(B, V\)/,
  );
  batch.abandon();
  releaseSamplerState(state);
  for (const t of [logits, seeds, badSeeds]) t.release();
});
