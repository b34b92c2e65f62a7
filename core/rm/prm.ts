/**
 * Process reward model (PRM): the Qwen2 trunk with a one-logit token-classification head (HF
 * `Qwen2ForTokenClassification`, `score.weight` (1, C) and `score.bias` (1)), scoring every step of a solution in
 * one forward pass at each step's end token. `P(step k correct) = σ(z_k)`, z_k the logit at step k's end token.
 *
 * Input layout (shared with the ORM, recorded in the PRM's config.json as `prm_step_convention`):
 * ```
 * text = chat_template([{role: "user", content: question}], add_generation_prompt=True)
 *        + step_1 + sep + step_2 + sep + … + step_K + sep              (sep = "\n")
 * ```
 * — the question as the user turn and the solution as the (open) assistant turn, steps trimmed and joined by the
 * separator, with one separator after the last step too. Without a chat template the prompt is `question + "\n"`.
 * The score of step k is read at the last token covering its last non-whitespace character (`stepEndTokens` over
 * the tokenizer's offsets). Because every step is followed by the separator, the tokens up to step k's end are
 * the same whether or not later steps follow (byte-level BPE with the Qwen2 pre-tokenizer never merges across a
 * newline into the next line), so a prefix scores exactly like the same steps inside a longer solution.
 *
 * @module
 */
import type { Qwen2Model } from "../model/model.ts";
import { headLogits, withScoreHead } from "../model/heads.ts";
import type { Qwen2Config } from "../model/config.ts";
import { splitSteps, stepEndTokens, type TokenOffset } from "../rewards/steps.ts";
import { applyChatTemplate } from "../tokenizer/chat_template.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";

/** How a reward model's input is laid out and where step scores are read (stored in config.json). */
export interface StepConvention {
  /** Layout version (1). */
  version: number;
  /** Step separator: solutions are split on it and steps are joined with it (plus one after the last step). */
  separator: string;
  /** The input text, in words. */
  input: string;
  /** Where each step's score is read, in words. */
  score_at: string;
  /** What the head's output means. */
  output: string;
}

/** The convention of this toolkit's PRMs: `config.json` field `prm_step_convention`. */
export const PRM_STEP_CONVENTION: StepConvention = {
  version: 1,
  separator: "\n",
  input: "chat_template([{role: user, content: question}], add_generation_prompt=True) + " +
    "join(steps, separator) + separator (no chat template: question + '\\n' + ...); steps are trimmed",
  score_at: "the last token covering each step's last non-whitespace character (one logit per step)",
  output: "sigmoid(score logit) = probability that the step is correct (num_labels 1)",
};

/** One solution laid out for a reward model. */
export interface RmInput {
  /** Token ids of the whole input. */
  ids: number[];
  /** Index in `ids` of each step's end token (the last token covering its last non-whitespace character). */
  stepEnds: number[];
  /**
   * Index in `ids` of the token covering the separator after each step: the last token of the input of the prefix
   * made of steps 1..k (the last one is `ids.length − 1`). Often equal to `stepEnds` (".\n" is one token).
   */
  sepEnds: number[];
  /** The (trimmed, normalised) steps. */
  steps: string[];
  /** The input text the ids spell. */
  text: string;
  /** Character span `[start, end)` of each step in `text`. */
  spans: { start: number; end: number }[];
  /** Character offsets `[start, end)` of each token in `text`. */
  offsets: ArrayLike<TokenOffset>;
}

/** The step convention recorded in `cfg` (`prm_step_convention` or `orm_step_convention`), else the default. */
export function stepConventionOf(cfg: Qwen2Config): StepConvention {
  const c = (cfg.raw.prm_step_convention ?? cfg.raw.orm_step_convention) as
    | Partial<StepConvention>
    | undefined;
  if (c === undefined || c === null) return PRM_STEP_CONVENTION;
  if (c.version !== 1 || typeof c.separator !== "string" || c.separator === "") {
    throw new Error(
      `Unsupported reward-model step convention ${
        JSON.stringify(c)
      }: expected version 1 with a non-empty separator`,
    );
  }
  return { ...PRM_STEP_CONVENTION, ...c } as StepConvention;
}

/** The steps of an item: `steps` as given (trimmed, empty ones dropped), or `splitSteps(solution, separator)`. */
export function itemSteps(
  item: { solution?: string; steps?: readonly string[] },
  separator = "\n",
): string[] {
  if ((item.solution === undefined) === (item.steps === undefined)) {
    throw new Error('Cannot read the steps: give exactly one of "solution" and "steps"');
  }
  if (item.steps !== undefined) {
    if (!Array.isArray(item.steps) || item.steps.some((s) => typeof s !== "string")) {
      throw new Error('Cannot read the steps: "steps" must be a list of strings');
    }
    return item.steps.map((s) => s.trim()).filter((s) => s !== "");
  }
  if (typeof item.solution !== "string") {
    throw new Error('Cannot read the steps: "solution" must be a string');
  }
  return splitSteps(item.solution, { separator }).map((s) => s.text);
}

/** The prompt part of the input: the chat-templated user turn with the assistant header. */
export function rmPromptText(tokenizer: Tokenizer, question: string): string {
  if (tokenizer.chatTemplate === null) return `${question}\n`;
  return applyChatTemplate(tokenizer, [{ role: "user", content: question }], { addGenerationPrompt: true });
}

/**
 * Lays out `question` and `steps` for a reward model (see the module doc) and finds each step's end token.
 * Throws when a step is empty or the tokenizer's offsets do not cover a step.
 */
export function buildRmInput(
  tokenizer: Tokenizer,
  question: string,
  steps: readonly string[],
  opts: { separator?: string } = {},
): RmInput {
  const sep = opts.separator ?? PRM_STEP_CONVENTION.separator;
  const prompt = tokenizer.normalize(rmPromptText(tokenizer, question));
  const clean = steps.map((s, k) => {
    const t = tokenizer.normalize(s.trim());
    if (t === "") throw new Error(`Cannot lay out step ${k}: it is empty`);
    return t;
  });
  let text = prompt;
  const spans = clean.map((s) => {
    const start = text.length;
    text += s + sep;
    return { start, end: start + s.length };
  });
  const enc = tokenizer.encodeWithOffsets(text, { addSpecialTokens: false });
  if (enc.text !== text) {
    throw new Error("Cannot lay out the input: the tokenizer's normalisation changes the joined text");
  }
  const sepSpans = spans.map(({ end }) => ({ start: end, end: end + sep.length }));
  return {
    ids: enc.ids,
    stepEnds: stepEndTokens(spans, enc.offsets, { text }),
    sepEnds: stepEndTokens(sepSpans, enc.offsets),
    steps: clean,
    text,
    spans,
    offsets: enc.offsets,
  };
}

/** σ(z) = 1 / (1 + e^(−z)), computed without overflow. */
export function sigmoid(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

/** Throws unless `model` is a one-logit token-classification model (a PRM). */
export function checkPrm(model: Qwen2Model, what = "PRM"): void {
  const { architecture, numLabels } = model.config;
  if (architecture !== "Qwen2ForTokenClassification" || numLabels !== 1) {
    throw new Error(
      `${what} "${model.dir ?? "<memory>"}" must be a Qwen2ForTokenClassification model with num_labels 1, ` +
        `got ${architecture} with num_labels ${numLabels}`,
    );
  }
}

/**
 * A PRM from a policy (or any Qwen2 model): its trunk with a fresh head (`score.weight` ~ N(0, std²), zero bias)
 * and the step convention in its config. `model` is consumed (see `withScoreHead`).
 */
export function createPrm(model: Qwen2Model, opts: { seed?: number; std?: number } = {}): Qwen2Model {
  return withScoreHead(model, "Qwen2ForTokenClassification", {
    ...opts,
    numLabels: 1,
    extraConfig: { prm_step_convention: PRM_STEP_CONVENTION },
  });
}

/**
 * PRM step probabilities σ(z_k) of every step of every input, in batched forward passes (at most
 * `maxBatchTokens` padded tokens each). An input without steps gets `[]`.
 */
export async function prmStepScores(
  model: Qwen2Model,
  inputs: readonly RmInput[],
  opts: { maxBatchTokens?: number } = {},
): Promise<number[][]> {
  checkPrm(model);
  const logits = await headLogits(model, inputs.map((x) => x.ids), {
    reads: inputs.map((x) => x.stepEnds),
    maxBatchTokens: opts.maxBatchTokens,
  });
  return logits.map((z) => Array.from(z, sigmoid));
}
