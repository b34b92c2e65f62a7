/**
 * Optimisers on the GPU: AdamW and SGD updates over named parameter tensors, global gradient-norm clipping
 * without readbacks, learning-rate schedules and optimiser state files.
 *
 * @example
 * ```ts
 * const opt = new AdamW(gpu, params.byName, { weightDecay: 0.1 });
 * const clip = new GradClip(gpu, { maxNorm: 1 });
 * opt.step(batch, grads, { lr: lrAt(opt.stepCount, sched), gradScale: 1 / micro, clip });
 * ```
 *
 * @module
 */
export { AdamW, type AdamWOptions, type StepOptions, zeroGrads } from "./adamw.ts";
export { SGD } from "./sgd.ts";
export { GradClip, gradNorm, type GradNormOptions, type GradNormStats, NORM_CHUNK } from "./clip.ts";
export { checkSchedule, lrAt, lrFactor, type ScheduleKind, type ScheduleOptions } from "./schedule.ts";
export {
  loadOptimizerState,
  saveOptimizerState,
  STATE_SLICE_BYTES,
  type StateFileOptions,
  type StatefulOptimizer,
} from "./state.ts";
