/**
 * Learning-rate schedules with linear warmup, matching `transformers`' `get_constant_schedule_with_warmup`,
 * `get_linear_schedule_with_warmup` and `get_cosine_schedule_with_warmup` (LambdaLR: `step` is the number of
 * optimiser steps already taken, so the first step uses `lrAt(0, …)`, which is 0 under warmup):
 * ```
 * warmup  (step < W):  lr · step / max(1, W)
 * constant          :  lr
 * linear            :  lr · (r + (1 − r) · max(0, (T − step) / max(1, T − W)))
 * cosine            :  lr · (r + (1 − r) · ½(1 + cos(π · min(1, (step − W) / max(1, T − W)))))
 * ```
 * with W = warmupSteps, T = totalSteps and r = minLrRatio (default 0: decay to 0; HF's
 * `cosine_with_min_lr` with `min_lr_rate = r`). Past T the linear schedule stays at `r·lr` and the cosine
 * schedule is held at its end value `r·lr` (HF's cosine would rise again).
 *
 * @module
 */

/** Schedule shape after warmup. */
export type ScheduleKind = "constant" | "linear" | "cosine";

/** Options of {@linkcode lrAt}. */
export interface ScheduleOptions {
  /** Shape after warmup. */
  schedule: ScheduleKind;
  /** Peak learning rate (reached at the end of warmup). */
  lr: number;
  /** Linear warmup steps from 0 to `lr` (0: none). */
  warmupSteps: number;
  /** Total optimiser steps: linear and cosine reach `minLrRatio · lr` here (unused by constant). */
  totalSteps: number;
  /** Final learning rate as a fraction of `lr`, in [0, 1] (default 0). */
  minLrRatio?: number;
}

const SCHEDULES: readonly ScheduleKind[] = ["constant", "linear", "cosine"];

/** Throws naming the first invalid field of `opts`. */
export function checkSchedule(opts: ScheduleOptions): void {
  const bad = (field: string, value: unknown, expected: string): never => {
    throw new Error(
      `Invalid learning-rate schedule: "${field}" is ${JSON.stringify(value)}, expected ${expected}`,
    );
  };
  if (!SCHEDULES.includes(opts.schedule)) bad("schedule", opts.schedule, SCHEDULES.join(", "));
  if (!(Number.isFinite(opts.lr) && opts.lr >= 0)) bad("lr", opts.lr, "a finite number ≥ 0");
  if (!Number.isSafeInteger(opts.warmupSteps) || opts.warmupSteps < 0) {
    bad("warmupSteps", opts.warmupSteps, "an integer ≥ 0");
  }
  if (!Number.isSafeInteger(opts.totalSteps) || opts.totalSteps < 0) {
    bad("totalSteps", opts.totalSteps, "an integer ≥ 0");
  }
  if (opts.schedule !== "constant" && opts.totalSteps < opts.warmupSteps) {
    bad("totalSteps", opts.totalSteps, `at least warmupSteps (${opts.warmupSteps})`);
  }
  const r = opts.minLrRatio ?? 0;
  if (!(r >= 0 && r <= 1)) bad("minLrRatio", opts.minLrRatio, "a number in [0, 1]");
}

/**
 * Learning-rate multiplier (of the peak `lr`) after `step` optimiser steps; see the module documentation.
 *
 * @example
 * ```ts
 * lrFactor(50, { schedule: "cosine", lr: 1e-5, warmupSteps: 10, totalSteps: 90 }); // 0.5
 * ```
 */
export function lrFactor(step: number, opts: ScheduleOptions): number {
  checkSchedule(opts);
  if (!Number.isSafeInteger(step) || step < 0) {
    throw new Error(`Invalid learning-rate step "${step}": expected an integer ≥ 0`);
  }
  const w = opts.warmupSteps, t = opts.totalSteps, r = opts.minLrRatio ?? 0;
  if (step < w) return step / Math.max(1, w);
  if (opts.schedule === "constant") return 1;
  const span = Math.max(1, t - w);
  const decay = opts.schedule === "linear"
    ? Math.max(0, (t - step) / span)
    : 0.5 * (1 + Math.cos(Math.PI * Math.min(1, (step - w) / span)));
  return r + (1 - r) * decay;
}

/**
 * Learning rate after `step` optimiser steps (the rate of step `step + 1`): `lr · lrFactor(step, opts)`.
 *
 * @example
 * ```ts
 * const sched = { schedule: "linear", lr: 1e-4, warmupSteps: 100, totalSteps: 1000 } as const;
 * opt.step(batch, grads, { lr: lrAt(opt.stepCount, sched) });
 * ```
 */
export function lrAt(step: number, opts: ScheduleOptions): number {
  return opts.lr * lrFactor(step, opts);
}
