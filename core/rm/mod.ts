/**
 * Reward models: process (PRM, a score per step read at each step's end token) and outcome (ORM, a score at the
 * last token) models on the Qwen2 trunk in Hugging Face classification layouts, their scorer, label sources
 * (exact built-in labels, Math-Shepherd Monte Carlo, outcome labels), BCE training and evaluation (step-level
 * accuracy / ROC-AUC, best-of-N reranking).
 *
 * @example
 * ```ts
 * const scorer = await RewardScorer.load({ prm: "runs/prm-tiny/final" });
 * const [out] = await scorer.score([{ question, solution, shaping: { kind: "clip", eta: 0.5 } }]);
 * console.log(out.stepScores, out.shapedRewards);
 * ```
 *
 * @module
 */
export type {
  GenerateItem,
  GenerateOutput,
  Generator,
  ModelInfo,
  ScoreItem,
  ScoreOutput,
  Scorer,
} from "./types.ts";
export {
  buildRmInput,
  checkPrm,
  createPrm,
  itemSteps,
  PRM_STEP_CONVENTION,
  prmStepScores,
  rmPromptText,
  sigmoid,
  stepConventionOf,
} from "./prm.ts";
export type { RmInput, StepConvention } from "./prm.ts";
export { checkOrm, createOrm, ormReadPosition, ormScores } from "./orm.ts";
export type { OrmScores } from "./orm.ts";
export { loadRewardModel, rewardModel, RewardScorer } from "./scorer.ts";
export type { RewardModel, RewardScorerOptions } from "./scorer.ts";
export { ExactStepScorer } from "./exact_scorer.ts";
export {
  builtinStepExamples,
  continueTexts,
  exactLabels,
  knownNumbers,
  labelPolicySamples,
  monteCarloStepLabels,
  outcomeExamples,
  samplePolicy,
  stopIdsOf,
} from "./labels.ts";
export type {
  BuiltinLabelOptions,
  MonteCarloOptions,
  MonteCarloResult,
  OutcomeExample,
  PolicySampleOptions,
  StepExample,
} from "./labels.ts";
export {
  bceWithLogits,
  ormTrainExamples,
  prmTrainExamples,
  rmLossAndGrads,
  trainRewardModel,
} from "./train_rm.ts";
export type {
  PrmTrainExampleOptions,
  RmLossResult,
  RmStepLog,
  RmTrainExample,
  RmTrainOptions,
  RmTrainResult,
} from "./train_rm.ts";
export {
  bestOfN,
  classMetrics,
  evaluateRewardModels,
  formatRmReport,
  policyConfidence,
  rocAuc,
  SELECTORS,
  thresholdAccuracy,
  voteAnswer,
  withinProblemAuc,
} from "./eval_rm.ts";
export type {
  BestOfNGroup,
  BestOfNResult,
  ClassMetrics,
  EvalProblem,
  RmEvalOptions,
  RmEvalReport,
  ScoredSample,
  Selector,
  WithinProblemAuc,
} from "./eval_rm.ts";
