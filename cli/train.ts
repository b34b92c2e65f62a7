/**
 * `train`: PPO with process rewards (core/rl/trainer.ts). With no arguments it runs the built-in default: the tiny
 * preset's SFT policy (runs/sft-tiny/final, built first when absent), a PRM for it (runs/prm-tiny/final, trained
 * when absent), PPO with the success reward + Clip-Delta PRM reward, then a held-out evaluation and a summary.
 *
 * @module
 */
import {
  checkTrainConfig,
  parseTrainConfigJson,
  TRAIN_DEFAULTS,
  TRAIN_FLAG_DOCS,
  type TrainConfig,
  trainFlag,
} from "../core/rl/train_config.ts";
import { runPPO } from "../core/rl/trainer.ts";
import { applyFlags, type Command, type FlagSpec, parseFlags, UsageError, withInterrupt } from "./command.ts";

const BOOLEAN = new Set(
  (Object.keys(TRAIN_DEFAULTS) as (keyof TrainConfig)[]).filter((k) =>
    typeof TRAIN_DEFAULTS[k] === "boolean"
  ),
);
const STRING = new Set(
  (Object.keys(TRAIN_DEFAULTS) as (keyof TrainConfig)[]).filter((k) => typeof TRAIN_DEFAULTS[k] === "string"),
);
/** Boolean settings that default to true get a `--no-<flag>` form. */
const NEGATABLE = [...BOOLEAN].filter((k) => TRAIN_DEFAULTS[k] === true);

/** `flag  text` rows wrapped to 110 columns, continuation lines indented under the text. */
function wrapRows(rows: string[][]): string {
  const width = Math.max(...rows.map(([f]) => f.length)), indent = width + 4;
  return rows.map(([flag, text]) => {
    const lines = [`  ${flag.padEnd(width)}  `];
    for (const word of text.split(" ")) {
      const cur = lines[lines.length - 1];
      if (cur.length + word.length + 1 > 110 && cur.length > indent) lines.push(" ".repeat(indent) + word);
      else lines[lines.length - 1] = cur + (cur.length > indent ? " " : "") + word;
    }
    return lines.join("\n");
  }).join("\n");
}

function helpText(): string {
  const rows = TRAIN_FLAG_DOCS.map(([field, text]) => {
    const def = TRAIN_DEFAULTS[field];
    const shown = def === "" || def === false
      ? ""
      : def === true
      ? ` (default on; ${trainFlag(field).replace("--", "--no-")} turns it off)`
      : ` (default ${def})`;
    return [trainFlag(field), `${text}${shown}`];
  });
  rows.unshift([
    "--config",
    "JSON file of settings (keys: the flag names, camelCase or kebab-case); flags override it",
  ]);
  return `Usage: deno run -A cli/main.ts train [options]

PPO fine-tuning of a policy with process rewards on the GPU: K sampled solutions per question, training-mode
old log-probs, a frozen reference policy, a critic on its own trunk, PRM step scores shaped by Clip / Delta /
Clip-Delta (Gao et al. 2024) plus the success reward, KL penalty, GAE and whitening on the GPU, clipped policy
and value losses, AdamW (or SGD) with clipping. Writes metrics.jsonl (one record per iteration), metrics.svg,
eval.jsonl, atomic checkpoints (policy + critic in HF layout, optimiser states, RNG state, config) that
--resume continues exactly, and final/. Ctrl-C stops after the current iteration and saves a checkpoint.

With no options (\`deno task train\`): the tiny preset's SFT policy on the built-in arithmetic task (yours in
runs/sft-tiny/final, else the shipped one, else built with the SFT defaults), a PRM for it (runs/prm-tiny/final,
else the shipped one, else trained), success + Clip-Delta PRM reward, rollouts and evaluation with the GSM8K
calculator (the values of <<expr=…>> annotations are computed, not sampled; --no-calculator turns it off), then
held-out greedy accuracy before and after.

Options:
${wrapRows(rows)}
  -h, --help`;
}

/** Parses the `train` flags (and `--config`) into a config; flags override the file, the file the defaults. */
export async function parseTrainArgs(args: string[]): Promise<{ config: TrainConfig; help: boolean }> {
  const spec: FlagSpec = { config: { type: "string" } };
  for (const [field] of TRAIN_FLAG_DOCS) {
    spec[trainFlag(field).slice(2)] = { type: BOOLEAN.has(field) ? "boolean" : "string" };
  }
  for (const field of NEGATABLE) spec[`no-${trainFlag(field).slice(2)}`] = { type: "boolean" };
  const flags = parseFlags("train", args, spec);
  if (flags.help === true) return { config: { ...TRAIN_DEFAULTS }, help: true };
  const config: TrainConfig = { ...TRAIN_DEFAULTS };
  if (typeof flags.config === "string") {
    let text: string;
    try {
      text = await Deno.readTextFile(flags.config);
    } catch (e) {
      throw new UsageError(`train: cannot read --config "${flags.config}": ${(e as Error).message}`);
    }
    try {
      Object.assign(config, parseTrainConfigJson(text, flags.config));
    } catch (e) {
      throw new UsageError(`train: ${(e as Error).message}`);
    }
  }
  applyFlags("train", flags, TRAIN_FLAG_DOCS.map(([f]) => f), config, {
    flagOf: trainFlag,
    boolean: BOOLEAN,
    string: STRING,
  });
  const set = config as unknown as Record<string, unknown>;
  for (const field of NEGATABLE) if (flags[`no-${trainFlag(field).slice(2)}`] === true) set[field] = false;
  try {
    checkTrainConfig(config);
  } catch (e) {
    throw new UsageError(`train: ${(e as Error).message}`);
  }
  return { config, help: false };
}

/** The `train` command. */
export const trainCommand: Command = {
  name: "train",
  summary: "Run PPO with process rewards (built-in task by default)",
  get help() {
    return helpText();
  },
  async run(args) {
    const { config, help } = await parseTrainArgs(args);
    if (help) return console.log(this.help), 0;
    try {
      const r = await withInterrupt("iteration", (signal) => runPPO(config, { signal }));
      if (!config.quiet) console.log(r.summary);
      return r.interrupted ? 130 : 0;
    } catch (e) {
      const msg = (e as Error).message;
      if (/^(Cannot |Output directory |Training diverged|Invalid )/.test(msg)) {
        return console.error(`train: ${msg}`), 1;
      }
      throw e;
    }
  },
};
