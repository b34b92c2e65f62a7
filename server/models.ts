/**
 * What the server serves: the PRM/ORM {@linkcode RewardScorer} and the policy {@linkcode PolicyGenerator}, loaded
 * from directories or hub ids, or — with no model given — the built-in task's tiny models.
 *
 * Defaults, per role, when none of `policy`/`prm`/`orm` is given:
 * ```
 * policy  runs/sft-tiny/final   (deno task sft)   else core/assets/tiny/sft   else runs/serve-default/policy
 * prm     runs/prm-tiny/final   (train-prm)       else core/assets/tiny/prm   else runs/serve-default/prm
 * orm     runs/orm-tiny/final   (train-orm)       else core/assets/tiny/orm   else runs/serve-default/orm
 * ```
 * core/assets/tiny holds the models the project trained and ships. The runs/serve-default models are random-initialised tiny-preset models (policy: `tinyPresetConfig()` with
 * N(0, 0.02²) weights, seed 0; PRM and ORM: seeds 1 and 2 with fresh one-logit heads), built on first use and
 * reused afterwards. The log says which each role got.
 *
 * @module
 */
import { tinyPresetConfig } from "../core/data/tiny_tokenizer.ts";
import { getGpu, type Gpu } from "../core/gpu/device.ts";
import { randomModel, releaseModel, saveModel } from "../core/model/model.ts";
import { createOrm } from "../core/rm/orm.ts";
import { createPrm } from "../core/rm/prm.ts";
import { RewardScorer } from "../core/rm/scorer.ts";
import type { ModelInfo } from "../core/rm/types.ts";
import { ensureTinyModel, isModelDir, SHIPPED_TINY } from "../core/train/tiny.ts";
import { joinPath } from "../core/util/atomic.ts";
import { PolicyGenerator } from "./generator.ts";

/** Model sources: directories or hub ids. */
export interface ModelFlags {
  /** Causal LM behind `/v1/generate`. */
  policy?: string;
  /** Process reward model. */
  prm?: string;
  /** Outcome reward model. */
  orm?: string;
}

/** The built-in task's trained tiny models, by role. */
export const BUILTIN_MODEL_DIRS: Readonly<Required<ModelFlags>> = {
  policy: "runs/sft-tiny/final",
  prm: "runs/prm-tiny/final",
  orm: "runs/orm-tiny/final",
};

/** Where random-initialised stand-ins are built when the built-in task's models are absent. */
export const SERVE_DEFAULT_DIR = "runs/serve-default";

/** Loaded models. */
export interface Serving {
  /** PRM and/or ORM. */
  scorer: RewardScorer;
  /** The policy, when one is loaded. */
  generator?: PolicyGenerator;
  /** Every model served. */
  models(): ModelInfo[];
  /** Releases all GPU memory. */
  release(): void;
}

/** Options of {@linkcode loadServing}. */
export interface LoadServingOptions {
  /** Device (default: the shared one). */
  gpu?: Gpu;
  /** Trained defaults (default {@linkcode BUILTIN_MODEL_DIRS}). */
  builtin?: Required<ModelFlags>;
  /** Shipped trained models (default {@linkcode SHIPPED_TINY}); tried after `builtin`. */
  shipped?: Required<ModelFlags>;
  /** Random-init fallback directory (default {@linkcode SERVE_DEFAULT_DIR}). */
  defaultDir?: string;
}

/** Builds the random-init stand-in of `role` in `root/role` unless it is there; returns whether it built. */
async function ensureRandom(role: keyof ModelFlags, root: string, gpu: Gpu): Promise<boolean> {
  const dir = joinPath(root, role);
  if (role === "policy") return (await ensureTinyModel(dir, { gpu, seed: 0 })).created;
  if (await isModelDir(dir)) return false;
  const tok = (await ensureTinyModel(joinPath(root, "policy"), { gpu, seed: 0 })).dir; // tokenizer source
  const trunk = randomModel(gpu, tinyPresetConfig(), { seed: role === "prm" ? 1 : 2, std: 0.02 });
  const rm = role === "prm" ? createPrm(trunk, { seed: 1 }) : createOrm(trunk, { seed: 2 });
  try {
    await saveModel(rm, dir, { tokenizerDir: tok });
  } finally {
    releaseModel(rm);
  }
  return true;
}

/** Loads the models of `flags` (see the module doc for the defaults), logging where each came from. */
export async function loadServing(
  flags: ModelFlags,
  log: (msg: string) => void,
  opts: LoadServingOptions = {},
): Promise<Serving> {
  const gpu = opts.gpu ?? await getGpu();
  const src: ModelFlags = { ...flags };
  if (!flags.policy && !flags.prm && !flags.orm) {
    const builtin = opts.builtin ?? BUILTIN_MODEL_DIRS;
    const fallback = opts.defaultDir ?? SERVE_DEFAULT_DIR;
    for (const role of ["policy", "prm", "orm"] as const) {
      const shipped = (opts.shipped ?? SHIPPED_TINY)[role];
      if (await isModelDir(builtin[role])) {
        src[role] = builtin[role];
        log(`${role}: the built-in task's trained tiny model from "${builtin[role]}"`);
      } else if (await isModelDir(shipped)) {
        src[role] = shipped;
        log(`${role}: "${builtin[role]}" not found; the shipped trained tiny model from "${shipped}"`);
      } else {
        src[role] = joinPath(fallback, role);
        const built = await ensureRandom(role, fallback, gpu);
        log(
          `${role}: "${builtin[role]}" not found; ${
            built ? "built" : "using"
          } a random-initialised tiny model ` +
            `${built ? "into" : "from"} "${src[role]}" (scores and samples are untrained)`,
        );
      }
    }
  }
  if (!src.prm && !src.orm) {
    throw new Error("Cannot serve: give --prm and/or --orm (scoring needs at least one reward model)");
  }
  const scorer = await RewardScorer.load({ prm: src.prm, orm: src.orm, gpu });
  let generator: PolicyGenerator | undefined;
  try {
    generator = src.policy ? await PolicyGenerator.load(src.policy, { gpu }) : undefined;
  } catch (e) {
    scorer.release();
    throw e;
  }
  const models = () => [...scorer.models(), ...(generator?.models() ?? [])];
  for (const m of models()) {
    log(
      `loaded ${m.role} "${m.source}": ${m.architecture}, ${m.parameters.toLocaleString("en-US")} parameters`,
    );
  }
  if (!generator) log("no policy: POST /v1/generate answers 501");
  return {
    scorer,
    generator,
    models,
    release() {
      scorer.release();
      generator?.release();
    },
  };
}
