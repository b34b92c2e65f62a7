/**
 * Outcome reward model (ORM): the Qwen2 trunk with a one-logit sequence-classification head (HF
 * `Qwen2ForSequenceClassification`, `score.weight` (1, C), no bias) read at the last token of the input:
 * `P(solution reaches the gold answer) = σ(z_last)`.
 *
 * The input is laid out exactly as for the PRM (see prm.ts: chat-templated question, steps joined by the
 * separator with one after the last step), so the last token is the one covering the final separator. HF finds
 * it as the last non-pad token; here batches are right-padded and the position is known. The convention is
 * recorded in config.json as `orm_step_convention`.
 *
 * Prefixes: the input of the prefix made of steps 1..k is the same tokens as the full input up to the token
 * covering the separator after step k (`RmInput.sepEnds[k-1]`, see prm.ts), so the ORM score of every prefix is
 * the logit read there — {@linkcode ormScores} with `prefixes` returns them all from one forward pass (a
 * value-model reading of the ORM).
 *
 * @module
 */
import { headLogits, withScoreHead } from "../model/heads.ts";
import type { Qwen2Model } from "../model/model.ts";
import { PRM_STEP_CONVENTION, type RmInput, sigmoid } from "./prm.ts";

/** Throws unless `model` is a one-logit sequence-classification model (an ORM). */
export function checkOrm(model: Qwen2Model, what = "ORM"): void {
  const { architecture, numLabels } = model.config;
  if (architecture !== "Qwen2ForSequenceClassification" || numLabels !== 1) {
    throw new Error(
      `${what} "${
        model.dir ?? "<memory>"
      }" must be a Qwen2ForSequenceClassification model with num_labels 1, ` +
        `got ${architecture} with num_labels ${numLabels}`,
    );
  }
}

/**
 * An ORM from a policy (or any Qwen2 model): its trunk with a fresh `score.weight` ~ N(0, std²) and the input
 * convention in its config. `model` is consumed (see `withScoreHead`).
 */
export function createOrm(model: Qwen2Model, opts: { seed?: number; std?: number } = {}): Qwen2Model {
  return withScoreHead(model, "Qwen2ForSequenceClassification", {
    ...opts,
    numLabels: 1,
    extraConfig: {
      orm_step_convention: {
        ...PRM_STEP_CONVENTION,
        score_at:
          "the last token of the input (HF: last non-pad token); the score of the prefix of steps 1..k " +
          "is read at the token covering the separator after step k",
        output:
          "sigmoid(score logit) = probability that the solution's final answer is correct (num_labels 1)",
      },
    },
  });
}

/** The token an ORM reads for `input`: the last one. */
export function ormReadPosition(input: RmInput): number {
  return input.ids.length - 1;
}

/** Result of {@linkcode ormScores}. */
export interface OrmScores {
  /** σ(z) at the last token of each input. */
  scores: number[];
  /** With `prefixes`: the ORM score of each prefix (steps 1..k), read at `sepEnds[k-1]`. */
  prefixScores?: number[][];
}

/**
 * ORM probabilities of `inputs` in batched forward passes (at most `maxBatchTokens` padded tokens each); with
 * `prefixes`, also the score of every step prefix from the same pass.
 */
export async function ormScores(
  model: Qwen2Model,
  inputs: readonly RmInput[],
  opts: { prefixes?: boolean; maxBatchTokens?: number } = {},
): Promise<OrmScores> {
  checkOrm(model);
  // sepEnds ends with the last token whenever there is a step.
  const reads = inputs.map((
    x,
  ) => (opts.prefixes && x.sepEnds.length ? [...x.sepEnds] : [ormReadPosition(x)]));
  const logits = await headLogits(model, inputs.map((x) => x.ids), {
    reads,
    maxBatchTokens: opts.maxBatchTokens,
  });
  const probs = logits.map((z) => Array.from(z, sigmoid));
  const scores = probs.map((p) => p[p.length - 1]);
  if (!opts.prefixes) return { scores };
  return { scores, prefixScores: probs.map((p, i) => p.slice(0, inputs[i].sepEnds.length)) };
}
