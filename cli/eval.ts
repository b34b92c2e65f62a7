/**
 * `eval`: greedy and sampled accuracy (pass@1, pass@k, maj@k) of any policy checkpoint on the built-in test split
 * or a GSM8K test set, with the chat template, one JSONL record per problem (core/rl/eval.ts).
 *
 * @module
 */
import {
  type ArithmeticProblem,
  generateProblems,
  type MathExample,
  toMathExample,
} from "../core/data/arithmetic.ts";
import { loadGsm8k } from "../core/data/gsm8k.ts";
import { getGpu } from "../core/gpu/device.ts";
import { loadModel, releaseModel } from "../core/model/model.ts";
import { analyseErrors } from "../core/rl/error_analysis.ts";
import { evaluatePolicy } from "../core/rl/eval.ts";
import { SFT_POLICY_DIR } from "../core/rl/setup.ts";
import { textTable } from "../core/rl/plot.ts";
import { loadTokenizer } from "../core/tokenizer/tokenizer.ts";
import { isModelDir } from "../core/train/tiny.ts";
import { splitPath, writeFileAtomic } from "../core/util/atomic.ts";
import { type Command, parseFlags, UsageError } from "./command.ts";

/** The PPO run's final policy, the default model of `eval` when it exists (else the SFT policy). */
export const PPO_POLICY_DIR = "runs/ppo-tiny/final/policy";

const FLAGS: [string, string, string | null][] = [
  ["model", "policy directory or hub id", `${PPO_POLICY_DIR} if present, else ${SFT_POLICY_DIR}`],
  [
    "data",
    '"builtin" (the arithmetic test split) or a GSM8K source (JSONL/Parquet file, directory, hub id)',
    "builtin",
  ],
  ["problems", "problems evaluated (the first N; 0 = all of a GSM8K source)", "200"],
  ["samples", "sampled solutions n per problem for pass@1 / pass@k / maj@k (0: greedy only)", "0"],
  ["k", "k of pass@k (≤ samples)", "samples"],
  ["temperature", "sampling temperature", "1"],
  ["top-p", "nucleus mass", "1"],
  ["max-new-tokens", "longest response", "200"],
  ["batch-size", "sequences decoded together", "64"],
  ["seed", "seed of the samples", "0"],
  ["out", "per-problem JSONL file", "runs/eval/eval.jsonl"],
  ["calculator", "decode with the GSM8K calculator (exact values inside <<expr=…>> annotations)", null],
  ["no-greedy", "skip the greedy decode", null],
  ["quiet", "print only the summary table", null],
];

function help(): string {
  const w = Math.max(...FLAGS.map(([f]) => f.length)) + 2;
  return `Usage: deno run -A cli/main.ts eval [options]

Held-out accuracy of a policy with the chat template: greedy accuracy, and with --samples n: sampled pass@1,
unbiased pass@k and maj@k (majority vote of the final answers), plus steps per solution and the repeated-step
rate. On the built-in task it also reports greedy accuracy per problem template and, for every wrong greedy
solution, the kind of its first incorrect step from the exact step labels (ungrounded = a miscopied or invented
number, off_path = correct arithmetic on the wrong quantities, arithmetic, unknown_number, premature_answer,
wrong_answer, no_answer). Writes one JSON record per problem (responses, answers, correctness, first error) to
--out.

Options:
${FLAGS.map(([f, t, d]) => `  ${`--${f}`.padEnd(w)}  ${t}${d ? ` (default ${d})` : ""}`).join("\n")}
  -h, --help`;
}

function num(flags: Record<string, unknown>, name: string, fallback: number): number {
  const v = flags[name];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (typeof v !== "string" || v.trim() === "" || !Number.isFinite(n)) {
    throw new UsageError(`eval: --${name} must be a number, got "${v}"`);
  }
  return n;
}

/** The `eval` command. */
export const evalCommand: Command = {
  name: "eval",
  summary: "Evaluate a policy checkpoint (greedy, pass@1, pass@k, maj@k)",
  get help() {
    return help();
  },
  async run(args) {
    const f = parseFlags(
      "eval",
      args,
      Object.fromEntries(FLAGS.map(([n, , d]) => [n, { type: d === null ? "boolean" : "string" }])),
    );
    if (f.help) return console.log(this.help), 0;
    const samples = num(f, "samples", 0), k = num(f, "k", samples), problemsN = num(f, "problems", 200);
    for (const [name, v, min] of [["samples", samples, 0], ["problems", problemsN, 0]] as const) {
      if (!Number.isSafeInteger(v) || v < min) {
        throw new UsageError(`eval: --${name} must be an integer ≥ ${min}, got "${v}"`);
      }
    }
    if (samples > 0 && !(Number.isSafeInteger(k) && k >= 1 && k <= samples)) {
      throw new UsageError(`eval: --k must be an integer in [1, ${samples}] (--samples), got "${k}"`);
    }
    const model = (f.model as string | undefined) ??
      ((await isModelDir(PPO_POLICY_DIR)) ? PPO_POLICY_DIR : SFT_POLICY_DIR);
    const data = (f.data as string | undefined) ?? "builtin";
    const out = (f.out as string | undefined) ?? "runs/eval/eval.jsonl";
    const quiet = f.quiet === true;
    try {
      // The built-in test split is generated here (not through builtinProblems) to keep each problem's structured
      // reference for the error analysis; toMathExample is the same mapping.
      const arith: ArithmeticProblem[] | null = data === "builtin"
        ? generateProblems(problemsN || 200, { seed: 0, split: "test" })
        : null;
      const problems: MathExample[] = arith
        ? arith.map(toMathExample)
        : await loadGsm8k(data, { split: "test", limit: problemsN || undefined });
      const gpu = await getGpu();
      const policy = await loadModel(model, { gpu });
      try {
        if (policy.config.architecture !== "Qwen2ForCausalLM") {
          throw new Error(
            `Cannot evaluate "${model}": it is a ${policy.config.architecture}, not a causal LM`,
          );
        }
        const tokenizer = await loadTokenizer(policy.dir!);
        if (!quiet) console.error(`eval: ${problems.length} problems of ${data} with "${model}"`);
        const r = await evaluatePolicy(policy, tokenizer, problems, {
          samples,
          k: samples > 0 ? k : undefined,
          temperature: num(f, "temperature", 1),
          topP: num(f, "top-p", 1),
          maxNewTokens: num(f, "max-new-tokens", 200),
          batchSize: num(f, "batch-size", 64),
          seed: num(f, "seed", 0),
          noGreedy: f["no-greedy"] === true,
          calculator: f.calculator === true,
        });
        const errors = arith && r.greedyAccuracy !== null
          ? analyseErrors(arith, r.records.map((x) => x.greedy!))
          : null;
        const lines = r.records.map((x, i) =>
          JSON.stringify(errors ? { ...x, greedy: { ...x.greedy, firstError: errors.perSolution[i] } } : x)
        );
        await Deno.mkdir(splitPath(out).dir, { recursive: true });
        await writeFileAtomic(out, lines.join("\n") + "\n");
        const pct = (x: number | null) => (x === null ? "—" : `${(100 * x).toFixed(1)}%`);
        const calc = f.calculator === true ? ", calculator" : "";
        console.log(
          textTable(`eval — ${model} on ${data} (${r.total} problems${calc}, ${r.seconds.toFixed(1)} s)`, [
            "metric",
            "value",
          ], [
            ["greedy accuracy", pct(r.greedyAccuracy)],
            ["pass@1 (sampled)", pct(r.pass1)],
            [`pass@${r.k || "k"}`, pct(r.passK)],
            [`maj@${r.samples || "k"}`, pct(r.majK)],
            ["steps / solution", r.stepsPerSolution],
            ["repeated-step rate", r.repeatedStepRate],
            ["response tokens", r.meanResponseTokens],
            ["stopped fraction", r.stoppedFraction],
          ]),
        );
        if (errors) {
          const frac = (c: number, t: number) => `${c}/${t} (${(100 * c / (t || 1)).toFixed(1)}%)`;
          console.log(
            "\n" + textTable("greedy accuracy by template", ["template", "correct"], [
              ...errors.byTemplate.map((t) => [t.template, frac(t.correct, t.total)]),
            ]),
          );
          console.log(
            "\n" +
              textTable(`first error of the ${errors.wrong} wrong greedy solutions`, ["kind", "solutions"], [
                ...errors.firstErrors.map((e) => [e.kind, frac(e.count, errors.wrong)]),
              ]),
          );
        }
        if (!quiet) console.error(`eval: per-problem records in "${out}"`);
      } finally {
        releaseModel(policy);
      }
      return 0;
    } catch (e) {
      const msg = (e as Error).message;
      if (/^(Cannot |Invalid )/.test(msg)) return console.error(`eval: ${msg}`), 1;
      throw e;
    }
  },
};
