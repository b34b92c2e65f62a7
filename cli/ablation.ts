/**
 * `ablation`: the reward-design ablation of Gao et al. 2024 on one budget — PPO runs that differ only in how the
 * PRM enters the reward, each with the same seeds, data and hyper-parameters:
 *
 * | setting      | reward                                           |
 * |--------------|--------------------------------------------------|
 * | frozen       | no update (lr 0): the starting policy's rollouts |
 * | success      | success only (α = 0)                             |
 * | raw          | success + α·Σ_k r_k  (raw summed PRM scores)     |
 * | clip         | success + α·Σ_k min(r_k − η, 0)                  |
 * | delta        | success + α·Delta(r)                             |
 * | clip_delta   | success + α·Delta(min(r − η, 0))                 |
 *
 * and a table of held-out accuracy, mean steps per solution and repeated-step rate (held-out and in the
 * rollouts, first → last iteration): reward hacking shows as steps or repetitions rising. Every run samples the
 * same questions with the same seeds, so each setting's rollouts are also compared iteration by iteration with the
 * frozen run's (Δ columns: mean over iterations 2.. of setting − frozen, same seed), which cancels the
 * question-to-question variation that dominates a single run's curve. Before the runs, the
 * repeat probe (core/rl/repeat_probe.ts) measures the incentive itself with the PRM: the return each shaping
 * gives held-out reference solutions whose first step is repeated r more times.
 *
 * @module
 */
import { getGpu } from "../core/gpu/device.ts";
import { loadModel, releaseModel } from "../core/model/model.ts";
import { evaluatePolicy } from "../core/rl/eval.ts";
import { repeatProbe, type RepeatProbeRow } from "../core/rl/repeat_probe.ts";
import { RewardScorer } from "../core/rm/scorer.ts";
import type { ShapingKind } from "../core/rewards/shaping.ts";
import type { EvalSummary } from "../core/rl/ppo_checkpoint.ts";
import { builtinExactScorer, ensurePolicy, ensurePrm, loadProblems } from "../core/rl/setup.ts";
import { EXACT_PRM, type TrainConfig } from "../core/rl/train_config.ts";
import { textTable } from "../core/rl/plot.ts";
import { evalSummary, runPPO } from "../core/rl/trainer.ts";
import { loadTokenizer } from "../core/tokenizer/tokenizer.ts";
import { type MetricsRecord, readMetrics } from "../core/train/metrics.ts";
import { joinPath, writeFileAtomic, writeJsonAtomic } from "../core/util/atomic.ts";
import type { Command } from "./command.ts";
import { UsageError } from "./command.ts";
import { parseTrainArgs } from "./train.ts";

/** The settings of the ablation: reward overrides of the shared config. */
export const ABLATION_SETTINGS: Record<string, (c: TrainConfig) => Partial<TrainConfig>> = {
  frozen: () => ({ lr: 0, critic: "none" }),
  success: () => ({ alpha: 0, prm: "none", critic: "policy" }),
  raw: () => ({ shaping: "none" as ShapingKind }),
  clip: () => ({ shaping: "clip" as ShapingKind }),
  delta: () => ({ shaping: "delta" as ShapingKind }),
  clip_delta: () => ({ shaping: "clip_delta" as ShapingKind }),
};

/** Rollout metrics compared with the frozen run, per iteration. */
const PAIRED = [["accuracy", "Δ rollout acc"], ["steps_per_solution", "Δ rollout steps/sol"]] as const;

/** One finished run of the ablation. */
export interface AblationRun {
  setting: string;
  seed: number;
  initial: EvalSummary | null;
  final: EvalSummary | null;
  /** First and last iteration records. */
  first: MetricsRecord | null;
  last: MetricsRecord | null;
  /** Per iteration (1-based index − 1): the rollout metrics compared with the frozen run (NaN when absent). */
  rollout: Record<string, number[]>;
}

/** A numeric metric of a record, NaN when absent. */
const metric = (r: MetricsRecord | null, k: string) => (typeof r?.[k] === "number" ? (r[k] as number) : NaN);

/** Mean over iterations 2.. of `run`'s rollout metric minus the frozen run's (NaN without one). */
function pairedDelta(run: AblationRun, frozen: AblationRun | undefined, key: string): number {
  const a = run.rollout[key] ?? [], b = frozen?.rollout[key] ?? [];
  const d: number[] = [];
  for (let i = 1; i < Math.min(a.length, b.length); i++) {
    if (Number.isFinite(a[i]) && Number.isFinite(b[i])) d.push(a[i] - b[i]);
  }
  return d.length ? d.reduce((x, y) => x + y, 0) / d.length : NaN;
}

const meanSd = (xs: number[]) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)) : 0;
  return { m, sd };
};

/** The ablation table: one row per setting, means (± sample sd over seeds) of the final numbers. */
export function ablationTable(runs: readonly AblationRun[], initial: EvalSummary | null): string {
  const fmt = (xs: number[], pct = false) => {
    if (xs.length === 0) return "—";
    const { m, sd } = meanSd(xs), k = pct ? 100 : 1, d = pct ? 1 : 2;
    const v = (k * m).toFixed(d).replace(/^-(0\.0+)$/, "$1"); // no "-0.00"
    return `${v}${pct ? "%" : ""}${xs.length > 1 ? ` ± ${(k * sd).toFixed(d)}` : ""}`;
  };
  const rows: string[][] = [];
  if (initial) {
    rows.push([
      "SFT policy (start)",
      "—",
      fmt([initial.greedyAccuracy ?? NaN], true),
      fmt([initial.stepsPerSolution]),
      fmt([initial.repeatedStepRate]),
      "—",
      "—",
      ...PAIRED.map(() => "—"),
    ]);
  }
  const signed = (x: string) => (x.startsWith("-") || x === "—" ? x : `+${x}`);
  for (const s of Object.keys(ABLATION_SETTINGS)) {
    const rs = runs.filter((r) => r.setting === s && r.final);
    if (rs.length === 0) continue;
    const f = (g: (r: AblationRun) => number) => rs.map(g).filter(Number.isFinite);
    rows.push([
      s,
      rs.map((r) => r.seed).join(","),
      fmt(f((r) => r.final!.greedyAccuracy ?? NaN), true),
      fmt(f((r) => r.final!.stepsPerSolution)),
      fmt(f((r) => r.final!.repeatedStepRate)),
      `${fmt(f((r) => metric(r.first, "steps_per_solution")))} → ${
        fmt(f((r) => metric(r.last, "steps_per_solution")))
      }`,
      `${fmt(f((r) => metric(r.first, "repeated_step_rate")))} → ${
        fmt(f((r) => metric(r.last, "repeated_step_rate")))
      }`,
      ...PAIRED.map(([key]) =>
        s === "frozen" ? "0" : signed(fmt(
          f((r) => pairedDelta(r, runs.find((x) => x.setting === "frozen" && x.seed === r.seed), key)),
          key === "accuracy",
        ))
      ),
    ]);
  }
  return textTable("Reward ablation (held-out: final policy; rollouts: first → last iteration)", [
    "setting",
    "seeds",
    "held-out acc",
    "steps/sol",
    "repeat rate",
    "rollout steps/sol",
    "rollout repeat rate",
    ...PAIRED.map(([, name]) => `${name} vs frozen`),
  ], rows);
}

/** The repeat-probe table: one row per repeat count, the mean return per shaping. */
export function repeatProbeTable(rows: readonly RepeatProbeRow[], alpha: number): string {
  const kinds = Object.keys(rows[0]?.returns ?? {});
  const name = (k: string) => (k === "none" ? "raw" : k);
  const cells = (r: RepeatProbeRow) => {
    const returns = kinds.map((k) => r.returns[k].toFixed(3));
    return [String(r.repeats), r.copyScore.toFixed(3), ...returns];
  };
  return textTable(
    `Repeat probe: mean return (success + ${alpha}·shaped PRM) of correct held-out solutions whose first step is ` +
      "repeated r more times",
    ["r", "PRM score of the copies", ...kinds.map(name)],
    rows.map(cells),
  );
}

const HELP = `Usage: deno run -A cli/main.ts ablation [--settings LIST] [--seeds LIST] [train options]

Reward-design ablation: PPO runs with the same seeds, data and budget that differ only in the PRM reward —
success (success only), raw (raw summed PRM scores), clip, delta, clip_delta (Gao et al. 2024), and frozen (no
update: the starting policy's rollouts on the same questions and seeds) — then a table of held-out accuracy,
steps per solution and repeated-step rate, with each setting's rollout accuracy and steps per solution minus the
frozen run's, iteration by iteration (the paired difference cancels the variation between questions). First, a
repeat probe measures the incentive with the PRM: the return each shaping gives held-out reference solutions
whose first step is repeated 0–4 more times. Every train option (see \`train --help\`) sets the shared budget;
--out is the root directory (default runs/ablation), each run writes <out>/<setting>-s<seed>/ and an interrupted
ablation continues where it stopped. Writes <out>/ablation.json and <out>/ablation.md.

Options:
  --settings  comma-separated settings (default frozen,success,raw,clip,delta,clip_delta)
  --seeds     comma-separated seeds (default 0)
  -h, --help`;

/** Splits the ablation's own flags from the train flags. */
function splitArgs(
  args: string[],
): { settings: string[]; seeds: number[]; rest: string[]; out: string | null } {
  let settings = Object.keys(ABLATION_SETTINGS), seeds = [0], out: string | null = null;
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i].split(/=(.*)/s, 2);
    const value = () => inline ?? args[++i];
    if (flag === "--settings") settings = (value() ?? "").split(",").filter(Boolean);
    else if (flag === "--seeds") seeds = (value() ?? "").split(",").filter(Boolean).map(Number);
    else if (flag === "--out") out = value() ?? null;
    else rest.push(args[i]);
  }
  const bad = settings.find((s) => !(s in ABLATION_SETTINGS));
  if (bad || settings.length === 0) {
    throw new UsageError(
      `ablation: unknown setting "${bad}": expected ${Object.keys(ABLATION_SETTINGS).join(", ")}`,
    );
  }
  if (seeds.length === 0 || seeds.some((s) => !Number.isSafeInteger(s) || s < 0)) {
    throw new UsageError(`ablation: --seeds must be comma-separated integers ≥ 0`);
  }
  return { settings, seeds, rest, out };
}

/** The `ablation` command. */
export const ablationCommand: Command = {
  name: "ablation",
  summary: "Reward ablation: success / raw PRM / Clip / Delta / Clip-Delta on one budget",
  help: HELP,
  async run(args) {
    if (args.includes("--help") || args.includes("-h")) return console.log(HELP), 0;
    const { settings, seeds, rest, out } = splitArgs(args);
    const { config } = await parseTrainArgs(rest);
    const root = out ?? "runs/ablation";
    const log = (s: string) => config.quiet || console.error(s);
    try {
      const gpu = await getGpu();
      // Shared starting point: the policy, the PRM, and one held-out evaluation of the policy.
      const policyDir = await ensurePolicy(config.model, { gpu, log });
      const prmDir = await ensurePrm(config.prm, policyDir, {
        gpu,
        log,
        recipe: { calculator: config.calculator },
      });
      const problems = await loadProblems(config);
      let initial: EvalSummary | null = null;
      if (problems.eval.length > 0) {
        const policy = await loadModel(policyDir, { gpu });
        try {
          const r = await evaluatePolicy(policy, await loadTokenizer(policy.dir!), problems.eval, {
            samples: config.evalSamples,
            batchSize: config.evalBatchSize,
            maxNewTokens: config.evalMaxNewTokens,
            seed: config.seed,
            calculator: config.calculator,
          });
          initial = evalSummary(r, 0);
          log(
            `ablation: starting policy greedy accuracy ${(100 * (initial.greedyAccuracy ?? 0)).toFixed(1)}%`,
          );
        } finally {
          releaseModel(policy);
        }
      }
      let probe: RepeatProbeRow[] | null = null;
      const probeSet = (problems.eval.length ? problems.eval : problems.train).slice(0, 100);
      if (prmDir) {
        const scorer = prmDir === EXACT_PRM
          ? builtinExactScorer(config)
          : await RewardScorer.load({ prm: prmDir, gpu });
        try {
          probe = await repeatProbe(scorer, probeSet, {
            shaping: { eta: config.eta, finalStepZero: config.finalStepZero },
            alpha: config.alpha,
            success: config.successCorrect,
          });
        } finally {
          scorer.release();
        }
      }
      const probeTable = probe ? repeatProbeTable(probe, config.alpha) : null;
      if (probeTable) console.log(probeTable);
      const runs: AblationRun[] = [];
      for (const seed of seeds) {
        for (const setting of settings) {
          const cfg: TrainConfig = {
            ...config,
            model: policyDir,
            prm: prmDir ?? "none",
            seed,
            out: joinPath(root, `${setting}-s${seed}`),
            resume: true,
            overwrite: false,
            ...ABLATION_SETTINGS[setting](config),
          };
          log(`ablation: ${setting}, seed ${seed} → ${cfg.out}`);
          const r = await runPPO(cfg, { gpu, initialEval: initial ?? undefined, log });
          const its = (await readMetrics(cfg.log || joinPath(cfg.out, "metrics.jsonl"))).filter((x) =>
            x.type === "iteration"
          );
          runs.push({
            setting,
            seed,
            initial: r.initialEval,
            final: r.finalEval,
            first: its[0] ?? null,
            last: its.at(-1) ?? null,
            rollout: Object.fromEntries(PAIRED.map(([key]) => [key, its.map((x) => metric(x, key))])),
          });
          if (r.interrupted) return 130;
        }
      }
      const table = ablationTable(runs, initial);
      await writeJsonAtomic(joinPath(root, "ablation.json"), {
        config,
        seeds,
        settings,
        initial,
        probe,
        runs,
      });
      const md = probeTable ? `${probeTable}\n\n${table}\n` : `${table}\n`;
      await writeFileAtomic(joinPath(root, "ablation.md"), md);
      console.log(table);
      return 0;
    } catch (e) {
      const msg = (e as Error).message;
      if (/^(Cannot |Output directory |Training diverged|Invalid )/.test(msg)) {
        return console.error(`ablation: ${msg}`), 1;
      }
      throw e;
    }
  },
};
