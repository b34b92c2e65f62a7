import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch, runBatch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { attentionBackward, attentionForward } from "../core/model/attention.ts";
import { attentionRowsWgsl, rowsBlock } from "../core/model/attention_rows.ts";
import {
  attentionBackwardRef,
  attentionForwardRef,
  type AttentionRefOptions,
} from "../core/ref/attention_ref.ts";
import { assertClose } from "./util/close.ts";
import { assertGradients, mulberry32, randomArray } from "./util/finite_diff.ts";

// Tolerances: forward (out, lse) |gpu − ref| ≤ 1e-5 + 1e-4·|ref|; backward (dq, dk, dv: f32 sums over up to
// S keys or T·H/KVH query rows, recomputed probabilities) ≤ 1e-4 + 1e-3·|ref|.
const FWD = { atol: 1e-5, rtol: 1e-4 };
const BWD = { atol: 1e-4, rtol: 1e-3 };

const gpu = await Gpu.create();

type MaskKind = "none" | "left" | "right" | "random";
/** Kernel families: the workgroup-tiled one (GPUs) and the one-row-per-invocation one (CPU adapters). */
type Variant = "tiled" | "rows";
const VARIANTS: Variant[] = ["tiled", "rows"];

interface Case {
  B: number;
  T: number;
  /** Keys before the first query (KV cache): S = T + past. */
  past: number;
  KVH: number;
  /** Query heads per kv head. */
  G: number;
  D: number;
  mask: MaskKind;
  /** Multiplies q (large values give peaked softmax rows). */
  sharp: number;
  seed: number;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  B: fc.integer({ min: 1, max: 3 }),
  T: fc.oneof(fc.constantFrom(1, 1, 2, 3, 7, 13, 31), fc.integer({ min: 1, max: 45 })),
  past: fc.constantFrom(0, 0, 1, 5, 23),
  KVH: fc.constantFrom(1, 2, 3),
  G: fc.constantFrom(1, 2, 3, 7),
  D: fc.constantFrom(2, 8, 10, 12, 16, 64),
  mask: fc.constantFrom("none", "left", "right", "random"),
  sharp: fc.constantFrom(1, 1, 8),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
});

function refOptions(c: Case, keyMask?: Int32Array): AttentionRefOptions {
  return { B: c.B, T: c.T, S: c.T + c.past, H: c.KVH * c.G, KVH: c.KVH, D: c.D, keyMask };
}

/** Key mask per row: left/right padding of a random length (possibly every key), or random holes. */
function makeMask(c: Case, rand: () => number): Int32Array | undefined {
  if (c.mask === "none") return undefined;
  const S = c.T + c.past;
  const m = new Int32Array(c.B * S).fill(1);
  for (let b = 0; b < c.B; b++) {
    const pads = Math.floor(rand() * (S + 1));
    for (let s = 0; s < S; s++) {
      const pad = c.mask === "left" ? s < pads : c.mask === "right" ? s >= S - pads : rand() < 0.3;
      if (pad) m[b * S + s] = 0;
    }
  }
  return m;
}

function data(c: Case) {
  const rand = mulberry32(c.seed);
  const S = c.T + c.past, H = c.KVH * c.G;
  const q = Float32Array.from(randomArray(c.B * c.T * H * c.D, rand, -2 * c.sharp, 2 * c.sharp));
  const k = Float32Array.from(randomArray(c.B * S * c.KVH * c.D, rand, -2, 2));
  const v = Float32Array.from(randomArray(c.B * S * c.KVH * c.D, rand, -2, 2));
  const dout = Float32Array.from(randomArray(c.B * c.T * H * c.D, rand, -1, 1));
  return { q, k, v, dout, mask: makeMask(c, rand) };
}

/** Forward then backward of every case in one batch (backward fed the GPU's out and lse). */
async function runCases(g: Gpu, cases: Case[], variant: Variant, rowsBlock?: number) {
  const batch = new Batch(g, "attention.cases");
  const tensors: Tensor[] = [];
  const keep = (t: Tensor) => (tensors.push(t), t);
  const reads = cases.map((c) => {
    const d = data(c);
    const S = c.T + c.past, H = c.KVH * c.G;
    const qShape = [c.B, c.T, H, c.D], kShape = [c.B, S, c.KVH, c.D];
    const q = keep(upload(g, d.q, { shape: qShape, label: "q" }));
    const k = keep(upload(g, d.k, { shape: kShape, label: "k" }));
    const v = keep(upload(g, d.v, { shape: kShape, label: "v" }));
    const dout = keep(upload(g, d.dout, { shape: qShape, label: "dout" }));
    const keyMask = d.mask ? keep(upload(g, d.mask, { shape: [c.B, S], label: "key_mask" })) : undefined;
    const out = keep(new Tensor(g, qShape, "f32", "out"));
    const lse = keep(new Tensor(g, [c.B, c.T, H], "f32", "lse"));
    const dq = keep(new Tensor(g, qShape, "f32", "dq"));
    const dk = keep(new Tensor(g, kShape, "f32", "dk"));
    const dv = keep(new Tensor(g, kShape, "f32", "dv"));
    attentionForward(batch, out, lse, q, k, v, { keyMask, variant, rowsBlock });
    attentionBackward(batch, dq, dk, dv, dout, q, k, v, out, lse, { keyMask, variant, rowsBlock });
    return [out, lse, dq, dk, dv].map((t) => batch.read(t));
  });
  await batch.submit();
  const res = await Promise.all(reads.map((r) => Promise.all(r)));
  for (const t of tensors) t.release();
  return res;
}

async function checkCases(g: Gpu, cases: Case[], variant: Variant) {
  const got = await runCases(g, cases, variant);
  for (const [i, c] of cases.entries()) {
    const d = data(c);
    const o = refOptions(c, d.mask);
    const out = new Float64Array(d.q.length), lse = new Float64Array(d.q.length / c.D);
    attentionForwardRef(out, lse, d.q, d.k, d.v, o);
    const dq = new Float64Array(d.q.length),
      dk = new Float64Array(d.k.length),
      dv = new Float64Array(d.k.length);
    attentionBackwardRef(dq, dk, dv, d.dout, d.q, d.k, d.v, out, lse, o);
    const at =
      `${variant} B=${c.B} T=${c.T} S=${o.S} H=${o.H} KVH=${c.KVH} D=${c.D} mask=${c.mask} sharp=${c.sharp} ` +
      `seed=${c.seed}`;
    const [gOut, gLse, gDq, gDk, gDv] = got[i];
    assertClose(gOut, out, FWD, `attention.forward out (${at})`);
    assertClose(gLse, lse, FWD, `attention.forward lse (${at})`);
    assertClose(gDq, dq, BWD, `attention.backward dq (${at})`);
    assertClose(gDk, dk, BWD, `attention.backward dk (${at})`);
    assertClose(gDv, dv, BWD, `attention.backward dv (${at})`);
  }
}

Deno.test("attention reference: backward matches central differences (f64; GQA, KV cache, padding)", () => {
  const shapes: [Case, number[] | undefined][] = [
    [{ B: 1, T: 3, past: 0, KVH: 1, G: 1, D: 4, mask: "none", sharp: 1, seed: 1 }, undefined],
    [{ B: 2, T: 4, past: 2, KVH: 2, G: 2, D: 3, mask: "left", sharp: 1, seed: 2 }, [
      0,
      0,
      0,
      1,
      1,
      1,
      1,
      1,
      1,
      0,
      1,
      1,
    ]],
    [{ B: 1, T: 1, past: 4, KVH: 1, G: 3, D: 5, mask: "right", sharp: 1, seed: 3 }, [1, 1, 1, 0, 0]],
  ];
  for (const [c, mask] of shapes) {
    const o = refOptions(c, mask ? Int32Array.from(mask) : undefined);
    const rand = mulberry32(c.seed);
    const inputs = {
      q: randomArray(c.B * c.T * o.H * c.D, rand, -2, 2),
      k: randomArray(c.B * o.S * c.KVH * c.D, rand, -2, 2),
      v: randomArray(c.B * o.S * c.KVH * c.D, rand, -2, 2),
    };
    const forward = (i: Record<string, Float64Array>) => {
      const out = new Float64Array(i.q.length), lse = new Float64Array(i.q.length / c.D);
      attentionForwardRef(out, lse, i.q, i.k, i.v, o);
      return { out, lse };
    };
    assertGradients((i) => [forward(i).out], inputs, {
      grads: ([dout]) => {
        const { out, lse } = forward(inputs);
        const dq = new Float64Array(inputs.q.length);
        const dk = new Float64Array(inputs.k.length), dv = new Float64Array(inputs.k.length);
        attentionBackwardRef(dq, dk, dv, dout, inputs.q, inputs.k, inputs.v, out, lse, o);
        return { q: dq, k: dk, v: dv };
      },
      seed: c.seed,
    });
  }
});

Deno.test("attention reference: rows without a visible key output 0 with lse 0", () => {
  const o = { B: 1, T: 3, S: 3, H: 2, KVH: 1, D: 2, keyMask: [0, 0, 1] };
  const out = new Float64Array(12).fill(NaN), lse = new Float64Array(6).fill(NaN);
  attentionForwardRef(
    out,
    lse,
    new Float64Array(12).fill(1),
    new Float64Array(6).fill(1),
    [1, 2, 3, 4, 5, 6],
    o,
  );
  assert.deepEqual(Array.from(out), [0, 0, 0, 0, 0, 0, 0, 0, 5, 6, 5, 6]);
  assert.deepEqual(Array.from(lse), [0, 0, 0, 0, 2 / Math.sqrt(2), 2 / Math.sqrt(2)]);
});

for (const variant of VARIANTS) {
  // The rows kernel takes head dims that are multiples of 4 (others run the tiled kernel under "auto").
  const arb = variant === "rows"
    ? caseArb.map((c) => ({ ...c, D: Math.max(4, Math.ceil(c.D / 4) * 4) }))
    : caseArb;
  Deno.test(`attention (${variant}): forward and backward match the f64 reference (GQA 1/2/3/7, decode, padding)`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(arb, { minLength: 1, maxLength: 5 }),
        (cases) => checkCases(gpu, cases, variant),
      ),
      { seed: 0x5eed04, numRuns: 15 },
    );
  });

  Deno.test(`attention (${variant}): several workgroups per head, long KV cache, and head dims 128 and 256`, async () => {
    await checkCases(gpu, [
      { B: 2, T: 67, past: 0, KVH: 2, G: 7, D: 16, mask: "left", sharp: 1, seed: 31 }, // 469 query rows, 67 keys
      { B: 1, T: 1, past: 130, KVH: 2, G: 3, D: 64, mask: "right", sharp: 1, seed: 32 }, // decode over 131 keys
      { B: 1, T: 5, past: 2, KVH: 1, G: 2, D: 128, mask: "random", sharp: 1, seed: 33 },
      { B: 1, T: 3, past: 0, KVH: 1, G: 2, D: 256, mask: "none", sharp: 1, seed: 34 },
    ], variant);
  });

  Deno.test(`attention (${variant}): backward is bitwise deterministic`, async () => {
    const c: Case = { B: 2, T: 19, past: 3, KVH: 2, G: 3, D: 12, mask: "random", sharp: 1, seed: 41 };
    const [a, b] = [await runCases(gpu, [c], variant), await runCases(gpu, [c], variant)];
    for (let i = 0; i < 5; i++) assert.deepEqual(a[0][i], b[0][i]);
  });
}

Deno.test("attention (rows): results are bitwise the same for 1, 2, 4 and 8 positions per invocation", async () => {
  // Ragged T (not a multiple of any block), a KV cache, random padding holes, GQA 3.
  const cases: Case[] = [
    { B: 2, T: 11, past: 3, KVH: 2, G: 3, D: 8, mask: "random", sharp: 1, seed: 51 },
    { B: 1, T: 5, past: 0, KVH: 1, G: 2, D: 12, mask: "left", sharp: 8, seed: 52 },
  ];
  const [one, ...others] = await Promise.all([1, 2, 4, 8].map((b) => runCases(gpu, cases, "rows", b)));
  for (const [k, got] of others.entries()) {
    for (let c = 0; c < cases.length; c++) {
      for (let i = 0; i < 5; i++) {
        assert.deepEqual(got[c][i], one[c][i], `block ${2 ** (k + 1)}, case ${c}, output ${i}`);
      }
    }
  }
  await checkCases(gpu, cases, "rows"); // and they are right
});

Deno.test("attention: the rows kernel rejects head dims it cannot hold and calls past the CPU loop budget", () => {
  const q = new Tensor(gpu, [1, 2, 2, 6], "f32", "q"), k = new Tensor(gpu, [1, 2, 1, 6], "f32", "k");
  const out = new Tensor(gpu, [1, 2, 2, 6], "f32", "out"), lse = new Tensor(gpu, [1, 2, 2], "f32", "lse");
  const batch = new Batch(gpu, "attention.rows.bad");
  try {
    assert.throws(
      () => attentionForward(batch, out, lse, q, k, k, { variant: "rows" }),
      /rows kernel needs a head dim that is a multiple of 4 up to 256, got 6/,
    );
    // 8,192 keys × (G 7 + 1) loop iterations per invocation: past llvmpipe's 65,535.
    const long = new Tensor(gpu, [1, 8192, 7, 4], "f32", "q.long"),
      kl = new Tensor(gpu, [1, 8192, 1, 4], "f32", "k.long");
    const lo = new Tensor(gpu, [1, 8192, 7, 4], "f32", "out.long"),
      ll = new Tensor(gpu, [1, 8192, 7], "f32", "lse.long");
    try {
      assert.throws(
        () => attentionForward(batch, lo, ll, long, kl, kl, { variant: "rows" }),
        /invocations would loop 65536 times \(S 8192 × \(G 7 \+ 1\)\), more than the 65535 a CPU adapter runs/,
      );
    } finally {
      for (const t of [long, kl, lo, ll]) t.release();
    }
  } finally {
    batch.abandon();
    for (const t of [q, k, out, lse]) t.release();
  }
});

Deno.test("attention: shape errors name the tensors", async () => {
  const t = (shape: number[], label: string, dtype: "f32" | "i32" = "f32") =>
    new Tensor(gpu, shape, dtype, label);
  const q = t([1, 4, 6, 8], "q"),
    k = t([1, 4, 4, 8], "k"),
    k3 = t([1, 3, 2, 8], "k3"),
    v = t([1, 4, 4, 8], "v");
  const k2 = t([1, 4, 2, 8], "k2"),
    out = t([1, 4, 6, 8], "out"),
    lse = t([1, 4, 6], "lse"),
    mf = t([1, 4], "maskf");
  const cases: [(b: Batch) => void, RegExp][] = [
    [
      (b) => attentionForward(b, out, lse, q, k, v),
      /6 query heads of "q" are not a multiple of 4 kv heads of "k"/,
    ],
    [
      (b) => attentionForward(b, out, lse, q, k3, k3),
      /tensor "k3" has 3 keys, fewer than the 4 queries of "q"/,
    ],
    [
      (b) => attentionForward(b, out, lse, q, k2, k2, { keyMask: mf }),
      /key mask "maskf" must be i32, got f32/,
    ],
    [(b) => attentionBackward(b, out, v, v, out, q, k, k3, out, lse), /tensor "k3" has shape \[1,3,2,8\]/],
  ];
  for (const [fn, re] of cases) await assert.rejects(runBatch(gpu, "bad", fn), re);
  for (const x of [q, k, k2, k3, v, out, lse, mf]) x.release();
});

Deno.test("attention rows block: 4 positions up to head dim 32, fewer for wider heads, never more than needed", () => {
  assert.deepEqual([4, 8, 32, 36, 64, 128, 256].map((D) => rowsBlock(D, 100)), [4, 4, 4, 2, 2, 1, 1]);
  assert.deepEqual([1, 2, 3, 4, 5].map((n) => rowsBlock(32, n)), [1, 2, 4, 4, 4]);
  assert.throws(() => attentionRowsWgsl({ d4: 65, block: 1 }), /d4 must be an integer in 1..64, got 65/);
  assert.throws(() => attentionRowsWgsl({ d4: 8, block: 9 }), /block must be an integer in 1..8, got 9/);
});
