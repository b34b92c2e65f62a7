// Tests for core/tokenizer/tokenizer.ts with the real Qwen tokenizer (../shared/tokenizers/qwen/), checked against
// an independent byte-level BPE written here from tokenizer.json (regex split + merge ranks), and on GSM8K text.
import assert from "node:assert/strict";
import { loadTokenizer, type Tokenizer } from "../core/tokenizer/tokenizer.ts";

const QWEN_DIR = new URL("../../shared/tokenizers/qwen", import.meta.url).pathname;
const GSM8K = new URL("../../shared/data/gsm8k/train.jsonl", import.meta.url).pathname;

let cached: Promise<{ tok: Tokenizer; json: TokenizerJson }> | null = null;
interface TokenizerJson {
  model: { vocab: Record<string, number>; merges: (string | [string, string])[] };
  added_tokens: { id: number; content: string; special: boolean }[];
  pre_tokenizer: { pretokenizers: { pattern?: { Regex: string } }[] };
}
/** Load the shared Qwen tokenizer once; fails naming the path when the shared data is missing. */
function qwen(): Promise<{ tok: Tokenizer; json: TokenizerJson }> {
  cached ??= (async () => {
    try {
      await Deno.stat(`${QWEN_DIR}/tokenizer.json`);
    } catch {
      throw new Error(`Qwen tokenizer not found at "${QWEN_DIR}/tokenizer.json" (shared data missing)`);
    }
    return {
      tok: await loadTokenizer(QWEN_DIR),
      json: JSON.parse(await Deno.readTextFile(`${QWEN_DIR}/tokenizer.json`)),
    };
  })();
  return cached;
}

async function gsm8kTexts(n: number): Promise<string[]> {
  let raw: string;
  try {
    raw = await Deno.readTextFile(GSM8K);
  } catch {
    throw new Error(`GSM8K not found at "${GSM8K}" (shared data missing)`);
  }
  return raw.split("\n").filter((l) => l.trim()).slice(0, n).flatMap((l) => {
    const o = JSON.parse(l);
    return [o.question, o.answer];
  });
}

/** Independent reference: GPT-2 style byte-level BPE driven only by tokenizer.json data. */
class ReferenceBpe {
  ranks = new Map<string, number>();
  byteToChar: string[] = [];
  special: { content: string; id: number }[];
  re: RegExp;
  constructor(readonly json: TokenizerJson) {
    json.model.merges.forEach((m, i) => this.ranks.set(Array.isArray(m) ? m.join(" ") : m, i));
    const bs: number[] = [];
    for (let b = 0; b < 256; b++) if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) bs.push(b);
    let n = 0;
    for (let b = 0; b < 256; b++) this.byteToChar[b] = String.fromCodePoint(bs.includes(b) ? b : 256 + n++);
    this.special = json.added_tokens.map((t) => ({ content: t.content, id: t.id }));
    this.re = new RegExp(json.pre_tokenizer.pretokenizers[0].pattern!.Regex, "gu");
  }
  bpe(word: string[]): string[] {
    while (word.length > 1) {
      let best = -1, bestRank = Infinity;
      for (let i = 0; i + 1 < word.length; i++) {
        const r = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < bestRank) (bestRank = r, best = i);
      }
      if (best < 0) break;
      const [a, b] = [word[best], word[best + 1]];
      const out: string[] = [];
      for (let i = 0; i < word.length; i++) {
        if (i + 1 < word.length && word[i] === a && word[i + 1] === b) (out.push(a + b), i++);
        else out.push(word[i]);
      }
      word = out;
    }
    return word;
  }
  encode(text: string): number[] {
    const ids: number[] = [];
    while (text.length) {
      // earliest (then longest) added token occurrence splits the text
      let at = -1, hit: { content: string; id: number } | null = null;
      for (const s of this.special) {
        const i = text.indexOf(s.content);
        if (i >= 0 && (at < 0 || i < at || (i === at && s.content.length > hit!.content.length))) {
          (at = i, hit = s);
        }
      }
      const plain = at < 0 ? text : text.slice(0, at);
      for (const piece of plain.normalize("NFC").match(this.re) ?? []) {
        const chars = [...new TextEncoder().encode(piece)].map((b) => this.byteToChar[b]);
        for (const t of this.bpe(chars)) ids.push(this.json.model.vocab[t]);
      }
      if (!hit) break;
      ids.push(hit.id);
      text = text.slice(at + hit.content.length);
    }
    return ids;
  }
}

Deno.test("tokenizer: special tokens and vocabulary of the Qwen tokenizer", async () => {
  const { tok, json } = await qwen();
  assert.equal(tok.eosToken, "<|im_end|>");
  assert.equal(tok.eosTokenId, json.added_tokens.find((t) => t.content === "<|im_end|>")!.id);
  assert.equal(tok.padToken, "<|endoftext|>");
  assert.equal(tok.padTokenId, json.added_tokens.find((t) => t.content === "<|endoftext|>")!.id);
  assert.equal(tok.bosToken, null);
  assert.equal(tok.imStartId, json.added_tokens.find((t) => t.content === "<|im_start|>")!.id);
  assert.equal(tok.imEndId, tok.eosTokenId);
  const maxId = [...Object.values(json.model.vocab), ...json.added_tokens.map((t) => t.id)].reduce((a, b) =>
    Math.max(a, b)
  );
  assert.equal(tok.vocabSize, maxId + 1);
  assert.ok(tok.isSpecial(tok.imStartId!));
  assert.ok(!tok.isSpecial(tok.tokenToId("<think>")!), "<think> is an added but non-special token");
  assert.ok(tok.chatTemplate?.includes("<|im_start|>"));
});

Deno.test("tokenizer: single-token words map to their tokenizer.json vocab ids", async () => {
  const { tok, json } = await qwen();
  const v = json.model.vocab;
  // byte-level: a leading space is "Ġ", a newline "Ċ"
  const cases: [string, string][] = [
    ["Hello", "Hello"],
    [" world", "Ġworld"],
    ["\n", "Ċ"],
    [" The", "ĠThe"],
    [
      "apple",
      "apple",
    ],
    ["#", "#"],
  ];
  for (const [text, sym] of cases) {
    assert.ok(v[sym] !== undefined, `vocab has ${sym}`);
    assert.deepEqual(tok.encode(text), [v[sym]], JSON.stringify(text));
    assert.equal(tok.decode([v[sym]]), text);
  }
  // digits are split one per token by the pre-tokenizer
  assert.deepEqual(tok.encode("2024"), ["2", "0", "2", "4"].map((d) => v[d]));
  assert.deepEqual(tok.encode("Hello world"), [v["Hello"], v["Ġworld"]]);
});

Deno.test("tokenizer: GSM8K (first 200 questions + answers) matches the reference BPE and round-trips", async () => {
  const { tok, json } = await qwen();
  const ref = new ReferenceBpe(json);
  const texts = await gsm8kTexts(200);
  assert.equal(texts.length, 400);
  let tokens = 0;
  for (const [i, text] of texts.entries()) {
    const ids = tok.encode(text);
    tokens += ids.length;
    const want = ref.encode(text);
    if (JSON.stringify(ids) !== JSON.stringify(want)) {
      const k = ids.findIndex((id, j) => id !== want[j]);
      assert.fail(
        `text ${i}: first mismatch at token ${k}: got ${ids.slice(k, k + 5)}, reference ${
          want.slice(k, k + 5)
        }`,
      );
    }
    assert.equal(tok.decode(ids), text, `round trip of text ${i}`);
    assert.equal(tok.decode(tok.encode(text, { addSpecialTokens: false })), text);
  }
  assert.ok(tokens > 20_000, `tokenized ${tokens} tokens`);
});

/** Offsets must tile the text: start at 0, end at its length, never go backwards, overlap by at most one char. */
function checkOffsets(tok: Tokenizer, text: string, ids: number[], offsets: [number, number][]): void {
  assert.equal(offsets.length, ids.length);
  if (!ids.length) return;
  assert.equal(offsets[0][0], 0);
  assert.equal(offsets.at(-1)![1], text.length);
  let rebuilt = "";
  let prevEnd = 0;
  for (let i = 0; i < ids.length; i++) {
    const [s, e] = offsets[i];
    assert.ok(s <= e && s <= prevEnd, `token ${i}: [${s}, ${e}) after end ${prevEnd}`);
    if (s < prevEnd) {
      // sharing: the shared span is exactly one code point split across tokens
      assert.equal(String.fromCodePoint(text.codePointAt(s)!).length, prevEnd - s, `token ${i} overlap`);
    }
    rebuilt += text.slice(prevEnd, e);
    const piece = tok.decode([ids[i]]);
    if (!piece.includes("\uFFFD")) assert.equal(text.slice(s, e), piece, `token ${i} text`);
    prevEnd = Math.max(prevEnd, e);
  }
  assert.equal(rebuilt, text);
}

Deno.test("tokenizer: offsets cover GSM8K texts exactly and agree between the two methods", async () => {
  const { tok } = await qwen();
  const texts = await gsm8kTexts(200);
  for (const text of texts) {
    const r = tok.encodeWithOffsets(text);
    assert.equal(r.text, text);
    assert.deepEqual(r.ids, tok.encode(text));
    checkOffsets(tok, text, r.ids, r.offsets);
  }
  for (const text of texts.slice(0, 6)) {
    assert.deepEqual(
      tok.encodeWithOffsets(text, { method: "decode" }).offsets,
      tok.encodeWithOffsets(text).offsets,
    );
  }
});

Deno.test("tokenizer: offsets with multi-byte characters, special tokens and non-NFC input", async () => {
  const { tok, json } = await qwen();
  const ref = new ReferenceBpe(json);
  const samples = [
    "你好世界，今天是星期三。",
    "Emoji 😀👍🏽 and flags 🇯🇵 mixed with math 𝔘𝔫𝔦 ∑∫≈ and accents naïve café",
    "<|im_start|>user\nWhat is 3×4?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n12<|im_end|>",
    "   leading spaces\n\n\ttabs\r\nand CRLF  ",
  ];
  for (const text of samples) {
    const byBytes = tok.encodeWithOffsets(text);
    assert.deepEqual(byBytes.ids, ref.encode(text), `reference ids for ${text}`);
    checkOffsets(tok, text, byBytes.ids, byBytes.offsets);
    assert.deepEqual(tok.encodeWithOffsets(text, { method: "decode" }).offsets, byBytes.offsets, text);
    assert.equal(tok.decode(byBytes.ids), text);
  }
  // "𝔘" (4 UTF-8 bytes, 2 UTF-16 units) is split over two byte-level tokens: both cover the whole character
  const split = tok.encodeWithOffsets("𝔘𝔫");
  assert.deepEqual(split.offsets, [[0, 2], [0, 2], [2, 4], [2, 4]]);
  const special = tok.encodeWithOffsets("<|im_start|>user\nhi<|im_end|>");
  assert.equal(special.ids[0], tok.imStartId);
  assert.deepEqual(special.offsets[0], [0, "<|im_start|>".length]);
  assert.equal(special.ids.at(-1), tok.imEndId);
  // NFC: "e" + combining acute becomes "é"; offsets index the normalised text
  const nfd = tok.encodeWithOffsets("cafe\u0301");
  assert.equal(nfd.text, "café");
  assert.deepEqual(nfd.ids, tok.encode("café"));
  checkOffsets(tok, nfd.text, nfd.ids, nfd.offsets);
});

Deno.test("tokenizer: decode options, edge cases and errors", async () => {
  const { tok } = await qwen();
  const ids = tok.encode("<|im_start|>assistant\n<think>\nok\n</think>\n\nDone<|im_end|>");
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), "assistant\n<think>\nok\n</think>\n\nDone");
  assert.equal(tok.decode([]), "");
  assert.deepEqual(tok.encode(""), []);
  assert.throws(() => tok.decode([tok.vocabSize]), /Cannot decode token id 151669: outside the vocabulary/);
  assert.throws(() => tok.decode([-1]), /Cannot decode token id -1/);
  const bytes = tok.tokenBytes(tok.encode(" world")[0]);
  assert.deepEqual([...bytes], [...new TextEncoder().encode(" world")]);
  await assert.rejects(
    loadTokenizer("/nonexistent/tok"),
    /Cannot load tokenizer "\/nonexistent\/tok": "\/nonexistent\/tok\/tokenizer.json" not found/,
  );
});
