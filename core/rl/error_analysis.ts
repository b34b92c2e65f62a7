/**
 * Where a policy's wrong solutions of the built-in task go wrong: accuracy per problem template, and for every
 * wrong solution the kind of its first incorrect step, from the exact step labels (`labelSteps`,
 * core/data/step_labels.ts). It tells which errors a reward or more training would have to remove, e.g. that
 * most wrong answers start with a miscopied number (`ungrounded`) rather than a wrong plan (`off_path`).
 *
 * First-error kinds (one per wrong solution):
 * ```
 * ungrounded | off_path | arithmetic | unknown_number   the verdict of the first incorrect step (step_labels.ts)
 * premature_answer   every step before the `####` line is correct and the answer is a true intermediate value
 * wrong_answer       every step before it is correct and the answer is some other number
 * no_answer          every step is correct but there is no `####` line with a number (e.g. cut off)
 * ```
 *
 * @example
 * ```ts
 * const problems = generateProblems(200, { seed: 0, split: "test" });
 * const r = await evaluatePolicy(model, tokenizer, problems.map(toMathExample), { calculator: true });
 * const a = analyseErrors(problems, r.records.map((x) => x.greedy!));
 * console.log(a.firstErrors); // [{ kind: "ungrounded", count: 37 }, …]
 * ```
 *
 * @module
 */
import type { ArithmeticProblem } from "../data/arithmetic.ts";
import { numberKey } from "../data/equations.ts";
import { labelSteps, referenceNumbers } from "../data/step_labels.ts";

/** The first-error kinds, in report order. */
export const FIRST_ERROR_KINDS = [
  "ungrounded",
  "off_path",
  "arithmetic",
  "unknown_number",
  "premature_answer",
  "wrong_answer",
  "no_answer",
] as const;
/** Kind of the first incorrect step of a wrong solution (see the module doc). */
export type FirstErrorKind = typeof FIRST_ERROR_KINDS[number];

/** The first error of one wrong solution. */
export interface FirstError {
  kind: FirstErrorKind;
  /** 0-based step index (`splitSteps`) of the first incorrect step; the step count for `no_answer`. */
  step: number;
}

/** Result of {@linkcode analyseErrors}. */
export interface ErrorAnalysis {
  /** Accuracy per template, from the lowest. */
  byTemplate: { template: string; correct: number; total: number }[];
  /** Wrong solutions per first-error kind, every kind listed (count 0 included), in {@link FIRST_ERROR_KINDS} order. */
  firstErrors: { kind: FirstErrorKind; count: number }[];
  /** Solutions analysed and how many are wrong. */
  total: number;
  wrong: number;
  /** Per solution: its first error, null when it is correct. */
  perSolution: (FirstError | null)[];
}

/**
 * The first error of `response` for `problem`, or null when the solution is correct (its final answer equals the
 * gold one). A correct final answer reached through a wrong step still counts as correct: this is about outcomes.
 */
export function firstError(
  problem: ArithmeticProblem,
  response: string,
  correct: boolean,
): FirstError | null {
  if (correct) return null;
  const labels = labelSteps(problem, response);
  const i = labels.firstError;
  if (i < 0) return { kind: "no_answer", step: labels.steps.length };
  const s = labels.steps[i];
  if (s.verdict !== "wrong_answer") return { kind: s.verdict as FirstErrorKind, step: i };
  const { onPath } = referenceNumbers(problem);
  let key: string | null = null;
  try {
    key = s.value === null ? null : numberKey(s.value);
  } catch { /* not a plain number: wrong_answer */ }
  // The gold answer is on the path too, but a wrong_answer verdict means the answer differs from it.
  return { kind: key !== null && onPath.has(key) ? "premature_answer" : "wrong_answer", step: i };
}

/**
 * Accuracy per template and first-error kinds of `solutions[i]` (a response and whether its final answer is
 * correct) for `problems[i]`.
 */
export function analyseErrors(
  problems: readonly ArithmeticProblem[],
  solutions: readonly { response: string; correct: boolean }[],
): ErrorAnalysis {
  if (problems.length !== solutions.length) {
    throw new Error(
      `Cannot analyse errors: ${solutions.length} solutions for ${problems.length} problems (expected one each)`,
    );
  }
  const templates = new Map<string, { template: string; correct: number; total: number }>();
  const counts = new Map<FirstErrorKind, number>(FIRST_ERROR_KINDS.map((k) => [k, 0]));
  const perSolution = solutions.map((s, i) => {
    const p = problems[i];
    const t = templates.get(p.template) ?? { template: p.template, correct: 0, total: 0 };
    t.total++;
    t.correct += s.correct ? 1 : 0;
    templates.set(p.template, t);
    const e = firstError(p, s.response, s.correct);
    if (e) counts.set(e.kind, counts.get(e.kind)! + 1);
    return e;
  });
  const byTemplate = [...templates.values()].sort((a, b) =>
    a.correct / a.total - b.correct / b.total || a.template.localeCompare(b.template)
  );
  return {
    byTemplate,
    firstErrors: FIRST_ERROR_KINDS.map((kind) => ({ kind, count: counts.get(kind)! })),
    total: solutions.length,
    wrong: perSolution.filter((e) => e !== null).length,
    perSolution,
  };
}
