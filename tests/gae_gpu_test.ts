import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { gaeBatch, whiten } from "../core/rl/gae.ts";
import { gaeGpu, whitenGpu } from "../core/rl/gae_gpu.ts";
import { assertClose, type Tolerance } from "./util/close.ts";
import { mulberry32 as rng } from "./util/finite_diff.ts";

const gpu = await Gpu.create();

// |gpu − ref| ≤ atol + rtol·|ref|, ref = gaeBatch / whiten in f64 on the same f32 inputs. Rewards and values are
// drawn with magnitude ≤ 2 (the f32 recursion's rounding grows like 2⁻²⁴·√T·max|A|, see gae_gpu.ts); whitening
// is compared on the GPU's own f32 advantages, so its error is measured on its own.
const TOL: Tolerance = { atol: 1e-5, rtol: 1e-5 };

type MaskKind = "none" | "right" | "left" | "gaps" | "empty_rows";

interface Case {
  B: number;
  T: number;
  mask: MaskKind;
  /** Sparse PRM-style rewards (step ends and the final token) instead of dense ones. */
  sparse: boolean;
  gamma: number;
  lambda: number;
  shiftMean: boolean;
  unbiased: boolean;
  seed: number;
}

/** A (B, T) 0/1 mask with ragged rows: valid prefix, valid suffix, holes, or some rows fully masked. */
function makeMask(kind: MaskKind, B: number, T: number, rand: () => number): Float32Array | undefined {
  if (kind === "none") return undefined;
  const m = new Float32Array(B * T);
  for (let b = 0; b < B; b++) {
    const len = kind === "empty_rows" ? (rand() < 0.5 ? 0 : T) : Math.floor(rand() * (T + 1));
    for (let t = 0; t < T; t++) {
      const on = kind === "left" ? t >= T - len : kind === "gaps" ? rand() < 0.7 : t < len;
      m[b * T + t] = on ? 1 : 0;
    }
  }
  return m;
}

function makeInputs(c: Case) {
  const N = c.B * c.T, rand = rng(c.seed);
  const mask = makeMask(c.mask, c.B, c.T, rand);
  const values = Float32Array.from({ length: N }, () => -2 + 4 * rand());
  const rewards = Float32Array.from({ length: N }, (_, i) => {
    if (!c.sparse) return -2 + 4 * rand();
    return i % c.T === c.T - 1 ? (rand() < 0.5 ? 1 : -1) : rand() < 0.15 ? -rand() : 0;
  });
  return { rewards, values, mask };
}

/** GAE, then whitening of the GPU's advantages, for every case in one batch (one submit). */
async function checkCases(g: Gpu, cases: Case[]): Promise<void> {
  const batch = new Batch(g, "gae_test");
  const tensors: Tensor[] = [];
  const pending = cases.map((c) => {
    const data = makeInputs(c), shape = [c.B, c.T];
    const rewards = upload(g, data.rewards, { shape, label: "rewards" });
    const values = upload(g, data.values, { shape, label: "values" });
    const mask = data.mask ? upload(g, data.mask, { shape, label: "mask" }) : undefined;
    const advantages = new Tensor(g, shape, "f32", "advantages");
    const returns = new Tensor(g, shape, "f32", "returns");
    const white = new Tensor(g, shape, "f32", "white");
    gaeGpu(batch, { advantages, returns }, { rewards, values, mask }, c);
    whitenGpu(batch, white, { x: advantages, mask }, c);
    tensors.push(rewards, values, advantages, returns, white, ...(mask ? [mask] : []));
    return { c, data, reads: [advantages, returns, white].map((t) => batch.read(t)) };
  });
  await batch.submit();
  for (const t of tensors) t.release();
  for (const { c, data, reads } of pending) {
    const [adv, ret, white] = await Promise.all(reads);
    const what = `B=${c.B} T=${c.T} mask=${c.mask} γ=${c.gamma} λ=${c.lambda} seed=${c.seed}`;
    const want = gaeBatch(data.rewards, data.values, {
      seqLen: c.T,
      mask: data.mask,
      gamma: c.gamma,
      lambda: c.lambda,
    });
    assertClose(adv, want.advantages, TOL, `advantages (${what})`);
    assertClose(ret, want.returns, TOL, `returns (${what})`);
    const valid = data.mask ? data.mask.some((m) => m === 1) : true;
    const wantWhite = valid ? whiten(adv, data.mask, c) : new Float64Array(adv.length);
    assertClose(white, wantWhite, TOL, `whitened advantages (${what}, shiftMean=${c.shiftMean})`);
  }
}

const unit = fc.oneof(
  fc.constantFrom(0, 0.5, 0.9, 0.95, 0.99, 1),
  fc.double({ min: 0, max: 1, noNaN: true }),
);
const caseArb: fc.Arbitrary<Case> = fc.record({
  B: fc.constantFrom(1, 2, 5, 17),
  T: fc.constantFrom(1, 3, 13, 64),
  mask: fc.constantFrom<MaskKind>("none", "right", "left", "gaps", "empty_rows"),
  sparse: fc.boolean(),
  gamma: unit,
  lambda: unit,
  shiftMean: fc.boolean(),
  unbiased: fc.boolean(),
  seed: fc.integer(),
});

Deno.test("gaeGpu and whitenGpu match gaeBatch and whiten on ragged masked batches (property)", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(caseArb, { minLength: 1, maxLength: 6 }), (cases) => checkCases(gpu, cases)),
    { seed: 8675309, numRuns: 30 },
  );
});

Deno.test("gaeGpu: every mask shape at the sizes of the brief, γ = λ = 1 (no decay) and TRL's 1, 0.95", async () => {
  const cases: Case[] = [];
  for (const B of [1, 2, 5, 17]) {
    for (const T of [1, 3, 13, 64]) {
      for (const mask of ["none", "right", "left", "gaps", "empty_rows"] as const) {
        const lambda = mask.length % 2 === 0 ? 1 : 0.95;
        cases.push({
          B,
          T,
          mask,
          sparse: B % 2 === 1,
          gamma: 1,
          lambda,
          shiftMean: true,
          unbiased: true,
          seed: B * T,
        });
      }
    }
  }
  await checkCases(gpu, cases);
});

Deno.test("gaeGpu: worked example of gae_test.ts, with a hole in the mask", async () => {
  const shape = [2, 4];
  const rewards = upload(gpu, [0, 0, 1, 9, 0, 5, 0, 1], { shape });
  const values = upload(gpu, [0.5, 0.6, 0.7, 9, 0.5, 5, 0.6, 0.7], { shape });
  const mask = upload(gpu, [1, 1, 1, 0, 1, 0, 1, 1], { shape });
  const advantages = new Tensor(gpu, shape, "f32", "adv"), returns = new Tensor(gpu, shape, "f32", "ret");
  const batch = new Batch(gpu, "worked");
  gaeGpu(batch, { advantages, returns }, { rewards, values, mask }, { gamma: 0.9, lambda: 0.8 });
  const reads = [advantages, returns].map((t) => batch.read(t));
  await batch.submit();
  const [adv, ret] = await Promise.all(reads);
  // Row 0 is the reference's worked example; row 1 skips the hole at t = 1 (the value after t = 0 is V_2).
  assertClose(adv, [0.21712, 0.246, 0.3, 0, 0.21712, 0, 0.246, 0.3], TOL, "advantages");
  assertClose(ret, [0.71712, 0.846, 1.0, 0, 0.71712, 0, 0.846, 1.0], TOL, "returns");
  for (const t of [rewards, values, mask, advantages, returns]) t.release();
});

Deno.test("whitenGpu: offsets, constant input, one valid entry, all masked, sharded over a lowered limit", async () => {
  const run = async (g: Gpu, x: Float32Array, mask: Float32Array | undefined, opts = {}) => {
    const tx = upload(g, x, { label: "x" }), tm = mask ? upload(g, mask, { label: "mask" }) : undefined;
    const out = upload(g, new Float32Array(x.length).fill(Number.NaN), { label: "out" });
    const batch = new Batch(g, "whiten");
    whitenGpu(batch, out, { x: tx, mask: tm }, opts);
    const read = batch.read(out);
    await batch.submit();
    for (const t of [tx, tm, out]) t?.release();
    return await read;
  };
  const rand = rng(7);
  const x = Float32Array.from({ length: 5000 }, () => 3 + 2 * rand()); // |μ| > σ: the shifted pass matters
  const mask = Float32Array.from({ length: 5000 }, () => (rand() < 0.6 ? 1 : 0));
  for (const opts of [{}, { shiftMean: false }, { unbiased: false }]) {
    assertClose(
      await run(gpu, x, mask, opts),
      whiten(x, mask, opts),
      TOL,
      `offset data ${JSON.stringify(opts)}`,
    );
    assertClose(
      await run(gpu, x, undefined, opts),
      whiten(x, undefined, opts),
      TOL,
      `no mask ${JSON.stringify(opts)}`,
    );
  }
  const constant = new Float32Array(37).fill(0.1);
  assert.deepEqual(Array.from(await run(gpu, constant, undefined)), new Array(37).fill(0));
  const one = new Float32Array([0, 0, 1, 0]);
  assertClose(await run(gpu, Float32Array.from([5, 6, 7, 8]), one), whiten([5, 6, 7, 8], one), TOL, "n = 1");
  assert.deepEqual(Array.from(await run(gpu, x.slice(0, 9), new Float32Array(9))), new Array(9).fill(0));
  const small = await Gpu.create({ maxBindingSize: 1024 }); // 256-entry shards
  try {
    assertClose(await run(small, x, mask), whiten(x, mask), TOL, "sharded whiten");
    await checkCases(small, [
      {
        B: 17,
        T: 64,
        mask: "gaps",
        sparse: false,
        gamma: 1,
        lambda: 0.95,
        shiftMean: true,
        unbiased: true,
        seed: 1,
      },
      {
        B: 300,
        T: 3,
        mask: "left",
        sparse: true,
        gamma: 0.99,
        lambda: 1,
        shiftMean: false,
        unbiased: true,
        seed: 2,
      },
    ]);
  } finally {
    small.destroy();
  }
});

Deno.test("gaeGpu and whitenGpu reject bad shapes and options naming the problem", () => {
  const x = new Tensor(gpu, [2, 3], "f32", "x"), y = new Tensor(gpu, [2, 3], "f32", "y");
  const z = new Tensor(gpu, [2, 3], "f32", "z");
  const batch = new Batch(gpu, "errors");
  try {
    assert.throws(
      () =>
        gaeGpu(batch, { advantages: y, returns: z }, {
          rewards: x,
          values: new Tensor(gpu, [3, 2], "f32", "v"),
        }, {
          gamma: 1,
          lambda: 1,
        }),
      /gae: "values": tensor "v" has shape \[3,2\], expected \[2,3\]/,
    );
    assert.throws(
      () =>
        gaeGpu(batch, { advantages: y, returns: z }, { rewards: x, values: x }, { gamma: 1.5, lambda: 1 }),
      /gae: invalid option "gamma": expected a number in \[0, 1\], got "1.5"/,
    );
    assert.throws(
      () => gaeGpu(batch, { advantages: x, returns: z }, { rewards: x, values: y }, { gamma: 1, lambda: 1 }),
      /gae: output "advantages" aliases input "rewards"/,
    );
    assert.throws(
      () =>
        gaeGpu(batch, { advantages: y, returns: z }, {
          rewards: new Tensor(gpu, [6], "f32", "r1"),
          values: x,
        }, {
          gamma: 1,
          lambda: 1,
        }),
      /gae: tensor "r1" has shape \[6\], expected non-empty \(B, T\)/,
    );
    assert.throws(() => whitenGpu(batch, x, { x }), /whiten: output "out" aliases input "x"/);
    assert.throws(
      () => whitenGpu(batch, y, { x, mask: new Tensor(gpu, [6], "i32", "m") }),
      /whiten: "mask" \(tensor "m"\) has dtype i32, expected f32/,
    );
  } finally {
    batch.abandon();
  }
});
