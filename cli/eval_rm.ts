/**
 * `eval-rm`: evaluate a PRM and/or an ORM on held-out problems — step-level accuracy and ROC-AUC on reference and
 * corrupted solutions and on policy samples, and best-of-N accuracy (PRM-min, PRM-product, PRM-last, ORM)
 * against majority vote, a random pick and pass@N.
 *
 * @module
 */
import { generateProblems } from "../core/data/arithmetic.ts";
import { LABEL_MODES } from "../core/data/step_labels.ts";
import { loadGsm8k } from "../core/data/gsm8k.ts";
import { getGpu } from "../core/gpu/device.ts";
import { releaseModel } from "../core/model/model.ts";
import { type EvalProblem, evaluateRewardModels, formatRmReport } from "../core/rm/eval_rm.ts";
import { loadRewardModel, type RewardModel } from "../core/rm/scorer.ts";
import { exists } from "../core/util/atomic.ts";
import { type Command, parseFlags, UsageError } from "./command.ts";
import { rmDir } from "./score.ts";
import {
  choiceFlag,
  DEFAULT_POLICY,
  flagHelp,
  flagSpec,
  loadPolicy,
  numFlag,
  type Policy,
  reportErrors,
  resolvePolicy,
} from "./train_prm.ts";

const FLAGS: [string, string, string | null][] = [
  ["prm", 'PRM directory, or "none"', "runs/prm-tiny/final if present"],
  ["orm", 'ORM directory, or "none"', "runs/orm-tiny/final if present"],
  [
    "policy",
    'policy sampled for best-of-N, or "none" (step-level metrics only)',
    `${DEFAULT_POLICY} if present`,
  ],
  [
    "data",
    '"builtin" (held-out test split of the arithmetic task) or a GSM8K source (no step labels)',
    "builtin",
  ],
  ["problems", "held-out problems", "200"],
  ["n", "samples per problem (best-of-N)", "16"],
  ["temperature", "sampling temperature", "1"],
  ["max-new-tokens", "longest sample", "200"],
  [
    "calculator",
    "sample with the GSM8K calculator (exact values inside <<expr=…>>); with --samples: they were drawn with it " +
    "(the policy-confidence baseline leaves the calculator's tokens out)",
    null,
  ],
  ["corruptions", "built-in task: corrupted solutions per problem for the step-level set", "4"],
  [
    "label-mode",
    "built-in task: step labels compared with the PRM: first_error (prefix labels) | independent (each step's own verdict)",
    "first_error",
  ],
  ["seed", "seed of the problems, corruptions, samples and the random pick", "0"],
  [
    "samples",
    "JSONL of policy samples {question, samples}: read when it exists (no policy needed; an explicit --policy " +
    "adds its confidence baseline), else written after sampling, so several reward models can be compared on " +
    "the same samples",
    "none",
  ],
  ["json", "print the report as one JSON object", null],
];

/** Policy samples saved by an earlier `eval-rm --samples`; their questions must be `problems`' in order. */
async function readSamples(path: string, problems: readonly EvalProblem[]): Promise<string[][]> {
  const rows = (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim() !== "").map((l) =>
    JSON.parse(l)
  );
  if (rows.length < problems.length) {
    throw new Error(`Cannot use samples "${path}": ${rows.length} rows for ${problems.length} problems`);
  }
  return problems.map((p, i) => {
    if (rows[i].question !== p.question || !Array.isArray(rows[i].samples)) {
      throw new Error(
        `Cannot use samples "${path}": row ${i + 1} is not problem ${i} ("${p.question.slice(0, 40)}…")`,
      );
    }
    return rows[i].samples as string[];
  });
}

/** The `eval-rm` command. */
export const evalRmCommand: Command = {
  name: "eval-rm",
  summary: "Evaluate reward models (step ROC-AUC, best-of-N vs majority vote)",
  help: `Usage: deno run -A cli/main.ts eval-rm [options]

Evaluates a PRM and/or an ORM on held-out problems:
  - step level (built-in task): PRM accuracy at threshold 0.5 and exact ROC-AUC (Mann–Whitney, ties count ½) on
    reference + corrupted solutions and on policy samples with exact labels; ORM per solution;
  - best-of-N with the policy's samples (temperature 1): PRM-min, PRM-product, PRM-last and ORM reranking vs
    majority vote over extracted answers, a seeded random pick, pass@N (oracle) and the mean single-sample
    accuracy, for N = 1, 2, 4, … up to --n; the policy's own confidence as a baseline (policy_logp: the sample
    with the highest mean token log-prob; logp_vote: votes weighted by exp of it); and the within-problem ROC-AUC
    of each score (correct vs wrong samples of the same problem, what reranking can use; an AUC over all
    samples also rewards telling easy problems from hard ones).

Options:
${flagHelp(FLAGS)}
  -h, --help`,
  run(args) {
    const cmd = "eval-rm";
    const f = parseFlags(cmd, args, flagSpec(FLAGS));
    if (f.help) return console.log(this.help), Promise.resolve(0);
    return reportErrors(cmd, async () => {
      const prmDir = await rmDir(f.prm, "runs/prm-tiny/final"),
        ormDir = await rmDir(f.orm, "runs/orm-tiny/final");
      if (!prmDir && !ormDir) {
        throw new UsageError(
          `${cmd}: no reward model: pass --prm and/or --orm (runs/prm-tiny/final is absent)`,
        );
      }
      const seed = numFlag(cmd, f, "seed", 0), count = numFlag(cmd, f, "problems", 200);
      const data = (f.data as string | undefined) ?? "builtin";
      const problems: EvalProblem[] = data === "builtin"
        ? generateProblems(count, { seed, split: "test" })
        : (await loadGsm8k(data, { split: "test", limit: count }));
      const gpu = await getGpu();
      const policyDir = await resolvePolicy(f.policy);
      const loaded: RewardModel[] = [];
      let policy: Policy | null = null;
      try {
        const prm = prmDir ? await loadRewardModel(prmDir, "prm", { gpu }) : undefined;
        if (prm) loaded.push(prm);
        const orm = ormDir ? await loadRewardModel(ormDir, "orm", { gpu }) : undefined;
        if (orm) loaded.push(orm);
        const samplesFile = f.samples as string | undefined;
        const cached = samplesFile && (await exists(samplesFile))
          ? await readSamples(samplesFile, problems)
          : undefined;
        // With saved samples the policy is only needed for its confidence baseline: load it when named.
        policy = policyDir && (!cached || f.policy !== undefined) ? await loadPolicy(policyDir, gpu) : null;
        const t0 = performance.now();
        const report = await evaluateRewardModels(problems, {
          prm,
          orm,
          policy: policy ?? undefined,
          samples: cached,
          onSamples: samplesFile && !cached
            ? (s) =>
              Deno.writeTextFile(
                samplesFile,
                problems.map((p, i) => JSON.stringify({ question: p.question, samples: s[i] })).join("\n") +
                  "\n",
              )
            : undefined,
          n: numFlag(cmd, f, "n", 16),
          sampling: {
            temperature: numFlag(cmd, f, "temperature", 1),
            maxNewTokens: numFlag(cmd, f, "max-new-tokens", 200),
            calculator: f.calculator === true,
          },
          corruptions: numFlag(cmd, f, "corruptions", 4),
          labelMode: choiceFlag(cmd, f, "label-mode", LABEL_MODES, "first_error"),
          seed,
        });
        const meta = {
          prm: prmDir,
          orm: ormDir,
          policy: cached
            ? `samples from ${samplesFile}${policy ? `, confidence of ${policyDir}` : ""}`
            : policyDir,
          data,
          seconds: (performance.now() - t0) / 1000,
        };
        if (f.json) console.log(JSON.stringify({ ...meta, ...report }));
        else {
          console.log(
            `PRM ${prmDir ?? "—"} · ORM ${ormDir ?? "—"} · policy ${meta.policy ?? "—"} · data ${data}`,
          );
          console.log(formatRmReport(report));
        }
      } finally {
        for (const m of loaded) releaseModel(m.model);
        if (policy) releaseModel(policy.model);
      }
      return 0;
    });
  },
};
