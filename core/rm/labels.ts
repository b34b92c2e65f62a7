/**
 * Label sources for reward-model training:
 *
 * - **Exact step labels** of the built-in arithmetic task (`labelSteps`): reference solutions (every step 1),
 *   `corruptSolution` outputs (1 up to the injected error, 0 from it on) and policy samples, all labelled
 *   exactly ("first_error" mode, as PRM800K / Math-Shepherd prefix labels).
 * - **Math-Shepherd Monte Carlo estimation** (Wang et al. 2024) with a policy, for data without exact labels:
 *   for the prefix made of steps 1..k, sample N completions and count those reaching the gold answer, c_k;
 *   ```
 *   soft label y_k = c_k / N            hard label y_k = 1[c_k > 0]
 *   ```
 *   A prefix that already states a final answer (a `####` line) is decided without rollouts:
 *   c_k = N·1[isCorrect(prefix, gold)].
 * - **Outcome labels** for the ORM: policy samples labelled `isCorrect(sample, gold)`.
 *
 * Sampling is deterministic: rollout r of prefix k of item i uses its own sequence seed, so results do not depend
 * on how rollouts are batched.
 *
 * @module
 */
import type { ArithmeticProblem } from "../data/arithmetic.ts";
import { CORRUPTION_KINDS, corruptSolution } from "../data/corrupt.ts";
import { fnv1a32, Rng } from "../data/rng.ts";
import { type LabelMode, labelSteps, referenceNumbers } from "../data/step_labels.ts";
import { calculatorFor } from "../model/calculator.ts";
import { generate } from "../model/generate.ts";
import type { Qwen2Model } from "../model/model.ts";
import { isCorrect } from "../rewards/answer.ts";
import { splitSteps } from "../rewards/steps.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { rmPromptText } from "./prm.ts";

/** A solution with per-step labels in [0, 1] (PRM training and evaluation). */
export interface StepExample {
  /** The problem statement. */
  question: string;
  /** The steps (as `splitSteps` of the solution). */
  steps: string[];
  /** One label per step: 0/1 exact or hard, a fraction for soft MC labels. */
  labels: number[];
  /** Gold final answer. */
  gold: string;
  /** Where the solution came from: "reference", "corrupted:<kind>", "policy". */
  source: string;
  /**
   * Built-in task: keys (`numberKey`) of the numbers a correct step may contain, its quantities and true
   * intermediate values. With it, `prmTrainExamples(…, { numberLabels: true })` also trains each number's token.
   */
  known?: string[];
}

/** A solution with an outcome label (ORM training and evaluation). */
export interface OutcomeExample {
  /** The problem statement. */
  question: string;
  /** The solution's steps. */
  steps: string[];
  /** 1 if the final answer is correct, else 0. */
  label: number;
  /** Gold final answer. */
  gold: string;
  /** Where the solution came from ("policy", "reference", "corrupted:<kind>", "file"). */
  source: string;
}

/** Options of {@linkcode builtinStepExamples}. */
export interface BuiltinLabelOptions {
  /**
   * Corrupted solutions per problem (default 4); kinds rotate over the whole stream (problem i, corruption j gets
   * kind (i·corruptions + j) mod 4), so every kind is equally common whatever the count.
   */
  corruptions?: number;
  /** Include the reference solution (default true). */
  reference?: boolean;
  /** Label mode (default "first_error"). */
  mode?: LabelMode;
  /** Seed of the corruption draws (default 0). */
  seed?: number | string;
}

/**
 * Exactly labelled solutions of built-in problems: the reference solution and up to `corruptions` corrupted ones
 * per problem (kinds in turn; a kind that does not apply is skipped).
 */
export function builtinStepExamples(
  problems: readonly ArithmeticProblem[],
  opts: BuiltinLabelOptions = {},
): StepExample[] {
  const { corruptions = CORRUPTION_KINDS.length, reference = true, mode = "first_error" } = opts;
  const rng = new Rng(`rm-labels:${opts.seed ?? 0}`);
  const out: StepExample[] = [];
  problems.forEach((p, i) => {
    const gold = String(p.finalAnswer), known = knownNumbers(p);
    if (reference) {
      out.push({ ...exactLabels(p, p.answer, mode), question: p.question, gold, source: "reference", known });
    }
    for (let j = 0; j < corruptions; j++) {
      const kind = CORRUPTION_KINDS[(i * corruptions + j) % CORRUPTION_KINDS.length];
      const c = corruptSolution(p, rng, { kind, mode });
      if (!c) continue;
      out.push({
        question: p.question,
        steps: c.labels.steps.map((s) => s.text),
        labels: c.labels.labels,
        gold,
        source: `corrupted:${kind}`,
        known,
      });
    }
  });
  return out;
}

/** Keys (`numberKey`) of a built-in problem's quantities and true intermediate values, sorted. */
export function knownNumbers(problem: ArithmeticProblem): string[] {
  return [...referenceNumbers(problem).known].sort();
}

/** Steps and exact labels of any solution of a built-in problem (`labelSteps`). */
export function exactLabels(
  problem: ArithmeticProblem,
  solution: string,
  mode: LabelMode = "first_error",
): { steps: string[]; labels: number[] } {
  const l = labelSteps(problem, solution, { mode });
  return { steps: l.steps.map((s) => s.text), labels: l.labels };
}

/** Options of policy sampling ({@linkcode samplePolicy}, {@linkcode monteCarloStepLabels}). */
export interface PolicySampleOptions {
  /** Sampling temperature (default 1). */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off, default). */
  topK?: number;
  /** Nucleus mass (1 = off, default). */
  topP?: number;
  /** New tokens at most per sample (default 256). */
  maxNewTokens?: number;
  /** Run seed (default 0). */
  seed?: number;
  /** Sequences generated together (default 128). */
  batchSize?: number;
  /** Sample with the GSM8K calculator (exact values inside `<<expr=…>>`, see calculator.ts; default false). */
  calculator?: boolean;
}

/** Stop ids of chat generation: the config's EOS ids, the tokenizer's EOS and `<|im_end|>`. */
export function stopIdsOf(policy: Qwen2Model, tokenizer: Tokenizer): number[] {
  const ids = [...policy.config.eosTokenIds, tokenizer.eosTokenId, tokenizer.imEndId];
  return [...new Set(ids.filter((x): x is number => x !== null && x < policy.config.vocabSize))];
}

/**
 * Continues each prompt text once with the policy; `seeds[i]` is prompt i's own sequence seed. Prompts are
 * grouped by token length into batches of `batchSize`; the decoded continuations (special tokens dropped) come
 * back in input order.
 */
export async function continueTexts(
  policy: Qwen2Model,
  tokenizer: Tokenizer,
  prompts: readonly string[],
  opts: PolicySampleOptions & { seeds: readonly number[] },
): Promise<string[]> {
  const batchSize = opts.batchSize ?? 128, maxNew = opts.maxNewTokens ?? 256;
  const ids = prompts.map((p) => tokenizer.encode(p, { addSpecialTokens: false }));
  const order = ids.map((_, i) => i).sort((a, b) => ids[a].length - ids[b].length || a - b);
  const stopIds = stopIdsOf(policy, tokenizer);
  const calculator = opts.calculator ? calculatorFor(tokenizer, policy.config.vocabSize) : undefined;
  const out: string[] = new Array(prompts.length);
  for (let i0 = 0; i0 < order.length; i0 += batchSize) {
    const idx = order.slice(i0, i0 + batchSize);
    const r = await generate(policy, idx.map((i) => ids[i]), {
      maxNewTokens: maxNew,
      temperature: opts.temperature ?? 1,
      topK: opts.topK,
      topP: opts.topP,
      seed: opts.seed ?? 0,
      sequenceSeeds: idx.map((i) => opts.seeds[i] >>> 0),
      stopIds,
      calculator,
    });
    idx.forEach((i, j) => (out[i] = tokenizer.decode(r.tokens[j], { skipSpecialTokens: true })));
  }
  return out;
}

/** Sequence seed of a rollout from its coordinates (a hash, so batching never changes it). */
function rolloutSeed(...parts: (number | string)[]): number {
  return fnv1a32(parts.join(":"));
}

/**
 * `n` sampled solutions per question from the policy (chat template, temperature 1 by default), as texts:
 * `result[q][j]` is sample j of question q.
 */
export async function samplePolicy(
  policy: Qwen2Model,
  tokenizer: Tokenizer,
  questions: readonly string[],
  opts: PolicySampleOptions & { n: number },
): Promise<string[][]> {
  if (!(Number.isSafeInteger(opts.n) && opts.n >= 1)) {
    throw new Error(`Cannot sample the policy: n must be a positive integer, got "${opts.n}"`);
  }
  const prompts: string[] = [], seeds: number[] = [];
  questions.forEach((q, i) => {
    for (let j = 0; j < opts.n; j++) {
      prompts.push(rmPromptText(tokenizer, q));
      seeds.push(rolloutSeed("sample", opts.seed ?? 0, i, j, q));
    }
  });
  const texts = await continueTexts(policy, tokenizer, prompts, { ...opts, seeds });
  return questions.map((_, i) => texts.slice(i * opts.n, (i + 1) * opts.n));
}

/** Policy samples of built-in problems with exact step labels (samples without any step are dropped). */
export function labelPolicySamples(
  problems: readonly ArithmeticProblem[],
  samples: readonly string[][],
  mode: LabelMode = "first_error",
): StepExample[] {
  return problems.flatMap((p, i) =>
    samples[i].flatMap((s) => {
      const l = exactLabels(p, s, mode);
      return l.steps.length
        ? [{
          ...l,
          question: p.question,
          gold: String(p.finalAnswer),
          source: "policy",
          known: knownNumbers(p),
        }]
        : [];
    })
  );
}

/** Outcome labels `isCorrect(sample, gold)` of policy samples (samples without any step are dropped). */
export function outcomeExamples(
  items: readonly { question: string; gold: string }[],
  samples: readonly string[][],
): OutcomeExample[] {
  return items.flatMap((it, i) =>
    samples[i].flatMap((s) => {
      const steps = splitSteps(s).map((x) => x.text);
      if (!steps.length) return [];
      return [{
        question: it.question,
        steps,
        label: isCorrect(s, it.gold) ? 1 : 0,
        gold: it.gold,
        source: "policy",
      }];
    })
  );
}

/** Options of {@linkcode monteCarloStepLabels}. */
export interface MonteCarloOptions extends PolicySampleOptions {
  /** Completions N per step prefix. */
  rollouts: number;
  /** "soft": y = c/N; "hard": y = 1[c > 0] (default "soft"). */
  mode?: "soft" | "hard";
}

/** Result of {@linkcode monteCarloStepLabels}. */
export interface MonteCarloResult {
  /** Per item, per step: the label (see `mode`). */
  labels: number[][];
  /** Per item, per step: completions reaching the gold answer, c_k ∈ [0, N]. */
  successes: number[][];
  /** Rollouts generated (prefixes with a stated answer need none). */
  generated: number;
}

/**
 * Math-Shepherd labels of each step of each item (see the module doc): rollouts continue
 * `prompt + steps[0..k].join("\n") + "\n"` with the policy; a rollout succeeds when the prefix steps plus the
 * completion reach the gold answer (`isCorrect`).
 */
export async function monteCarloStepLabels(
  policy: Qwen2Model,
  tokenizer: Tokenizer,
  items: readonly { question: string; steps: readonly string[]; gold: string }[],
  opts: MonteCarloOptions,
): Promise<MonteCarloResult> {
  const N = opts.rollouts, mode = opts.mode ?? "soft";
  if (!(Number.isSafeInteger(N) && N >= 1)) {
    throw new Error(`Cannot estimate step labels: rollouts must be a positive integer, got "${N}"`);
  }
  if (mode !== "soft" && mode !== "hard") {
    throw new Error(`Cannot estimate step labels: mode must be "soft" or "hard", got "${mode}"`);
  }
  const successes = items.map((it) => it.steps.map(() => 0));
  const prompts: string[] = [], seeds: number[] = [], where: [number, number, string][] = [];
  items.forEach((it, i) => {
    const prompt = rmPromptText(tokenizer, it.question);
    it.steps.forEach((_, k) => {
      const prefix = it.steps.slice(0, k + 1).join("\n") + "\n";
      if (prefix.includes("####")) {
        successes[i][k] = isCorrect(prefix, it.gold) ? N : 0;
        return;
      }
      for (let r = 0; r < N; r++) {
        prompts.push(prompt + prefix);
        seeds.push(rolloutSeed("mc", opts.seed ?? 0, i, k, r, it.question));
        where.push([i, k, prefix]);
      }
    });
  });
  const completions = await continueTexts(policy, tokenizer, prompts, { ...opts, seeds });
  completions.forEach((c, j) => {
    const [i, k, prefix] = where[j];
    if (isCorrect(prefix + c, items[i].gold)) successes[i][k]++;
  });
  const labels = successes.map((row) => row.map((c) => (mode === "soft" ? c / N : c > 0 ? 1 : 0)));
  return { labels, successes, generated: prompts.length };
}
