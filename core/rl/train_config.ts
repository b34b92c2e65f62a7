/**
 * Every setting of a PPO run (`deno task train`), its defaults — the built-in tiny run: the SFT policy of the
 * arithmetic task, a PRM for it, success reward + Clip-Delta PRM reward — and its validation. Each field is a CLI
 * flag (`samplesPerQuestion` → `--samples-per-question`) and a key of the `--config` JSON file.
 *
 * @module
 */
import type { KLEstimator } from "./kl.ts";
import type { ScheduleKind } from "../optim/mod.ts";
import type { ShapingKind } from "../rewards/shaping.ts";

/** `--prm exact`: step scores from the built-in task's exact step labels (core/rm/exact_scorer.ts). */
export const EXACT_PRM = "exact";

/** Every setting of a PPO run. */
export interface TrainConfig {
  /** Policy: directory or hub id; "auto" = runs/sft-tiny/final, built by SFT (the library API) when absent. */
  model: string;
  /** Reference policy (frozen); "" = a separate copy of `model`. */
  ref: string;
  /** PRM: directory or hub id; "auto" = runs/prm-tiny/final, trained when absent; "none" = no process reward. */
  prm: string;
  /** Critic trunk: "policy", "prm" (the PRM's trunk) or "none" (no critic: V ≡ 0). */
  critic: string;
  /** Train problems: "builtin", a GSM8K JSONL/Parquet file or directory, or a hub dataset id. */
  data: string;
  /** Built-in task: train problems to generate. */
  trainProblems: number;
  /** Held-out set: "auto" (builtin test split for --data builtin, else the data's test split), "none", "builtin" or a GSM8K source. */
  evalData: string;
  /** Held-out problems per evaluation (0: none). */
  evalProblems: number;
  /** Evaluate every N iterations (0: only before and after training). */
  evalEvery: number;
  /** Sampled solutions per held-out problem for pass@k / maj@k (0: greedy only). */
  evalSamples: number;
  evalBatchSize: number;
  evalMaxNewTokens: number;
  /** PPO iterations (rollouts + update). */
  iterations: number;
  /** Questions Q per iteration. */
  questionsPerIteration: number;
  /** Samples K per question. */
  samplesPerQuestion: number;
  /** Longest response in tokens. */
  maxNewTokens: number;
  /** Sample rollouts and evaluate with the GSM8K calculator (exact values inside `<<expr=…>>`). */
  calculator: boolean;
  temperature: number;
  topK: number;
  topP: number;
  /** PPO epochs over each batch of rollouts. */
  epochs: number;
  /** Sequences per optimiser step (0: the whole batch). */
  miniBatchSize: number;
  /** Sequences per forward/backward pass (0: the minibatch). */
  microBatchSize: number;
  /** Actor peak learning rate, schedule and warmup (in optimiser steps). */
  lr: number;
  lrSchedule: ScheduleKind;
  warmupSteps: number;
  /** Actor optimiser: AdamW (per-weight step ≈ lr) or plain SGD (step = lr·gradient). The critic uses AdamW. */
  optimizer: "adamw" | "sgd";
  /** Critic learning rate. */
  criticLr: number;
  clipRange: number;
  clipRangeValue: number;
  /** Entropy bonus coefficient. */
  entCoef: number;
  /** KL coefficient β, estimator, and where the KL goes ("reward" or "loss"). */
  klCoef: number;
  klEstimator: KLEstimator;
  klMode: "reward" | "loss";
  /** Adaptive KL target (0: fixed β) and horizon in samples (Ziegler et al.). */
  klTarget: number;
  klHorizon: number;
  /** Early stop of an update when approx-KL > 1.5·targetKl (0: off). */
  targetKl: number;
  gamma: number;
  lambda: number;
  /** Whiten advantages over the batch. */
  whiten: boolean;
  /** Advantage estimator: "gae" (critic values) or "rloo" (leave-one-out mean of the question's samples). */
  advantage: "gae" | "rloo";
  /** Success reward for a correct / wrong final answer. */
  successCorrect: number;
  successWrong: number;
  /** PRM reward shaping: none (raw summed), clip, delta, clip_delta, min. */
  shaping: ShapingKind;
  /** Clip threshold η. */
  eta: number;
  /** Weight α of the process rewards (0: success only). */
  alpha: number;
  /** Delta over steps 1..K−1 only, the final step judged by the success reward (Gao et al. 2024). */
  finalStepZero: boolean;
  maxGradNorm: number;
  weightDecay: number;
  /** Seed of the data order, sampling and minibatches. */
  seed: number;
  /** Output directory. */
  out: string;
  /** Checkpoint every N iterations (0: only at the end); keep the newest `saveTotalLimit` (0: all). */
  saveEvery: number;
  saveTotalLimit: number;
  resume: boolean;
  overwrite: boolean;
  /** Metrics JSONL path ("" = <out>/metrics.jsonl). */
  log: string;
  quiet: boolean;
}

/** The built-in default run (see the module doc). */
export const TRAIN_DEFAULTS: Readonly<TrainConfig> = {
  model: "auto",
  ref: "",
  prm: "auto",
  critic: "policy",
  data: "builtin",
  trainProblems: 2000,
  evalData: "auto",
  evalProblems: 200,
  evalEvery: 0,
  evalSamples: 0,
  evalBatchSize: 100,
  evalMaxNewTokens: 200,
  iterations: 10,
  questionsPerIteration: 8,
  samplesPerQuestion: 4,
  maxNewTokens: 160,
  calculator: true,
  temperature: 1,
  topK: 0,
  topP: 1,
  epochs: 1,
  miniBatchSize: 8,
  microBatchSize: 0,
  lr: 3e-5,
  lrSchedule: "constant",
  warmupSteps: 0,
  optimizer: "adamw",
  criticLr: 1e-3,
  clipRange: 0.2,
  clipRangeValue: 0.2,
  entCoef: 0,
  klCoef: 0.005,
  klEstimator: "k1",
  klMode: "reward",
  klTarget: 0,
  klHorizon: 10000,
  targetKl: 0,
  gamma: 1,
  lambda: 0.95,
  whiten: true,
  advantage: "gae",
  successCorrect: 1,
  successWrong: 0,
  shaping: "clip_delta",
  eta: 0.5,
  alpha: 1,
  finalStepZero: true,
  maxGradNorm: 1,
  weightDecay: 0,
  seed: 0,
  out: "runs/ppo-tiny",
  saveEvery: 0,
  saveTotalLimit: 2,
  resume: false,
  overwrite: false,
  log: "",
  quiet: false,
};

/** One-line descriptions of every field, in `--help` order. */
export const TRAIN_FLAG_DOCS: [keyof TrainConfig, string][] = [
  [
    "model",
    'policy directory or hub id; "auto" = runs/sft-tiny/final (built with the SFT defaults if absent)',
  ],
  ["ref", 'frozen reference policy; "" = a separate copy of --model'],
  [
    "prm",
    'PRM directory or hub id; "auto" = runs/prm-tiny/final (trained if absent); "none"; "exact" = the built-in ' +
    "task's exact step labels as step scores (an oracle PRM, for comparison)",
  ],
  ["critic", 'critic trunk: "policy", "prm" or "none" (values 0); none with --advantage rloo'],
  [
    "data",
    '"builtin" (arithmetic train split), a GSM8K JSONL/Parquet file or directory, or a hub dataset id',
  ],
  ["trainProblems", "built-in task: train problems generated"],
  ["evalData", 'held-out set: "auto", "none", "builtin" or a GSM8K source (its test split)'],
  ["evalProblems", "held-out problems per evaluation (0: none)"],
  ["evalEvery", "evaluate every N iterations (0: before and after training only)"],
  ["evalSamples", "sampled solutions per held-out problem for pass@1/pass@k/maj@k (0: greedy only)"],
  ["evalBatchSize", "sequences decoded together during evaluation"],
  ["evalMaxNewTokens", "longest evaluation response (tokens)"],
  ["iterations", "PPO iterations (rollouts + update)"],
  ["questionsPerIteration", "questions per iteration"],
  ["samplesPerQuestion", "sampled solutions per question"],
  ["maxNewTokens", "longest rollout response (tokens)"],
  ["calculator", "GSM8K calculator in rollouts and evaluation (its tokens are not policy actions)"],
  ["temperature", "rollout sampling temperature"],
  ["topK", "rollout top-k (0: off)"],
  ["topP", "rollout nucleus mass (1: off)"],
  ["epochs", "PPO epochs over each batch of rollouts"],
  ["miniBatchSize", "sequences per optimiser step (0: the whole batch)"],
  ["microBatchSize", "sequences per forward/backward pass (0: the minibatch)"],
  ["lr", "actor peak learning rate"],
  ["lrSchedule", "constant | linear | cosine (actor, after warmup)"],
  ["warmupSteps", "actor linear warmup (optimiser steps)"],
  ["optimizer", "actor optimiser: adamw | sgd (w ← w − lr·g, no momentum; the critic uses AdamW)"],
  ["criticLr", "critic learning rate"],
  ["clipRange", "policy ratio clip ε"],
  ["clipRangeValue", "value clip ε_v"],
  ["entCoef", "entropy bonus coefficient"],
  ["klCoef", "KL coefficient β (initial value when adaptive)"],
  ["klEstimator", "k1 | k2 | k3"],
  ["klMode", 'KL penalty in the "reward" (per token, before GAE) or in the "loss"'],
  ["klTarget", "adaptive KL target per token (0: fixed β)"],
  ["klHorizon", "adaptive KL horizon (samples)"],
  ["targetKl", "stop an update when a minibatch's approx-KL exceeds 1.5× this (0: off)"],
  ["gamma", "GAE discount γ"],
  ["lambda", "GAE λ"],
  ["whiten", "whiten advantages over the batch"],
  ["advantage", 'advantage estimator: "gae" (critic) or "rloo" (leave-one-out baseline of the K samples)'],
  ["successCorrect", "success reward of a correct final answer"],
  ["successWrong", "success reward of a wrong or missing final answer"],
  ["shaping", "PRM reward shaping: none (raw summed) | clip | delta | clip_delta | min"],
  ["eta", "clip threshold η"],
  ["alpha", "weight α of the process rewards (0: success only)"],
  ["finalStepZero", "Delta over steps 1..K−1, final step 0 (its reward is the success reward)"],
  ["maxGradNorm", "global gradient-norm clip (actor and critic)"],
  ["weightDecay", "AdamW weight decay (actor and critic)"],
  ["seed", "seed of the data order, sampling and minibatches"],
  ["out", "output directory: checkpoint-<i>/, final/, metrics.jsonl, metrics.svg, eval.jsonl"],
  ["saveEvery", "checkpoint every N iterations (0: only at the end)"],
  ["saveTotalLimit", "keep the newest N checkpoints (0: all)"],
  ["resume", "continue from the newest complete checkpoint in --out"],
  ["overwrite", "delete the checkpoints in --out and start over"],
  ["log", "metrics JSONL path (default <out>/metrics.jsonl)"],
  ["quiet", "no progress bar or log lines"],
];

/** The CLI flag of a config field: `batchSize` → `--batch-size`. */
export function trainFlag(field: string): string {
  return `--${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** Throws naming the first invalid setting (by its CLI flag), e.g. `Invalid --epochs 0: expected an integer ≥ 1`. */
export function checkTrainConfig(cfg: TrainConfig): void {
  const bad = (f: keyof TrainConfig, expected: string): never => {
    throw new Error(`Invalid ${trainFlag(f)} ${JSON.stringify(cfg[f])}: expected ${expected}`);
  };
  for (const f of Object.keys(TRAIN_DEFAULTS) as (keyof TrainConfig)[]) {
    if (typeof cfg[f] !== typeof TRAIN_DEFAULTS[f]) bad(f, `a ${typeof TRAIN_DEFAULTS[f]}`);
  }
  const int = (f: keyof TrainConfig, min: number) => {
    if (!Number.isSafeInteger(cfg[f]) || (cfg[f] as number) < min) bad(f, `an integer ≥ ${min}`);
  };
  const num = (f: keyof TrainConfig, lo: number, hi = Infinity, open = false) => {
    const v = cfg[f] as number;
    if (!Number.isFinite(v) || v < lo || v > hi || (open && v === lo)) {
      bad(f, `a number ${open ? ">" : "≥"} ${lo}${hi < Infinity ? ` and ≤ ${hi}` : ""}`);
    }
  };
  for (const f of ["model", "prm", "critic", "data", "evalData", "out"] as const) {
    if (!cfg[f]) bad(f, "a non-empty string");
  }
  for (
    const f of [
      "iterations",
      "questionsPerIteration",
      "samplesPerQuestion",
      "maxNewTokens",
      "epochs",
    ] as const
  ) {
    int(f, 1);
  }
  for (const f of ["evalBatchSize", "evalMaxNewTokens", "trainProblems"] as const) int(f, 1);
  for (
    const f of [
      "evalProblems",
      "evalEvery",
      "evalSamples",
      "topK",
      "miniBatchSize",
      "microBatchSize",
    ] as const
  ) {
    int(f, 0);
  }
  for (const f of ["warmupSteps", "seed", "saveEvery", "saveTotalLimit"] as const) int(f, 0);
  for (
    const f of ["lr", "criticLr", "clipRange", "clipRangeValue", "entCoef", "klCoef", "klTarget"] as const
  ) num(f, 0);
  for (const f of ["targetKl", "maxGradNorm", "weightDecay", "alpha", "temperature"] as const) num(f, 0);
  num("klHorizon", 0, Infinity, true);
  num("topP", 0, 1, true);
  num("gamma", 0, 1);
  num("lambda", 0, 1);
  num("eta", 0, 1);
  num("successCorrect", -Infinity);
  num("successWrong", -Infinity);
  if (!["policy", "prm", "none"].includes(cfg.critic)) bad("critic", '"policy", "prm" or "none"');
  if (cfg.critic === "prm" && cfg.prm === "none") {
    bad("critic", 'a trunk other than "prm" when --prm is none');
  }
  if (cfg.prm === EXACT_PRM && cfg.data !== "builtin") {
    bad("prm", `a PRM directory, hub id, "auto" or "none" ("${EXACT_PRM}" needs --data builtin)`);
  }
  if (cfg.critic === "prm" && cfg.prm === EXACT_PRM) {
    bad("critic", `a trunk other than "prm" when --prm is exact`);
  }
  if (!["adamw", "sgd"].includes(cfg.optimizer)) bad("optimizer", "adamw or sgd");
  if (!["constant", "linear", "cosine"].includes(cfg.lrSchedule)) {
    bad("lrSchedule", "constant, linear or cosine");
  }
  if (!["k1", "k2", "k3"].includes(cfg.klEstimator)) bad("klEstimator", "k1, k2 or k3");
  if (!["reward", "loss"].includes(cfg.klMode)) bad("klMode", '"reward" or "loss"');
  if (!["gae", "rloo"].includes(cfg.advantage)) bad("advantage", '"gae" or "rloo"');
  if (!["none", "clip", "delta", "clip_delta", "min"].includes(cfg.shaping)) {
    bad("shaping", "none, clip, delta, clip_delta or min");
  }
  if (cfg.resume && cfg.overwrite) bad("overwrite", "not together with --resume");
}

/** Parses a `--config` JSON object into config fields, naming unknown keys and wrong types. */
export function parseTrainConfigJson(text: string, source: string): Partial<TrainConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`Cannot read config "${source}": ${(e as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new Error(`Cannot read config "${source}": expected a JSON object of settings`);
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    const key = k.replace(/[-_]([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in TRAIN_DEFAULTS)) throw new Error(`Cannot read config "${source}": unknown setting "${k}"`);
    const want = typeof TRAIN_DEFAULTS[key as keyof TrainConfig];
    if ((typeof v as string) !== want) {
      throw new Error(
        `Cannot read config "${source}": setting "${k}" is ${JSON.stringify(v)}, expected a ${want}`,
      );
    }
    out[key] = v;
  }
  return out as Partial<TrainConfig>;
}
