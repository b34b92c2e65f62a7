/**
 * Pure-TypeScript reward math: final-answer checking, step splitting and step → token alignment, PRM reward
 * shaping (Clip, Delta, Clip-Delta, min-form) and per-token reward assembly.
 *
 * @module
 */

export { extractAnswer, isCorrect, successReward } from "./answer.ts";
export type { SuccessRewardOptions } from "./answer.ts";
export { splitSteps, stepEndTokens, tokenOffsets } from "./steps.ts";
export type {
  Span,
  SplitStepsOptions,
  Step,
  StepEndTokensOptions,
  TokenOffset,
  TokenOffsetsOptions,
} from "./steps.ts";
export { applyClip, applyClipDelta, applyDelta, applyMinForm, shapeStepRewards } from "./shaping.ts";
export type { DeltaOptions, ShapeOptions, ShapingKind } from "./shaping.ts";
export { combineRewards } from "./combine.ts";
export type { CombineRewardsInput } from "./combine.ts";
