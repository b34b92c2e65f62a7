/**
 * `train-prm`: train a process reward model. With no options: the built-in arithmetic task, the trunk initialised
 * from the SFT policy in `runs/sft-tiny/final` when it exists (else the tiny preset at random), exact step labels
 * on reference + corrupted solutions and on policy samples, written to `runs/prm-tiny/final` (HF layout,
 * Qwen2ForTokenClassification) with `metrics.jsonl`, then evaluated on held-out problems.
 *
 * Also the helpers shared by `train-orm`, `score` and `eval-rm`.
 *
 * @module
 */
import { generateProblems } from "../core/data/arithmetic.ts";
import { loadGsm8k } from "../core/data/gsm8k.ts";
import { tinyPresetConfig, writeTinyTokenizer } from "../core/data/tiny_tokenizer.ts";
import { getGpu, type Gpu } from "../core/gpu/device.ts";
import { appendLayers } from "../core/model/grow.ts";
import { loadModel, type Qwen2Model, randomModel, releaseModel, saveModel } from "../core/model/model.ts";
import { LABEL_MODES, type LabelMode } from "../core/data/step_labels.ts";
import { isCorrect } from "../core/rewards/answer.ts";
import { evaluateRewardModels, formatRmReport } from "../core/rm/eval_rm.ts";
import {
  builtinStepExamples,
  labelPolicySamples,
  monteCarloStepLabels,
  samplePolicy,
  type StepExample,
} from "../core/rm/labels.ts";
import { createOrm } from "../core/rm/orm.ts";
import { createPrm, itemSteps } from "../core/rm/prm.ts";
import { rewardModel } from "../core/rm/scorer.ts";
import {
  prmTrainExamples,
  type RmStepLog,
  type RmTrainExample,
  trainRewardModel,
} from "../core/rm/train_rm.ts";
import { loadTokenizer, type Tokenizer } from "../core/tokenizer/tokenizer.ts";
import { exists, joinPath } from "../core/util/atomic.ts";
import { type Command, type FlagSpec, parseFlags, UsageError } from "./command.ts";

/** The SFT command's default output: the policy every reward-model command uses by default when present. */
export const DEFAULT_POLICY = "runs/sft-tiny/final";

/**
 * Runs a command body, turning the toolkit's own errors (missing files, bad checkpoints, divergence) into one
 * line on stderr and exit code 1; anything else propagates with its stack.
 */
export async function reportErrors(cmd: string, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (e) {
    if (e instanceof UsageError) throw e;
    const msg = (e as Error).message ?? String(e);
    if (/^(Cannot |Unsupported |Invalid |Training diverged|PRM |ORM |Scorer|Sequence )/.test(msg)) {
      console.error(`${cmd}: ${msg}`);
      return 1;
    }
    throw e;
  }
}

/** A numeric flag, or `fallback` when absent; a non-number is a usage error naming the flag. */
export function numFlag(cmd: string, flags: Record<string, unknown>, name: string, fallback: number): number {
  const v = flags[name];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (typeof v !== "string" || v.trim() === "" || !Number.isFinite(n)) {
    throw new UsageError(`${cmd}: --${name} must be a number, got "${v}"`);
  }
  return n;
}

/** A string flag restricted to `choices`. */
export function choiceFlag<T extends string>(
  cmd: string,
  flags: Record<string, unknown>,
  name: string,
  choices: readonly T[],
  fallback: T,
): T {
  const v = (flags[name] as string | undefined) ?? fallback;
  if (!choices.includes(v as T)) {
    throw new UsageError(`${cmd}: --${name} must be one of ${choices.join(", ")}, got "${v}"`);
  }
  return v as T;
}

/** `--policy`: a directory, "none", or (absent) `runs/sft-tiny/final` when that is a model directory. */
export async function resolvePolicy(flag: unknown): Promise<string | null> {
  if (flag === "none") return null;
  if (typeof flag === "string") return flag;
  return (await exists(joinPath(DEFAULT_POLICY, "config.json"))) ? DEFAULT_POLICY : null;
}

/** A loaded policy and its tokenizer. */
export interface Policy {
  model: Qwen2Model;
  tokenizer: Tokenizer;
}

/** Loads a policy checkpoint with its tokenizer. */
export async function loadPolicy(dir: string, gpu: Gpu): Promise<Policy> {
  const model = await loadModel(dir, { gpu });
  if (model.config.architecture !== "Qwen2ForCausalLM") {
    releaseModel(model);
    throw new Error(
      `Cannot use "${dir}" as the policy: it is a ${model.config.architecture}, not a causal LM`,
    );
  }
  return { model, tokenizer: await loadTokenizer(model.dir!) };
}

/** A reward model to train, its tokenizer and the directory its tokenizer files come from. */
export interface RmInit {
  model: Qwen2Model;
  tokenizer: Tokenizer;
  tokenizerDir: string;
  /** What the trunk was initialised from. */
  from: string;
}

/**
 * The reward model to train: `init` "random" = the tiny preset at random (tiny tokenizer); "policy" = the
 * policy's trunk with a fresh head; a directory = that model (kept as is when it already has the right head,
 * else its trunk with a fresh head).
 */
export async function initRewardModel(
  role: "prm" | "orm",
  init: string,
  opts: { policyDir: string | null; seed: number; gpu: Gpu; scratch: string; addLayers?: number },
): Promise<RmInit> {
  const arch = role === "prm" ? "Qwen2ForTokenClassification" : "Qwen2ForSequenceClassification";
  const grow = (m: Qwen2Model) => appendLayers(m, opts.addLayers ?? 0, { seed: opts.seed });
  const more = opts.addLayers ? ` + ${opts.addLayers} new layers` : "";
  const attach = (m: Qwen2Model) =>
    grow(role === "prm" ? createPrm(m, { seed: opts.seed }) : createOrm(m, { seed: opts.seed }));
  if (init === "random") {
    const tokenizerDir = joinPath(opts.scratch, "tiny-tokenizer");
    await writeTinyTokenizer(tokenizerDir);
    const model = attach(randomModel(opts.gpu, tinyPresetConfig(), { seed: opts.seed }));
    return {
      model,
      tokenizer: await loadTokenizer(tokenizerDir),
      tokenizerDir,
      from: `random tiny preset${more}`,
    };
  }
  const dir = init === "policy" ? opts.policyDir : init;
  if (!dir) throw new UsageError(`train-${role}: --init policy needs a policy (--policy DIR)`);
  const loaded = await loadModel(dir, { gpu: opts.gpu });
  const model = loaded.config.architecture === arch && loaded.config.numLabels === 1
    ? grow(loaded)
    : attach(loaded);
  return {
    model,
    tokenizer: await loadTokenizer(loaded.dir!),
    tokenizerDir: loaded.dir!,
    from: `${dir}${more}`,
  };
}

/** The policy, its sampling settings and the reward model to train, shared by `train-prm` and `train-orm`. */
export interface RmRun {
  /** The policy's directory (null: no policy). */
  policyDir: string | null;
  policy: Policy | null;
  /** Policy samples per training question (`--samples-per-question`; 0 without a policy by default). */
  perQuestion: number;
  /** How the policy samples (`--temperature`, `--max-new-tokens`, `--calculator`, the run's seed). */
  sampling: { temperature: number; maxNewTokens: number; seed: number; calculator: boolean };
  init: RmInit;
  /** `perQuestion` policy samples for each question (empty lists when `perQuestion` is 0). */
  sample(questions: string[]): Promise<string[][]>;
  /** Releases both models and removes the run's scratch directory. */
  close(): Promise<void>;
}

/**
 * Opens a reward-model training run from its flags: resolves the policy, reads the sampling flags, throws the
 * usage error `needsPolicy` gives when the run needs a policy it lacks, then loads the policy and the initial
 * reward model (`--init`, `--add-layers`) and logs where the trunk comes from.
 */
export async function openRmRun(
  cmd: string,
  role: "prm" | "orm",
  f: Record<string, unknown>,
  opts: {
    seed: number;
    samplesPerQuestion: number;
    needsPolicy: (perQuestion: number) => string | null;
    log: (s: string) => void;
  },
): Promise<RmRun> {
  const policyDir = await resolvePolicy(f.policy);
  const perQuestion = numFlag(cmd, f, "samples-per-question", policyDir ? opts.samplesPerQuestion : 0);
  const sampling = {
    temperature: numFlag(cmd, f, "temperature", 1),
    maxNewTokens: numFlag(cmd, f, "max-new-tokens", 200),
    seed: opts.seed,
    calculator: f.calculator === true,
  };
  const missing = policyDir ? null : opts.needsPolicy(perQuestion);
  if (missing) throw new UsageError(`${cmd}: ${missing}`);
  const gpu = await getGpu();
  const scratch = await Deno.makeTempDir({ prefix: `train_${role}_` });
  let policy: Policy | null = null;
  try {
    policy = policyDir ? await loadPolicy(policyDir, gpu) : null;
    const init = await initRewardModel(
      role,
      (f.init as string | undefined) ?? (policyDir ? "policy" : "random"),
      { policyDir, seed: opts.seed, gpu, scratch, addLayers: numFlag(cmd, f, "add-layers", 0) },
    );
    opts.log(`${cmd}: trunk from ${init.from}${policy ? `, policy ${policyDir}` : ""}`);
    const loaded = policy;
    return {
      policyDir,
      policy,
      perQuestion,
      sampling,
      init,
      sample: (questions) =>
        perQuestion > 0 && loaded
          ? samplePolicy(loaded.model, loaded.tokenizer, questions, { ...sampling, n: perQuestion })
          : Promise.resolve(questions.map(() => [])),
      close: async () => {
        releaseModel(init.model);
        if (loaded) releaseModel(loaded.model);
        await Deno.remove(scratch, { recursive: true });
      },
    };
  } catch (e) {
    if (policy) releaseModel(policy.model);
    await Deno.remove(scratch, { recursive: true });
    throw e;
  }
}

/** Appends JSON lines to `<out>/metrics.jsonl` (created fresh). */
export async function metricsLog(out: string): Promise<(record: Record<string, unknown>) => Promise<void>> {
  await Deno.mkdir(out, { recursive: true });
  const file = joinPath(out, "metrics.jsonl");
  await Deno.writeTextFile(file, "");
  return (r) => Deno.writeTextFile(file, JSON.stringify(r) + "\n", { append: true });
}

/** One progress line every `every` steps (and the last). */
export function stepPrinter(role: string, total: number, quiet: boolean, every = 10) {
  return (l: RmStepLog) => {
    if (quiet || (l.step % every !== 0 && l.step !== total)) return;
    console.error(
      `${role} step ${l.step}/${total}  loss ${l.loss.toFixed(4)}  acc ${(100 * l.accuracy).toFixed(1)}%  ` +
        `lr ${l.lr.toExponential(2)}  |g| ${l.gradNorm.toFixed(3)}  ${l.seconds.toFixed(2)} s`,
    );
  };
}

/**
 * The shared end of `train-prm` and `train-orm`: trains `init.model` on `data` with progress lines and
 * `<out>/metrics.jsonl`, saves `<out>/final` (HF layout), then, with `evalProblems` > 0, evaluates it on that
 * many held-out built-in problems (recorded in the metrics and printed).
 */
export async function trainSaveEvaluate(
  cmd: string,
  role: "prm" | "orm",
  init: RmInit,
  data: RmTrainExample[],
  opts: {
    out: string;
    train: ReturnType<typeof trainFlags>;
    evalProblems: number;
    quiet: boolean;
    log: (line: string) => void;
    /** Step labels of the held-out evaluation (PRM; default first_error). */
    labelMode?: LabelMode;
  },
): Promise<void> {
  const { out, train } = opts;
  const write = await metricsLog(out);
  const print = stepPrinter(role, train.steps, opts.quiet);
  const res = await trainRewardModel(init.model, data, {
    ...train,
    onStep: async (l) => (print(l), await write({ kind: "train", ...l })),
  });
  await saveModel(init.model, joinPath(out, "final"), { tokenizerDir: init.tokenizerDir });
  opts.log(`${cmd}: ${res.steps} steps in ${res.seconds.toFixed(1)} s, saved ${joinPath(out, "final")}`);
  if (opts.evalProblems > 0) {
    const held = generateProblems(opts.evalProblems, { seed: train.seed, split: "test" });
    const report = await evaluateRewardModels(held, {
      [role]: rewardModel(init.model, init.tokenizer, out),
      labelMode: opts.labelMode,
    });
    await write({ kind: "eval", ...report });
    console.log(formatRmReport(report));
  }
}

/**
 * Labelled JSONL rows `{question, steps | solution, labels, gold?}` as step examples; null when `path` is not a
 * JSONL file whose first row has "labels" (e.g. GSM8K data).
 */
async function readStepJsonl(path: string): Promise<StepExample[] | null> {
  if (!path.endsWith(".jsonl") || !(await exists(path))) return null;
  const rows = (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim() !== "");
  const parse = (line: string, i: number) => {
    try {
      return JSON.parse(line);
    } catch (e) {
      throw new Error(`Cannot load "${path}": line ${i + 1} is not JSON (${(e as Error).message})`);
    }
  };
  if (rows.length === 0 || !("labels" in parse(rows[0], 0))) return null;
  return rows.map((line, i) => {
    const r = parse(line, i);
    const steps = itemSteps(r);
    if (
      !Array.isArray(r.labels) || r.labels.length !== steps.length ||
      r.labels.some((y: unknown) => !(Number(y) >= 0 && Number(y) <= 1))
    ) {
      throw new Error(
        `Cannot load "${path}": line ${
          i + 1
        }: "labels" must hold one number in [0, 1] per step (${steps.length})`,
      );
    }
    return {
      question: r.question,
      steps,
      labels: r.labels.map(Number),
      gold: String(r.gold ?? ""),
      source: "file",
    };
  });
}

/** Flags of `train-prm` with their help text and defaults. */
/** Flags shared by `train-prm` and `train-orm` (`kind` names the output directory's default). */
export function rmTrainFlags(kind: "prm" | "orm") {
  type Row = [string, string, string | null];
  const row = (r: Row) => r;
  return {
    init: row([
      "init",
      'trunk initialisation: "policy", "random" (tiny preset) or a model directory',
      "policy if any, else random",
    ]),
    addLayers: row([
      "add-layers",
      "decoder layers appended on top of the initial trunk (zero output projections, so training starts from " +
      "its features: depth beyond the policy's lets the reward model compare each token with the policy's " +
      "prediction of it)",
      "0",
    ]),
    /** Output and optimisation: out, steps, lr, warmup-steps, batch-size, weight-decay, max-grad-norm. */
    training: [
      ["out", "output directory: final/ (HF layout) and metrics.jsonl", `runs/${kind}-tiny`],
      ["steps", "optimiser steps", "300"],
      ["lr", "peak learning rate (cosine to 0.1·lr after warmup)", "5e-4"],
      ["warmup-steps", "linear warmup steps", "20"],
      ["batch-size", "solutions per step", "16"],
      ["weight-decay", "AdamW weight decay", "0.01"],
      ["max-grad-norm", "global gradient-norm clip (0: off)", "1"],
    ] as Row[],
    problems: row(["train-problems", "built-in task: train problems", "1000"]),
    temperature: row(["temperature", "policy sampling temperature", "1"]),
    calculator: row([
      "calculator",
      "sample the policy with the GSM8K calculator (exact <<expr=…>> values)",
      null,
    ]),
    eval: row(["eval-problems", "held-out built-in problems evaluated at the end (0: none)", "200"]),
    quiet: row(["quiet", "no progress lines", null]),
  };
}

const RM = rmTrainFlags("prm");
const PRM_FLAGS: [string, string, string | null][] = [
  [
    "policy",
    `policy checkpoint for samples and MC rollouts; "none" for none`,
    `${DEFAULT_POLICY} if present`,
  ],
  RM.init,
  RM.addLayers,
  [
    "data",
    '"builtin" (arithmetic train split), labelled JSONL {question, steps|solution, labels} or GSM8K',
    "builtin",
  ],
  ["labels", "exact (built-in task: labelSteps) | mc (Math-Shepherd rollouts with the policy)", "exact"],
  [
    "label-mode",
    "exact labels: first_error (1 up to the first wrong step, 0 from it on) | independent (each step's own verdict)",
    "first_error",
  ],
  [
    "number-labels",
    "exact first_error labels: also train the last token of each number up to the first wrong step (1 while the " +
    "step's numbers are the problem's quantities or true intermediate values, 0 from the first that is not)",
    null,
  ],
  ...RM.training,
  ["seed", "seed of problems, corruptions, samples and data order", "0"],
  RM.problems,
  ["corruptions", "built-in task: corrupted solutions per problem (kinds in turn)", "4"],
  [
    "samples-per-question",
    "policy samples per question, labelled exactly (builtin) or by MC",
    "2 with a policy, else 0",
  ],
  ["mc-rollouts", "MC: completions per step prefix", "8"],
  ["mc-mode", "MC: soft (fraction) | hard (any success)", "soft"],
  RM.temperature,
  RM.calculator,
  ["max-new-tokens", "longest policy sample / rollout", "200"],
  RM.eval,
  RM.quiet,
];

/** Usage text of a flag table, wrapped to 110 columns. */
export function flagHelp(flags: [string, string, string | null][]): string {
  const width = Math.max(...flags.map(([f]) => f.length)) + 2, indent = width + 4;
  return flags.map(([f, text, def]) => {
    const words = `${text}${def ? ` (default ${def})` : ""}`.split(" ");
    const lines = [`  ${`--${f}`.padEnd(width)}  `];
    for (const w of words) {
      const cur = lines[lines.length - 1];
      if (cur.length + w.length > 110 && cur.trim().length > 0 && cur.length > indent) {
        lines.push(" ".repeat(indent) + w);
      } else lines[lines.length - 1] = cur + (cur.length > indent ? " " : "") + w;
    }
    return lines.join("\n");
  }).join("\n");
}

/** Parse spec of a flag table (booleans: those without a default). */
export function flagSpec(flags: [string, string, string | null][]): FlagSpec {
  return Object.fromEntries(flags.map(([f, , def]) => [f, { type: def === null ? "boolean" : "string" }]));
}

/** Common training flags. */
export function trainFlags(cmd: string, f: Record<string, unknown>, defaults: { steps: number; lr: number }) {
  const opts = {
    steps: numFlag(cmd, f, "steps", defaults.steps),
    lr: numFlag(cmd, f, "lr", defaults.lr),
    warmupSteps: numFlag(cmd, f, "warmup-steps", 20),
    batchSize: numFlag(cmd, f, "batch-size", 16),
    weightDecay: numFlag(cmd, f, "weight-decay", 0.01),
    maxGradNorm: numFlag(cmd, f, "max-grad-norm", 1),
    seed: numFlag(cmd, f, "seed", 0),
  };
  opts.warmupSteps = Math.min(opts.warmupSteps, opts.steps);
  return opts;
}

/** The `train-prm` command. */
export const trainPrmCommand: Command = {
  name: "train-prm",
  summary: "Train a process reward model (built-in task, SFT policy trunk by default)",
  help: `Usage: deno run -A cli/main.ts train-prm [options]

Trains a PRM: the Qwen2 trunk with a one-logit token-classification head read at every step's end token
(input: chat-templated question + steps joined by "\\n"), binary cross-entropy on step labels, AdamW.
Labels: exact (built-in task: reference and corrupted solutions, policy samples) or Math-Shepherd Monte Carlo
(--labels mc: N rollouts per step prefix with the policy; soft = fraction reaching the gold answer, hard = any).
Saves <out>/final (Qwen2ForTokenClassification, HF layout) and <out>/metrics.jsonl, then reports held-out
step-level accuracy and ROC-AUC.

Options:
${flagHelp(PRM_FLAGS)}
  -h, --help`,
  run(args) {
    const cmd = "train-prm";
    const f = parseFlags(cmd, args, flagSpec(PRM_FLAGS));
    if (f.help) return console.log(this.help), Promise.resolve(0);
    return reportErrors(cmd, async () => {
      const train = trainFlags(cmd, f, { steps: 300, lr: 5e-4 });
      const labels = choiceFlag(cmd, f, "labels", ["exact", "mc"] as const, "exact");
      const mcMode = choiceFlag(cmd, f, "mc-mode", ["soft", "hard"] as const, "soft");
      const mcRollouts = numFlag(cmd, f, "mc-rollouts", 8);
      const mode = choiceFlag(cmd, f, "label-mode", LABEL_MODES, "first_error");
      const numberLabels = f["number-labels"] === true;
      if (numberLabels && (labels !== "exact" || mode !== "first_error")) {
        throw new UsageError(`${cmd}: --number-labels needs --labels exact and --label-mode first_error`);
      }
      const data = (f.data as string | undefined) ?? "builtin";
      const out = (f.out as string | undefined) ?? "runs/prm-tiny";
      const quiet = f.quiet === true;
      const log = (s: string) => quiet || console.error(s);
      const run = await openRmRun(cmd, "prm", f, {
        seed: train.seed,
        samplesPerQuestion: 2,
        needsPolicy: (perQuestion) =>
          labels === "mc" || perQuestion > 0
            ? "--labels mc and --samples-per-question need a policy (--policy DIR)"
            : null,
        log,
      });
      const { policy, perQuestion, sampling, init } = run;
      try {
        // Training solutions and their step labels.
        let examples: StepExample[];
        const labelled = data !== "builtin" ? await readStepJsonl(data) : null;
        if (labelled) examples = labelled;
        else if (data === "builtin") {
          const problems = generateProblems(numFlag(cmd, f, "train-problems", 1000), {
            seed: train.seed,
            split: "train",
          });
          examples = builtinStepExamples(problems, {
            corruptions: numFlag(cmd, f, "corruptions", 4),
            seed: train.seed,
            mode,
          });
          if (policy && perQuestion > 0) {
            log(`${cmd}: sampling ${perQuestion} solutions for each of ${problems.length} problems`);
            const samples = await run.sample(problems.map((p) => p.question));
            const correct = problems.filter((p, i) =>
              isCorrect(samples[i][0] ?? "", String(p.finalAnswer))
            ).length;
            log(
              `${cmd}: first policy sample correct on ${
                (100 * correct / problems.length).toFixed(1)
              }% of problems`,
            );
            examples.push(...labelPolicySamples(problems, samples, mode));
          }
        } else {
          // GSM8K-form questions with reference answers: the references and policy samples, labelled by MC.
          if (labels !== "mc") {
            throw new UsageError(`${cmd}: --data "${data}" has no step labels: use --labels mc`);
          }
          const rows = await loadGsm8k(data);
          const samples = await run.sample(rows.map((r) => r.question));
          examples = rows.flatMap((r, i) =>
            [r.answer, ...samples[i]].map((s) => ({
              question: r.question,
              steps: itemSteps({ solution: s }),
              labels: [],
              gold: r.finalAnswer,
              source: "gsm8k",
            })).filter((e) => e.steps.length > 0)
          );
        }
        if (labels === "mc") {
          log(`${cmd}: Monte Carlo labels, ${mcRollouts} rollouts per step of ${examples.length} solutions`);
          const mc = await monteCarloStepLabels(policy!.model, policy!.tokenizer, examples, {
            ...sampling,
            rollouts: mcRollouts,
            mode: mcMode,
          });
          examples = examples.map((e, i) => ({ ...e, labels: mc.labels[i] }));
        }
        const steps = examples.reduce((a, e) => a + e.labels.length, 0);
        const pos = examples.reduce((a, e) => a + e.labels.reduce((x, y) => x + y, 0), 0);
        log(
          `${cmd}: ${examples.length} solutions, ${steps} labelled steps (mean label ${
            (pos / steps).toFixed(3)
          })`,
        );
        // what the PRM's probabilities mean follows from its labels: recorded next to the step convention
        init.model.config.raw.prm_training_labels = labelled
          ? `labels of ${data}`
          : labels === "mc"
          ? `Monte Carlo (${mcMode}, ${mcRollouts} rollouts per step prefix)`
          : mode === "first_error"
          ? "exact, first_error: P(every step up to this one is correct)"
          : "exact, independent: P(this step is correct on its own)";
        if (numberLabels) init.model.config.raw.prm_training_labels += "; also at number tokens (exact)";
        const trainExamples = prmTrainExamples(init.tokenizer, examples, { numberLabels });
        await trainSaveEvaluate(cmd, "prm", init, trainExamples, {
          out,
          train,
          labelMode: labels === "exact" && !labelled ? mode : undefined,
          evalProblems: numFlag(cmd, f, "eval-problems", 200),
          quiet,
          log,
        });
      } finally {
        await run.close();
      }
      return 0;
    });
  },
};
