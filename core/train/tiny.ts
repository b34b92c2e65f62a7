/**
 * The tiny preset's starting point: a randomly initialised tiny Qwen2 model (see `tinyPresetConfig`) with the
 * tiny BPE tokenizer of the built-in arithmetic task, saved as an ordinary Hugging Face checkpoint directory so
 * every command (sft, generate, logprobs, …) loads it like any other model.
 *
 * ```
 * runs/tiny-init/
 *   config.json  model.safetensors  tokenizer.json  tokenizer_config.json
 * ```
 *
 * Building is deterministic: the weights depend only on the seed and std (N(0, std²) matrices, zero biases,
 * unit norms), the tokenizer only on the built-in generator. An existing complete directory is reused as is.
 *
 * @module
 */
import { tinyPresetConfig, writeTinyTokenizer } from "../data/tiny_tokenizer.ts";
import { getGpu, type Gpu } from "../gpu/device.ts";
import { randomModel, releaseModel, saveModel } from "../model/model.ts";
import { exists, joinPath, randomSuffix, removeIfExists } from "../util/atomic.ts";

/** Default directory of the tiny preset's random initialisation. */
export const TINY_INIT_DIR = "runs/tiny-init";

/** Options of {@linkcode ensureTinyModel}. */
export interface TinyModelOptions {
  /** Seed of the random weights (default 0). */
  seed?: number;
  /** Standard deviation of the random weights (default 0.02, HF's `initializer_range`). */
  std?: number;
  /** Device to build on (default: the shared one). */
  gpu?: Gpu;
}

/** Result of {@linkcode ensureTinyModel}. */
export interface TinyModelResult {
  /** The checkpoint directory. */
  dir: string;
  /** Whether it was built now (false: an existing directory was reused). */
  created: boolean;
}

/** Local path of a folder of the repository (resolved from this module, whatever the working directory). */
function repoPath(rel: string): string {
  return decodeURIComponent(new URL(rel, import.meta.url).pathname);
}

/**
 * The built-in task's trained tiny models shipped with the project in `core/assets/tiny/` (made by the
 * project's own `sft`, `train-prm` and `train-orm` runs; core/assets/tiny/README.md has the commands and
 * figures): used by `deno task train` and `deno task serve` when `runs/` has none of its own.
 */
export const SHIPPED_TINY: Readonly<{ policy: string; prm: string; orm: string }> = {
  policy: repoPath("../assets/tiny/sft"),
  prm: repoPath("../assets/tiny/prm"),
  orm: repoPath("../assets/tiny/orm"),
};

/** Whether `dir` holds a complete model directory (config, weights and tokenizer). */
export async function isModelDir(dir: string): Promise<boolean> {
  for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]) {
    if (!(await exists(joinPath(dir, f)))) return false;
  }
  return true;
}

/**
 * Returns the tiny preset's starting checkpoint in `dir`, building it first when absent: random weights from
 * `tinyPresetConfig()` and the tiny tokenizer, written atomically (an interrupted build leaves no directory).
 *
 * @example
 * ```ts
 * const { dir } = await ensureTinyModel("runs/tiny-init");
 * const model = await loadModel(dir);
 * ```
 */
export async function ensureTinyModel(
  dir: string = TINY_INIT_DIR,
  opts: TinyModelOptions = {},
): Promise<TinyModelResult> {
  if (await isModelDir(dir)) return { dir, created: false };
  if (await exists(dir)) {
    // Only a directory this function could have written is replaced.
    const entries = [];
    for await (const e of Deno.readDir(dir)) entries.push(e.name);
    if (entries.length > 0) {
      throw new Error(
        `Cannot build the tiny model in "${dir}": the directory exists but is not a complete model ` +
          `(has ${entries.slice(0, 4).join(", ")}${
            entries.length > 4 ? ", …" : ""
          }): remove it or pick another`,
      );
    }
  }
  const gpu = opts.gpu ?? await getGpu();
  const tok = `${dir.replace(/\/+$/, "")}.tokenizer-${randomSuffix()}`;
  const model = randomModel(gpu, tinyPresetConfig(), { seed: opts.seed ?? 0, std: opts.std ?? 0.02 });
  try {
    await writeTinyTokenizer(tok);
    await saveModel(model, dir, { tokenizerDir: tok });
  } finally {
    releaseModel(model);
    await removeIfExists(tok);
  }
  return { dir, created: true };
}
