/**
 * Reward-hacking probe of a PRM reward design (Gao et al. 2024): the return each shaping gives a correct
 * solution when one of its steps is repeated r more times. Repeating a step changes neither the answer nor the
 * reasoning, so a return that grows with r is a reward the policy can farm by repeating steps; a bounded design
 * keeps it flat (or lowers it). Unlike a PPO run, which only shows hacking once the policy happens to sample such
 * solutions, the probe measures the incentive itself with the trained PRM.
 *
 * ```
 * steps_r   = [s_1, s_1 × r, s_2, …, s_K]        (s_1 repeated r more times; the answer line is unchanged)
 * return_r  = success + α · Σ_k shape(PRM(steps_r))_k
 * ```
 *
 * @example
 * ```ts
 * const rows = await repeatProbe(scorer, problems.eval.slice(0, 50), { shapings: ["none", "clip_delta"] });
 * rows[2].returns.none; // mean return with the first step written three times
 * ```
 *
 * @module
 */
import type { MathExample } from "../data/arithmetic.ts";
import { type ShapeOptions, shapeStepRewards, type ShapingKind } from "../rewards/shaping.ts";
import { splitSteps } from "../rewards/steps.ts";
import type { Scorer } from "../rm/types.ts";
import { DEFAULT_SHAPING } from "./rollout.ts";

/** Options of {@linkcode repeatProbe}. */
export interface RepeatProbeOptions {
  /** Extra copies of the first step (default [0, 1, 2, 4]). */
  repeats?: number[];
  /** Shapings compared (default none, clip, delta, clip_delta). */
  shapings?: ShapingKind[];
  /** Clip threshold η and Delta's final-step convention (default: those of PPO's default shaping). */
  shaping?: Omit<ShapeOptions, "kind">;
  /** Weight α of the process rewards (default 1). */
  alpha?: number;
  /** Success reward of the (correct) solutions (default 1). */
  success?: number;
}

/** One row of the probe: mean over the solutions with `repeats` extra copies of the first step. */
export interface RepeatProbeRow {
  repeats: number;
  /** Mean PRM score of the first step's copies (the original included). */
  copyScore: number;
  /** Mean return per shaping. */
  returns: Record<string, number>;
}

/** Runs the probe on the reference solutions of `problems` (those of at least two steps). */
export async function repeatProbe(
  scorer: Scorer,
  problems: readonly MathExample[],
  opts: RepeatProbeOptions = {},
): Promise<RepeatProbeRow[]> {
  const repeats = opts.repeats ?? [0, 1, 2, 4];
  const shapings = opts.shapings ?? ["none", "clip", "delta", "clip_delta"];
  const alpha = opts.alpha ?? 1, success = opts.success ?? 1;
  const shaping = { eta: DEFAULT_SHAPING.eta, finalStepZero: DEFAULT_SHAPING.finalStepZero, ...opts.shaping };
  const base = problems
    .map((p) => ({ question: p.question, steps: splitSteps(p.answer).map((s) => s.text) }))
    .filter((p) => p.steps.length >= 2);
  if (base.length === 0) throw new Error("Cannot run the repeat probe: no reference solution has two steps");
  const rows: RepeatProbeRow[] = [];
  for (const r of repeats) {
    if (!(Number.isSafeInteger(r) && r >= 0)) {
      throw new Error(`Invalid repeat count ${r}: expected an integer ≥ 0`);
    }
    const items = base.map((p) => ({
      question: p.question,
      steps: [p.steps[0], ...Array(r).fill(p.steps[0]), ...p.steps.slice(1)],
    }));
    const scored = await scorer.score(items);
    let copy = 0;
    const sums = Object.fromEntries(shapings.map((k) => [k, 0]));
    scored.forEach((s, i) => {
      const scores = s.stepScores;
      if (!scores || scores.length !== items[i].steps.length) {
        throw new Error(
          `Cannot run the repeat probe: the scorer returned no step score per step (item ${i})`,
        );
      }
      for (let j = 0; j <= r; j++) copy += scores[j] / (r + 1);
      for (const kind of shapings) {
        const shaped = shapeStepRewards(scores, { ...shaping, kind });
        sums[kind] += success + alpha * shaped.reduce((a, b) => a + b, 0);
      }
    });
    rows.push({
      repeats: r,
      copyScore: copy / base.length,
      returns: Object.fromEntries(shapings.map((k) => [k, sums[k] / base.length])),
    });
  }
  return rows;
}
