// policyConfidence (core/rm/eval_rm.ts): the mean log-prob of a sample's tokens under the policy, prompted as it
// was sampled. Checked without reusing its slicing: log p(prompt + sample) − log p(prompt) summed over tokens is
// the sample's total log-prob (the prompt's own next-token terms cancel), divided by the sample's token count.
import assert from "node:assert/strict";
import { Gpu } from "../core/gpu/device.ts";
import { randomModel, releaseModel, scoreSequences } from "../core/model/model.ts";
import { policyConfidence } from "../core/rm/eval_rm.ts";
import { rmPromptText } from "../core/rm/prm.ts";
import { tinyPresetConfig, writeTinyTokenizer } from "../core/data/tiny_tokenizer.ts";
import { loadTokenizer } from "../core/tokenizer/tokenizer.ts";

const gpu = await Gpu.create();

Deno.test("policyConfidence: mean token log-prob of each sample, in input order; the calculator's tokens left out", async () => {
  const dir = await Deno.makeTempDir({ prefix: "policy_confidence_test_" });
  await writeTinyTokenizer(dir);
  const tokenizer = await loadTokenizer(dir);
  const model = randomModel(gpu, tinyPresetConfig(), { seed: 4, std: 0.2 });
  try {
    const problems = [{ question: "Tom has 3 pens. How many?" }, {
      question: "Ann buys 12 eggs and eats 5.",
    }];
    // 70 samples in all: the 64-sequence scoring batches split inside problem 1's list.
    const samples = [
      ["He has 3 pens.\n#### 3", "3+0=<<3+0=3>>3\n#### 3"],
      Array.from({ length: 68 }, (_, j) => `12-5=<<12-5=7>>7 eggs, try ${j}.\n#### ${7 + (j % 3)}`),
    ];
    const got = await policyConfidence({ model, tokenizer }, problems, samples);
    assert.deepEqual(got.map((g) => g.length), [2, 68]);
    const sum = (a: Float32Array) => a.reduce((x, v) => x + v, 0);
    for (const [i, p] of problems.entries()) {
      const prompt = tokenizer.encode(rmPromptText(tokenizer, p.question), { addSpecialTokens: false });
      const [pr] = (await scoreSequences(model, [prompt])).tokenLogprobs;
      for (const j of [0, 1, samples[i].length - 1]) {
        const ids = tokenizer.encode(samples[i][j], { addSpecialTokens: false });
        const [full] = (await scoreSequences(model, [[...prompt, ...ids]])).tokenLogprobs;
        const want = (sum(full) - sum(pr)) / ids.length;
        assert.ok(
          Math.abs(got[i][j] - want) <= 1e-4 + 1e-4 * Math.abs(want),
          `${i}/${j}: ${got[i][j]} vs ${want}`,
        );
      }
    }
    // With the calculator, the value and ">>" it writes after "<<12-5=" are not the policy's: left out. The
    // expected tokens come from the sample's character offsets, not from the calculator's state machine.
    const text = "12-5=<<12-5=7>>7 eggs.\n#### 7";
    const [calc] = await policyConfidence({ model, tokenizer }, [problems[1]], [[text]], {
      calculator: true,
    });
    const prompt = tokenizer.encode(rmPromptText(tokenizer, problems[1].question), {
      addSpecialTokens: false,
    });
    const enc = tokenizer.encodeWithOffsets(text, { addSpecialTokens: false });
    const w0 = text.indexOf("7>>"), w1 = w0 + 3; // the characters the calculator writes
    const [full] = (await scoreSequences(model, [[...prompt, ...enc.ids]])).tokenLogprobs;
    let s = 0, n = 0, skipped = 0;
    enc.offsets.forEach(([a, b], k) => {
      if (a >= w0 && b <= w1) return void skipped++;
      s += full[prompt.length - 1 + k], n++;
    });
    assert.ok(skipped >= 2, `the tokenizer splits "7>>" into ${skipped} tokens`);
    assert.ok(Math.abs(calc[0] - s / n) <= 1e-4 + 1e-4 * Math.abs(s / n), `${calc[0]} vs ${s / n}`);
    const [plain] = await policyConfidence({ model, tokenizer }, [problems[1]], [[text]]);
    assert.notEqual(plain[0], calc[0]);
  } finally {
    releaseModel(model);
    await Deno.remove(dir, { recursive: true });
  }
});
