// Repeat probe (core/rl/repeat_probe.ts): the return of each shaping when a solution's first step is repeated,
// against closed forms for a PRM that gives every step the same score, and the probe's table (cli/ablation.ts).
import fc from "fast-check";
import assert from "node:assert/strict";
import { repeatProbeTable } from "../cli/ablation.ts";
import type { MathExample } from "../core/data/arithmetic.ts";
import { repeatProbe } from "../core/rl/repeat_probe.ts";
import type { ScoreItem, Scorer } from "../core/rm/types.ts";

/** A scorer whose PRM gives every step score `c` (and records what it was asked). */
function constantScorer(c: number, seen: ScoreItem[][] = []): Scorer {
  return {
    score(items) {
      seen.push([...items]);
      return Promise.resolve(items.map((it) => ({
        steps: it.steps!,
        stepScores: it.steps!.map(() => c),
        ormScore: null,
        success: null,
        shapedRewards: null,
      })));
    },
    models: () => [],
  };
}

const problem = (steps: number, i = 0): MathExample => ({
  question: `question ${i}`,
  answer: [...Array.from({ length: steps - 1 }, (_, k) => `step ${k} of ${i}`), "#### 7"].join("\n"),
  finalAnswer: "7",
});

Deno.test("repeat probe: raw grows with the copies, clip falls, Delta and Clip-Delta stay flat", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 2, max: 6 }),
      fc.double({ min: 0.01, max: 0.99, noNaN: true }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.double({ min: 0.1, max: 2, noNaN: true }),
      async (K, c, eta, alpha) => {
        const seen: ScoreItem[][] = [];
        const rows = await repeatProbe(constantScorer(c, seen), [problem(K, 0), problem(K, 1)], {
          repeats: [0, 1, 3],
          shaping: { eta, finalStepZero: true },
          alpha,
          success: 1,
        });
        assert.deepEqual(rows.map((r) => r.repeats), [0, 1, 3]);
        const clip = Math.min(c - eta, 0);
        for (const row of rows) {
          const n = K + row.repeats; // steps scored
          const close = (got: number, want: number, what: string) =>
            assert.ok(Math.abs(got - want) <= 1e-9 * (1 + Math.abs(want)), `${what}: ${got} vs ${want}`);
          close(row.copyScore, c, "copy score");
          close(row.returns.none, 1 + alpha * c * n, "raw");
          close(row.returns.clip, 1 + alpha * clip * n, "clip");
          // Delta over steps 1..n−1 of a constant sequence telescopes to its first score; the final step gets 0.
          close(row.returns.delta, 1 + alpha * c, "delta");
          close(row.returns.clip_delta, 1 + alpha * clip, "clip_delta");
        }
        // the first step is repeated right after itself; the answer line stays last
        const steps = seen[2][0].steps!;
        assert.equal(steps.length, K + 3);
        assert.deepEqual(steps.slice(0, 4), Array(4).fill("step 0 of 0"));
        assert.equal(steps.at(-1), "#### 7");
      },
    ),
    { numRuns: 30 },
  );
});

Deno.test("repeat probe: one-step solutions are skipped; bad repeats and scorers are named errors", async () => {
  const oneStep: MathExample = { question: "q", answer: "#### 3", finalAnswer: "3" };
  const rows = await repeatProbe(constantScorer(0.5), [oneStep, problem(3)], { repeats: [0] });
  assert.equal(rows.length, 1);
  await assert.rejects(
    () => repeatProbe(constantScorer(0.5), [oneStep]),
    /no reference solution has two steps/,
  );
  await assert.rejects(
    () => repeatProbe(constantScorer(0.5), [problem(3)], { repeats: [-1] }),
    /repeat count -1/,
  );
  const noPrm: Scorer = {
    score: (items) =>
      Promise.resolve(items.map((it) => ({
        steps: it.steps!,
        stepScores: null,
        ormScore: 0.5,
        success: null,
        shapedRewards: null,
      }))),
    models: () => [],
  };
  await assert.rejects(() => repeatProbe(noPrm, [problem(3)]), /no step score per step/);
});

Deno.test("repeat probe table: one row per repeat count, raw named as in the ablation", async () => {
  const rows = await repeatProbe(constantScorer(0.75), [problem(3)], { repeats: [0, 2] });
  const table = repeatProbeTable(rows, 1);
  assert.match(table, /Repeat probe/);
  assert.match(table, /\| r \| PRM score of the copies \| +raw \| +clip \| delta \| clip_delta \|/);
  // raw: 1 + 0.75·3 and 1 + 0.75·5
  assert.match(table, /\| 0 \| +0\.750 \| 3\.250 \|/);
  assert.match(table, /\| 2 \| +0\.750 \| 4\.750 \|/);
});
