/**
 * Held-out evaluation of a policy on GSM8K-form problems with the chat template: greedy accuracy and, with
 * n sampled solutions per problem, sampled pass@1, pass@k and maj@k, plus the step statistics that reveal reward
 * hacking (steps per solution, repeated-step rate), with one record per problem.
 *
 * ```
 * greedy accuracy = (1/P) Σ_p c_p^greedy
 * pass@1          = (1/P) Σ_p c_p / n                       (c_p correct among n samples)
 * pass@k          = (1/P) Σ_p [1 − C(n − c_p, k) / C(n, k)]   (unbiased, Chen et al. 2021; k ≤ n)
 * maj@k           = (1/P) Σ_p [majority final answer of the k = n samples is correct]
 * ```
 * Sampling is seeded per (problem, sample), so results do not depend on batching.
 *
 * @module
 */
import type { MathExample } from "../data/arithmetic.ts";
import { fnv1a32 } from "../data/rng.ts";
import { calculatorFor } from "../model/calculator.ts";
import { generate } from "../model/generate.ts";
import type { Qwen2Model } from "../model/model.ts";
import { extractAnswer } from "../rewards/answer.ts";
import { splitSteps } from "../rewards/steps.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { chatStopIds } from "../train/evaluate.ts";
import { promptIds } from "../train/sft_data.ts";
import { repeatedStepCount } from "./rollout.ts";

/** Options of {@linkcode evaluatePolicy}. */
export interface EvalOptions {
  /** Sampled solutions n per problem (default 0: greedy only). */
  samples?: number;
  /** k of pass@k (default n). */
  k?: number;
  /** Sampling temperature (default 1), top-k (0 = off), top-p (1 = off). */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Longest response (default 200 tokens). */
  maxNewTokens?: number;
  /** Sequences decoded together (default 64). */
  batchSize?: number;
  /** Seed of the samples (default 0). */
  seed?: number;
  /** Skip the greedy decode (default false). */
  noGreedy?: boolean;
  /** Decode with the GSM8K calculator (exact values inside `<<expr=…>>`, see calculator.ts; default false). */
  calculator?: boolean;
}

/** One decoded solution. */
export interface SolutionRecord {
  response: string;
  answer: string | null;
  correct: boolean;
  tokens: number;
  stopped: boolean;
  steps: number;
  repeatedSteps: number;
}

/** Per-problem result. */
export interface ProblemRecord {
  index: number;
  question: string;
  gold: string;
  greedy?: SolutionRecord;
  samples?: SolutionRecord[];
  /** Correct samples c. */
  sampledCorrect?: number;
  /** Most frequent final answer among the samples (null when none has one). */
  majorityAnswer?: string | null;
  majorityCorrect?: boolean;
}

/** Result of {@linkcode evaluatePolicy} (sampled metrics are null without samples). */
export interface EvalResult {
  total: number;
  greedyAccuracy: number | null;
  pass1: number | null;
  passK: number | null;
  majK: number | null;
  k: number;
  samples: number;
  /** Over every decoded solution (greedy and sampled). */
  meanResponseTokens: number;
  stepsPerSolution: number;
  repeatedStepRate: number;
  stoppedFraction: number;
  seconds: number;
  records: ProblemRecord[];
}

/** Unbiased pass@k of one problem with c correct among n samples: 1 − C(n−c, k)/C(n, k). */
export function passAtK(n: number, c: number, k: number): number {
  if (
    !(Number.isInteger(n) && Number.isInteger(c) && Number.isInteger(k) && 0 <= c && c <= n && 1 <= k &&
      k <= n)
  ) {
    throw new Error(`Invalid pass@k input: n = ${n}, c = ${c}, k = ${k} (expected 0 ≤ c ≤ n, 1 ≤ k ≤ n)`);
  }
  if (n - c < k) return 1;
  let miss = 1; // Π_{i=n−c+1}^{n} (1 − k/i) = C(n−c, k)/C(n, k)
  for (let i = n - c + 1; i <= n; i++) miss *= 1 - k / i;
  return 1 - miss;
}

/** Most frequent non-null answer (ties: the one seen first), or null. */
export function majorityAnswer(answers: readonly (string | null)[]): string | null {
  const count = new Map<string, number>();
  let best: string | null = null, bestN = 0;
  for (const a of answers) {
    if (a === null) continue;
    const n = (count.get(a) ?? 0) + 1;
    count.set(a, n);
    if (n > bestN) [best, bestN] = [a, n];
  }
  return best;
}

/** Decodes `prompts` (token ids) with the policy, batched by prompt length; returns solutions in input order. */
async function decode(
  model: Qwen2Model,
  tokenizer: Tokenizer,
  prompts: readonly number[][],
  gold: readonly string[],
  opts: {
    temperature: number;
    topK: number;
    topP: number;
    maxNewTokens: number;
    batchSize: number;
    seeds: number[];
    calculator: boolean;
  },
): Promise<SolutionRecord[]> {
  const stopIds = chatStopIds(model, tokenizer);
  const calculator = opts.calculator ? calculatorFor(tokenizer, model.config.vocabSize) : undefined;
  const order = prompts.map((_, i) => i).sort((a, b) => prompts[a].length - prompts[b].length || a - b);
  const out: SolutionRecord[] = new Array(prompts.length);
  for (let i0 = 0; i0 < order.length; i0 += opts.batchSize) {
    const idx = order.slice(i0, i0 + opts.batchSize);
    const g = await generate(model, idx.map((i) => prompts[i]), {
      maxNewTokens: opts.maxNewTokens,
      temperature: opts.temperature,
      topK: opts.topK,
      topP: opts.topP,
      sequenceSeeds: idx.map((i) => opts.seeds[i]),
      stopIds,
      padId: stopIds[0],
      calculator,
    });
    idx.forEach((i, j) => {
      const response = tokenizer.decode(g.tokens[j], { skipSpecialTokens: true });
      const steps = splitSteps(response).map((s) => s.text);
      const answer = extractAnswer(response);
      out[i] = {
        response,
        answer,
        correct: answer !== null && answer === extractAnswer(gold[i]),
        tokens: g.tokens[j].length,
        stopped: g.stopped[j],
        steps: steps.length,
        repeatedSteps: repeatedStepCount(steps),
      };
    });
  }
  return out;
}

/** Evaluates `model` on `problems` (see the module doc). */
export async function evaluatePolicy(
  model: Qwen2Model,
  tokenizer: Tokenizer,
  problems: readonly MathExample[],
  opts: EvalOptions = {},
): Promise<EvalResult> {
  const t0 = performance.now();
  const n = opts.samples ?? 0, k = opts.k ?? n;
  if (!(Number.isSafeInteger(n) && n >= 0)) {
    throw new Error(`Invalid samples "${n}": expected an integer ≥ 0`);
  }
  if (n > 0 && !(Number.isSafeInteger(k) && k >= 1 && k <= n)) {
    throw new Error(`Invalid k "${k}": expected an integer in [1, ${n}] (the number of samples)`);
  }
  const maxNewTokens = opts.maxNewTokens ?? 200, batchSize = opts.batchSize ?? 64;
  const limit = model.config.maxPositionEmbeddings - maxNewTokens;
  const prompts = problems.map((p, i) => {
    const ids = promptIds(tokenizer, p.question);
    if (ids.length > limit) {
      throw new Error(
        `Cannot evaluate problem ${i}: its prompt has ${ids.length} tokens, more than the ${limit} that leave ` +
          `room for ${maxNewTokens} new tokens`,
      );
    }
    return ids;
  });
  const gold = problems.map((p) => p.finalAnswer);
  const records: ProblemRecord[] = problems.map((p, i) => ({
    index: i,
    question: p.question,
    gold: p.finalAnswer,
  }));
  const all: SolutionRecord[] = [];
  const common = {
    maxNewTokens,
    batchSize,
    topK: opts.topK ?? 0,
    topP: opts.topP ?? 1,
    calculator: opts.calculator ?? false,
  };
  if (!opts.noGreedy) {
    const greedy = await decode(model, tokenizer, prompts, gold, {
      ...common,
      temperature: 0,
      seeds: prompts.map(() => 0),
    });
    greedy.forEach((s, i) => (records[i].greedy = s));
    all.push(...greedy);
  }
  let passK: number | null = null, majK: number | null = null, pass1: number | null = null;
  if (n > 0) {
    const rep = prompts.flatMap((p) => Array.from({ length: n }, () => p));
    const seeds = problems.flatMap((p, i) =>
      Array.from({ length: n }, (_, j) => fnv1a32(`eval-sample:${opts.seed ?? 0}:${i}:${j}:${p.question}`))
    );
    const sampled = await decode(model, tokenizer, rep, rep.map((_, j) => gold[Math.floor(j / n)]), {
      ...common,
      temperature: opts.temperature ?? 1,
      seeds,
    });
    all.push(...sampled);
    let p1 = 0, pk = 0, mk = 0;
    records.forEach((r, i) => {
      const s = sampled.slice(i * n, (i + 1) * n), c = s.filter((x) => x.correct).length;
      const maj = majorityAnswer(s.map((x) => x.answer));
      Object.assign(r, { samples: s, sampledCorrect: c, majorityAnswer: maj });
      r.majorityCorrect = maj !== null && maj === extractAnswer(r.gold);
      p1 += c / n;
      pk += passAtK(n, c, k);
      mk += r.majorityCorrect ? 1 : 0;
    });
    const P = problems.length || 1;
    [pass1, passK, majK] = [p1 / P, pk / P, mk / P];
  }
  const P = problems.length, S = all.length || 1;
  const sum = (f: (s: SolutionRecord) => number) => all.reduce((a, s) => a + f(s), 0);
  const steps = sum((s) => s.steps);
  return {
    total: P,
    greedyAccuracy: opts.noGreedy ? null : P ? records.filter((r) => r.greedy!.correct).length / P : 0,
    pass1,
    passK,
    majK,
    k: n > 0 ? k : 0,
    samples: n,
    meanResponseTokens: sum((s) => s.tokens) / S,
    stepsPerSolution: steps / S,
    repeatedStepRate: steps ? sum((s) => s.repeatedSteps) / steps : 0,
    stoppedFraction: sum((s) => (s.stopped ? 1 : 0)) / S,
    seconds: (performance.now() - t0) / 1000,
    records,
  };
}
