// `train` and `eval` end to end through the CLI on a tiny random checkpoint: flags and --config, metrics.jsonl
// with every per-iteration metric, the SVG plot, atomic checkpoints (policy + critic in HF layout, optimiser
// states, trainer state), resuming an interrupted run to bitwise the same weights, per-problem eval JSONL.
import assert from "node:assert/strict";
import { FIRST_ERROR_KINDS } from "../core/rl/error_analysis.ts";
import { buildTinyTokenizer } from "../core/data/tiny_tokenizer.ts";
import { Gpu } from "../core/gpu/device.ts";
import { randomModel, releaseModel, saveModel } from "../core/model/model.ts";
import { SafetensorsFile } from "../core/model/safetensors.ts";
import { createPrm } from "../core/rm/prm.ts";
import { parseTrainConfigJson, TRAIN_DEFAULTS, TRAIN_FLAG_DOCS, trainFlag } from "../core/rl/train_config.ts";
import { readMetrics } from "../core/train/metrics.ts";
import { parseTrainArgs } from "../cli/train.ts";
import { runCli } from "./util/cli.ts";
import { miniConfig } from "./util/mini.ts";

const gpu = await Gpu.create();
const dir = await Deno.makeTempDir({ prefix: "train_cli_test_" });

/** A tiny random policy and PRM with the tiny tokenizer, saved as HF checkpoints. */
async function setup(): Promise<{ policy: string; prm: string }> {
  const tok = `${dir}/tok`;
  const files = buildTinyTokenizer();
  await Deno.mkdir(tok, { recursive: true });
  await Deno.writeTextFile(`${tok}/tokenizer.json`, JSON.stringify(files.tokenizerJson));
  await Deno.writeTextFile(`${tok}/tokenizer_config.json`, JSON.stringify(files.tokenizerConfig));
  const cfg = miniConfig();
  const policy = randomModel(gpu, cfg, { seed: 1, std: 0.05 });
  await saveModel(policy, `${dir}/policy`, { tokenizerDir: tok });
  releaseModel(policy);
  const prm = createPrm(randomModel(gpu, cfg, { seed: 2, std: 0.05 }), { std: 0.5 });
  await saveModel(prm, `${dir}/prm`, { tokenizerDir: tok });
  releaseModel(prm);
  return { policy: `${dir}/policy`, prm: `${dir}/prm` };
}
const models = await setup();

const cli = (args: string[]) => runCli(args, { NO_PROGRESS: "1" });

async function weights(path: string): Promise<Map<string, Float32Array>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out = new Map<string, Float32Array>();
    for (const info of f.list()) out.set(info.name, await f.readTensorF32(info.name));
    return out;
  } finally {
    await f.close();
  }
}

const TINY = [
  ...["--model", models.policy, "--prm", models.prm, "--critic", "prm", "--train-problems", "50"],
  ...["--questions-per-iteration", "2", "--samples-per-question", "2", "--max-new-tokens", "12"],
  ...["--eval-problems", "3", "--eval-max-new-tokens", "8", "--epochs", "2", "--mini-batch-size", "2"],
  ...["--lr", "1e-3", "--kl-target", "0.05", "--seed", "3"],
];

Deno.test("train --help lists every setting with its default; bad flags and configs are usage errors", async () => {
  const h = await cli(["train", "--help"]);
  assert.equal(h.code, 0);
  for (const [field] of TRAIN_FLAG_DOCS) {
    assert.ok(h.stdout.includes(trainFlag(field)), `--help lacks ${trainFlag(field)}`);
  }
  const flat = h.stdout.replace(/\s+/g, " ");
  assert.ok(flat.includes("(default clip_delta)") && flat.includes("--no-whiten turns it off"), flat);
  const bad = await cli(["train", "--epochs", "0"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /Invalid --epochs 0: expected an integer ≥ 1/);
  assert.equal((await cli(["train", "--bogus"])).code, 2);
  const exactOnGsm = await cli(["train", "--prm", "exact", "--data", "x.jsonl"]);
  assert.equal(exactOnGsm.code, 2);
  assert.match(exactOnGsm.stderr, /Invalid --prm "exact".*needs --data builtin/);
  assert.match((await cli(["train", "--prm", "exact", "--critic", "prm"])).stderr, /Invalid --critic "prm"/);
  assert.match(
    (await cli(["train", "--optimizer", "adam"])).stderr,
    /Invalid --optimizer "adam": expected adamw or sgd/,
  );
  await Deno.writeTextFile(
    `${dir}/cfg.json`,
    JSON.stringify({ "samples-per-question": 3, shaping: "delta", whiten: false }),
  );
  const { config } = await parseTrainArgs([
    "--config",
    `${dir}/cfg.json`,
    "--shaping",
    "clip",
    "--no-final-step-zero",
  ]);
  assert.deepEqual([config.samplesPerQuestion, config.shaping, config.whiten, config.finalStepZero], [
    3,
    "clip",
    false,
    false,
  ]);
  assert.equal(config.lr, TRAIN_DEFAULTS.lr);
  assert.throws(() => parseTrainConfigJson('{"lrr": 1}', "x.json"), /unknown setting "lrr"/);
  assert.throws(() => parseTrainConfigJson('{"lr": "big"}', "x.json"), /expected a number/);
});

Deno.test("train: metrics, plot, checkpoints, and a resumed run ends with the same weights", async () => {
  const a = await cli([
    "train",
    ...TINY,
    "--iterations",
    "3",
    "--save-every",
    "1",
    "--save-total-limit",
    "0",
    "--out",
    `${dir}/a`,
  ]);
  assert.equal(a.code, 0, a.stderr);
  assert.match(a.stdout, /PPO summary/);
  const recs = await readMetrics(`${dir}/a/metrics.jsonl`);
  const its = recs.filter((r) => r.type === "iteration");
  assert.deepEqual(its.map((r) => r.iteration), [1, 2, 3]);
  for (
    const k of [
      "reward_total",
      "reward_success",
      "reward_process",
      "reward_kl_penalty",
      "kl",
      "kl_coef",
      "entropy",
      "clip_frac",
      "value_loss",
      "explained_variance",
      "accuracy",
      "response_length",
      "steps_per_solution",
      "repeated_step_rate",
      "tokens_per_s",
      "time_generation_s",
      "time_scoring_s",
      "time_training_s",
    ]
  ) assert.equal(typeof its[2][k], "number", `metric ${k}`);
  assert.deepEqual(recs.filter((r) => r.type === "eval").map((r) => r.iteration), [0, 3]);
  assert.equal(recs.at(-1)!.type, "summary");
  assert.notEqual(its[2].kl_coef, its[0].kl_coef, "the adaptive KL coefficient moves");
  const svg = await Deno.readTextFile(`${dir}/a/metrics.svg`);
  assert.ok(svg.startsWith("<svg") && svg.includes("<polyline"), "metrics.svg is an SVG plot");
  const evalRows = (await Deno.readTextFile(`${dir}/a/eval.jsonl`)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  assert.equal(evalRows.length, 3);
  const ck = `${dir}/a/checkpoint-2`;
  for (
    const f of [
      "policy/config.json",
      "policy/model.safetensors",
      "policy/tokenizer.json",
      "critic/config.json",
      "critic/model.safetensors",
      "policy_optimizer.safetensors",
      "critic_optimizer.safetensors",
      "trainer_state.json",
    ]
  ) await Deno.stat(`${ck}/${f}`);
  const st = JSON.parse(await Deno.readTextFile(`${ck}/trainer_state.json`));
  assert.equal(st.iteration, 2);
  assert.equal(st.config.seed, 3);
  assert.equal(st.rng.iteration, 2);
  assert.equal(
    JSON.parse(await Deno.readTextFile(`${ck}/critic/config.json`)).architectures[0],
    "Qwen2ForTokenClassification",
  );
  // Interrupted after iteration 2: drop what came later and resume.
  await Deno.mkdir(`${dir}/b`);
  await Deno.rename(ck, `${dir}/b/checkpoint-2`);
  const b = await cli(["train", ...TINY, "--iterations", "3", "--resume", "--out", `${dir}/b`]);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stderr, /Resuming from .*checkpoint-2.* at iteration 2/);
  for (const part of ["policy", "critic"]) {
    const [wa, wb] = [
      await weights(`${dir}/a/final/${part}/model.safetensors`),
      await weights(`${dir}/b/final/${part}/model.safetensors`),
    ];
    for (const [name, v] of wa) {
      assert.deepEqual(wb.get(name), v, `${part} tensor ${name} differs after resuming`);
    }
  }
  const again = await cli(["train", ...TINY, "--iterations", "1", "--out", `${dir}/b`]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already has checkpoints/);
});

Deno.test("train --advantage rloo runs without a critic (its baseline is the question's other samples)", async () => {
  const r = await cli(["train", ...TINY, "--advantage", "rloo", "--iterations", "1", "--out", `${dir}/rloo`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /critic none/);
  const it = (await readMetrics(`${dir}/rloo/metrics.jsonl`)).find((m) => m.type === "iteration")!;
  assert.equal(it.value_loss, 0);
  assert.equal(it.critic_grad_norm, 0);
  await Deno.stat(`${dir}/rloo/final/policy/model.safetensors`);
  await assert.rejects(() => Deno.stat(`${dir}/rloo/final/critic`), Deno.errors.NotFound);
});

Deno.test("ablation: repeat probe, one run per setting, frozen keeps the policy, paired rollout deltas", async () => {
  const out = `${dir}/ablation`;
  const r = await cli(["ablation", ...TINY, "--settings", "frozen,raw", "--iterations", "2", "--out", out]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Repeat probe/);
  assert.match(r.stdout, /Reward ablation/);
  assert.match(r.stdout, /Δ rollout steps\/sol vs frozen/);
  const saved = JSON.parse(await Deno.readTextFile(`${out}/ablation.json`));
  assert.deepEqual(saved.runs.map((x: { setting: string }) => x.setting), ["frozen", "raw"]);
  assert.deepEqual(saved.probe.map((x: { repeats: number }) => x.repeats), [0, 1, 2, 4]);
  for (const run of saved.runs) assert.equal(run.rollout.steps_per_solution.length, 2);
  // lr 0: the frozen run ends with the starting weights; its first iteration samples what raw's first does
  const [w0, wf] = [
    await weights(`${models.policy}/model.safetensors`),
    await weights(`${out}/frozen-s0/final/policy/model.safetensors`),
  ];
  for (const [name, v] of w0) assert.deepEqual(wf.get(name), v, `frozen run changed ${name}`);
  assert.equal(saved.runs[0].rollout.accuracy[0], saved.runs[1].rollout.accuracy[0]);
  assert.match(await Deno.readTextFile(`${out}/ablation.md`), /Repeat probe[\s\S]*Reward ablation/);
});

Deno.test("eval: greedy, pass@k and maj@k, the built-in error analysis, one JSONL record per problem", async () => {
  const r = await cli([
    ...["eval", "--model", models.policy, "--problems", "4", "--samples", "3", "--k", "2"],
    ...["--max-new-tokens", "8", "--out", `${dir}/eval/e.jsonl`],
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /greedy accuracy/);
  assert.match(r.stdout, /pass@2/);
  assert.match(r.stdout, /maj@3/);
  const rows = (await Deno.readTextFile(`${dir}/eval/e.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(rows.length, 4);
  assert.equal(rows[0].samples.length, 3);
  assert.equal(typeof rows[0].greedy.correct, "boolean");
  // Built-in data: accuracy per template and the first error of each wrong greedy solution (null when right).
  assert.match(r.stdout, /greedy accuracy by template/);
  const wrong = rows.filter((x) => !x.greedy.correct).length;
  assert.match(r.stdout, new RegExp(`first error of the ${wrong} wrong greedy solutions`));
  for (const x of rows) {
    if (x.greedy.correct) assert.equal(x.greedy.firstError, null);
    else assert.ok(FIRST_ERROR_KINDS.includes(x.greedy.firstError.kind), JSON.stringify(x.greedy.firstError));
  }
});

Deno.test({
  name: "cleanup",
  fn: () => Deno.remove(dir, { recursive: true }),
  sanitizeResources: false,
});
