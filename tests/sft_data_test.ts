// SFT data: row formats → {ids, completionMask} (chat template, end-of-turn target, pre-tokenized with attention
// masks), truncation, errors naming file/line/field, the seeded (length-grouped) data stream, metrics JSONL.
import assert from "node:assert/strict";
import fc from "fast-check";
import { buildTinyTokenizer, generateProblems } from "../core/data/mod.ts";
import { Tokenizer } from "../core/tokenizer/tokenizer.ts";
import { MetricsWriter, readMetrics } from "../core/train/metrics.ts";
import {
  builtinProblems,
  chatExample,
  DataOrder,
  loadSftData,
  parseSftJsonl,
  promptIds,
  truncateExample,
} from "../core/train/sft_data.ts";

const files = buildTinyTokenizer();
const tok = new Tokenizer(files.tokenizerJson, files.tokenizerConfig);
const IM_END = 2;

const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";

Deno.test("a prompt/completion row is the generation prompt (mask 0) then the completion through <|im_end|> (mask 1)", () => {
  const prompt = "Tom has 3 bags of 4 apples. How many apples?";
  const completion = "He has 3*4=<<3*4=12>>12 apples.\n#### 12";
  const ex = chatExample(tok, { prompt, completion });
  const p = promptIds(tok, prompt);
  assert.deepEqual(ex.ids.slice(0, p.length), p, "starts with the generation prompt");
  assert.equal(tok.decode(p), `<|im_start|>user\n${prompt}<|im_end|>\n<|im_start|>assistant\n`);
  assert.deepEqual(ex.completionMask, ex.ids.map((_, i) => (i < p.length ? 0 : 1)));
  const target = ex.ids.slice(p.length);
  assert.equal(target.at(-1), IM_END, "the end-of-turn token is the last target");
  assert.equal(
    tok.decode(target),
    `${completion}<|im_end|>`,
    "nothing after <|im_end|> (ChatML's newline is dropped)",
  );
  // The same conversation rendered whole by the template starts with exactly these tokens.
  const whole = tok.encode(
    `<|im_start|>user\n${prompt}<|im_end|>\n<|im_start|>assistant\n${completion}<|im_end|>`,
    { addSpecialTokens: false },
  );
  assert.deepEqual(ex.ids, whole);
  // GSM8K rows render identically.
  const ds = parseSftJsonl(
    jsonl([{ question: prompt, answer: completion }, { prompt, completion }]),
    "a.jsonl",
    {
      tokenizer: tok,
    },
  );
  assert.deepEqual(ds.examples[0], ex);
  assert.deepEqual(ds.examples[1], ex);
});

Deno.test("pre-tokenized rows keep their ids and masks; attention_mask 0 positions are removed", () => {
  const ds = parseSftJsonl(
    jsonl([
      { input_ids: [5, 6, 7, 8], completion_mask: [0, 0, 1, 1] },
      { input_ids: [9, 5, 6, 0, 0], completion_mask: [0, 1, true, 0, 0], attention_mask: [1, 1, 1, 0, 0] },
      { input_ids: [0, 0, 4, 3], completion_mask: [0, 0, 0, 1], attention_mask: [0, 0, 1, 1] },
    ]),
    "t.jsonl",
    { vocabSize: 10 },
  );
  assert.deepEqual(ds.examples, [
    { ids: [5, 6, 7, 8], completionMask: [0, 0, 1, 1] },
    { ids: [9, 5, 6], completionMask: [0, 1, 1] },
    { ids: [4, 3], completionMask: [0, 1] },
  ]);
  assert.equal(ds.truncated, 0);
});

Deno.test("errors name the file, the line and the field", () => {
  const cases: [unknown[] | string, RegExp][] = [
    ["{not json\n", /"bad\.jsonl": line 1: not valid JSON/],
    [[{ input_ids: [1, 2] }], /line 1: field "completion_mask" must be a list/],
    [
      [{ input_ids: [1, 2], completion_mask: [0] }],
      /line 1: field "completion_mask" has 1 entries, expected 2/,
    ],
    [[{ input_ids: [1, 2], completion_mask: [0, 2] }], /field "completion_mask"\[1\] is 2, expected 0 or 1/],
    [[{ input_ids: [1, -2], completion_mask: [0, 1] }], /field "input_ids"\[1\] is -2/],
    [
      [{ input_ids: [1, 999], completion_mask: [0, 1] }],
      /field "input_ids"\[1\] is 999, outside the model's vocabulary \[0, 512\)/,
    ],
    [
      [{ input_ids: [1, 2], completion_mask: [1, 0] }],
      /line 1: field "completion_mask" has no 1 after the first token/,
    ],
    [[{ input_ids: [] }], /field "input_ids" must be a non-empty list/],
    [[{ prompt: "a", completion: "b" }, { prompt: "a" }], /line 2: field "completion" is missing/],
    [[{ question: "a", answer: 7 }], /line 1: field "answer" must be a string, got 7/],
    [[{ text: "hello" }], /line 1: expected \{"prompt", "completion"\}.*got fields \["text"\]/],
    [[[1, 2]], /line 1: expected a JSON object/],
  ];
  for (const [rows, re] of cases) {
    const text = typeof rows === "string" ? rows : jsonl(rows);
    assert.throws(() => parseSftJsonl(text, "bad.jsonl", { tokenizer: tok, vocabSize: 512 }), re, String(re));
  }
  assert.throws(
    () =>
      parseSftJsonl(jsonl([{ prompt: "a", completion: "b" }]), "x.jsonl", {
        tokenizerError: "no tokenizer.json",
      }),
    /"x\.jsonl": line 1: text rows need a tokenizer \(no tokenizer\.json\)/,
  );
});

Deno.test("truncation keeps the first maxLen tokens and drops examples left without a target", async () => {
  const ex = { ids: [1, 2, 3, 4, 5, 6], completionMask: [0, 0, 0, 0, 1, 1] };
  assert.deepEqual(truncateExample(ex, 5), { ids: [1, 2, 3, 4, 5], completionMask: [0, 0, 0, 0, 1] });
  assert.equal(truncateExample(ex, 6), ex);
  const rows = [
    { input_ids: ex.ids, completion_mask: ex.completionMask },
    { input_ids: [1, 2, 3], completion_mask: [0, 1, 1] },
  ];
  const ds = parseSftJsonl(jsonl(rows), "t.jsonl", { maxLen: 4 });
  assert.deepEqual(ds.examples, [{ ids: [1, 2, 3], completionMask: [0, 1, 1] }]);
  assert.equal(ds.truncated, 1);
  assert.equal(ds.dropped, 1);
  assert.throws(() => parseSftJsonl(jsonl(rows), "t.jsonl", { maxLen: 1 }), /maximum length "1"/);
  const dir = await Deno.makeTempDir({ prefix: "sft_data_test_" });
  try {
    await Deno.writeTextFile(`${dir}/d.jsonl`, jsonl(rows));
    assert.equal((await loadSftData(`${dir}/d.jsonl`, { limit: 1 })).examples.length, 1);
    await assert.rejects(() => loadSftData(`${dir}/missing.jsonl`), /"[^"]*missing\.jsonl": file not found/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("GSM8K JSONL rows (shared data) render like prompt/completion rows", async () => {
  const path = new URL("../../shared/data/gsm8k/train.jsonl", import.meta.url).pathname;
  try {
    await Deno.stat(path);
  } catch {
    throw new Error(`GSM8K not found at "${path}" (shared data missing)`);
  }
  const ds = await loadSftData(path, { tokenizer: tok, limit: 5, maxLen: 4096 });
  assert.equal(ds.examples.length, 5);
  const first = JSON.parse((await Deno.readTextFile(path)).split("\n")[0]);
  assert.deepEqual(ds.examples[0], chatExample(tok, { prompt: first.question, completion: first.answer }));
  const target = ds.examples[0].ids.filter((_, i) => ds.examples[0].completionMask[i] === 1);
  assert.equal(tok.decode(target), `${first.answer}<|im_end|>`);
});

Deno.test("built-in problems: seeded train/test splits in GSM8K form", () => {
  const train = builtinProblems(20, { seed: 3, split: "train" });
  assert.deepEqual(train, builtinProblems(20, { seed: 3, split: "train" }));
  const test = builtinProblems(20, { seed: 0, split: "test" });
  const trainQs = new Set(generateProblems(2000, { seed: 3 }).map((p) => p.question));
  for (const p of test) {
    assert.ok(!trainQs.has(p.question), "test questions never appear in the train split");
    assert.match(p.answer, new RegExp(`#### ${p.finalAnswer}$`));
  }
});

Deno.test("the data stream: one permutation per epoch, seeded, position-addressable across epochs", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 61 }),
      fc.integer({ min: 1, max: 7 }),
      fc.integer({ min: 0, max: 5 }),
      fc.integer({ min: 0, max: 1000 }),
      (n, batch, group, seed) => {
        const lengths = Array.from({ length: n }, (_, i) => (i * 7919) % 13);
        const order = new DataOrder(n, { seed, batchSize: batch, groupBatches: group, lengths });
        for (const e of [0, 1, 2]) {
          assert.deepEqual([...order.epoch(e)].sort((a, b) => a - b), [...Array(n).keys()], "a permutation");
        }
        // Length grouping: every batch of the stream inside one epoch holds length-sorted examples.
        if (group > 1) {
          const stream = order.take(0, 3 * n);
          for (let p = 0; p + batch <= 3 * n; p += batch) {
            if (Math.floor(p / n) !== Math.floor((p + batch - 1) / n)) continue; // straddles two epochs
            const lens = stream.slice(p, p + batch).map((i) => lengths[i]);
            assert.deepEqual(lens, [...lens].sort((x, y) => x - y), `batch at ${p}`);
          }
        }
        // Reading the stream in any split gives the same sequence (what resuming relies on).
        const whole = order.take(0, 3 * n);
        const again = new DataOrder(n, { seed, batchSize: batch, groupBatches: group, lengths });
        const cut = (seed % (3 * n)) + 0;
        assert.deepEqual([...again.take(0, cut), ...again.take(cut, 3 * n - cut)], whole);
        assert.deepEqual(whole.slice(n, 2 * n), order.epoch(1));
      },
    ),
    { seed: 20240611, numRuns: 120 },
  );
  const a = new DataOrder(50, { seed: 1 }).epoch(0), b = new DataOrder(50, { seed: 2 }).epoch(0);
  assert.notDeepEqual(a, b, "the seed changes the order");
  assert.notDeepEqual(new DataOrder(50, { seed: 1 }).epoch(1), a, "each epoch is reshuffled");
  assert.throws(() => new DataOrder(0), /there are 0 examples/);
});

Deno.test("metrics JSONL: records per line, NaN as null, resume drops the records after the checkpoint", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sft_metrics_test_" });
  const path = `${dir}/sub/metrics.jsonl`;
  try {
    const w = await MetricsWriter.open(path);
    for (let s = 1; s <= 5; s++) w.write({ type: "train", step: s, loss: s === 3 ? NaN : 1 / s });
    w.write({ type: "eval", step: 4, accuracy: 0.5 });
    w.close();
    await Deno.writeTextFile(path, '{"type":"train","st', { append: true }); // torn line of a crash
    const all = await readMetrics(path);
    assert.equal(all.length, 6);
    assert.equal(all[2].loss, null);
    const again = await MetricsWriter.open(path, { keepUpToStep: 3 });
    again.write({ type: "train", step: 4, loss: 0.1 });
    again.close();
    assert.deepEqual((await readMetrics(path)).map((r) => [r.type, r.step]), [
      ["train", 1],
      ["train", 2],
      ["train", 3],
      ["train", 4],
    ]);
    const fresh = await MetricsWriter.open(path);
    fresh.close();
    assert.deepEqual(await readMetrics(path), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
