/**
 * PPO rollouts: sample K solutions per question from the policy (chat template, batched KV-cache generation with
 * GPU sampling), score them, and assemble one {@link Experience}:
 *
 * ```
 * generate      y ~ π_θ(· | chat(q))                               (generate: tokens, sampler log-probs)
 * old log-probs logp_j = log π_θ(y_j | s_j)     training-mode forward (trunkForward + lmHeadForward)
 * reference     logpRef_j = log π_ref(y_j | s_j) frozen copy of the initial policy
 * critic        V_j = V_φ(s_j)                                     value head on its own trunk
 * PRM           r_k = σ(z_k) at the end token of step k            (Scorer, e.g. RewardScorer)
 * rewards       shaped_k = shape(r; none/clip/delta/clip_delta/min, η)
 *               reward_j = α Σ_{k: end_k=j} shaped_k + [j = T_b−1]·success − β·k(logp_j, logpRef_j)
 * GAE           A, R = gae(reward, V; γ, λ) on the GPU, A whitened over the batch
 *               (or RLOO: A = return-to-go − mean return of the question's other samples, rloo.ts)
 * ```
 * Steps are the non-empty lines of the decoded response (the PRM's separator); step k's reward sits on the
 * response token that covers its last non-whitespace character (`stepEndTokens` over the token offsets).
 *
 * @module
 */
import { runBatch } from "../gpu/batch.ts";
import { upload } from "../gpu/io.ts";
import { Tensor } from "../gpu/tensor.ts";
import { calculatorFor } from "../model/calculator.ts";
import { generate } from "../model/generate.ts";
import { lmHeadForward } from "../model/lm_head.ts";
import { type Qwen2Model, uploadPacked } from "../model/model.ts";
import { trunkForward } from "../model/qwen2.ts";
import { isCorrect } from "../rewards/answer.ts";
import { combineRewards } from "../rewards/combine.ts";
import type { ShapeOptions } from "../rewards/shaping.ts";
import { splitSteps, stepEndTokens } from "../rewards/steps.ts";
import type { Scorer } from "../rm/types.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { chatStopIds } from "../train/evaluate.ts";
import { promptIds } from "../train/sft_data.ts";
import { fnv1a32 } from "../data/rng.ts";
import { type Experience, packRollouts, tokenMatrix } from "./experience.ts";
import { gaeGpu, whitenGpu } from "./gae_gpu.ts";
import { klEstimate, type KLEstimator } from "./kl.ts";
import { rlooBaselines } from "./rloo.ts";

/** A question with its reference final answer. */
export interface RolloutQuestion {
  question: string;
  /** Gold final answer (number or `#### n` text). */
  finalAnswer: string;
}

/** Anything that gives critic values V(s_j) for the response tokens (see `Critic` in critic.ts). */
export interface ValueModel {
  /** (B, T) values of each response token's state, T = the longest response (0 past each response). */
  values(prompts: readonly number[][], responses: readonly number[][]): Promise<Float32Array>;
}

/** The models a rollout uses. */
export interface RolloutModels {
  /** The policy π_θ being trained. */
  policy: Qwen2Model;
  /** A separate frozen copy of the initial policy (never the policy itself). */
  ref: Qwen2Model;
  /** The policy's tokenizer (chat template, decoding). */
  tokenizer: Tokenizer;
  /** Critic (omit: values 0, GAE then gives discounted returns-to-go). */
  critic?: ValueModel;
  /** PRM scorer for the process rewards (omit: no process reward). */
  scorer?: Scorer;
}

/** How rewards are assembled (see the module doc). */
export interface RewardOptions {
  /** Success reward for a correct / wrong final answer (default 1 / 0). */
  correct?: number;
  wrong?: number;
  /** PRM shaping (default clip_delta with η = 0.5 and the final step zero; ignored without a scorer). */
  shaping?: ShapeOptions;
  /** Weight α of the process rewards (default 1). */
  alpha?: number;
  /** KL coefficient β (default 0.01); the penalty is in the reward unless `klInReward` is false. */
  klCoef?: number;
  /** Per-token KL estimator (default "k1", as OpenRLHF). */
  klEstimator?: KLEstimator;
  /** Subtract β·k from the rewards (default true; false: PPO adds the KL to the loss instead). */
  klInReward?: boolean;
}

/** Options of {@linkcode collectRollouts}. */
export interface RolloutOptions {
  /** Samples K per question. */
  samplesPerQuestion: number;
  /** New tokens at most per response. */
  maxNewTokens: number;
  /**
   * Sample with the GSM8K calculator (calculator.ts; default false): annotation values are exact, and the tokens
   * it writes are left out of the policy loss (`policyMask`).
   */
  calculator?: boolean;
  /** Sampling temperature (default 1), top-k (0 = off), top-p (1 = off). */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Seed of the sampler; sample k of question q uses sequence seed hash(seed, q, k). */
  seed: number;
  /** Sequences generated together (default all). */
  generateBatch?: number;
  /** Padded tokens per scoring forward pass (default 8192). */
  maxBatchTokens?: number;
  /** Reward assembly. */
  reward?: RewardOptions;
  /** Step separator of the responses (default "\n"; use the PRM's convention). */
  stepSeparator?: string;
  /** GAE discount γ and λ (default 1, 0.95) and advantage whitening (default true). */
  gamma?: number;
  lambda?: number;
  whiten?: boolean;
  /**
   * Advantage estimator (default "gae"): GAE against the critic's values, or "rloo": return-to-go minus the
   * leave-one-out mean return of the question's other samples (rloo.ts; γ, λ = 1; the critic, if any, is
   * still trained on the returns).
   */
  advantage?: "gae" | "rloo";
}

/** Result of {@linkcode collectRollouts}. */
export interface RolloutResult {
  experience: Experience;
  /** Wall time of generation and of scoring (forwards, PRM, rewards, GAE), seconds. */
  timing: { generation: number; scoring: number };
  /** max |logp_gen − logp_recomputed| over the actions (sampler vs training-mode forward). */
  logpGenMaxDiff: number;
}

/** Default shaping: Clip-Delta with η = 0.5, Delta over steps 1..K−1 (the final step is judged by success). */
export const DEFAULT_SHAPING: ShapeOptions = { kind: "clip_delta", eta: 0.5, finalStepZero: true };

/**
 * log π(response_j | prompt + response_<j) and the entropy of π(· | same state) for every response token, by a
 * training-mode forward pass (trunkForward + lmHeadForward, the kernels the PPO update backpropagates through).
 * Sequences are packed into passes of at most `maxBatchTokens` padded tokens. Returns (B, T) arrays, T = the
 * longest response.
 */
export async function policyLogprobs(
  model: Qwen2Model,
  seqs: { prompts: readonly number[][]; responses: readonly number[][] },
  opts: { maxBatchTokens?: number } = {},
): Promise<{ logp: Float32Array; entropy: Float32Array }> {
  const { prompts, responses } = seqs;
  const B = responses.length, T = Math.max(1, ...responses.map((r) => r.length));
  const logp = tokenMatrix(B, T), entropy = tokenMatrix(B, T);
  for (const idx of lengthChunks(prompts, responses, opts.maxBatchTokens ?? 8192)) {
    const pr = packRollouts(idx.map((i) => prompts[i]), idx.map((i) => responses[i]));
    const { gpu, config: cfg, params } = model;
    const { B: b, T: tp } = pr.packed, N = b * tp;
    const temps: Tensor[] = [];
    const keep = (t: Tensor) => (temps.push(t), t);
    const inputs = uploadPacked(gpu, pr.packed, "rollout");
    temps.push(inputs.ids, inputs.positions, inputs.mask);
    const targets = keep(upload(gpu, pr.targets, { label: "rollout.targets" }));
    const out = {
      logp: keep(new Tensor(gpu, [N], "f32", "rollout.logp")),
      lse: keep(new Tensor(gpu, [N], "f32", "rollout.lse")),
      entropy: keep(new Tensor(gpu, [N], "f32", "rollout.entropy")),
    };
    const reads = await runBatch(gpu, "rollout.logprobs", (batch) => {
      const { hidden } = trunkForward(batch, cfg, params, inputs);
      keep(hidden);
      lmHeadForward(batch, out, hidden, targets, cfg, params);
      return [batch.read(out.logp), batch.read(out.entropy)];
    }, { release: temps });
    const [lp, en] = (await Promise.all(reads)) as Float32Array[];
    idx.forEach((i, k) => {
      for (let j = 0; j < responses[i].length; j++) {
        const row = pr.actionRows[k * pr.T + j];
        logp[i * T + j] = lp[row];
        entropy[i * T + j] = en[row];
      }
    });
  }
  return { logp, entropy };
}

/** Sequence indices grouped (longest first) into chunks of at most `budget` padded tokens (B·T_max). */
export function lengthChunks(
  prompts: readonly number[][],
  responses: readonly number[][],
  budget: number,
): number[][] {
  if (!(Number.isSafeInteger(budget) && budget >= 1)) {
    throw new Error(`Invalid maxBatchTokens "${budget}": expected a positive integer`);
  }
  const len = (i: number) => prompts[i].length + responses[i].length;
  const order = responses.map((_, i) => i).sort((a, b) => len(b) - len(a) || a - b);
  const out: number[][] = [];
  for (let i0 = 0; i0 < order.length;) {
    const n = Math.max(1, Math.min(order.length - i0, Math.floor(budget / len(order[i0]))));
    out.push(order.slice(i0, i0 + n));
    i0 += n;
  }
  return out;
}

/** A decoded response split into steps, with the response token that ends each step. */
export interface ResponseSteps {
  /** Decoded text (special tokens dropped). */
  text: string;
  /** The trimmed steps. */
  steps: string[];
  /** Response token index of each step's end. */
  stepEnds: number[];
}

/**
 * Decodes `tokens` and splits the text into steps on `separator`; each step's end token is the last token covering
 * its last non-whitespace character (byte-level offsets; special tokens cover nothing).
 */
export function responseSteps(
  tokenizer: Tokenizer,
  tokens: readonly number[],
  separator = "\n",
): ResponseSteps {
  const text = tokenizer.decode(tokens, { skipSpecialTokens: true });
  const spans = splitSteps(text, { separator });
  if (spans.length === 0) return { text, steps: [], stepEnds: [] };
  return {
    text,
    steps: spans.map((s) => s.text),
    stepEnds: stepEndTokens(spans, charOffsets(tokenizer, tokens, text), { text }),
  };
}

/**
 * Character offsets `[start, end)` of each token in `text` (the tokens decoded without special tokens): each
 * token's bytes (`tokenizer.tokenBytes`; special tokens none) laid along the UTF-8 bytes of `text`. When they do
 * not spell the text (invalid UTF-8 among sampled bytes, or a tokenizer that is not byte-level), offsets come from
 * decoding growing prefixes instead (exact, O(n²)).
 */
export function charOffsets(
  tokenizer: Tokenizer,
  tokens: readonly number[],
  text: string,
): [number, number][] {
  try {
    const bytes = new TextEncoder().encode(text);
    // charAt[b]: UTF-16 index of the character holding byte b; charEnd[b]: the index after that character.
    const charAt = new Int32Array(bytes.length + 1), charEnd = new Int32Array(bytes.length + 1);
    for (let i = 0, b = 0; i < text.length;) {
      const cp = text.codePointAt(i)!, units = cp > 0xffff ? 2 : 1;
      const width = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
      charAt.fill(i, b, b + width);
      charEnd.fill(i + units, b, b + width);
      (b += width, i += units);
    }
    charAt[bytes.length] = charEnd[bytes.length] = text.length;
    let pos = 0;
    const out = tokens.map((id): [number, number] => {
      const tb = tokenizer.isSpecial(id) ? new Uint8Array(0) : tokenizer.tokenBytes(id);
      for (let j = 0; j < tb.length; j++) if (bytes[pos + j] !== tb[j]) throw new Error("mismatch");
      const start = charAt[pos];
      pos += tb.length;
      return [start, tb.length ? charEnd[pos - 1] : start];
    });
    if (pos !== bytes.length) throw new Error("short");
    return out;
  } catch {
    const out: [number, number][] = [];
    let prev = 0;
    for (let i = 0; i < tokens.length; i++) {
      const decoded = tokenizer.decode(tokens.slice(0, i + 1), { skipSpecialTokens: true }).length;
      const end = Math.max(prev, Math.min(text.length, decoded));
      out.push([prev, end]);
      prev = end;
    }
    return out;
  }
}

/** Steps that repeat an earlier step of the same solution (after collapsing whitespace). */
export function repeatedStepCount(steps: readonly string[]): number {
  const seen = new Set<string>();
  let n = 0;
  for (const s of steps) {
    const key = s.replace(/\s+/g, " ").trim();
    if (seen.has(key)) n++;
    else seen.add(key);
  }
  return n;
}

/** Sequence seed of sample k of question q (a hash, so batching never changes what a sequence samples). */
export function sampleSeed(seed: number, q: number, k: number): number {
  return fnv1a32(`ppo-sample:${seed}:${q}:${k}`);
}

/**
 * Samples `opts.samplesPerQuestion` responses per question and scores them into an {@link Experience} (see the
 * module doc). Sequence i = q·K + k is sample k of question q.
 */
export async function collectRollouts(
  models: RolloutModels,
  questions: readonly RolloutQuestion[],
  opts: RolloutOptions,
): Promise<RolloutResult> {
  const { policy, ref, tokenizer } = models;
  if (policy === ref || policy.params === ref.params) {
    throw new Error(
      "Cannot collect rollouts: the reference model must be a separate frozen copy of the policy",
    );
  }
  const K = opts.samplesPerQuestion;
  if (!(Number.isSafeInteger(K) && K >= 1)) {
    throw new Error(`Invalid samplesPerQuestion "${K}": expected a positive integer`);
  }
  if (questions.length === 0) throw new Error("Cannot collect rollouts: no questions");
  const t0 = performance.now();
  const qPrompts = questions.map((q) => promptIds(tokenizer, q.question));
  const prompts: number[][] = [], seeds: number[] = [], qIndex: number[] = [];
  qPrompts.forEach((p, q) => {
    for (let k = 0; k < K; k++) (prompts.push(p), seeds.push(sampleSeed(opts.seed, q, k)), qIndex.push(q));
  });
  const B = prompts.length, stopIds = chatStopIds(policy, tokenizer);
  const responses: number[][] = [],
    genLogp: number[][] = [],
    stopped: boolean[] = [],
    forced: boolean[][] = [];
  const calculator = opts.calculator ? calculatorFor(tokenizer, policy.config.vocabSize) : undefined;
  const chunk = opts.generateBatch ?? B;
  for (let i0 = 0; i0 < B; i0 += chunk) {
    const g = await generate(policy, prompts.slice(i0, i0 + chunk), {
      maxNewTokens: opts.maxNewTokens,
      temperature: opts.temperature ?? 1,
      topK: opts.topK ?? 0,
      topP: opts.topP ?? 1,
      seed: opts.seed,
      sequenceSeeds: seeds.slice(i0, i0 + chunk),
      stopIds,
      padId: stopIds[0],
      calculator,
    });
    responses.push(...g.tokens);
    genLogp.push(...g.logprobs);
    forced.push(...g.forced);
    stopped.push(...g.stopped);
  }
  const t1 = performance.now();
  const experience = await scoreRollouts(models, questions, {
    prompts,
    responses,
    genLogp,
    forced,
    stopped,
    questionIndex: qIndex,
  }, opts);
  let logpGenMaxDiff = 0;
  // Over the policy's own tokens: the sampler gives a calculator-forced token probability 1, training mode does not.
  for (let i = 0; i < experience.policyMask.length; i++) {
    if (experience.policyMask[i]) {
      logpGenMaxDiff = Math.max(logpGenMaxDiff, Math.abs(experience.logp[i] - experience.logpGen[i]));
    }
  }
  return {
    experience,
    timing: { generation: (t1 - t0) / 1000, scoring: (performance.now() - t1) / 1000 },
    logpGenMaxDiff,
  };
}

/** Sampled sequences before scoring. */
export interface SampledBatch {
  prompts: number[][];
  /** Non-empty responses. */
  responses: number[][];
  /** Sampler log-probs per response token. */
  genLogp: number[][];
  /** Per response token, whether the calculator wrote it (default: none). */
  forced?: boolean[][];
  stopped: boolean[];
  /** Question of each sequence. */
  questionIndex: number[];
}

/**
 * Scores sampled sequences into an {@link Experience}: training-mode policy and reference log-probs, critic
 * values, PRM step scores, shaped and combined rewards, KL, GAE and whitening (see the module doc).
 */
export async function scoreRollouts(
  models: RolloutModels,
  questions: readonly RolloutQuestion[],
  sampled: SampledBatch,
  opts: Omit<RolloutOptions, "samplesPerQuestion" | "maxNewTokens" | "seed">,
): Promise<Experience> {
  const { policy, ref, tokenizer, critic, scorer } = models;
  const { prompts, responses } = sampled;
  const B = responses.length, T = Math.max(1, ...responses.map((r) => r.length));
  const rw = opts.reward ?? {};
  const shaping = rw.shaping ?? DEFAULT_SHAPING;
  const alpha = rw.alpha ?? 1, beta = rw.klCoef ?? 0.01, estimator = rw.klEstimator ?? "k1";
  const seqs = { prompts, responses };
  const fwd = { maxBatchTokens: opts.maxBatchTokens };
  const { logp, entropy } = await policyLogprobs(policy, seqs, fwd);
  const { logp: logpRef } = await policyLogprobs(ref, seqs, fwd);
  const values = critic ? await critic.values(prompts, responses) : tokenMatrix(B, T);
  const parsed = responses.map((r) => responseSteps(tokenizer, r, opts.stepSeparator));
  let stepScores: number[][] = parsed.map(() => []), shaped: number[][] = parsed.map(() => []);
  if (scorer) {
    const scored = await scorer.score(parsed.map((p, i) => ({
      question: questions[sampled.questionIndex[i]].question,
      steps: p.steps,
      shaping,
    })));
    scored.forEach((s, i) => {
      if (s.stepScores === null || s.shapedRewards === null) {
        throw new Error("Cannot compute process rewards: the scorer has no PRM (it returned no step scores)");
      }
      if (s.stepScores.length !== parsed[i].steps.length) {
        throw new Error(
          `Cannot place process rewards on response ${i}: the PRM scored ${s.stepScores.length} steps, ` +
            `the response has ${parsed[i].steps.length}`,
        );
      }
    });
    stepScores = scored.map((s) => s.stepScores!);
    shaped = scored.map((s) => s.shapedRewards!);
  }
  const exp: Experience = {
    B,
    T,
    prompts,
    responses,
    texts: parsed.map((p) => p.text),
    questionIndex: Int32Array.from(sampled.questionIndex),
    responseLength: Int32Array.from(responses, (r) => r.length),
    stopped: Uint8Array.from(sampled.stopped, Number),
    success: new Float32Array(B),
    correct: new Uint8Array(B),
    numSteps: Int32Array.from(parsed, (p) => p.steps.length),
    repeatedSteps: Int32Array.from(parsed, (p) => repeatedStepCount(p.steps)),
    stepScores,
    shapedRewards: shaped,
    stepEnds: parsed.map((p) => p.stepEnds),
    actionMask: tokenMatrix(B, T),
    policyMask: tokenMatrix(B, T),
    logp,
    logpRef,
    logpGen: tokenMatrix(B, T),
    entropy,
    values,
    kl: tokenMatrix(B, T),
    processRewards: tokenMatrix(B, T),
    rewards: tokenMatrix(B, T),
    advantages: tokenMatrix(B, T),
    returns: tokenMatrix(B, T),
  };
  for (let b = 0; b < B; b++) {
    const n = responses[b].length, o = b * T;
    exp.actionMask.fill(1, o, o + n);
    for (let j = 0; j < n; j++) exp.policyMask[o + j] = sampled.forced?.[b][j] ? 0 : 1;
    exp.logpGen.set(sampled.genLogp[b], o);
    const correct = isCorrect(parsed[b].text, questions[sampled.questionIndex[b]].finalAnswer);
    exp.correct[b] = correct ? 1 : 0;
    exp.success[b] = correct ? rw.correct ?? 1 : rw.wrong ?? 0;
    const kl = klEstimate(logp.subarray(o, o + n), logpRef.subarray(o, o + n), { estimator });
    exp.kl.set(kl, o);
    const process = combineRewards({
      stepRewards: shaped[b],
      stepEndTokens: scorer ? parsed[b].stepEnds : [],
      success: 0,
      length: n,
      alpha,
    });
    exp.processRewards.set(process, o);
    const total = combineRewards({
      stepRewards: shaped[b],
      stepEndTokens: scorer ? parsed[b].stepEnds : [],
      success: exp.success[b],
      length: n,
      alpha,
      klPenalty: (rw.klInReward ?? true) ? kl.map((k) => beta * k) : undefined,
    });
    exp.rewards.set(total, o);
  }
  if ((opts.advantage ?? "gae") === "rloo") {
    // GAE with λ = γ = 1 against V ≡ baseline_b gives Σ_{j≥t} r_j − baseline_b. The copy swaps only the
    // values (the critic's stay in exp for its clipped loss) and shares exp's advantage and return arrays.
    const totals = Array.from({ length: B }, (_, b) => {
      let r = 0;
      for (let j = 0; j < exp.responseLength[b]; j++) r += exp.rewards[b * T + j];
      return r;
    });
    const base = rlooBaselines(totals, exp.questionIndex), baseline = tokenMatrix(B, T);
    for (let b = 0; b < B; b++) baseline.fill(base[b], b * T, b * T + exp.responseLength[b]);
    await advantagesGpu(policy, { ...exp, values: baseline }, { gamma: 1, lambda: 1, whiten: opts.whiten });
  } else {
    await advantagesGpu(policy, exp, {
      gamma: opts.gamma ?? 1,
      lambda: opts.lambda ?? 0.95,
      whiten: opts.whiten,
    });
  }
  return exp;
}

/**
 * GAE and whitening of `exp.rewards` and `exp.values` on the GPU (`gaeGpu`, `whitenGpu`), writing
 * `exp.advantages` (whitened unless `whiten` is false) and `exp.returns` in place.
 */
export async function advantagesGpu(
  model: Qwen2Model,
  exp: Experience,
  opts: { gamma: number; lambda: number; whiten?: boolean },
): Promise<void> {
  const { gpu } = model, shape = [exp.B, exp.T];
  const t = [
    upload(gpu, exp.rewards, { shape, label: "gae.rewards" }),
    upload(gpu, exp.values, { shape, label: "gae.values" }),
    upload(gpu, exp.actionMask, { shape, label: "gae.mask" }),
    new Tensor(gpu, shape, "f32", "gae.advantages"),
    new Tensor(gpu, shape, "f32", "gae.returns"),
    new Tensor(gpu, shape, "f32", "gae.whitened"),
  ];
  const [rewards, values, mask, advantages, returns, whitened] = t;
  const reads = await runBatch(gpu, "rollout.gae", (batch) => {
    gaeGpu(batch, { advantages, returns }, { rewards, values, mask }, opts);
    if (opts.whiten ?? true) whitenGpu(batch, whitened, { x: advantages, mask });
    return [batch.read(opts.whiten ?? true ? whitened : advantages), batch.read(returns)];
  }, { release: t });
  const [a, r] = (await Promise.all(reads)) as Float32Array[];
  exp.advantages.set(a);
  exp.returns.set(r);
}
