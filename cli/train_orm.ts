/**
 * `train-orm`: train an outcome reward model. With no options: the built-in arithmetic task, the trunk from the
 * SFT policy in `runs/sft-tiny/final` when it exists (else the tiny preset at random), policy samples labelled by
 * `isCorrect` against the gold answer plus reference/corrupted solutions, written to `runs/orm-tiny/final`
 * (Qwen2ForSequenceClassification, HF layout) with `metrics.jsonl`, then evaluated on held-out problems.
 *
 * @module
 */
import { generateProblems } from "../core/data/arithmetic.ts";
import { loadGsm8k } from "../core/data/gsm8k.ts";
import { isCorrect } from "../core/rewards/answer.ts";
import { builtinStepExamples, type OutcomeExample, outcomeExamples } from "../core/rm/labels.ts";
import { itemSteps } from "../core/rm/prm.ts";
import { ormTrainExamples } from "../core/rm/train_rm.ts";
import { exists } from "../core/util/atomic.ts";
import type { Command } from "./command.ts";
import { parseFlags, UsageError } from "./command.ts";
import {
  DEFAULT_POLICY,
  flagHelp,
  flagSpec,
  numFlag,
  openRmRun,
  reportErrors,
  rmTrainFlags,
  trainFlags,
  trainSaveEvaluate,
} from "./train_prm.ts";

const RM = rmTrainFlags("orm");
const ORM_FLAGS: [string, string, string | null][] = [
  ["policy", `policy checkpoint whose samples are labelled; "none" for none`, `${DEFAULT_POLICY} if present`],
  RM.init,
  RM.addLayers,
  ["data", '"builtin", labelled JSONL {question, steps|solution, label} or GSM8K-form questions', "builtin"],
  ...RM.training,
  ["seed", "seed of problems, samples and data order", "0"],
  RM.problems,
  ["samples-per-question", "policy samples per question, labelled isCorrect vs the gold answer", "4"],
  [
    "corruptions",
    "built-in task: corrupted (label 0) solutions per problem, besides the reference (label 1)",
    "1",
  ],
  RM.temperature,
  RM.calculator,
  ["max-new-tokens", "longest policy sample", "200"],
  RM.eval,
  RM.quiet,
];

/** Labelled JSONL rows `{question, steps | solution, label, gold?}`; null when the file is not such JSONL. */
async function readOutcomeJsonl(path: string): Promise<OutcomeExample[] | null> {
  if (!path.endsWith(".jsonl") || !(await exists(path))) return null;
  const rows = (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim() !== "");
  const parsed = rows.map((line, i) => {
    try {
      return JSON.parse(line);
    } catch (e) {
      throw new Error(`Cannot load "${path}": line ${i + 1} is not JSON (${(e as Error).message})`);
    }
  });
  if (parsed.length === 0 || !("label" in parsed[0])) return null;
  return parsed.map((r, i) => {
    const y = Number(r.label);
    if (y !== 0 && y !== 1) throw new Error(`Cannot load "${path}": line ${i + 1}: "label" must be 0 or 1`);
    return {
      question: r.question,
      steps: itemSteps(r),
      label: y,
      gold: String(r.gold ?? ""),
      source: "file",
    };
  });
}

/** The `train-orm` command. */
export const trainOrmCommand: Command = {
  name: "train-orm",
  summary: "Train an outcome reward model (policy samples labelled by the gold answer)",
  help: `Usage: deno run -A cli/main.ts train-orm [options]

Trains an ORM: the Qwen2 trunk with a one-logit sequence-classification head read at the last token (same input
layout as the PRM), binary cross-entropy on outcome labels: policy samples labelled isCorrect against the gold
answer, plus reference (1) and corrupted (0) solutions on the built-in task. Saves <out>/final
(Qwen2ForSequenceClassification, HF layout) and <out>/metrics.jsonl, then reports held-out accuracy and ROC-AUC.

Options:
${flagHelp(ORM_FLAGS)}
  -h, --help`,
  run(args) {
    const cmd = "train-orm";
    const f = parseFlags(cmd, args, flagSpec(ORM_FLAGS));
    if (f.help) return console.log(this.help), Promise.resolve(0);
    return reportErrors(cmd, async () => {
      const train = trainFlags(cmd, f, { steps: 300, lr: 5e-4 });
      const data = (f.data as string | undefined) ?? "builtin";
      const out = (f.out as string | undefined) ?? "runs/orm-tiny";
      const quiet = f.quiet === true;
      const log = (s: string) => quiet || console.error(s);
      const run = await openRmRun(cmd, "orm", f, {
        seed: train.seed,
        samplesPerQuestion: 4,
        needsPolicy: (perQuestion) => perQuestion > 0 ? "--samples-per-question needs a policy" : null,
        log,
      });
      const { perQuestion, init } = run;
      try {
        let examples = data !== "builtin" ? await readOutcomeJsonl(data) : null;
        if (!examples && data === "builtin") {
          const problems = generateProblems(numFlag(cmd, f, "train-problems", 1000), {
            seed: train.seed,
            split: "train",
          });
          const corruptions = numFlag(cmd, f, "corruptions", 1);
          examples = builtinStepExamples(problems, { corruptions, seed: train.seed }).map((e) => ({
            ...e,
            label: isCorrect(e.steps.join("\n"), e.gold) ? 1 : 0,
          }));
          if (perQuestion > 0) {
            log(`${cmd}: sampling ${perQuestion} solutions for each of ${problems.length} problems`);
          }
          const samples = await run.sample(problems.map((p) => p.question));
          examples.push(
            ...outcomeExamples(problems.map((p) => ({ ...p, gold: String(p.finalAnswer) })), samples),
          );
        } else if (!examples) {
          const rows = await loadGsm8k(data);
          if (perQuestion === 0) {
            throw new UsageError(`${cmd}: GSM8K data needs policy samples (--samples-per-question)`);
          }
          examples = outcomeExamples(
            rows.map((r) => ({ question: r.question, gold: r.finalAnswer })),
            await run.sample(rows.map((r) => r.question)),
          );
        }
        const pos = examples.filter((e) => e.label === 1).length;
        log(`${cmd}: ${examples.length} solutions, ${(100 * pos / examples.length).toFixed(1)}% correct`);
        await trainSaveEvaluate(cmd, "orm", init, ormTrainExamples(init.tokenizer, examples), {
          out,
          train,
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
