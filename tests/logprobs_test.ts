// Fused target log-probs (shaders/logprobs.wgsl) against the f64 reference, and the reference backward against
// central finite differences.
import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload, zeros } from "../core/gpu/io.ts";
import type { Tensor } from "../core/gpu/tensor.ts";
import { logprobsBackward, logprobsForward } from "../core/model/logprobs.ts";
import { logprobsBackwardRef, logprobsForwardRef } from "../core/ref/logprobs_ref.ts";
import { assertClose } from "./util/close.ts";

const gpu = await Gpu.create();

interface Case {
  rows: number;
  vocab: number;
  x: Float32Array;
  targets: Int32Array;
  dlogp: Float32Array;
  dentropy: Float32Array;
}

const SIZES = [1, 2, 3, 17, 97, 256, 257, 1000, 5003];
const caseArb = fc.record({
  rows: fc.constantFrom(1, 2, 5, 13, 37), // 37: more rows than one workgroup of the rows variant
  vocab: fc.constantFrom(...SIZES),
  scale: fc.constantFrom(1, 8, 40),
  seed: fc.integer({ min: 0, max: 1 << 30 }),
}).map(({ rows, vocab, scale, seed }): Case => {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  return {
    rows,
    vocab,
    x: Float32Array.from({ length: rows * vocab }, () => (rnd() * 2 - 1) * scale),
    targets: Int32Array.from({ length: rows }, () => (rnd() < 0.2 ? -1 : Math.floor(rnd() * vocab))),
    dlogp: Float32Array.from({ length: rows }, () => rnd() * 2 - 1),
    dentropy: Float32Array.from({ length: rows }, () => rnd() * 2 - 1),
  };
});

async function runGpu(g: Gpu, cases: Case[], variant: "workgroup" | "rows" = "workgroup") {
  const batch = new Batch(g, "logprobs.test");
  const reads: Promise<Float32Array | Int32Array | Uint32Array>[][] = [];
  const temps: Tensor[] = [];
  for (const c of cases) {
    const x = upload(g, c.x, { shape: [c.rows, c.vocab], label: "x" });
    const targets = upload(g, c.targets, { label: "targets" });
    const out = {
      logp: zeros(g, [c.rows], { label: "logp" }),
      lse: zeros(g, [c.rows], { label: "lse" }),
      entropy: zeros(g, [c.rows], { label: "entropy" }),
    };
    const dx = zeros(g, [c.rows, c.vocab], { label: "dx" });
    const dlogp = upload(g, c.dlogp, { label: "dlogp" });
    const dentropy = upload(g, c.dentropy, { label: "dentropy" });
    logprobsForward(batch, out, x, targets, { variant });
    logprobsBackward(batch, dx, { dlogp, dentropy }, x, targets, out);
    reads.push([batch.read(out.logp), batch.read(out.lse), batch.read(out.entropy), batch.read(dx)]);
    temps.push(x, targets, out.logp, out.lse, out.entropy, dx, dlogp, dentropy);
  }
  await batch.submit();
  const results = await Promise.all(reads.map((r) => Promise.all(r)));
  for (const t of temps) t.release();
  return results;
}

function check(cases: Case[], results: Awaited<ReturnType<typeof runGpu>>) {
  cases.forEach((c, i) => {
    const dims = { rows: c.rows, vocab: c.vocab };
    const ref = logprobsForwardRef(c.x, c.targets, dims);
    const [logp, lse, entropy, dx] = results[i];
    const what = `rows ${c.rows} vocab ${c.vocab}`;
    // f32 sums over up to 5003 terms of magnitude ≤ 40: absolute error ~1e-5 on lse.
    assertClose(lse, ref.lse, { atol: 3e-5, rtol: 1e-5 }, `lse (${what})`);
    assertClose(logp, ref.logp, { atol: 3e-5, rtol: 1e-5 }, `logp (${what})`);
    assertClose(entropy, ref.entropy, { atol: 3e-5, rtol: 1e-4 }, `entropy (${what})`);
    const dref = logprobsBackwardRef(c.x, c.targets, c.dlogp, c.dentropy, dims);
    assertClose(dx, dref, { atol: 2e-5, rtol: 1e-4 }, `dx (${what})`);
  });
}

for (const variant of ["workgroup", "rows"] as const) {
  Deno.test(`logprobs (${variant}) forward and backward equal the f64 reference on ragged shapes`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(caseArb, { minLength: 1, maxLength: 6 }), async (cases) => {
        check(cases, await runGpu(gpu, cases, variant));
      }),
      { seed: 20261126, numRuns: 12 },
    );
  });
}

Deno.test("logprobs shards rows over a lowered storage-binding limit", async () => {
  // 16 KiB: 8 rows of 300 logits per shard (per-row outputs need 8-row = 32-byte aligned starts), 2 shards.
  const small = await Gpu.create({ maxBindingSize: 16384 });
  try {
    const cases = fc.sample(caseArb.map((c) => ({ ...c })), { seed: 7, numRuns: 1 }).map(() => {
      const rows = 11, vocab = 300;
      return {
        rows,
        vocab,
        x: Float32Array.from({ length: rows * vocab }, (_, i) => Math.sin(i * 0.37) * 9),
        targets: Int32Array.from({ length: rows }, (_, r) => (r * 37) % vocab),
        dlogp: Float32Array.from({ length: rows }, (_, r) => r / rows - 0.5),
        dentropy: Float32Array.from({ length: rows }, (_, r) => 0.3 - r / 20),
      };
    });
    check(cases, await runGpu(small, cases, "workgroup"));
    check(cases, await runGpu(small, cases, "rows"));
  } finally {
    small.destroy();
  }
});

Deno.test("logprobs reference backward matches central finite differences (f64)", () => {
  const dims = { rows: 3, vocab: 7 };
  const x = Array.from({ length: 21 }, (_, i) => Math.cos(i * 1.7) * 3);
  const targets = [2, -1, 6], dlogp = [0.7, -0.4, 1.3], dentropy = [-0.5, 0.9, 0.2];
  const loss = (xs: number[]) => {
    const f = logprobsForwardRef(xs, targets, dims);
    let s = 0;
    for (let r = 0; r < dims.rows; r++) s += dlogp[r] * f.logp[r] + dentropy[r] * f.entropy[r];
    return s;
  };
  const analytic = logprobsBackwardRef(x, targets, dlogp, dentropy, dims);
  const h = 1e-6;
  const numeric = x.map((_, i) => {
    const xp = [...x], xm = [...x];
    xp[i] += h;
    xm[i] -= h;
    return (loss(xp) - loss(xm)) / (2 * h);
  });
  assertClose(analytic, numeric, { atol: 1e-8, rtol: 1e-6 }, "d loss / dx");
});

Deno.test("logprobs: the rows kernel refuses vocabularies past the CPU loop budget", () => {
  const batch = new Batch(gpu, "logprobs.rows.bad");
  const x = zeros(gpu, [2, 40000], { label: "x" }), targets = zeros(gpu, [2], { label: "targets" });
  const out = {
    logp: zeros(gpu, [2], { label: "a" }),
    lse: zeros(gpu, [2], { label: "b" }),
    entropy: zeros(gpu, [2], { label: "c" }),
  };
  try {
    assert.throws(
      () => logprobsForward(batch, out, x, targets, { variant: "rows" }),
      /rows kernel loops over V twice, at most 65535 times; V = 40000/,
    );
  } finally {
    batch.abandon();
    for (const t of [x, targets, out.logp, out.lse, out.entropy]) t.release();
  }
});
