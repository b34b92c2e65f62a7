import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch, runBatch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { readF32, upload } from "../core/gpu/io.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { AdamW } from "../core/optim/adamw.ts";
import { GradClip, gradNorm } from "../core/optim/clip.ts";
import { SGD } from "../core/optim/sgd.ts";
import { adamwStepRef, clipCoefRef, gradNormRef, sgdStepRef } from "../core/ref/adamw_ref.ts";
import { assertClose } from "./util/close.ts";
import { randomF32 } from "./util/random.ts";

const gpu = await Gpu.create();

// Total norm vs the float64 reference: f32 tree sums of ≤ 10⁵ squares, rtol 1e-5.
const NORM = { rtol: 1e-5, atol: 0 };
// Updates vs the f32-emulating reference fed the coefficient the GPU used (see adamw_test.ts for the slack).
const TIGHT = { rtol: 1e-6, atol: 1e-7 };

/** Random gradients of `sizes` (magnitudes vary by tensor) as host arrays and GPU tensors by name. */
function makeGrads(g: Gpu, sizes: number[], seed: number) {
  const data = sizes.map((n, i) => randomF32(n, seed + i, 10 ** ((i % 3) - 1)));
  const tensors = new Map(data.map((d, i) => [`g${i}`, upload(g, d, { label: `g${i}` })]));
  return { data, tensors };
}

/** Records the norm of `sizes`-shaped gradients with gradScale `gs` and checks norm and coef. */
async function checkNorm(g: Gpu, sizes: number[], gs: number, maxNorm: number, seed: number): Promise<void> {
  const { data, tensors } = makeGrads(g, sizes, seed);
  const stats = new Tensor(g, [2], "f32", "stats");
  const batch = new Batch(g, "norm");
  gradNorm(batch, stats, tensors.values(), { gradScale: gs, maxNorm });
  const read = batch.read(stats);
  await batch.submit();
  const [norm, coef] = await read;
  const want = gradNormRef(data, { gradScale: gs });
  const what = `norm of [${sizes}] gradScale ${gs} maxNorm ${maxNorm}`;
  assertClose([norm], [want], NORM, what);
  assertClose([coef], [clipCoefRef(want, { maxNorm })], NORM, `${what}: coef`);
  assert.ok(coef <= 1, `${what}: coef ${coef} > 1`);
  for (const t of [stats, ...tensors.values()]) t.release();
}

const size = fc.oneof(
  fc.constantFrom(1, 2, 3, 7, 4095, 4096, 4097, 12289),
  fc.integer({ min: 1, max: 20000 }),
);

Deno.test("global gradient norm equals the float64 reference on ragged tensors", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(size, { minLength: 1, maxLength: 6 }),
      fc.constantFrom(1, 0.5, 1 / 3),
      fc.constantFrom(Infinity, 0.5, 1, 1e6),
      fc.integer({ min: 1, max: 1e6 }),
      (sizes, gs, maxNorm, seed) => checkNorm(gpu, sizes, gs, maxNorm, seed),
    ),
    { seed: 1234, numRuns: 20 },
  );
});

Deno.test("global gradient norm over a 300k-element tensor and under a lowered binding limit", async () => {
  await checkNorm(gpu, [300_007, 1, 999], 1, 1, 5);
  const small = await Gpu.create({ maxBindingSize: 4096 }); // 1024-element chunks, several dispatches per tensor
  try {
    await checkNorm(small, [5003, 1, 70_001], 0.25, 2, 6);
  } finally {
    small.destroy();
  }
});

Deno.test("global gradient norm is deterministic and read lazily", async () => {
  const { tensors } = makeGrads(gpu, [10_000, 37, 1], 7);
  const clip = new GradClip(gpu, { maxNorm: 1 });
  const batch = new Batch(gpu, "twice");
  clip.record(batch, tensors);
  const first = clip.read(batch);
  clip.record(batch, tensors);
  const second = clip.read(batch);
  await batch.submit();
  const [a, b] = [await first, await second];
  assert.equal(a.norm, b.norm, "same gradients give the bitwise same norm");
  assert.deepEqual(await clip.read(), b, "a later readback sees the last recorded stats");
  const empty = new Tensor(gpu, [2], "f32", "empty");
  await runBatch(gpu, "empty", (bt) => gradNorm(bt, empty, [], { maxNorm: 1 }));
  assert.deepEqual([...await readF32(empty)], [0, 1], "no gradients: norm 0, coef 1");
});

/** Runs 2 steps of `make`'s optimiser with clipping at `maxNorm`; returns params, stats and references. */
async function clippedRun(kind: "sgd" | "adamw", maxNorm: number | undefined, gs: number) {
  const sizes = [3001, 17, 1];
  const init = sizes.map((n, i) => randomF32(n, 100 + i, 1));
  const params = new Map(
    init.map((d, i) => [`p${i}`, upload(gpu, d, { shape: i === 0 ? [3001, 1] : [d.length] })]),
  );
  const opt = kind === "sgd" ? new SGD(gpu, params) : new AdamW(gpu, params, { weightDecay: 0.1 });
  const clip = maxNorm === undefined ? undefined : new GradClip(gpu, { maxNorm });
  const ref = init.map((p) => ({
    param: Float32Array.from(p),
    m: new Float32Array(p.length),
    v: new Float32Array(p.length),
  }));
  const stats = [];
  for (let step = 1; step <= 2; step++) {
    const { data, tensors } = makeGrads(gpu, sizes, step * 10);
    const grads = new Map([...tensors.values()].map((t, i) => [`p${i}`, i === 0 ? t.reshape([3001, 1]) : t]));
    const batch = new Batch(gpu, "clipped");
    opt.step(batch, grads, { lr: 0.05, gradScale: gs, clip });
    const s = clip?.read(batch);
    await batch.submit();
    const st = s ? await s : { norm: gradNormRef(data, { gradScale: gs }), coef: 1 };
    stats.push({ ...st, want: gradNormRef(data, { gradScale: gs }) });
    data.forEach((g, i) => {
      const o = { lr: 0.05, gradScale: gs, clipCoef: st.coef, f32: true };
      if (kind === "sgd") sgdStepRef(ref[i].param, g, o);
      else {
        const wd = i === 0 ? 0.1 : 0;
        adamwStepRef(ref[i], g, { ...o, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: wd, step });
      }
    });
    for (const t of tensors.values()) t.release();
  }
  const got = await Promise.all([...params.values()].map((t) => readF32(t)));
  const state = kind === "adamw" ? (opt as AdamW).stateTensors() : new Map<string, Tensor>();
  const m = await Promise.all(
    [...params.keys()].map((n) => state.get(`exp_avg.${n}`)).filter((t) => t).map((t) => readF32(t!)),
  );
  return { got, m, ref, stats };
}

Deno.test("clipped SGD and AdamW updates equal the reference with the clip coefficient", async () => {
  for (const kind of ["sgd", "adamw"] as const) {
    const { got, m, ref, stats } = await clippedRun(kind, 1, 0.5);
    for (const { norm, coef, want } of stats) {
      assertClose([norm], [want], NORM, `${kind} norm`);
      assertClose([coef], [clipCoefRef(want, { maxNorm: 1 })], NORM, `${kind} coef`);
      assert.ok(coef < 0.5, `${kind}: coef ${coef} should clip (norm ${norm})`);
    }
    got.forEach((p, i) => assertClose(p, ref[i].param, TIGHT, `${kind} clipped param ${i}`));
    m.forEach((mi, i) => assertClose(mi, ref[i].m, TIGHT, `${kind} clipped exp_avg ${i}`));
  }
});

Deno.test("no clipping below maxNorm: coef is 1 and the update is bitwise the unclipped one", async () => {
  for (const kind of ["sgd", "adamw"] as const) {
    const clipped = await clippedRun(kind, 1e9, 1 / 3);
    const plain = await clippedRun(kind, undefined, 1 / 3);
    for (const { coef } of clipped.stats) assert.equal(coef, 1, `${kind}: coef below maxNorm`);
    clipped.got.forEach((p, i) => assert.deepEqual(p, plain.got[i], `${kind} param ${i}`));
  }
});

Deno.test("gradient clipping rejects bad options with errors naming the problem", () => {
  assert.throws(() => new GradClip(gpu, { maxNorm: 0 }), /maxNorm must be > 0, got "0"/);
  const stats = new Tensor(gpu, [3], "f32", "bad_stats");
  const batch = new Batch(gpu, "errors");
  assert.throws(() => gradNorm(batch, stats, []), /tensor "bad_stats" has shape \[3\], expected \[2\]/);
  assert.throws(() => gradNorm(batch, stats, [], { gradScale: -1 }), /gradScale .* got "-1"/);
  batch.abandon();
  stats.release();
});
