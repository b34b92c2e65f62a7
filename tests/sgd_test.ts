import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch, runBatch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { readF32, upload } from "../core/gpu/io.ts";
import type { Tensor } from "../core/gpu/tensor.ts";
import { SGD } from "../core/optim/sgd.ts";
import { sgdStepRef } from "../core/ref/adamw_ref.ts";
import { randomF32 } from "./util/random.ts";

const gpu = await Gpu.create();

/**
 * Exact to f32 rounding: every element must equal one of the two IEEE-conforming evaluations of
 * `p − lr·g` with g = fl(fl(grad·gradScale)·1) — separately rounded `fl(p − fl(lr·g))` (the f32 reference) or
 * fused `fl(p − lr·g)` (a GPU contracting to an FMA; lr·g of two f32 values is exact in f64).
 */
function assertSgdExact(
  got: Float32Array,
  p0: Float32Array,
  grad: Float32Array,
  lr: number,
  gs: number,
  what: string,
) {
  const want = Float32Array.from(p0);
  sgdStepRef(want, grad, { lr, gradScale: gs, f32: true });
  const lr32 = Math.fround(lr), gs32 = Math.fround(gs);
  for (let i = 0; i < got.length; i++) {
    if (got[i] === want[i]) continue;
    const fused = Math.fround(p0[i] - lr32 * Math.fround(grad[i] * gs32));
    if (got[i] !== fused) {
      throw new Error(
        `${what}: [${i}] got ${got[i]}, want ${want[i]} (or fused ${fused}); p ${p0[i]}, g ${grad[i]}`,
      );
    }
  }
}

/** Steps SGD `steps` times on ragged tensors (fresh gradients each step) and checks every step exactly. */
async function checkSgd(g: Gpu, sizes: number[], lr: number, gradScale: number, seed: number, steps = 3) {
  const names = sizes.map((_, i) => `p${i}`);
  const params = new Map(names.map((n, i) => [n, upload(g, randomF32(sizes[i], seed + i, 1), { label: n })]));
  const grads = new Map<string, Tensor>(names.map((n, i) => [n, upload(g, new Float32Array(sizes[i]))]));
  const opt = new SGD(g, params);
  let cur = await Promise.all(names.map((n) => readF32(params.get(n)!)));
  for (let s = 0; s < steps; s++) {
    const data = sizes.map((n, i) => randomF32(n, seed * 13 + s * 5 + i, 3));
    const batch = new Batch(g, "sgd.step");
    names.forEach((n, i) => batch.write(grads.get(n)!, data[i]));
    opt.step(batch, grads, { lr, gradScale });
    const reads = names.map((n) => batch.read(params.get(n)!));
    await batch.submit();
    const got = (await Promise.all(reads)) as Float32Array[];
    names.forEach((n, i) => assertSgdExact(got[i], cur[i], data[i], lr, gradScale, `SGD step ${s + 1} ${n}`));
    cur = got;
  }
  assert.equal(opt.stepCount, steps);
  for (const t of [...params.values(), ...grads.values()]) t.release();
}

const size = fc.oneof(fc.constantFrom(1, 2, 3, 7, 13, 257, 1021, 4099), fc.integer({ min: 1, max: 5000 }));

Deno.test("SGD is p − lr·g exactly to f32 rounding on ragged tensors", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(size, { minLength: 1, maxLength: 4 }),
      fc.double({ min: 1e-5, max: 10, noNaN: true }),
      fc.constantFrom(1, 0.5, 1 / 3, 1 / 8),
      fc.integer({ min: 1, max: 1e6 }),
      (sizes, lr, gs, seed) => checkSgd(gpu, sizes, lr, gs, seed),
    ),
    { seed: 4242, numRuns: 15 },
  );
});

Deno.test("SGD with gradScale 1 and no clipping is the plain rule p − lr·g", async () => {
  const p0 = randomF32(1000, 9, 1), g0 = randomF32(1000, 10, 1), lr = 0.037;
  const p = upload(gpu, p0, { label: "p" }), g = upload(gpu, g0, { label: "g" });
  await runBatch(gpu, "sgd", (b) => new SGD(gpu, new Map([["p", p]])).step(b, new Map([["p", g]]), { lr }));
  const got = await readF32(p);
  const lr32 = Math.fround(lr);
  for (let i = 0; i < got.length; i++) {
    const sep = Math.fround(p0[i] - Math.fround(lr32 * g0[i])), fused = Math.fround(p0[i] - lr32 * g0[i]);
    assert.ok(got[i] === sep || got[i] === fused, `[${i}] got ${got[i]}, want ${sep}`);
  }
});

Deno.test("SGD shards tensors larger than the storage-binding limit", async () => {
  const small = await Gpu.create({ maxBindingSize: 4096 }); // 1024 elements per shard
  try {
    await checkSgd(small, [5003, 1, 1024, 2049], 0.1, 0.25, 31, 2);
  } finally {
    small.destroy();
  }
});

Deno.test("SGD rejects bad steps with errors naming the problem", () => {
  const w = upload(gpu, new Float32Array(4), { shape: [2, 2], label: "w" });
  const opt = new SGD(gpu, new Map([["w", w]]));
  const batch = new Batch(gpu, "errors");
  assert.throws(() => opt.step(batch, new Map(), { lr: 1 }), /SGD: gradient of parameter "w" is missing/);
  assert.throws(() => opt.step(batch, new Map([["w", w]]), { lr: NaN }), /SGD: learning rate .* got "NaN"/);
  assert.throws(() => (opt.stepCount = -1), /SGD: step count must be an integer ≥ 0, got "-1"/);
  assert.equal(opt.stepCount, 0);
  batch.abandon();
});
