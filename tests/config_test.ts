// Tests for core/model/config.ts: HF Qwen2 config.json parsing, validation errors, and round trips.
import assert from "node:assert/strict";
import fc from "fast-check";
import { configToJson, loadConfig, parseQwen2Config, qwen2Config } from "../core/model/config.ts";

/** config.json of Qwen/Qwen2.5-0.5B-Instruct (as published on the hub). */
const QWEN25_05B = {
  architectures: ["Qwen2ForCausalLM"],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  hidden_act: "silu",
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 21,
  model_type: "qwen2",
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-06,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.43.1",
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

Deno.test("config: parses Qwen2.5-0.5B-Instruct config.json", () => {
  const c = parseQwen2Config(QWEN25_05B, "q/config.json");
  assert.equal(c.architecture, "Qwen2ForCausalLM");
  assert.equal(c.hiddenSize, 896);
  assert.equal(c.intermediateSize, 4864);
  assert.equal(c.numHiddenLayers, 24);
  assert.equal(c.numAttentionHeads, 14);
  assert.equal(c.numKeyValueHeads, 2);
  assert.equal(c.headDim, 64);
  assert.equal(c.ropeTheta, 1e6);
  assert.equal(c.rmsNormEps, 1e-6);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(c.vocabSize, 151936);
  assert.equal(c.maxPositionEmbeddings, 32768);
  assert.equal(c.bosTokenId, 151643);
  assert.deepEqual(c.eosTokenIds, [151645]);
  assert.equal(c.padTokenId, null);
  assert.equal(c.torchDtype, "bfloat16");
  assert.equal(c.raw.max_window_layers, 21);
});

Deno.test("config: HF defaults for optional fields and classification heads", () => {
  const minimal = {
    model_type: "qwen2",
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    vocab_size: 100,
  };
  const c = parseQwen2Config(minimal, "m.json");
  assert.equal(c.architecture, "Qwen2ForCausalLM");
  assert.equal(c.numKeyValueHeads, 4);
  assert.equal(c.ropeTheta, 10000);
  assert.equal(c.rmsNormEps, 1e-6);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.numLabels, 2);
  const tok = parseQwen2Config(
    {
      ...minimal,
      architectures: ["Qwen2ForTokenClassification"],
      id2label: { 0: "bad", 1: "good", 2: "neutral" },
    },
    "t.json",
  );
  assert.equal(tok.architecture, "Qwen2ForTokenClassification");
  assert.equal(tok.numLabels, 3);
  const seq = parseQwen2Config(
    { ...minimal, architectures: ["Qwen2ForSequenceClassification"], num_labels: 1, pad_token_id: 5 },
    "s.json",
  );
  assert.equal(seq.numLabels, 1);
  assert.equal(seq.padTokenId, 5);
  const v5 = parseQwen2Config(
    { ...minimal, rope_parameters: { rope_type: "default", rope_theta: 5e5 } },
    "v5.json",
  );
  assert.equal(v5.ropeTheta, 5e5);
  assert.deepEqual(parseQwen2Config({ ...minimal, eos_token_id: [1, 2] }, "e.json").eosTokenIds, [1, 2]);
});

Deno.test("config: rejects unsupported options naming file, field, expected and got", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ use_sliding_window: true }, /"use_sliding_window" must be false .*got true/],
    [{ hidden_act: "gelu" }, /"hidden_act" must be "silu", got "gelu"/],
    [{ hidden_size: 900 }, /"hidden_size" \(900\) must be divisible by "num_attention_heads" \(14\)/],
    [
      { num_key_value_heads: 3 },
      /"num_attention_heads" \(14\) must be divisible by "num_key_value_heads" \(3\)/,
    ],
    [{ hidden_size: 42, num_attention_heads: 14, num_key_value_heads: 2 }, /must be even for RoPE, got 3/],
    [{ rope_scaling: { type: "yarn", factor: 4 } }, /"rope_scaling" must be null .*got \{"type":"yarn"/],
    [
      { rope_parameters: { rope_type: "linear", factor: 2 } },
      /"rope_parameters.rope_type" must be "default"/,
    ],
    [{ model_type: "qwen3" }, /"model_type" must be "qwen2", got "qwen3"/],
    [
      { architectures: ["Qwen2ForProcessRewardModel"] },
      /"architectures" must be one of .*got \["Qwen2ForProcessRewardModel"\]/,
    ],
    [{ architectures: [] }, /"architectures" must be one of/],
    [{ hidden_size: undefined }, /required field "hidden_size" is missing/],
    [{ vocab_size: undefined }, /required field "vocab_size" is missing/],
    [{ num_hidden_layers: "24" }, /"num_hidden_layers" must be a positive integer, got "24"/],
    [{ intermediate_size: 4864.5 }, /"intermediate_size" must be a positive integer, got 4864.5/],
    [{ rms_norm_eps: -1 }, /"rms_norm_eps" must be a positive number, got -1/],
    [{ tie_word_embeddings: "yes" }, /"tie_word_embeddings" must be a boolean, got "yes"/],
    [{ attention_dropout: 0.1 }, /"attention_dropout" must be 0, got 0.1/],
    [{ head_dim: 128 }, /"head_dim" must equal hidden_size \/ num_attention_heads = 64, got 128/],
    [{ layer_types: ["sliding_attention"] }, /"layer_types" must list only "full_attention"/],
    [{ eos_token_id: [1, null] }, /"eos_token_id" must be a non-negative integer or a list of them/],
    [{ bos_token_id: -3 }, /"bos_token_id" must be a non-negative integer or null, got -3/],
  ];
  for (const [patch, re] of cases) {
    const json: Record<string, unknown> = { ...QWEN25_05B, ...patch };
    for (const [k, v] of Object.entries(patch)) if (v === undefined) delete json[k];
    assert.throws(() => parseQwen2Config(json, "runs/x/config.json"), (e: Error) => {
      assert.match(e.message, /^Cannot load config "runs\/x\/config.json": /);
      assert.match(e.message, re);
      return true;
    }, `patch ${JSON.stringify(patch)}`);
  }
  assert.throws(() => parseQwen2Config([1], "a.json"), /expected a JSON object, got an array/);
});

Deno.test("config: loadConfig reads a directory and reports missing or invalid files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      loadConfig(dir),
      new RegExp(`Cannot load config "${dir}/config.json": file not found`),
    );
    await Deno.writeTextFile(`${dir}/config.json`, "{ not json");
    await assert.rejects(loadConfig(dir), /config.json": invalid JSON/);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(QWEN25_05B));
    assert.equal((await loadConfig(dir)).hiddenSize, 896);
    assert.equal((await loadConfig(`${dir}/config.json`)).numKeyValueHeads, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: configToJson writes HF fields and round-trips", () => {
  const c = parseQwen2Config(QWEN25_05B, "q.json");
  const j = configToJson(c, { torchDtype: "float32" });
  assert.equal(j.torch_dtype, "float32");
  assert.equal(j.max_window_layers, 21, "unknown fields are preserved");
  const rest = { ...QWEN25_05B, torch_dtype: "float32" } as Record<string, unknown>;
  for (const [k, v] of Object.entries(rest)) assert.deepEqual(j[k], v, `field ${k}`);
  assert.equal(j.rope_scaling, null);
  assert.equal("id2label" in j, false, "causal LM with default labels writes no id2label");
  const cls = qwen2Config({
    architecture: "Qwen2ForTokenClassification",
    hiddenSize: 16,
    intermediateSize: 24,
    numHiddenLayers: 1,
    numAttentionHeads: 2,
    numKeyValueHeads: 1,
    vocabSize: 50,
    numLabels: 2,
  });
  const cj = configToJson(cls);
  assert.deepEqual(cj.id2label, { 0: "LABEL_0", 1: "LABEL_1" });
  assert.deepEqual(cj.label2id, { LABEL_0: 0, LABEL_1: 1 });
  assert.equal(parseQwen2Config(cj, "c.json").numLabels, 2);
});

Deno.test("config: property — qwen2Config → configToJson → parse is the identity on valid shapes", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8 }), // kv heads
      fc.integer({ min: 1, max: 4 }), // query heads per kv head
      fc.integer({ min: 1, max: 32 }), // head dim / 2
      fc.integer({ min: 1, max: 1000 }),
      fc.integer({ min: 1, max: 50_000 }),
      fc.boolean(),
      (kv, group, halfHd, inter, vocab, tie) => {
        const nh = kv * group;
        const c = qwen2Config({
          hiddenSize: nh * halfHd * 2,
          intermediateSize: inter,
          numHiddenLayers: 3,
          numAttentionHeads: nh,
          numKeyValueHeads: kv,
          vocabSize: vocab,
          tieWordEmbeddings: tie,
          eosTokenIds: [vocab - 1],
        });
        assert.equal(c.headDim, halfHd * 2);
        const again = parseQwen2Config(JSON.parse(JSON.stringify(configToJson(c))), "rt.json");
        assert.deepEqual({ ...again, raw: null }, { ...c, raw: null });
      },
    ),
    { seed: 42, numRuns: 200 },
  );
});
