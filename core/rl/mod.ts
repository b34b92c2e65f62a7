/**
 * PPO with process rewards: rollouts and the experience record, the critic, the PPO update, the trainer with its
 * config, checkpoints and metrics plot, and held-out evaluation — plus the KL, GAE and PPO-loss math (TS
 * references and WGSL twins).
 *
 * @example
 * ```ts
 * import { runPPO } from "./core/rl/mod.ts";
 * const r = await runPPO({ iterations: 8, shaping: "clip_delta", eta: 0.5, out: "runs/ppo-a" });
 * console.log(r.summary);
 * ```
 *
 * @module
 */
export {
  type Experience,
  fromRows,
  maskedMean,
  mean,
  type PackedRollouts,
  packRollouts,
  selectExperience,
  TOKEN_FIELDS,
  type TokenField,
  tokenMatrix,
  tokenRow,
  toRows,
} from "./experience.ts";
export {
  advantagesGpu,
  charOffsets,
  collectRollouts,
  DEFAULT_SHAPING,
  lengthChunks,
  policyLogprobs,
  repeatedStepCount,
  type ResponseSteps,
  responseSteps,
  type RewardOptions,
  type RolloutModels,
  type RolloutOptions,
  type RolloutQuestion,
  type RolloutResult,
  type SampledBatch,
  sampleSeed,
  scoreRollouts,
  type ValueModel,
} from "./rollout.ts";
export { Critic, type CriticOptions, type CriticStepStats } from "./critic.ts";
export {
  type Actor,
  createActor,
  minibatchOrder,
  policyLossAndGrads,
  type PolicyLossOptions,
  ppoUpdate,
  type PPOUpdateOptions,
  type PPOUpdateStats,
  releaseActor,
} from "./ppo.ts";
export {
  checkTrainConfig,
  EXACT_PRM,
  parseTrainConfigJson,
  TRAIN_DEFAULTS,
  TRAIN_FLAG_DOCS,
  type TrainConfig,
  trainFlag,
} from "./train_config.ts";
export {
  ensurePolicy,
  ensurePrm,
  loadProblems,
  PRM_DIR,
  type PrmRecipe,
  type RunProblems,
  type SetupHooks,
  SFT_POLICY_DIR,
} from "./setup.ts";
export {
  clearPPORun,
  type EvalSummary,
  findPPOCheckpoints,
  PPO_RNG_SCHEME,
  type PPOCheckpointInfo,
  ppoResumeMismatch,
  type PPOTrainerState,
  prunePPOCheckpoints,
  readPPOState,
  writePPOCheckpoint,
} from "./ppo_checkpoint.ts";
export {
  evalSummary,
  explainedVariance,
  iterationRecord,
  type PPOHooks,
  type PPOResult,
  runPPO,
} from "./trainer.ts";
export {
  formatTick,
  metricsSvg,
  type PlotOptions,
  PPO_PLOT_METRICS,
  type Series,
  summaryTable,
  svgPlot,
  textTable,
} from "./plot.ts";
export {
  type EvalOptions,
  type EvalResult,
  evaluatePolicy,
  majorityAnswer,
  passAtK,
  type ProblemRecord,
  type SolutionRecord,
} from "./eval.ts";
export {
  analyseErrors,
  type ErrorAnalysis,
  FIRST_ERROR_KINDS,
  type FirstError,
  firstError,
  type FirstErrorKind,
} from "./error_analysis.ts";
export * from "./kl.ts";
export * from "./gae.ts";
export * from "./ppo_loss.ts";
export * from "./gae_gpu.ts";
export * from "./ppo_loss_gpu.ts";
export { rlooBaselines } from "./rloo.ts";
export { repeatProbe, type RepeatProbeOptions, type RepeatProbeRow } from "./repeat_probe.ts";
