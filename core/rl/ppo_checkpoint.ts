/**
 * PPO checkpoints: `<out>/checkpoint-<i>/` holds the policy and the critic in Hugging Face layout, both optimiser
 * states and `trainer_state.json` (iteration, KL coefficient, RNG state, evaluations, the full config). The
 * directory is built under a temporary name and renamed into place (`replaceDirAtomic`), so a checkpoint exists
 * exactly when it is complete; older ones are pruned only after a newer one is in place.
 *
 * ```
 * checkpoint-<i>/
 *   policy/ config.json model.safetensors tokenizer.json tokenizer_config.json
 *   critic/ config.json model.safetensors …            (Qwen2ForTokenClassification; absent with --critic none)
 *   policy_optimizer.safetensors  critic_optimizer.safetensors
 *   trainer_state.json
 * ```
 *
 * @module
 */
import { saveModel } from "../model/model.ts";
import { clearRun, findCheckpoints, pruneCheckpoints, readStateJson } from "../train/sft_checkpoint.ts";
import { joinPath, replaceDirAtomic, writeJsonAtomic } from "../util/atomic.ts";
import type { Critic } from "./critic.ts";
import type { Actor } from "./ppo.ts";
import type { TrainConfig } from "./train_config.ts";

/** The held-out numbers kept in the trainer state and the metrics. */
export interface EvalSummary {
  iteration: number;
  greedyAccuracy: number | null;
  pass1: number | null;
  passK: number | null;
  majK: number | null;
  meanResponseTokens: number;
  stepsPerSolution: number;
  repeatedStepRate: number;
  total: number;
}

/** Trainer state saved with every checkpoint. */
export interface PPOTrainerState {
  /** Iterations completed. */
  iteration: number;
  /** Current KL coefficient β (adapted when --kl-target is set). */
  klCoef: number;
  /** Wall time of the run so far, seconds (across resumes). */
  elapsedS: number;
  /** The starting policy, reference and PRM. */
  policySource: string;
  refSource: string;
  prmSource: string | null;
  /** Held-out evaluation before training, and the latest one. */
  initialEval: EvalSummary | null;
  lastEval: EvalSummary | null;
  config: TrainConfig;
}

/** How the run's randomness derives from (seed, iteration): recorded as its RNG state. */
export const PPO_RNG_SCHEME =
  "iteration i: questions [(i-1)Q, iQ) of DataOrder(seed) over the train problems; " +
  'sample k of question q: sequence seed fnv1a32("ppo-sample:<hash(seed,i)>:<q>:<k>"); minibatches: Rng ' +
  '"ppo-minibatch:<seed>:<i>:<epoch>" shuffles';

/** A complete checkpoint of a run directory. */
export interface PPOCheckpointInfo {
  name: string;
  dir: string;
  iteration: number;
}

/** Complete checkpoints of `out`, newest first. */
export async function findPPOCheckpoints(out: string): Promise<PPOCheckpointInfo[]> {
  return (await findCheckpoints(out)).map(({ name, dir, step }) => ({ name, dir, iteration: step }));
}

/** Writes `<out>/checkpoint-<iteration>` atomically (see the module doc); returns its path. */
export async function writePPOCheckpoint(
  src: { out: string; actor: Actor; critic: Critic | null; state: PPOTrainerState; tokenizerDir?: string },
): Promise<string> {
  const { state } = src;
  const dir = joinPath(src.out, `checkpoint-${state.iteration}`);
  await replaceDirAtomic(dir, async (tmp) => {
    await saveModel(src.actor.model, joinPath(tmp, "policy"), { tokenizerDir: src.tokenizerDir });
    await src.actor.opt.save(joinPath(tmp, "policy_optimizer.safetensors"));
    if (src.critic) {
      await src.critic.save(joinPath(tmp, "critic"), { tokenizerDir: src.tokenizerDir });
      await src.critic.opt.save(joinPath(tmp, "critic_optimizer.safetensors"));
    }
    await writeJsonAtomic(joinPath(tmp, "trainer_state.json"), {
      format: "ppo-trainer-state",
      version: 1,
      iteration: state.iteration,
      actor_steps: src.actor.opt.stepCount,
      critic_steps: src.critic?.opt.stepCount ?? 0,
      kl_coef: state.klCoef,
      elapsed_s: state.elapsedS,
      rng: { seed: state.config.seed, scheme: PPO_RNG_SCHEME, iteration: state.iteration },
      policy_source: state.policySource,
      ref_source: state.refSource,
      prm_source: state.prmSource,
      initial_eval: state.initialEval,
      last_eval: state.lastEval,
      config: state.config,
    });
  });
  return dir;
}

/** Reads and validates `trainer_state.json` of checkpoint `dir`. */
export async function readPPOState(dir: string): Promise<PPOTrainerState> {
  const { raw, fail } = await readStateJson(dir, "ppo-trainer-state");
  if (!Number.isSafeInteger(raw.iteration) || (raw.iteration as number) < 0) {
    fail(`"iteration" is ${JSON.stringify(raw.iteration)}, expected an integer ≥ 0`);
  }
  if (!Number.isFinite(raw.kl_coef)) fail(`"kl_coef" is ${JSON.stringify(raw.kl_coef)}, expected a number`);
  return {
    iteration: raw.iteration as number,
    klCoef: raw.kl_coef as number,
    elapsedS: Number(raw.elapsed_s) || 0,
    policySource: String(raw.policy_source ?? ""),
    refSource: String(raw.ref_source ?? ""),
    prmSource: (raw.prm_source ?? null) as string | null,
    initialEval: (raw.initial_eval ?? null) as EvalSummary | null,
    lastEval: (raw.last_eval ?? null) as EvalSummary | null,
    config: raw.config as TrainConfig,
  };
}

/** Settings a resumed run may change: they do not affect the weights. */
const FREE_ON_RESUME = new Set<keyof TrainConfig>([
  "iterations",
  "evalEvery",
  "evalProblems",
  "evalSamples",
  "evalBatchSize",
  "evalMaxNewTokens",
  "evalData",
  "out",
  "saveEvery",
  "saveTotalLimit",
  "resume",
  "overwrite",
  "log",
  "quiet",
]);

/** Why `now` cannot continue a run trained with `saved` (null when it can). */
export function ppoResumeMismatch(saved: TrainConfig, now: TrainConfig): string | null {
  for (const k of Object.keys(now) as (keyof TrainConfig)[]) {
    if (FREE_ON_RESUME.has(k) || saved[k] === undefined || saved[k] === now[k]) continue;
    const flag = `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    return `${flag} is ${JSON.stringify(now[k])} but the checkpoint was trained with ${
      JSON.stringify(saved[k])
    }`;
  }
  return null;
}

/** Removes all but the newest `keep` complete checkpoints of `out` (keep ≤ 0: keep all), and crashed ones. */
export const prunePPOCheckpoints: (out: string, keep: number) => Promise<void> = pruneCheckpoints;

/** Removes every checkpoint and the final models of `out` (for `--overwrite`). */
export const clearPPORun: (out: string) => Promise<void> = clearRun;
