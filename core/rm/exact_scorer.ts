/**
 * An oracle PRM for the built-in task: step scores from the exact step labels (`labelSteps`,
 * core/data/step_labels.ts; prefix labels: 1 up to the first incorrect step, 0 from it on) instead of a trained
 * model. PPO with `--prm exact` uses it to measure what process rewards can do when the PRM makes no mistakes —
 * the upper bound a trained PRM is compared with.
 *
 * ```
 * stepScores     = labelSteps(problem, steps).labels            (0 or 1 per step)
 * shapedRewards  = shapeStepRewards(stepScores, item.shaping ?? none)
 * success        = isCorrect(solution, goldAnswer)              (with a gold answer)
 * ```
 *
 * @example
 * ```ts
 * const scorer = new ExactStepScorer(generateProblems(100, { split: "train" }));
 * const [s] = await scorer.score([{ question: p.question, solution: p.answer }]);
 * s.stepScores; // [1, 1, 1]
 * ```
 *
 * @module
 */
import type { ArithmeticProblem } from "../data/arithmetic.ts";
import { labelSteps } from "../data/step_labels.ts";
import { isCorrect } from "../rewards/answer.ts";
import { shapeStepRewards } from "../rewards/shaping.ts";
import { splitSteps } from "../rewards/steps.ts";
import type { ModelInfo, ScoreItem, ScoreOutput, Scorer } from "./types.ts";

/** Scores solutions of known built-in problems with their exact step labels. */
export class ExactStepScorer implements Scorer {
  readonly #byQuestion = new Map<string, ArithmeticProblem>();

  /** Scores solutions of `problems` (looked up by question text). */
  constructor(problems: readonly ArithmeticProblem[]) {
    for (const p of problems) this.#byQuestion.set(p.question, p);
  }

  /** Scores each item; throws naming the item whose question is not one of the problems. */
  // deno-lint-ignore require-await
  async score(items: readonly ScoreItem[]): Promise<ScoreOutput[]> {
    return items.map((it, i) => {
      const p = this.#byQuestion.get(it.question);
      if (!p) {
        throw new Error(
          `Cannot score item ${i} with exact step labels: its question is not one of the ${this.#byQuestion.size} ` +
            `built-in problems given ("${it.question.slice(0, 60)}")`,
        );
      }
      const steps = it.steps ?? splitSteps(it.solution ?? "").map((s) => s.text);
      // Each step labelled on its own, so labelSteps sees the same steps; a step spanning lines is wrong when any of
      // its lines is (a step is correct only when all its text is).
      const first = steps.findIndex((s) =>
        labelSteps(p, s, { mode: "independent" }).steps.some((x) => !x.correct)
      );
      const scores = steps.map((_, k) => (first < 0 || k < first ? 1 : 0));
      const solution = it.solution ?? steps.join("\n");
      return {
        steps,
        stepScores: scores,
        ormScore: null,
        success: it.goldAnswer === undefined ? null : isCorrect(solution, it.goldAnswer) ? 1 : 0,
        shapedRewards: Array.from(shapeStepRewards(scores, it.shaping ?? { kind: "none" })),
      };
    });
  }

  /** No model behind it. */
  models(): ModelInfo[] {
    return [];
  }

  /** Nothing to release (no GPU state); here so callers release any scorer alike. */
  release(): void {}
}
