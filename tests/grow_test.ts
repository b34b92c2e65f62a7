// Growing a trunk (core/model/grow.ts): appended layers leave every output bitwise unchanged until trained
// (zero output projections), are initialised as documented, survive a save/load round trip, and receive
// gradients (through their output projections first: with o_proj = down_proj = 0 nothing flows further back).
import assert from "node:assert/strict";
import { Gpu } from "../core/gpu/device.ts";
import { appendLayers } from "../core/model/grow.ts";
import { headBackward, headForward } from "../core/model/heads.ts";
import { loadModel, randomModel, releaseModel, saveModel } from "../core/model/model.ts";
import { readParams } from "../core/model/params.ts";
import { createGrads } from "../core/model/qwen2_backward.ts";
import { miniConfig } from "./util/mini.ts";

const gpu = await Gpu.create();
const config = miniConfig({ architecture: "Qwen2ForTokenClassification", numHiddenLayers: 2, numLabels: 1 });
const C = config.hiddenSize;
const seqs = [[3, 1, 4, 1, 5, 9, 2], [6, 5, 3], [5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6]];
const reads = [[2, 6], [0, 2], [1, 4, 10]];

Deno.test("appendLayers: the grown model scores bitwise like the original; new layers as documented", async () => {
  const model = randomModel(gpu, config, { seed: 5, std: 0.3 });
  const before = await readParams(model.params);
  const { logits: want } = await headForward(model, seqs, { reads });
  const grown = appendLayers(model, 2, { seed: 1 });
  try {
    assert.equal(grown.config.numHiddenLayers, 4);
    assert.equal(grown.config.raw.added_layers, 2);
    const { logits: got } = await headForward(grown, seqs, { reads });
    got.forEach((row, b) => assert.deepEqual(row, want[b], `sequence ${b}`));
    const p = await readParams(grown.params);
    for (const [k, v] of before) assert.deepEqual(p.get(k), v, k);
    for (const l of [2, 3]) {
      const at = (s: string) => p.get(`model.layers.${l}.${s}`)!;
      for (const s of ["input_layernorm.weight", "post_attention_layernorm.weight"]) {
        assert.ok(at(s).every((x) => x === 1), s);
      }
      for (const s of ["self_attn.o_proj.weight", "mlp.down_proj.weight", "self_attn.q_proj.bias"]) {
        assert.ok(at(s).every((x) => x === 0), s);
      }
      for (const s of ["self_attn.q_proj.weight", "mlp.up_proj.weight"]) {
        const v = at(s), sd = Math.sqrt(v.reduce((a, x) => a + x * x, 0) / v.length);
        assert.ok(Math.abs(sd - 1 / Math.sqrt(C)) < 0.25 / Math.sqrt(C), `${s} std ${sd}`);
      }
    }
    // Different weights per layer and per matrix (each draws its own stream).
    assert.notDeepEqual(
      p.get("model.layers.2.self_attn.q_proj.weight"),
      p.get("model.layers.3.self_attn.q_proj.weight"),
    );
    assert.notDeepEqual(
      p.get("model.layers.2.mlp.gate_proj.weight")!.slice(0, C),
      p.get("model.layers.2.mlp.up_proj.weight")!.slice(0, C),
    );
  } finally {
    releaseModel(grown);
  }
});

Deno.test("appendLayers: counts accumulate, 0 is the identity, bad counts are errors; save/load keeps the depth", async () => {
  const model = randomModel(gpu, config, { seed: 6, std: 0.3 });
  assert.equal(appendLayers(model, 0), model);
  assert.throws(() => appendLayers(model, -1), /non-negative integer, got "-1"/);
  assert.throws(() => appendLayers(model, 1.5), /non-negative integer, got "1.5"/);
  const grown = appendLayers(appendLayers(model, 1, { seed: 2 }), 2, { seed: 3 });
  const dir = await Deno.makeTempDir({ prefix: "grow_test_" });
  try {
    assert.equal(grown.config.numHiddenLayers, 5);
    assert.equal(grown.config.raw.added_layers, 3);
    await saveModel(grown, dir);
    const json = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    assert.equal(json.num_hidden_layers, 5);
    assert.equal(json.added_layers, 3);
    const loaded = await loadModel(dir, { gpu });
    try {
      const [a, b] = [await readParams(grown.params), await readParams(loaded.params)];
      assert.equal(a.size, b.size);
      for (const [k, v] of a) assert.deepEqual(b.get(k), v, k);
    } finally {
      releaseModel(loaded);
    }
  } finally {
    releaseModel(grown);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("appendLayers: gradients reach the new layers' output projections (and stop there at initialisation)", async () => {
  const grown = appendLayers(randomModel(gpu, config, { seed: 7, std: 0.3 }), 1, { seed: 4 });
  const grads = createGrads(grown.params);
  try {
    const { state, logits } = await headForward(grown, seqs, { reads, save: true });
    const dz = Float32Array.from(
      { length: logits.reduce((a, r) => a + r.length, 0) },
      (_, i) => Math.cos(i + 0.5),
    );
    await headBackward(state!, grads, dz);
    const g = await readParams({ ...grown.params, byName: grads });
    const l2 = (k: string) => Math.hypot(...g.get(k)!);
    assert.ok(l2("model.layers.2.self_attn.o_proj.weight") > 1e-4, "o_proj gradient");
    assert.ok(l2("model.layers.2.mlp.down_proj.weight") > 1e-4, "down_proj gradient");
    assert.equal(l2("model.layers.2.self_attn.q_proj.weight"), 0, "q_proj gradient behind a zero o_proj");
    assert.equal(l2("model.layers.2.mlp.up_proj.weight"), 0, "up_proj gradient behind a zero down_proj");
    assert.ok(l2("model.layers.1.self_attn.q_proj.weight") > 1e-6, "old layers still get gradients");
  } finally {
    releaseModel(grown);
  }
});
