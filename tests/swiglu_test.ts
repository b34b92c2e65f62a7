import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch, runBatch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { rowShards } from "../core/gpu/shard.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import {
  swigluBackward,
  swigluForward,
  swigluFusedBackward,
  swigluFusedForward,
} from "../core/model/swiglu.ts";
import {
  splitGateUpRef,
  swigluBackwardRef,
  swigluForwardRef,
  swigluFusedBackwardRef,
  swigluFusedForwardRef,
} from "../core/ref/swiglu_ref.ts";
import { assertClose } from "./util/close.ts";
import { assertGradients, checkGradients, mulberry32, randomArray } from "./util/finite_diff.ts";

// Tolerances: forward |gpu − ref| ≤ 1e-5 + 1e-4·|ref|; backward ≤ 1e-5 + 1e-4·|ref| as well (elementwise, no
// accumulation; σ from exp differs from f64 by a few ulp).
const FWD = { atol: 1e-5, rtol: 1e-4 };
const BWD = { atol: 1e-5, rtol: 1e-4 };

const gpu = await Gpu.create();

interface Case {
  N: number;
  I: number;
  seed: number;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  N: fc.oneof(fc.constantFrom(1, 2, 3, 7, 13), fc.integer({ min: 1, max: 30 })),
  I: fc.oneof(fc.constantFrom(1, 2, 59, 64, 71, 103, 255, 257), fc.integer({ min: 1, max: 300 })),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
});

/** gate ~ U(−8, 8) with a few saturating values (±30, ±90), up ~ U(−2, 2), fused as [gate | up] per row. */
function data(c: Case) {
  const rand = mulberry32(c.seed);
  const gate = Float32Array.from(randomArray(c.N * c.I, rand, -8, 8));
  const extremes = [90, -90, 30, -30];
  for (let i = 0; i < Math.min(4, gate.length); i++) gate[Math.floor(rand() * gate.length)] = extremes[i];
  const up = Float32Array.from(randomArray(c.N * c.I, rand, -2, 2));
  const dout = Float32Array.from(randomArray(c.N * c.I, rand, -1, 1));
  const gateUp = new Float32Array(2 * c.N * c.I);
  for (let r = 0; r < c.N; r++) {
    gateUp.set(gate.subarray(r * c.I, (r + 1) * c.I), r * 2 * c.I);
    gateUp.set(up.subarray(r * c.I, (r + 1) * c.I), r * 2 * c.I + c.I);
  }
  return { gate, up, dout, gateUp };
}

async function checkCases(g: Gpu, cases: Case[]) {
  const batch = new Batch(g, "swiglu.cases");
  const tensors: Tensor[] = [];
  const keep = (t: Tensor) => (tensors.push(t), t);
  const reads = cases.map((c) => {
    const d = data(c);
    const shape = [c.N, c.I], wide = [c.N, 2 * c.I];
    const [gate, up, dout] = [d.gate, d.up, d.dout].map((a) => keep(upload(g, a, { shape })));
    const gateUp = keep(upload(g, d.gateUp, { shape: wide, label: "gate_up" }));
    const [out, dgate, dup, outF] = [0, 1, 2, 3].map(() => keep(new Tensor(g, shape, "f32", "out")));
    const dGateUp = keep(new Tensor(g, wide, "f32", "dgate_up"));
    swigluForward(batch, out, gate, up);
    swigluBackward(batch, dgate, dup, dout, gate, up);
    swigluFusedForward(batch, outF, gateUp);
    swigluFusedBackward(batch, dGateUp, dout, gateUp);
    return [out, dgate, dup, outF, dGateUp].map((t) => batch.read(t));
  });
  await batch.submit();
  for (const [i, c] of cases.entries()) {
    const d = data(c);
    const [out, dgate, dup, outF, dGateUp] = await Promise.all(reads[i]);
    const n = c.N * c.I;
    const want = { out: new Float64Array(n), dgate: new Float64Array(n), dup: new Float64Array(n) };
    swigluForwardRef(want.out, d.gate, d.up);
    swigluBackwardRef(want.dgate, want.dup, d.dout, d.gate, d.up);
    const wantF = { out: new Float64Array(n), d: new Float64Array(2 * n) };
    swigluFusedForwardRef(wantF.out, d.gateUp, { I: c.I });
    swigluFusedBackwardRef(wantF.d, d.dout, d.gateUp, { I: c.I });
    const at = `N=${c.N} I=${c.I} seed=${c.seed}`;
    assertClose(out, want.out, FWD, `swiglu.forward (${at})`);
    assertClose(dgate, want.dgate, BWD, `swiglu.backward dgate (${at})`);
    assertClose(dup, want.dup, BWD, `swiglu.backward dup (${at})`);
    assertClose(outF, wantF.out, FWD, `swiglu.forward_fused (${at})`);
    assertClose(dGateUp, wantF.d, BWD, `swiglu.backward_fused (${at})`);
  }
  for (const t of tensors) t.release();
}

function swigluLoss(inputs: Record<string, Float64Array>): Float64Array[] {
  const out = new Float64Array(inputs.gate.length);
  swigluForwardRef(out, inputs.gate, inputs.up);
  return [out];
}

function swigluGrads(inputs: Record<string, Float64Array>) {
  return ([dout]: Float64Array[]) => {
    const dgate = new Float64Array(dout.length), dup = new Float64Array(dout.length);
    swigluBackwardRef(dgate, dup, dout, inputs.gate, inputs.up);
    return { gate: dgate, up: dup };
  };
}

Deno.test("swiglu reference: backward (separate and fused) matches central differences (f64)", () => {
  const rand = mulberry32(4);
  const inputs = { gate: randomArray(60, rand, -6, 6), up: randomArray(60, rand, -2, 2) };
  assertGradients(swigluLoss, inputs, { grads: swigluGrads(inputs) });
  const fused = { gateUp: randomArray(2 * 3 * 7, rand, -6, 6) }; // N = 3, I = 7
  assertGradients(
    (i) => {
      const out = new Float64Array(21);
      swigluFusedForwardRef(out, i.gateUp, { I: 7 });
      return [out];
    },
    fused,
    {
      grads: ([dout]) => {
        const d = new Float64Array(42);
        swigluFusedBackwardRef(d, dout, fused.gateUp, { I: 7 });
        return { gateUp: d };
      },
    },
  );
  assert.deepEqual(splitGateUpRef([1, 2, 3, 4, 5, 6, 7, 8], 2), {
    gate: new Float64Array([1, 2, 5, 6]),
    up: new Float64Array([3, 4, 7, 8]),
  });
});

Deno.test("finite differences: a small step fails in f32 and passes in f64 (why checks run in f64)", () => {
  const rand = mulberry32(8);
  const inputs = { gate: randomArray(40, rand, -3, 3), up: randomArray(40, rand, -2, 2) };
  const opts = { grads: swigluGrads(inputs), atol: 1e-4, rtol: 1e-3 };
  // f32 with h = 1e-6: x ± h is rounded to the f32 grid and the loss difference drowns in f32 rounding.
  const bad = checkGradients(swigluLoss, inputs, { ...opts, h: 1e-6, dtype: "f32" });
  assert.equal(bad.ok, false, `f32 check with h=1e-6 unexpectedly passed (max |Δ| ${bad.maxAbs})`);
  assert.ok(bad.maxAbs > 1e-2, `f32 rounding error ${bad.maxAbs} is smaller than expected`);
  // Same step in f64: well within tolerance.
  const good = checkGradients(swigluLoss, inputs, { ...opts, h: 1e-6 });
  assert.ok(good.ok && good.maxAbs < 1e-5, `f64 check failed: max |Δ| ${good.maxAbs}`);
  // f32 only works with a large step and loose tolerances.
  const coarse = checkGradients(swigluLoss, inputs, {
    ...opts,
    h: 1e-2,
    dtype: "f32",
    atol: 2e-2,
    rtol: 2e-2,
  });
  assert.ok(coarse.ok, `f32 check with h=1e-2 failed: max |Δ| ${coarse.maxAbs}`);
});

Deno.test("swiglu: separate and fused forward/backward match the f64 reference on ragged shapes", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(caseArb, { minLength: 1, maxLength: 6 }), (cases) => checkCases(gpu, cases)),
    { seed: 0x5eed03, numRuns: 12 },
  );
});

Deno.test("swiglu: tensors are sharded under a lowered storage-binding limit", async () => {
  // Fused rows of 2·37 floats (296 bytes); (rows, 37) views must start on multiples of align/4 rows, so a
  // binding of 10·37·align bytes holds a few such blocks and N = 4·align rows needs several shards.
  const align = gpu.limits.storageOffsetAlignment;
  const small = await Gpu.create({ maxBindingSize: 10 * 37 * align });
  try {
    assert.ok(rowShards(small, 4 * align + 3, 2 * 37).length >= 2);
    await checkCases(small, [{ N: 4 * align + 3, I: 37, seed: 22 }, { N: 5, I: 64, seed: 23 }]);
  } finally {
    small.destroy();
  }
});

Deno.test("swiglu: shape errors name the tensor", async () => {
  const a = new Tensor(gpu, [3, 5], "f32", "gate"), b = new Tensor(gpu, [3, 6], "f32", "up");
  const wide = new Tensor(gpu, [3, 9], "f32", "gate_up");
  await assert.rejects(
    runBatch(gpu, "bad", (bt) => swigluForward(bt, a, a, b)),
    /swiglu\.forward: tensor "up" has shape \[3,6\], expected \[3,5\]/,
  );
  await assert.rejects(
    runBatch(gpu, "bad", (bt) => swigluFusedForward(bt, a, wide)),
    /swiglu\.forward_fused: tensor "gate_up" has shape \[3,9\], expected \(\.\.\., 2I\)/,
  );
  await assert.rejects(
    runBatch(gpu, "bad", (bt) => swigluFusedBackward(bt, wide, a, b)),
    /swiglu\.backward_fused: tensor "gate" has shape \[3,5\], expected \[3,3\]/,
  );
  for (const t of [a, b, wide]) t.release();
});
