/**
 * What a PPO run starts from: the policy (the SFT policy of the built-in task, built with the SFT library API when
 * absent), a PRM for it (trained with the reward-model library API when absent), and the train and held-out
 * problems.
 *
 * The default PRM recipe (`ensurePrm`): the SFT policy's trunk with a fresh one-logit token-classification head,
 * trained with BCE on exact step labels of built-in train problems — each reference solution (all steps 1) and
 * its corruptions (1 up to the injected error, 0 from it on: arithmetic slips, wrong operands, skipped and
 * repeated steps) — plus policy samples labelled exactly (`labelSteps`), so the PRM has seen the policy's own
 * mistakes.
 *
 * @module
 */
import { generateProblems, type MathExample } from "../data/arithmetic.ts";
import { loadGsm8k } from "../data/gsm8k.ts";
import type { Gpu } from "../gpu/device.ts";
import { loadModel, releaseModel, saveModel } from "../model/model.ts";
import { ExactStepScorer } from "../rm/exact_scorer.ts";
import { builtinStepExamples, labelPolicySamples, samplePolicy } from "../rm/labels.ts";
import { createPrm } from "../rm/prm.ts";
import { prmTrainExamples, trainRewardModel } from "../rm/train_rm.ts";
import { loadTokenizer } from "../tokenizer/tokenizer.ts";
import { runSft } from "../train/sft.ts";
import { builtinProblems } from "../train/sft_data.ts";
import { isModelDir, SHIPPED_TINY } from "../train/tiny.ts";

/** Where `deno task sft` leaves the tiny preset's SFT policy (its `--out` default + `/final`). */
export const SFT_POLICY_DIR = "runs/sft-tiny/final";
/** Where the built-in run keeps its PRM (`train-prm`'s default output + `/final`). */
export const PRM_DIR = "runs/prm-tiny/final";

/** The tiny preset's SFT policy shipped with the project, used when {@link SFT_POLICY_DIR} is absent. */
export const SHIPPED_SFT_DIR: string = SHIPPED_TINY.policy;
/** The PRM shipped for {@link SHIPPED_SFT_DIR}, used when {@link PRM_DIR} is absent. */
export const SHIPPED_PRM_DIR: string = SHIPPED_TINY.prm;

/** Callbacks of the setup helpers. */
export interface SetupHooks {
  gpu?: Gpu;
  log?: (line: string) => void;
}

/**
 * The policy directory of `model`: itself, or for "auto" {@linkcode SFT_POLICY_DIR}, else the shipped
 * {@linkcode SHIPPED_SFT_DIR}, else trained first with the SFT defaults (`runSft({})`, resuming an interrupted
 * run).
 */
export async function ensurePolicy(model: string, hooks: SetupHooks = {}): Promise<string> {
  if (model !== "auto") return model;
  if (await isModelDir(SFT_POLICY_DIR)) return SFT_POLICY_DIR;
  if (await isModelDir(SHIPPED_SFT_DIR)) {
    hooks.log?.(`No SFT policy in "${SFT_POLICY_DIR}": using the shipped one in "${SHIPPED_SFT_DIR}"`);
    return SHIPPED_SFT_DIR;
  }
  hooks.log?.(
    `No SFT policy in "${SFT_POLICY_DIR}": training it with the SFT defaults (as \`deno task sft\`)`,
  );
  const out = SFT_POLICY_DIR.slice(0, SFT_POLICY_DIR.lastIndexOf("/"));
  const r = await runSft({ out, resume: true }, { gpu: hooks.gpu, log: hooks.log });
  if (!r.finalDir) throw new Error(`Cannot build the SFT policy: the run in "${out}" stopped early`);
  return r.finalDir;
}

/** Options of {@linkcode ensurePrm}'s training recipe. */
export interface PrmRecipe {
  /** Built-in train problems (default 400). */
  problems?: number;
  /** Corrupted solutions per problem (default 4: every kind once). */
  corruptions?: number;
  /** Problems whose policy sample is labelled and added (default 200). */
  policySamples?: number;
  /** Optimiser steps (default 150), batch size (16), peak learning rate (5e-4, cosine after 15 warmup steps). */
  steps?: number;
  batchSize?: number;
  lr?: number;
  /** Seed (default 0). */
  seed?: number;
  /** Sample the policy with the GSM8K calculator, as the PPO rollouts do (default false). */
  calculator?: boolean;
}

/**
 * The PRM directory of `prm`: null for "none", itself for a path or hub id, and for "auto" {@linkcode PRM_DIR}
 * (`dir` overrides the location), else the shipped {@linkcode SHIPPED_PRM_DIR} when the policy is the shipped
 * one, else trained first from the policy in `policyDir` with the recipe of the module doc.
 */
export async function ensurePrm(
  prm: string,
  policyDir: string,
  opts: SetupHooks & { recipe?: PrmRecipe; dir?: string } = {},
): Promise<string | null> {
  if (prm === "none") return null;
  if (prm !== "auto") return prm;
  const target = opts.dir ?? PRM_DIR;
  if (await isModelDir(target)) return target;
  if (!opts.dir && policyDir === SHIPPED_SFT_DIR && (await isModelDir(SHIPPED_PRM_DIR))) {
    opts.log?.(`No PRM in "${target}": using the shipped one in "${SHIPPED_PRM_DIR}"`);
    return SHIPPED_PRM_DIR;
  }
  const r = opts.recipe ?? {}, seed = r.seed ?? 0, log = opts.log ?? (() => {});
  const t0 = performance.now();
  log(`No PRM in "${target}": training one from "${policyDir}" (exact step labels of the built-in task)`);
  const tokenizer = await loadTokenizer(policyDir);
  const problems = generateProblems(r.problems ?? 400, { seed: `ppo-prm:${seed}`, split: "train" });
  const examples = builtinStepExamples(problems, { corruptions: r.corruptions ?? 4, seed });
  const nSamples = Math.min(problems.length, r.policySamples ?? 200);
  if (nSamples > 0) {
    const policy = await loadModel(policyDir, { gpu: opts.gpu });
    try {
      const picked = problems.slice(0, nSamples);
      const samples = await samplePolicy(policy, tokenizer, picked.map((p) => p.question), {
        n: 1,
        maxNewTokens: 200,
        seed,
        calculator: r.calculator ?? false,
      });
      examples.push(...labelPolicySamples(picked, samples));
    } finally {
      releaseModel(policy);
    }
  }
  const model = createPrm(await loadModel(policyDir, { gpu: opts.gpu }), { seed });
  try {
    const steps = r.steps ?? 150;
    const res = await trainRewardModel(model, prmTrainExamples(tokenizer, examples), {
      steps,
      lr: r.lr ?? 5e-4,
      batchSize: r.batchSize ?? 16,
      warmupSteps: Math.min(15, steps),
      seed,
      onStep: (l) => {
        if (l.step % 25 === 0 || l.step === steps) {
          log(
            `prm step ${l.step}/${steps}  loss ${l.loss.toFixed(4)}  acc ${(100 * l.accuracy).toFixed(1)}%`,
          );
        }
      },
    });
    await saveModel(model, target, { tokenizerDir: policyDir });
    log(
      `Trained the PRM on ${examples.length} labelled solutions in ${res.steps} steps ` +
        `(${((performance.now() - t0) / 1000).toFixed(0)} s): "${target}"`,
    );
  } finally {
    releaseModel(model);
  }
  return target;
}

/** Train and held-out problems of a run. */
export interface RunProblems {
  train: MathExample[];
  /** Where the train problems came from, in words. */
  trainSource: string;
  eval: MathExample[];
}

/**
 * The oracle PRM of `--prm exact` (core/rm/exact_scorer.ts) for a run on the built-in task: the exact labels of
 * the run's train problems and of the held-out ones (the problems {@linkcode loadProblems} makes).
 */
export function builtinExactScorer(
  cfg: { trainProblems: number; seed: number; evalProblems: number },
): ExactStepScorer {
  return new ExactStepScorer([
    ...generateProblems(cfg.trainProblems, { seed: cfg.seed, split: "train" }),
    ...generateProblems(cfg.evalProblems, { seed: 0, split: "test" }),
  ]);
}

/**
 * Loads the train problems (`data`: "builtin" = `trainProblems` problems of the built-in train split, else a
 * GSM8K source's train split) and the held-out problems (`evalData`: "auto" = the built-in test split for builtin
 * data, else the source's test split; "none"; "builtin"; or a GSM8K source), the first `evalProblems` of them.
 */
export async function loadProblems(
  cfg: { data: string; trainProblems: number; evalData: string; evalProblems: number; seed: number },
): Promise<RunProblems> {
  const builtin = cfg.data === "builtin";
  const train = builtin
    ? builtinProblems(cfg.trainProblems, { seed: cfg.seed, split: "train" })
    : await loadGsm8k(cfg.data, { split: "train" });
  if (train.length === 0) throw new Error(`Cannot train: "${cfg.data}" has no problems`);
  const src = cfg.evalData === "auto" ? (builtin ? "builtin" : cfg.data) : cfg.evalData;
  let evalSet: MathExample[] = [];
  if (cfg.evalProblems > 0 && src === "builtin") {
    evalSet = builtinProblems(cfg.evalProblems, { seed: 0, split: "test" });
  } else if (cfg.evalProblems > 0 && src !== "none") {
    // A single JSONL file is its own split: take the "test" sibling of a train file when there is one.
    const sibling = src.replace(/train(\.jsonl)$/, "test$1");
    const source = sibling !== src && (await isFile(sibling)) ? sibling : src;
    evalSet = await loadGsm8k(source, { split: "test", limit: cfg.evalProblems });
  }
  const trainSource = builtin
    ? `the built-in task (${cfg.trainProblems} train problems, seed ${cfg.seed})`
    : `"${cfg.data}" (${train.length} problems)`;
  return { train, trainSource, eval: evalSet };
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
