import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch, runBatch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { readF32, upload } from "../core/gpu/io.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { canBindTextures, checkTile, GPU_TILES, matmul, type MatmulOptions } from "../core/ops/matmul.ts";
import { planChunks } from "../core/ops/matmul_plan.ts";
import { matmulRef } from "../core/ref/matmul_ref.ts";
import { assertClose, type Tolerance } from "./util/close.ts";
import { randomF32 } from "./util/random.ts";

const gpu = await Gpu.create();

// Tolerance |gpu − ref| ≤ atol + rtol·|ref| against an f64 reference on the same f32 inputs (values in [-1, 1)):
// each output is a sum of K products of size ≤ 1 accumulated in f32, whose rounding error grows like √K·2⁻²⁴·|partial
// sums| for random signs; 2e-6·√K leaves ~10× margin over the largest error seen (K up to 3000).
const tol = (K: number): Tolerance => ({ atol: 1e-6 + 2e-6 * Math.sqrt(K), rtol: 1e-5 });

interface Case {
  M: number;
  N: number;
  K: number;
  batches: number;
  transA: boolean;
  transB: boolean;
  sharedB: boolean;
  bias: boolean;
  accumulate: boolean;
  seed: number;
}

type Variant = Pick<MatmulOptions, "variant" | "cpuSource" | "tile">;

/** Runs one case on `g` and compares every output element with the f64 reference. */
async function check(g: Gpu, c: Case, v: Variant): Promise<void> {
  const { M, N, K, batches: B } = c;
  const a = randomF32(B * M * K, c.seed), b = randomF32((c.sharedB ? 1 : B) * K * N, c.seed + 1);
  const bias = randomF32(N, c.seed + 2), init = randomF32(B * M * N, c.seed + 3);
  const lead = B > 1 ? [B] : [];
  const ta = upload(g, a, { shape: [...lead, ...(c.transA ? [K, M] : [M, K])], label: "a" });
  const tb = upload(g, b, {
    shape: [...(c.sharedB ? [] : lead), ...(c.transB ? [N, K] : [K, N])],
    label: "b",
  });
  const tbias = upload(g, bias, { shape: [N], label: "bias" });
  const out = upload(g, init, { shape: [...lead, M, N], label: "out" });
  await runBatch(g, "matmul_test", (batch) =>
    matmul(batch, {
      out,
      a: ta,
      b: tb,
      transA: c.transA,
      transB: c.transB,
      bias: c.bias ? tbias : undefined,
      accumulate: c.accumulate,
      ...v,
    }));
  const got = await readF32(out);
  const want = matmulRef({
    a,
    b,
    M,
    N,
    K,
    batches: B,
    transA: c.transA,
    transB: c.transB,
    sharedB: c.sharedB && B > 1,
    bias: c.bias ? bias : undefined,
    accumulate: c.accumulate ? init : undefined,
  });
  for (const t of [ta, tb, tbias, out]) t.release();
  assertClose(got, want, tol(K), `matmul ${JSON.stringify(c)} ${JSON.stringify(v)}`);
}

const SIZES = [1, 2, 3, 4, 5, 7, 8, 13, 16, 17, 31, 33, 64, 97, 128, 129, 200, 257];
const arbCase = (maxWork: number) =>
  fc.record({
    M: fc.constantFrom(...SIZES),
    N: fc.constantFrom(...SIZES),
    K: fc.constantFrom(...SIZES),
    batches: fc.constantFrom(1, 1, 2, 3),
    transA: fc.boolean(),
    transB: fc.boolean(),
    sharedB: fc.boolean(),
    bias: fc.boolean(),
    accumulate: fc.boolean(),
    seed: fc.integer({ min: 1, max: 1 << 30 }),
  }).filter((c) => c.M * c.N * c.K * c.batches <= maxWork);

// [name, variant, skip reason, property runs, transposes]. Every CPU kernel variant compiles its own pipeline
// (seconds each on lavapipe), so the buffer-packed fallback (used only by runtimes that cannot bind textures) gets
// fewer random cases and the two transposes that cover both stored orientations of each operand.
const ALL: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];
const variants: [string, Variant, string | false, number, [boolean, boolean][]][] = [
  [
    "cpu kernel, texture-packed operands",
    { variant: "cpu", cpuSource: "texture" },
    canBindTextures() ? false : "the runtime's Batch does not bind texture views",
    24,
    ALL,
  ],
  ["cpu kernel, buffer-packed operands", { variant: "cpu", cpuSource: "buffer" }, false, 6, [[false, false], [
    true,
    true,
  ]]],
  ["tiled (GPU) kernel", { variant: "tiled" }, false, 24, ALL],
];

for (const [name, v, skip, numRuns, layouts] of variants) {
  Deno.test({
    name: `matmul matches the f64 reference on ragged shapes: ${name}${skip ? ` (skipped: ${skip})` : ""}`,
    ignore: skip !== false,
    fn: async () => {
      // every transpose combination with ragged sizes, plus random cases
      for (const [transA, transB] of layouts) {
        await check(gpu, {
          M: 37,
          N: 29,
          K: 41,
          batches: 2,
          transA,
          transB,
          sharedB: false,
          bias: true,
          accumulate: true,
          seed: 7,
        }, v);
      }
      await fc.assert(fc.asyncProperty(arbCase(2_000_000), (c) => check(gpu, c, v)), {
        seed: 20260,
        numRuns,
      });
    },
  });
}

Deno.test("every tile configuration of the GPU kernel matches the reference (ragged, batched, bias, accumulate)", async () => {
  for (const [name, tile] of Object.entries(GPU_TILES)) {
    const v: Variant = { variant: "tiled", tile };
    for (const [transA, transB] of ALL) {
      // sizes straddling the 64- and 128-wide tiles and a K that is not a multiple of bk
      const base = { batches: 2, transA, transB, sharedB: transA, bias: true, accumulate: true, seed: 3 };
      await check(gpu, { ...base, M: 131, N: 67, K: 21 }, v);
      await check(gpu, { ...base, M: 5, N: 129, K: 3, batches: 1 }, v);
    }
    await fc.assert(fc.asyncProperty(arbCase(300_000), (c) => check(gpu, c, v)), { seed: 20261, numRuns: 4 })
      .catch((e) => {
        throw new Error(`tile ${name}: ${e instanceof Error ? e.message : e}`);
      });
  }
});

Deno.test("tile configurations the device cannot run are rejected with the reason", () => {
  const limits = {
    maxInvocationsPerWorkgroup: 256,
    maxWorkgroupStorageSize: 16384,
    maxWorkgroupSizeX: 64,
    maxWorkgroupSizeY: 64,
  };
  for (const tile of Object.values(GPU_TILES)) checkTile(tile, limits);
  const cases: [Partial<typeof GPU_TILES[string]>, RegExp][] = [
    [{ tm: 6 }, /multiples of 4/],
    [{ bm: 66 }, /bm a multiple of tm/],
    [{ bm: 256, bn: 256, tm: 4, tn: 4 }, /4096 invocations per workgroup, the device allows 256/],
    [{ bm: 128, bn: 128, bk: 32, tm: 8, tn: 8 }, /32768 bytes of workgroup memory, the device allows 16384/],
    [{ bk: 0 }, /bk = 0, expected a positive integer/],
    [{ bm: 4, bn: 512, tm: 4, tn: 4 }, /a 128×1 workgroup, the device allows 64×64/],
  ];
  for (const [change, message] of cases) {
    assert.throws(() => checkTile({ ...GPU_TILES["64x64x16/4x4"], ...change }, limits), message);
  }
});

Deno.test("matmul of a few million elements (default kernel) matches the reference on sampled rows", async () => {
  const M = 1500, K = 2048, N = 1100; // A 3.1M, C 1.65M elements
  for (const transB of [false, true]) {
    const a = randomF32(M * K, 11), b = randomF32(K * N, 12);
    const ta = upload(gpu, a, { shape: [M, K], label: "a" });
    const tb = upload(gpu, b, { shape: transB ? [N, K] : [K, N], label: "b" });
    const out = new Tensor(gpu, [M, N], "f32", "out");
    await runBatch(gpu, "big", (batch) => matmul(batch, { out, a: ta, b: tb, transB }));
    const got = await readF32(out);
    for (const m of [0, 1, 777, 1024, M - 1]) {
      const want = matmulRef({ a: a.subarray(m * K, (m + 1) * K), b, M: 1, N, K, transB });
      assertClose(got.subarray(m * N, (m + 1) * N), want, tol(K), `row ${m} (transB ${transB})`);
    }
    for (const t of [ta, tb, out]) t.release();
  }
});

Deno.test("matmul splits tensors over a lowered storage-binding limit", async () => {
  const small = await Gpu.create({ maxBindingSize: 4096 }); // 1024 f32 per binding
  try {
    const cases: Case[] = [
      {
        M: 70,
        N: 45,
        K: 90,
        batches: 1,
        transA: false,
        transB: true,
        sharedB: false,
        bias: true,
        accumulate: false,
        seed: 3,
      },
      {
        M: 33,
        N: 100,
        K: 50,
        batches: 3,
        transA: true,
        transB: false,
        sharedB: false,
        bias: false,
        accumulate: true,
        seed: 4,
      },
      {
        M: 9,
        N: 2000,
        K: 3,
        batches: 2,
        transA: false,
        transB: false,
        sharedB: true,
        bias: true,
        accumulate: true,
        seed: 5,
      },
      {
        M: 3,
        N: 5,
        K: 1500,
        batches: 1,
        transA: true,
        transB: true,
        sharedB: false,
        bias: false,
        accumulate: false,
        seed: 6,
      },
    ];
    // the adapter's default kernel on every case, the other kernels on one case each
    for (const c of cases) await check(small, c, {});
    await check(small, cases[0], { variant: "tiled" });
    await check(small, cases[1], { variant: small.isCpu ? "tiled" : "cpu", cpuSource: "buffer" });
  } finally {
    small.destroy();
  }
});

Deno.test("matmul chunk plans respect the limits and cover the problem once", () => {
  const d = {
    M: 1000,
    N: 3000,
    K: 700,
    batches: 3,
    transA: true,
    transB: false,
    strideA: 700_000,
    strideB: 0,
    strideC: 3e6,
  };
  const plan = planChunks(d, {
    kind: "cpu",
    source: "texture",
    ku: 8,
    maxBindingElems: 1 << 18,
    alignElems: 8,
    maxTexture: 512,
  });
  const seen = new Float64Array(d.batches * d.M * d.N);
  for (const ch of plan.chunks) {
    assert.ok(
      Math.ceil(ch.mc / 4) <= 512 && Math.ceil(ch.kc / 8) * 8 <= 512,
      `texture limit: ${JSON.stringify(ch)}`,
    );
    for (let z = ch.b0; z < ch.b0 + ch.bc; z++) {
      for (let m = ch.m0; m < ch.m0 + ch.mc; m++) {
        for (let n = ch.n0; n < ch.n0 + ch.nc; n++) seen[(z * d.M + m) * d.N + n] += ch.kc;
      }
    }
  }
  assert.ok(seen.every((k) => k === d.K), "every output gets exactly K terms");
});

Deno.test("matmul rejects mismatched shapes and aliased outputs with named tensors", () => {
  const a = new Tensor(gpu, [4, 5], "f32", "act"), b = new Tensor(gpu, [6, 7], "f32", "weight");
  const out = new Tensor(gpu, [4, 7], "f32", "y"), sq = new Tensor(gpu, [4, 4], "f32", "sq");
  const sq2 = new Tensor(gpu, [4, 4], "f32", "sq2");
  const batch = new Batch(gpu, "errors");
  try {
    assert.throws(() => matmul(batch, { out, a, b }), /shapes do not agree.*"act".*"weight"/);
    assert.throws(() => matmul(batch, { out: sq, a: sq2, b: sq.reshape([4, 4]) }), /out "sq" aliases input/);
    assert.throws(() => matmul(batch, { out, a, b: a, transB: true }), /shapes do not agree/);
  } finally {
    batch.abandon();
  }
  for (const t of [a, b, out, sq, sq2]) t.release();
});

Deno.test("matmul with K = 0 writes the bias (and keeps accumulated values)", async () => {
  for (
    const v of [{ variant: "cpu" as const, cpuSource: "buffer" as const }, { variant: "tiled" as const }]
  ) {
    await check(gpu, {
      M: 3,
      N: 6,
      K: 0,
      batches: 1,
      transA: false,
      transB: true,
      sharedB: false,
      bias: true,
      accumulate: true,
      seed: 9,
    }, v);
  }
});
