// The Qwen2 forward and generation on WebGPU against the PyTorch fixtures (tests/reference/make_fixtures.py):
// logits, next-token log-probs and final hidden states at every real position, for tied/untied heads, GQA ratios
// 1 to 5, F32 and BF16 weights, left and right padding; greedy generation token for token; batched generation
// equal to one-at-a-time generation.
import assert from "node:assert/strict";
import { Gpu } from "../core/gpu/device.ts";
import { generate } from "../core/model/generate.ts";
import { loadModel, releaseModel, scoreSequences } from "../core/model/model.ts";
import { assertClose } from "./util/close.ts";
import { fixtureNames, openFixture } from "./util/fixtures.ts";

const gpu = await Gpu.create();

/** Slices of a padded (B, T, X) fixture tensor at each row's real positions. */
function realRows(data: Float32Array, mask: Int32Array, B: number, T: number, X: number): Float32Array[] {
  return Array.from({ length: B }, (_, b) => {
    const rows: number[] = [];
    for (let t = 0; t < T; t++) if (mask[b * T + t]) rows.push(t);
    const out = new Float32Array(rows.length * X);
    rows.forEach((t, i) => out.set(data.subarray((b * T + t) * X, (b * T + t + 1) * X), i * X));
    return out;
  });
}

for (const name of fixtureNames()) {
  Deno.test(`qwen2 forward matches PyTorch: ${name}`, async () => {
    const fx = await openFixture(name);
    const model = await loadModel(fx.dir, { gpu });
    try {
      const { batch: B, seq_len: T } = fx.manifest;
      const V = model.config.vocabSize, C = model.config.hiddenSize;
      const mask = await fx.ints("attention_mask");
      const seqs = await fx.sequences();
      const wantLogits = realRows(await fx.tensor("logits"), mask, B, T, V);
      const wantHidden = realRows(await fx.tensor("last_hidden"), mask, B, T, C);
      const wantLp = await fx.tensor("token_logprobs");
      for (const padSide of ["right", "left"] as const) {
        const got = await scoreSequences(model, seqs, {
          logits: true,
          hidden: true,
          lastLogprobs: true,
          padSide,
        });
        seqs.forEach((s, b) => {
          const what = `${name} row ${b} (${padSide}-padded batch)`;
          // f32 GPU vs f64 reference: logits and log-probs within 1e-4 (the issue asks ≤ 1e-3).
          assertClose(got.logits![b], wantLogits[b], { atol: 1e-4, rtol: 1e-4 }, `logits ${what}`);
          assertClose(got.hidden![b], wantHidden[b], { atol: 1e-4, rtol: 1e-4 }, `hidden ${what}`);
          const start = mask.subarray(b * T, (b + 1) * T).indexOf(1);
          const lp = wantLp.subarray(b * (T - 1) + start, b * (T - 1) + start + s.length - 1);
          assertClose(got.tokenLogprobs[b], lp, { atol: 1e-4, rtol: 1e-5 }, `token log-probs ${what}`);
          const last = wantLogits[b].subarray((s.length - 1) * V, s.length * V);
          const m = Math.max(...last), lse = m + Math.log(last.reduce((a, x) => a + Math.exp(x - m), 0));
          assertClose(
            got.lastLogprobs![b],
            last.map((x) => x - lse),
            { atol: 1e-4, rtol: 1e-5 },
            `last ${what}`,
          );
        });
      }
    } finally {
      releaseModel(model);
      await fx.close();
    }
  });

  Deno.test(`qwen2 greedy generation matches PyTorch token for token: ${name}`, async () => {
    const fx = await openFixture(name);
    const model = await loadModel(fx.dir, { gpu });
    try {
      const seqs = await fx.sequences();
      const want = await fx.ints("greedy_tokens");
      const n = fx.manifest.max_new_tokens;
      const batched = await generate(model, seqs, { maxNewTokens: n, temperature: 0, stopIds: [] });
      seqs.forEach((_, b) => {
        assert.deepEqual(
          batched.tokens[b],
          Array.from(want.subarray(b * n, (b + 1) * n)),
          `${name} row ${b}`,
        );
      });
      // Chunked readbacks: one per chunk of 16 steps plus the final read, not one per token.
      assert.ok(batched.readbacks <= Math.ceil(n / 16) + 1, `readbacks ${batched.readbacks}`);
      for (const [b, s] of seqs.entries()) {
        const single = await generate(model, [s], { maxNewTokens: n, temperature: 0, stopIds: [] });
        assert.deepEqual(single.tokens[0], batched.tokens[b], `${name}: batched row ${b} equals alone`);
      }
    } finally {
      releaseModel(model);
      await fx.close();
    }
  });
}

Deno.test("sampled generation: a sequence gets the same tokens alone as in a batch", async () => {
  const fx = await openFixture("gqa3_untied_f32");
  const model = await loadModel(fx.dir, { gpu });
  try {
    const seqs = await fx.sequences();
    const opts = { maxNewTokens: 12, temperature: 0.9, topK: 20, topP: 0.95, seed: 1234, stopIds: [] };
    const all = await generate(model, seqs, { ...opts, sequenceSeeds: [11, 22, 33] });
    const alone = await generate(model, [seqs[1]], { ...opts, sequenceSeeds: [22] });
    assert.deepEqual(alone.tokens[0], all.tokens[1]);
    assertClose(alone.logprobs[0], all.logprobs[1], { atol: 1e-5, rtol: 1e-5 }, "sampled log-probs");
    const again = await generate(model, seqs, { ...opts, sequenceSeeds: [11, 22, 33] });
    assert.deepEqual(again.tokens, all.tokens, "same seed, same tokens");
    const other = await generate(model, seqs, { ...opts, seed: 99, sequenceSeeds: [11, 22, 33] });
    assert.notDeepEqual(other.tokens, all.tokens, "another seed changes the samples");
  } finally {
    releaseModel(model);
    await fx.close();
  }
});
