/**
 * SFT checkpoints: `<out>/checkpoint-<step>/` holds the weights in Hugging Face layout (`saveModel`, written
 * atomically as a directory), the optimiser state (`optimizer.safetensors`) and `trainer_state.json`, written
 * last, so a checkpoint is complete exactly when its trainer state exists. Older checkpoints are pruned only after
 * a newer one is complete: a crash at any point leaves the last complete checkpoint.
 *
 * `trainer_state.json`:
 * ```json
 * { "format": "sft-trainer-state", "version": 1, "step": 40, "consumed": 640, "epoch": 0.32,
 *   "examples": 2000, "tokens": 91234, "elapsed_s": 61.2, "optimizer": "adamw",
 *   "data_order": { "seed": 1, "scheme": "…", "position": 640 },
 *   "rng": { "generator": "mulberry32", "seed": "sft-order:1:0", "epoch_offset": 640 },
 *   "model_source": "runs/tiny-init", "last_eval": { … } | null, "config": { …every SftConfig field… } }
 * ```
 *
 * @module
 */
import type { Qwen2Model } from "../model/model.ts";
import { saveModel } from "../model/model.ts";
import type { AdamW, SGD } from "../optim/mod.ts";
import { exists, joinPath, removeIfExists, writeJsonAtomic } from "../util/atomic.ts";
import type { EvaluateResult } from "./evaluate.ts";
import { DATA_ORDER_SCHEME } from "./sft_data.ts";
import type { SftConfig } from "./sft.ts";

/** Trainer state saved with every checkpoint. */
export interface TrainerState {
  /** Optimiser steps taken. */
  step: number;
  /** Examples consumed from the data stream (the data-order position). */
  consumed: number;
  /** Input tokens trained on so far. */
  tokens: number;
  /** Wall time of the run so far (seconds, across resumes). */
  elapsedS: number;
  /** The starting model of the run (before any resume). */
  modelSource: string;
  /** The last evaluation, if any. */
  lastEval: EvaluateResult | null;
  /** The configuration the checkpoint was trained with. */
  config: SftConfig;
}

/** What {@linkcode writeCheckpoint} saves. */
export interface CheckpointSource {
  /** Output directory of the run. */
  out: string;
  model: Qwen2Model;
  opt: AdamW | SGD;
  state: TrainerState;
  /** Number of training examples (for the epoch). */
  examples: number;
  /** Directory whose tokenizer files are copied into the checkpoint. */
  tokenizerDir?: string;
}

/** A complete checkpoint of a run directory. */
export interface CheckpointInfo {
  /** `checkpoint-<step>`. */
  name: string;
  /** Its path. */
  dir: string;
  step: number;
}

const NAME = /^checkpoint-(\d+)$/;

/** Complete checkpoints of `out` (those with a trainer state), newest first. */
export async function findCheckpoints(out: string): Promise<CheckpointInfo[]> {
  const found: CheckpointInfo[] = [];
  try {
    for await (const e of Deno.readDir(out)) {
      const m = NAME.exec(e.name);
      if (!m || !e.isDirectory) continue;
      const dir = joinPath(out, e.name);
      if (await exists(joinPath(dir, "trainer_state.json"))) {
        found.push({ name: e.name, dir, step: Number(m[1]) });
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return found.sort((a, b) => b.step - a.step);
}

/** Writes `checkpoint-<step>` (weights, optimiser state, then trainer state); returns its path. */
export async function writeCheckpoint(src: CheckpointSource): Promise<string> {
  const { state } = src;
  const dir = joinPath(src.out, `checkpoint-${state.step}`);
  await saveModel(src.model, dir, { tokenizerDir: src.tokenizerDir });
  await src.opt.save(joinPath(dir, "optimizer.safetensors"));
  await writeJsonAtomic(joinPath(dir, "trainer_state.json"), {
    format: "sft-trainer-state",
    version: 1,
    step: state.step,
    consumed: state.consumed,
    epoch: state.consumed / src.examples,
    examples: src.examples,
    tokens: state.tokens,
    elapsed_s: state.elapsedS,
    optimizer: src.opt.kind,
    data_order: { seed: state.config.seed, scheme: DATA_ORDER_SCHEME, position: state.consumed },
    // The only randomness of SFT is the data order: its generator is re-seeded per epoch, so the epoch and the
    // offset into it are the whole RNG state.
    rng: {
      generator: "mulberry32",
      seed: `sft-order:${state.config.seed}:${Math.floor(state.consumed / src.examples)}`,
      epoch_offset: state.consumed % src.examples,
    },
    model_source: state.modelSource,
    last_eval: state.lastEval,
    config: state.config,
  });
  return dir;
}

/**
 * The JSON object of `trainer_state.json` in checkpoint `dir`, checked to be of `format` with a `config` object,
 * and a `fail` that throws naming the file.
 */
export async function readStateJson(
  dir: string,
  format: string,
): Promise<{ raw: Record<string, unknown>; fail: (msg: string) => never }> {
  const path = joinPath(dir, "trainer_state.json");
  const fail = (msg: string): never => {
    throw new Error(`Cannot read trainer state "${path}": ${msg}`);
  };
  let raw: Record<string, unknown> = {};
  try {
    raw = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    fail((e as Error).message);
  }
  if (raw.format !== format) fail(`"format" is ${JSON.stringify(raw.format)}, expected "${format}"`);
  if (typeof raw.config !== "object" || raw.config === null) fail(`"config" is missing`);
  return { raw, fail };
}

/** Reads and validates `trainer_state.json` of checkpoint `dir`. */
export async function readTrainerState(dir: string): Promise<TrainerState> {
  const { raw, fail } = await readStateJson(dir, "sft-trainer-state");
  for (const k of ["step", "consumed", "tokens"]) {
    if (!Number.isSafeInteger(raw[k]) || (raw[k] as number) < 0) {
      fail(`"${k}" is ${JSON.stringify(raw[k])}, expected an integer ≥ 0`);
    }
  }
  return {
    step: raw.step as number,
    consumed: raw.consumed as number,
    tokens: raw.tokens as number,
    elapsedS: Number(raw.elapsed_s) || 0,
    modelSource: String(raw.model_source ?? ""),
    lastEval: (raw.last_eval ?? null) as EvaluateResult | null,
    config: raw.config as SftConfig,
  };
}

/** Settings that fix the data stream: a resumed run must use the checkpoint's values. */
const STREAM_FIELDS: [keyof SftConfig, string][] = [
  ["data", "--data"],
  ["seed", "--seed"],
  ["batchSize", "--batch-size"],
  ["gradAccum", "--grad-accum"],
  ["maxLen", "--max-len"],
  ["lengthGroup", "--length-group"],
  ["trainProblems", "--train-problems"],
  ["optimizer", "--optimizer"],
];

/** Why `now` cannot resume a run trained with `saved` (null when it can). */
export function resumeMismatch(saved: SftConfig, now: SftConfig): string | null {
  for (const [k, flag] of STREAM_FIELDS) {
    if (saved[k] !== undefined && saved[k] !== now[k]) {
      return `${flag} is ${JSON.stringify(now[k])} but the checkpoint was trained with ${
        JSON.stringify(saved[k])
      } (the data stream or optimizer would change)`;
    }
  }
  return null;
}

/**
 * Removes all but the newest `keep` complete checkpoints of `out` (keep ≤ 0: keep all), and incomplete ones
 * (left by a crash) older than the newest complete one.
 */
export async function pruneCheckpoints(out: string, keep: number): Promise<void> {
  const complete = await findCheckpoints(out);
  if (complete.length === 0) return;
  if (keep > 0) { for (const c of complete.slice(keep)) await removeIfExists(c.dir); }
  for await (const e of Deno.readDir(out)) {
    const m = NAME.exec(e.name);
    if (m && Number(m[1]) < complete[0].step && !complete.some((c) => c.name === e.name)) {
      await removeIfExists(joinPath(out, e.name));
    }
  }
}

/** Removes every checkpoint directory (complete or not) and the final model of `out` (for `--overwrite`). */
export async function clearRun(out: string): Promise<void> {
  try {
    for await (const e of Deno.readDir(out)) {
      if (/^checkpoint-\d+/.test(e.name) || /^final(\.(tmp|old)-[0-9a-f]+)?$/.test(e.name)) {
        await removeIfExists(joinPath(out, e.name));
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/**
 * Where a run in `out` starts (shared by SFT and PPO): with `resume`, the newest complete checkpoint's state read
 * by `read` (an error when `mismatch` finds a setting that cannot change on resume; a log line and a fresh start
 * when there is none); without it, an error if `out` already has checkpoints, unless `overwrite`, which clears
 * them. Returns the state and the checkpoint directory, or nulls for a fresh start.
 */
export async function openRun<S extends { config: C }, C>(
  cfg: C & { out: string; resume: boolean; overwrite: boolean },
  read: (dir: string) => Promise<S>,
  mismatch: (saved: C, now: C) => string | null,
  log: (line: string) => void,
): Promise<{ resumed: S | null; dir: string | null }> {
  const found = await findCheckpoints(cfg.out);
  let resumed: S | null = null;
  if (cfg.resume && found.length > 0) {
    resumed = await read(found[0].dir);
    const bad = mismatch(resumed.config, cfg);
    if (bad) throw new Error(`Cannot resume from "${found[0].dir}": ${bad}`);
  } else if (cfg.resume) {
    log(`No checkpoint in "${cfg.out}": starting from the beginning`);
  } else if (found.length > 0 && !cfg.overwrite) {
    throw new Error(
      `Output directory "${cfg.out}" already has checkpoints (${found.map((c) => c.name).join(", ")}): ` +
        `pass --resume to continue or --overwrite to start over`,
    );
  }
  if (cfg.overwrite) await clearRun(cfg.out);
  return { resumed, dir: resumed ? found[0].dir : null };
}
