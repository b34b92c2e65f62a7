/**
 * Held-out accuracy of a model on GSM8K-form problems (the built-in arithmetic task's test split, GSM8K):
 * greedy decoding of every question in the model's chat template, batched through the KV-cache generator, each
 * response checked against the reference with `isCorrect` (exact rational equality of the final answers).
 *
 * ```
 * accuracy = (1/n) Σ_i [extractAnswer(response_i) = extractAnswer(answer_i)]
 * mean_response_tokens = (1/n) Σ_i |response_i|   (tokens, stop token included)
 * ```
 *
 * With `calculator`, annotation values are computed by the GSM8K calculator (the model picks operands and
 * operators, the calculator does the arithmetic), as in Cobbe et al. 2021.
 *
 * Greedy decoding makes the result deterministic: a problem gives the same response whatever batch it is in.
 *
 * @module
 */
import type { MathExample } from "../data/arithmetic.ts";
import { calculatorFor } from "../model/calculator.ts";
import { generate } from "../model/generate.ts";
import type { Qwen2Model } from "../model/model.ts";
import { isCorrect } from "../rewards/answer.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { promptIds } from "./sft_data.ts";

/** Options of {@linkcode evaluateAccuracy}. */
export interface EvaluateOptions {
  /** The model's tokenizer (chat template, decoding, stop tokens). */
  tokenizer: Tokenizer;
  /** Problems decoded together (default 64). */
  batchSize?: number;
  /** New tokens at most per response (default 256). */
  maxNewTokens?: number;
  /** Decode with the GSM8K calculator (calculator.ts: exact values inside `<<expr=…>>`; default false). */
  calculator?: boolean;
  /** Keep the decoded responses in the result (default false). */
  keepResponses?: boolean;
}

/** Result of {@linkcode evaluateAccuracy}. */
export interface EvaluateResult {
  /** Fraction of problems answered correctly. */
  accuracy: number;
  /** Problems answered correctly. */
  correct: number;
  /** Problems evaluated. */
  total: number;
  /** Mean response length in tokens (stop token included). */
  meanResponseTokens: number;
  /** Fraction of responses that ended with a stop token (the rest hit `maxNewTokens`). */
  stoppedFraction: number;
  /** Wall time in seconds. */
  seconds: number;
  /** Decoded responses, in problem order (with `keepResponses`). */
  responses?: string[];
}

/** Stop ids of chat generation: the config's EOS ids plus the tokenizer's EOS and `<|im_end|>`. */
export function chatStopIds(model: Qwen2Model, tokenizer: Tokenizer): number[] {
  const ids = [...model.config.eosTokenIds, tokenizer.eosTokenId, tokenizer.imEndId];
  return [...new Set(ids.filter((x): x is number => x !== null && x < model.config.vocabSize))];
}

/**
 * Greedy accuracy of `model` on `problems` (see the module doc). Prompts longer than the model's context minus
 * `maxNewTokens` are an error naming the problem.
 *
 * @example
 * ```ts
 * const test = builtinProblems(200, { seed: 0, split: "test" });
 * const { accuracy } = await evaluateAccuracy(model, test, { tokenizer, batchSize: 50 });
 * ```
 */
export async function evaluateAccuracy(
  model: Qwen2Model,
  problems: readonly MathExample[],
  opts: EvaluateOptions,
): Promise<EvaluateResult> {
  const { tokenizer } = opts;
  const t0 = performance.now();
  const batchSize = opts.batchSize ?? 64, maxNew = opts.maxNewTokens ?? 256;
  if (!(Number.isSafeInteger(batchSize) && batchSize >= 1)) {
    throw new Error(`Cannot evaluate: batchSize must be an integer ≥ 1, got "${batchSize}"`);
  }
  const stopIds = chatStopIds(model, tokenizer);
  const calculator = opts.calculator ? calculatorFor(tokenizer, model.config.vocabSize) : undefined;
  const limit = model.config.maxPositionEmbeddings - maxNew;
  const prompts = problems.map((p, i) => {
    const ids = promptIds(tokenizer, p.question);
    if (ids.length > limit) {
      throw new Error(
        `Cannot evaluate problem ${i}: its prompt has ${ids.length} tokens, more than the ${limit} that leave ` +
          `room for ${maxNew} new tokens in the model's ${model.config.maxPositionEmbeddings} positions`,
      );
    }
    return ids;
  });
  // Similar lengths together: less left padding per batch (the results do not depend on the grouping).
  const order = prompts.map((_, i) => i).sort((a, b) => prompts[a].length - prompts[b].length || a - b);
  const responses: string[] = new Array(problems.length);
  let correct = 0, tokens = 0, stopped = 0;
  for (let i0 = 0; i0 < order.length; i0 += batchSize) {
    const idx = order.slice(i0, i0 + batchSize);
    const out = await generate(model, idx.map((i) => prompts[i]), {
      maxNewTokens: maxNew,
      temperature: 0,
      stopIds,
      padId: stopIds[0],
      calculator,
    });
    idx.forEach((i, j) => {
      const text = tokenizer.decode(out.tokens[j], { skipSpecialTokens: true });
      responses[i] = text;
      tokens += out.tokens[j].length;
      if (out.stopped[j]) stopped++;
      if (isCorrect(text, problems[i].finalAnswer)) correct++;
    });
  }
  const n = problems.length;
  return {
    accuracy: n ? correct / n : 0,
    correct,
    total: n,
    meanResponseTokens: n ? tokens / n : 0,
    stoppedFraction: n ? stopped / n : 0,
    seconds: (performance.now() - t0) / 1000,
    ...(opts.keepResponses ? { responses } : {}),
  };
}
