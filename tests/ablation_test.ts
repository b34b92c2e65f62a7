// The ablation table (cli/ablation.ts): final numbers per setting and the paired rollout differences against the
// frozen run of the same seed.
import assert from "node:assert/strict";
import { type AblationRun, ablationTable } from "../cli/ablation.ts";

const run = (setting: string, seed: number, accuracy: number[], steps: number[]): AblationRun => ({
  setting,
  seed,
  initial: null,
  final: {
    iteration: steps.length,
    greedyAccuracy: 0.5,
    pass1: null,
    passK: null,
    majK: null,
    meanResponseTokens: 50,
    stepsPerSolution: 4,
    repeatedStepRate: 0,
    total: 10,
  },
  first: { type: "iteration", steps_per_solution: steps[0], repeated_step_rate: 0 },
  last: { type: "iteration", steps_per_solution: steps.at(-1)!, repeated_step_rate: 0 },
  rollout: { accuracy, steps_per_solution: steps },
});

Deno.test("ablation table: Δ columns are the mean over iterations 2.. of setting − frozen of the same seed", () => {
  const table = ablationTable([
    run("frozen", 0, [0.5, 0.6, 0.4], [4.0, 4.1, 4.2]),
    run("frozen", 1, [0.5, 0.5, 0.5], [4.0, 4.0, 4.0]),
    // seed 0: Δacc (0.1, 0.1) → +10%, Δsteps (0.2, 0.4) → 0.30; seed 1: Δacc 0, Δsteps (1, 1) → 1.00
    run("raw", 0, [0.9, 0.7, 0.5], [9.0, 4.3, 4.6]),
    run("raw", 1, [0.5, 0.5, 0.5], [4.0, 5.0, 5.0]),
    run("clip", 0, [0.5, 0.5, 0.3], [4.0, 4.1, 4.2]),
    run("delta", 0, [0.5, 0.6, 0.4], [4.0, 4.099, 4.199]),
  ], null);
  const row = (name: string) =>
    table.split("\n").find((l) => l.startsWith(`| ${name} `))!.split("|").map((c) => c.trim());
  const header = table.split("\n")[1].split("|").map((c) => c.trim());
  const col = (name: string, h: string) => row(name)[header.indexOf(h)];
  assert.equal(col("raw", "Δ rollout acc vs frozen"), "+5.0% ± 7.1");
  assert.equal(col("raw", "Δ rollout steps/sol vs frozen"), "+0.65 ± 0.49");
  assert.equal(col("clip", "Δ rollout acc vs frozen"), "-10.0%");
  assert.equal(col("clip", "Δ rollout steps/sol vs frozen"), "+0.00");
  assert.equal(
    col("delta", "Δ rollout steps/sol vs frozen"),
    "+0.00",
    "a difference that rounds to 0 has no sign",
  );
  assert.equal(col("frozen", "Δ rollout steps/sol vs frozen"), "0");
  assert.equal(col("raw", "seeds"), "0,1");
});
