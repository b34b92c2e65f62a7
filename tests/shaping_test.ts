import assert from "node:assert/strict";
import fc from "fast-check";
import {
  applyClip,
  applyClipDelta,
  applyDelta,
  applyMinForm,
  shapeStepRewards,
  type ShapingKind,
} from "../core/rewards/shaping.ts";
import { combineRewards } from "../core/rewards/combine.ts";

// Sums of up to ~60 differences of numbers in [0, 1]: round-off stays far below this.
const ATOL = 1e-12;

const score = fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom(0, 1, 0.5));
const scores = fc.array(score, { maxLength: 30 });
const eta = fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom(0, 1));

function close(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const diff = Math.abs(got[i] - want[i]);
    assert.ok(diff <= ATOL, `${what}: index ${i}: got ${got[i]}, want ${want[i]} (|diff| ${diff} > ${ATOL})`);
  }
}

/** Σ_{j≥k} x_j for every k (process return from step k, undiscounted). */
function suffixSums(x: ArrayLike<number>): number[] {
  const out = new Array<number>(x.length);
  for (let k = x.length - 1, s = 0; k >= 0; k--) out[k] = s += x[k];
  return out;
}

const total = (x: ArrayLike<number>) => Array.from(x).reduce((a, b) => a + b, 0);

Deno.test("shaping: worked example", () => {
  const r = [0.9, 0.5, 0.8];
  close(applyClip(r, 0.6), [0, -0.1, 0], "clip");
  close(applyDelta(r), [0.4, -0.3, 0.8], "delta");
  close(applyDelta(r, { finalStepZero: true }), [0.4, 0.5, 0], "delta finalStepZero");
  close(applyClipDelta(r, 0.6), [0.1, -0.1, 0], "clip-delta");
  close(
    applyClipDelta([0.2, 0.9, 0.3], 0.6, { finalStepZero: true }),
    [-0.4, 0, 0],
    "clip-delta finalStepZero",
  );
  close(applyMinForm(r), [0, -0.3, 0.8], "min");
  close(applyDelta([0.7], { finalStepZero: true }), [0], "delta finalStepZero K=1");
  for (const kind of ["none", "clip", "delta", "clip_delta", "min"] as ShapingKind[]) {
    assert.equal(shapeStepRewards([], { kind, eta: 0.5 }).length, 0, `${kind} of empty input`);
  }
  close(shapeStepRewards(new Float32Array([0.25, 1]), { kind: "none" }), [0.25, 1], "none");
});

Deno.test("shaping: invalid inputs give clear errors", () => {
  assert.throws(
    () => applyClip([0.1, NaN], 0.5),
    /Invalid step reward at index 1: expected a number in \[0, 1\], got "NaN"/,
  );
  assert.throws(() => applyDelta([1.5]), /index 0: .* got "1.5"/);
  assert.throws(() => applyMinForm([-0.01]), /got "-0.01"/);
  assert.throws(() => applyDelta(["0.5" as unknown as number]), /got "0.5"/);
  assert.throws(() => applyClip([0.5], NaN), /Invalid clip threshold eta: .* got "NaN"/);
  assert.throws(() => shapeStepRewards([0.5], { kind: "clip" }), /eta: .* got "undefined"/);
  assert.throws(() => shapeStepRewards([0.5], { kind: "clip_delta", eta: 2 }), /got "2"/);
  assert.throws(() => shapeStepRewards([0.5], { kind: "sum" as ShapingKind }), /Invalid shaping kind "sum"/);
});

Deno.test("Clip: non-positive, r − η below the threshold, monotone in r", () => {
  fc.assert(
    fc.property(scores, scores, eta, (r, r2, e) => {
      const c = applyClip(r, e);
      r.forEach((v, k) => {
        assert.ok(c[k] <= 0);
        assert.equal(c[k], v < e ? v - e : 0);
      });
      const lo = r.map((v, k) => Math.min(v, r2[k] ?? v));
      const clo = applyClip(lo, e);
      clo.forEach((v, k) => assert.ok(v <= c[k], `not monotone at ${k}`));
      assert.deepEqual(shapeStepRewards(r, { kind: "clip", eta: e }), c);
    }),
    { seed: 1, numRuns: 1000 },
  );
});

Deno.test("Delta, Clip-Delta, min-form: returns telescope and stay bounded", () => {
  fc.assert(
    fc.property(scores, eta, (r, e) => {
      const K = r.length;
      const c = Array.from(applyClip(r, e));
      // Delta: return from step k is r_k; total in [0, 1].
      close(suffixSums(applyDelta(r)), r, "delta suffix sums");
      // finalStepZero: r_k for k < K, 0 for k = K.
      close(
        suffixSums(applyDelta(r, { finalStepZero: true })),
        r.map((v, k) => k < K - 1 ? v : 0),
        "delta fsz",
      );
      // Clip-Delta: return from step k is c_k = min(r_k − η, 0) ∈ [−η, 0].
      close(suffixSums(applyClipDelta(r, e)), c, "clip-delta suffix sums");
      close(
        suffixSums(applyClipDelta(r, e, { finalStepZero: true })),
        c.map((v, k) => k < K - 1 ? v : 0),
        "cd fsz",
      );
      // Min-form: return from step k is min_{j≥k} r_j.
      close(suffixSums(applyMinForm(r)), r.map((_, k) => Math.min(...r.slice(k))), "min suffix sums");
      const totals: [string, number, number, number][] = [
        ["delta", total(applyDelta(r)), 0, 1],
        ["delta fsz", total(applyDelta(r, { finalStepZero: true })), 0, 1],
        ["clip", total(applyClip(r, e)), -e * K, 0],
        ["clip-delta", total(applyClipDelta(r, e)), -e, 0],
        ["clip-delta fsz", total(applyClipDelta(r, e, { finalStepZero: true })), -e, 0],
        ["min", total(applyMinForm(r)), 0, 1],
      ];
      for (const [name, t, lo, hi] of totals) {
        assert.ok(t >= lo - ATOL && t <= hi + ATOL, `${name}: total ${t} outside [${lo}, ${hi}]`);
      }
    }),
    { seed: 2, numRuns: 1000 },
  );
});

Deno.test("reward hacking: repeating a step never raises the shaped return, but raises the raw sum", () => {
  const arb = fc.record({
    r: fc.array(score, { minLength: 1, maxLength: 20 }),
    at: fc.nat(),
    copies: fc.integer({ min: 1, max: 10 }),
    e: eta,
  });
  let rawRaised = 0;
  fc.assert(
    fc.property(arb, ({ r, at, copies, e }) => {
      const k = at % r.length;
      const hacked = [...r.slice(0, k + 1), ...new Array(copies).fill(r[k]), ...r.slice(k + 1)];
      const shaped: [string, (x: number[]) => Float64Array, boolean][] = [
        ["clip", (x) => applyClip(x, e), true],
        ["delta", (x) => applyDelta(x), true],
        ["clip-delta", (x) => applyClipDelta(x, e), true],
        ["clip-delta fsz", (x) => applyClipDelta(x, e, { finalStepZero: true }), true],
        // With finalStepZero a 1-step solution has process return 0 (the success reward judges it);
        // from K ≥ 2 on the return is r_1 and repetition is neutral.
        ["delta fsz", (x) => applyDelta(x, { finalStepZero: true }), r.length >= 2],
        ["min", (x) => applyMinForm(x), true],
      ];
      for (const [name, f, applies] of shaped) {
        if (!applies) continue;
        const before = total(f(r));
        const after = total(f(hacked));
        assert.ok(after <= before + ATOL, `${name}: repetition raised the return ${before} -> ${after}`);
      }
      const rawBefore = total(shapeStepRewards(r, { kind: "none" }));
      const rawAfter = total(shapeStepRewards(hacked, { kind: "none" }));
      // The raw sum gains exactly copies·r_k (so it rises whenever r_k > 0, up to round-off for tiny r_k).
      const gain = rawAfter - rawBefore;
      assert.ok(Math.abs(gain - copies * r[k]) <= ATOL, `raw gain ${gain}, want ${copies} * ${r[k]}`);
      if (r[k] > 1e-9) {
        assert.ok(gain > 0, `raw sum not raised by repeating r_k = ${r[k]}`);
        rawRaised++;
      }
    }),
    { seed: 3, numRuns: 1000 },
  );
  // The raw-sum hack exists: many random cases repeat a step with a clearly positive score.
  assert.ok(rawRaised > 100, `raw sum raised in only ${rawRaised} of 1000 cases`);
  // The K = 1 finalStepZero case, explicitly: process return 0 -> r_1 when the single step is repeated.
  assert.equal(total(applyDelta([0.7], { finalStepZero: true })), 0);
  assert.ok(Math.abs(total(applyDelta([0.7, 0.7], { finalStepZero: true })) - 0.7) < ATOL);
});

Deno.test("combineRewards: step rewards on end tokens, success on the last token, minus KL", () => {
  const out = combineRewards({
    stepRewards: [0.5, -0.25, 1],
    stepEndTokens: [1, 1, 4],
    success: 1,
    length: 6,
    alpha: 2,
    klPenalty: [0.1, 0, 0, 0, 0, 0.2],
  });
  close(out, [-0.1, 0.5, 0, 0, 2, 0.8], "combine");
  close(
    combineRewards({ stepRewards: [], stepEndTokens: [], success: 0.5, length: 1, alpha: 1 }),
    [0.5],
    "T=1",
  );
  const base = { stepRewards: [0.5], stepEndTokens: [0], success: 0, length: 2, alpha: 1 };
  assert.throws(
    () => combineRewards({ ...base, stepEndTokens: [2] }),
    /stepEndTokens\[0\]": expected a token index in \[0, 2\), got "2"/,
  );
  assert.throws(
    () => combineRewards({ ...base, stepEndTokens: [] }),
    /expected 1 entries \(one per step reward\), got 0/,
  );
  assert.throws(() => combineRewards({ ...base, length: 0 }), /"length": expected an integer >= 1, got "0"/);
  assert.throws(() => combineRewards({ ...base, klPenalty: [0] }), /"klPenalty": expected 2 entries, got 1/);
  assert.throws(
    () => combineRewards({ ...base, alpha: NaN }),
    /"alpha": expected a finite number, got "NaN"/,
  );
  assert.throws(() => combineRewards({ ...base, stepRewards: [Infinity] }), /"stepRewards\[0\]"/);
});

Deno.test("combineRewards: each token gets α·(its steps) + success if last − its KL penalty", () => {
  const arb = fc.integer({ min: 1, max: 40 }).chain((T) =>
    fc.record({
      T: fc.constant(T),
      steps: fc.array(
        fc.tuple(fc.double({ min: -1, max: 1, noNaN: true }), fc.integer({ min: 0, max: T - 1 })),
      ),
      kl: fc.array(fc.double({ min: -1, max: 1, noNaN: true }), { minLength: T, maxLength: T }),
      success: fc.double({ min: -1, max: 1, noNaN: true }),
      alpha: fc.double({ min: 0, max: 2, noNaN: true }),
    })
  );
  fc.assert(
    fc.property(arb, ({ T, steps, kl, success, alpha }) => {
      const out = combineRewards({
        stepRewards: steps.map((s) => s[0]),
        stepEndTokens: steps.map((s) => s[1]),
        success,
        length: T,
        alpha,
        klPenalty: kl,
      });
      const want = kl.map((v) => -v);
      for (const [s, t] of steps) want[t] += alpha * s;
      want[T - 1] += success;
      close(out, want, "combine");
    }),
    { seed: 4, numRuns: 500 },
  );
});
