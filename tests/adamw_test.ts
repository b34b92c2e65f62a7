import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch, runBatch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { readF32, upload } from "../core/gpu/io.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { AdamW, zeroGrads } from "../core/optim/adamw.ts";
import { adamwStepRef } from "../core/ref/adamw_ref.ts";
import { assertClose } from "./util/close.ts";
import { randomF32 } from "./util/random.ts";

const gpu = await Gpu.create();

// Against the f32-emulating reference (same operation order, every result rounded to f32): rtol 1e-6, atol 1e-7.
// On lavapipe the kernel is bitwise equal to it; the slack covers GPUs that fuse a multiply-add or whose sqrt and
// divide are a few ulp off (≤ ~1 ulp of p per step over 5 steps, |g| ≤ 2, lr ≤ 0.1).
const TIGHT = { rtol: 1e-6, atol: 1e-7 };
// Against float64 math: f32 rounding of p, m, v over 5 steps (m cancels towards 0, hence the atol).
const LOOSE = { rtol: 1e-4, atol: 1e-6 };
const STEPS = 5;

interface Hyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  gradScale: number;
}

/**
 * Runs {@linkcode STEPS} AdamW steps on the GPU with fresh random gradients per step (one batch per step, the
 * gradients written in it) and the same steps with the f32-emulating and float64 references; compares p, m, v.
 */
async function checkAdamW(g: Gpu, shapes: number[][], h: Hyper, seed: number): Promise<void> {
  const names = shapes.map((s, i) => `t${i}.${s.length >= 2 ? "weight" : "bias"}`);
  const init = shapes.map((s, i) => randomF32(s.reduce((a, b) => a * b, 1), seed + i, 1));
  const params = new Map(names.map((n, i) => [n, upload(g, init[i], { shape: shapes[i], label: n })]));
  const grads = new Map(names.map((n, i) => [n, new Tensor(g, shapes[i], "f32", `grad.${n}`)]));
  const opt = new AdamW(g, params, { betas: [h.beta1, h.beta2], eps: h.eps, weightDecay: h.weightDecay });
  const f32 = init.map((p) => ({
    param: Float32Array.from(p),
    m: new Float32Array(p.length),
    v: new Float32Array(p.length),
  }));
  const f64 = init.map((p) => ({
    param: Float64Array.from(p),
    m: new Float64Array(p.length),
    v: new Float64Array(p.length),
  }));
  for (let step = 1; step <= STEPS; step++) {
    const data = init.map((p, i) => randomF32(p.length, seed * 31 + step * 7 + i, 2 / (i + 1)));
    await runBatch(g, "adamw.step", (batch) => {
      names.forEach((n, i) => batch.write(grads.get(n)!, data[i]));
      opt.step(batch, grads, { lr: h.lr, gradScale: h.gradScale });
    });
    names.forEach((n, i) => {
      const o = { ...h, step, weightDecay: opt.decayed.has(n) ? h.weightDecay : 0 };
      adamwStepRef(f32[i], data[i], { ...o, f32: true });
      adamwStepRef(f64[i], data[i], o);
    });
  }
  assert.equal(opt.stepCount, STEPS);
  const state = opt.stateTensors();
  const batch = new Batch(g, "adamw.read");
  const reads = names.map((n) =>
    [params.get(n)!, state.get(`exp_avg.${n}`)!, state.get(`exp_avg_sq.${n}`)!].map((t) => batch.read(t))
  );
  await batch.submit();
  for (let i = 0; i < names.length; i++) {
    const [p, m, v] = await Promise.all(reads[i]);
    const what = `AdamW ${names[i]} [${shapes[i]}] ${JSON.stringify(h)}`;
    assertClose(p, f32[i].param, TIGHT, `${what} param vs f32 reference`);
    assertClose(m, f32[i].m, TIGHT, `${what} exp_avg vs f32 reference`);
    assertClose(v, f32[i].v, TIGHT, `${what} exp_avg_sq vs f32 reference`);
    assertClose(p, f64[i].param, LOOSE, `${what} param vs f64 reference`);
    assertClose(m, f64[i].m, LOOSE, `${what} exp_avg vs f64 reference`);
    assertClose(v, f64[i].v, LOOSE, `${what} exp_avg_sq vs f64 reference`);
  }
  opt.release();
  for (const t of [...params.values(), ...grads.values()]) t.release();
}

const dim = fc.oneof(
  fc.constantFrom(1, 2, 3, 5, 7, 13, 31, 61, 257, 1021),
  fc.integer({ min: 1, max: 3000 }),
);
const shape = fc.oneof(
  dim.map((n) => [n]),
  fc.tuple(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 70 })).map(([r, c]) => [r, c]),
);
const hyper: fc.Arbitrary<Hyper> = fc.record({
  lr: fc.double({ min: 1e-4, max: 0.1, noNaN: true }),
  beta1: fc.constantFrom(0, 0.5, 0.9, 0.95),
  beta2: fc.constantFrom(0.9, 0.95, 0.999, 0.9999),
  eps: fc.constantFrom(1e-8, 1e-6, 1e-3),
  weightDecay: fc.constantFrom(0, 0.01, 0.1, 0.5),
  gradScale: fc.constantFrom(1, 0.5, 0.25, 1 / 3),
});

Deno.test("AdamW matches the f32-emulating and float64 references over 5 steps on ragged tensors", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(shape, { minLength: 1, maxLength: 4 }),
      hyper,
      fc.integer({ min: 1, max: 1e6 }),
      (shapes, h, seed) => checkAdamW(gpu, shapes, h, seed),
    ),
    { seed: 5005, numRuns: 12 },
  );
});

Deno.test("AdamW shards tensors larger than the storage-binding limit", async () => {
  const small = await Gpu.create({ maxBindingSize: 4096 }); // 1024 elements per shard
  try {
    const h = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, gradScale: 0.5 };
    await checkAdamW(small, [[5003], [3, 1031], [1], [37, 29]], h, 77);
  } finally {
    small.destroy();
  }
});

Deno.test("AdamW decays tensors of at least 2 dimensions by default, or as the predicate says", async () => {
  const p2 = randomF32(6, 1, 1), p1 = randomF32(3, 2, 1);
  const make = () =>
    new Map([
      ["w", upload(gpu, p2, { shape: [2, 3], label: "w" })],
      ["b", upload(gpu, p1, { shape: [3], label: "b" })],
    ]);
  const zerosLike = (params: Map<string, Tensor>) =>
    new Map([...params].map(([n, t]) => [n, upload(gpu, new Float32Array(t.size), { shape: t.shape })]));
  const lr = 0.1, wd = 0.3, decay = Math.fround(1 - lr * wd);
  for (const [predicate, decayed] of [[undefined, ["w"]], [(n: string) => n === "b", ["b"]]] as const) {
    const params = make();
    const opt = new AdamW(gpu, params, { weightDecay: wd, decay: predicate });
    assert.deepEqual([...opt.decayed], decayed);
    // With zero gradients m = v = 0 and the Adam term is 0 / (0 + ε) = 0: only the decay p·(1 − lr·wd) moves p.
    await runBatch(gpu, "decay", (b) => opt.step(b, zerosLike(params), { lr }));
    for (const [name, init] of [["w", p2], ["b", p1]] as const) {
      const want = decayed.includes(name as never) ? init.map((x) => Math.fround(x * decay)) : init;
      assert.deepEqual(await readF32(params.get(name)!), want, `parameter "${name}"`);
    }
  }
});

Deno.test("zeroGrads clears every gradient for the next accumulation window", async () => {
  const grads = new Map([["a", upload(gpu, randomF32(70, 3, 1))], ["b", upload(gpu, randomF32(1, 4, 1))]]);
  await runBatch(gpu, "zero", (b) => zeroGrads(b, grads));
  for (const g of grads.values()) assert.ok((await readF32(g)).every((x) => x === 0), `tensor "${g.label}"`);
});

Deno.test("AdamW rejects bad options and gradients with errors naming the problem", () => {
  const params = new Map([["w", upload(gpu, randomF32(6, 5, 1), { shape: [2, 3], label: "w" })]]);
  assert.throws(() => new AdamW(gpu, new Map()), /AdamW: no parameters to optimise/);
  assert.throws(() => new AdamW(gpu, params, { betas: [1, 0.9] }), /beta1 must be in \[0, 1\), got "1"/);
  assert.throws(() => new AdamW(gpu, params, { eps: -1 }), /eps must be finite and ≥ 0, got "-1"/);
  assert.throws(
    () => new AdamW(gpu, new Map([...params, ["lm_head.weight", params.get("w")!]])),
    /parameters "w" and "lm_head.weight" share one buffer/,
  );
  const opt = new AdamW(gpu, params);
  const batch = new Batch(gpu, "errors");
  const good = upload(gpu, new Float32Array(6), { shape: [2, 3] });
  assert.throws(() => opt.step(batch, new Map(), { lr: 1 }), /gradient of parameter "w" is missing/);
  assert.throws(
    () => opt.step(batch, new Map([["w", good.reshape([6])]]), { lr: 1 }),
    /gradient of "w": tensor ".*" has shape \[6\], expected \[2,3\]/,
  );
  assert.throws(
    () => opt.step(batch, new Map([["w", good], ["x", good]]), { lr: 1 }),
    /gradient "x" has no parameter/,
  );
  assert.throws(
    () => opt.step(batch, new Map([["w", good]]), { lr: -1 }),
    /learning rate must be .* got "-1"/,
  );
  assert.throws(
    () => opt.step(batch, new Map([["w", good]]), { lr: 1, gradScale: 0 }),
    /gradScale .* got "0"/,
  );
  assert.equal(opt.stepCount, 0, "a rejected step does not count");
  batch.abandon();
});
