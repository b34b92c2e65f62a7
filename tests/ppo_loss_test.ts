import assert from "node:assert/strict";
import fc from "fast-check";
import { ppoLoss, type PPOLossOptions } from "../core/rl/ppo_loss.ts";

function close(got: number, want: number, tol: number, what: string): void {
  assert.ok(
    Math.abs(got - want) <= tol,
    `${what}: got ${got}, want ${want} (|diff| ${Math.abs(got - want)} > ${tol})`,
  );
}

/** A batch with every optional field present, as plain arrays. */
interface Batch {
  logp: number[];
  logpOld: number[];
  advantages: number[];
  values: number[];
  valuesOld: number[];
  returns: number[];
  entropy: number[];
  logpRef: number[];
  mask: number[];
}

const small = (lim: number) => fc.double({ min: -lim, max: lim, noNaN: true });

/** A random batch of N ∈ [1, 40] tokens with log-ratios in [−lr, lr] and at least one valid token. */
function batchArb(lr: number) {
  return fc.integer({ min: 1, max: 40 }).chain((N) => {
    const arr = (a: fc.Arbitrary<number>) => fc.array(a, { minLength: N, maxLength: N });
    return fc.record({
      logpOld: arr(fc.double({ min: -10, max: 0, noNaN: true })),
      diff: arr(small(lr)),
      advantages: arr(small(3)),
      values: arr(small(2)),
      valuesOld: arr(small(2)),
      returns: arr(small(2)),
      entropy: arr(fc.double({ min: 0, max: 5, noNaN: true })),
      logpRef: arr(fc.double({ min: -10, max: 0, noNaN: true })),
      mask: arr(fc.constantFrom(0, 1, 1, 1)).map((m) => (m.includes(1) ? m : [1, ...m.slice(1)])),
    }).map((b): Batch => ({ ...b, logp: b.logpOld.map((o, t) => o + b.diff[t]) }));
  });
}

Deno.test("ppoLoss: worked example", () => {
  const out = ppoLoss(
    {
      logp: [-1, -0.5],
      logpOld: [-1.2, -0.4],
      advantages: [1, -2],
      values: [0.5, 1.0],
      valuesOld: [0.2, 1.1],
      returns: [1.0, 0.0],
      entropy: [1, 2],
    },
    { clipRange: 0.2, clipRangeValue: 0.2, vfCoef: 0.5, entCoef: 0.01 },
  );
  const r1 = Math.exp(-0.1);
  // Token 0: ρ = e^0.2 > 1.2 with A > 0 → clipped, −1.2. Token 1: ρ = e^−0.1 inside → 2ρ.
  close(out.policyLoss, (-1.2 + 2 * r1) / 2, 1e-15, "policyLoss");
  close(out.valueLoss, 0.5 * (0.36 + 1) / 2, 1e-15, "valueLoss"); // token 0 clipped to V = 0.4
  close(out.entropy, 1.5, 0, "entropy");
  close(out.loss, out.policyLoss + 0.5 * out.valueLoss - 0.01 * 1.5, 1e-15, "loss");
  close(out.clipFrac, 0.5, 0, "clipFrac");
  close(out.valueClipFrac, 0.5, 0, "valueClipFrac");
  close(out.approxKL, (Math.expm1(0.2) - 0.2 + Math.expm1(-0.1) + 0.1) / 2, 1e-15, "approxKL");
  close(out.approxKLk2, 0.5 * (0.04 + 0.01) / 2, 1e-15, "approxKLk2");
  close(out.dLogp[0], 0, 0, "dLogp[0]");
  close(out.dLogp[1], r1, 1e-15, "dLogp[1]"); // −A ρ / n = 2 ρ / 2
  close(out.dValues[0], 0, 0, "dValues[0]");
  close(out.dValues[1], 0.5 * 1 / 2, 1e-15, "dValues[1]"); // vfCoef (V − R) / n
});

Deno.test("ppoLoss: at ratio 1 the policy loss is −mean(A) and the gradient −A/n", () => {
  fc.assert(
    fc.property(batchArb(0), (b) => {
      const out = ppoLoss({ ...b, logp: b.logpOld });
      const valid = b.advantages.filter((_, t) => b.mask[t] === 1);
      close(out.policyLoss, -valid.reduce((a, x) => a + x, 0) / valid.length, 1e-12, "policyLoss");
      out.dLogp.forEach((g, t) =>
        close(g, b.mask[t] ? -b.advantages[t] / valid.length : 0, 1e-15, `dLogp[${t}]`)
      );
      close(out.clipFrac, 0, 0, "clipFrac");
      close(out.approxKL, 0, 0, "approxKL");
    }),
    { seed: 51, numRuns: 300 },
  );
});

Deno.test("ppoLoss: zero gradient exactly for tokens clipped on the side the advantage pushes", () => {
  fc.assert(
    fc.property(batchArb(1), fc.double({ min: 0.05, max: 0.5, noNaN: true }), (b, eps) => {
      const out = ppoLoss(b, { clipRange: eps });
      const n = b.mask.reduce((a: number, m) => a + m, 0);
      let clipped = 0;
      for (let t = 0; t < b.logp.length; t++) {
        if (b.mask[t] === 0) {
          assert.equal(out.dLogp[t], 0, `masked token ${t}`);
          continue;
        }
        const rho = Math.exp(b.logp[t] - b.logpOld[t]);
        const A = b.advantages[t];
        const isClipped = (A > 0 && rho > 1 + eps) || (A < 0 && rho < 1 - eps);
        if (isClipped) {
          clipped++;
          assert.equal(out.dLogp[t], 0, `token ${t}: A ${A}, ρ ${rho}`);
        } else {
          close(out.dLogp[t], (-A * rho) / n, 1e-12, `token ${t}`);
        }
      }
      close(out.clipFrac, clipped / n, 1e-15, "clipFrac");
    }),
    { seed: 52, numRuns: 300 },
  );
});

Deno.test("ppoLoss: finite for extreme log-probability differences (±1e4)", () => {
  for (const d of [1e4, -1e4, 1e300, -1e300]) {
    for (const A of [3, -3]) {
      const out = ppoLoss(
        {
          logp: [0, d],
          logpOld: [d, 0],
          advantages: [A, -A],
          values: [1e4, 0],
          valuesOld: [0, 0],
          returns: [0, 1],
        },
        { klInLoss: { logpRef: [0, -d], coef: 0.1 } },
      );
      for (const [k, v] of Object.entries(out)) {
        const values = typeof v === "number" ? [v] : Array.from(v as Float64Array);
        assert.ok(values.every(Number.isFinite), `${k} not finite for Δ = ${d}, A = ${A}: ${values}`);
      }
    }
  }
});

Deno.test("ppoLoss: analytic gradients match central finite differences (f64)", () => {
  const h = 1e-6;
  const opts: PPOLossOptions[] = [
    { clipRange: 0.2, clipRangeValue: 0.2, vfCoef: 0.5, entCoef: 0.01 },
    {
      clipRange: 0.1,
      clipRangeValue: 0.5,
      vfCoef: 1,
      klInLoss: { logpRef: [], coef: 0.05, estimator: "k3" },
    },
    {
      clipRange: 0.3,
      clipRangeValue: 0.1,
      vfCoef: 0.1,
      klInLoss: { logpRef: [], coef: 0.2, estimator: "k2" },
    },
  ];
  fc.assert(
    fc.property(batchArb(0.6), fc.constantFrom(0, 1, 2), (b, which) => {
      const o = opts[which];
      const options: PPOLossOptions = o.klInLoss
        ? { ...o, klInLoss: { ...o.klInLoss, logpRef: b.logpRef } }
        : o;
      const out = ppoLoss(b, options);
      const eps = options.clipRange!;
      const epsV = options.clipRangeValue!;
      for (let t = 0; t < b.logp.length; t++) {
        const rho = Math.exp(b.logp[t] - b.logpOld[t]);
        // Skip tokens within reach of a kink of max/clip (the loss is not differentiable there).
        const nearPolicyKink = Math.abs(rho - (1 + eps)) < 1e-4 || Math.abs(rho - (1 - eps)) < 1e-4;
        const V = b.values[t];
        const err = V - b.returns[t];
        const vc = Math.min(Math.max(V, b.valuesOld[t] - epsV), b.valuesOld[t] + epsV) - b.returns[t];
        const nearValueKink = Math.abs(V - (b.valuesOld[t] - epsV)) < 1e-4 ||
          Math.abs(V - (b.valuesOld[t] + epsV)) < 1e-4 || Math.abs(Math.abs(err) - Math.abs(vc)) < 1e-4;
        const at = (field: "logp" | "values", dx: number) => {
          const x = [...b[field]];
          x[t] += dx;
          return ppoLoss({ ...b, [field]: x }, options).loss;
        };
        if (!nearPolicyKink) {
          const fd = (at("logp", h) - at("logp", -h)) / (2 * h);
          close(out.dLogp[t], fd, 1e-6 + 1e-6 * Math.abs(fd), `dLogp[${t}] (options ${which})`);
        }
        if (!nearValueKink) {
          const fd = (at("values", h) - at("values", -h)) / (2 * h);
          close(out.dValues[t], fd, 1e-6 + 1e-6 * Math.abs(fd), `dValues[${t}] (options ${which})`);
        }
      }
    }),
    { seed: 53, numRuns: 150 },
  );
});

Deno.test("ppoLoss: masked tokens do not matter", () => {
  fc.assert(
    fc.property(batchArb(2), small(50), (b, junk) => {
      const out = ppoLoss(b);
      const scramble = (a: number[]) => a.map((x, t) => (b.mask[t] === 0 ? x + junk : x));
      const out2 = ppoLoss({
        ...b,
        logp: scramble(b.logp),
        advantages: scramble(b.advantages),
        values: scramble(b.values),
      });
      assert.equal(out2.loss, out.loss);
      out.dValues.forEach((g, t) => assert.ok(b.mask[t] === 1 || (g === 0 && out2.dValues[t] === 0)));
    }),
    { seed: 54, numRuns: 200 },
  );
});

Deno.test("ppoLoss: invalid inputs give clear errors", () => {
  const b = { logp: [0, 0], logpOld: [0, 0], advantages: [1, 1] };
  assert.throws(
    () => ppoLoss({ ...b, advantages: [1] }),
    /"advantages": expected 2 entries \(as logp\), got 1/,
  );
  assert.throws(
    () => ppoLoss({ ...b, values: [0, 0] }),
    /"values", "valuesOld" and "returns" must be given together/,
  );
  assert.throws(() => ppoLoss({ ...b, mask: [0, 0] }), /mask has no valid tokens among 2/);
  assert.throws(() => ppoLoss({ ...b, mask: [1, 2] }), /"mask" at index 1: expected 0 or 1, got "2"/);
  assert.throws(
    () => ppoLoss(b, { clipRange: -0.1 }),
    /"clipRange": expected a finite number >= 0, got "-0.1"/,
  );
  assert.throws(
    () => ppoLoss(b, { klInLoss: { logpRef: [0], coef: 1 } }),
    /"klInLoss.logpRef": expected 2 entries/,
  );
});
