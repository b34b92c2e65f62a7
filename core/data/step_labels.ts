/**
 * Exact step-correctness labels for any candidate solution of a generated arithmetic problem — the ground
 * truth for process reward model (PRM) training and evaluation on the built-in task.
 *
 * The solution is split into steps with `splitSteps` (one step per non-empty line). With
 * Q = the problem's quantities (numbers of the question and word numbers) and R = its true intermediate values
 * (`acceptedValues`: reference step values, equivalent orders, the final answer), each step gets a verdict:
 *
 * - **answer step** (contains `####`): correct iff its answer equals the gold answer
 *   (`extractAnswer(step) === extractAnswer(finalAnswer)`; for the last `####` line this is `isCorrect`);
 *   else `wrong_answer`.
 * - **equation step** (has a `<<…>>` annotation or a visible `a op b = c`, see `findEquations`), checked in order:
 *   1. `arithmetic`: every equation holds exactly (all sides equal as rationals; a malformed annotation fails);
 *   2. `ungrounded`: every operand (number literal left of the last "=") is in Q ∪ R — a number that is
 *      neither given nor a true intermediate is a wrong operand;
 *   3. `off_path`: every equation's result is in R — correct arithmetic on the wrong quantities
 *      (a wrong operand, a skipped or repeated operation, a propagated error) leaves the solution path;
 *   4. `unknown_number`: every other number of the line is in Q ∪ R or is a result of the line.
 * - **prose step** (no equation): correct iff all its numbers are in Q ∪ R (else `unknown_number`).
 *
 * So a step is correct iff its arithmetic is right and it lands on a value of a correct solution using only
 * true quantities: from there the answer is still reachable (Math-Shepherd's criterion, decided exactly).
 * A step's verdict depends only on its own text and the problem, never on other steps.
 *
 * Labels (`mode`): `"first_error"` (default, PRM800K / Math-Shepherd prefix labels) gives 1 up to the first
 * incorrect step and 0 from it on — a prefix is good iff all its steps are; `"independent"` gives each step
 * its own verdict (a later step that recovers with correct values is labelled 1).
 *
 * @module
 */

import { extractAnswer, isCorrect } from "../rewards/answer.ts";
import { splitSteps, type Step } from "../rewards/steps.ts";
import { findEquations, numberKey, ratKey } from "./equations.ts";

/** What the labeller needs of a problem (an `ArithmeticProblem` has these fields). */
export interface LabelReference {
  /** Q: the problem's quantities. */
  quantities: readonly number[];
  /** R: true intermediate values (must include the final answer). */
  acceptedValues: readonly number[];
  /** The gold final answer. */
  finalAnswer: number | string;
}

/** The label modes, in the order CLIs list them (the first is the default). */
export const LABEL_MODES = ["first_error", "independent"] as const;
/** How per-step verdicts become labels. */
export type LabelMode = typeof LABEL_MODES[number];

/** Why a step is (in)correct; see the module doc for the rules. */
export type StepVerdict =
  | "correct"
  | "arithmetic"
  | "ungrounded"
  | "off_path"
  | "unknown_number"
  | "wrong_answer";

/** A step with its verdict and label. */
export interface LabelledStep extends Step {
  /** "answer" (`####` line), "equation" or "prose". */
  kind: "answer" | "equation" | "prose";
  /** The verdict of the step on its own. */
  verdict: StepVerdict;
  /** `verdict === "correct"`. */
  correct: boolean;
  /** The training label under the chosen mode. */
  label: 0 | 1;
  /** The step's result as an exact key (`"12"`, `"7/2"`): last equation's result or the answer; else null. */
  value: string | null;
}

/** Result of {@link labelSteps}. */
export interface StepLabels {
  /** The steps in order. */
  steps: LabelledStep[];
  /** `steps.map((s) => s.label)`. */
  labels: (0 | 1)[];
  /** Index of the first incorrect step, or -1 when all are correct. */
  firstError: number;
  /**
   * Outcome: `isCorrect(solution, finalAnswer)` when the solution has a `####` marker, else null. It equals the
   * verdict of the last answer step except when that line holds no number and one follows on a later line.
   */
  finalCorrect: boolean | null;
}

/** Options of {@link labelSteps}. */
export interface LabelStepsOptions {
  /** Label mode (default "first_error"). */
  mode?: LabelMode;
}

/** Verdict and value of one step, on its own. */
function judge(
  text: string,
  known: ReadonlySet<string>,
  onPath: ReadonlySet<string>,
  gold: string | null,
): { kind: LabelledStep["kind"]; verdict: StepVerdict; value: string | null } {
  if (text.includes("####")) {
    const value = extractAnswer(text);
    return { kind: "answer", verdict: value !== null && value === gold ? "correct" : "wrong_answer", value };
  }
  const { equations, proseNumbers } = findEquations(text);
  const results = equations.flatMap((e) => (e.value === null ? [] : [ratKey(e.value)]));
  if (equations.length === 0) {
    const ok = proseNumbers.every((n) => known.has(ratKey(n)));
    return { kind: "prose", verdict: ok ? "correct" : "unknown_number", value: null };
  }
  const value = results.at(-1) ?? null;
  const verdict: StepVerdict = !equations.every((e) => e.holds)
    ? "arithmetic"
    : !equations.every((e) => e.operands.every((o) => known.has(ratKey(o))))
    ? "ungrounded"
    : !results.every((r) => onPath.has(r))
    ? "off_path"
    : !proseNumbers.every((n) => known.has(ratKey(n)) || results.includes(ratKey(n)))
    ? "unknown_number"
    : "correct";
  return { kind: "equation", verdict, value };
}

/** Keys (`numberKey`) of R, the true values (`onPath`), and of Q ∪ R, the numbers a correct step may use (`known`). */
export function referenceNumbers(ref: LabelReference): { known: Set<string>; onPath: Set<string> } {
  const onPath = new Set(ref.acceptedValues.map(numberKey));
  return { known: new Set([...ref.quantities.map(numberKey), ...onPath]), onPath };
}

/**
 * Labels every step of `solution` for the problem `ref` (see the module doc for the exact rules).
 *
 * @example
 * labelSteps(problem, "Tom buys 3 packs of 4 pens, so he has 3*4=<<3*4=13>>13 pens.\n#### 8").labels // [0, 0]
 */
export function labelSteps(ref: LabelReference, solution: string, opts: LabelStepsOptions = {}): StepLabels {
  const mode = opts.mode ?? "first_error";
  if (mode !== "first_error" && mode !== "independent") {
    throw new Error(`Cannot label steps: mode must be "first_error" or "independent", got "${mode}"`);
  }
  const { known, onPath } = referenceNumbers(ref);
  const gold = extractAnswer(String(ref.finalAnswer));
  if (gold === null) throw new Error(`Cannot label steps: final answer "${ref.finalAnswer}" is not a number`);
  const steps: LabelledStep[] = [];
  let firstError = -1;
  for (const [i, step] of splitSteps(solution).entries()) {
    const { kind, verdict, value } = judge(step.text, known, onPath, gold);
    const correct = verdict === "correct";
    if (!correct && firstError < 0) firstError = i;
    const label = (mode === "independent" ? correct : firstError < 0) ? 1 : 0;
    steps.push({ ...step, kind, verdict, correct, label, value });
  }
  const finalCorrect = solution.includes("####") ? isCorrect(solution, String(ref.finalAnswer)) : null;
  return { steps, labels: steps.map((s) => s.label), firstError, finalCorrect };
}
