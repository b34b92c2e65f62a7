import assert from "node:assert/strict";
import fc from "fast-check";
import { gae, gaeBatch, whiten } from "../core/rl/gae.ts";

// f64 recursions over ≤ 60 tokens of O(1) values: |got − want| ≤ ATOL + RTOL·|want|.
const ATOL = 1e-10;
const RTOL = 1e-10;

function close(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let worst = -1;
  let worstDiff = 0;
  for (let i = 0; i < want.length; i++) {
    const diff = Math.abs(got[i] - want[i]);
    if (!(diff <= ATOL + RTOL * Math.abs(want[i])) && (worst < 0 || diff > worstDiff)) {
      [worst, worstDiff] = [i, diff];
    }
  }
  assert.ok(
    worst < 0,
    `${what}: max diff ${worstDiff} at index ${worst}: got ${got[worst]}, want ${want[worst]}`,
  );
}

const value = fc.double({ min: -5, max: 5, noNaN: true });
const unit = fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom(0, 1));
const seq = fc.integer({ min: 1, max: 40 }).chain((T) =>
  fc.record({
    r: fc.array(value, { minLength: T, maxLength: T }),
    v: fc.array(value, { minLength: T, maxLength: T }),
  })
);

/** Reference: A_t = Σ_{l≥0} (γλ)^l δ_{t+l} by the direct double sum, δ_t = r_t + γ V_{t+1} − V_t, V_T = 0. */
function gaeDirect(r: number[], v: number[], gamma: number, lambda: number): number[] {
  const T = r.length;
  const delta = r.map((rt, t) => rt + gamma * (t + 1 < T ? v[t + 1] : 0) - v[t]);
  return r.map((_, t) => {
    let a = 0;
    for (let l = 0; t + l < T; l++) a += (gamma * lambda) ** l * delta[t + l];
    return a;
  });
}

Deno.test("gae: worked example", () => {
  const { advantages, returns } = gae([0, 0, 1], [0.5, 0.6, 0.7], { gamma: 0.9, lambda: 0.8 });
  close(advantages, [0.21712, 0.246, 0.3], "advantages");
  close(returns, [0.71712, 0.846, 1.0], "returns");
  const masked = gae([0, 0, 1, 9], [0.5, 0.6, 0.7, 9], { gamma: 0.9, lambda: 0.8, mask: [1, 1, 1, 0] });
  close(masked.advantages, [0.21712, 0.246, 0.3, 0], "masked advantages");
  close(masked.returns, [0.71712, 0.846, 1.0, 0], "masked returns");
  const empty = gae([], [], { gamma: 1, lambda: 1 });
  assert.equal(empty.advantages.length, 0);
});

Deno.test("gae: matches the direct sum; λ=1 gives MC returns − values; λ=0 gives TD errors", () => {
  fc.assert(
    fc.property(seq, unit, unit, ({ r, v }, gamma, lambda) => {
      const T = r.length;
      const { advantages, returns } = gae(r, v, { gamma, lambda });
      close(advantages, gaeDirect(r, v, gamma, lambda), "vs direct sum");
      close(returns, Array.from(advantages, (a, t) => a + v[t]), "returns = A + V");
      const mc = gae(r, v, { gamma: 1, lambda: 1 }).advantages;
      close(mc, r.map((_, t) => r.slice(t).reduce((a, b) => a + b, 0) - v[t]), "λ=γ=1");
      const td = gae(r, v, { gamma, lambda: 0 }).advantages;
      close(td, r.map((rt, t) => rt + gamma * (t + 1 < T ? v[t + 1] : 0) - v[t]), "λ=0");
    }),
    { seed: 41, numRuns: 500 },
  );
});

Deno.test("gae: padding after the end and masked holes never change the valid tokens", () => {
  const arb = fc.record({
    s: seq,
    pad: fc.array(fc.tuple(value, value), { maxLength: 10 }),
    holes: fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }),
    gamma: unit,
    lambda: unit,
  });
  fc.assert(
    fc.property(arb, ({ s: { r, v }, pad, holes, gamma, lambda }) => {
      const base = gae(r, v, { gamma, lambda });
      // Right padding with junk values.
      const padded = gae([...r, ...pad.map((p) => p[0])], [...v, ...pad.map((p) => p[1])], {
        gamma,
        lambda,
        mask: [...r.map(() => 1), ...pad.map(() => 0)],
      });
      close(padded.advantages, [...base.advantages, ...pad.map(() => 0)], "padded advantages");
      close(padded.returns, [...base.returns, ...pad.map(() => 0)], "padded returns");
      // Interior holes: same as GAE over the valid tokens only, scattered back.
      const mask = r.map((_, t) => (holes[t] ? 0 : 1));
      const keep = r.map((_, t) => t).filter((t) => mask[t] === 1);
      const compact = gae(keep.map((t) => r[t]), keep.map((t) => v[t]), { gamma, lambda });
      const want = r.map(() => 0);
      keep.forEach((t, i) => want[t] = compact.advantages[i]);
      close(gae(r, v, { gamma, lambda, mask }).advantages, want, "holes");
    }),
    { seed: 42, numRuns: 500 },
  );
});

Deno.test("gaeBatch: equals per-row gae on ragged right-padded (B, T) Float32Array batches", () => {
  const arb = fc.record({ B: fc.integer({ min: 1, max: 7 }), T: fc.constantFrom(1, 2, 3, 5, 13, 31) }).chain((
    { B, T },
  ) =>
    fc.record({
      B: fc.constant(B),
      T: fc.constant(T),
      r: fc.array(value, { minLength: B * T, maxLength: B * T }),
      v: fc.array(value, { minLength: B * T, maxLength: B * T }),
      lens: fc.array(fc.integer({ min: 0, max: T }), { minLength: B, maxLength: B }),
      gamma: unit,
      lambda: unit,
    })
  );
  fc.assert(
    fc.property(arb, ({ B, T, r, v, lens, gamma, lambda }) => {
      const rf = new Float32Array(r);
      const vf = new Float32Array(v);
      const mask = new Float32Array(B * T).map((_, i) => (i % T < lens[Math.floor(i / T)] ? 1 : 0));
      const got = gaeBatch(rf, vf, { seqLen: T, mask, gamma, lambda });
      for (let b = 0; b < B; b++) {
        const row = (a: ArrayLike<number>) => Array.from(a).slice(b * T, (b + 1) * T);
        const want = gae(row(rf), row(vf), { gamma, lambda, mask: row(mask) });
        close(row(got.advantages), want.advantages, `row ${b} advantages`);
        close(row(got.returns), want.returns, `row ${b} returns`);
      }
      const unmasked = gaeBatch(rf, vf, { seqLen: T, gamma, lambda });
      close(
        unmasked.advantages.subarray(0, T),
        gae(rf.subarray(0, T), vf.subarray(0, T), { gamma, lambda }).advantages,
        "row 0",
      );
    }),
    { seed: 43, numRuns: 300 },
  );
});

Deno.test("gae, gaeBatch: invalid inputs give clear errors", () => {
  assert.throws(() => gae([0, 1], [0], { gamma: 1, lambda: 1 }), /rewards has 2 entries, values has 1/);
  assert.throws(
    () => gae([0], [0], { gamma: 1.5, lambda: 1 }),
    /"gamma": expected a number in \[0, 1\], got "1.5"/,
  );
  assert.throws(() => gae([0], [0], { gamma: 1, lambda: NaN }), /"lambda": .* got "NaN"/);
  assert.throws(
    () => gae([0], [0], { gamma: 1, lambda: 1, mask: [1, 0] }),
    /Invalid mask: expected 1 entries, got 2/,
  );
  assert.throws(
    () => gae([0], [0], { gamma: 1, lambda: 1, mask: [0.5] }),
    /mask at index 0: expected 0 or 1, got "0.5"/,
  );
  assert.throws(
    () => gaeBatch([0, 0, 0], [0, 0, 0], { seqLen: 2, gamma: 1, lambda: 1 }),
    /"seqLen": .* dividing 3, got "2"/,
  );
});

Deno.test("whiten: worked example, masked statistics, shiftMean", () => {
  const sd = Math.sqrt(5 / 3 + 1e-8); // unbiased variance of [1, 2, 3, 4]
  close(whiten([1, 2, 3, 4]), [-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd], "plain");
  close(
    whiten([1, 2, 3, 4], undefined, { unbiased: false }),
    [1, 2, 3, 4].map((x) => (x - 2.5) / Math.sqrt(1.25 + 1e-8)),
    "biased",
  );
  close(whiten([1, 100, 2, 3, 4], [1, 0, 1, 1, 1]), [-1.5 / sd, 0, -0.5 / sd, 0.5 / sd, 1.5 / sd], "masked");
  close(
    whiten([1, 2, 3, 4], undefined, { shiftMean: false }),
    [-1.5, -0.5, 0.5, 1.5].map((x) => x / sd + 2.5),
    "no shift",
  );
  close(whiten([7]), [0], "single entry");
  assert.equal(whiten([]).length, 0);
  assert.throws(() => whiten([1, 2], [0, 0]), /Cannot whiten: mask has no valid entries among 2/);
  fc.assert(
    fc.property(fc.array(fc.tuple(value, fc.boolean()), { minLength: 2, maxLength: 60 }), (xs) => {
      const x = xs.map((p) => p[0]);
      const mask = xs.map((p, i) => (p[1] || i === 0 ? 1 : 0));
      const n = mask.reduce((a: number, b) => a + b, 0);
      const y = whiten(x, mask);
      const ys = Array.from(y).filter((_, i) => mask[i] === 1);
      const mean = ys.reduce((a, b) => a + b, 0) / n;
      assert.ok(Math.abs(mean) < 1e-9, `mean ${mean}`);
      const xv = x.filter((_, i) => mask[i] === 1);
      const mx = xv.reduce((a, b) => a + b, 0) / n;
      const varX = n > 1 ? xv.reduce((a, b) => a + (b - mx) ** 2, 0) / (n - 1) : 0;
      const varY = n > 1 ? ys.reduce((a, b) => a + b * b, 0) / (n - 1) : 0;
      close([varY], [varX / (varX + 1e-8)], "whitened variance");
      assert.ok(y.every((v, i) => mask[i] === 1 || v === 0), "masked entries not 0");
    }),
    { seed: 44, numRuns: 500 },
  );
});
