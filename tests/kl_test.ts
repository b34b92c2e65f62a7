import assert from "node:assert/strict";
import fc from "fast-check";
import {
  AdaptiveKLController,
  FixedKLController,
  klEstimate,
  klEstimateGrad,
  type KLEstimator,
  klPenalty,
} from "../core/rl/kl.ts";

const ESTIMATORS: KLEstimator[] = ["k1", "k2", "k3"];
const logProb = fc.double({ min: -30, max: 0, noNaN: true });

function close(got: number, want: number, tol: number, what: string): void {
  assert.ok(
    Math.abs(got - want) <= tol,
    `${what}: got ${got}, want ${want} (|diff| ${Math.abs(got - want)} > ${tol})`,
  );
}

Deno.test("klEstimate: worked example", () => {
  const logp = [-1, -2];
  const logpRef = [-1.5, -1];
  assert.deepEqual(Array.from(klEstimate(logp, logpRef)), [0.5, -1]); // default k1
  assert.deepEqual(Array.from(klEstimate(logp, logpRef, { estimator: "k2" })), [0.125, 0.5]);
  const k3 = klEstimate(logp, logpRef, { estimator: "k3" });
  close(k3[0], Math.exp(-0.5) + 0.5 - 1, 1e-15, "k3[0]");
  close(k3[1], Math.E - 2, 1e-15, "k3[1]");
  const pen = klPenalty(new Float32Array(logp), logpRef, { estimator: "k2", coef: 0.1 });
  close(pen[0], 0.0125, 1e-15, "penalty[0]");
  close(pen[1], 0.05, 1e-15, "penalty[1]");
});

Deno.test("klEstimate: zero for identical policies; k2, k3 >= 0; finite for extreme gaps", () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(logProb, logProb), { maxLength: 50 }), (pairs) => {
      const logp = pairs.map((p) => p[0]);
      const logpRef = pairs.map((p) => p[1]);
      for (const estimator of ESTIMATORS) {
        assert.ok(
          klEstimate(logp, logp, { estimator }).every((v) => v === 0),
          `${estimator} not 0 at π = π_ref`,
        );
        const k = klEstimate(logp, logpRef, { estimator });
        if (estimator !== "k1") assert.ok(k.every((v) => v >= 0), `${estimator} negative`);
      }
    }),
    { seed: 31, numRuns: 500 },
  );
  for (const estimator of ESTIMATORS) {
    const k = klEstimate([0, -1e4, -3], [-1e4, 0, -1e4 - 3], { estimator });
    assert.ok(k.every(Number.isFinite), `${estimator} not finite: ${k}`);
  }
  // k3 exponentiates the gap: the clamp keeps it finite even against a zero-probability reference token.
  const k3 = klEstimate([0, -1e4, 0], [-1e4, 0, -Infinity], { estimator: "k3" });
  assert.ok(k3.every((v) => Number.isFinite(v) && v >= 0), `k3 not finite: ${k3}`);
  assert.ok(klEstimateGrad([0, -1e4], [-1e4, 0], { estimator: "k3" }).every(Number.isFinite));
});

Deno.test("klEstimate: k1 and k3 have expectation KL(π ‖ π_ref) under π (exact sum over a categorical)", () => {
  const dist = (n: number) =>
    fc.array(fc.double({ min: 0.05, max: 1, noNaN: true }), { minLength: n, maxLength: n }).map((w) => {
      const s = w.reduce((a, b) => a + b, 0);
      return w.map((x) => Math.log(x / s));
    });
  const arb = fc.integer({ min: 1, max: 12 }).chain((n) => fc.tuple(dist(n), dist(n)));
  fc.assert(
    fc.property(arb, ([logp, logpRef]) => {
      const kl = logp.reduce((a, lp, i) => a + Math.exp(lp) * (lp - logpRef[i]), 0);
      for (const estimator of ["k1", "k3"] as KLEstimator[]) {
        const k = klEstimate(logp, logpRef, { estimator });
        const expectation = logp.reduce((a, lp, i) => a + Math.exp(lp) * k[i], 0);
        close(expectation, kl, 1e-12, `E_π[${estimator}]`);
      }
    }),
    { seed: 32, numRuns: 500 },
  );
});

Deno.test("klEstimateGrad: matches central finite differences", () => {
  const h = 1e-6;
  fc.assert(
    fc.property(fc.array(fc.tuple(logProb, logProb), { minLength: 1, maxLength: 20 }), (pairs) => {
      const logp = pairs.map((p) => p[0]);
      const logpRef = pairs.map((p) => p[1]);
      for (const estimator of ESTIMATORS) {
        const g = klEstimateGrad(logp, logpRef, { estimator });
        const up = klEstimate(logp.map((v) => v + h), logpRef, { estimator });
        const down = klEstimate(logp.map((v) => v - h), logpRef, { estimator });
        g.forEach((gi, i) => {
          const fd = (up[i] - down[i]) / (2 * h);
          close(gi, fd, 1e-6 * (1 + Math.abs(fd)) + 1e-6, `${estimator} grad[${i}]`);
        });
      }
    }),
    { seed: 33, numRuns: 300 },
  );
});

Deno.test("klEstimate, klPenalty: invalid inputs give clear errors", () => {
  assert.throws(() => klEstimate([0, 0], [0]), /logp has 2 entries, logpRef has 1/);
  assert.throws(() => klEstimate([0], [0], { estimator: "k4" as KLEstimator }), /Invalid KL estimator "k4"/);
  assert.throws(() => klPenalty([0], [0], { coef: NaN }), /"coef": expected a finite number, got "NaN"/);
});

Deno.test("KL controllers: fixed stays, adaptive follows Ziegler et al.", () => {
  const fixed = new FixedKLController(0.05);
  fixed.update(100, 1000);
  assert.equal(fixed.value, 0.05);
  assert.throws(() => new FixedKLController(-1), /"coef": expected a finite number >= 0, got "-1"/);

  const ctl = new AdaptiveKLController({ initKLCoef: 0.2, target: 6, horizon: 10000 });
  ctl.update(12, 256); // error clip(12/6 − 1) = 0.2
  close(ctl.value, 0.2 * (1 + (0.2 * 256) / 10000), 1e-15, "after KL above target");
  ctl.update(7.5, 100); // error 0.25 → clipped to 0.2
  close(ctl.value, 0.2 * 1.00512 * 1.002, 1e-15, "after clipped error");
  const before = ctl.value;
  ctl.update(5.4, 1000); // error −0.1
  close(ctl.value, before * (1 - 0.1 * 0.1), 1e-15, "after KL below target");
  assert.throws(
    () => new AdaptiveKLController({ initKLCoef: 0.1, target: 0, horizon: 1 }),
    /"target": .* got "0"/,
  );
  assert.throws(() => new AdaptiveKLController({ initKLCoef: 0.1, target: 1, horizon: -5 }), /"horizon"/);
  assert.throws(() => ctl.update(NaN, 1), /Invalid KL update/);

  fc.assert(
    fc.property(
      fc.double({ min: 0, max: 100, noNaN: true }),
      fc.double({ min: 0.01, max: 10, noNaN: true }),
      fc.integer({ min: 0, max: 1000 }),
      (kl, target, n) => {
        const c = new AdaptiveKLController({ initKLCoef: 1, target, horizon: 10000 });
        c.update(kl, n);
        const bound = (0.2 * n) / 10000;
        assert.ok(
          c.value >= 1 - bound - 1e-15 && c.value <= 1 + bound + 1e-15,
          `multiplier ${c.value} > ±${bound}`,
        );
        if (kl > target) assert.ok(c.value >= 1);
        if (kl < target) assert.ok(c.value <= 1);
      },
    ),
    { seed: 34, numRuns: 500 },
  );
});
