/**
 * Training benchmark: tokens/s of one full training step (forward + backward through the LM head and the trunk,
 * gradient clipping and AdamW) for the tiny preset and the ~10M-parameter bench model, random weights, on a
 * batch of B sequences of T tokens with the last 60% of each as completion targets.
 *
 * Each row times `reps` steps after one warm-up step (pipeline compiles) and reports the median step, its
 * forward+backward and optimiser parts, and tokens/s = B·T / median step time.
 *
 * @module
 */
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import type { Qwen2Config } from "../core/model/config.ts";
import { randomModel, releaseModel } from "../core/model/model.ts";
import { paramShapes } from "../core/model/params.ts";
import { createGrads } from "../core/model/qwen2_backward.ts";
import { AdamW, zeroGrads } from "../core/optim/adamw.ts";
import { GradClip } from "../core/optim/clip.ts";
import { tinyPresetConfig } from "../core/data/tiny_tokenizer.ts";
import { type LMExample, lmLossAndGrads } from "../core/train/lm_loss.ts";
import { benchModelConfig } from "./model_bench.ts";
import { median, type Row } from "./table.ts";

/** B sequences of T deterministic pseudo-random tokens, the last 60% of each a target. */
function examples(B: number, T: number, vocab: number): LMExample[] {
  return Array.from({ length: B }, (_, b) => ({
    ids: Array.from({ length: T }, (_, t) => (b * 7919 + t * 104729) % vocab),
    completionMask: Array.from({ length: T }, (_, t) => (t >= Math.floor(0.4 * T) ? 1 : 0)),
  }));
}

async function benchStep(gpu: Gpu, name: string, cfg: Qwen2Config, B: number, T: number, reps: number) {
  const nParams = paramShapes(cfg).reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1), 0);
  const model = randomModel(gpu, cfg, { seed: 1, std: 0.05 });
  const grads = createGrads(model.params);
  const opt = new AdamW(gpu, model.params.byName, { weightDecay: 0.01 });
  const clip = new GradClip(gpu, { maxNorm: 1 });
  const data = examples(B, T, cfg.vocabSize);
  const total: number[] = [], fwdBwd: number[] = [], optim: number[] = [];
  try {
    for (let r = 0; r <= reps; r++) {
      const t0 = performance.now();
      await lmLossAndGrads(model, grads, data);
      const t1 = performance.now();
      const batch = new Batch(gpu, "bench.train.step");
      opt.step(batch, grads, { lr: 1e-4, clip });
      const stats = clip.read(batch);
      zeroGrads(batch, grads);
      await batch.submit();
      await stats;
      const t2 = performance.now();
      if (r === 0) continue; // warm-up: pipeline compiles
      total.push(t2 - t0), fwdBwd.push(t1 - t0), optim.push(t2 - t1);
    }
  } finally {
    for (const g of grads.values()) g.release();
    releaseModel(model);
  }
  const step = median(total);
  return {
    model: `${name} (${(nParams / 1e6).toFixed(2)}M)`,
    "B×T": `${B}×${T}`,
    "step ms": step,
    "fwd+bwd ms": median(fwdBwd),
    "AdamW ms": median(optim),
    "tokens/s": (B * T) / (step / 1000),
  };
}

/** Runs the training benchmark; returns one row per case. */
export async function benchTrain(opts: { gpu?: Gpu; reps?: number } = {}): Promise<Row[]> {
  const gpu = opts.gpu ?? await Gpu.create();
  const reps = opts.reps ?? (gpu.isCpu ? 3 : 10);
  const rows: Row[] = [];
  rows.push(await benchStep(gpu, "tiny preset", tinyPresetConfig(), 8, 128, reps));
  rows.push(await benchStep(gpu, "tiny preset", tinyPresetConfig(), 32, 128, reps));
  rows.push(await benchStep(gpu, "bench model", benchModelConfig(), gpu.isCpu ? 2 : 8, 128, reps));
  return rows;
}

if (import.meta.main) {
  const { formatTable } = await import("./table.ts");
  console.log(formatTable("training step (forward + backward + AdamW)", await benchTrain()));
}
