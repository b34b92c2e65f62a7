import assert from "node:assert/strict";
import fc from "fast-check";
import { Tokenizer } from "@huggingface/tokenizers";
import { splitSteps, stepEndTokens, type TokenOffset, tokenOffsets } from "../core/rewards/steps.ts";

const QWEN_DIR = new URL("../../shared/tokenizers/qwen/", import.meta.url);
const GSM8K_TEST = new URL("../../shared/data/gsm8k/test.jsonl", import.meta.url);

function readText(url: URL, what: string): string {
  try {
    return Deno.readTextFileSync(url);
  } catch (e) {
    throw new Error(`Cannot read ${what} "${url.pathname}": ${(e as Error).message}`);
  }
}

function loadQwen(): Tokenizer {
  const json = JSON.parse(readText(new URL("tokenizer.json", QWEN_DIR), "Qwen tokenizer"));
  const config = JSON.parse(readText(new URL("tokenizer_config.json", QWEN_DIR), "Qwen tokenizer config"));
  return new Tokenizer(json, config);
}

// Reference: the last token containing character c, by linear scan.
function lastTokenContaining(offsets: readonly TokenOffset[], c: number): number {
  let found = -1;
  for (let t = 0; t < offsets.length; t++) if (offsets[t][0] <= c && c < offsets[t][1]) found = t;
  return found;
}

Deno.test("splitSteps: worked examples", () => {
  const text = "  Step one.\n\n\t Step two  \r\nStep three\n   \n";
  assert.deepEqual(splitSteps(text), [
    { text: "Step one.", start: 2, end: 11 },
    { text: "Step two", start: 15, end: 23 },
    { text: "Step three", start: 27, end: 37 },
  ]);
  assert.deepEqual(splitSteps(""), []);
  assert.deepEqual(splitSteps(" \n \n"), []);
  assert.deepEqual(splitSteps("a ки b ки", { separator: "ки" }), [
    { text: "a", start: 0, end: 1 },
    { text: "b", start: 5, end: 6 },
  ]);
  assert.deepEqual(splitSteps("a\n\nb\nc", { separator: "\n\n" }).map((s) => s.text), ["a", "b\nc"]);
  assert.throws(() => splitSteps("a", { separator: "" }), /separator is empty/);
});

Deno.test("splitSteps: steps are the trimmed non-empty lines, with exact spans", () => {
  const text = fc.array(fc.constantFrom("a", "b", "7", " ", "\t", "\n", "\r\n", ".", "é", "🎉"), {
    maxLength: 60,
  })
    .map((a) => a.join(""));
  fc.assert(
    fc.property(text, (s) => {
      const steps = splitSteps(s);
      assert.deepEqual(
        steps.map((st) => st.text),
        s.split("\n").map((l) => l.trim()).filter((l) => l !== ""),
      );
      let prevEnd = 0;
      for (const st of steps) {
        assert.equal(s.slice(st.start, st.end), st.text);
        assert.ok(st.start >= prevEnd && st.end > st.start);
        assert.ok(!/\s/.test(s[st.start]) && !/\s/.test(s[st.end - 1]));
        prevEnd = st.end;
      }
    }),
    { seed: 11, numRuns: 500 },
  );
});

Deno.test("stepEndTokens: worked example with a token merging text and newline", () => {
  // "Add 2.\nSo 4.\n" tokenized as ["Add", " 2", ".\n", "So", " 4", ".\n"].
  const text = "Add 2.\nSo 4.\n";
  const offsets: TokenOffset[] = [[0, 3], [3, 5], [5, 7], [7, 9], [9, 11], [11, 13]];
  assert.deepEqual(stepEndTokens(splitSteps(text), offsets), [2, 5]);
  // Untrimmed spans with `text`: trailing whitespace is skipped.
  assert.deepEqual(stepEndTokens([{ start: 0, end: 7 }], offsets, { text }), [2]);
  // Characters split over several tokens (multi-byte UTF-8): the last piece completes the step.
  assert.deepEqual(stepEndTokens([{ start: 0, end: 3 }], [[0, 1], [1, 3], [1, 3], [3, 4]]), [2]);
  // Zero-width (special) tokens are skipped.
  assert.deepEqual(stepEndTokens([{ start: 0, end: 2 }], [[0, 2], [2, 2], [2, 3]]), [0]);
});

Deno.test("stepEndTokens: errors name the step and the offsets", () => {
  assert.throws(
    () => stepEndTokens([{ start: 0, end: 5 }], [[0, 2], [2, 4]]),
    /step 0: its last character 4 .*not covered/,
  );
  assert.throws(() => stepEndTokens([{ start: 3, end: 4 }], [[0, 2], [4, 5]]), /not covered/);
  assert.throws(() => stepEndTokens([{ start: 0, end: 1 }], []), /not covered by any token \(0 tokens/);
  assert.throws(() => stepEndTokens([{ start: 2, end: 2 }], [[0, 4]]), /span "\[2, 2\)" is empty/);
  assert.throws(
    () => stepEndTokens([{ start: 0, end: 3 }], [[0, 1], [0.5, 3]]),
    /token 1 has offsets "\[0.5, 3\)"/,
  );
  assert.throws(
    () => stepEndTokens([{ start: 0, end: 3 }], [[2, 3], [0, 2]]),
    /Invalid token offsets: token 1/,
  );
  assert.throws(() => stepEndTokens([{ start: 0, end: 1 }], [[0, 2], [3, 1]]), /start <= end/);
});

Deno.test("stepEndTokens: matches a linear scan on random tokenizations", () => {
  const arb = fc.record({
    text: fc.array(fc.constantFrom("x", "y", " ", "\n", ".", "3"), { minLength: 1, maxLength: 80 }).map((a) =>
      a.join("")
    ),
    cuts: fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 80 }),
  });
  fc.assert(
    fc.property(arb, ({ text, cuts }) => {
      // Random contiguous tokenization of the whole text.
      const offsets: TokenOffset[] = [];
      for (let i = 0, k = 0; i < text.length; k++) {
        const e = Math.min(text.length, i + cuts[k % cuts.length]);
        offsets.push([i, e]);
        i = e;
      }
      const steps = splitSteps(text);
      const ends = stepEndTokens(steps, offsets);
      steps.forEach((st, k) => assert.equal(ends[k], lastTokenContaining(offsets, st.end - 1)));
    }),
    { seed: 23, numRuns: 500 },
  );
});

// Independent GPT-2 bytes_to_unicode table (as in openai/gpt-2 encoder.py).
function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const table: string[] = [];
  bs.forEach((b, i) => table[b] = String.fromCharCode(cs[i]));
  return table;
}

Deno.test("tokenOffsets: random byte-level tokenizations of unicode text", () => {
  const table = bytesToUnicode();
  const enc = new TextEncoder();
  const arb = fc.record({
    text: fc.string({ unit: "grapheme", minLength: 1, maxLength: 30 }),
    cuts: fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 40 }),
  });
  fc.assert(
    fc.property(arb, ({ text, cuts }) => {
      const bytes = enc.encode(text);
      const tokens: string[] = [];
      const ranges: [number, number][] = [];
      for (let i = 0, k = 0; i < bytes.length; k++) {
        const e = Math.min(bytes.length, i + cuts[k % cuts.length]);
        tokens.push(Array.from(bytes.subarray(i, e), (b) => table[b]).join(""));
        ranges.push([i, e]);
        i = e;
      }
      const offsets = tokenOffsets(text, tokens);
      assert.equal(offsets.length, tokens.length);
      assert.equal(offsets[0][0], 0);
      assert.equal(offsets[offsets.length - 1][1], text.length);
      const boundary = (b: number) => b === bytes.length || (bytes[b] & 0xc0) !== 0x80;
      offsets.forEach(([s, e], t) => {
        assert.ok(s < e, `token ${t} has an empty span`);
        if (t > 0) assert.ok(s >= offsets[t - 1][0] && e >= offsets[t - 1][1] && s <= offsets[t - 1][1]);
        const [b0, b1] = ranges[t];
        if (boundary(b0) && boundary(b1)) {
          assert.deepEqual(enc.encode(text.slice(s, e)), bytes.subarray(b0, b1));
        }
      });
      const steps = splitSteps(text);
      const ends = stepEndTokens(steps, offsets);
      steps.forEach((st, k) => assert.equal(ends[k], lastTokenContaining(offsets, st.end - 1)));
    }),
    { seed: 5, numRuns: 500 },
  );
});

Deno.test("tokenOffsets: errors and special tokens", () => {
  const tok = loadQwen();
  const text = "Total: 5.";
  const { tokens } = tok.encode(text);
  const withEos = [...tokens, "<|im_end|>"];
  const eosError = new RegExp(
    `token ${tokens.length} \\("<\\|im_end\\|>"\\) does not match the text at byte 9`,
  );
  assert.throws(() => tokenOffsets(text, withEos), eosError);
  assert.deepEqual(tokenOffsets(text, withEos, { specialTokens: ["<|im_end|>"] }).at(-1), [9, 9]);
  assert.throws(() => tokenOffsets(text + "!", tokens), /cover 9 bytes, expected all 10 bytes/);
  // The tokenizer NFC-normalizes: the tokens of "e\u0301" spell "é", not the NFD input.
  assert.throws(() => tokenOffsets("cafe\u0301", tok.encode("cafe\u0301").tokens), /NFC-normalized/);
});

Deno.test("tokenOffsets + stepEndTokens: real Qwen tokenizer on GSM8K answers", () => {
  const tok = loadQwen();
  const rows = readText(GSM8K_TEST, "GSM8K test split").split("\n").filter((l) => l !== "").slice(0, 250);
  const texts = rows.map((l) => JSON.parse(l).answer as string);
  texts.push("Café costs €3.50 per cup.\n日本 has 2 cups 🎉🎉.\n\n#### 7", "a\r\nb\n\n\nc  \n");
  let merged = 0;
  let steps = 0;
  for (const text of texts) {
    const { ids, tokens } = tok.encode(text);
    const offsets = tokenOffsets(text, tokens);
    const decode = (slice: number[]) =>
      slice.length === 0 ? "" : tok.decode(slice, { clean_up_tokenization_spaces: false });
    offsets.forEach(([s, e], t) => {
      const piece = decode([ids[t]]);
      if (!piece.includes("\uFFFD")) {
        assert.equal(text.slice(s, e), piece, `token ${t} of ${JSON.stringify(text)}`);
      }
    });
    const split = splitSteps(text);
    const ends = stepEndTokens(split, offsets);
    split.forEach((st, k) => {
      // The prefix through the end token spells the whole step; one token less does not.
      const upTo = text.slice(0, st.end);
      assert.ok(decode(ids.slice(0, ends[k] + 1)).startsWith(upTo), `step ${k} of ${JSON.stringify(text)}`);
      assert.ok(!decode(ids.slice(0, ends[k])).startsWith(upTo), `step ${k} of ${JSON.stringify(text)}`);
      if (/\n/.test(decode([ids[ends[k]]]))) merged++;
    });
    steps += split.length;
  }
  // Qwen merges a step's final "." with the newline(s) after it (".Ċ"); the alignment must handle it.
  assert.ok(merged > 100, `expected many step-end tokens merged with a newline, got ${merged} of ${steps}`);
});
