// The CLI entry point: every command answers --help, bad flags exit 2 with a message, and `logprobs`/`generate`
// run end to end on real checkpoints (a PyTorch fixture; a tiny-preset model saved by the project).
import assert from "node:assert/strict";
import { Gpu } from "../core/gpu/device.ts";
import { writeTinyTokenizer } from "../core/data/tiny_tokenizer.ts";
import { tinyPresetConfig } from "../core/data/tiny_tokenizer.ts";
import { loadModel, randomModel, releaseModel, saveModel, scoreSequences } from "../core/model/model.ts";
import { commands } from "../cli/main.ts";
import { assertClose } from "./util/close.ts";
import { FIXTURES_DIR, openFixture } from "./util/fixtures.ts";
import { runCli } from "./util/cli.ts";

const cli = (...args: string[]) => runCli(args);

Deno.test("every CLI command answers --help, unknown flags and commands exit 2", async () => {
  for (const c of commands) {
    const r = await cli(c.name, "--help");
    assert.equal(r.code, 0, `${c.name} --help: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`Usage: .*${c.name}`), `${c.name} --help prints its usage`);
  }
  const top = await cli("--help");
  assert.equal(top.code, 0);
  for (const c of commands) assert.ok(top.stdout.includes(c.name), `main --help lists ${c.name}`);
  const bad = await cli("logprobs", "--bogus");
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--bogus/);
  const unknown = await cli("no-such-command");
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /Unknown command "no-such-command"/);
});

Deno.test("logprobs prints PyTorch's log-probs for a fixture checkpoint as one JSON line", async () => {
  const fx = await openFixture("gqa3_untied_f32");
  try {
    const [seq] = await fx.sequences();
    const r = await cli(
      "logprobs",
      "--model",
      `${FIXTURES_DIR}gqa3_untied_f32`,
      "--ids",
      seq.join(","),
      "--json",
    );
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.equal(lines.length, 1);
    const out = JSON.parse(lines[0]);
    const T = fx.manifest.seq_len;
    const want = (await fx.tensor("token_logprobs")).subarray(0, seq.length - 1); // row 0 is right-padded
    assertClose(out.token_logprobs, want, { atol: 1e-4, rtol: 1e-5 }, "token_logprobs");
    assert.equal(out.last_logprobs.length, 101);
    const mass = out.last_logprobs.reduce((a: number, x: number) => a + Math.exp(x), 0);
    assert.ok(Math.abs(mass - 1) < 1e-4, `last_logprobs sum to ${mass}`);
    assert.ok(T > seq.length);
    const badIds = await cli("logprobs", "--model", `${FIXTURES_DIR}gqa3_untied_f32`, "--ids", "1,x");
    assert.equal(badIds.code, 2);
    assert.match(badIds.stderr, /"x"/);
  } finally {
    await fx.close();
  }
});

Deno.test("a saved tiny-preset model reloads identically and generates through the CLI with its chat template", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cli_test_" });
  const gpu = await Gpu.create();
  try {
    await writeTinyTokenizer(`${dir}/tok`);
    const model = randomModel(gpu, tinyPresetConfig(), { seed: 5, std: 0.2 });
    await saveModel(model, `${dir}/model`, { tokenizerDir: `${dir}/tok` });
    const loaded = await loadModel(`${dir}/model`, { gpu });
    const seq = [[1, 40, 41, 42, 43, 44]];
    const [a, b] = [await scoreSequences(model, seq), await scoreSequences(loaded, seq)];
    assert.deepEqual(
      Array.from(b.tokenLogprobs[0]),
      Array.from(a.tokenLogprobs[0]),
      "bitwise equal after reload",
    );
    releaseModel(model);
    releaseModel(loaded);
    const r = await cli(
      "generate",
      "--model",
      `${dir}/model`,
      "--prompt",
      "What is 2+3?",
      "--max-new-tokens",
      "5",
      "--json",
      "--num",
      "2",
      "--temperature",
      "1",
      "--seed",
      "3",
    );
    assert.equal(r.code, 0, r.stderr);
    const samples = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(samples.length, 2);
    for (const s of samples) {
      assert.equal(typeof s.text, "string");
      assert.ok(s.tokens.length >= 1 && s.tokens.length <= 5);
    }
    const again = await cli(
      "generate",
      "--model",
      `${dir}/model`,
      "--prompt",
      "What is 2+3?",
      "--max-new-tokens",
      "5",
      "--json",
      "--num",
      "2",
      "--temperature",
      "1",
      "--seed",
      "3",
    );
    assert.equal(again.stdout, r.stdout, "same seed, same samples");
  } finally {
    gpu.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});
