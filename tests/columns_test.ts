// Column sums (bias gradients) against the f64 reference on ragged shapes, with accumulation and sharding.
import fc from "fast-check";
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { reduceColumns } from "../core/ops/columns.ts";
import { reduceColumnsRef } from "../core/ref/columns_ref.ts";
import { assertClose } from "./util/close.ts";

const gpu = await Gpu.create();

async function check(g: Gpu, rows: number, cols: number, seed: number, accumulate: boolean) {
  let s = seed;
  const rnd = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  const x = Float32Array.from({ length: rows * cols }, rnd);
  const init = Float32Array.from({ length: cols }, rnd);
  const xt = upload(g, x, { shape: [rows, cols], label: "x" }), out = upload(g, init, { label: "out" });
  const batch = new Batch(g, "columns.test");
  reduceColumns(batch, out, xt, { accumulate });
  const got = batch.read(out);
  await batch.submit();
  const want = reduceColumnsRef(x, { rows, cols }).map((v, j) => v + (accumulate ? init[j] : 0));
  // f32 sum of `rows` terms of magnitude ≤ 1: error ≲ rows·2^-24.
  assertClose(await got, want, { atol: 1e-6 * Math.max(1, rows), rtol: 1e-6 }, `columns ${rows}×${cols}`);
  xt.release();
  out.release();
}

Deno.test("column sums equal the f64 reference on ragged shapes", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(1, 2, 7, 31, 64, 257),
      fc.constantFrom(1, 3, 17, 64, 65, 1000),
      fc.integer({ min: 0, max: 1 << 30 }),
      fc.boolean(),
      (rows, cols, seed, acc) => check(gpu, rows, cols, seed, acc),
    ),
    { seed: 4242, numRuns: 25 },
  );
});

Deno.test("column sums shard rows over a lowered binding limit", async () => {
  const small = await Gpu.create({ maxBindingSize: 1024 });
  try {
    await check(small, 301, 13, 9, false); // 13-float rows: 8-row aligned shards of at most 19 rows
    await check(small, 97, 40, 3, true);
  } finally {
    small.destroy();
  }
});

Deno.test("column sums over more rows than one invocation may loop over on a CPU adapter (65535)", async () => {
  // llvmpipe leaves an invocation's loops after 65535 iterations: the rows go out in chunks that fit.
  await check(gpu, 3 * 65535 + 17, 2, 5, false);
  await check(gpu, 70001, 3, 6, true);
});
