/**
 * One PPO iteration of the tiny preset and its wall-time split: generation (KV-cache sampling), scoring
 * (training-mode policy and reference log-probs, critic values, PRM step scores, rewards, GAE) and training
 * (PPO epochs: actor and critic forward + backward + AdamW). Random weights, so every response runs to
 * `maxNewTokens` (the worst case of a trained policy).
 *
 * Usage: deno run -A bench/ppo_bench.ts [--questions 16] [--samples 4] [--max-new-tokens 160]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { builtinProblems } from "../core/train/sft_data.ts";
import { buildTinyTokenizer, tinyPresetConfig } from "../core/data/tiny_tokenizer.ts";
import { Gpu } from "../core/gpu/device.ts";
import { randomModel, releaseModel } from "../core/model/model.ts";
import { createPrm } from "../core/rm/prm.ts";
import { rewardModel, RewardScorer } from "../core/rm/scorer.ts";
import { Critic } from "../core/rl/critic.ts";
import { createActor, ppoUpdate, releaseActor } from "../core/rl/ppo.ts";
import { collectRollouts } from "../core/rl/rollout.ts";
import { Tokenizer } from "../core/tokenizer/tokenizer.ts";
import { formatTable, type Row } from "./table.ts";

/** Options of {@linkcode benchPPO}. */
export interface PPOBenchOptions {
  gpu: Gpu;
  /** Questions per iteration (default 16), samples per question (default 4), longest response (default 160). */
  questions?: number;
  samples?: number;
  maxNewTokens?: number;
  /** PPO epochs (default 2) and minibatch size (default 32). */
  epochs?: number;
  miniBatchSize?: number;
  /** Timed iterations after one warm-up iteration (default 1). */
  iterations?: number;
}

/** Rows: one per timed iteration, with the generation / scoring / training split in seconds. */
export async function benchPPO(opts: PPOBenchOptions): Promise<Row[]> {
  const { gpu } = opts;
  const Q = opts.questions ?? 16, K = opts.samples ?? 4, maxNew = opts.maxNewTokens ?? 160;
  const files = buildTinyTokenizer();
  const tokenizer = new Tokenizer(files.tokenizerJson, files.tokenizerConfig);
  const cfg = tinyPresetConfig();
  const policy = randomModel(gpu, cfg, { seed: 1 }), ref = randomModel(gpu, cfg, { seed: 1 });
  const prm = createPrm(randomModel(gpu, cfg, { seed: 2 }), { seed: 2 });
  const scorer = new RewardScorer({ prm: rewardModel(prm, tokenizer) });
  const critic = new Critic(createPrm(randomModel(gpu, cfg, { seed: 1 }), { std: 0 }));
  const actor = createActor(policy);
  const rows: Row[] = [];
  try {
    const problems = builtinProblems(Q * (1 + (opts.iterations ?? 1)), { seed: 0, split: "train" });
    for (let it = 0; it <= (opts.iterations ?? 1); it++) {
      const r = await collectRollouts(
        { policy, ref, tokenizer, critic, scorer },
        problems.slice(it * Q, (it + 1) * Q),
        {
          samplesPerQuestion: K,
          maxNewTokens: maxNew,
          seed: it,
        },
      );
      const t0 = performance.now();
      await ppoUpdate(actor, critic, r.experience, {
        epochs: opts.epochs ?? 2,
        miniBatchSize: opts.miniBatchSize ?? 32,
        lr: () => 1e-4,
        criticLr: () => 1e-4,
        seed: it,
      });
      const training = (performance.now() - t0) / 1000;
      if (it === 0) continue; // warm-up: pipeline compilation
      const e = r.experience, tokens = e.responseLength.reduce((a, b) => a + b, 0);
      const total = r.timing.generation + r.timing.scoring + training;
      rows.push({
        setting: `tiny, ${Q}×${K} rollouts, ≤${maxNew} tokens`,
        iteration_s: total,
        generation_s: r.timing.generation,
        scoring_s: r.timing.scoring,
        training_s: training,
        "gen tok/s": tokens / r.timing.generation,
        "generation %": (100 * r.timing.generation) / total,
        "scoring %": (100 * r.timing.scoring) / total,
        "training %": (100 * training) / total,
      });
    }
  } finally {
    releaseActor(actor);
    critic.release();
    scorer.release();
    [policy, ref].forEach(releaseModel);
  }
  return rows;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      questions: { type: "string" },
      samples: { type: "string" },
      "max-new-tokens": { type: "string" },
    },
    strict: true,
  });
  const gpu = await Gpu.create();
  const t0 = performance.now();
  const rows = await benchPPO({
    gpu,
    questions: values.questions ? Number(values.questions) : undefined,
    samples: values.samples ? Number(values.samples) : undefined,
    maxNewTokens: values["max-new-tokens"] ? Number(values["max-new-tokens"]) : undefined,
  });
  console.log(`adapter: ${gpu.adapterName}${gpu.isCpu ? " (CPU)" : ""}`);
  console.log(
    formatTable(`PPO iteration (tiny preset) — ${((performance.now() - t0) / 1000).toFixed(1)} s`, rows),
  );
  gpu.destroy();
}
