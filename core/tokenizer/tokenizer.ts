/**
 * Tokenizer loading and use on top of `@huggingface/tokenizers` (a pure-JS port of HF tokenizers): reads
 * `tokenizer.json` + `tokenizer_config.json` (+ `chat_template.jinja`) from a directory and adds what the library
 * lacks: token → character offsets, special-token ids, id validation, and HF-compatible edge cases.
 *
 * Library quirks worked around here (checked against @huggingface/tokenizers 0.2.0):
 * - `decode([])` throws instead of returning "" → we return "".
 * - out-of-range ids decode to `unk_token` (undefined for Qwen, giving garbage) → we throw a clear error.
 * - `encode` returns no offsets → {@link Tokenizer.encodeWithOffsets} computes them from the byte-level
 *   token bytes (exact, O(n)), or by incremental decoding for non byte-level tokenizers.
 *
 * @module
 */

import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { joinPath } from "../util/atomic.ts";

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Let the post-processor add special tokens (BOS/EOS) as HF does by default. Default true (no-op for Qwen). */
  addSpecialTokens?: boolean;
}

/** Options of {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special tokens (e.g. `<|im_end|>`) from the output. Default false. */
  skipSpecialTokens?: boolean;
}

/** Result of {@link Tokenizer.encodeWithOffsets}. */
export interface EncodingWithOffsets {
  /** Token ids. */
  ids: number[];
  /**
   * `[start, end)` UTF-16 offsets of each token into `text`. A token holding part of a multi-byte character
   * covers that whole character (so neighbouring tokens may share it); inserted special tokens are empty spans.
   */
  offsets: [number, number][];
  /** The text the offsets index: the input after the tokenizer's Unicode normalisation (NFC for Qwen). */
  text: string;
}

/** An added token as declared in tokenizer.json / tokenizer_config.json. */
export interface AddedTokenInfo {
  /** Token id. */
  id: number;
  /** Literal content, e.g. "<|im_end|>". */
  content: string;
  /** Whether HF treats it as special (skipped by `skipSpecialTokens`). */
  special: boolean;
}

/** GPT-2 byte-level alphabet: byte b ↔ printable code point (bytes 33–126, 161–172, 174–255 map to themselves). */
function byteLevelDecoder(): Map<string, number> {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const map = new Map<string, number>(bs.map((b) => [String.fromCodePoint(b), b]));
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) map.set(String.fromCodePoint(256 + n++), b);
  return map;
}

const tokenName = (v: unknown): string | null =>
  typeof v === "string"
    ? v
    : v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string"
    ? (v as { content: string }).content
    : null;

/** A loaded tokenizer; create with {@link loadTokenizer}. */
export class Tokenizer {
  /** The underlying @huggingface/tokenizers instance. */
  readonly hf: HfTokenizer;
  /** Raw tokenizer_config.json. */
  readonly config: Record<string, unknown>;
  /** Jinja chat template (tokenizer_config `chat_template` or chat_template.jinja), or null. */
  readonly chatTemplate: string | null;
  /** Added tokens by id. */
  readonly addedTokens: ReadonlyMap<number, AddedTokenInfo>;
  /** Ids that `skipSpecialTokens` removes. */
  readonly specialIds: ReadonlySet<number>;
  /** Number of ids (max id + 1, including added tokens). */
  readonly vocabSize: number;
  /** EOS token and id (Qwen instruct: "<|im_end|>"), or null. */
  readonly eosToken: string | null;
  /** EOS id, or null. */
  readonly eosTokenId: number | null;
  /** PAD token (Qwen: "<|endoftext|>"), or null. */
  readonly padToken: string | null;
  /** PAD id, or null. */
  readonly padTokenId: number | null;
  /** BOS token (null for Qwen). */
  readonly bosToken: string | null;
  /** BOS id, or null. */
  readonly bosTokenId: number | null;
  /** Id of "<|im_start|>" when present (ChatML), else null. */
  readonly imStartId: number | null;
  /** Id of "<|im_end|>" when present (ChatML), else null. */
  readonly imEndId: number | null;
  readonly #normalizer: string | null;
  readonly #byteLevel: boolean;
  readonly #byteDecoder = byteLevelDecoder();

  /** Build from parsed tokenizer.json and tokenizer_config.json objects (see {@link loadTokenizer}). */
  constructor(
    tokenizerJson: Record<string, unknown>,
    tokenizerConfig: Record<string, unknown>,
    opts: { chatTemplate?: string | null } = {},
  ) {
    this.hf = new HfTokenizer(tokenizerJson, tokenizerConfig);
    this.config = tokenizerConfig;
    const added = new Map<number, AddedTokenInfo>();
    for (
      const t of (tokenizerJson.added_tokens ?? []) as { id: number; content: string; special?: boolean }[]
    ) {
      added.set(t.id, { id: t.id, content: t.content, special: t.special === true });
    }
    const decl = (tokenizerConfig.added_tokens_decoder ?? {}) as Record<
      string,
      { content: string; special?: boolean }
    >;
    for (const [id, t] of Object.entries(decl)) {
      if (!added.has(Number(id))) {
        added.set(Number(id), { id: Number(id), content: t.content, special: t.special === true });
      }
    }
    this.addedTokens = added;
    const special = new Set([...added.values()].filter((t) => t.special).map((t) => t.id));
    for (const s of (tokenizerConfig.additional_special_tokens ?? []) as unknown[]) {
      const id = this.tokenToId(tokenName(s) ?? "");
      if (id !== undefined) special.add(id);
    }
    this.specialIds = special;
    let max = -1;
    for (const id of this.hf.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
    const named = (key: string): [string | null, number | null] => {
      const tok = tokenName(tokenizerConfig[key]);
      if (tok === null) return [null, null];
      const id = this.tokenToId(tok);
      if (id === undefined) {
        throw new Error(`Cannot load tokenizer: ${key} "${tok}" is not in the vocabulary`);
      }
      return [tok, id];
    };
    [this.eosToken, this.eosTokenId] = named("eos_token");
    [this.padToken, this.padTokenId] = named("pad_token");
    [this.bosToken, this.bosTokenId] = named("bos_token");
    this.imStartId = this.tokenToId("<|im_start|>") ?? null;
    this.imEndId = this.tokenToId("<|im_end|>") ?? null;
    let tpl = opts.chatTemplate ?? tokenizerConfig.chat_template ?? null;
    if (Array.isArray(tpl)) tpl = (tpl.find((t) => t?.name === "default") ?? tpl[0])?.template ?? null;
    this.chatTemplate = typeof tpl === "string" ? tpl : null;
    const norm = tokenizerJson.normalizer as { type?: string } | null;
    this.#normalizer = norm ? norm.type ?? "?" : null;
    const dec = tokenizerJson.decoder as { type?: string; decoders?: { type?: string }[] } | null;
    this.#byteLevel = dec?.type === "ByteLevel" || (dec?.decoders ?? []).some((d) => d.type === "ByteLevel");
  }

  /** Text → ids. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  /** Text → token strings (byte-level symbols, e.g. "Ġworld"). */
  tokenize(text: string): string[] {
    return this.hf.tokenize(text);
  }

  /** Ids → text. Throws on ids outside [0, vocabSize). */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    if (ids.length === 0) return "";
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || this.hf.id_to_token(id) === undefined) {
        throw new Error(`Cannot decode token id ${id}: outside the vocabulary (size ${this.vocabSize})`);
      }
    }
    return this.hf.decode(ids as number[], { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  /** Vocabulary lookup (added tokens included). */
  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  /** Reverse vocabulary lookup. */
  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  /** Whether `id` is a special token (dropped by `skipSpecialTokens`). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** Raw UTF-8 bytes a token stands for (byte-level tokenizers only; added tokens: their content). */
  tokenBytes(id: number): Uint8Array {
    const added = this.addedTokens.get(id);
    if (added) return new TextEncoder().encode(added.content);
    const tok = this.idToToken(id);
    if (tok === undefined) throw new Error(`Cannot get bytes of token id ${id}: outside the vocabulary`);
    if (!this.#byteLevel) throw new Error("Cannot get token bytes: the tokenizer is not byte-level");
    return Uint8Array.from(tok, (c) => {
      const b = this.#byteDecoder.get(c);
      if (b === undefined) {
        throw new Error(`Cannot get bytes of token ${JSON.stringify(tok)}: not a byte-level symbol`);
      }
      return b;
    });
  }

  /** The text as the model sees it (Unicode normalisation of the tokenizer applied). */
  normalize(text: string): string {
    const n = this.#normalizer;
    return n === "NFC" || n === "NFD" || n === "NFKC" || n === "NFKD" ? text.normalize(n) : text;
  }

  /**
   * Encode and return `[start, end)` character offsets of each token in the normalised text. `method`
   * "bytes" (default for byte-level tokenizers) maps each token's bytes onto the text's UTF-8 bytes;
   * "decode" measures decoded prefixes (any tokenizer, O(n²)).
   */
  encodeWithOffsets(
    text: string,
    opts: EncodeOptions & { method?: "bytes" | "decode" } = {},
  ): EncodingWithOffsets {
    const inner = this.encode(text, { addSpecialTokens: false });
    const all = (opts.addSpecialTokens ?? true) ? this.encode(text, { addSpecialTokens: true }) : inner;
    // the post-processor may wrap `inner` with special tokens: all = pre ++ inner ++ post
    let pre = 0;
    if (all.length !== inner.length) {
      pre = all.findIndex((_, i) => inner.every((id, j) => all[i + j] === id));
      if (pre < 0 || all.length - pre < inner.length) {
        throw new Error("Cannot compute offsets: post-processor reorders tokens");
      }
    }
    const method = opts.method ?? (this.#byteLevel && this.#normalizer !== "?" ? "bytes" : "decode");
    const core = method === "bytes" ? this.#offsetsFromBytes(text, inner) : this.#offsetsFromDecode(inner);
    const n = core.text.length;
    const offsets: [number, number][] = [
      ...Array.from({ length: pre }, (): [number, number] => [0, 0]),
      ...core.offsets,
      ...Array.from({ length: all.length - pre - inner.length }, (): [number, number] => [n, n]),
    ];
    return { ids: all, offsets, text: core.text };
  }

  /** Offsets by aligning each token's bytes with the UTF-8 bytes of the normalised text. */
  #offsetsFromBytes(input: string, ids: number[]): { offsets: [number, number][]; text: string } {
    const text = this.normalize(input);
    // floor[b]/ceil[b]: UTF-16 index of the character boundary at or before / at or after UTF-8 byte b
    const floor: number[] = [];
    const ceil: number[] = [];
    let u16 = 0;
    for (const ch of text) {
      const cp = ch.codePointAt(0)!;
      const nb = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; // lone surrogates encode as U+FFFD (3)
      for (let k = 0; k < nb; k++) {
        floor.push(u16);
        ceil.push(k === 0 ? u16 : u16 + ch.length);
      }
      u16 += ch.length;
    }
    floor.push(u16);
    ceil.push(u16);
    let pos = 0;
    const offsets = ids.map((id): [number, number] => {
      const start = pos;
      pos += this.tokenBytes(id).length;
      if (pos > floor.length - 1) return [u16, u16];
      return [floor[start], ceil[pos]];
    });
    if (pos !== floor.length - 1) {
      throw new Error(
        `Cannot compute offsets: tokens hold ${pos} bytes but the normalised text has ${floor.length - 1}`,
      );
    }
    return { offsets, text };
  }

  /** Offsets by decoding growing prefixes: token i ends where decode(ids[..i]) stops agreeing with the full text. */
  #offsetsFromDecode(ids: number[]): { offsets: [number, number][]; text: string } {
    const full = this.decode(ids);
    const offsets: [number, number][] = [];
    let stable = 0; // length of the prefix of `full` fixed by tokens so far
    for (let i = 0; i < ids.length; i++) {
      const s = this.decode(ids.slice(0, i + 1));
      let lcp = 0;
      while (lcp < s.length && s.charCodeAt(lcp) === full.charCodeAt(lcp)) lcp++;
      // a trailing partial UTF-8 sequence decodes to U+FFFD: the token covers that whole character
      const end = lcp === s.length ? lcp : lcp + String.fromCodePoint(full.codePointAt(lcp) ?? 0).length;
      offsets.push([Math.min(stable, end), Math.min(end, full.length)]);
      stable = lcp;
    }
    return { offsets, text: full };
  }
}

/**
 * Load `tokenizer.json` and `tokenizer_config.json` (required) and `chat_template.jinja` (optional, used when
 * the config has no `chat_template`) from `dir`.
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const readJson = async (name: string): Promise<Record<string, unknown>> => {
    const path = joinPath(dir, name);
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new Error(`Cannot load tokenizer "${dir}": "${path}" not found`);
      }
      throw e;
    }
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new Error(
        `Cannot load tokenizer "${dir}": "${path}" is not valid JSON (${(e as Error).message})`,
      );
    }
  };
  const [tj, tc] = [await readJson("tokenizer.json"), await readJson("tokenizer_config.json")];
  let chatTemplate: string | null = null;
  if (tc.chat_template === undefined) {
    try {
      chatTemplate = await Deno.readTextFile(joinPath(dir, "chat_template.jinja"));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return new Tokenizer(tj, tc, { chatTemplate });
}
