// GSM8K calculator (core/model/calculator.ts, shaders/calculator.wgsl): the reference state machine on known
// annotations, the GPU `update`/`force` kernels against the reference over random token streams, and decoding
// with the calculator through generate().
import fc from "fast-check";
import assert from "node:assert/strict";
import { Batch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { upload } from "../core/gpu/io.ts";
import {
  CALC_STATE_WORDS,
  calculatorFor,
  calculatorForce,
  calculatorState,
  calculatorStep,
  calculatorTable,
  calculatorUpdate,
  calculatorWritten,
  createCalculatorRun,
  forcedToken,
  releaseCalculatorRun,
} from "../core/model/calculator.ts";
import { generate } from "../core/model/generate.ts";
import { randomModel, releaseModel } from "../core/model/model.ts";
import { loadTokenizer } from "../core/tokenizer/tokenizer.ts";
import { miniConfig, tinyTokenizer } from "./util/mini.ts";
import { sharedPath } from "./util/shared.ts";

const gpu = await Gpu.create();
const tokenizer = tinyTokenizer();
const V = 512;
const table = calculatorFor(tokenizer, V);
const enc = (s: string) => tokenizer.encode(s, { addSpecialTokens: false });

/** Feeds `text` to a fresh reference state, then lets the calculator write while it has tokens queued. */
function completeRef(text: string): string {
  const s = calculatorState();
  for (const t of enc(text)) calculatorStep(table, s, t);
  const out: number[] = [];
  for (let f = forcedToken(s); f !== null; f = forcedToken(s)) {
    assert.equal(calculatorStep(table, s, f), true);
    out.push(f);
  }
  return tokenizer.decode(out);
}

Deno.test("calculator reference: values of annotations, precedence, and where it stays silent", () => {
  assert.equal(completeRef("Tom buys 4*12=<<4*12="), "48>>");
  assert.equal(completeRef("<<2+3*4="), "14>>");
  assert.equal(completeRef("so <<10-2*3="), "4>>");
  assert.equal(completeRef("<<12/4*3="), "9>>");
  assert.equal(completeRef("<<3-5="), "-2>>");
  assert.equal(completeRef("<< 7 + 8 ="), "15>>");
  assert.equal(completeRef("<<1000000*3000="), ""); // beyond ±2e9
  assert.equal(completeRef("<<7/2="), ""); // inexact division
  assert.equal(completeRef("<<5/0="), "");
  assert.equal(completeRef("<<3.5*2="), ""); // not an integer expression
  assert.equal(completeRef("<<*3="), ""); // no first operand
  assert.equal(completeRef("4*12="), ""); // outside an annotation
  assert.equal(completeRef("<<4*12=48>> and 5=<<"), ""); // closed, and `=<<` opens a new one
  assert.equal(completeRef("<<4*12=<<"), ""); // bytes after `=` in its token: the model wrote on itself
  assert.equal(completeRef("< <4*3="), "");
  assert.equal(completeRef("<<1234567890+1="), ""); // a 10-digit number
});

Deno.test("calculator reference: the digit, minus and closing tokens are single tokens of the tokenizer", () => {
  for (let d = 0; d < 10; d++) assert.deepEqual(enc(String(d)), [table.words[d]]);
  assert.deepEqual(enc("-"), [table.words[10]]);
  assert.deepEqual(enc(">>"), Array.from(table.words.subarray(12, 12 + table.words[11])));
});

// Tokens that make annotations likely: digits, operators, `<<`, `=`, `=<<`, `>>`, spaces, words.
const PIECES = [..."0123456789", "+", "-", "*", "/", "=", "<<", "=<<", ">>", " ", "<", "pens", ".", "\n"];
const ALPHABET = [...new Set(PIECES.flatMap(enc))];

/** Row streams where a queued token always wins (as in decoding), with the reference's states and marks. */
function streams(choices: number[][]): { tokens: number[][]; forced: boolean[][]; states: Int32Array[] } {
  const tokens: number[][] = [], forced: boolean[][] = [], states: Int32Array[] = [];
  for (const row of choices) {
    const s = calculatorState(), toks: number[] = [], marks: boolean[] = [];
    for (const c of row) {
      const t = forcedToken(s) ?? ALPHABET[c % ALPHABET.length];
      marks.push(calculatorStep(table, s, t));
      toks.push(t);
    }
    tokens.push(toks), forced.push(marks), states.push(s);
  }
  return { tokens, forced, states };
}

Deno.test("calculatorWritten marks exactly the values and closings the calculator would write", () => {
  const text = "It costs 4*12=<<4*12=48>>48 and 48-50=<<48-50=-2>>-2, not <<3*3=10>>10.\n#### 48";
  const ids = enc(text), written = calculatorWritten(table, ids);
  const marked = ids.map((id, t) => (written[t] ? `[${tokenizer.decode([id])}]` : tokenizer.decode([id])))
    .join("");
  // a wrong value in the text is not the calculator's (its first digit differs); what follows it no longer is
  assert.equal(
    marked,
    "It costs 4*12=<<4*12=[4][8][>>]48 and 48-50=<<48-50=[-][2][>>]-2, not <<3*3=10>>10.\n#### 48",
  );
  assert.deepEqual(calculatorWritten(table, enc("no annotations here: 4*12=48")).filter(Boolean), []);
});

Deno.test("calculator update kernel equals the reference over random token streams", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 7 }),
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      async (B, T, seed) => {
        let x = seed;
        const rnd = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 8;
        const ref = streams(Array.from({ length: B }, () => Array.from({ length: T }, rnd)));
        const run = createCalculatorRun(gpu, table, Array.from({ length: B }, () => []), T);
        const tokens = upload(gpu, Int32Array.from(ref.tokens.flat()), { shape: [B, T], label: "t.tokens" });
        const done = upload(gpu, new Int32Array(B), { label: "t.done" });
        try {
          const batch = new Batch(gpu, "calc.test");
          for (let step = 0; step < T; step++) calculatorUpdate(batch, run, tokens, done, step, V);
          const reads = [batch.read(run.forced), batch.read(run.state)];
          await batch.submit();
          const [forced, state] = await Promise.all(reads);
          assert.deepEqual(Array.from(forced, (f) => f !== 0), ref.forced.flat());
          for (let b = 0; b < B; b++) {
            const got = Array.from(state.subarray(b * CALC_STATE_WORDS, (b + 1) * CALC_STATE_WORDS));
            assert.deepEqual(got, Array.from(ref.states[b]), `row ${b} state`);
          }
        } finally {
          releaseCalculatorRun(run), tokens.release(), done.release();
        }
      },
    ),
    { numRuns: 25, seed: 11 },
  );
});

Deno.test("calculator force kernel raises exactly the queued token of rows that are not done", async () => {
  const prompts = [enc("<<4*12="), enc("no annotation"), enc("<<9-2="), enc("<<3+3=")];
  const run = createCalculatorRun(gpu, table, prompts, 4);
  const logits = upload(gpu, new Float32Array(prompts.length * V).fill(0.5), {
    shape: [4, V],
    label: "t.lg",
  });
  const done = upload(gpu, Int32Array.from([0, 0, 0, 1]), { label: "t.done" });
  try {
    const batch = new Batch(gpu, "calc.force.test");
    calculatorForce(batch, run, logits, done);
    const r = batch.read(logits);
    await batch.submit();
    const out = await r;
    const raised = (b: number) =>
      [...out.subarray(b * V, (b + 1) * V).keys()].filter((i) => out[b * V + i] > 1);
    assert.deepEqual(raised(0), enc("4"));
    assert.deepEqual(raised(1), []);
    assert.deepEqual(raised(2), enc("7"));
    assert.deepEqual(raised(3), []); // done
    assert.equal(out[enc("4")[0]], Math.fround(1e30));
  } finally {
    releaseCalculatorRun(run), logits.release(), done.release();
  }
});

Deno.test("generate with the calculator writes annotation values and marks them forced", async () => {
  const model = randomModel(gpu, miniConfig({ maxPositionEmbeddings: 128 }), { seed: 3, std: 0.05 });
  try {
    const prompts = [enc("He has 4*12=<<4*12="), enc("Then <<25*7="), enc("Nothing to compute")];
    for (const temperature of [0, 1]) {
      const out = await generate(model, prompts, {
        maxNewTokens: 12,
        temperature,
        seed: 5,
        calculator: table,
        chunk: 5,
      });
      assert.ok(tokenizer.decode(out.tokens[0]).startsWith("48>>"));
      assert.ok(tokenizer.decode(out.tokens[1]).startsWith("175>>"));
      assert.deepEqual(out.forced[0].slice(0, 3), [true, true, true]);
      assert.deepEqual(out.forced[1].slice(0, 4), [true, true, true, true]);
      // every later token: forced exactly where the reference (fed the same tokens) queues one
      prompts.forEach((p, b) => {
        const s = calculatorState();
        for (const t of p) calculatorStep(table, s, t);
        const marks = out.tokens[b].map((t) => {
          const f = forcedToken(s);
          const forced = calculatorStep(table, s, t);
          if (forced) assert.equal(t, f);
          return forced;
        });
        assert.deepEqual(out.forced[b], marks);
      });
      // the forced tokens' log-probs come from the raised logits: 0
      assert.equal(out.logprobs[0][0], 0);
    }
    const plain = await generate(model, prompts, { maxNewTokens: 6, temperature: 0 });
    assert.ok(plain.forced.every((row) => row.every((f) => !f)));
  } finally {
    releaseModel(model);
  }
});

Deno.test("with the real Qwen tokenizer the calculator reproduces GSM8K's own annotation values", async () => {
  const qwenDir = await sharedPath("tokenizers/qwen", "the Qwen calculator check");
  const gsm8k = await sharedPath("data/gsm8k/test.jsonl", "the Qwen calculator check");
  const qwen = await loadTokenizer(qwenDir);
  const qtable = calculatorTable(qwen, 151936);
  const rows = (await Deno.readTextFile(gsm8k)).split("\n").filter((l) => l).slice(0, 300).map((l) =>
    JSON.parse(l) as { answer: string }
  );
  let annotations = 0, forced = 0, same = 0;
  for (const { answer } of rows) {
    annotations += answer.split("<<").length - 1;
    const ids = qwen.encode(answer, { addSpecialTokens: false });
    const s = calculatorState();
    for (let i = 0; i < ids.length; i++) {
      const queued: number[] = [];
      for (const probe = s.slice(); forcedToken(probe) !== null;) {
        queued.push(forcedToken(probe)!);
        calculatorStep(qtable, probe, queued.at(-1)!);
      }
      if (queued.length > 0 && !midQueue(s)) {
        forced++;
        const want = qwen.decode(queued), got = qwen.decode(ids.slice(i, i + queued.length));
        if (want === got) same++;
        // GSM8K sometimes writes integer values with decimals (`75.00>>`): the value itself must agree
        else assert.ok(got.startsWith(want.replace(">>", ".")), `calculator ${want} vs GSM8K ${got}`);
      }
      calculatorStep(qtable, s, ids[i]);
    }
  }
  assert.ok(forced >= 0.85 * annotations, `${forced} of ${annotations} annotations computed`);
  assert.ok(same >= 0.97 * forced, `${same} of ${forced} computed values written as GSM8K writes them`);
});

/** Whether the state is in the middle of a forced queue (its first token already taken): QPOS > 0. */
function midQueue(s: Int32Array): boolean {
  return s[9] > 0;
}
