import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload, zeros } from "../core/gpu/io.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { checkEmbeddingStatus, embedding, embeddingBackward } from "../core/ops/embedding.ts";
import { embeddingBackwardRef, embeddingRef, outOfRangeRef } from "../core/ref/embedding_ref.ts";
import { assertClose } from "./util/close.ts";
import { randomF32 } from "./util/random.ts";

const gpu = await Gpu.create();

/**
 * The backward in f32 arithmetic and the kernel's order: per (row, column), sum dOut over the row's tokens in
 * token order, then add the sum to dTable once. The GPU result must equal it bit for bit.
 */
function scatterF32(dTable: Float32Array, dOut: Float32Array, ids: Int32Array, C: number): Float32Array {
  const V = dTable.length / C;
  const acc = new Float32Array(dTable.length);
  const hit = new Uint8Array(V);
  ids.forEach((id, t) => {
    if (id < 0 || id >= V) return;
    hit[id] = 1;
    for (let c = 0; c < C; c++) acc[id * C + c] = Math.fround(acc[id * C + c] + dOut[t * C + c]);
  });
  return dTable.map((v, i) => (hit[Math.floor(i / C)] ? Math.fround(v + acc[i]) : v));
}

interface Case {
  V: number;
  C: number;
  ids: Int32Array;
  seed: number;
}

/** Forward (checked) and backward of one case in one batch; `exact` also demands bit-exact f32 backward sums. */
async function checkCase(
  g: Gpu,
  { V, C, ids, seed }: Case,
  exact: boolean,
  rtol = 1e-6,
): Promise<void> {
  const T = ids.length;
  const table = randomF32(V * C, seed),
    dTable0 = randomF32(V * C, seed + 1),
    dOut = randomF32(T * C, seed + 2);
  const tTable = upload(g, table, { shape: [V, C], label: "table" });
  const tIds = upload(g, ids, { shape: [T], label: "ids" });
  const tDTable = upload(g, dTable0, { shape: [V, C], label: "dTable" });
  const tDOut = upload(g, dOut, { shape: [T, C], label: "dOut" });
  const out = new Tensor(g, [T, C], "f32", "out");
  const status = zeros(g, [2], { dtype: "u32", label: "status" });
  const batch = new Batch(g, "embedding_test");
  embedding(batch, out, tTable, tIds, { status });
  embeddingBackward(batch, tDTable, tDOut, tIds);
  const reads = [batch.read(out), batch.read(status), batch.read(tDTable)];
  await batch.submit();
  const [gotOut, gotStatus, gotDTable] = await Promise.all(reads);
  for (const t of [tTable, tIds, tDTable, tDOut, out, status]) t.release();
  const what = `V ${V} C ${C} T ${T}`;
  assertClose(gotOut, embeddingRef(table, ids, { dim: C }), { atol: 0, rtol: 0 }, `embedding (${what})`);
  const bad = outOfRangeRef(ids, V);
  assert.equal(gotStatus[0], bad.count, `status count (${what})`);
  if (bad.count > 0) assert.equal(0xffffffff - gotStatus[1], bad.first, `status first token (${what})`);
  // f32 sums of ≤ T terms of magnitude ≤ 1: |Δ| ≤ 1e-6·√T.
  const tol = { atol: 1e-6 * Math.sqrt(T), rtol };
  assertClose(
    gotDTable,
    embeddingBackwardRef(dTable0, dOut, ids, { dim: C }),
    tol,
    `embeddingBackward (${what})`,
  );
  if (exact) {
    assertClose(
      gotDTable,
      scatterF32(dTable0, dOut, ids, C),
      { atol: 0, rtol: 0 },
      `embeddingBackward f32 (${what})`,
    );
  }
}

/** Ids drawn mostly from a few hot rows (long runs), some from the whole vocabulary, some out of range. */
const caseArb: fc.Arbitrary<Case> = fc.record({
  V: fc.constantFrom(1, 2, 7, 50, 1000),
  C: fc.constantFrom(1, 3, 64, 100, 257),
  T: fc.constantFrom(1, 2, 13, 100, 1000, 2053),
  badRate: fc.constantFrom(0, 0, 0.05),
  seed: fc.integer(),
}).map(({ V, C, T, badRate, seed }) => {
  const u = randomF32(2 * T, seed ^ 0x9e3779b9).map((v) => (v + 1) / 2);
  const ids = Int32Array.from({ length: T }, (_, t) => {
    if (u[2 * t] < badRate) return u[2 * t + 1] < 0.5 ? -1 - Math.floor(u[2 * t + 1] * 10) : V + (t % 3);
    return Math.floor(u[2 * t + 1] * (u[2 * t] < 0.5 ? Math.min(V, 3) : V));
  });
  return { V, C, ids, seed };
});

Deno.test("embedding forward and backward match the references on ragged shapes (property)", async () => {
  await fc.assert(fc.asyncProperty(caseArb, (c) => checkCase(gpu, c, true)), { seed: 31337, numRuns: 40 });
});

Deno.test("embedding: ~2M-element activations over a 151936-row vocabulary", async () => {
  const T = 20_011, V = 151_936;
  const u = randomF32(T, 99);
  const ids = Int32Array.from(u, (v, t) => (t % 5 === 0 ? 151_643 : Math.floor(((v + 1) / 2) * V)));
  await checkCase(gpu, { V, C: 100, ids, seed: 5 }, true);
});

Deno.test("embedding backward: one token 70,001 times, a run longer than a CPU invocation may loop", async () => {
  // llvmpipe leaves an invocation's loops after 65535 iterations: the tokens go out in windows that fit.
  const T = 70_001;
  const ids = Int32Array.from({ length: T }, (_, t) => (t % 97 === 0 ? 1 : 3));
  // f32 sums of ~69,000 terms reach |sum| ~ 100: rounding grows with the partial sums, hence rtol 2e-5 (a
  // truncated run is off by tens).
  await checkCase(gpu, { V: 5, C: 2, ids, seed: 8 }, false, 2e-5);
});

Deno.test("embedding backward is bit-for-bit deterministic across runs", async () => {
  const T = 3000, V = 17, C = 33;
  const ids = Int32Array.from(randomF32(T, 1), (v) => Math.floor(((v + 1) / 2) * V));
  const dOut = upload(gpu, randomF32(T * C, 2), { shape: [T, C], label: "dOut" });
  const tIds = upload(gpu, ids, { label: "ids" });
  const grads = [0, 1].map((i) => zeros(gpu, [V, C], { label: `dTable${i}` }));
  const batch = new Batch(gpu, "determinism");
  for (const g of grads) embeddingBackward(batch, g, dOut, tIds);
  const reads = grads.map((g) => batch.read(g));
  await batch.submit();
  const [a, b] = await Promise.all(reads);
  assert.deepEqual(new Uint32Array(a.buffer), new Uint32Array(b.buffer));
  for (const t of [dOut, tIds, ...grads]) t.release();
});

Deno.test("embedding shards vocab rows and tokens over a lowered binding limit", async () => {
  const small = await Gpu.create({ maxBindingSize: 4096 });
  try {
    // table 300×10 (12 KiB) in 96-row shards; 250 tokens (10 KiB of activations) in token shards.
    const ids = Int32Array.from(
      randomF32(250, 3),
      (v, t) => (t === 7 ? 300 : Math.floor(((v + 1) / 2) * 300)),
    );
    await checkCase(small, { V: 300, C: 10, ids, seed: 8 }, false);
    await checkCase(small, { V: 1000, C: 1, ids: ids.map((i) => i * 3), seed: 9 }, false);
  } finally {
    small.destroy();
  }
});

Deno.test("embedding wrappers reject bad dtypes and shapes; checkEmbeddingStatus names the first bad token", () => {
  const batch = new Batch(gpu, "errors");
  const table = new Tensor(gpu, [10, 4], "f32", "wte");
  try {
    assert.throws(
      () => embedding(batch, new Tensor(gpu, [3, 4], "f32", "x"), table, new Tensor(gpu, [3], "f32", "idsf")),
      /embedding\.forward: tensor "idsf" has dtype f32, expected i32/,
    );
    assert.throws(
      () => embedding(batch, new Tensor(gpu, [3, 5], "f32", "x"), table, new Tensor(gpu, [3], "i32", "ids")),
      /embedding\.forward: tensor "x" has shape \[3,5\], expected \[3,4\]/,
    );
    assert.throws(
      () =>
        embeddingBackward(
          batch,
          table,
          new Tensor(gpu, [2, 4], "f32", "dOut"),
          new Tensor(gpu, [3], "i32", "ids"),
        ),
      /embedding\.scatter: tensor "dOut" has shape \[2,4\], expected \[3,4\]/,
    );
  } finally {
    batch.abandon();
  }
  checkEmbeddingStatus([0, 0], { vocab: 10 });
  assert.throws(
    () => checkEmbeddingStatus([3, 0xffffffff - 17], { vocab: 151936, label: "model.embed_tokens" }),
    /^Error: Embedding "model\.embed_tokens": 3 token ids are outside the vocabulary \[0, 151936\) \(first at token 17\)$/,
  );
});
