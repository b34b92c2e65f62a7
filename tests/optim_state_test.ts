import assert from "node:assert/strict";
import { runBatch } from "../core/gpu/batch.ts";
import { Gpu } from "../core/gpu/device.ts";
import { readF32, upload } from "../core/gpu/io.ts";
import type { Tensor } from "../core/gpu/tensor.ts";
import { writeSafetensors } from "../core/model/checkpoint.ts";
import { SafetensorsFile } from "../core/model/safetensors.ts";
import { AdamW } from "../core/optim/adamw.ts";
import { GradClip } from "../core/optim/clip.ts";
import { lrAt } from "../core/optim/schedule.ts";
import { SGD } from "../core/optim/sgd.ts";
import { loadOptimizerState, saveOptimizerState, type StatefulOptimizer } from "../core/optim/state.ts";
import { randomF32 } from "./util/random.ts";

const gpu = await Gpu.create();
const dir = await Deno.makeTempDir({ prefix: "optim_state_test_" });
// Small slices so that saving and loading stream every tensor in several pieces (rows of [37, 100]: 10 per slice).
const SLICE = { sliceBytes: 4096 };

const SHAPES: [string, number[]][] = [
  ["model.embed_tokens.weight", [37, 100]],
  ["model.layers.0.self_attn.q_proj.bias", [5003]],
  ["model.norm.weight", [1]],
];
const SCHED = { schedule: "cosine", lr: 0.02, warmupSteps: 2, totalSteps: 6 } as const;

/** Parameters from host arrays (a fresh copy on the GPU). */
function makeParams(data: Float32Array[]): Map<string, Tensor> {
  return new Map(SHAPES.map(([n, s], i) => [n, upload(gpu, data[i], { shape: s, label: n })]));
}

/** Steps `opt` from its current step count to `until` with clipping and per-step random gradients. */
async function train(opt: AdamW, until: number): Promise<void> {
  const clip = new GradClip(gpu, { maxNorm: 5 });
  while (opt.stepCount < until) {
    const t = opt.stepCount;
    const grads = new Map(
      SHAPES.map(([n, s], i) => [
        n,
        upload(gpu, randomF32(s.reduce((a, b) => a * b), t * 3 + i, 1), { shape: s }),
      ]),
    );
    await runBatch(gpu, "train", (b) => opt.step(b, grads, { lr: lrAt(t, SCHED), gradScale: 0.5, clip }));
    for (const g of grads.values()) g.release();
  }
  clip.release();
}

const readAll = (ts: Iterable<Tensor>) => Promise.all([...ts].map((t) => readF32(t)));
const init = SHAPES.map(([, s], i) => randomF32(s.reduce((a, b) => a * b), 50 + i, 1));

Deno.test("AdamW save → load → continue equals an uninterrupted run bitwise", async () => {
  const full = makeParams(init);
  const a = new AdamW(gpu, full, { betas: [0.9, 0.95], weightDecay: 0.1 });
  await train(a, 6);

  const part = makeParams(init);
  const b = new AdamW(gpu, part, { betas: [0.9, 0.95], weightDecay: 0.1 });
  await train(b, 3);
  const path = `${dir}/optimizer.safetensors`;
  await b.save(path, SLICE);
  const saved = await readAll(part.values()); // the model checkpoint of the interrupted run
  b.release();

  const resumed = makeParams(saved);
  const c = new AdamW(gpu, resumed, { betas: [0.9, 0.95], weightDecay: 0.1 });
  await c.load(path, SLICE);
  assert.equal(c.stepCount, 3);
  await train(c, 6);
  const [want, got] = [await readAll(full.values()), await readAll(resumed.values())];
  got.forEach((p, i) => assert.deepEqual(p, want[i], `parameter "${SHAPES[i][0]}"`));
  const [ws, gs] = [await readAll(a.stateTensors().values()), await readAll(c.stateTensors().values())];
  gs.forEach((s, i) => assert.deepEqual(s, ws[i], `state tensor ${i}`));
});

Deno.test("the state file holds exp_avg/exp_avg_sq per parameter and the step as metadata", async () => {
  const params = makeParams(init);
  const opt = new AdamW(gpu, params);
  await train(opt, 2);
  const path = `${dir}/layout.safetensors`;
  await saveOptimizerState(path, opt, SLICE);
  const file = await SafetensorsFile.open(path);
  try {
    assert.equal(file.metadata.step, "2");
    assert.equal(file.metadata.optimizer, "adamw");
    assert.equal(file.metadata.beta2, "0.999");
    const names = SHAPES.flatMap(([n]) => [`exp_avg.${n}`, `exp_avg_sq.${n}`]);
    assert.deepEqual(file.list().map((t) => t.name), names);
    for (const [name, t] of opt.stateTensors()) {
      assert.deepEqual(file.info(name).shape, t.shape, `shape of "${name}"`);
      assert.deepEqual(await file.readTensorF32(name), await readF32(t), `data of "${name}"`);
    }
  } finally {
    await file.close();
  }
});

Deno.test("a failed save leaves the previous file intact and no temporary file behind", async () => {
  const params = makeParams(init);
  const opt = new AdamW(gpu, params);
  const path = `${dir}/atomic/optimizer.safetensors`;
  await Deno.mkdir(`${dir}/atomic`);
  await opt.save(path);
  const before = await Deno.readFile(path);
  const dead = upload(gpu, new Float32Array(3), { label: "dead" });
  dead.release();
  const broken: StatefulOptimizer = {
    kind: "adamw",
    gpu,
    stepCount: 9,
    stateTensors: () => new Map([...opt.stateTensors(), ["exp_avg.dead", dead]]),
    hyperparameters: () => ({}),
  };
  await assert.rejects(saveOptimizerState(path, broken), /Tensor "dead" was used after release/);
  assert.deepEqual(await Deno.readFile(path), before);
  assert.deepEqual([...Deno.readDirSync(`${dir}/atomic`)].map((e) => e.name), ["optimizer.safetensors"]);
});

Deno.test("loading rejects mismatched state files before changing anything", async () => {
  const params = makeParams(init);
  const opt = new AdamW(gpu, params);
  await train(opt, 1);
  const path = `${dir}/mismatch.safetensors`;
  await opt.save(path);
  const m0 = await readAll(opt.stateTensors().values());

  const other = new AdamW(gpu, new Map([...params, ["lm_head.weight", upload(gpu, new Float32Array(4))]]));
  await assert.rejects(
    other.load(path),
    /Cannot load optimizer state ".*": tensor "exp_avg.lm_head.weight" is missing/,
  );
  const fewer = new AdamW(gpu, new Map([...params].slice(1)));
  await assert.rejects(
    fewer.load(path),
    /tensor "exp_avg.model.embed_tokens.weight" matches no state of this adamw optimizer/,
  );
  const reshaped = new AdamW(
    gpu,
    new Map([...params].map(([n, t]) => [n, t.size === 3700 ? t.reshape([100, 37]) : t])),
  );
  await assert.rejects(
    reshaped.load(path),
    /tensor "exp_avg.model.embed_tokens.weight" has shape \[37,100\], expected \[100,37\]/,
  );
  await assert.rejects(new SGD(gpu, params).load(path), /metadata "optimizer" is "adamw", expected "sgd"/);

  const bad = `${dir}/bad_step.safetensors`;
  const tensors = await Promise.all(
    [...opt.stateTensors()].map(async ([name, t]) => ({
      name,
      dtype: "F32" as const,
      shape: t.shape,
      data: await readF32(t),
    })),
  );
  await writeSafetensors(bad, tensors, { metadata: { optimizer: "adamw", step: "-3" } });
  await assert.rejects(opt.load(bad), /metadata "step" is "-3", expected an integer ≥ 0/);
  assert.equal(opt.stepCount, 1);
  const m1 = await readAll(opt.stateTensors().values());
  m1.forEach((m, i) => assert.deepEqual(m, m0[i], `state tensor ${i} unchanged`));
});

Deno.test("SGD saves and restores its step count", async () => {
  const params = makeParams(init);
  const a = new SGD(gpu, params);
  a.stepCount = 17;
  const path = `${dir}/sgd.safetensors`;
  await a.save(path);
  const b = new SGD(gpu, params);
  await loadOptimizerState(path, b);
  assert.equal(b.stepCount, 17);
});

Deno.test("cleanup", async () => {
  await Deno.remove(dir, { recursive: true });
});
