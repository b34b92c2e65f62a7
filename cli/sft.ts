/**
 * `sft`: supervised fine-tuning (core/train/sft.ts). With no arguments it trains the tiny preset from random
 * initialisation on the built-in arithmetic task and reports its held-out greedy accuracy.
 *
 * @module
 */
import { flagName, runSft, SFT_DEFAULTS, type SftConfig } from "../core/train/sft.ts";
import { applyFlags, type Command, type FlagSpec, parseFlags, UsageError, withInterrupt } from "./command.ts";

/** Flag descriptions, in help order; every flag maps to the config field of the same (camel-cased) name. */
const FLAGS: [keyof SftConfig, string][] = [
  [
    "model",
    'model directory or hub id; "tiny" = the tiny preset from random init (built into runs/tiny-init)',
  ],
  [
    "data",
    '"builtin" (arithmetic train split), a JSONL file ({prompt, completion}, {question, answer} or ' +
    "{input_ids, completion_mask} rows), or a GSM8K Parquet file / directory / hub id",
  ],
  ["out", "output directory: checkpoint-<step>/, final/, metrics.jsonl"],
  ["steps", "optimiser steps (0: --epochs passes over the data)"],
  ["epochs", "passes over the data when --steps is 0"],
  ["lr", "peak learning rate"],
  ["lrSchedule", "constant | linear | cosine (after warmup)"],
  ["warmupSteps", "linear warmup steps"],
  ["minLrRatio", "final lr of linear/cosine as a fraction of --lr"],
  ["batchSize", "examples per micro-batch"],
  ["gradAccum", "micro-batches per optimiser step"],
  ["maxGradNorm", "clip the global gradient norm to this (0 disables)"],
  ["weightDecay", "AdamW decoupled weight decay (matrices and embeddings)"],
  ["optimizer", "adamw | sgd (sgd: w ← w − lr·g, no momentum, no weight decay)"],
  ["adamBeta1", "AdamW β1"],
  ["adamBeta2", "AdamW β2"],
  ["adamEps", "AdamW ε"],
  ["seed", "seed of the data order (and of the built-in train problems)"],
  ["trainProblems", "built-in task: train problems to generate (0: enough for --steps, at least 1000)"],
  ["maxLen", "truncate examples to this many tokens (0: no limit)"],
  ["lengthGroup", "batch examples of similar length: sort each run of N micro-batches by length (0: off)"],
  ["evalEvery", "evaluate every N steps (0: only at the end)"],
  ["evalProblems", "held-out problems per evaluation (0: none)"],
  [
    "evalData",
    'held-out set: "auto" (builtin test split for --data builtin), "none", "builtin" or a GSM8K source',
  ],
  ["evalBatchSize", "problems decoded together during evaluation"],
  ["evalMaxNewTokens", "longest evaluation response (tokens)"],
  ["evalCalculator", "also evaluate with the GSM8K calculator (exact values inside <<expr=…>>)"],
  ["maskCalculator", "the values the GSM8K calculator writes (inside <<expr=value>>) are not targets"],
  ["saveEvery", "checkpoint every N steps (0: only at the end)"],
  ["saveTotalLimit", "keep the newest N checkpoints (0: all)"],
  ["resume", "continue from the newest complete checkpoint in --out"],
  ["overwrite", "delete the checkpoints in --out and start over"],
  ["log", "metrics JSONL path (default <out>/metrics.jsonl)"],
  ["quiet", "no progress bar or log lines"],
];

const BOOLEAN = new Set<keyof SftConfig>([
  "evalCalculator",
  "maskCalculator",
  "resume",
  "overwrite",
  "quiet",
]);
const STRING = new Set<keyof SftConfig>([
  "model",
  "data",
  "out",
  "lrSchedule",
  "optimizer",
  "evalData",
  "log",
]);

function helpText(): string {
  const rows = FLAGS.map(([field, text]) => {
    const def = SFT_DEFAULTS[field];
    const shown = BOOLEAN.has(field) || def === "" ? "" : ` (default ${def})`;
    return [flagName(field), `${text}${shown}`];
  });
  const width = Math.max(...rows.map(([f]) => f.length));
  return `Usage: deno run -A cli/main.ts sft [options]

Supervised fine-tuning on the GPU: mean cross-entropy over the completion tokens, AdamW or SGD, gradient
accumulation, LR schedule with warmup, global-norm clipping, held-out greedy accuracy, JSONL metrics, and
checkpoints (HF layout + optimizer state + trainer state) that --resume continues exactly. Ctrl-C stops after
the current step and saves a checkpoint.

With no options: the tiny preset learns the built-in arithmetic task from random initialisation
(\`deno task sft\`).

Options:
${rows.map(([f, t]) => `  ${f.padEnd(width)}  ${t}`).join("\n")}
  -h, --help`;
}

/** Parses the `sft` flags into a config (unset flags: the defaults). */
export function parseSftArgs(args: string[]): { config: SftConfig; help: boolean } {
  const spec: FlagSpec = {};
  for (const [field] of FLAGS) {
    spec[flagName(field).slice(2)] = { type: BOOLEAN.has(field) ? "boolean" : "string" };
  }
  const flags = parseFlags("sft", args, spec);
  const config: SftConfig = { ...SFT_DEFAULTS };
  applyFlags("sft", flags, FLAGS.map(([f]) => f), config, {
    flagOf: flagName,
    boolean: BOOLEAN,
    string: STRING,
  });
  return { config, help: flags.help === true };
}

/** The `sft` command. */
export const sftCommand: Command = {
  name: "sft",
  summary: "Supervised fine-tuning (tiny preset on the built-in task by default)",
  get help() {
    return helpText();
  },
  async run(args) {
    const { config, help } = parseSftArgs(args);
    if (help) return console.log(this.help), 0;
    try {
      const r = await withInterrupt("step", (signal) => runSft(config, { signal }));
      if (!config.quiet && r.lastEval) {
        const e = r.lastEval;
        console.log(
          `held-out accuracy ${
            (100 * e.accuracy).toFixed(1)
          }% (${e.correct}/${e.total}) after ${r.step} steps, ` +
            `final loss ${r.lastLoss.toFixed(4)}, ${r.seconds.toFixed(1)} s`,
        );
      }
      return r.interrupted ? 130 : 0;
    } catch (e) {
      const msg = (e as Error).message;
      if (msg.startsWith("Invalid --")) throw new UsageError(`sft: ${msg}`);
      if (/^(Cannot |Output directory |Training diverged)/.test(msg)) return console.error(`sft: ${msg}`), 1;
      throw e;
    }
  },
};
