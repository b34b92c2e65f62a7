/**
 * The small model most GPU tests run: a Qwen2 config over the tiny tokenizer's 512 ids, fast on lavapipe.
 *
 * @module
 */
import { buildTinyTokenizer } from "../../core/data/tiny_tokenizer.ts";
import { type Qwen2Config, qwen2Config, type Qwen2ConfigInit } from "../../core/model/config.ts";
import { Tokenizer } from "../../core/tokenizer/tokenizer.ts";

/** The built-in task's tiny tokenizer (ids: 0 pad, 1 `<|im_start|>`, 2 `<|im_end|>`). */
export function tinyTokenizer(): Tokenizer {
  const files = buildTinyTokenizer();
  return new Tokenizer(files.tokenizerJson, files.tokenizerConfig);
}

/**
 * C 32, one layer, 2 query heads sharing 1 KV head, SwiGLU 64, V 512, 256 positions, tied embeddings, eos 2
 * (`<|im_end|>`); `overrides` replace any field.
 */
export function miniConfig(overrides: Partial<Qwen2ConfigInit> = {}): Qwen2Config {
  return qwen2Config({
    hiddenSize: 32,
    intermediateSize: 64,
    numHiddenLayers: 1,
    numAttentionHeads: 2,
    numKeyValueHeads: 1,
    vocabSize: 512,
    maxPositionEmbeddings: 256,
    tieWordEmbeddings: true,
    eosTokenIds: [2],
    ...overrides,
  });
}
