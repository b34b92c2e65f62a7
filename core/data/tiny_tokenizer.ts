/**
 * The tiny preset: a 512-token byte-level BPE tokenizer for the built-in arithmetic task, in the exact format
 * of a Qwen2 checkpoint (`tokenizer.json` + `tokenizer_config.json` with a ChatML `chat_template`), so it loads
 * through the same `@huggingface/tokenizers` path as real models, and the matching tiny Qwen2 config.
 *
 * Tokenizer pipeline (identical to Qwen2 apart from the vocabulary): NFC normaliser, the Qwen2 split regex
 * (every digit is its own pre-token, so numbers are always tokenised digit by digit) followed by GPT-2
 * byte-level mapping, a BPE model, ByteLevel decoder. Ids: 0 `<|endoftext|>` (pad), 1 `<|im_start|>`,
 * 2 `<|im_end|>` (eos), 3…258 the 256 bytes (byte b → id 3 + b), 259…511 the merges learnt from 2,000
 * generated train problems (questions and solutions, plus the `user`/`assistant` role lines). Training is
 * greedy BPE: repeatedly merge the most frequent adjacent pair (ties: smallest `"a b"` string), so the
 * tokenizer is a pure function of the generator. Byte-level BPE encodes any text, hence round-trips exactly.
 *
 * @module
 */

import { type Qwen2Config, qwen2Config } from "../model/config.ts";
import { joinPath, writeJsonAtomic } from "../util/atomic.ts";
import { generateProblems } from "./arithmetic.ts";

/** Special tokens of the tiny tokenizer, by id (0, 1, 2). */
export const TINY_SPECIAL_TOKENS: readonly string[] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/** Total vocabulary of the tiny tokenizer: 3 special + 256 byte + 253 merged tokens. */
export const TINY_VOCAB_SIZE = 512;

/**
 * ChatML chat template of the tiny preset: Qwen2-Instruct's template without the default system message
 * (sequences stay short): `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then
 * `<|im_start|>assistant\n` when `add_generation_prompt`.
 */
export const TINY_CHAT_TEMPLATE = "{%- for message in messages %}" +
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

// The Qwen2 pre-tokenizer split pattern.
const QWEN2_SPLIT = String
  .raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;

const BYTE_LEVEL = { add_prefix_space: false, trim_offsets: false, use_regex: false };

/** GPT-2 byte-level alphabet: the printable character standing for each byte. */
function byteAlphabet(): string[] {
  const out: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    out.push(String.fromCodePoint(printable ? b : 256 + extra++));
  }
  return out;
}

const ALPHABET = byteAlphabet();
const SPLIT_RE = new RegExp(QWEN2_SPLIT, "gu");
const utf8 = new TextEncoder();

/**
 * Pre-tokens of `text` as the tiny (and Qwen2) pipeline makes them: NFC, split by the Qwen2 regex, each piece
 * written in the byte-level alphabet (e.g. `" pens"` → `"Ġpens"`).
 */
export function preTokenize(text: string): string[] {
  return (text.normalize("NFC").match(SPLIT_RE) ?? []).map(byteLevel);
}

/** A piece of text in the byte-level alphabet. */
function byteLevel(p: string): string {
  let out = "";
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c >= 0x80) return Array.from(utf8.encode(p), (b) => ALPHABET[b]).join("");
    out += ALPHABET[c];
  }
  return out;
}

/** Options of {@link buildTinyTokenizer}. */
export interface TinyTokenizerOptions {
  /** Total vocabulary size, ≥ 259 (default {@link TINY_VOCAB_SIZE}). */
  vocabSize?: number;
  /** Number of generated train problems the merges are learnt from (default 2000). */
  corpusProblems?: number;
}

/** The two files of a tokenizer directory, as JSON objects. */
export interface TokenizerFiles {
  /** `tokenizer.json`. */
  tokenizerJson: Record<string, unknown>;
  /** `tokenizer_config.json`. */
  tokenizerConfig: Record<string, unknown>;
}

/** `tokenizer.json` of a byte-level BPE with the tiny preset's pipeline and specials. */
function tokenizerJson(vocab: Record<string, number>, merges: [string, string][]): Record<string, unknown> {
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: TINY_SPECIAL_TOKENS.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: "NFC" },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: QWEN2_SPLIT }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", ...BYTE_LEVEL },
      ],
    },
    post_processor: { type: "ByteLevel", ...BYTE_LEVEL },
    decoder: { type: "ByteLevel", ...BYTE_LEVEL },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/**
 * Greedy byte-level BPE training: pre-tokenises `texts` with {@link preTokenize}, then repeatedly merges the most
 * frequent adjacent symbol pair (ties: smallest `"a b"`), until `maxTokens` distinct merged tokens exist or no
 * pair occurs twice. Returns the merges in rank order.
 */
export function trainBpeMerges(texts: readonly string[], maxTokens: number): [string, string][] {
  const counts = new Map<string, number>(); // raw pieces; mapped to bytes once each below
  for (const t of texts) {
    for (const w of t.normalize("NFC").match(SPLIT_RE) ?? []) counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  const words = [...counts].map(([w, freq]) => ({ syms: [...byteLevel(w)], freq }));
  const merges: [string, string][] = [];
  const made = new Set<string>(ALPHABET);
  let added = 0;
  while (added < maxTokens) {
    const pairs = new Map<string, number>();
    for (const { syms, freq } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const key = `${syms[i]} ${syms[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + freq);
      }
    }
    let best = "";
    let bestCount = 1;
    for (const [key, c] of pairs) {
      if (c > bestCount || (c === bestCount && best !== "" && key < best)) [best, bestCount] = [key, c];
    }
    if (best === "") break;
    const [a, b] = best.split(" ") as [string, string];
    merges.push([a, b]);
    if (!made.has(a + b)) (made.add(a + b), added++);
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) (out.push(a + b), i++);
        else out.push(w.syms[i]);
      }
      w.syms = out;
    }
  }
  return merges;
}

/**
 * Builds the tiny preset tokenizer (see the module doc): deterministic, about 0.2 s. Its size is exactly
 * `opts.vocabSize` when the corpus has enough repeated pairs (always for the defaults).
 */
export function buildTinyTokenizer(opts: TinyTokenizerOptions = {}): TokenizerFiles {
  const { vocabSize = TINY_VOCAB_SIZE, corpusProblems = 2000 } = opts;
  const first = TINY_SPECIAL_TOKENS.length + 256;
  if (!Number.isInteger(vocabSize) || vocabSize < first) {
    throw new Error(
      `Cannot build the tiny tokenizer: vocabSize must be an integer >= ${first}, got ${vocabSize}`,
    );
  }
  const texts = generateProblems(corpusProblems, { seed: "tiny-tokenizer" }).flatMap((p) => [
    `user\n${p.question}`,
    `assistant\n${p.answer}`,
  ]);
  const merges = trainBpeMerges(texts, vocabSize - first);
  const vocab: Record<string, number> = {};
  ALPHABET.forEach((c, b) => (vocab[c] = TINY_SPECIAL_TOKENS.length + b));
  let next = first;
  for (const [a, b] of merges) if (!(a + b in vocab)) vocab[a + b] = next++;
  const addedTokensDecoder = Object.fromEntries(TINY_SPECIAL_TOKENS.map((content, id) => [String(id), {
    content,
    lstrip: false,
    normalized: false,
    rstrip: false,
    single_word: false,
    special: true,
  }]));
  return {
    tokenizerJson: tokenizerJson(vocab, merges),
    tokenizerConfig: {
      add_bos_token: false,
      add_prefix_space: false,
      added_tokens_decoder: addedTokensDecoder,
      additional_special_tokens: ["<|im_start|>", "<|im_end|>"],
      bos_token: null,
      chat_template: TINY_CHAT_TEMPLATE,
      clean_up_tokenization_spaces: false,
      eos_token: "<|im_end|>",
      errors: "replace",
      model_max_length: 512,
      pad_token: "<|endoftext|>",
      split_special_tokens: false,
      tokenizer_class: "Qwen2Tokenizer",
      unk_token: null,
    },
  };
}

/** Writes `tokenizer.json` and `tokenizer_config.json` of the tiny tokenizer into `dir` (created if needed). */
export async function writeTinyTokenizer(dir: string, opts: TinyTokenizerOptions = {}): Promise<void> {
  const files = buildTinyTokenizer(opts);
  await Deno.mkdir(dir, { recursive: true });
  await writeJsonAtomic(joinPath(dir, "tokenizer.json"), files.tokenizerJson);
  await writeJsonAtomic(joinPath(dir, "tokenizer_config.json"), files.tokenizerConfig);
}

/** Options of {@link tinyPresetConfig}. */
export interface TinyPresetOptions {
  /** Tokenizer size; the embedding gets `ceil(size / 8) · 8` rows (default {@link TINY_VOCAB_SIZE}). */
  tokenizerSize?: number;
  /** Model head (default "Qwen2ForCausalLM"; reward models use the classification heads). */
  architecture?: Qwen2Config["architecture"];
}

/**
 * Qwen2 config of the tiny preset, sized to train on a 2-core CPU through lavapipe in minutes:
 * hidden C = 128, 2 layers, 4 query heads of dim 32, 2 KV heads (GQA), SwiGLU inner 256, vocab V = 512,
 * 512 positions, tied embeddings, RoPE θ = 10000, RMSNorm ε = 1e-6, eos = 2 (`<|im_end|>`), pad = 0
 * (`<|endoftext|>`), no BOS, float32.
 *
 * Parameters (causal LM): embedding V·C = 65,536; per layer q 128·128+128, k and v 128·64+64 each,
 * o 128·128, gate/up/down 3·128·256, two norms 2·128 = 147,968; total 65,536 + 2·147,968 + 128 = 361,600.
 */
export function tinyPresetConfig(opts: TinyPresetOptions = {}): Qwen2Config {
  const { tokenizerSize = TINY_VOCAB_SIZE, architecture = "Qwen2ForCausalLM" } = opts;
  if (!Number.isInteger(tokenizerSize) || tokenizerSize < TINY_SPECIAL_TOKENS.length) {
    throw new Error(
      `Cannot build the tiny preset config: tokenizerSize must be a positive integer, got ${tokenizerSize}`,
    );
  }
  return qwen2Config({
    architecture,
    hiddenSize: 128,
    intermediateSize: 256,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    vocabSize: Math.ceil(tokenizerSize / 8) * 8,
    maxPositionEmbeddings: 512,
    tieWordEmbeddings: true,
    ropeTheta: 10000,
    rmsNormEps: 1e-6,
    bosTokenId: null,
    eosTokenIds: [2],
    padTokenId: 0,
    torchDtype: "float32",
  });
}
