/**
 * Wrong-but-plausible solutions of generated arithmetic problems, for reward-model training: one error is
 * injected into the reference solution and propagated through the later steps (they keep correct arithmetic
 * on the wrong values), so the final answer is wrong. Each corrupted solution comes with the exact per-step
 * labels of `labelSteps`.
 *
 * Kinds (step k of the reference solution, `x op y = v`):
 * - `arithmetic_slip`: step k states a wrong result v′ ≠ v (v ± 1…12, v ± 10/20, swapped digits);
 *   the first error is step k.
 * - `wrong_operand`: one operand of step k is replaced by another quantity of the problem, an earlier result, or
 *   the operand ± 1…2 (a misread number); the first error is step k (its result leaves the solution path).
 * - `skipped_step`: step k is left out and later steps use its first operand x in place of v (the operation is
 *   forgotten); the first error is the first step that uses it, or the `####` line when k was the last step.
 * - `repeated_step`: the operation of step k is applied twice (`v op y` right after step k, double counting);
 *   the first error is the repeated step, k + 1.
 *
 * A candidate is accepted only if all values stay non-negative integers below 10000, the final answer changes,
 * and `labelSteps` puts the first error exactly where the kind says (so labels are never accidentally correct).
 *
 * @module
 */

import {
  applyOp,
  type ArithmeticProblem,
  type ArithOp,
  renderSolution,
  renderStep,
  type StepInput,
} from "./arithmetic.ts";
import type { Rng } from "./rng.ts";
import { type LabelMode, labelSteps, type StepLabels } from "./step_labels.ts";

/** The kinds of injected error. */
export type CorruptionKind = "arithmetic_slip" | "wrong_operand" | "skipped_step" | "repeated_step";

/** All corruption kinds. */
export const CORRUPTION_KINDS: readonly CorruptionKind[] = [
  "arithmetic_slip",
  "wrong_operand",
  "skipped_step",
  "repeated_step",
];

/** Options of {@link corruptSolution}. */
export interface CorruptOptions {
  /** The kind of error to inject. */
  kind: CorruptionKind;
  /** Reference step to corrupt (default: drawn among those where the kind applies). */
  step?: number;
  /** Label mode of the returned labels (default "first_error"). */
  mode?: LabelMode;
}

/** A corrupted solution and its labels. */
export interface CorruptedSolution {
  /** The injected kind. */
  kind: CorruptionKind;
  /** The reference step that was corrupted. */
  step: number;
  /** The full solution text (steps and a `####` line with the wrong answer). */
  solution: string;
  /** The (wrong) final answer of the corrupted solution. */
  finalAnswer: number;
  /** Exact per-step labels of `solution` from `labelSteps`. */
  labels: StepLabels;
}

/** A step of a solution plan; `forced` overrides the computed value (a slip). */
interface PlanStep {
  template: string;
  op: ArithOp;
  inputs: StepInput[];
  forced?: number;
}

/** Values and lines of a plan, or null when a value is not a non-negative integer below 10000. */
function evaluate(plan: readonly PlanStep[]): { values: number[]; lines: string[] } | null {
  const values: number[] = [];
  const lines: string[] = [];
  for (const s of plan) {
    const [x, y] = s.inputs.map((inp) => (inp.kind === "given" ? inp.value : values[inp.index]));
    const v = s.forced ?? applyOp(s.op, x, y);
    if (!Number.isInteger(v) || v < 0 || v >= 10000) return null;
    values.push(v);
    lines.push(renderStep(s.template, s.op, x, y, v));
  }
  return { values, lines };
}

/** A candidate corruption: the plan and the index of the step where the first error must be. */
interface Candidate {
  step: number;
  plan: PlanStep[];
  /** First-error index in the corrupted solution; "at_or_after" accepts any index ≥ step. */
  firstError: number | "at_or_after";
}

const basePlan = (p: ArithmeticProblem): PlanStep[] =>
  p.steps.map((s) => ({ template: s.template, op: s.op, inputs: s.inputs.map((i) => ({ ...i })) }));

/** Moves step references: an input `{step: j}` becomes `map(j)`. */
function remap(plan: PlanStep[], map: (j: number) => StepInput): PlanStep[] {
  return plan.map((s) => ({ ...s, inputs: s.inputs.map((i) => (i.kind === "step" ? map(i.index) : i)) }));
}

function candidates(p: ArithmeticProblem, k: number, kind: CorruptionKind): Candidate[] {
  const s = p.steps[k];
  const out: Candidate[] = [];
  if (kind === "arithmetic_slip") {
    const deltas = [...Array.from({ length: 12 }, (_, i) => i + 1), 20].flatMap((d) => [d, -d]);
    const wrong = new Set(deltas.map((d) => s.value + d));
    const digits = String(s.value);
    if (digits.length >= 2) wrong.add(Number([...digits].reverse().join("")));
    for (const v of wrong) {
      if (v === s.value || v < 0) continue;
      const plan = basePlan(p);
      plan[k].forced = v;
      out.push({ step: k, plan, firstError: k });
    }
  } else if (kind === "wrong_operand") {
    for (const pos of [0, 1]) {
      const cur = s.inputs[pos];
      const curValue = s.operands[pos];
      const repl: StepInput[] = [
        ...p.quantities.map((value) => ({ kind: "given" as const, value })),
        ...[-2, -1, 1, 2].map((d) => ({ kind: "given" as const, value: curValue + d })),
        ...Array.from({ length: k }, (_, index) => ({ kind: "step" as const, index })),
      ];
      for (const r of repl) {
        if (r.kind === "given" && (r.value <= 0 || (cur.kind === "given" && r.value === cur.value))) continue;
        if (r.kind === "step" && cur.kind === "step" && r.index === cur.index) continue;
        const plan = basePlan(p);
        plan[k].inputs[pos] = r;
        out.push({ step: k, plan, firstError: k });
      }
    }
  } else if (kind === "skipped_step") {
    // Later references to step k use its first operand; indices after k shift down by one.
    const sub = s.inputs[0];
    const shift = (
      i: StepInput,
    ): StepInput => (i.kind === "step" && i.index > k ? { ...i, index: i.index - 1 } : i);
    const plan = basePlan(p).filter((_, j) => j !== k);
    out.push({
      step: k,
      plan: remap(plan, (j) => (j === k ? shift(sub) : shift({ kind: "step", index: j }))),
      firstError: "at_or_after",
    });
  } else {
    const extra: PlanStep = {
      template: s.template,
      op: s.op,
      inputs: [{ kind: "step", index: k }, s.inputs[1]],
    };
    const later = remap(basePlan(p).slice(k + 1), (j) => ({ kind: "step", index: j >= k ? j + 1 : j }));
    out.push({ step: k, plan: [...basePlan(p).slice(0, k + 1), extra, ...later], firstError: k + 1 });
  }
  return out;
}

/**
 * Injects one error of `opts.kind` into the reference solution of `problem` (see the module doc), choosing
 * the step (unless `opts.step` is given) and the wrong value with `rng`. Returns null when no candidate of
 * that kind satisfies the acceptance rules (e.g. `repeated_step` before an exact division: about 5% of the
 * problems), so callers can fall back to another kind.
 */
export function corruptSolution(
  problem: ArithmeticProblem,
  rng: Rng,
  opts: CorruptOptions,
): CorruptedSolution | null {
  const { kind } = opts;
  if (!CORRUPTION_KINDS.includes(kind)) {
    throw new Error(
      `Cannot corrupt a solution: unknown kind "${kind}", expected one of ${CORRUPTION_KINDS.join(", ")}`,
    );
  }
  const n = problem.steps.length;
  if (opts.step !== undefined && !(Number.isInteger(opts.step) && opts.step >= 0 && opts.step < n)) {
    throw new Error(`Cannot corrupt problem "${problem.id}": step ${opts.step} is not in [0, ${n})`);
  }
  const ks = opts.step !== undefined ? [opts.step] : rng.shuffle(Array.from({ length: n }, (_, k) => k));
  for (const k of ks) {
    for (const c of rng.shuffle(candidates(problem, k, kind))) {
      const ev = evaluate(c.plan);
      if (ev === null) continue;
      const finalAnswer = ev.values[ev.values.length - 1];
      if (finalAnswer === problem.finalAnswer) continue;
      const solution = renderSolution(ev.lines, finalAnswer);
      const labels = labelSteps(problem, solution, { mode: "first_error" });
      const ok = c.firstError === "at_or_after"
        ? labels.firstError >= c.step
        : labels.firstError === c.firstError;
      if (!ok || labels.finalCorrect !== false) continue;
      const out = opts.mode && opts.mode !== "first_error" ? labelSteps(problem, solution, opts) : labels;
      return { kind, step: c.step, solution, finalAnswer, labels: out };
    }
  }
  return null;
}
