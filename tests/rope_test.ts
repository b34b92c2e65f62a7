import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch, runBatch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { rowShards } from "../core/gpu/shard.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { ropeBackward, ropeForward, ropeInvFreq } from "../core/model/rope.ts";
import { ropeAngleRef, ropeBackwardRef, ropeForwardRef } from "../core/ref/rope_ref.ts";
import { assertClose } from "./util/close.ts";
import { assertGradients, mulberry32, randomArray } from "./util/finite_diff.ts";

// Tolerances: forward and backward |gpu − ref| ≤ 1e-5 + 1e-4·|ref| (a rotation: no accumulation), for positions
// up to 1e5 (the documented exact range of the shader's cos/sin argument reduction).
const TOL = { atol: 1e-5, rtol: 1e-4 };

const gpu = await Gpu.create();

interface Case {
  B: number;
  T: number;
  H: number;
  D: number;
  theta: number;
  /** "left"/"right": positions = cumsum(mask) − 1 of a padded row; "big": random positions in [0, 1e5). */
  layout: "left" | "right" | "full" | "big";
  seed: number;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  B: fc.integer({ min: 1, max: 3 }),
  T: fc.oneof(fc.constantFrom(1, 2, 7, 13), fc.integer({ min: 1, max: 40 })),
  H: fc.constantFrom(1, 2, 3, 5, 7, 14),
  D: fc.constantFrom(2, 4, 8, 10, 12, 16, 64, 128),
  theta: fc.constantFrom(10000, 1e6),
  layout: fc.constantFrom("left", "right", "full", "big"),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
});

function data(c: Case) {
  const rand = mulberry32(c.seed);
  const N = c.B * c.T;
  const positions = new Int32Array(N);
  for (let b = 0; b < c.B; b++) {
    const len = 1 + Math.floor(rand() * c.T);
    for (let t = 0; t < c.T; t++) {
      const i = b * c.T + t;
      if (c.layout === "big") positions[i] = Math.floor(rand() * 1e5);
      else if (c.layout === "left") positions[i] = Math.max(-1, t - (c.T - len)); // left pads: cumsum − 1 = −1
      else if (c.layout === "right") positions[i] = t < len ? t : len - 1;
      else positions[i] = t;
    }
  }
  const x = Float32Array.from(randomArray(N * c.H * c.D, rand, -2, 2));
  const dout = Float32Array.from(randomArray(N * c.H * c.D, rand, -1, 1));
  return { positions, x, dout };
}

async function checkCases(g: Gpu, cases: Case[]) {
  const batch = new Batch(g, "rope.cases");
  const tensors: Tensor[] = [];
  const keep = (t: Tensor) => (tensors.push(t), t);
  const reads = cases.map((c) => {
    const d = data(c);
    const shape = [c.B, c.T, c.H, c.D];
    const pos = keep(upload(g, d.positions, { shape: [c.B, c.T], label: "positions" }));
    const x = keep(upload(g, d.x, { shape, label: "x" }));
    const dout = keep(upload(g, d.dout, { shape, label: "dout" }));
    const out = keep(new Tensor(g, shape, "f32", "out"));
    const dx = keep(new Tensor(g, shape, "f32", "dx"));
    ropeForward(batch, out, x, pos, { theta: c.theta });
    ropeBackward(batch, dx, dout, pos, { theta: c.theta });
    return { out: batch.read(out), dx: batch.read(dx) };
  });
  await batch.submit();
  for (const [i, c] of cases.entries()) {
    const d = data(c);
    const opts = { heads: c.H, headDim: c.D, theta: c.theta };
    const out = new Float64Array(d.x.length), dx = new Float64Array(d.x.length);
    ropeForwardRef(out, d.x, d.positions, opts);
    ropeBackwardRef(dx, d.dout, d.positions, opts);
    const at = `B=${c.B} T=${c.T} H=${c.H} D=${c.D} θ=${c.theta} ${c.layout} seed=${c.seed}`;
    assertClose(await reads[i].out, out, TOL, `rope.forward (${at})`);
    assertClose(await reads[i].dx, dx, TOL, `rope.backward (${at})`);
  }
  for (const t of tensors) t.release();
}

/** Whitespace-separated integers. */
const bits = (s: string): number[] => s.trim().split(/\s+/).map(Number);

Deno.test("rope: inv_freq equals torch 1.13's float32 values (HF formula) to within 1 ulp", () => {
  // 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D)) as float32 bit patterns.
  const torch64 = bits(`
    1065353216 1061157137 1058010522 1054337179 1050798235 1047712803 1043732615 1040747895
    1036831949 1033475085 1030116802 1026341397 1023510243 1019364175 1016180025 1012562930
    1008981770 1005959600 1001931932 998911607 995049016 991652109 988353832 984533390 981668463
    977573004 974350870 970790693 967166816 964208661 960132947 957076594
  `);
  assert.deepEqual(Array.from(new Uint32Array(ropeInvFreq(64, 10000).buffer)), torch64);
  const torch12 = bits("1065353216 1036831948 1008981769 981668463 953267987 925353392");
  assert.deepEqual(Array.from(new Uint32Array(ropeInvFreq(12, 1e6).buffer)), torch12);
  // D=128, θ=1e6: torch's vectorised powf is not correctly rounded; entry 37 is 1 ulp above ours (correctly
  // rounded), every other entry is identical.
  const torch128 = bits(`
    1065353216 1062095789 1059470816 1057355503 1054337179 1051589887 1049376004 1046607925
    1043732615 1041415569 1038909398 1035900102 1033475085 1031243027 1028093503 1025555485
    1023510243 1020314024 1017657739 1015517192 1012562930 1009782866 1007542573 1004841542
    1001931932 999587246 997151246 994106053 991652109 989493488 986306396 983738103 981668463
    978534184 975846212 973680130 970790693 967977467 965710450 963077266 960132947 957760292
    955395298 952313781 949830564 947746260 944521150 941922219 939827890 936756289 934036253
    931844333 929020495 926173710 923879651 921315122 918335681 915934722 913641584 910523307
    908010468 905985516 902737785 900107852
  `);
  const ours = Array.from(new Uint32Array(ropeInvFreq(128, 1e6).buffer));
  assert.deepEqual(ours.map((v, i) => torch128[i] - v), torch128.map((_, i) => (i === 37 ? 1 : 0)));
  // The reference's angles are the GPU table times the position, rounded once to f32.
  for (const pos of [0, 1, 7, 4095, 32767, 99999]) {
    ropeInvFreq(128, 1e6).forEach((f, j) =>
      assert.equal(ropeAngleRef(pos, j, 128, 1e6), Math.fround(pos * f))
    );
  }
  // torch float32 angles of pair j = 5 at positions 32767 and 100000 (D = 64, θ = 1e6).
  assert.equal(ropeAngleRef(32767, 5, 64, 1e6), 3783.874267578125);
  assert.equal(ropeAngleRef(100000, 5, 64, 1e6), 11547.8203125);
});

Deno.test("rope reference: backward matches central differences (f64)", () => {
  const opts = { heads: 3, headDim: 10, theta: 10000 };
  const positions = [0, 5, 17, 40000];
  const rand = mulberry32(3);
  const inputs = { x: randomArray(positions.length * 30, rand, -2, 2) };
  assertGradients(
    (i) => {
      const out = new Float64Array(i.x.length);
      ropeForwardRef(out, i.x, positions, opts);
      return [out];
    },
    inputs,
    {
      grads: ([dout]) => {
        const dx = new Float64Array(dout.length);
        ropeBackwardRef(dx, dout, positions, opts);
        return { x: dx };
      },
    },
  );
});

Deno.test("rope: forward and backward match the f64 reference (left/right padding, positions to 1e5)", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(caseArb, { minLength: 1, maxLength: 6 }), (cases) => checkCases(gpu, cases)),
    { seed: 0x5eed02, numRuns: 12 },
  );
});

Deno.test("rope: cos/sin stay accurate at every position in [0, 1e5) for the fastest pair", async () => {
  // j = 0 has inv_freq = 1, so the angle is the position itself: the widest argument range.
  const n = 100000;
  const positions = Int32Array.from({ length: n }, (_, i) => i);
  const x = new Float32Array(n * 2);
  for (let i = 0; i < n; i++) x[2 * i] = 1; // (x1, x2) = (1, 0) → out = (cos a, sin a)
  const out = new Tensor(gpu, [n, 1, 2], "f32", "out");
  const [px, pp] = [upload(gpu, x, { shape: [n, 1, 2] }), upload(gpu, positions)];
  const got = await runBatch(
    gpu,
    "rope.range",
    (b) => (ropeForward(b, out, px, pp, { theta: 10000 }), b.read(out)),
  );
  const want = new Float64Array(n * 2);
  for (let i = 0; i < n; i++) [want[2 * i], want[2 * i + 1]] = [Math.cos(i), Math.sin(i)];
  assertClose(await got, want, { atol: 5e-7, rtol: 0 }, "cos/sin of integer angles");
  for (const t of [out, px, pp]) t.release();
});

Deno.test("rope: tokens are sharded under a lowered storage-binding limit", async () => {
  // Tokens of 3·10 floats (120 bytes) start aligned every align/8 tokens; a binding of 60·align bytes holds
  // align/2 tokens, so 3·(align + 5) tokens take about seven shards.
  const align = gpu.limits.storageOffsetAlignment;
  const small = await Gpu.create({ maxBindingSize: 60 * align });
  try {
    assert.ok(rowShards(small, 3 * (align + 5), 30).length >= 5);
    await checkCases(small, [{ B: 3, T: align + 5, H: 3, D: 10, theta: 1e6, layout: "left", seed: 9 }]);
  } finally {
    small.destroy();
  }
});

Deno.test("rope: errors name the tensor", async () => {
  const x = new Tensor(gpu, [2, 3, 10], "f32", "q"), out = new Tensor(gpu, [2, 3, 10], "f32", "q_rot");
  const pos = new Tensor(gpu, [3], "i32", "positions"), posF = new Tensor(gpu, [2], "f32", "posf");
  const odd = new Tensor(gpu, [2, 3, 9], "f32", "odd");
  await assert.rejects(
    runBatch(gpu, "bad", (b) => ropeForward(b, out, x, pos, { theta: 1e4 })),
    /rope\.forward: tensor "positions" has 3 positions, expected one per token \(2\)/,
  );
  await assert.rejects(
    runBatch(gpu, "bad", (b) => ropeBackward(b, out, x, posF, { theta: 1e4 })),
    /rope\.backward: tensor "posf" must be i32 positions, got f32/,
  );
  await assert.rejects(
    runBatch(gpu, "bad", (b) => ropeForward(b, out, odd, pos, { theta: 1e4 })),
    /head dim of tensor "odd" must be even, got 9/,
  );
  for (const t of [x, out, pos, posF, odd]) t.release();
});
