/**
 * `score`: score one solution with a PRM and/or an ORM — per-step PRM scores, the ORM score, success against a
 * gold answer and the shaped step rewards.
 *
 * @module
 */
import type { ShapeOptions, ShapingKind } from "../core/rewards/shaping.ts";
import { RewardScorer } from "../core/rm/scorer.ts";
import { exists, joinPath } from "../core/util/atomic.ts";
import { type Command, parseFlags, UsageError } from "./command.ts";
import { choiceFlag, numFlag, reportErrors } from "./train_prm.ts";

/** The PRM/ORM a command uses: the flag, "none", or (absent) the default directory when it exists. */
export async function rmDir(flag: unknown, fallback: string): Promise<string | null> {
  if (flag === "none") return null;
  if (typeof flag === "string") return flag;
  return (await exists(joinPath(fallback, "config.json"))) ? fallback : null;
}

/** The `score` command. */
export const scoreCommand: Command = {
  name: "score",
  summary: "Score a solution with PRM/ORM and shaped rewards",
  help: `Usage: deno run -A cli/main.ts score --question TEXT (--solution TEXT | --steps JSON) [options]

Scores one solution: the PRM's probability that each step is correct (read at the step's end token), the ORM's
probability that the solution is right, success against --gold, and the PRM scores shaped for RL.

Options:
  --question         the problem (required)
  --solution         the solution text; steps are its non-empty lines
  --steps            the steps as a JSON list of strings (instead of --solution)
  --gold             gold answer (a number or a GSM8K answer ending in "#### n"): adds success
  --prm              PRM directory, or "none" (default runs/prm-tiny/final if present)
  --orm              ORM directory, or "none" (default runs/orm-tiny/final if present)
  --shaping          none | clip | delta | clip_delta | min (default none)
  --eta              clip threshold η for clip and clip_delta (default 0.5)
  --final-step-zero  Delta variants: the last step gets 0 (it is judged by the success reward)
  --json             print one JSON object {steps, stepScores, ormScore, success, shapedRewards}
  -h, --help`,
  run(args) {
    const cmd = "score";
    const f = parseFlags(cmd, args, {
      question: { type: "string" },
      solution: { type: "string" },
      steps: { type: "string" },
      gold: { type: "string" },
      prm: { type: "string" },
      orm: { type: "string" },
      shaping: { type: "string" },
      eta: { type: "string" },
      "final-step-zero": { type: "boolean" },
      json: { type: "boolean" },
    });
    if (f.help) return console.log(this.help), Promise.resolve(0);
    return reportErrors(cmd, async () => {
      if (typeof f.question !== "string") throw new UsageError(`${cmd}: --question is required`);
      if ((f.solution === undefined) === (f.steps === undefined)) {
        throw new UsageError(`${cmd}: give exactly one of --solution and --steps`);
      }
      let steps: string[] | undefined;
      if (typeof f.steps === "string") {
        try {
          steps = JSON.parse(f.steps);
        } catch (e) {
          throw new UsageError(`${cmd}: --steps is not valid JSON (${(e as Error).message})`);
        }
        if (!Array.isArray(steps) || steps.some((s) => typeof s !== "string")) {
          throw new UsageError(`${cmd}: --steps must be a JSON list of strings`);
        }
      }
      const kind = choiceFlag<ShapingKind>(
        cmd,
        f,
        "shaping",
        ["none", "clip", "delta", "clip_delta", "min"],
        "none",
      );
      const shaping: ShapeOptions = {
        kind,
        eta: numFlag(cmd, f, "eta", 0.5),
        finalStepZero: f["final-step-zero"] === true,
      };
      const prm = await rmDir(f.prm, "runs/prm-tiny/final"), orm = await rmDir(f.orm, "runs/orm-tiny/final");
      if (!prm && !orm) {
        throw new UsageError(
          `${cmd}: no reward model: pass --prm and/or --orm (runs/prm-tiny/final is absent)`,
        );
      }
      const scorer = await RewardScorer.load({ prm: prm ?? undefined, orm: orm ?? undefined });
      try {
        const [o] = await scorer.score([{
          question: f.question,
          ...(steps ? { steps } : { solution: f.solution as string }),
          goldAnswer: f.gold as string | undefined,
          shaping,
        }]);
        if (f.json) {
          console.log(JSON.stringify(o));
          return 0;
        }
        const w = Math.min(60, Math.max(4, ...o.steps.map((s) => s.length)));
        console.log(
          `${"step".padEnd(w)}  ${o.stepScores ? "  PRM" : ""}${
            o.shapedRewards ? `  ${kind.padStart(10)}` : ""
          }`,
        );
        o.steps.forEach((s, k) => {
          const text = s.length > w ? s.slice(0, w - 1) + "…" : s;
          const prmCol = o.stepScores ? `  ${o.stepScores[k].toFixed(3)}` : "";
          const shaped = o.shapedRewards ? `  ${o.shapedRewards[k].toFixed(4).padStart(10)}` : "";
          console.log(`${text.padEnd(w)}${prmCol}${shaped}`);
        });
        if (o.ormScore !== null) console.log(`ORM score: ${o.ormScore.toFixed(4)}`);
        if (o.success !== null) console.log(`success: ${o.success}`);
      } finally {
        scorer.release();
      }
      return 0;
    });
  },
};
