import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { add, axpy, mul, scale } from "../core/ops/elementwise.ts";
import { assertClose } from "./util/close.ts";
import { randomF32 } from "./util/random.ts";

const gpu = await Gpu.create();

// add, mul and scale are single IEEE operations: the GPU must return the correctly rounded f32 result, i.e.
// exactly Math.fround of the f64 result (inputs are normal numbers well away from overflow and underflow).
const EXACT = { atol: 0, rtol: 0 };

/**
 * axpy `out + α·a` may be evaluated with or without a fused multiply-add: allow one rounding of each term,
 * |Δ| ≤ 2⁻²³·(|out| + |α·a|) elementwise.
 */
function assertAxpy(
  got: Float32Array,
  out0: Float32Array,
  a: Float32Array,
  alpha: number,
  what: string,
): void {
  for (let i = 0; i < got.length; i++) {
    const want = out0[i] + alpha * a[i];
    const bound = 2 ** -23 * (Math.abs(out0[i]) + Math.abs(alpha * a[i]));
    if (!(Math.abs(got[i] - want) <= bound)) {
      throw new Error(
        `${what}: [${i}] got ${got[i]}, want ${want} (|Δ| ${Math.abs(got[i] - want)} > ${bound})`,
      );
    }
  }
}

/** Runs add, mul, scale and axpy on `n` elements in one batch and checks each one. */
async function checkAll(g: Gpu, n: number, magnitude: number, alpha: number, seed: number): Promise<void> {
  const a = randomF32(n, seed, magnitude),
    b = randomF32(n, seed + 1, magnitude),
    o = randomF32(n, seed + 2, 1);
  const alpha32 = Math.fround(alpha); // the kernel's uniform is f32
  const ta = upload(g, a, { label: "a" }),
    tb = upload(g, b, { label: "b" }),
    acc = upload(g, o, { label: "acc" });
  const outs = ["sum", "prod", "scaled"].map((l) => new Tensor(g, [n], "f32", l));
  const batch = new Batch(g, "elementwise_test");
  add(batch, outs[0], ta, tb);
  mul(batch, outs[1], ta, tb);
  scale(batch, outs[2], ta, { alpha });
  axpy(batch, acc, ta, { alpha });
  const reads = [...outs, acc].map((t) => batch.read(t));
  await batch.submit();
  const [sum, prod, scaled, axpyOut] = (await Promise.all(reads)) as Float32Array[];
  for (const t of [ta, tb, acc, ...outs]) t.release();
  const what = `n ${n} |x| ≤ ${magnitude} α ${alpha}`;
  assertClose(sum, a.map((v, i) => v + b[i]), EXACT, `add (${what})`);
  assertClose(prod, a.map((v, i) => v * b[i]), EXACT, `mul (${what})`);
  assertClose(scaled, a.map((v) => alpha32 * v), EXACT, `scale (${what})`);
  assertAxpy(axpyOut, o, a, alpha32, `axpy (${what})`);
}

Deno.test("elementwise add, mul, scale, axpy match f32 arithmetic on ragged sizes (property)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(fc.constantFrom(1, 2, 3, 255, 256, 257, 65_537), fc.integer({ min: 1, max: 100_000 })),
      fc.constantFrom(1e-3, 1, 1e4),
      fc.oneof(fc.constantFrom(0, 1, -1), fc.double({ min: -10, max: 10, noNaN: true })),
      fc.integer(),
      (n, magnitude, alpha, seed) => checkAll(gpu, n, magnitude, alpha, seed),
    ),
    { seed: 1234, numRuns: 40 },
  );
});

Deno.test("elementwise over more than 65535 workgroups uses a 2-D grid (2^24 + 259 elements)", async () => {
  await checkAll(gpu, (1 << 24) + 259, 10, 0.37, 77);
});

Deno.test("elementwise shards over a lowered binding limit", async () => {
  const small = await Gpu.create({ maxBindingSize: 4096 });
  try {
    await checkAll(small, 10_007, 1, -2.5, 3); // 40 KiB tensors in 1024-element shards
  } finally {
    small.destroy();
  }
});

Deno.test("elementwise rejects tensors of different sizes naming the kernel and tensor", () => {
  const batch = new Batch(gpu, "errors");
  try {
    const a = new Tensor(gpu, [10], "f32", "a");
    assert.throws(
      () => add(batch, new Tensor(gpu, [10], "f32", "o"), a, new Tensor(gpu, [9], "f32", "short")),
      /elementwise\.add: tensor "short" has 9 elements, expected 10/,
    );
    assert.throws(
      () => axpy(batch, new Tensor(gpu, [11], "f32", "acc"), a, { alpha: 1 }),
      /elementwise\.axpy: tensor "acc" has 11 elements, expected 10/,
    );
  } finally {
    batch.abandon();
  }
});
