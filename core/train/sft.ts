/**
 * Supervised fine-tuning: the mean completion cross-entropy (`lmLossAndGrads`) minimised with AdamW or SGD over
 * shuffled batches, with gradient accumulation, an LR schedule, global-norm clipping, held-out greedy accuracy,
 * JSONL metrics and resumable checkpoints.
 *
 * One optimiser step s consumes examples [s·B·A, (s+1)·B·A) of the data stream (B = batchSize, A = gradAccum),
 * A micro-batches of B examples:
 * ```
 * g = (1/A) Σ_{j<A} ∇ loss_j          loss_j = mean cross-entropy over micro-batch j's target tokens
 * g ← g · min(1, maxGradNorm / (‖g‖ + 1e-6))      (when maxGradNorm > 0)
 * w ← AdamW(w, g, lrAt(s))  or  w ← w − lrAt(s)·g    (sgd: no momentum, no weight decay)
 * ```
 * The stream visits the examples epoch after epoch in seeded shuffled orders (`DataOrder`), so its position is
 * the whole data-order state. Output directory (see sft_checkpoint.ts):
 * ```
 * <out>/checkpoint-<step>/   weights (HF layout) + optimizer.safetensors + trainer_state.json
 * <out>/final/               the final weights (HF layout, loadable by every command)
 * <out>/tokenizer/           the model's tokenizer files (copied into every checkpoint)
 * <out>/metrics.jsonl        one record per step ("train") and per evaluation ("eval")
 * ```
 * Resuming loads the newest complete checkpoint and continues the same stream: an interrupted run ends with
 * the same weights as an uninterrupted one (bitwise: every kernel is deterministic).
 *
 * @module
 */
import { Batch } from "../gpu/batch.ts";
import { getGpu, type Gpu } from "../gpu/device.ts";
import { calculatorFor, calculatorWritten } from "../model/calculator.ts";
import { TOKENIZER_FILES } from "../model/checkpoint.ts";
import { loadModel, releaseModel, saveModel } from "../model/model.ts";
import { createGrads } from "../model/qwen2_backward.ts";
import { AdamW, GradClip, lrAt, type ScheduleKind, SGD, zeroGrads } from "../optim/mod.ts";
import { loadTokenizer, type Tokenizer } from "../tokenizer/tokenizer.ts";
import { exists, joinPath, writeFileAtomic } from "../util/atomic.ts";
import { ProgressBar } from "../util/progress.ts";
import { evaluateAccuracy, type EvaluateResult } from "./evaluate.ts";
import { lmLossAndGrads, type LMLossResult } from "./lm_loss.ts";
import { MetricsWriter } from "./metrics.ts";
import {
  openRun,
  pruneCheckpoints,
  readTrainerState,
  resumeMismatch,
  type TrainerState,
  writeCheckpoint,
} from "./sft_checkpoint.ts";
import { loadRunData, promptIds } from "./sft_data.ts";
import { ensureTinyModel, TINY_INIT_DIR } from "./tiny.ts";

/** Every setting of an SFT run (the CLI flags, camel-cased). */
export interface SftConfig {
  /** Model directory or hub id; "tiny": the tiny preset's random initialisation (built in runs/tiny-init). */
  model: string;
  /** "builtin" (the arithmetic task's train split), a JSONL file, or a GSM8K-format dataset. */
  data: string;
  /** Output directory (checkpoints, final model, metrics). */
  out: string;
  /** Optimiser steps; 0: `epochs` passes over the data. */
  steps: number;
  /** Passes over the data when `steps` is 0. */
  epochs: number;
  /** Peak learning rate. */
  lr: number;
  /** Schedule after warmup. */
  lrSchedule: ScheduleKind;
  /** Linear warmup steps. */
  warmupSteps: number;
  /** Final learning rate of linear/cosine as a fraction of `lr`. */
  minLrRatio: number;
  /** Examples per micro-batch. */
  batchSize: number;
  /** Micro-batches per optimiser step. */
  gradAccum: number;
  /** Global gradient-norm clipping threshold; 0 disables clipping. */
  maxGradNorm: number;
  /** AdamW decoupled weight decay (matrices and embeddings only). */
  weightDecay: number;
  /** "adamw" or "sgd" (plain w ← w − lr·g). */
  optimizer: "adamw" | "sgd";
  /** AdamW β1, β2 and ε. */
  adamBeta1: number;
  adamBeta2: number;
  adamEps: number;
  /** Seed of the data order (and of the built-in train problems). */
  seed: number;
  /** Built-in task: train problems to generate; 0: enough for the planned steps (at least 1000). */
  trainProblems: number;
  /** Keep at most this many tokens per example (0: no limit). */
  maxLen: number;
  /** Length grouping: sort each run of this many micro-batches by example length (0: off). */
  lengthGroup: number;
  /** Evaluate every this many steps (0: only at the end). */
  evalEvery: number;
  /** Held-out problems per evaluation (0: no evaluation). */
  evalProblems: number;
  /** "auto", "none", "builtin" or a GSM8K source (its test split). */
  evalData: string;
  /** Problems decoded together during evaluation. */
  evalBatchSize: number;
  /** Longest evaluation response in tokens. */
  evalMaxNewTokens: number;
  /** Also evaluate with the GSM8K calculator (exact values inside `<<expr=…>>`), logged as `accuracy_calculator`. */
  evalCalculator: boolean;
  /**
   * Tokens the GSM8K calculator writes (the values inside `<<expr=value>>`, see core/model/calculator.ts) are not
   * targets: the model learns the operands and operators, the calculator supplies the values at decoding.
   */
  maskCalculator: boolean;
  /** Save a checkpoint every this many steps (0: only at the end). */
  saveEvery: number;
  /** Keep the newest this many checkpoints (0: all). */
  saveTotalLimit: number;
  /** Continue from the newest complete checkpoint in `out`. */
  resume: boolean;
  /** Delete existing checkpoints in `out` and start over. */
  overwrite: boolean;
  /** Metrics JSONL path ("" = `<out>/metrics.jsonl`). */
  log: string;
  /** No progress bar or log lines. */
  quiet: boolean;
}

/**
 * Defaults: the tiny preset learning the built-in task from random initialisation (see the README's
 * measurements for the accuracy and wall time on a 2-core CPU).
 */
export const SFT_DEFAULTS: Readonly<SftConfig> = {
  model: "tiny",
  data: "builtin",
  out: "runs/sft-tiny",
  steps: 500,
  epochs: 1,
  lr: 3e-3,
  lrSchedule: "cosine",
  warmupSteps: 30,
  minLrRatio: 0.1,
  batchSize: 8,
  gradAccum: 1,
  maxGradNorm: 1,
  weightDecay: 0.01,
  optimizer: "adamw",
  adamBeta1: 0.9,
  adamBeta2: 0.99,
  adamEps: 1e-8,
  seed: 0,
  trainProblems: 0,
  maxLen: 512,
  lengthGroup: 32,
  evalEvery: 0,
  evalProblems: 200,
  evalData: "auto",
  evalBatchSize: 100,
  evalMaxNewTokens: 200,
  evalCalculator: false,
  maskCalculator: false,
  saveEvery: 100,
  saveTotalLimit: 2,
  resume: false,
  overwrite: false,
  log: "",
  quiet: false,
};

/** The CLI flag of a config field: `batchSize` → `--batch-size`. */
export function flagName(field: string): string {
  return `--${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** Throws naming the first invalid setting (by its CLI flag). */
export function checkConfig(cfg: SftConfig): void {
  const bad = (field: keyof SftConfig, expected: string): never => {
    throw new Error(`Invalid ${flagName(field)} ${JSON.stringify(cfg[field])}: expected ${expected}`);
  };
  const int = (f: keyof SftConfig, min: number) => {
    if (!Number.isSafeInteger(cfg[f]) || (cfg[f] as number) < min) bad(f, `an integer ≥ ${min}`);
  };
  const num = (f: keyof SftConfig, lo: number, hi = Infinity, loOpen = false) => {
    const v = cfg[f] as number;
    if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi || (loOpen && v === lo)) {
      bad(f, `a number ${loOpen ? ">" : "≥"} ${lo}${hi < Infinity ? ` and ≤ ${hi}` : ""}`);
    }
  };
  for (const f of ["model", "data", "out", "evalData"] as const) if (!cfg[f]) bad(f, "a non-empty string");
  for (const f of ["steps", "warmupSteps", "trainProblems", "maxLen", "evalEvery", "evalProblems"] as const) {
    int(f, 0);
  }
  for (const f of ["saveEvery", "saveTotalLimit", "seed", "lengthGroup"] as const) int(f, 0);
  for (const f of ["batchSize", "gradAccum", "evalBatchSize", "evalMaxNewTokens"] as const) int(f, 1);
  if (cfg.maxLen === 1) bad("maxLen", "0 (no limit) or an integer ≥ 2");
  num("epochs", 0, Infinity, true);
  num("lr", 0);
  num("minLrRatio", 0, 1);
  num("maxGradNorm", 0);
  num("weightDecay", 0);
  num("adamBeta1", 0, 0.999999);
  num("adamBeta2", 0, 0.999999);
  num("adamEps", 0);
  if (!["constant", "linear", "cosine"].includes(cfg.lrSchedule)) {
    bad("lrSchedule", "constant, linear or cosine");
  }
  if (!["adamw", "sgd"].includes(cfg.optimizer)) bad("optimizer", "adamw or sgd");
  if (cfg.resume && cfg.overwrite) bad("overwrite", "not together with --resume");
}

/** Optimiser steps of a run over `examples` examples. */
export function planSteps(cfg: SftConfig, examples: number): number {
  return cfg.steps > 0
    ? cfg.steps
    : Math.max(1, Math.ceil((cfg.epochs * examples) / (cfg.batchSize * cfg.gradAccum)));
}

/** Built-in train problems of a run: `trainProblems`, or enough for one pass over the planned steps. */
export function builtinTrainCount(cfg: SftConfig): number {
  if (cfg.trainProblems > 0) return cfg.trainProblems;
  return cfg.steps > 0 ? Math.max(1000, cfg.steps * cfg.batchSize * cfg.gradAccum) : 10_000;
}

/** A progress bar whose line ends with a status text (loss, throughput, lr). */
class TrainBar extends ProgressBar {
  status = "";
  constructor(total: number, enabled: boolean) {
    super({ total, label: "sft", bytes: false, ...(enabled ? {} : { enabled: false }) });
  }
  override render(t?: number): string {
    return `${super.render(t)}  ${this.status}`;
  }
}

/** Callbacks and environment of {@linkcode runSft}. */
export interface SftHooks {
  /** Device (default: the shared one). */
  gpu?: Gpu;
  /** When aborted, the run stops after the current step and saves a checkpoint. */
  signal?: AbortSignal;
  /** Called after every optimiser step with its metrics record. */
  onStep?(record: Record<string, number>): void;
  /** Called after every evaluation. */
  onEval?(step: number, result: EvaluateResult): void;
  /** Human-readable log lines (default: stderr unless `quiet`). */
  log?(line: string): void;
}

/** Result of {@linkcode runSft}. */
export interface SftResult {
  /** Optimiser steps taken in total (including those before a resume). */
  step: number;
  /** Steps the run was planned for. */
  totalSteps: number;
  /** Whether the run stopped early (signal). */
  interrupted: boolean;
  /** Checkpoint resumed from, or null. */
  resumedFrom: string | null;
  /** Newest checkpoint directory written (or resumed from), or null. */
  checkpoint: string | null;
  /** Final weights directory (null when interrupted). */
  finalDir: string | null;
  /** Loss of the last step (NaN when no step ran). */
  lastLoss: number;
  /** The last evaluation, or null. */
  lastEval: EvaluateResult | null;
  /** Wall time of this invocation in seconds. */
  seconds: number;
}

/** Copies the tokenizer files of `dir` into `<out>/tokenizer` (unless there already); returns that directory. */
async function keepTokenizer(dir: string, out: string): Promise<string | undefined> {
  const target = joinPath(out, "tokenizer");
  if (!(await exists(joinPath(dir, "tokenizer.json")))) return undefined;
  if (dir.replace(/\/+$/, "") === target) return target;
  await Deno.mkdir(target, { recursive: true });
  for (const f of TOKENIZER_FILES) {
    const src = joinPath(dir, f);
    if (await exists(src)) await writeFileAtomic(joinPath(target, f), await Deno.readFile(src));
  }
  return target;
}

/** Loads the tokenizer of `dir`, or says why it cannot. */
async function tryTokenizer(dir: string | null): Promise<{ tokenizer: Tokenizer | null; error?: string }> {
  if (dir === null) return { tokenizer: null, error: "the model was not loaded from a directory" };
  try {
    return { tokenizer: await loadTokenizer(dir) };
  } catch (e) {
    return { tokenizer: null, error: (e as Error).message };
  }
}

/**
 * Runs supervised fine-tuning with `config` (unset fields: {@linkcode SFT_DEFAULTS}); see the module doc.
 *
 * @example
 * ```ts
 * const r = await runSft({ data: "train.jsonl", model: "Qwen/Qwen2.5-0.5B-Instruct", out: "runs/a", lr: 1e-5 });
 * console.log(r.lastLoss, r.finalDir);
 * ```
 */
export async function runSft(config: Partial<SftConfig>, hooks: SftHooks = {}): Promise<SftResult> {
  const cfg: SftConfig = { ...SFT_DEFAULTS, ...config };
  checkConfig(cfg);
  const log = hooks.log ?? ((s: string) => cfg.quiet || console.error(s));
  const t0 = performance.now();
  const gpu = hooks.gpu ?? await getGpu();

  // Start from the newest complete checkpoint (resume) or from the model.
  const { resumed, dir: resumedDir } = await openRun(cfg, readTrainerState, resumeMismatch, log);
  let modelDir = resumedDir ?? cfg.model;
  if (!resumed && cfg.model === "tiny") {
    const tiny = await ensureTinyModel(TINY_INIT_DIR, { gpu });
    if (tiny.created) log(`Built the tiny preset's random initialisation in "${tiny.dir}"`);
    modelDir = tiny.dir;
  }
  const model = await loadModel(modelDir, { gpu });
  const grads = createGrads(model.params);
  const opt = cfg.optimizer === "sgd"
    ? new SGD(gpu, model.params.byName)
    : new AdamW(gpu, model.params.byName, {
      weightDecay: cfg.weightDecay,
      betas: [cfg.adamBeta1, cfg.adamBeta2],
      eps: cfg.adamEps,
    });
  const clip = new GradClip(gpu, { maxNorm: cfg.maxGradNorm > 0 ? cfg.maxGradNorm : Infinity });
  let metrics: MetricsWriter | null = null;
  try {
    if (resumed) {
      await opt.load(joinPath(resumedDir!, "optimizer.safetensors"));
      if (opt.stepCount !== resumed.step) {
        const at =
          `its optimizer state is at step ${opt.stepCount}, its trainer state at step ${resumed.step}`;
        throw new Error(`Cannot resume from "${resumedDir}": ${at}`);
      }
    }
    const tok = await tryTokenizer(model.dir);
    const data = await loadRunData(
      { ...cfg, trainProblems: builtinTrainCount(cfg) },
      { tokenizer: tok.tokenizer, tokenizerError: tok.error, vocabSize: model.config.vocabSize },
    );
    if (tok.tokenizer) {
      // Held-out problems whose prompt leaves no room for a response are left out (and counted).
      const room = model.config.maxPositionEmbeddings - cfg.evalMaxNewTokens;
      const fits = data.evalSet.filter((p) => promptIds(tok.tokenizer!, p.question).length <= room);
      if (fits.length < data.evalSet.length) {
        log(
          `Left out ${data.evalSet.length - fits.length} held-out problems longer than ${room} prompt tokens`,
        );
      }
      data.evalSet = fits;
    }
    if (cfg.maskCalculator) {
      if (!tok.tokenizer) {
        throw new Error(
          `Cannot mask calculator tokens (maskCalculator): no tokenizer for the model (${tok.error})`,
        );
      }
      const table = calculatorFor(tok.tokenizer, model.config.vocabSize);
      data.train.examples = data.train.examples.map((ex) => {
        const written = calculatorWritten(table, ex.ids);
        return { ...ex, completionMask: ex.completionMask.map((m, t) => (written[t] ? 0 : m)) };
      });
    }
    const n = data.train.examples.length;
    const totalSteps = planSteps(cfg, n);
    log(
      `${resumed ? `Resuming from "${resumedDir}" at step ${resumed.step}` : `Training "${modelDir}"`}: ` +
        `${n} examples from ${data.train.source} (${data.train.truncated} truncated to ${cfg.maxLen} tokens, ` +
        `${data.train.dropped} dropped), ${totalSteps} steps of ${cfg.batchSize}×${cfg.gradAccum} examples, ` +
        `${data.evalSet.length} held-out problems (${((performance.now() - t0) / 1000).toFixed(1)} s setup)`,
    );
    const state: TrainerState = {
      step: resumed?.step ?? 0,
      consumed: resumed?.consumed ?? 0,
      tokens: resumed?.tokens ?? 0,
      elapsedS: resumed?.elapsedS ?? 0,
      modelSource: resumed?.modelSource ?? modelDir,
      lastEval: resumed?.lastEval ?? null,
      config: cfg,
    };
    const elapsed0 = state.elapsedS;
    const elapsed = () => elapsed0 + (performance.now() - t0) / 1000;
    // Checkpoints carry the tokenizer, copied once into <out>/tokenizer (a resumed-from checkpoint may be pruned).
    const tokenizerDir = tok.tokenizer && model.dir ? await keepTokenizer(model.dir, cfg.out) : undefined;
    metrics = await MetricsWriter.open(cfg.log || joinPath(cfg.out, "metrics.jsonl"), {
      keepUpToStep: resumed ? resumed.step : undefined,
    });
    const evaluate = async () => {
      if (data.evalSet.length === 0 || !tok.tokenizer) return;
      const opts = {
        tokenizer: tok.tokenizer,
        batchSize: cfg.evalBatchSize,
        maxNewTokens: cfg.evalMaxNewTokens,
      };
      const r = await evaluateAccuracy(model, data.evalSet, opts);
      const calc = cfg.evalCalculator
        ? await evaluateAccuracy(model, data.evalSet, { ...opts, calculator: true })
        : undefined;
      state.lastEval = r;
      metrics!.write({
        type: "eval",
        step: state.step,
        epoch: state.consumed / n,
        accuracy: r.accuracy,
        correct: r.correct,
        total: r.total,
        mean_response_tokens: r.meanResponseTokens,
        stopped_fraction: r.stoppedFraction,
        ...(calc ? { accuracy_calculator: calc.accuracy, correct_calculator: calc.correct } : {}),
        eval_s: r.seconds + (calc?.seconds ?? 0),
        elapsed_s: elapsed(),
      });
      hooks.onEval?.(state.step, r);
      const withCalc = calc
        ? `, with the calculator ${(100 * calc.accuracy).toFixed(1)}% (${calc.correct}/${calc.total})`
        : "";
      log(
        `${bar.enabled ? "\n" : ""}eval at step ${state.step}: accuracy ${(100 * r.accuracy).toFixed(1)}% ` +
          `(${r.correct}/${r.total})${withCalc}, mean response ${r.meanResponseTokens.toFixed(1)} tokens, ` +
          `${r.seconds.toFixed(1)} s`,
      );
    };
    const sched = {
      schedule: cfg.lrSchedule,
      lr: cfg.lr,
      warmupSteps: Math.min(cfg.warmupSteps, totalSteps), // a run shorter than its warmup warms up throughout
      totalSteps,
      minLrRatio: cfg.minLrRatio,
    };
    const bar = new TrainBar(totalSteps, !cfg.quiet);
    bar.update(state.step);
    const logEvery = Math.max(1, Math.round(totalSteps / 20));
    let lastLoss = NaN, checkpoint: string | null = resumedDir, interrupted = false;
    while (state.step < totalSteps) {
      const ts = performance.now();
      let lossSum = 0, targetTokens = 0, inputTokens = 0;
      // Every micro-batch and the optimiser step go to the GPU queue back to back (each batch is submitted
      // before its promise is returned; the queue keeps their order), and the host waits once per step.
      const micros: Promise<LMLossResult>[] = [];
      for (let j = 0; j < cfg.gradAccum; j++) {
        const micro = data.order.take(state.consumed + j * cfg.batchSize, cfg.batchSize)
          .map((i) => data.train.examples[i]);
        micros.push(lmLossAndGrads(model, grads, micro));
      }
      const lr = lrAt(opt.stepCount, sched);
      const batch = new Batch(gpu, "sft.step");
      opt.step(batch, grads, { lr, gradScale: 1 / cfg.gradAccum, clip });
      const stats = clip.read(batch);
      zeroGrads(batch, grads);
      const optDone = batch.submit();
      // Both are awaited below; handled now so that when a micro-batch fails, its error is the one reported
      // instead of the process dying on the optimiser batch's unawaited rejection.
      for (const p of [optDone, stats]) p.catch(() => {});
      for (const r of await Promise.all(micros)) {
        // A diverged step has already updated the weights in memory; the run stops here and writes nothing.
        if (!Number.isFinite(r.loss)) {
          throw new Error(
            `Training diverged at step ${state.step + 1}: the loss is ${r.loss} (try a lower --lr)`,
          );
        }
        lossSum += r.loss;
        targetTokens += r.tokens;
        inputTokens += r.inputTokens;
      }
      state.consumed += cfg.gradAccum * cfg.batchSize;
      const tf = performance.now();
      await optDone;
      const { norm } = await stats;
      const te = performance.now();
      state.step++;
      state.tokens += inputTokens;
      lastLoss = lossSum / cfg.gradAccum;
      const record = {
        step: state.step,
        epoch: state.consumed / n,
        loss: lastLoss,
        lr,
        grad_norm: norm,
        tokens: inputTokens,
        target_tokens: targetTokens,
        tokens_per_s: inputTokens / ((te - ts) / 1000),
        step_s: (te - ts) / 1000,
        fwd_bwd_s: (tf - ts) / 1000,
        optim_s: (te - tf) / 1000,
        elapsed_s: elapsed(),
      };
      metrics.write({ type: "train", ...record });
      hooks.onStep?.(record);
      bar.status = `loss ${lastLoss.toFixed(4)}  ${Math.round(record.tokens_per_s)} tok/s  lr ${
        lr.toExponential(2)
      }`;
      bar.update(1);
      const last = state.step === totalSteps;
      if (!bar.enabled && (state.step % logEvery === 0 || last)) {
        log(`step ${state.step}/${totalSteps}  ${bar.status}  ${record.elapsed_s.toFixed(0)} s`);
      }
      interrupted = !last && hooks.signal?.aborted === true;
      if (last || (cfg.evalEvery > 0 && state.step % cfg.evalEvery === 0)) await evaluate();
      if (last || interrupted || (cfg.saveEvery > 0 && state.step % cfg.saveEvery === 0)) {
        state.elapsedS = elapsed();
        checkpoint = await writeCheckpoint({ out: cfg.out, model, opt, state, examples: n, tokenizerDir });
        await pruneCheckpoints(cfg.out, cfg.saveTotalLimit);
      }
      if (interrupted) break;
    }
    bar.finish();
    let finalDir: string | null = null;
    if (!interrupted) {
      finalDir = joinPath(cfg.out, "final");
      await saveModel(model, finalDir, { tokenizerDir });
    }
    const seconds = (performance.now() - t0) / 1000;
    log(
      interrupted
        ? `Stopped at step ${state.step}: checkpoint "${checkpoint}" (resume with --resume)`
        : `Done: ${state.step} steps, final model in "${finalDir}" (${seconds.toFixed(1)} s)`,
    );
    return {
      step: state.step,
      totalSteps,
      interrupted,
      resumedFrom: resumedDir,
      checkpoint,
      finalDir,
      lastLoss,
      lastEval: state.lastEval,
      seconds,
    };
  } finally {
    metrics?.close();
    clip.release();
    opt.release();
    for (const g of grads.values()) g.release();
    releaseModel(model);
  }
}
