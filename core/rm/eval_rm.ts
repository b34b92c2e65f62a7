/**
 * Reward-model evaluation: step-level classification metrics and best-of-N reranking.
 *
 * Step level (labels y ∈ {0, 1}, scores s ∈ [0, 1]):
 * ```
 * accuracy = (1/n) Σ_i 1[(s_i > t) = (y_i = 1)]                  (t = 0.5)
 * ROC-AUC  = U / (n₊·n₋),  U = Σ_{i: y_i=1} rank(s_i) − n₊(n₊+1)/2  (Mann–Whitney; tied scores share their
 *            average rank, i.e. a tied positive/negative pair counts ½ — exact, no thresholds)
 * ```
 *
 * Best-of-N: for each problem, N policy samples; a selector picks one and the accuracy is the fraction of
 * problems whose pick is correct:
 * - `prm_min`: argmax_j min_k s_jk (the weakest step decides); `prm_product`: argmax_j Π_k s_jk;
 *   `prm_last`: argmax_j s_jK (last step); `orm`: argmax_j ORM score;
 * - `majority`: the most frequent extracted answer (ties: the answer seen first), samples without an answer abstain;
 *   `prm_vote` / `orm_vote`: weighted majority vote, each sample voting with its PRM-min / ORM score;
 * - baselines from the policy itself (with a policy): `policy_logp`: argmax_j of the mean token log-prob of sample
 *   j under the policy (its confidence); `logp_vote`: weighted vote with weight exp(mean log-prob);
 * - `random`: a seeded uniform pick; `oracle`: correct if any sample is (pass@N); `mean`: the average accuracy of a
 *   single sample (expected pass@1).
 * Score ties go to the earliest sample, so every selector is deterministic.
 *
 * Within-problem ROC-AUC of a solution score (PRM-min, …, ORM): the AUC over (correct, wrong) pairs of samples of
 * the *same* problem only. It is what reranking can use; an AUC over all samples also credits a score for
 * telling easy problems from hard ones.
 *
 * @module
 */
import type { ArithmeticProblem } from "../data/arithmetic.ts";
import type { LabelMode } from "../data/step_labels.ts";
import { Rng } from "../data/rng.ts";
import { calculatorFor, calculatorWritten } from "../model/calculator.ts";
import { type Qwen2Model, scoreSequences } from "../model/model.ts";
import { extractAnswer, isCorrect } from "../rewards/answer.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { builtinStepExamples, exactLabels, type PolicySampleOptions, samplePolicy } from "./labels.ts";
import { itemSteps, rmPromptText } from "./prm.ts";
import { type RewardModel, RewardScorer } from "./scorer.ts";
import type { ScoreOutput } from "./types.ts";

/** Exact ROC-AUC (Mann–Whitney U with average ranks for ties); NaN when one class is absent. */
export function rocAuc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  if (labels.length !== n) throw new Error(`ROC-AUC: ${labels.length} labels for ${n} scores`);
  const idx = Array.from({ length: n }, (_, i) => i);
  for (const i of idx) {
    if (labels[i] !== 0 && labels[i] !== 1) {
      throw new Error(`ROC-AUC: label ${i} is "${labels[i]}", expected 0 or 1`);
    }
    if (Number.isNaN(scores[i])) throw new Error(`ROC-AUC: score ${i} is NaN`);
  }
  idx.sort((a, b) => scores[a] - scores[b]);
  let rankSumPos = 0, nPos = 0;
  for (let i = 0; i < n;) {
    let j = i;
    while (j + 1 < n && scores[idx[j + 1]] === scores[idx[i]]) j++;
    const avgRank = (i + j) / 2 + 1; // ranks i+1 … j+1
    for (let k = i; k <= j; k++) if (labels[idx[k]] === 1) rankSumPos += avgRank, nPos++;
    i = j + 1;
  }
  const nNeg = n - nPos;
  if (nPos === 0 || nNeg === 0) return NaN;
  return (rankSumPos - (nPos * (nPos + 1)) / 2) / (nPos * nNeg);
}

/** Fraction of scores on the right side of `threshold` (default 0.5): 1[s > t] = 1[y = 1]; labels 0/1. */
export function thresholdAccuracy(
  scores: ArrayLike<number>,
  labels: ArrayLike<number>,
  threshold = 0.5,
): number {
  if (labels.length !== scores.length) {
    throw new Error(`Accuracy: ${labels.length} labels for ${scores.length} scores`);
  }
  if (scores.length === 0) return NaN;
  let ok = 0;
  for (let i = 0; i < scores.length; i++) if ((scores[i] > threshold) === (labels[i] === 1)) ok++;
  return ok / scores.length;
}

/** Binary classification metrics of scores against 0/1 labels. */
export interface ClassMetrics {
  /** Scored items. */
  n: number;
  /** Positives. */
  positives: number;
  /** Threshold accuracy (t = 0.5). */
  accuracy: number;
  /** ROC-AUC (NaN with one class). */
  auc: number;
}

/** {@link ClassMetrics} of `scores` vs `labels`. */
export function classMetrics(
  scores: ArrayLike<number>,
  labels: ArrayLike<number>,
  threshold = 0.5,
): ClassMetrics {
  let positives = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] === 1) positives++;
  return {
    n: scores.length,
    positives,
    accuracy: thresholdAccuracy(scores, labels, threshold),
    auc: rocAuc(scores, labels),
  };
}

/** One sample of a best-of-N group and its reward-model scores. */
export interface ScoredSample {
  /** The solution text. */
  text: string;
  /** PRM step scores (absent without a PRM; [] for a sample without steps). */
  prm?: readonly number[];
  /** ORM score (absent without an ORM). */
  orm?: number;
  /**
   * Mean log-probability of the sample's tokens under the policy (absent without one): the policy's own
   * confidence, the baseline a reward model has to beat when reranking.
   */
  logp?: number;
}

/** N samples of one problem. */
export interface BestOfNGroup {
  /** Gold answer. */
  gold: string;
  /** The N samples, in sampling order. */
  samples: readonly ScoredSample[];
}

/** Selectors of {@linkcode bestOfN}. */
export const SELECTORS = [
  "prm_min",
  "prm_product",
  "prm_last",
  "orm",
  "prm_vote",
  "orm_vote",
  "policy_logp",
  "logp_vote",
  "majority",
  "random",
  "oracle",
  "mean",
] as const;
/** A best-of-N selector name. */
export type Selector = typeof SELECTORS[number];

/** Best-of-N accuracy of each available selector at each N. */
export interface BestOfNResult {
  /** Problems. */
  problems: number;
  /** Accuracy by N, then by selector (selectors needing a missing model are left out). */
  byN: Record<string, Partial<Record<Selector, number>>>;
  /**
   * Within-problem ROC-AUC of each scoring selector over all N samples (see {@linkcode withinProblemAuc}): how
   * well the score tells a problem's correct samples from its wrong ones, which is what reranking needs. An AUC
   * over all samples also rewards telling easy problems from hard ones, which reranking cannot use.
   */
  withinProblem: Partial<Record<StepSelector | "orm" | "policy_logp", WithinProblemAuc>>;
}

/** Result of {@linkcode withinProblemAuc}. */
export interface WithinProblemAuc {
  /** Pooled AUC (NaN when no problem has both a correct and a wrong sample). */
  auc: number;
  /** (correct, wrong) sample pairs of the same problem. */
  pairs: number;
  /** Problems with at least one correct and one wrong sample. */
  problems: number;
}

/**
 * Pooled within-problem ROC-AUC: over every pair (c, w) of a correct and a wrong sample *of the same problem*,
 * the fraction with score(c) > score(w), ties counting ½. 0.5 = the score cannot tell a problem's samples apart.
 */
export function withinProblemAuc(groups: readonly { score: number; correct: boolean }[][]): WithinProblemAuc {
  let wins = 0, pairs = 0, problems = 0;
  for (const g of groups) {
    const pos = g.filter((x) => x.correct), neg = g.filter((x) => !x.correct);
    if (!pos.length || !neg.length) continue;
    if (g.some((x) => Number.isNaN(x.score))) throw new Error("withinProblemAuc: a score is NaN");
    problems++;
    for (const c of pos) {
      for (const w of neg) {
        wins += c.score > w.score ? 1 : c.score === w.score ? 0.5 : 0;
        pairs++;
      }
    }
  }
  return { auc: pairs ? wins / pairs : NaN, pairs, problems };
}

function argmax(values: readonly number[]): number {
  let best = 0;
  for (let j = 1; j < values.length; j++) if (values[j] > values[best]) best = j;
  return best;
}

/**
 * The majority answer of `texts` (ties: the answer seen first), or null when none has an answer. With `weights`,
 * each sample votes with its weight (weighted majority vote).
 */
export function voteAnswer(texts: readonly string[], weights?: readonly number[]): string | null {
  const counts = new Map<string, number>();
  texts.forEach((t, i) => {
    const a = extractAnswer(t);
    if (a !== null) counts.set(a, (counts.get(a) ?? 0) + (weights ? weights[i] : 1));
  });
  let best: string | null = null, bestCount = 0;
  for (const [a, c] of counts) if (best === null || c > bestCount) best = a, bestCount = c; // first-seen order
  return best;
}

/** Selectors that rank samples by an aggregate of their PRM step scores. */
const STEP_SELECTORS = ["prm_min", "prm_product", "prm_last"] as const;
type StepSelector = typeof STEP_SELECTORS[number];

const stepAgg: Record<StepSelector, (s: readonly number[]) => number> = {
  prm_min: (s) => (s.length ? Math.min(...s) : -Infinity),
  prm_product: (s) => (s.length ? s.reduce((a, x) => a * x, 1) : -Infinity),
  prm_last: (s) => (s.length ? s[s.length - 1] : -Infinity),
};

/**
 * Best-of-N accuracy (see the module doc) for every N in `ns` (default: N of the groups), using the first N
 * samples of each group.
 */
export function bestOfN(
  groups: readonly BestOfNGroup[],
  opts: { ns?: readonly number[]; seed?: number } = {},
): BestOfNResult {
  const maxN = Math.min(...groups.map((g) => g.samples.length));
  const ns = opts.ns ?? [maxN];
  for (const n of ns) {
    if (!(Number.isSafeInteger(n) && n >= 1 && n <= maxN)) {
      throw new Error(`Best-of-N: N = ${n} is not in [1, ${maxN}] (the smallest group's sample count)`);
    }
  }
  const hasPrm = groups.every((g) => g.samples.every((s) => s.prm !== undefined));
  const hasOrm = groups.every((g) => g.samples.every((s) => s.orm !== undefined));
  const hasLogp = groups.every((g) => g.samples.every((s) => s.logp !== undefined));
  const correct = groups.map((g) => g.samples.map((x) => isCorrect(x.text, g.gold)));
  const byN: BestOfNResult["byN"] = {};
  for (const n of ns) {
    const rng = new Rng(`best-of-n:${opts.seed ?? 0}:${n}`);
    const hits: Partial<Record<Selector, number>> = {};
    const add = (k: Selector, v: number) => (hits[k] = (hits[k] ?? 0) + v);
    for (const [gi, g] of groups.entries()) {
      const s = g.samples.slice(0, n);
      const ok = correct[gi].slice(0, n);
      const gold = extractAnswer(g.gold);
      const vote = (k: Selector, w: number[]) => {
        const a = voteAnswer(s.map((x) => x.text), w);
        add(k, a !== null && a === gold ? 1 : 0);
      };
      if (hasPrm) {
        for (const k of STEP_SELECTORS) {
          add(k, ok[argmax(s.map((x) => stepAgg[k](x.prm!)))] ? 1 : 0);
        }
        vote("prm_vote", s.map((x) => Math.max(0, stepAgg.prm_min(x.prm!))));
      }
      if (hasOrm) {
        add("orm", ok[argmax(s.map((x) => x.orm!))] ? 1 : 0);
        vote("orm_vote", s.map((x) => x.orm!));
      }
      if (hasLogp) {
        add("policy_logp", ok[argmax(s.map((x) => x.logp!))] ? 1 : 0);
        vote("logp_vote", s.map((x) => Math.exp(x.logp!)));
      }
      vote("majority", s.map(() => 1));
      add("random", ok[rng.int(0, n - 1)] ? 1 : 0);
      add("oracle", ok.some(Boolean) ? 1 : 0);
      add("mean", ok.filter(Boolean).length / n);
    }
    byN[String(n)] = Object.fromEntries(
      SELECTORS.filter((k) => hits[k] !== undefined).map((k) => [k, hits[k]! / groups.length]),
    );
  }
  const withinProblem: BestOfNResult["withinProblem"] = {};
  const within = (score: (x: BestOfNGroup["samples"][number]) => number) =>
    withinProblemAuc(
      groups.map((g, gi) => g.samples.map((x, j) => ({ score: score(x), correct: correct[gi][j] }))),
    );
  if (hasPrm) {
    for (const k of STEP_SELECTORS) withinProblem[k] = within((x) => stepAgg[k](x.prm!));
  }
  if (hasOrm) withinProblem.orm = within((x) => x.orm!);
  if (hasLogp) withinProblem.policy_logp = within((x) => x.logp!);
  return { problems: groups.length, byN, withinProblem };
}

/** A held-out problem: a built-in one (exact step labels available) or any question with a gold answer. */
export type EvalProblem = ArithmeticProblem | { question: string; finalAnswer: string | number };

/** Options of {@linkcode evaluateRewardModels}. */
export interface RmEvalOptions {
  /** The PRM to evaluate. */
  prm?: RewardModel;
  /** The ORM to evaluate. */
  orm?: RewardModel;
  /**
   * The policy whose samples are reranked (best-of-N) and labelled (step level on the policy's outputs); its mean
   * token log-prob of each sample (drawn, or given in `samples`) is the `policy_logp` baseline.
   */
  policy?: { model: Qwen2Model; tokenizer: Tokenizer };
  /** Policy samples given instead of a policy: `samples[i]` are problem i's (N = the shortest list). */
  samples?: readonly (readonly string[])[];
  /** Receives the policy samples once drawn (e.g. to save them for another evaluation). */
  onSamples?: (samples: string[][]) => void | Promise<void>;
  /** Samples per problem (default 16). */
  n?: number;
  /** Best-of-N sizes reported (default: powers of two up to n, and n). */
  ns?: number[];
  /** Policy sampling (default temperature 1). */
  sampling?: PolicySampleOptions;
  /** Corrupted solutions per built-in problem for the step-level set (default 4). */
  corruptions?: number;
  /** Step labels of built-in problems (default "first_error", the prefix labels PRMs are usually trained on). */
  labelMode?: LabelMode;
  /** Seed of the corruptions, the samples and the random pick (default 0). */
  seed?: number;
  /** Padded tokens per scoring pass. */
  maxBatchTokens?: number;
}

/** Result of {@linkcode evaluateRewardModels}. */
export interface RmEvalReport {
  /** Held-out problems. */
  problems: number;
  /** Reference + corrupted solutions of built-in problems: PRM per step, ORM per solution. */
  synthetic?: { solutions: number; prm?: ClassMetrics; orm?: ClassMetrics };
  /** Policy samples: PRM per step (exact labels, built-in problems only), ORM per sample (isCorrect). */
  policy?: { samples: number; prm?: ClassMetrics; orm?: ClassMetrics };
  /** Best-of-N accuracy on the policy samples (with a policy). */
  bestOfN?: BestOfNResult;
}

const isBuiltin = (p: EvalProblem): p is ArithmeticProblem => "steps" in p && "quantities" in p;

/**
 * Evaluates a PRM and/or ORM on held-out problems (see the module doc): step-level metrics on reference and
 * corrupted solutions (built-in problems), and — with a policy — metrics on `n` policy samples per problem and
 * best-of-N accuracy of every selector.
 */
export async function evaluateRewardModels(
  problems: readonly EvalProblem[],
  opts: RmEvalOptions,
): Promise<RmEvalReport> {
  const scorer = new RewardScorer({ prm: opts.prm, orm: opts.orm, maxBatchTokens: opts.maxBatchTokens });
  const report: RmEvalReport = { problems: problems.length };
  const score = (items: { question: string; steps: string[] }[]) => scorer.score(items);
  const builtin = problems.filter(isBuiltin);
  if (builtin.length) {
    const ex = builtinStepExamples(builtin, {
      corruptions: opts.corruptions ?? 4,
      seed: opts.seed ?? 0,
      mode: opts.labelMode,
    });
    const out = await score(ex);
    report.synthetic = { solutions: ex.length, ...metricsOf(ex, out) };
  }
  if (opts.policy || opts.samples) {
    const n = opts.samples ? Math.min(...opts.samples.map((s) => s.length)) : opts.n ?? 16;
    if (opts.samples && opts.samples.length !== problems.length) {
      throw new Error(`Cannot evaluate: ${opts.samples.length} sample lists for ${problems.length} problems`);
    }
    const samples = opts.samples?.map((s) => s.slice(0, n)) ??
      await samplePolicy(opts.policy!.model, opts.policy!.tokenizer, problems.map((p) => p.question), {
        temperature: 1,
        seed: opts.seed ?? 0,
        ...opts.sampling,
        n,
      });
    await opts.onSamples?.(samples);
    const flat = problems.flatMap((p, i) =>
      samples[i].map((text) => {
        const steps = isBuiltin(p)
          ? exactLabels(p, text, opts.labelMode)
          : { steps: itemSteps({ solution: text }), labels: [] };
        return { question: p.question, text, gold: String(p.finalAnswer), ...steps, builtin: isBuiltin(p) };
      })
    );
    const out = await score(flat);
    const labelled = flat.map((f, i) => ({ ...f, i })).filter((f) => f.builtin);
    report.policy = {
      samples: flat.length,
      ...metricsOf(labelled, labelled.map((f) => out[f.i]), (f) => isCorrect(f.text, f.gold)),
    };
    const logp = opts.policy
      ? await policyConfidence(opts.policy, problems, samples, { calculator: opts.sampling?.calculator })
      : undefined;
    const ns = opts.ns ?? [...new Set([...[1, 2, 4, 8, 16, 32, 64].filter((k) => k < n), n])];
    report.bestOfN = bestOfN(
      problems.map((p, i) => ({
        gold: String(p.finalAnswer),
        samples: samples[i].map((text, j) => {
          const o = out[i * n + j];
          return { text, prm: o.stepScores ?? undefined, orm: o.ormScore ?? undefined, logp: logp?.[i][j] };
        }),
      })),
      { ns, seed: opts.seed ?? 0 },
    );
  }
  return report;
}

/**
 * Mean log p(token | prefix) of each sample's tokens under the policy, prompted as it was sampled (the chat
 * template of `rmPromptText`). With `calculator` (samples drawn with the GSM8K calculator) the tokens the
 * calculator wrote are left out: they are tool output, not the policy's choices. Scored in batches of 64
 * sequences; a sample without a token of its own gets −∞.
 */
export async function policyConfidence(
  policy: { model: Qwen2Model; tokenizer: Tokenizer },
  problems: readonly { question: string }[],
  samples: readonly (readonly string[])[],
  opts: { calculator?: boolean } = {},
): Promise<number[][]> {
  const { model, tokenizer } = policy;
  const table = opts.calculator ? calculatorFor(tokenizer, model.config.vocabSize) : null;
  const seqs: { prompt: number; ids: number[] }[] = problems.flatMap((p, i) => {
    const prompt = tokenizer.encode(rmPromptText(tokenizer, p.question), { addSpecialTokens: false });
    return samples[i].map((t) => ({
      prompt: prompt.length,
      ids: [...prompt, ...tokenizer.encode(t, { addSpecialTokens: false })],
    }));
  });
  const flat: number[] = [];
  for (let i0 = 0; i0 < seqs.length; i0 += 64) {
    const chunk = seqs.slice(i0, i0 + 64);
    const r = await scoreSequences(model, chunk.map((x) => x.ids));
    chunk.forEach((x, b) => {
      const written = table ? calculatorWritten(table, x.ids) : null;
      let sum = 0, n = 0;
      // tokenLogprobs[t − 1] = log p(x_t | x_<t); the sample's tokens are t = prompt … length − 1.
      for (let t = x.prompt; t < x.ids.length; t++) {
        if (written?.[t]) continue;
        sum += r.tokenLogprobs[b][t - 1], n++;
      }
      flat.push(n ? sum / n : -Infinity);
    });
  }
  let k = 0;
  return samples.map((s) => s.map(() => flat[k++]));
}

/** PRM step metrics and ORM outcome metrics of scored, step-labelled solutions. */
function metricsOf<T extends { steps: string[]; labels: number[]; gold: string }>(
  ex: readonly T[],
  out: readonly ScoreOutput[],
  outcome: (e: T) => boolean = (e) => isCorrect(e.steps.join("\n"), e.gold),
): { prm?: ClassMetrics; orm?: ClassMetrics } {
  const r: { prm?: ClassMetrics; orm?: ClassMetrics } = {};
  if (out.length && out[0].stepScores) {
    r.prm = classMetrics(out.flatMap((o) => o.stepScores!), ex.flatMap((e) => e.labels));
  }
  if (out.length && out[0].ormScore !== null) {
    r.orm = classMetrics(out.map((o) => o.ormScore!), ex.map((e) => (outcome(e) ? 1 : 0)));
  }
  return r;
}

const pct = (
  x: number | undefined,
) => (x === undefined || Number.isNaN(x) ? "   —  " : (100 * x).toFixed(1).padStart(6));
const f3 = (
  x: number | undefined,
) => (x === undefined || Number.isNaN(x) ? "  —  " : x.toFixed(3).padStart(5));

/** The report as a plain-text table. */
export function formatRmReport(r: RmEvalReport): string {
  const lines = [`held-out problems: ${r.problems}`, ""];
  const cls = (name: string, m?: ClassMetrics) =>
    m && lines.push(
      `  ${name.padEnd(28)} n=${String(m.n).padStart(6)}  pos=${pct(m.positives / m.n)}%  ` +
        `acc=${pct(m.accuracy)}%  AUC=${f3(m.auc)}`,
    );
  if (r.synthetic) {
    lines.push(`Reference + corrupted solutions (${r.synthetic.solutions}):`);
    cls("PRM step-level", r.synthetic.prm);
    cls("ORM solution-level", r.synthetic.orm);
  }
  if (r.policy) {
    lines.push(`Policy samples (${r.policy.samples}):`);
    cls("PRM step-level (exact labels)", r.policy.prm);
    cls("ORM sample-level (isCorrect)", r.policy.orm);
  }
  if (r.bestOfN) {
    const ns = Object.keys(r.bestOfN.byN);
    const sel = SELECTORS.filter((s) => ns.some((n) => r.bestOfN!.byN[n][s] !== undefined));
    lines.push(
      "",
      "Best-of-N accuracy (%):",
      `  ${"selector".padEnd(12)}${ns.map((n) => `N=${n}`.padStart(8)).join("")}`,
    );
    for (const s of sel) {
      lines.push(`  ${s.padEnd(12)}${ns.map((n) => pct(r.bestOfN!.byN[n][s]).padStart(8)).join("")}`);
    }
    const wp = Object.entries(r.bestOfN.withinProblem);
    if (wp.length) {
      const { pairs, problems } = wp[0][1];
      lines.push(
        "",
        `Within-problem ROC-AUC (correct vs wrong samples of the same problem: ${pairs} pairs, ${problems} problems):`,
        `  ${wp.map(([k, v]) => `${k} ${f3(v.auc)}`).join("  ")}`,
      );
    }
  }
  return lines.join("\n");
}
