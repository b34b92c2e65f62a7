// What `deno task train` and `deno task serve` start from on a fresh clone: the shipped tiny models of
// core/assets/tiny (runs/ has none), loadable, with the architectures and the tokenizer of the tiny preset.
import assert from "node:assert/strict";
import { tinyPresetConfig, writeTinyTokenizer } from "../core/data/tiny_tokenizer.ts";
import { loadConfig } from "../core/model/config.ts";
import { ensurePolicy, ensurePrm, SHIPPED_PRM_DIR, SHIPPED_SFT_DIR } from "../core/rl/setup.ts";
import { SHIPPED_TINY } from "../core/train/tiny.ts";

Deno.test("with no runs/: train starts from the shipped SFT policy and its PRM", async () => {
  const cwd = Deno.cwd(), tmp = await Deno.makeTempDir({ prefix: "setup_test_" });
  const logs: string[] = [];
  Deno.chdir(tmp);
  try {
    const policy = await ensurePolicy("auto", { log: (l) => logs.push(l) });
    assert.equal(policy, SHIPPED_SFT_DIR);
    assert.equal(await ensurePrm("auto", policy, { log: (l) => logs.push(l) }), SHIPPED_PRM_DIR);
    assert.match(logs.join("\n"), /No SFT policy in "runs\/sft-tiny\/final": using the shipped one/);
    assert.match(logs.join("\n"), /No PRM in "runs\/prm-tiny\/final": using the shipped one/);
    // An explicit model or PRM is used as given; "none" is no PRM.
    assert.equal(await ensurePolicy("some/dir"), "some/dir");
    assert.equal(await ensurePrm("none", policy), null);
  } finally {
    Deno.chdir(cwd);
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("the shipped models are tiny-preset Qwen2 checkpoints with the tiny tokenizer", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "setup_tok_" });
  try {
    await writeTinyTokenizer(tmp);
    const tokenizer = await Deno.readTextFile(`${tmp}/tokenizer.json`);
    const expected = {
      policy: "Qwen2ForCausalLM",
      prm: "Qwen2ForTokenClassification",
      orm: "Qwen2ForSequenceClassification",
    };
    for (const [role, arch] of Object.entries(expected)) {
      const dir = SHIPPED_TINY[role as keyof typeof SHIPPED_TINY];
      const cfg = await loadConfig(dir);
      assert.equal(cfg.architecture, arch, `${dir}`);
      const preset = tinyPresetConfig();
      for (
        const k of [
          "hiddenSize",
          "intermediateSize",
          "numHiddenLayers",
          "numAttentionHeads",
          "vocabSize",
        ] as const
      ) {
        assert.equal(cfg[k], preset[k], `${dir}: ${k}`);
      }
      if (role !== "policy") assert.equal(cfg.numLabels, 1, `${dir}: num_labels`);
      assert.equal(await Deno.readTextFile(`${dir}/tokenizer.json`), tokenizer, `${dir}: tokenizer`);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
