/**
 * The PPO trainer: iterations of rollouts (rollout.ts) and PPO updates (ppo.ts, critic.ts) with held-out
 * evaluation (eval.ts), JSONL metrics, an SVG plot (plot.ts) and atomic, resumable checkpoints
 * (ppo_checkpoint.ts).
 *
 * Iteration i (1-based) takes questions [(i−1)·Q, i·Q) of the seeded stream of train problems, samples K solutions
 * each with rollout seed hash(seed, i), and shuffles minibatches with seed `<seed>:<i>`: everything random is a
 * function of (seed, i), so the run's RNG state is its iteration counter. Output directory:
 * ```
 * <out>/checkpoint-<i>/   policy, critic, optimiser states, trainer_state.json (ppo_checkpoint.ts)
 * <out>/final/            policy/ and critic/ after the last iteration (HF layout)
 * <out>/metrics.jsonl     "eval" records (iteration 0 = before training), one "iteration" record per
 *                         iteration, one "summary" record
 * <out>/metrics.svg       the per-iteration metrics, plotted
 * <out>/eval.jsonl        per-problem records of the last held-out evaluation
 * ```
 * Resuming loads the newest complete checkpoint and continues the same stream: an interrupted run ends with the
 * same weights as an uninterrupted one (every kernel is deterministic).
 *
 * @module
 */
import type { MathExample } from "../data/arithmetic.ts";
import { fnv1a32 } from "../data/rng.ts";
import { getGpu, type Gpu } from "../gpu/device.ts";
import { loadModel, type Qwen2Model, releaseModel, saveModel } from "../model/model.ts";
import { lrAt } from "../optim/mod.ts";
import type { ExactStepScorer } from "../rm/exact_scorer.ts";
import { loadRewardModel, RewardScorer } from "../rm/scorer.ts";
import { loadTokenizer } from "../tokenizer/tokenizer.ts";
import { type MetricsRecord, MetricsWriter, readMetrics } from "../train/metrics.ts";
import { DataOrder, promptIds } from "../train/sft_data.ts";
import { joinPath, writeFileAtomic } from "../util/atomic.ts";
import { ProgressBar } from "../util/progress.ts";
import { Critic } from "./critic.ts";
import { type EvalResult, evaluatePolicy } from "./eval.ts";
import { type Experience, maskedMean, mean } from "./experience.ts";
import { AdaptiveKLController, FixedKLController, type KLController } from "./kl.ts";
import { metricsSvg, summaryTable } from "./plot.ts";
import { type Actor, createActor, ppoUpdate, type PPOUpdateStats, releaseActor } from "./ppo.ts";
import {
  type EvalSummary,
  ppoResumeMismatch,
  type PPOTrainerState,
  prunePPOCheckpoints,
  readPPOState,
  writePPOCheckpoint,
} from "./ppo_checkpoint.ts";
import { collectRollouts, type RolloutResult } from "./rollout.ts";
import { openRun } from "../train/sft_checkpoint.ts";
import { builtinExactScorer, ensurePolicy, ensurePrm, loadProblems } from "./setup.ts";
import { checkTrainConfig, EXACT_PRM, TRAIN_DEFAULTS, type TrainConfig } from "./train_config.ts";

/** Callbacks and environment of {@linkcode runPPO}. */
export interface PPOHooks {
  gpu?: Gpu;
  /** When aborted, the run stops after the current iteration and saves a checkpoint. */
  signal?: AbortSignal;
  /** Called with every iteration's metrics record. */
  onIteration?(record: MetricsRecord): void;
  /** Human-readable log lines (default: stderr unless `quiet`). */
  log?(line: string): void;
  /**
   * The held-out evaluation of the starting policy when already known (e.g. shared by the runs of an ablation):
   * it is recorded as iteration 0 instead of evaluating again.
   */
  initialEval?: EvalSummary;
}

/** Result of {@linkcode runPPO}. */
export interface PPOResult {
  /** Iterations completed (including those before a resume). */
  iteration: number;
  interrupted: boolean;
  resumedFrom: string | null;
  checkpoint: string | null;
  /** `<out>/final` (null when interrupted). */
  finalDir: string | null;
  /** Held-out evaluation before training and after the last iteration. */
  initialEval: EvalSummary | null;
  finalEval: EvalSummary | null;
  /** Every iteration record of this invocation. */
  records: MetricsRecord[];
  /** The summary table printed at the end. */
  summary: string;
  seconds: number;
}

/** The held-out numbers of an evaluation. */
export function evalSummary(r: EvalResult, iteration: number): EvalSummary {
  return {
    iteration,
    greedyAccuracy: r.greedyAccuracy,
    pass1: r.pass1,
    passK: r.passK,
    majK: r.majK,
    meanResponseTokens: r.meanResponseTokens,
    stepsPerSolution: r.stepsPerSolution,
    repeatedStepRate: r.repeatedStepRate,
    total: r.total,
  };
}

/** Explained variance 1 − Var(R − V) / Var(R) over the valid tokens (0 when Var(R) = 0). */
export function explainedVariance(exp: Experience): number {
  const m = exp.actionMask, n = m.reduce((a, b) => a + b, 0);
  if (n < 2) return 0;
  const mr = maskedMean(exp.returns, m), md = maskedMean(exp.returns.map((r, i) => r - exp.values[i]), m);
  let vr = 0, vd = 0;
  for (let i = 0; i < m.length; i++) {
    if (!m[i]) continue;
    vr += (exp.returns[i] - mr) ** 2;
    vd += (exp.returns[i] - exp.values[i] - md) ** 2;
  }
  return vr > 0 ? 1 - vd / vr : 0;
}

/** The metrics record of iteration `i` (see the README's metric list). */
export function iterationRecord(
  i: number,
  r: RolloutResult,
  u: PPOUpdateStats,
  extra: { klCoef: number; lr: number; criticLr: number; trainingS: number; elapsedS: number },
): MetricsRecord {
  const e = r.experience, B = e.B;
  const perSeq = (f: Float32Array) =>
    Array.from({ length: B }, (_, b) => {
      let s = 0;
      for (let j = 0; j < e.responseLength[b]; j++) s += f[b * e.T + j];
      return s;
    });
  const steps = e.numSteps.reduce((a, b) => a + b, 0);
  const genTokens = e.responseLength.reduce((a, b) => a + b, 0);
  const seqTokens = genTokens + e.prompts.reduce((a, p) => a + p.length, 0);
  const scores = e.stepScores.flat();
  const klPenalty = perSeq(e.kl).map((k) => k * extra.klCoef);
  return {
    type: "iteration",
    iteration: i,
    step: i,
    sequences: B,
    reward_total: mean(perSeq(e.rewards)),
    reward_success: mean(e.success),
    reward_process: mean(perSeq(e.processRewards)),
    reward_kl_penalty: mean(klPenalty),
    prm_score_mean: scores.length ? mean(scores) : null,
    accuracy: mean(e.correct),
    kl: maskedMean(e.kl, e.actionMask),
    kl_coef: extra.klCoef,
    entropy: maskedMean(e.entropy, e.actionMask),
    policy_loss: u.policyLoss,
    clip_frac: u.clipFrac,
    approx_kl: u.approxKL,
    value_loss: u.valueLoss,
    value_clip_frac: u.valueClipFrac,
    explained_variance: explainedVariance(e),
    grad_norm: u.gradNorm,
    critic_grad_norm: u.criticGradNorm,
    actor_steps: u.steps,
    early_stopped: u.earlyStopped,
    response_length: mean(e.responseLength),
    stopped_fraction: mean(e.stopped),
    steps_per_solution: steps / B,
    repeated_step_rate: steps ? e.repeatedSteps.reduce((a, b) => a + b, 0) / steps : 0,
    tokens_per_s: genTokens / Math.max(r.timing.generation, 1e-9),
    train_tokens_per_s: seqTokens / Math.max(extra.trainingS, 1e-9),
    time_generation_s: r.timing.generation,
    time_scoring_s: r.timing.scoring,
    time_training_s: extra.trainingS,
    iteration_s: r.timing.generation + r.timing.scoring + extra.trainingS,
    logp_gen_max_diff: r.logpGenMaxDiff,
    lr: extra.lr,
    critic_lr: extra.criticLr,
    elapsed_s: extra.elapsedS,
  };
}

/** A progress bar over iterations whose line ends with the last iteration's status. */
class IterationBar extends ProgressBar {
  status = "";
  constructor(total: number, enabled: boolean) {
    super({ total, label: "ppo", bytes: false, ...(enabled ? {} : { enabled: false }) });
  }
  override render(t?: number): string {
    return `${super.render(t)}  ${this.status}`;
  }
}

/** Everything a run holds on the GPU, released together. */
interface Loaded {
  policy: Qwen2Model;
  ref: Qwen2Model;
  actor: Actor;
  critic: Critic | null;
  scorer: RewardScorer | ExactStepScorer | null;
}

function release(l: Partial<Loaded>): void {
  if (l.actor) releaseActor(l.actor);
  if (l.policy) releaseModel(l.policy);
  if (l.ref) releaseModel(l.ref);
  l.critic?.release();
  l.scorer?.release();
}

/**
 * Runs PPO with `config` (unset fields: {@linkcode TRAIN_DEFAULTS}); see the module doc.
 *
 * @example
 * ```ts
 * const r = await runPPO({ iterations: 4, shaping: "clip_delta", out: "runs/ppo-a" });
 * console.log(r.initialEval?.greedyAccuracy, r.finalEval?.greedyAccuracy);
 * ```
 */
export async function runPPO(config: Partial<TrainConfig>, hooks: PPOHooks = {}): Promise<PPOResult> {
  const cfg: TrainConfig = { ...TRAIN_DEFAULTS, ...config };
  checkTrainConfig(cfg);
  const log = hooks.log ?? ((s: string) => cfg.quiet || console.error(s));
  const t0 = performance.now();
  const gpu = hooks.gpu ?? await getGpu();
  const { resumed, dir: ckpt } = await openRun(cfg, readPPOState, ppoResumeMismatch, log);
  const policySource = resumed?.policySource ?? await ensurePolicy(cfg.model, { gpu, log });
  const refSource = resumed?.refSource ?? (cfg.ref || policySource);
  const prmSource = resumed ? resumed.prmSource : await ensurePrm(cfg.prm, policySource, {
    gpu,
    log,
    recipe: { calculator: cfg.calculator },
  });
  const l: Partial<Loaded> = {};
  let metrics: MetricsWriter | null = null;
  try {
    const policyDir = ckpt ? joinPath(ckpt, "policy") : policySource;
    l.policy = await loadModel(policyDir, { gpu });
    l.ref = await loadModel(refSource, { gpu });
    const tokenizer = await loadTokenizer(l.policy.dir!);
    if (prmSource === EXACT_PRM) l.scorer = builtinExactScorer(cfg);
    else if (prmSource) {
      l.scorer = new RewardScorer({ prm: await loadRewardModel(prmSource, "prm", { gpu }) });
    }
    // RLOO's baseline is the question's other samples: a critic would cost a trunk's forward and backward per
    // iteration and change nothing.
    if (cfg.critic !== "none" && cfg.advantage !== "rloo") {
      const from = ckpt ? joinPath(ckpt, "critic") : cfg.critic === "prm" ? prmSource! : policySource;
      l.critic = await Critic.load(from, {
        gpu,
        resume: ckpt !== null,
        maxGradNorm: cfg.maxGradNorm,
        weightDecay: cfg.weightDecay,
        seed: cfg.seed,
      });
    } else l.critic = null;
    l.actor = createActor(l.policy, {
      weightDecay: cfg.weightDecay,
      maxGradNorm: cfg.maxGradNorm,
      optimizer: cfg.optimizer,
    });
    if (ckpt) {
      await l.actor.opt.load(joinPath(ckpt, "policy_optimizer.safetensors"));
      if (l.critic) await l.critic.opt.load(joinPath(ckpt, "critic_optimizer.safetensors"));
    }
    const { policy, ref, actor, critic } = l as Loaded;
    const scorer = l.scorer ?? undefined;
    const problems = await loadProblems(cfg);
    // Problems whose chat prompt leaves no room for the response in the model's context are dropped.
    const fits = (limit: number) => (p: MathExample) => promptIds(tokenizer, p.question).length <= limit;
    const ctx = policy.config.maxPositionEmbeddings;
    const [nTrain, nEval] = [problems.train.length, problems.eval.length];
    problems.train = problems.train.filter(fits(ctx - cfg.maxNewTokens));
    problems.eval = problems.eval.filter(fits(ctx - cfg.evalMaxNewTokens));
    if (problems.train.length === 0) {
      throw new Error(
        `Cannot train: no problem's prompt fits the context of ${ctx} tokens with ${cfg.maxNewTokens} new`,
      );
    }
    if (problems.train.length < nTrain || problems.eval.length < nEval) {
      log(
        `Dropped ${nTrain - problems.train.length} train and ${
          nEval - problems.eval.length
        } held-out problems ` +
          `whose prompts leave no room for the response in ${ctx} positions`,
      );
    }
    const order = new DataOrder(problems.train.length, { seed: cfg.seed });
    const klCoef0 = resumed?.klCoef ?? cfg.klCoef;
    const kl: KLController = cfg.klTarget > 0
      ? new AdaptiveKLController({ initKLCoef: klCoef0, target: cfg.klTarget, horizon: cfg.klHorizon })
      : new FixedKLController(klCoef0);
    const B = cfg.questionsPerIteration * cfg.samplesPerQuestion;
    const mb = cfg.miniBatchSize > 0 ? Math.min(cfg.miniBatchSize, B) : B;
    const sched = {
      schedule: cfg.lrSchedule,
      lr: cfg.lr,
      warmupSteps: cfg.warmupSteps,
      totalSteps: Math.max(cfg.warmupSteps, cfg.iterations * cfg.epochs * Math.ceil(B / mb)),
    };
    const state: PPOTrainerState = {
      iteration: resumed?.iteration ?? 0,
      klCoef: klCoef0,
      elapsedS: resumed?.elapsedS ?? 0,
      policySource,
      refSource,
      prmSource,
      initialEval: resumed?.initialEval ?? null,
      lastEval: resumed?.lastEval ?? null,
      config: cfg,
    };
    const elapsed0 = state.elapsedS, elapsed = () => elapsed0 + (performance.now() - t0) / 1000;
    log(
      `${ckpt ? `Resuming from "${ckpt}" at iteration ${state.iteration}` : `PPO on "${policySource}"`}: ` +
        `reference "${refSource}", PRM ${prmSource ? `"${prmSource}"` : "none"}, ` +
        `critic ${critic ? cfg.critic : "none"}, ` +
        `${problems.trainSource}, ${cfg.iterations} iterations of ${cfg.questionsPerIteration}×` +
        `${cfg.samplesPerQuestion} rollouts, reward success + ${cfg.alpha}·${cfg.shaping}(PRM), ` +
        `${problems.eval.length} held-out problems`,
    );
    const logPath = cfg.log || joinPath(cfg.out, "metrics.jsonl");
    metrics = await MetricsWriter.open(logPath, { keepUpToStep: resumed ? state.iteration : undefined });
    const evaluate = async (i: number): Promise<EvalSummary | null> => {
      if (problems.eval.length === 0) return null;
      const r = await evaluatePolicy(policy, tokenizer, problems.eval, {
        samples: cfg.evalSamples,
        batchSize: cfg.evalBatchSize,
        maxNewTokens: cfg.evalMaxNewTokens,
        seed: cfg.seed,
        calculator: cfg.calculator,
      });
      const s = evalSummary(r, i);
      metrics!.write({
        type: "eval",
        iteration: i,
        step: i,
        greedy_accuracy: s.greedyAccuracy,
        pass1: s.pass1,
        pass_k: s.passK,
        maj_k: s.majK,
        k: r.k,
        total: r.total,
        mean_response_tokens: s.meanResponseTokens,
        steps_per_solution: s.stepsPerSolution,
        repeated_step_rate: s.repeatedStepRate,
        stopped_fraction: r.stoppedFraction,
        eval_s: r.seconds,
        elapsed_s: elapsed(),
      });
      await writeFileAtomic(
        joinPath(cfg.out, "eval.jsonl"),
        r.records.map((x) => JSON.stringify({ iteration: i, ...x })).join("\n") + "\n",
      );
      const acc = s.greedyAccuracy === null ? "—" : `${(100 * s.greedyAccuracy).toFixed(1)}%`;
      log(
        `eval at iteration ${i}: greedy accuracy ${acc} on ${r.total} problems, ${
          s.stepsPerSolution.toFixed(2)
        } ` +
          `steps/solution, repeated-step rate ${s.repeatedStepRate.toFixed(3)} (${r.seconds.toFixed(1)} s)`,
      );
      return s;
    };
    if (!state.initialEval && hooks.initialEval) {
      state.initialEval = state.lastEval = hooks.initialEval;
      metrics.write({
        type: "eval",
        step: 0,
        iteration: 0,
        greedy_accuracy: hooks.initialEval.greedyAccuracy,
        reused: true,
      });
    }
    if (!state.initialEval) state.initialEval = state.lastEval = await evaluate(0);
    const bar = new IterationBar(cfg.iterations, !cfg.quiet);
    bar.update(state.iteration);
    const records: MetricsRecord[] = [];
    let checkpoint = ckpt, interrupted = false;
    const tokenizerDir = l.policy.dir!;
    while (state.iteration < cfg.iterations) {
      const i = state.iteration + 1;
      const questions: MathExample[] = order.take(
        (i - 1) * cfg.questionsPerIteration,
        cfg.questionsPerIteration,
      )
        .map((k) => problems.train[k]);
      const r = await collectRollouts(
        { policy, ref, tokenizer, critic: critic ?? undefined, scorer },
        questions,
        {
          samplesPerQuestion: cfg.samplesPerQuestion,
          maxNewTokens: cfg.maxNewTokens,
          calculator: cfg.calculator,
          temperature: cfg.temperature,
          topK: cfg.topK,
          topP: cfg.topP,
          seed: fnv1a32(`ppo-rollout:${cfg.seed}:${i}`),
          reward: {
            correct: cfg.successCorrect,
            wrong: cfg.successWrong,
            shaping: { kind: cfg.shaping, eta: cfg.eta, finalStepZero: cfg.finalStepZero },
            alpha: cfg.alpha,
            klCoef: kl.value,
            klEstimator: cfg.klEstimator,
            klInReward: cfg.klMode === "reward",
          },
          stepSeparator: scorer instanceof RewardScorer ? scorer.prm?.convention.separator : undefined,
          gamma: cfg.gamma,
          lambda: cfg.lambda,
          whiten: cfg.whiten,
          advantage: cfg.advantage,
        },
      );
      const tt = performance.now();
      const lr = lrAt(actor.opt.stepCount, sched);
      const u = await ppoUpdate(actor, critic, r.experience, {
        epochs: cfg.epochs,
        miniBatchSize: mb,
        microBatchSize: cfg.microBatchSize || undefined,
        lr: (s) => lrAt(s, sched),
        criticLr: () => cfg.criticLr,
        clipRange: cfg.clipRange,
        clipRangeValue: cfg.clipRangeValue,
        entCoef: cfg.entCoef,
        klInLoss: cfg.klMode === "loss" ? { coef: kl.value, estimator: cfg.klEstimator } : undefined,
        targetKL: cfg.targetKl > 0 ? cfg.targetKl : undefined,
        seed: `${cfg.seed}:${i}`,
      });
      const trainingS = (performance.now() - tt) / 1000;
      const record = iterationRecord(i, r, u, {
        klCoef: kl.value,
        lr,
        criticLr: cfg.criticLr,
        trainingS,
        elapsedS: elapsed(),
      });
      kl.update(record.kl as number, r.experience.B);
      state.klCoef = kl.value;
      state.iteration = i;
      metrics.write(record);
      records.push(record);
      hooks.onIteration?.(record);
      bar.status = `reward ${(record.reward_total as number).toFixed(3)}  acc ${
        (100 * (record.accuracy as number)).toFixed(0)
      }%  kl ${(record.kl as number).toFixed(4)}  ${(record.iteration_s as number).toFixed(0)} s/it`;
      bar.update(1);
      if (!bar.enabled) log(`iteration ${i}/${cfg.iterations}  ${bar.status}`);
      const last = i === cfg.iterations;
      interrupted = !last && hooks.signal?.aborted === true;
      if (!last && cfg.evalEvery > 0 && i % cfg.evalEvery === 0) state.lastEval = await evaluate(i);
      if (last) state.lastEval = await evaluate(i);
      await writeFileAtomic(
        joinPath(cfg.out, "metrics.svg"),
        metricsSvg(await readMetrics(logPath), {
          title: `PPO — ${cfg.out}`,
        }),
      );
      if (last || interrupted || (cfg.saveEvery > 0 && i % cfg.saveEvery === 0)) {
        state.elapsedS = elapsed();
        checkpoint = await writePPOCheckpoint({ out: cfg.out, actor, critic, state, tokenizerDir });
        await prunePPOCheckpoints(cfg.out, cfg.saveTotalLimit);
      }
      if (interrupted) break;
    }
    bar.finish();
    let finalDir: string | null = null;
    if (!interrupted) {
      finalDir = joinPath(cfg.out, "final");
      await saveModel(policy, joinPath(finalDir, "policy"), { tokenizerDir });
      if (critic) await critic.save(joinPath(finalDir, "critic"), { tokenizerDir });
    }
    const all = await readMetrics(logPath);
    const summary = summaryTable(state.initialEval, state.lastEval, all);
    if (!interrupted && records.length > 0) {
      metrics.write({
        type: "summary",
        step: state.iteration,
        iteration: state.iteration,
        initial_greedy_accuracy: state.initialEval?.greedyAccuracy ?? null,
        final_greedy_accuracy: state.lastEval?.greedyAccuracy ?? null,
        final_steps_per_solution: state.lastEval?.stepsPerSolution ?? null,
        final_repeated_step_rate: state.lastEval?.repeatedStepRate ?? null,
        elapsed_s: elapsed(),
      });
    }
    const seconds = (performance.now() - t0) / 1000;
    log(
      interrupted
        ? `Stopped at iteration ${state.iteration}: checkpoint "${checkpoint}" (resume with --resume)`
        : `Done: ${state.iteration} iterations, final policy in "${joinPath(finalDir!, "policy")}" ` +
          `(${seconds.toFixed(1)} s)`,
    );
    return {
      iteration: state.iteration,
      interrupted,
      resumedFrom: ckpt,
      checkpoint,
      finalDir,
      initialEval: state.initialEval,
      finalEval: interrupted ? null : state.lastEval,
      records,
      summary,
      seconds,
    };
  } finally {
    metrics?.close();
    release(l);
  }
}
