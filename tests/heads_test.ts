// Classification heads (core/model/heads.ts) and the classification layouts of core/model/params.ts: HF tensor
// names and shapes, save/load round trips, logits equal to the trunk's hidden states dotted with score.weight on the
// host, and head + trunk gradients checked against host math (head) and a directional finite difference (trunk).
import assert from "node:assert/strict";
import fc from "fast-check";
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import { type Qwen2Config, qwen2Config } from "../core/model/config.ts";
import { headBackward, headConfig, headForward, withScoreHead } from "../core/model/heads.ts";
import {
  loadModel,
  packSequences,
  type Qwen2Model,
  randomModel,
  releaseModel,
  saveModel,
} from "../core/model/model.ts";
import { paramShapes, readParams } from "../core/model/params.ts";
import { trunkForward } from "../core/model/qwen2.ts";
import { createGrads } from "../core/model/qwen2_backward.ts";
import { assertClose } from "./util/close.ts";

const gpu = await Gpu.create();

function tinyConfig(arch: Qwen2Config["architecture"], over: Partial<Qwen2Config> = {}): Qwen2Config {
  return qwen2Config({
    architecture: arch,
    hiddenSize: 24,
    intermediateSize: 40,
    numHiddenLayers: 2,
    numAttentionHeads: 3,
    numKeyValueHeads: 1,
    vocabSize: 37,
    numLabels: 1,
    maxPositionEmbeddings: 64,
    ...over,
  });
}

/** Final hidden states (B·T, C) of a right-padded batch, read back. */
async function hiddenOf(model: Qwen2Model, seqs: number[][]): Promise<{ h: Float32Array; T: number }> {
  const pk = packSequences(seqs);
  const inputs = {
    ids: upload(gpu, pk.ids, { shape: [pk.B, pk.T] }),
    positions: upload(gpu, pk.positions, { shape: [pk.B, pk.T] }),
    mask: upload(gpu, pk.mask, { shape: [pk.B, pk.T] }),
  };
  const batch = new Batch(gpu, "test.hidden");
  const { hidden } = trunkForward(batch, model.config, model.params, inputs);
  const read = batch.read(hidden);
  await batch.submit();
  for (const t of [hidden, inputs.ids, inputs.positions, inputs.mask]) t.release();
  return { h: (await read) as Float32Array, T: pk.T };
}

Deno.test("paramShapes: classification heads have score.weight (L, C), token classification a bias, no lm_head", () => {
  const tok = new Map(paramShapes(tinyConfig("Qwen2ForTokenClassification", { numLabels: 3 })));
  assert.deepEqual(tok.get("score.weight"), [3, 24]);
  assert.deepEqual(tok.get("score.bias"), [3]);
  assert.ok(!tok.has("lm_head.weight"));
  const seq = new Map(
    paramShapes(tinyConfig("Qwen2ForSequenceClassification", { tieWordEmbeddings: false })),
  );
  assert.deepEqual(seq.get("score.weight"), [1, 24]);
  assert.ok(!seq.has("score.bias") && !seq.has("lm_head.weight"));
  const lm = new Map(paramShapes(tinyConfig("Qwen2ForCausalLM")));
  assert.ok(lm.has("lm_head.weight") && !lm.has("score.weight"));
});

Deno.test("a classification model saves and reloads in HF layout; its missing LM head is a clear error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "heads_test_" });
  const model = randomModel(gpu, tinyConfig("Qwen2ForTokenClassification"), { seed: 3, std: 0.3 });
  try {
    assert.throws(() => model.params.lmHead, /Qwen2ForTokenClassification model has no LM head/);
    await saveModel(model, dir);
    const json = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    assert.deepEqual(json.architectures, ["Qwen2ForTokenClassification"]);
    assert.deepEqual(json.id2label, { "0": "LABEL_0" });
    const loaded = await loadModel(dir, { gpu });
    const [a, b] = [await readParams(model.params), await readParams(loaded.params)];
    assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
    for (const [k, v] of a) assert.deepEqual(b.get(k), v, k);
    releaseModel(loaded);
  } finally {
    releaseModel(model);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("withScoreHead keeps the trunk of a causal LM, drops lm_head and adds a seeded head", async () => {
  const lm = randomModel(gpu, tinyConfig("Qwen2ForCausalLM", { tieWordEmbeddings: false }), { seed: 1 });
  const before = await readParams(lm.params);
  const rm = withScoreHead(lm, "Qwen2ForSequenceClassification", { seed: 9, extraConfig: { note: "x" } });
  try {
    assert.equal(rm.config.architecture, "Qwen2ForSequenceClassification");
    assert.equal(rm.config.raw.note, "x");
    const after = await readParams(rm.params);
    assert.ok(!after.has("lm_head.weight") && !after.has("score.bias"));
    for (const [k, v] of after) if (!k.startsWith("score")) assert.deepEqual(v, before.get(k), k);
    const w = after.get("score.weight")!;
    const sd = Math.sqrt(w.reduce((a, x) => a + x * x, 0) / w.length);
    assert.ok(sd > 0.01 && sd < 0.04, `head std ${sd}`);
    const cfg = headConfig(rm.config, "Qwen2ForTokenClassification", { numLabels: 2 });
    assert.equal(cfg.numLabels, 2);
    assert.equal(cfg.raw.note, "x");
  } finally {
    releaseModel(rm);
  }
});

Deno.test("headForward logits equal the trunk's hidden rows dotted with score.weight (+ bias) on the host", async () => {
  for (
    const [arch, L] of [["Qwen2ForTokenClassification", 3], ["Qwen2ForSequenceClassification", 1]] as const
  ) {
    const model = randomModel(gpu, tinyConfig(arch, { numLabels: L }), { seed: 7, std: 0.3 });
    if (model.params.scoreBias) {
      gpu.device.queue.writeBuffer(model.params.scoreBias.buffer, 0, new Float32Array([0.5, -0.25, 1]));
    }
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.array(fc.integer({ min: 0, max: 36 }), { minLength: 1, maxLength: 13 }), {
            minLength: 1,
            maxLength: 4,
          }),
          fc.nat(),
          async (seqs, salt) => {
            const reads = seqs.map((s, b) => [...new Set([s.length - 1, (salt + b) % s.length, 0])]);
            const { logits } = await headForward(model, seqs, { reads });
            const { h, T } = await hiddenOf(model, seqs);
            const p = await readParams(model.params);
            const w = p.get("score.weight")!, bias = p.get("score.bias");
            const C = model.config.hiddenSize;
            seqs.forEach((_, b) => {
              const want = reads[b].flatMap((t) =>
                Array.from({ length: L }, (_, l) => {
                  let z = bias ? bias[l] : 0;
                  for (let c = 0; c < C; c++) z += h[(b * T + t) * C + c] * w[l * C + c];
                  return z;
                })
              );
              assertClose(logits[b], want, { atol: 1e-5, rtol: 1e-4 }, `${arch} sequence ${b}`);
            });
          },
        ),
        { seed: 42, numRuns: 8 },
      );
    } finally {
      releaseModel(model);
    }
  }
});

Deno.test("headBackward: head gradients equal host math, trunk gradients pass a directional finite difference", async () => {
  const model = randomModel(gpu, tinyConfig("Qwen2ForTokenClassification", { numLabels: 2 }), {
    seed: 11,
    std: 0.2,
  });
  const grads = createGrads(model.params);
  try {
    const seqs = [[3, 1, 4, 1, 5, 9, 2], [6, 5, 3], [5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6]];
    const reads = [[2, 6], [0, 2], [1, 4, 10]];
    const c = Float32Array.from({ length: 7 * 2 }, (_, i) => Math.sin(1.7 * i + 0.3)); // loss = Σ c ⊙ logits
    const loss = async () => {
      const { logits } = await headForward(model, seqs, { reads });
      let s = 0, r = 0;
      for (const row of logits) for (const z of row) s += c[r++] * z;
      return s;
    };
    const { state } = await headForward(model, seqs, { reads, save: true });
    await headBackward(state!, grads, c);
    const g = await readParams({ ...model.params, byName: grads });
    // Head: dW = Σ_r c_r ⊗ g_r, db = Σ_r c_r over the gathered hidden rows.
    const { h, T } = await hiddenOf(model, seqs);
    const C = model.config.hiddenSize;
    const dW = new Float64Array(2 * C), db = new Float64Array(2);
    let r = 0;
    reads.forEach((ts, b) =>
      ts.forEach((t) => {
        for (let l = 0; l < 2; l++, r++) {
          db[l] += c[r];
          for (let k = 0; k < C; k++) dW[l * C + k] += c[r] * h[(b * T + t) * C + k];
        }
      })
    );
    assertClose(g.get("score.weight")!, dW, { atol: 1e-5, rtol: 1e-4 }, "dW");
    assertClose(g.get("score.bias")!, db, { atol: 1e-6, rtol: 1e-5 }, "db");
    // Trunk: d/dε loss(θ + ε·u) at 0 equals ‖g‖ for u = g/‖g‖ (central difference in f32, ε = 1e-3).
    const p = await readParams(model.params);
    let norm2 = 0;
    for (const v of g.values()) for (const x of v) norm2 += x * x;
    const norm = Math.sqrt(norm2), eps = 1e-3;
    const shift = (e: number) => {
      for (const [name, t] of model.params.byName) {
        const v = p.get(name)!, d = g.get(name)!;
        gpu.device.queue.writeBuffer(t.buffer, 0, v.map((x, i) => x + (e * d[i]) / norm));
      }
    };
    shift(eps);
    const up = await loss();
    shift(-eps);
    const down = await loss();
    shift(0);
    const fd = (up - down) / (2 * eps);
    assert.ok(Math.abs(fd - norm) <= 1e-4 * norm, `directional derivative ${fd}, ‖g‖ = ${norm}`);
    // The trunk's share must matter: gradients reach the embedding and the first layer.
    const emb = g.get("model.embed_tokens.weight")!;
    assert.ok(
      emb.some((x) => x !== 0) && g.get("model.layers.0.self_attn.q_proj.weight")!.some((x) => x !== 0),
    );
  } finally {
    for (const t of grads.values()) t.release();
    releaseModel(model);
  }
});
