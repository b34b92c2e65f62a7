/**
 * Model benchmark: prefill tokens/s and KV-cache decode tokens/s (batch 1 and 32) for a ~10M-parameter
 * Qwen2-shaped model with random weights, and the GPU→CPU readbacks per generated sequence.
 *
 * Prefill: one forward over B×T tokens including the LM head, timed from submit until the work is done (median of
 * `reps`). Decode: `generate` with no stop tokens, so every sequence runs `newTokens` steps; tokens/s counts the
 * new tokens of all rows over the whole call (prompt pass included).
 *
 * @module
 */
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { qwen2Config } from "../core/model/config.ts";
import { generate } from "../core/model/generate.ts";
import { randomModel, releaseModel } from "../core/model/model.ts";
import { paramShapes } from "../core/model/params.ts";
import { lmHead, trunkForward } from "../core/model/qwen2.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { median, type Row } from "./table.ts";

/** The ~10M-parameter Qwen2-shaped config used by the benchmarks (C 384, 6 layers, GQA 6/2, V 4096). */
export function benchModelConfig() {
  return qwen2Config({
    hiddenSize: 384,
    intermediateSize: 1024,
    numHiddenLayers: 6,
    numAttentionHeads: 6,
    numKeyValueHeads: 2,
    vocabSize: 4096,
    maxPositionEmbeddings: 2048,
    tieWordEmbeddings: true,
  });
}

/** Runs the model benchmark; returns one row per case. */
export async function benchModel(
  opts: { gpu?: Gpu; reps?: number; newTokens?: number } = {},
): Promise<Row[]> {
  const gpu = opts.gpu ?? await Gpu.create();
  const cfg = benchModelConfig();
  const nParams = paramShapes(cfg).reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1), 0);
  const model = randomModel(gpu, cfg, { seed: 1, std: 0.05 });
  const reps = opts.reps ?? (gpu.isCpu ? 2 : 10);
  const newTokens = opts.newTokens ?? (gpu.isCpu ? 32 : 128);
  const rows: Row[] = [];
  const params = `${(nParams / 1e6).toFixed(1)}M`;
  try {
    for (const [B, T] of [[1, 256], [8, 128]]) {
      const ids = upload(gpu, Int32Array.from({ length: B * T }, (_, i) => (i * 7919) % cfg.vocabSize), {
        shape: [B, T],
      });
      const pos = upload(gpu, Int32Array.from({ length: B * T }, (_, i) => i % T), { shape: [B, T] });
      const times: number[] = [];
      for (let r = 0; r <= reps; r++) {
        const batch = new Batch(gpu, "bench.prefill");
        const { hidden } = trunkForward(batch, cfg, model.params, { ids, positions: pos });
        const logits = new Tensor(gpu, [B * T, cfg.vocabSize], "f32", "bench.logits");
        lmHead(batch, logits, hidden, model.params);
        hidden.release();
        logits.release();
        const t0 = performance.now();
        await batch.submit();
        await gpu.device.queue.onSubmittedWorkDone();
        if (r > 0) times.push(performance.now() - t0); // r = 0 compiles the pipelines
      }
      ids.release();
      pos.release();
      const ms = median(times);
      rows.push({
        case: `prefill B=${B} T=${T}`,
        params,
        "tokens/s": (B * T) / (ms / 1000),
        ms,
        readbacks: 0,
      });
    }
    const prompt = Array.from({ length: 16 }, (_, i) => (i * 31 + 7) % cfg.vocabSize);
    await generate(model, [prompt], { maxNewTokens: 2, stopIds: [] }); // warm-up compiles the decode kernels
    for (const B of [1, 32]) {
      const t0 = performance.now();
      const out = await generate(model, Array.from({ length: B }, () => prompt), {
        maxNewTokens: newTokens,
        temperature: 1,
        stopIds: [],
      });
      const ms = performance.now() - t0;
      rows.push({
        case: `decode B=${B} (${newTokens} new)`,
        params,
        "tokens/s": (B * newTokens) / (ms / 1000),
        ms,
        readbacks: out.readbacks / B,
      });
    }
  } finally {
    releaseModel(model);
    if (!opts.gpu) gpu.destroy();
  }
  return rows;
}

if (import.meta.main) {
  const { formatTable } = await import("./table.ts");
  const gpu = await Gpu.create();
  console.log(
    formatTable(`model on ${gpu.adapterName} (readbacks = per sequence)`, await benchModel({ gpu })),
  );
  gpu.destroy();
}
