import assert from "node:assert/strict";
import fc from "fast-check";
import { lrAt, lrFactor, type ScheduleKind, type ScheduleOptions } from "../core/optim/schedule.ts";

// Closed-form values are compared to 1e-12 (float64 rounding of a cosine); the rest are exact.
const EPS = 1e-12;
const near = (got: number, want: number, what: string) =>
  assert.ok(Math.abs(got - want) <= EPS * Math.max(1, Math.abs(want)), `${what}: got ${got}, want ${want}`);

/**
 * transformers' LambdaLR multipliers, transcribed from optimization.py (`_get_linear_schedule_with_warmup_lr_lambda`,
 * `_get_cosine_schedule_with_warmup_lr_lambda` with num_cycles 0.5, `_get_cosine_with_min_lr_…`,
 * `_get_constant_schedule_with_warmup_lr_lambda`), valid for steps ≤ totalSteps.
 */
function hfLambda(kind: ScheduleKind, step: number, w: number, t: number, r: number): number {
  if (step < w) return step / Math.max(1, w);
  if (kind === "constant") return 1;
  if (kind === "linear") return r + (1 - r) * Math.max(0, (t - step) / Math.max(1, t - w));
  const progress = (step - w) / Math.max(1, t - w);
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress))) * (1 - r) + r;
}

Deno.test("warmup ramps linearly from 0 to the peak", () => {
  for (const schedule of ["constant", "linear", "cosine"] as const) {
    const o: ScheduleOptions = { schedule, lr: 2e-4, warmupSteps: 10, totalSteps: 110 };
    assert.equal(lrAt(0, o), 0, `${schedule} step 0`);
    near(lrAt(5, o), 1e-4, `${schedule} step 5`);
    near(lrAt(9, o), 1.8e-4, `${schedule} step 9`);
    assert.equal(lrAt(10, o), 2e-4, `${schedule} end of warmup`);
  }
  assert.equal(lrAt(0, { schedule: "linear", lr: 1, warmupSteps: 0, totalSteps: 10 }), 1, "no warmup");
});

Deno.test("constant stays at the peak after warmup", () => {
  const o: ScheduleOptions = { schedule: "constant", lr: 3e-5, warmupSteps: 4, totalSteps: 0 };
  for (const s of [4, 5, 100, 1e6]) assert.equal(lrAt(s, o), 3e-5, `step ${s}`);
});

Deno.test("linear decays to 0, or to the minimum ratio, at totalSteps and stays there", () => {
  const o: ScheduleOptions = { schedule: "linear", lr: 1, warmupSteps: 10, totalSteps: 110 };
  near(lrAt(60, o), 0.5, "midpoint");
  near(lrAt(85, o), 0.25, "three quarters");
  assert.equal(lrAt(110, o), 0, "end");
  assert.equal(lrAt(500, o), 0, "past the end");
  const m = { ...o, minLrRatio: 0.1 };
  near(lrAt(60, m), 0.55, "midpoint with min ratio");
  near(lrAt(110, m), 0.1, "end with min ratio");
  near(lrAt(500, m), 0.1, "past the end with min ratio");
});

Deno.test("cosine passes half the peak at mid-decay and ends at 0 or the minimum ratio", () => {
  const o: ScheduleOptions = { schedule: "cosine", lr: 1, warmupSteps: 10, totalSteps: 110 };
  near(lrAt(35, o), 0.5 * (1 + Math.SQRT1_2), "quarter");
  near(lrAt(60, o), 0.5, "midpoint");
  assert.equal(lrAt(110, o), 0, "end");
  assert.equal(lrAt(200, o), 0, "held past the end");
  const m = { ...o, lr: 2e-5, minLrRatio: 0.1 };
  near(lrAt(60, m), 2e-5 * 0.55, "midpoint with min ratio");
  near(lrAt(110, m), 2e-6, "end with min ratio");
  near(lrAt(1000, m), 2e-6, "held past the end with min ratio");
});

Deno.test("schedules match transformers' lambdas and are monotone on each side of the peak", () => {
  fc.assert(
    fc.property(
      fc.constantFrom<ScheduleKind>("constant", "linear", "cosine"),
      fc.integer({ min: 0, max: 50 }),
      fc.integer({ min: 0, max: 300 }),
      fc.constantFrom(0, 0.1, 0.5, 1),
      (schedule, w, extra, r) => {
        const o: ScheduleOptions = { schedule, lr: 1, warmupSteps: w, totalSteps: w + extra, minLrRatio: r };
        let prev = -Infinity;
        for (let s = 0; s <= w + extra; s++) {
          const f = lrFactor(s, o);
          near(
            f,
            hfLambda(schedule, s, w, w + extra, r),
            `${schedule} W=${w} T=${w + extra} r=${r} step ${s}`,
          );
          if (s < w) assert.ok(f >= prev, `warmup not increasing at step ${s}`);
          else if (s > w) assert.ok(f <= prev + EPS, `decay not decreasing at step ${s}`);
          assert.ok(
            f >= (s < w ? 0 : schedule === "constant" ? 1 : r) - EPS && f <= 1,
            `factor ${f} at ${s}`,
          );
          prev = f;
        }
      },
    ),
    { seed: 77, numRuns: 100 },
  );
});

Deno.test("schedules reject invalid options with errors naming the field", () => {
  const o: ScheduleOptions = { schedule: "cosine", lr: 1, warmupSteps: 10, totalSteps: 100 };
  assert.throws(
    () => lrAt(0, { ...o, schedule: "step" as ScheduleKind }),
    /"schedule" is "step", expected constant/,
  );
  assert.throws(() => lrAt(0, { ...o, lr: -1 }), /"lr" is -1, expected a finite number ≥ 0/);
  assert.throws(() => lrAt(0, { ...o, warmupSteps: 1.5 }), /"warmupSteps" is 1.5, expected an integer ≥ 0/);
  assert.throws(
    () => lrAt(0, { ...o, totalSteps: 5 }),
    /"totalSteps" is 5, expected at least warmupSteps \(10\)/,
  );
  assert.throws(() => lrAt(0, { ...o, minLrRatio: 2 }), /"minLrRatio" is 2, expected a number in \[0, 1\]/);
  assert.throws(() => lrAt(-1, o), /Invalid learning-rate step "-1"/);
});
