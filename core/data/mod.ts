/**
 * Data: the built-in GSM8K-style arithmetic task (seeded generator, exact step labels, corrupted solutions
 * for reward-model training), the tiny preset's tokenizer and model config, and GSM8K loading from JSONL,
 * Parquet or the Hugging Face hub.
 *
 * @module
 */

export { fnv1a32, Rng } from "./rng.ts";
export {
  applyOp,
  ARITHMETIC_TEMPLATES,
  generateProblem,
  generateProblems,
  problemSplit,
  renderSolution,
  renderStep,
  toMathExample,
} from "./arithmetic.ts";
export type {
  ArithmeticProblem,
  ArithmeticStep,
  ArithOp,
  GenerateProblemOptions,
  GenerateProblemsOptions,
  MathExample,
  StepInput,
} from "./arithmetic.ts";
export { findEquations, parseNumber, ratKey } from "./equations.ts";
export type { Equation, Rational, StepArithmetic } from "./equations.ts";
export { labelSteps, referenceNumbers } from "./step_labels.ts";
export type {
  LabelledStep,
  LabelMode,
  LabelReference,
  LabelStepsOptions,
  StepLabels,
  StepVerdict,
} from "./step_labels.ts";
export { CORRUPTION_KINDS, corruptSolution } from "./corrupt.ts";
export type { CorruptedSolution, CorruptionKind, CorruptOptions } from "./corrupt.ts";
export {
  buildTinyTokenizer,
  preTokenize,
  TINY_CHAT_TEMPLATE,
  TINY_SPECIAL_TOKENS,
  TINY_VOCAB_SIZE,
  tinyPresetConfig,
  trainBpeMerges,
  writeTinyTokenizer,
} from "./tiny_tokenizer.ts";
export type { TinyPresetOptions, TinyTokenizerOptions, TokenizerFiles } from "./tiny_tokenizer.ts";
export { loadGsm8k, parseGsm8kJsonl, parseGsm8kParquet } from "./gsm8k.ts";
export type { LoadGsm8kOptions } from "./gsm8k.ts";
