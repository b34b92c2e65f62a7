/**
 * The reward-model scorer: a {@link Scorer} over a PRM and/or an ORM on the GPU. One `score` call lays out every
 * item once per model (prm.ts), runs all items through shared batched forward passes — one set for the PRM (every
 * step of every item read in the same pass) and one for the ORM — and assembles per item:
 *
 * ```
 * stepScores[k]  = σ(z_PRM at step k's end token)
 * ormScore       = σ(z_ORM at the last token)
 * success        = 1[extractAnswer(solution) = extractAnswer(gold)]       (with a gold answer)
 * shapedRewards  = shapeStepRewards(stepScores, item.shaping ?? none)
 * ```
 *
 * @example
 * ```ts
 * const scorer = await RewardScorer.load({ prm: "runs/prm-tiny/final", orm: "runs/orm-tiny/final" });
 * const [out] = await scorer.score([{ question, solution, goldAnswer: "7", shaping: { kind: "clip", eta: 0.5 } }]);
 * ```
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { loadModel, type Qwen2Model, releaseModel } from "../model/model.ts";
import { shapeStepRewards } from "../rewards/shaping.ts";
import { successReward } from "../rewards/answer.ts";
import { loadTokenizer, type Tokenizer } from "../tokenizer/tokenizer.ts";
import { checkOrm, ormScores } from "./orm.ts";
import {
  buildRmInput,
  checkPrm,
  itemSteps,
  prmStepScores,
  type StepConvention,
  stepConventionOf,
} from "./prm.ts";
import type { ModelInfo, ScoreItem, ScoreOutput, Scorer } from "./types.ts";

/** A reward model with its tokenizer and input convention. */
export interface RewardModel {
  /** "prm" or "orm". */
  role: "prm" | "orm";
  /** The classification model. */
  model: Qwen2Model;
  /** Its tokenizer. */
  tokenizer: Tokenizer;
  /** Input layout recorded in its config. */
  convention: StepConvention;
  /** Where it was loaded from. */
  source: string;
}

/**
 * Loads a PRM (Qwen2ForTokenClassification, 1 label) or an ORM (Qwen2ForSequenceClassification, 1 label) with
 * the tokenizer of its directory; the architecture is checked against `role`.
 */
export async function loadRewardModel(
  source: string,
  role: "prm" | "orm",
  opts: { gpu?: Gpu } = {},
): Promise<RewardModel> {
  const model = await loadModel(source, { gpu: opts.gpu });
  try {
    if (role === "prm") checkPrm(model);
    else checkOrm(model);
    const tokenizer = await loadTokenizer(model.dir!);
    return { role, model, tokenizer, convention: stepConventionOf(model.config), source };
  } catch (e) {
    releaseModel(model);
    throw e;
  }
}

/** A reward model built in memory (e.g. during training) as a {@link RewardModel}. */
export function rewardModel(model: Qwen2Model, tokenizer: Tokenizer, source = "<memory>"): RewardModel {
  const role = model.config.architecture === "Qwen2ForTokenClassification" ? "prm" : "orm";
  if (role === "prm") checkPrm(model);
  else checkOrm(model);
  return { role, model, tokenizer, convention: stepConventionOf(model.config), source };
}

/** Options of {@linkcode RewardScorer}. */
export interface RewardScorerOptions {
  /** The PRM (step scores). */
  prm?: RewardModel;
  /** The ORM (solution score). */
  orm?: RewardModel;
  /** Padded tokens per forward pass (default `HEAD_BATCH_TOKENS`). */
  maxBatchTokens?: number;
}

function checkItem(item: ScoreItem, i: number): void {
  if (typeof item?.question !== "string") {
    throw new Error(`Cannot score item ${i}: "question" must be a string`);
  }
  if ((item.solution === undefined) === (item.steps === undefined)) {
    throw new Error(`Cannot score item ${i}: give exactly one of "solution" and "steps"`);
  }
  if (item.goldAnswer !== undefined && typeof item.goldAnswer !== "string") {
    throw new Error(
      `Cannot score item ${i}: "goldAnswer" must be a string, got ${JSON.stringify(item.goldAnswer)}`,
    );
  }
}

/** {@link Scorer} over a PRM and/or an ORM (see the module doc). */
export class RewardScorer implements Scorer {
  /** The PRM, if any. */
  readonly prm?: RewardModel;
  /** The ORM, if any. */
  readonly orm?: RewardModel;
  /** Padded tokens per forward pass. */
  readonly maxBatchTokens?: number;

  /** Wraps loaded models (at least one). */
  constructor(opts: RewardScorerOptions) {
    if (!opts.prm && !opts.orm) throw new Error("Cannot build a scorer: give a PRM, an ORM or both");
    if (opts.prm && opts.prm.role !== "prm") throw new Error(`Scorer: "${opts.prm.source}" is not a PRM`);
    if (opts.orm && opts.orm.role !== "orm") throw new Error(`Scorer: "${opts.orm.source}" is not an ORM`);
    this.prm = opts.prm;
    this.orm = opts.orm;
    this.maxBatchTokens = opts.maxBatchTokens;
  }

  /** Loads the PRM and/or ORM directories (or hub ids) and builds a scorer. */
  static async load(
    opts: { prm?: string; orm?: string; gpu?: Gpu; maxBatchTokens?: number },
  ): Promise<RewardScorer> {
    const prm = opts.prm ? await loadRewardModel(opts.prm, "prm", { gpu: opts.gpu }) : undefined;
    let orm: RewardModel | undefined;
    try {
      orm = opts.orm ? await loadRewardModel(opts.orm, "orm", { gpu: opts.gpu }) : undefined;
    } catch (e) {
      if (prm) releaseModel(prm.model);
      throw e;
    }
    return new RewardScorer({ prm, orm, maxBatchTokens: opts.maxBatchTokens });
  }

  /** Scores `items` in shared forward passes (one batched set per model); results in input order. */
  async score(items: readonly ScoreItem[]): Promise<ScoreOutput[]> {
    items.forEach(checkItem);
    const stepsFor = (rm: RewardModel) => items.map((it) => itemSteps(it, rm.convention.separator));
    const layout = (rm: RewardModel, steps: string[][]) =>
      items.map((it, i) =>
        buildRmInput(rm.tokenizer, it.question, steps[i], { separator: rm.convention.separator })
      );
    const primary = (this.prm ?? this.orm)!;
    const steps = stepsFor(primary);
    let stepScores: number[][] | null = null, orm: number[] | null = null;
    if (this.prm) {
      stepScores = await prmStepScores(this.prm.model, layout(this.prm, steps), {
        maxBatchTokens: this.maxBatchTokens,
      });
    }
    if (this.orm) {
      const ormSteps = this.orm === primary ? steps : stepsFor(this.orm);
      orm =
        (await ormScores(this.orm.model, layout(this.orm, ormSteps), { maxBatchTokens: this.maxBatchTokens }))
          .scores;
    }
    return items.map((it, i) => {
      const solution = it.solution ?? steps[i].join("\n");
      const scores = stepScores ? stepScores[i] : null;
      return {
        steps: steps[i],
        stepScores: scores,
        ormScore: orm ? orm[i] : null,
        success: it.goldAnswer !== undefined ? successReward(solution, it.goldAnswer) : null,
        shapedRewards: scores ? Array.from(shapeStepRewards(scores, it.shaping ?? { kind: "none" })) : null,
      };
    });
  }

  /** The PRM and/or ORM behind the scorer. */
  models(): ModelInfo[] {
    return [this.prm, this.orm].filter((m): m is RewardModel => m !== undefined).map((m) => ({
      role: m.role,
      source: m.source,
      architecture: m.model.config.architecture,
      parameters: [...m.model.params.byName.values()].reduce((a, t) => a + t.size, 0),
    }));
  }

  /** Releases the models' GPU memory. */
  release(): void {
    if (this.prm) releaseModel(this.prm.model);
    if (this.orm) releaseModel(this.orm.model);
  }
}
