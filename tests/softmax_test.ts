import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch, runBatch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { readF32, upload } from "../core/gpu/io.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import {
  logSoftmax,
  logSoftmaxBackward,
  softmax,
  softmaxBackward,
  type SoftmaxOptions,
} from "../core/ops/softmax.ts";
import {
  logSoftmaxBackwardRef,
  logSoftmaxRef,
  softmaxBackwardRef,
  softmaxRef,
  type SoftmaxRefOptions,
} from "../core/ref/softmax_ref.ts";
import { assertClose, type Tolerance } from "./util/close.ts";
import { uniformF32 } from "./util/random.ts";

const gpu = await Gpu.create();

// Tolerances (|gpu − ref| ≤ atol + rtol·|ref|, ref in f64 from the same f32 inputs):
// softmax probabilities: f32 exp and a tree-summed denominator.
const PROB: Tolerance = { atol: 1e-6, rtol: 1e-5 };
// log-probabilities: rounding of x − lse with |x| ≤ 80 is ~80·2⁻²⁴ ≈ 5e-6 absolute.
const LOGP: Tolerance = { atol: 2e-5, rtol: 1e-5 };
// gradients: products of O(1) values after a row sum of `cols` terms (f32 summation error grows like √cols).
const grad = (cols: number): Tolerance => ({ atol: 2e-7 * Math.sqrt(cols), rtol: 1e-5 });

/** Compares values with −∞ allowed: −∞ in `want` must be −∞ in `got`, the rest within `tol`. */
function assertCloseInf(got: Float32Array, want: Float64Array, tol: Tolerance, what: string): void {
  const g = Float64Array.from(got), w = Float64Array.from(want);
  for (let i = 0; i < w.length; i++) {
    if (w[i] === -Infinity) {
      assert.equal(got[i], -Infinity, `${what}: [${i}] got ${got[i]}, want -Infinity (masked)`);
      g[i] = w[i] = 0;
    }
  }
  assertClose(g, w, tol, what);
}

interface Case {
  rows: number;
  cols: number;
  causal?: { T: number; offset: number };
  scale: number;
  seed: number;
}

/** Runs all four kernels on one case in one batch and checks them against the f64 references. */
async function checkCase(g: Gpu, c: Case): Promise<void> {
  const n = c.rows * c.cols;
  const x = uniformF32(n, c.seed, -c.scale, c.scale);
  const dy = uniformF32(n, c.seed ^ 0x5bd1e995, -1, 1);
  const refOpts: SoftmaxRefOptions = { cols: c.cols, causal: c.causal };
  const opts: SoftmaxOptions = { causal: c.causal };
  // Backward inputs are the f32-rounded reference outputs, so backward errors are measured on their own.
  const yProb = Float32Array.from(softmaxRef(x, refOpts));
  const yLog = Float32Array.from(logSoftmaxRef(x, refOpts));
  const shape = [c.rows, c.cols];
  const tx = upload(g, x, { shape, label: "x" });
  const tdy = upload(g, dy, { shape, label: "dy" });
  const tyProb = upload(g, yProb, { shape, label: "y_prob" });
  const tyLog = upload(g, yLog, { shape, label: "y_log" });
  const outs = [0, 1, 2, 3].map((i) => new Tensor(g, shape, "f32", `out${i}`));
  const batch = new Batch(g, "softmax_test");
  softmax(batch, outs[0], tx, opts);
  logSoftmax(batch, outs[1], tx, opts);
  softmaxBackward(batch, outs[2], tyProb, tdy, opts);
  logSoftmaxBackward(batch, outs[3], tyLog, tdy, opts);
  const reads = outs.map((t) => batch.read(t));
  await batch.submit();
  const [p, lp, dxp, dxl] = (await Promise.all(reads)) as Float32Array[];
  for (const t of [tx, tdy, tyProb, tyLog, ...outs]) t.release();
  const what = `rows ${c.rows} cols ${c.cols} causal ${JSON.stringify(c.causal)} scale ${c.scale}`;
  assertClose(p, softmaxRef(x, refOpts), PROB, `softmax (${what})`);
  assertCloseInf(lp, logSoftmaxRef(x, refOpts), LOGP, `logSoftmax (${what})`);
  assertClose(dxp, softmaxBackwardRef(yProb, dy, refOpts), grad(c.cols), `softmaxBackward (${what})`);
  assertClose(dxl, logSoftmaxBackwardRef(yLog, dy, refOpts), grad(c.cols), `logSoftmaxBackward (${what})`);
}

const sizes = fc.oneof(
  fc.constantFrom(1, 2, 3, 7, 31, 32, 33, 97, 255, 256, 257, 1021, 4099),
  fc.integer({ min: 1, max: 3000 }),
);
const caseArb: fc.Arbitrary<Case> = fc.record({
  rows: fc.constantFrom(1, 2, 3, 5, 13, 64),
  cols: sizes,
  causal: fc.option(
    fc.record({ T: fc.constantFrom(1, 2, 3, 5, 13), offset: fc.integer({ min: 0, max: 40 }) }),
    {
      nil: undefined,
    },
  ),
  scale: fc.constantFrom(1, 10, 80),
  seed: fc.integer(),
}).map((c) => (c.causal && c.rows % c.causal.T !== 0 ? { ...c, rows: c.causal.T * c.rows } : c));

Deno.test("softmax family matches the f64 reference on ragged shapes (property)", async () => {
  await fc.assert(fc.asyncProperty(caseArb, (c) => checkCase(gpu, c)), { seed: 20240601, numRuns: 80 });
});

Deno.test("softmax family: cols = 1, and a vocabulary-sized row block of ~3M elements at ±80", async () => {
  await checkCase(gpu, { rows: 1, cols: 1, scale: 80, seed: 1 });
  await checkCase(gpu, { rows: 7, cols: 1, causal: { T: 7, offset: 0 }, scale: 80, seed: 2 });
  await checkCase(gpu, { rows: 20, cols: 151_936, scale: 80, seed: 3 });
});

Deno.test("softmax: causal decode with a KV-cache offset masks exactly the future columns", async () => {
  // T = 2 queries at positions 3 and 4 over 6 keys: row 0 sees columns 0..3, row 1 sees 0..4.
  const x = upload(gpu, new Float32Array(12).fill(0), { shape: [2, 6], label: "x" });
  const y = new Tensor(gpu, [2, 6], "f32", "y");
  await runBatch(gpu, "decode", (b) => softmax(b, y, x, { causal: { T: 2, offset: 3 } }));
  const f = Math.fround(0.2);
  assert.deepEqual(Array.from(await readF32(y)), [0.25, 0.25, 0.25, 0.25, 0, 0, f, f, f, f, f, 0]);
  // Large but finite logits in masked columns do not leak in.
  const big = upload(gpu, [1, 2, 1e30, 1, 2, 3], { shape: [2, 3], label: "big" });
  const yb = new Tensor(gpu, [2, 3], "f32", "yb");
  await runBatch(gpu, "mask", (b) => softmax(b, yb, big, { causal: { T: 2, offset: 1 } }));
  assertClose(
    await readF32(yb),
    softmaxRef([1, 2, 1e30, 1, 2, 3], { cols: 3, causal: { T: 2, offset: 1 } }),
    PROB,
  );
  for (const t of [x, y, big, yb]) t.release();
});

Deno.test("softmax: reference backward formulas match central finite differences", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 9 }),
      fc.integer(),
      fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }),
      (cols, seed, offset) => {
        const rows = 3;
        const opts: SoftmaxRefOptions = {
          cols,
          causal: offset === undefined ? undefined : { T: rows, offset },
        };
        const x = Array.from(uniformF32(rows * cols, seed, -3, 3));
        const dy = Array.from(uniformF32(rows * cols, seed + 1, -1, 1));
        for (
          const [fwd, bwd] of [[softmaxRef, softmaxBackwardRef], [
            logSoftmaxRef,
            logSoftmaxBackwardRef,
          ]] as const
        ) {
          const dx = bwd(fwd(x, opts), dy, opts);
          // L(x) = Σ dy ⊙ f(x) over unmasked entries.
          const loss = (v: number[]) =>
            fwd(v, opts).reduce((s, y, i) => s + (y === -Infinity ? 0 : dy[i] * y), 0);
          for (let i = 0; i < x.length; i++) {
            const h = 1e-5, xp = [...x], xm = [...x];
            xp[i] += h;
            xm[i] -= h;
            const fd = (loss(xp) - loss(xm)) / (2 * h);
            assert.ok(
              Math.abs(fd - dx[i]) <= 1e-7 + 1e-6 * Math.abs(fd),
              `${fwd.name} dx[${i}] = ${dx[i]}, fd ${fd}`,
            );
          }
        }
      },
    ),
    { seed: 7, numRuns: 60 },
  );
});

Deno.test("softmax family shards rows over a lowered binding limit", async () => {
  const small = await Gpu.create({ maxBindingSize: 4096 });
  try {
    // 91 rows of 100 columns (36 KiB) in shards of ≤ 10 rows; causal blocks of 13 rows straddle the shards.
    await checkCase(small, { rows: 91, cols: 100, causal: { T: 13, offset: 5 }, scale: 80, seed: 11 });
    await checkCase(small, { rows: 37, cols: 1024, scale: 10, seed: 12 });
    const x = new Tensor(small, [2, 1025], "f32", "wide");
    await assert.rejects(
      () => runBatch(small, "wide", (b) => softmax(b, new Tensor(small, [2, 1025], "f32", "o"), x)),
      /^Error: softmax\.forward: A row of 1025 elements .* does not fit the storage binding limit of 4096 bytes$/,
    );
  } finally {
    small.destroy();
  }
});

Deno.test("softmax wrappers reject mismatched shapes, dtypes and causal blocks naming the kernel", () => {
  const x = new Tensor(gpu, [6, 5], "f32", "x");
  const batch = new Batch(gpu, "errors");
  try {
    assert.throws(
      () => softmax(batch, new Tensor(gpu, [5, 6], "f32", "y"), x),
      /softmax\.forward: tensor "y" has shape \[5,6\], expected \[6,5\]/,
    );
    assert.throws(
      () => logSoftmax(batch, new Tensor(gpu, [6, 5], "i32", "yi"), x),
      /softmax\.log_forward: tensor "yi" has dtype i32, expected f32/,
    );
    assert.throws(
      () => softmax(batch, new Tensor(gpu, [6, 5], "f32", "y2"), x, { causal: { T: 4 } }),
      /softmax\.forward: causal block size T must be a positive divisor of the 6 rows, got 4/,
    );
    assert.throws(
      () =>
        softmaxBackward(batch, new Tensor(gpu, [6, 5], "f32", "dx"), x, new Tensor(gpu, [6, 4], "f32", "dy")),
      /softmax\.backward: tensor "dy" has shape \[6,4\], expected \[6,5\]/,
    );
  } finally {
    batch.abandon();
  }
});
