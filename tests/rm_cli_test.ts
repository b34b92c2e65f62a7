// The reward-model commands end to end on tiny settings: train-prm (random tiny preset), train-orm (trunk from a
// saved policy, policy samples), score (PRM + ORM, shaping) and eval-rm (step level + best-of-N), all as
// subprocesses of cli/main.ts; usage errors exit 2 with a message.
import assert from "node:assert/strict";
import { tinyPresetConfig, writeTinyTokenizer } from "../core/data/tiny_tokenizer.ts";
import { Gpu } from "../core/gpu/device.ts";
import { randomModel, releaseModel, saveModel } from "../core/model/model.ts";
import { runCli } from "./util/cli.ts";

const cli = (...args: string[]) => runCli(args);

const dir = await Deno.makeTempDir({ prefix: "rm_cli_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

/** A random tiny-preset policy with the tiny tokenizer, saved like the SFT output. */
async function savePolicy(path: string): Promise<void> {
  const gpu = await Gpu.create();
  await writeTinyTokenizer(`${dir}/tok`);
  const model = randomModel(gpu, tinyPresetConfig(), { seed: 2 });
  await saveModel(model, path, { tokenizerDir: `${dir}/tok` });
  releaseModel(model);
}

const TINY = [
  "--train-problems",
  "3",
  "--steps",
  "2",
  "--batch-size",
  "2",
  "--eval-problems",
  "2",
  "--quiet",
];

Deno.test("train-prm, train-orm, score and eval-rm run end to end on the tiny preset", async () => {
  await savePolicy(`${dir}/policy`);
  const prm = await cli(
    "train-prm",
    ...TINY,
    "--policy",
    "none",
    "--corruptions",
    "1",
    "--label-mode",
    "independent",
    "--add-layers",
    "1",
    "--out",
    `${dir}/prm`,
  );
  assert.equal(prm.code, 0, prm.stderr);
  const prmCfg = JSON.parse(await Deno.readTextFile(`${dir}/prm/final/config.json`));
  assert.deepEqual(prmCfg.architectures, ["Qwen2ForTokenClassification"]);
  assert.equal(prmCfg.prm_step_convention.separator, "\n");
  assert.match(prmCfg.prm_training_labels, /^exact, independent: /);
  assert.equal(prmCfg.num_hidden_layers, 3, "the tiny preset's 2 layers + 1 added");
  assert.equal(prmCfg.added_layers, 1);
  const metrics = (await Deno.readTextFile(`${dir}/prm/metrics.jsonl`)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  assert.deepEqual(metrics.map((m) => m.kind), ["train", "train", "eval"]);
  assert.ok(metrics[2].synthetic.prm.auc >= 0 && metrics[2].synthetic.prm.auc <= 1);
  assert.match(prm.stdout, /PRM step-level .*AUC=/);

  const orm = await cli(
    "train-orm",
    ...TINY,
    "--policy",
    `${dir}/policy`,
    "--samples-per-question",
    "1",
    "--max-new-tokens",
    "6",
    "--add-layers",
    "2",
    "--out",
    `${dir}/orm`,
  );
  assert.equal(orm.code, 0, orm.stderr);
  const ormCfg = JSON.parse(await Deno.readTextFile(`${dir}/orm/final/config.json`));
  const policyCfg = JSON.parse(await Deno.readTextFile(`${dir}/policy/config.json`));
  assert.equal(ormCfg.num_hidden_layers, policyCfg.num_hidden_layers + 2);
  assert.deepEqual(ormCfg.architectures, ["Qwen2ForSequenceClassification"]);

  const solution = "He buys 3*4=<<3*4=12>>12 pens.\nHe gives away 5, so 12-5=<<12-5=7>>7 pens.\n#### 7";
  const score = await cli(
    "score",
    "--prm",
    `${dir}/prm/final`,
    "--orm",
    `${dir}/orm/final`,
    "--question",
    "Tom buys 3 packs of 4 pens and gives 5 away. How many pens does he have?",
    "--solution",
    solution,
    "--gold",
    "7",
    "--shaping",
    "delta",
    "--json",
  );
  assert.equal(score.code, 0, score.stderr);
  const o = JSON.parse(score.stdout);
  assert.equal(o.steps.length, 3);
  assert.equal(o.stepScores.length, 3);
  assert.ok(o.ormScore > 0 && o.ormScore < 1);
  assert.equal(o.success, 1);
  const ret = o.shapedRewards.reduce((a: number, x: number) => a + x, 0); // Delta telescopes to r_1
  assert.ok(Math.abs(ret - o.stepScores[0]) < 1e-9);

  // eval-rm on 2 problems with one corruption each, policy samples saved to (or replayed from) samples.jsonl.
  const evalRm = (...more: string[]) =>
    cli(
      "eval-rm",
      ...["--prm", `${dir}/prm/final`, "--orm", `${dir}/orm/final`, "--problems", "2", "--corruptions", "1"],
      ...["--samples", `${dir}/samples.jsonl`, "--json", ...more],
    );
  const ev = await evalRm("--policy", `${dir}/policy`, "--n", "2", "--max-new-tokens", "6");
  assert.equal(ev.code, 0, ev.stderr);
  const r = JSON.parse(ev.stdout);
  assert.equal(r.problems, 2);
  assert.equal(r.synthetic.solutions, 4);
  assert.deepEqual(Object.keys(r.bestOfN.byN), ["1", "2"]);
  for (
    const k of ["prm_min", "prm_product", "prm_last", "orm", "policy_logp", "logp_vote", "majority", "random"]
  ) {
    assert.ok(k in r.bestOfN.byN["2"], `best-of-2 has ${k}`);
  }
  assert.ok("oracle" in r.bestOfN.byN["2"] && "mean" in r.bestOfN.byN["2"]);
  assert.equal(r.policy.samples, 4);
  for (const k of ["prm_min", "prm_product", "prm_last", "orm", "policy_logp"]) {
    const w = r.bestOfN.withinProblem[k];
    assert.ok(w.pairs >= 0 && w.pairs <= 2 && w.problems <= 2, `within-problem ${k}: ${JSON.stringify(w)}`);
  }
  // The saved samples replay without the policy and give the same best-of-N table.
  const saved = (await Deno.readTextFile(`${dir}/samples.jsonl`)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  assert.deepEqual(saved.map((x) => x.samples.length), [2, 2]);
  const replay = await evalRm("--policy", `${dir}/policy`);
  assert.equal(replay.code, 0, replay.stderr);
  assert.deepEqual(JSON.parse(replay.stdout).bestOfN, r.bestOfN);
  // Without a policy the replay has no confidence baseline, and the rest of the table is unchanged.
  const bare = await evalRm("--policy", "none");
  assert.equal(bare.code, 0, bare.stderr);
  const b = JSON.parse(bare.stdout).bestOfN;
  assert.ok(!("policy_logp" in b.byN["2"]) && !("policy_logp" in b.withinProblem));
  const { policy_logp: _a, logp_vote: _b, ...rest } = r.bestOfN.byN["2"];
  assert.deepEqual(b.byN["2"], rest);
});

Deno.test("reward-model commands: usage errors exit 2, missing models exit 1, both with a message", async () => {
  const mc = await cli("train-prm", "--labels", "mc", "--policy", "none");
  assert.equal(mc.code, 2);
  const mode = await cli("train-prm", "--label-mode", "prefix", "--policy", "none");
  assert.equal(mode.code, 2);
  assert.match(mode.stderr, /label-mode/);
  assert.match(mc.stderr, /--labels mc .* need a policy/);
  const num = await cli("train-prm", "--number-labels", "--label-mode", "independent", "--policy", "none");
  assert.equal(num.code, 2);
  assert.match(num.stderr, /--number-labels needs --labels exact and --label-mode first_error/);
  const bad = await cli("train-orm", "--steps", "x");
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--steps must be a number, got "x"/);
  const shaping = await cli("score", "--prm", "none", "--orm", "none", "--question", "q", "--solution", "s");
  assert.equal(shaping.code, 2);
  assert.match(shaping.stderr, /no reward model/);
  const missing = await cli("eval-rm", "--prm", `${dir}/nope`, "--policy", "none");
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /eval-rm: Cannot load model/);
});
