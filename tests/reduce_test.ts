import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch, runBatch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { readF32, upload } from "../core/gpu/io.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { reduceAll, type ReduceOp, reduceRows } from "../core/ops/reduce.ts";
import { reduceAllRef, reduceRowsRef } from "../core/ref/reduce_ref.ts";
import { assertClose, type Tolerance } from "./util/close.ts";
import { randomF32 } from "./util/random.ts";

const gpu = await Gpu.create();
const OPS: ReduceOp[] = ["sum", "max", "sumsq"];

/**
 * Tolerance of a reduction of `n` values bounded by `maxAbs` (f32 rounding errors of a tree sum grow like √n):
 * sums |Δ| ≤ 1e-5·√n·max|x|, sums of squares 1e-5·√n·max|x|², max exact.
 */
function tolerance(op: ReduceOp, n: number, maxAbs: number): Tolerance {
  if (op === "max") return { atol: 0, rtol: 0 };
  return { atol: 1e-5 * Math.sqrt(n) * (op === "sumsq" ? maxAbs * maxAbs : maxAbs), rtol: 1e-6 };
}

/** Row reductions of a (rows, cols) tensor with all three ops in one batch, checked against the f64 reference. */
async function checkRows(g: Gpu, rows: number, cols: number, scale: number, seed: number): Promise<void> {
  const data = randomF32(rows * cols, seed, scale);
  const x = upload(g, data, { shape: [rows, cols], label: "x" });
  const outs = OPS.map((op) => new Tensor(g, [rows], "f32", `rows.${op}`));
  const batch = new Batch(g, "reduce_rows");
  OPS.forEach((op, i) => reduceRows(batch, outs[i], x, { op }));
  const reads = outs.map((t) => batch.read(t));
  await batch.submit();
  const got = await Promise.all(reads);
  for (const t of [x, ...outs]) t.release();
  OPS.forEach((op, i) => {
    const tol = tolerance(op, cols, scale);
    assertClose(
      got[i],
      reduceRowsRef(data, { cols, op }),
      tol,
      `reduceRows ${op} of [${rows}, ${cols}] ±${scale}`,
    );
  });
}

/** Full reductions of `data` with all three ops in one batch. */
async function checkAll(g: Gpu, data: Float32Array, scale: number): Promise<void> {
  const x = upload(g, data, { label: "x" });
  const outs = OPS.map((op) => new Tensor(g, [1], "f32", `all.${op}`));
  const batch = new Batch(g, "reduce_all");
  OPS.forEach((op, i) => reduceAll(batch, outs[i], x, { op }));
  const reads = outs.map((t) => batch.read(t));
  await batch.submit();
  const got = await Promise.all(reads);
  for (const t of [x, ...outs]) t.release();
  OPS.forEach((op, i) => {
    const tol = tolerance(op, data.length, scale);
    assertClose(
      got[i],
      [reduceAllRef(data, { op })],
      tol,
      `reduceAll ${op} of ${data.length} values ±${scale}`,
    );
  });
}

const sizes = fc.oneof(
  fc.constantFrom(1, 2, 3, 31, 32, 33, 127, 255, 256, 257, 4093, 4096, 4097),
  fc.integer({ min: 1, max: 20_000 }),
);
const scales = fc.constantFrom(1, 80, 1e4);

Deno.test("reduceRows matches the f64 reference on ragged shapes (property)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(1, 2, 3, 7, 64, 300),
      sizes,
      scales,
      fc.integer(),
      (rows, cols, scale, seed) =>
        checkRows(gpu, rows, Math.min(cols, Math.ceil(200_000 / rows)), scale, seed),
    ),
    { seed: 4242, numRuns: 40 },
  );
});

Deno.test("reduceAll matches the f64 reference on ragged sizes (property)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(sizes, fc.constantFrom(4096 * 4096 / 64 + 1, 262_147, 1_000_003)),
      scales,
      fc.integer(),
      (n, scale, seed) => checkAll(gpu, randomF32(n, seed, scale), scale),
    ),
    { seed: 777, numRuns: 30 },
  );
});

Deno.test("reduceAll over millions of elements: three tree levels, exact where a running f32 sum stalls", async () => {
  // 2²⁴ + 43 ones: a sequential f32 sum stops growing at 2²⁴; the tree's partials are exact integers.
  const n = (1 << 24) + 43;
  const ones = new Float32Array(n).fill(1);
  const x = upload(gpu, ones, { label: "ones" });
  const s = new Tensor(gpu, [1], "f32", "s");
  await runBatch(gpu, "ones", (b) => reduceAll(b, s, x, { op: "sum" }));
  assert.equal((await readF32(s))[0], Math.fround(n));
  x.release();
  s.release();
  await checkAll(gpu, randomF32(3_000_017, 5, 80), 80);
  await checkRows(gpu, 3, 1_000_003, 80, 6);
});

Deno.test("reductions are deterministic: the same input gives bit-identical results", async () => {
  const x = upload(gpu, randomF32(500_009, 9, 1e3), { label: "x" });
  const outs = [0, 1].map((i) => new Tensor(gpu, [1], "f32", `s${i}`));
  const batch = new Batch(gpu, "determinism");
  for (const o of outs) reduceAll(batch, o, x, { op: "sum" });
  const reads = outs.map((o) => batch.read(o));
  await batch.submit();
  const [a, b] = await Promise.all(reads);
  assert.equal(a[0], b[0]);
  for (const t of [x, ...outs]) t.release();
});

Deno.test("reductions shard rows and partials over a lowered binding limit", async () => {
  const small = await Gpu.create({ maxBindingSize: 4096 });
  try {
    await checkRows(small, 301, 7, 80, 21); // 64-row shards, outputs through aligned views
    await checkRows(small, 5, 1000, 80, 22);
    await checkRows(small, 2000, 1, 80, 23); // single-column rows: output shards bound the shard size
    await checkAll(small, randomF32(100_003, 24, 80), 80); // chunks of 1024, 98 partials
    await checkAll(small, randomF32(2_000_003, 25, 1), 1); // partials themselves sharded
  } finally {
    small.destroy();
  }
});

Deno.test("reduction wrappers reject bad shapes, dtypes and empty tensors naming the kernel", () => {
  const batch = new Batch(gpu, "errors");
  const x = new Tensor(gpu, [4, 3], "f32", "x");
  try {
    assert.throws(
      () => reduceRows(batch, new Tensor(gpu, [3], "f32", "r"), x, { op: "sum" }),
      /reduce\.sum: tensor "r" has shape \[3\], expected \[4\]/,
    );
    assert.throws(
      () => reduceAll(batch, new Tensor(gpu, [1], "i32", "ri"), x, { op: "max" }),
      /reduce\.max: tensor "ri" has dtype i32, expected f32/,
    );
    assert.throws(
      () =>
        reduceAll(batch, new Tensor(gpu, [1], "f32", "e"), new Tensor(gpu, [0, 3], "f32", "empty"), {
          op: "sumsq",
        }),
      /reduce\.sumsq: tensor "empty" of shape \[0,3\] is empty/,
    );
    assert.throws(
      () => reduceAll(batch, new Tensor(gpu, [1], "f32", "m"), x, { op: "mean" as ReduceOp }),
      /Unknown reduction "mean": expected sum, max or sumsq/,
    );
  } finally {
    batch.abandon();
  }
});
