// Tests for core/data/tiny_tokenizer.ts: the tiny preset tokenizer loads through the project's Tokenizer
// (@huggingface/tokenizers), matches the Qwen2 pipeline (../shared/tokenizers/qwen/), round-trips every
// generated problem, solution and corruption exactly, keeps digits as single tokens, gives exact offsets, and
// the tiny preset config has the documented size.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  buildTinyTokenizer,
  preTokenize,
  TINY_SPECIAL_TOKENS,
  TINY_VOCAB_SIZE,
  tinyPresetConfig,
  trainBpeMerges,
  writeTinyTokenizer,
} from "../core/data/tiny_tokenizer.ts";
import { generateProblems } from "../core/data/arithmetic.ts";
import { CORRUPTION_KINDS, corruptSolution } from "../core/data/corrupt.ts";
import { Rng } from "../core/data/rng.ts";
import { loadTokenizer, Tokenizer } from "../core/tokenizer/tokenizer.ts";
import { applyChatTemplate, applyChatTemplateIds } from "../core/tokenizer/chat_template.ts";
import { splitSteps, stepEndTokens } from "../core/rewards/steps.ts";
import { configToJson, parseQwen2Config } from "../core/model/config.ts";

const QWEN_JSON = new URL("../../shared/tokenizers/qwen/tokenizer.json", import.meta.url).pathname;

const files = buildTinyTokenizer();
const tok = new Tokenizer(files.tokenizerJson, files.tokenizerConfig);

/** Texts the tokenizer must round-trip: questions, reference solutions and corrupted solutions. */
function corpus(n: number, seed: string): string[] {
  const rng = new Rng(seed);
  return generateProblems(n, { seed, split: "test" }).flatMap((p) => [
    p.question,
    p.answer,
    ...CORRUPTION_KINDS.map((kind) => corruptSolution(p, rng, { kind })?.solution ?? ""),
  ]);
}

Deno.test("tiny tokenizer: deterministic, 512 ids, specials first, Qwen2-style files", async () => {
  assert.equal(JSON.stringify(buildTinyTokenizer()), JSON.stringify(files));
  assert.equal(tok.vocabSize, TINY_VOCAB_SIZE);
  const vocab = tok.hf.get_vocab(true);
  assert.equal(vocab.size, TINY_VOCAB_SIZE, "ids are unique and dense");
  assert.deepEqual([...vocab.values()].sort((a, b) => a - b), Array.from({ length: 512 }, (_, i) => i));
  TINY_SPECIAL_TOKENS.forEach((t, id) => assert.equal(tok.tokenToId(t), id));
  assert.deepEqual([tok.padTokenId, tok.imStartId, tok.imEndId, tok.eosTokenId, tok.bosTokenId], [
    0,
    1,
    2,
    2,
    null,
  ]);
  assert.deepEqual([...tok.specialIds].sort(), [0, 1, 2]);
  // every byte has its own token 3 + b
  for (const b of [0, 10, 32, 65, 255]) assert.deepEqual([...tok.tokenBytes(3 + b)], [b]);
  // same pipeline as the real Qwen tokenizer, only the vocabulary differs
  let qwen: Record<string, unknown>;
  try {
    qwen = JSON.parse(await Deno.readTextFile(QWEN_JSON));
  } catch (e) {
    throw new Error(
      `Qwen tokenizer not found at "${QWEN_JSON}" (shared data missing): ${(e as Error).message}`,
    );
  }
  for (const key of ["normalizer", "pre_tokenizer", "post_processor", "decoder"]) {
    assert.deepEqual(files.tokenizerJson[key], qwen[key], key);
  }
  const { vocab: _v, merges: _m, ...model } = files.tokenizerJson.model as Record<string, unknown>;
  const { vocab: _qv, merges: _qm, ...qwenModel } = qwen.model as Record<string, unknown>;
  assert.deepEqual(model, qwenModel);
});

Deno.test("tiny tokenizer: writes a directory that loadTokenizer reads; ChatML template", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tiny_tok_" });
  try {
    await writeTinyTokenizer(`${dir}/sub`);
    const loaded = await loadTokenizer(`${dir}/sub`);
    assert.equal(loaded.vocabSize, 512);
    const msgs = [{ role: "user", content: "Tom has 3 pens." }, { role: "assistant", content: "#### 3" }];
    const text = applyChatTemplate(loaded, msgs);
    assert.equal(
      text,
      "<|im_start|>user\nTom has 3 pens.<|im_end|>\n<|im_start|>assistant\n#### 3<|im_end|>\n",
    );
    assert.equal(
      applyChatTemplate(loaded, msgs.slice(0, 1), { addGenerationPrompt: true }),
      "<|im_start|>user\nTom has 3 pens.<|im_end|>\n<|im_start|>assistant\n",
    );
    const ids = applyChatTemplateIds(loaded, msgs);
    assert.deepEqual(ids.filter((i) => i < 3), [1, 2, 1, 2], "specials are single tokens");
    assert.equal(loaded.decode(ids), text);
    assert.equal(
      loaded.decode(ids, { skipSpecialTokens: true }),
      "user\nTom has 3 pens.\nassistant\n#### 3\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tiny tokenizer: round-trips generated problems, solutions and corruptions; digits are single tokens", () => {
  const texts = corpus(150, "roundtrip");
  let maxChat = 0;
  for (const t of texts) {
    const ids = tok.encode(t);
    assert.equal(tok.decode(ids), t);
    for (const id of ids) {
      const s = tok.decode([id]);
      if (/\d/.test(s)) assert.match(s, /^\d$/, `token ${id} ${JSON.stringify(s)} holds a digit and more`);
    }
  }
  for (const [piece, id] of tok.hf.get_vocab(true)) {
    if (/\d/.test(piece)) assert.match(piece, /^\d$/, `vocab entry ${id} ${JSON.stringify(piece)}`);
  }
  for (const p of generateProblems(150, { seed: "len", split: "test" })) {
    const msgs = [{ role: "user", content: p.question }, { role: "assistant", content: p.answer }];
    maxChat = Math.max(maxChat, applyChatTemplateIds(tok, msgs).length);
  }
  assert.ok(
    maxChat <= tinyPresetConfig().maxPositionEmbeddings / 1.5,
    `chat sequences up to ${maxChat} tokens`,
  );
  // Any Unicode text round-trips (byte-level BPE), up to the NFC normaliser.
  fc.assert(
    fc.property(fc.string({ unit: "grapheme", maxLength: 40 }), (s) => {
      assert.equal(tok.decode(tok.encode(s)), s.normalize("NFC"));
    }),
    { seed: 5, numRuns: 300 },
  );
});

Deno.test("tiny tokenizer: preTokenize matches the library's pre-tokenizer", () => {
  const texts = [...corpus(40, "pre"), "I'LL don't  \n\n x  é🎉 1,234.5 ####", "\t\r\n  a"];
  fc.assert(
    fc.property(fc.oneof(fc.constantFrom(...texts), fc.string({ unit: "grapheme", maxLength: 30 })), (t) => {
      assert.deepEqual(preTokenize(t), tok.hf.pre_tokenizer!.pre_tokenize(t.normalize("NFC")));
    }),
    { seed: 6, numRuns: 300 },
  );
});

Deno.test("tiny tokenizer: exact offsets and step-end tokens on generated solutions", () => {
  for (const p of generateProblems(60, { seed: "offsets" })) {
    const { ids, offsets, text } = tok.encodeWithOffsets(p.answer);
    assert.equal(text, p.answer);
    let pos = 0;
    ids.forEach((id, i) => {
      assert.equal(offsets[i][0], pos, `token ${i} starts where the previous ended`);
      assert.equal(text.slice(offsets[i][0], offsets[i][1]), tok.decode([id]));
      pos = offsets[i][1];
    });
    assert.equal(pos, text.length);
    const steps = splitSteps(p.answer);
    stepEndTokens(steps, offsets).forEach((t, k) => {
      assert.ok(
        offsets[t][0] < steps[k].end && steps[k].end <= offsets[t][1],
        `step ${k} ends in token ${t}`,
      );
    });
  }
});

Deno.test("tiny tokenizer: BPE training on hand-checkable corpora", () => {
  // "ab ab ab" → pieces "ab", "Ġab", "Ġab": pair (a,b) ×3 first, then (Ġ,ab) ×2; nothing repeats after.
  assert.deepEqual(trainBpeMerges(["ab ab ab"], 10), [["a", "b"], ["Ġ", "ab"]]);
  assert.deepEqual(trainBpeMerges(["ab ab ab"], 1), [["a", "b"]]);
  // "aaab": (a,a) ×2 → "aa a b"; every pair then occurs once.
  assert.deepEqual(trainBpeMerges(["aaab"], 10), [["a", "a"]]);
  // ties break on the smaller "a b" string: "xy" and "cd" both occur twice
  assert.deepEqual(trainBpeMerges(["xy", "xy", "cd", "cd"], 1), [["c", "d"]]);
  assert.deepEqual(trainBpeMerges(["7777"], 10), [], "digits never merge");
  const small = buildTinyTokenizer({ vocabSize: 300 });
  assert.equal(new Tokenizer(small.tokenizerJson, small.tokenizerConfig).vocabSize, 300);
  assert.throws(() => buildTinyTokenizer({ vocabSize: 100 }), /vocabSize must be an integer >= 259, got 100/);
});

Deno.test("tinyPresetConfig: documented shape and 361,600 parameters", () => {
  const c = tinyPresetConfig();
  assert.deepEqual(
    [c.hiddenSize, c.numHiddenLayers, c.numAttentionHeads, c.numKeyValueHeads, c.headDim, c.intermediateSize],
    [128, 2, 4, 2, 32, 256],
  );
  assert.deepEqual([c.vocabSize, c.maxPositionEmbeddings, c.tieWordEmbeddings], [512, 512, true]);
  assert.deepEqual([c.eosTokenIds, c.padTokenId, c.bosTokenId], [[2], 0, null]);
  const C = c.hiddenSize, kv = c.numKeyValueHeads * c.headDim, I = c.intermediateSize;
  const perLayer = (C * C + C) + 2 * (C * kv + kv) + C * C + 3 * C * I + 2 * C;
  assert.equal(c.vocabSize * C + c.numHiddenLayers * perLayer + C, 361_600);
  assert.equal(tinyPresetConfig({ tokenizerSize: 509 }).vocabSize, 512);
  assert.equal(tinyPresetConfig({ tokenizerSize: 513 }).vocabSize, 520);
  const rm = tinyPresetConfig({ architecture: "Qwen2ForTokenClassification" });
  assert.deepEqual(parseQwen2Config(configToJson(rm), "tiny"), rm);
  assert.equal(c.vocabSize % 8, 0);
  assert.ok(c.vocabSize >= tok.vocabSize);
});
