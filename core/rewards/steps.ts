/**
 * Reasoning-step segmentation and the step → token alignment that places per-step PRM rewards on tokens.
 *
 * A solution is split into steps with character spans; a tokenizer's offset mapping (one `[start, end)` per
 * token, in UTF-16 code units of the same text) then gives the token that ends each step. Byte-level BPE
 * tokenizers that report no offsets (such as `@huggingface/tokenizers`) get them from {@link tokenOffsets}.
 *
 * @module
 */

/** A half-open character range `[start, end)` of a text, in UTF-16 code units. */
export interface Span {
  start: number;
  end: number;
}

/** One reasoning step: its trimmed text and the span of that text in the solution. */
export interface Step extends Span {
  text: string;
}

/** Character offsets `[start, end)` of one token, as produced by a tokenizer's offset mapping. */
export type TokenOffset = readonly [number, number];

/** Options of {@link splitSteps}. */
export interface SplitStepsOptions {
  /** Step separator (default `"\n"`: one step per non-empty line). */
  separator?: string;
}

/** Options of {@link stepEndTokens}. */
export interface StepEndTokensOptions {
  /** The text the spans index; when given, trailing whitespace inside each span is skipped. */
  text?: string;
}

/** Options of {@link tokenOffsets}. */
export interface TokenOffsetsOptions {
  /** Tokens that may be absent from the text (e.g. `"<|im_end|>"` decoded with skip_special_tokens): they get an empty span. */
  specialTokens?: Iterable<string>;
}

/**
 * Splits a solution into steps: the pieces between separators (default `"\n"`) that are non-empty after trim.
 * Each step's `[start, end)` span covers its trimmed text in `solution`, so
 * `solution.slice(step.start, step.end) === step.text` and `solution[step.end - 1]` is its last non-whitespace
 * character.
 */
export function splitSteps(solution: string, opts: SplitStepsOptions = {}): Step[] {
  const { separator = "\n" } = opts;
  if (separator === "") {
    throw new Error('Cannot split steps: separator is empty, expected a non-empty string like "\\n"');
  }
  const steps: Step[] = [];
  let from = 0;
  while (from <= solution.length) {
    const at = solution.indexOf(separator, from);
    const to = at < 0 ? solution.length : at;
    const first = solution.slice(from, to).search(/\S/);
    if (first >= 0) {
      const start = from + first;
      let end = to;
      while (/\s/.test(solution[end - 1])) end--;
      steps.push({ text: solution.slice(start, end), start, end });
    }
    if (at < 0) break;
    from = at + separator.length;
  }
  return steps;
}

function checkOffsets(offsets: ArrayLike<TokenOffset>): void {
  let prevStart = 0;
  let prevEnd = 0;
  for (let i = 0; i < offsets.length; i++) {
    const [s, e] = offsets[i];
    if (!Number.isInteger(s) || !Number.isInteger(e) || s < 0 || e < s || s < prevStart || e < prevEnd) {
      throw new Error(
        `Invalid token offsets: token ${i} has offsets "[${s}, ${e})", expected integers with start <= end, ` +
          `both non-decreasing across tokens (previous token "[${prevStart}, ${prevEnd})")`,
      );
    }
    [prevStart, prevEnd] = [s, e];
  }
}

/**
 * Index of the token that ends each step: the last token whose offsets `[s, e)` contain the step's last
 * non-whitespace character `c` (`s <= c < e`). With byte-level BPE a token may merge the step's last
 * characters with the following newline (`".\n"`) or the preceding text; such a token is the step's end.
 * When a character is split over several tokens (multi-byte UTF-8), the last of them completes it.
 *
 * Spans are taken as trimmed (as from {@link splitSteps}), so `c = end - 1`, unless `opts.text` is given.
 * Throws when the offsets are malformed or no token covers a step's last character.
 */
export function stepEndTokens(
  spans: readonly Span[],
  tokenOffsets: ArrayLike<TokenOffset>,
  opts: StepEndTokensOptions = {},
): number[] {
  checkOffsets(tokenOffsets);
  const n = tokenOffsets.length;
  return spans.map(({ start, end }, k) => {
    let c = end - 1;
    if (opts.text !== undefined) { while (c >= start && /\s/.test(opts.text[c])) c--; }
    if (!Number.isInteger(start) || !Number.isInteger(end) || c < start) {
      throw new Error(
        `Cannot align step ${k}: span "[${start}, ${end})" is empty, expected a non-empty span`,
      );
    }
    // Last token with start <= c (starts are non-decreasing).
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (tokenOffsets[mid][0] <= c) lo = mid + 1;
      else hi = mid;
    }
    let t = lo - 1;
    while (t >= 0 && tokenOffsets[t][1] <= c && tokenOffsets[t][0] === tokenOffsets[t][1]) t--; // skip empty tokens
    if (t < 0 || tokenOffsets[t][1] <= c) {
      const last = n > 0 ? tokenOffsets[n - 1][1] : 0;
      throw new Error(
        `Cannot align step ${k}: its last character ${c} (span "[${start}, ${end})") is not covered by any ` +
          `token (${n} tokens covering characters up to ${last})`,
      );
    }
    return t;
  });
}

// GPT-2 byte-level alphabet: byte b is written as the character BYTE_TO_CHAR[b].
const CHAR_TO_BYTE: Map<number, number> = (() => {
  const map = new Map<number, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    map.set(printable ? b : 256 + extra++, b);
  }
  return map;
})();

const utf8 = new TextEncoder();

/** UTF-8 bytes of a byte-level BPE token string; a token outside the alphabet (an added token) is literal. */
function tokenBytes(token: string): Uint8Array {
  const out = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const b = CHAR_TO_BYTE.get(token.charCodeAt(i));
    if (b === undefined) return utf8.encode(token);
    out[i] = b;
  }
  return out;
}

/**
 * Character offsets of byte-level BPE tokens (GPT-2/Qwen style, e.g. `tokenizer.encode(text).tokens` or
 * `ids.map((id) => tokenizer.id_to_token(id))`): decodes each token to bytes, accumulates them along the UTF-8
 * bytes of `text`, and maps the byte range `[b0, b1)` of each token to the UTF-16 range
 * `[charStart(b0), charEnd(b1 - 1))`. A token holding part of a multi-byte character gets the whole character;
 * consecutive tokens then overlap.
 *
 * Throws when the tokens do not spell `text` (e.g. text not NFC-normalized like the tokenizer input), except
 * for `opts.specialTokens`, which get an empty span where they do not appear.
 */
export function tokenOffsets(
  text: string,
  tokens: readonly string[],
  opts: TokenOffsetsOptions = {},
): [number, number][] {
  const special = new Set(opts.specialTokens ?? []);
  const bytes = utf8.encode(text);
  // For each byte of `text`: the UTF-16 range of the character it belongs to.
  const charStart = new Int32Array(bytes.length);
  const charEnd = new Int32Array(bytes.length);
  for (let i = 0, b = 0; i < text.length;) {
    const cp = text.codePointAt(i)!;
    const units = cp > 0xffff ? 2 : 1;
    const width = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    charStart.fill(i, b, b + width);
    charEnd.fill(i + units, b, b + width);
    b += width;
    i += units;
  }
  const out: [number, number][] = [];
  let pos = 0;
  for (let t = 0; t < tokens.length; t++) {
    const tb = tokenBytes(tokens[t]);
    let match = pos + tb.length <= bytes.length;
    for (let j = 0; match && j < tb.length; j++) match = bytes[pos + j] === tb[j];
    if (!match || tb.length === 0) {
      if (match || special.has(tokens[t])) {
        const at = pos < bytes.length ? charStart[pos] : text.length;
        out.push([at, at]);
        continue;
      }
      throw new Error(
        `Cannot compute token offsets: token ${t} ("${tokens[t]}") does not match the text at byte ${pos} ` +
          `(char ${
            pos < bytes.length ? charStart[pos] : text.length
          }); expected the tokens of this exact text ` +
          `(NFC-normalized as the tokenizer sees it)`,
      );
    }
    out.push([charStart[pos], charEnd[pos + tb.length - 1]]);
    pos += tb.length;
  }
  if (pos !== bytes.length) {
    throw new Error(
      `Cannot compute token offsets: tokens cover ${pos} bytes, expected all ${bytes.length} bytes of the text`,
    );
  }
  return out;
}
