import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch, runBatch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { rowShards } from "../core/gpu/shard.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { rmsnormBackward, rmsnormForward } from "../core/model/rmsnorm.ts";
import { rmsnormBackwardRef, rmsnormForwardRef } from "../core/ref/rmsnorm_ref.ts";
import { assertClose } from "./util/close.ts";
import { assertGradients, mulberry32, randomArray } from "./util/finite_diff.ts";

// Tolerances: forward |gpu − ref| ≤ 1e-5 + 1e-4·|ref|; backward (f32 row reductions, dw summed over rows)
// ≤ 1e-4 + 1e-3·|ref|.
const FWD = { atol: 1e-5, rtol: 1e-4 };
const BWD = { atol: 1e-4, rtol: 1e-3 };

const gpu = await Gpu.create();

/** Kernel families: one workgroup per row (GPUs) and one invocation per row (CPU adapters). */
type Variant = "workgroup" | "rows";
const VARIANTS: Variant[] = ["workgroup", "rows"];

interface Case {
  N: number;
  C: number;
  eps: number;
  seed: number;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  N: fc.oneof(fc.constantFrom(1, 2, 3, 5, 7, 13, 31), fc.integer({ min: 1, max: 40 })),
  C: fc.oneof(fc.constantFrom(1, 2, 7, 13, 40, 63, 64, 65, 127, 257), fc.integer({ min: 1, max: 300 })),
  eps: fc.constantFrom(1e-6, 1e-5),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
});

/** Host data of a case: x ~ U(−2, 2) (one row scaled by 100 to exercise the rstd range), w ~ 1 ± 0.5. */
function data(c: Case) {
  const rand = mulberry32(c.seed);
  const x = Float32Array.from(randomArray(c.N * c.C, rand, -2, 2));
  for (let i = 0; i < c.C; i++) x[i] *= 100;
  const w = Float32Array.from(randomArray(c.C, rand, 0.5, 1.5));
  const dout = Float32Array.from(randomArray(c.N * c.C, rand, -1, 1));
  const dw0 = Float32Array.from(randomArray(c.C, rand, -1, 1));
  return { x, w, dout, dw0 };
}

function reference(c: Case) {
  const { x, w, dout, dw0 } = data(c);
  const out = new Float64Array(c.N * c.C), rstd = new Float64Array(c.N);
  rmsnormForwardRef(out, rstd, x, w, { eps: c.eps });
  const dx = new Float64Array(c.N * c.C), dw = Float64Array.from(dw0);
  rmsnormBackwardRef(dx, dw, dout, x, w, rstd);
  return { out, rstd, dx, dw };
}

/** Runs forward then backward for every case in one batch; returns the read-backs per case. */
async function runCases(g: Gpu, cases: Case[], variant: Variant = "workgroup") {
  const batch = new Batch(g, "rmsnorm.cases");
  const tensors: Tensor[] = [];
  const keep = <T extends Tensor>(t: T) => (tensors.push(t), t);
  const reads = cases.map((c) => {
    const d = data(c);
    const x = keep(upload(g, d.x, { shape: [c.N, c.C], label: "x" }));
    const w = keep(upload(g, d.w, { shape: [c.C], label: "w" }));
    const dout = keep(upload(g, d.dout, { shape: [c.N, c.C], label: "dout" }));
    const dw = keep(upload(g, d.dw0, { shape: [c.C], label: "dw" }));
    const out = keep(new Tensor(g, [c.N, c.C], "f32", "out"));
    const rstd = keep(new Tensor(g, [c.N], "f32", "rstd"));
    const dx = keep(new Tensor(g, [c.N, c.C], "f32", "dx"));
    rmsnormForward(batch, out, rstd, x, w, { eps: c.eps, variant });
    rmsnormBackward(batch, dx, dw, dout, x, w, rstd, { variant });
    return { out: batch.read(out), rstd: batch.read(rstd), dx: batch.read(dx), dw: batch.read(dw) };
  });
  await batch.submit();
  const res = [];
  for (const r of reads) res.push({ out: await r.out, rstd: await r.rstd, dx: await r.dx, dw: await r.dw });
  for (const t of tensors) t.release();
  return res;
}

async function checkCases(g: Gpu, cases: Case[], variant: Variant = "workgroup") {
  const got = await runCases(g, cases, variant);
  cases.forEach((c, i) => {
    const want = reference(c);
    const at = `${variant} N=${c.N} C=${c.C} seed=${c.seed}`;
    assertClose(got[i].out, want.out, FWD, `rmsnorm.forward out (${at})`);
    assertClose(got[i].rstd, want.rstd, FWD, `rmsnorm.forward rstd (${at})`);
    assertClose(got[i].dx, want.dx, BWD, `rmsnorm.backward dx (${at})`);
    assertClose(got[i].dw, want.dw, BWD, `rmsnorm.backward dw (${at})`);
  });
}

Deno.test("rmsnorm reference: backward matches central differences (f64)", () => {
  for (const [N, C, seed] of [[1, 1, 1], [3, 7, 2], [2, 40, 3], [5, 13, 4]]) {
    const rand = mulberry32(seed);
    const inputs = { x: randomArray(N * C, rand, -2, 2), w: randomArray(C, rand, 0.5, 1.5) };
    const f = (i: Record<string, Float64Array>) => {
      const out = new Float64Array(N * C), rstd = new Float64Array(N);
      rmsnormForwardRef(out, rstd, i.x, i.w, { eps: 1e-5 });
      return [out];
    };
    assertGradients(f, inputs, {
      grads: ([dout]) => {
        const out = new Float64Array(N * C), rstd = new Float64Array(N);
        rmsnormForwardRef(out, rstd, inputs.x, inputs.w, { eps: 1e-5 });
        const dx = new Float64Array(N * C), dw = new Float64Array(C);
        rmsnormBackwardRef(dx, dw, dout, inputs.x, inputs.w, rstd);
        return { x: dx, w: dw };
      },
      seed,
    });
  }
});

for (const variant of VARIANTS) {
  Deno.test(`rmsnorm (${variant}): forward and backward (dx =, dw +=) match the f64 reference on ragged shapes`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(caseArb, { minLength: 1, maxLength: 6 }),
        (cases) => checkCases(gpu, cases, variant),
      ),
      { seed: 0x5eed01, numRuns: 12 },
    );
  });

  Deno.test(`rmsnorm (${variant}): a 2-D grid, and dw within the CPU loop budget`, async () => {
    // More workgroups than one grid dimension holds (the rows variant runs 16 rows per workgroup), and more
    // rows than a dw invocation may loop over on llvmpipe (65535 iterations), so dw goes out in row chunks.
    const N = variant === "rows" ? 16 * 65535 + 5 : 2 * 65535 + 3;
    await checkCases(gpu, [{ N, C: 3, eps: 1e-6, seed: 7 }], variant);
  });
}

Deno.test("rmsnorm: rows are sharded under a lowered storage-binding limit", async () => {
  // Rows of 37 floats (148 bytes) start aligned every align/4 rows: a binding of 3·37·align bytes holds
  // 3·align/4 rows, so 8·align/4 + 3 rows take three shards (rstd is bound whole).
  const align = gpu.limits.storageOffsetAlignment;
  const small = await Gpu.create({ maxBindingSize: 3 * 37 * align });
  try {
    assert.equal(rowShards(small, 2 * align + 3, 37).length, 3);
    const cases = [{ N: 2 * align + 3, C: 37, eps: 1e-6, seed: 11 }, { N: 50, C: 24, eps: 1e-5, seed: 12 }];
    for (const variant of VARIANTS) await checkCases(small, cases, variant);
  } finally {
    small.destroy();
  }
});

Deno.test("rmsnorm: backward is bitwise deterministic", async () => {
  const c: Case = { N: 33, C: 91, eps: 1e-6, seed: 5 };
  for (const variant of VARIANTS) {
    const [a, b] = [await runCases(gpu, [c], variant), await runCases(gpu, [c], variant)];
    assert.deepEqual(a[0].dx, b[0].dx);
    assert.deepEqual(a[0].dw, b[0].dw);
  }
});

Deno.test("rmsnorm: shape errors name the tensor", async () => {
  const x = new Tensor(gpu, [4, 8], "f32", "x"), w = new Tensor(gpu, [7], "f32", "w");
  const out = new Tensor(gpu, [4, 8], "f32", "out"), rstd = new Tensor(gpu, [4], "f32", "rstd");
  await assert.rejects(
    runBatch(gpu, "bad", (b) => rmsnormForward(b, out, rstd, x, w, { eps: 1e-6 })),
    /rmsnorm\.forward: tensor "w" has shape \[7\], expected \[8\]/,
  );
  await assert.rejects(
    runBatch(gpu, "bad", (b) => rmsnormBackward(b, out, w, x, x, w, rstd)),
    /rmsnorm\.backward: tensor "w" has shape \[7\], expected \[8\]/,
  );
  for (const t of [x, w, out, rstd]) t.release();
});
