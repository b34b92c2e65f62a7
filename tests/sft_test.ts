// SFT end to end: one `--optimizer sgd` step through the CLI equals PyTorch's SGD step on the fixtures; a run
// killed after a checkpoint and resumed ends bitwise equal to an uninterrupted run; AdamW on the built-in task
// lowers the loss; held-out evaluation does not depend on its batching.
import assert from "node:assert/strict";
import { Gpu } from "../core/gpu/device.ts";
import { loadModel, releaseModel } from "../core/model/model.ts";
import { SafetensorsFile } from "../core/model/safetensors.ts";
import { extractAnswer } from "../core/rewards/answer.ts";
import { loadTokenizer } from "../core/tokenizer/tokenizer.ts";
import { evaluateAccuracy } from "../core/train/evaluate.ts";
import { readMetrics } from "../core/train/metrics.ts";
import { runSft } from "../core/train/sft.ts";
import { builtinProblems, mathSftData } from "../core/train/sft_data.ts";
import { calculatorFor, calculatorWritten } from "../core/model/calculator.ts";
import { ensureTinyModel } from "../core/train/tiny.ts";
import { FIXTURES_DIR, openFixture } from "./util/fixtures.ts";

const gpu = await Gpu.create();
const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;

function cliCommand(args: string[]): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "sft", ...args],
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", NO_COLOR: "1", NO_PROGRESS: "1" },
    stdout: "piped",
    stderr: "piped",
  });
}

async function cli(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await cliCommand(args).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

async function readWeights(dir: string): Promise<Map<string, Float32Array>> {
  const f = await SafetensorsFile.open(`${dir}/model.safetensors`);
  try {
    const out = new Map<string, Float32Array>();
    for (const info of f.list()) out.set(info.name, await f.readTensorF32(info.name));
    return out;
  } finally {
    await f.close();
  }
}

for (const name of ["tiny_tied_f32", "gqa3_untied_f32"]) {
  Deno.test(`one --optimizer sgd step of the sft CLI matches torch.optim.SGD on ${name}`, async () => {
    const fx = await openFixture(name);
    const dir = await Deno.makeTempDir({ prefix: "sft_sgd_test_" });
    try {
      const T = fx.manifest.seq_len;
      const [ids, attn, comp] = [
        await fx.ints("input_ids"),
        await fx.ints("attention_mask"),
        await fx.ints("completion_mask"),
      ];
      const row = (a: Int32Array, b: number) => Array.from(a.subarray(b * T, (b + 1) * T));
      const rows = Array.from(
        { length: fx.manifest.batch },
        (_, b) =>
          JSON.stringify({
            input_ids: row(ids, b),
            attention_mask: row(attn, b),
            completion_mask: row(comp, b),
          }),
      );
      await Deno.writeTextFile(`${dir}/data.jsonl`, rows.join("\n") + "\n");
      const lr = fx.manifest.sgd!.lr;
      assert.equal(lr, 0.1);
      const r = await cli([
        ...["--model", `${FIXTURES_DIR}${name}`, "--data", `${dir}/data.jsonl`, "--out", `${dir}/out`],
        ...["--optimizer", "sgd", "--lr", String(lr), "--lr-schedule", "constant", "--warmup-steps", "0"],
        ...["--batch-size", "3", "--steps", "1", "--max-grad-norm", "0", "--weight-decay", "0"],
        ...["--eval-data", "none", "--quiet"],
      ]);
      assert.equal(r.code, 0, r.stderr);
      const before = await readWeights(`${FIXTURES_DIR}${name}`);
      const after = await readWeights(`${dir}/out/checkpoint-1`);
      assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort(), "same tensors");
      for (const [pname, w0] of before) {
        const want = await fx.tensor(`sgd_delta.${pname}`);
        const w1 = after.get(pname)!;
        let num = 0, den = 0;
        for (let i = 0; i < want.length; i++) {
          num += (w1[i] - w0[i] - want[i]) ** 2;
          den += want[i] ** 2;
        }
        const err = Math.sqrt(num / Math.max(den, 1e-30));
        // The issue's bar: ‖Δgot − Δwant‖ / ‖Δwant‖ ≤ 1e-3 for every tensor.
        assert.ok(err <= 1e-3, `${pname}: relative error of the update ${err.toExponential(2)} > 1e-3`);
      }
      // The final model is the same step's weights.
      assert.deepEqual(await readWeights(`${dir}/out/final`), after);
    } finally {
      await fx.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

/** Short pre-tokenized sequences for the tiny model (ids < 512), seeded. */
function syntheticRows(count: number, seed: number): string {
  let s = seed;
  const rand = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
  const rows = [];
  for (let i = 0; i < count; i++) {
    const len = 24 + Math.floor(rand() * 40), cut = 4 + Math.floor(rand() * 16);
    const ids = Array.from({ length: len }, (_, t) => 3 + ((t * (i % 7 + 2) + i) % 60));
    rows.push(JSON.stringify({ input_ids: ids, completion_mask: ids.map((_, t) => (t >= cut ? 1 : 0)) }));
  }
  return rows.join("\n") + "\n";
}

Deno.test("a run killed after a checkpoint and resumed ends bitwise equal to an uninterrupted run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sft_resume_test_" });
  try {
    const { dir: init } = await ensureTinyModel(`${dir}/init`, { gpu, seed: 3 });
    await Deno.writeTextFile(`${dir}/data.jsonl`, syntheticRows(22, 7));
    // AdamW with clipping, accumulation, cosine warmup, length grouping and epochs that end mid-batch; older
    // checkpoints are pruned (the default --save-total-limit 2), the resumed-from one too.
    const flags = (out: string) => [
      ...["--model", init, "--data", `${dir}/data.jsonl`, "--out", out, "--steps", "12", "--save-every", "2"],
      ...[
        "--batch-size",
        "3",
        "--grad-accum",
        "2",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "3",
        "--max-grad-norm",
        "0.5",
      ],
      ...["--length-group", "3", "--seed", "5", "--eval-data", "none"],
    ];
    const whole = await cli(flags(`${dir}/a`));
    assert.equal(whole.code, 0, whole.stderr);

    const child = cliCommand(flags(`${dir}/b`)).spawn();
    const t0 = Date.now();
    while (!(await exists(`${dir}/b/checkpoint-4/trainer_state.json`))) {
      assert.ok(Date.now() - t0 < 60_000, "no checkpoint-4 within 60 s");
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill("SIGKILL");
    const killed = await child.output();
    assert.notEqual(killed.code, 0, "the run was killed before it finished");
    assert.ok(!(await exists(`${dir}/b/final`)), "the killed run did not reach the end");

    const resumed = await cli([...flags(`${dir}/b`), "--resume"]);
    assert.equal(resumed.code, 0, resumed.stderr);
    const from = Number(/Resuming from "[^"]*checkpoint-(\d+)" at step (\d+)/.exec(resumed.stderr)?.[1]);
    assert.ok(from >= 4 && from < 12, `resumed from step ${from}: ${resumed.stderr}`);

    const [a, b] = [
      await Deno.readFile(`${dir}/a/final/model.safetensors`),
      await Deno.readFile(`${dir}/b/final/model.safetensors`),
    ];
    assert.ok(a.length === b.length && a.every((x, i) => x === b[i]), "final weights are bitwise equal");
    const ma = (await readMetrics(`${dir}/a/metrics.jsonl`)).filter((r) => r.type === "train");
    const mb = (await readMetrics(`${dir}/b/metrics.jsonl`)).filter((r) => r.type === "train");
    assert.deepEqual(mb.map((r) => r.step), [...Array(12).keys()].map((i) => i + 1), "each step logged once");
    assert.deepEqual(mb.map((r) => [r.loss, r.grad_norm, r.lr]), ma.map((r) => [r.loss, r.grad_norm, r.lr]));

    // Restarting without --resume, or resuming with another data order, is refused before any work.
    const cfg = { model: init, data: `${dir}/data.jsonl`, out: `${dir}/b`, quiet: true };
    await assert.rejects(
      () => runSft(cfg, { gpu }),
      /already has checkpoints \(checkpoint-12.*pass --resume/,
    );
    await assert.rejects(
      () => runSft({ ...cfg, resume: true, seed: 6, batchSize: 3, gradAccum: 2, lengthGroup: 3 }, { gpu }),
      /Cannot resume from "[^"]*checkpoint-12": --seed is 6 but the checkpoint was trained with 5/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("AdamW on the built-in task lowers the loss of a random tiny model within a few dozen steps", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sft_adamw_test_" });
  try {
    const { dir: init } = await ensureTinyModel(`${dir}/init`, { gpu, seed: 1 });
    const losses: number[] = [];
    const r = await runSft({
      model: init,
      out: `${dir}/out`,
      steps: 24,
      batchSize: 4,
      maxLen: 128, // the question and the first solution lines: cheaper steps, the same task
      lr: 3e-3,
      warmupSteps: 3,
      trainProblems: 200,
      evalProblems: 4,
      evalMaxNewTokens: 8,
      saveEvery: 0,
      quiet: true,
    }, { gpu, onStep: (rec) => losses.push(rec.loss) });
    assert.equal(r.step, 24);
    assert.equal(losses.length, 24);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const [first, last] = [mean(losses.slice(0, 5)), mean(losses.slice(-5))];
    // Random init starts near ln(512) ≈ 6.2; the template and digits are learnt quickly.
    assert.ok(first > 5.5, `first losses ${first}`);
    assert.ok(last < first - 1.5, `loss went from ${first.toFixed(3)} to ${last.toFixed(3)}`);
    const evals = (await readMetrics(`${dir}/out/metrics.jsonl`)).filter((m) => m.type === "eval");
    assert.equal(evals.length, 1);
    assert.equal(evals[0].total, 4);
    assert.equal(evals[0].step, 24);
    assert.ok(await exists(`${dir}/out/final/tokenizer.json`), "the final model carries its tokenizer");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--mask-calculator leaves exactly the calculator-written tokens out of the targets", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sft_mask_test_" });
  try {
    const { dir: init } = await ensureTinyModel(`${dir}/init`, { gpu, seed: 1 });
    // One step over all six examples: the step's target count is the data's.
    const base = { model: init, steps: 1, batchSize: 6, trainProblems: 6, evalProblems: 0, saveEvery: 0 };
    const targets: number[] = [];
    for (const maskCalculator of [false, true]) {
      await runSft({ ...base, out: `${dir}/${maskCalculator}`, maskCalculator, quiet: true }, {
        gpu,
        onStep: (rec) => targets.push(rec.target_tokens as number),
      });
    }
    const tokenizer = await loadTokenizer(init);
    const data = mathSftData(builtinProblems(6, { seed: 0, split: "train" }), "builtin", { tokenizer });
    const table = calculatorFor(tokenizer, 512);
    const written = data.examples.reduce(
      (n, ex) => n + calculatorWritten(table, ex.ids).filter(Boolean).length,
      0,
    );
    assert.ok(written >= 6 * 2 * 2, `every solution has annotations (${written} calculator tokens)`);
    assert.equal(targets[0] - targets[1], written);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("held-out evaluation is independent of its batch size and counts correct final answers", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sft_eval_test_" });
  try {
    const { dir: init } = await ensureTinyModel(`${dir}/init`, { gpu, seed: 2 });
    const model = await loadModel(init, { gpu });
    const tok = await loadTokenizer(init);
    try {
      const problems = builtinProblems(7, { seed: 0, split: "test" });
      const opts = { tokenizer: tok, maxNewTokens: 12, keepResponses: true };
      const a = await evaluateAccuracy(model, problems, { ...opts, batchSize: 7 });
      const b = await evaluateAccuracy(model, problems, { ...opts, batchSize: 3 });
      assert.deepEqual(b.responses, a.responses);
      assert.equal(a.total, 7);
      assert.ok(a.meanResponseTokens > 0 && a.meanResponseTokens <= 12);
      // Gold answers set to what the model says where it says a number: exactly those count as correct.
      const gold = problems.map((p, i) => ({ ...p, finalAnswer: extractAnswer(a.responses![i]) ?? "-1/7" }));
      const c = await evaluateAccuracy(model, gold, { ...opts, batchSize: 4 });
      const expected = a.responses!.filter((t) => extractAnswer(t) !== null).length;
      assert.equal(c.correct, expected);
      assert.equal(c.accuracy, expected / 7);
    } finally {
      releaseModel(model);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
