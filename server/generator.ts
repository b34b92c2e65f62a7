/**
 * The policy behind `POST /v1/generate`: a causal LM and its tokenizer. Prompts go through the tokenizer's chat
 * template (a bare question is one user message, with the generation prompt appended); the requests of one batch
 * that share sampling settings decode together in one KV-cache {@linkcode generate} call on the GPU.
 *
 * Sample j of a request uses run seed `seed` and sequence seed j, so a request gets the same samples whatever
 * batch it lands in.
 *
 * @example
 * ```ts
 * const policy = await PolicyGenerator.load("runs/sft-tiny");
 * const [out] = await policy.generate([{ question: "What is 2+3?", maxNewTokens: 32 }]);
 * console.log(out.samples[0].text);
 * ```
 *
 * @module
 */
import type { Gpu } from "../core/gpu/device.ts";
import { calculatorFor } from "../core/model/calculator.ts";
import { generate } from "../core/model/generate.ts";
import { loadModel, type Qwen2Model, releaseModel } from "../core/model/model.ts";
import type { GenerateItem, GenerateOutput, Generator, ModelInfo } from "../core/rm/types.ts";
import { applyChatTemplate } from "../core/tokenizer/chat_template.ts";
import { loadTokenizer, type Tokenizer } from "../core/tokenizer/tokenizer.ts";
import { HttpError } from "./schema.ts";

/** Number of parameters of a model (distinct tensors; tied embeddings count once). */
export function countParameters(model: Qwen2Model): number {
  let n = 0;
  for (const t of model.params.byName.values()) n += t.size;
  return n;
}

/** Options of {@linkcode PolicyGenerator}. */
export interface PolicyGeneratorOptions {
  /** Where the model came from, for `GET /v1/models` (default: the model's directory). */
  source?: string;
  /** `max_new_tokens` when a request gives none (default 256, capped by the context length). */
  defaultMaxNewTokens?: number;
}

/** A {@linkcode Generator} over a loaded causal LM. */
export class PolicyGenerator implements Generator {
  /** The policy model. */
  readonly model: Qwen2Model;
  /** Its tokenizer. */
  readonly tokenizer: Tokenizer;
  readonly #source: string;
  readonly #defaultMaxNew: number;
  readonly #stopIds: number[];

  /** Wraps a loaded model and tokenizer. */
  constructor(model: Qwen2Model, tokenizer: Tokenizer, opts: PolicyGeneratorOptions = {}) {
    if (model.config.architecture !== "Qwen2ForCausalLM") {
      throw new Error(
        `Cannot use "${
          opts.source ?? model.dir
        }" as the policy: architecture "${model.config.architecture}", ` +
          `expected "Qwen2ForCausalLM"`,
      );
    }
    this.model = model;
    this.tokenizer = tokenizer;
    this.#source = opts.source ?? model.dir ?? "(in memory)";
    this.#defaultMaxNew = opts.defaultMaxNewTokens ?? 256;
    const im = tokenizer.imEndId !== null ? [tokenizer.imEndId] : [];
    this.#stopIds = [...new Set([...model.config.eosTokenIds, ...im])];
  }

  /** Loads the model and its tokenizer from a directory or hub id. */
  static async load(
    source: string,
    opts: { gpu?: Gpu } & PolicyGeneratorOptions = {},
  ): Promise<PolicyGenerator> {
    const model = await loadModel(source, { gpu: opts.gpu });
    try {
      return new PolicyGenerator(model, await loadTokenizer(model.dir!), { source, ...opts });
    } catch (e) {
      releaseModel(model);
      throw e;
    }
  }

  /** The policy's description. */
  models(): ModelInfo[] {
    const cfg = this.model.config;
    return [{
      role: "policy",
      source: this.#source,
      architecture: cfg.architecture,
      parameters: countParameters(this.model),
    }];
  }

  /** Prompt token ids of an item: its messages (or question as a user message) through the chat template. */
  promptIds(item: GenerateItem): number[] {
    const messages = item.messages ?? [{ role: "user", content: item.question ?? "" }];
    const text = this.tokenizer.chatTemplate === null && item.messages === undefined
      ? item.question ?? ""
      : applyChatTemplate(this.tokenizer, messages, { addGenerationPrompt: true });
    return this.tokenizer.encode(text, { addSpecialTokens: false });
  }

  /**
   * Generates `n` samples per item. Items are grouped by (max_new_tokens, temperature, top_k, top_p, seed,
   * calculator); each group decodes in one batched call. A prompt too long for the context throws a 422 {@linkcode HttpError}.
   */
  async generate(items: readonly GenerateItem[]): Promise<GenerateOutput[]> {
    const ctx = this.model.config.maxPositionEmbeddings;
    const prepared = items.map((item, i) => {
      const prompt = this.promptIds(item);
      const maxNew = item.maxNewTokens ?? Math.max(1, Math.min(this.#defaultMaxNew, ctx - prompt.length));
      if (prompt.length + maxNew > ctx) {
        throw new HttpError(
          422,
          "prompt_too_long",
          `Prompt of item ${i} has ${prompt.length} tokens: with max_new_tokens ${maxNew} it exceeds the ` +
            `context length ${ctx}`,
          { field: item.messages ? "messages" : "question" },
        );
      }
      const opts = {
        maxNewTokens: maxNew,
        temperature: item.temperature ?? 0,
        topK: item.topK ?? 0,
        topP: item.topP ?? 1,
        seed: item.seed ?? 0,
        calculator: item.calculator ?? false,
      };
      return { prompt, n: item.n ?? 1, opts, key: JSON.stringify(opts) };
    });
    const out: GenerateOutput[] = prepared.map(() => ({ samples: [] }));
    const groups = Map.groupBy(prepared.map((p, i) => ({ ...p, i })), (p) => p.key);
    for (const group of groups.values()) {
      const prompts = group.flatMap((p) => Array.from({ length: p.n }, () => p.prompt));
      const sequenceSeeds = group.flatMap((p) => Array.from({ length: p.n }, (_, j) => j));
      const { calculator, ...opts } = group[0].opts;
      const r = await generate(this.model, prompts, {
        ...opts,
        calculator: calculator ? calculatorFor(this.tokenizer, this.model.config.vocabSize) : undefined,
        sequenceSeeds,
        stopIds: this.#stopIds,
      });
      let row = 0;
      for (const p of group) {
        for (let j = 0; j < p.n; j++, row++) {
          const tokens = r.tokens[row];
          out[p.i].samples.push({
            text: this.tokenizer.decode(tokens, { skipSpecialTokens: true }),
            tokens: tokens.length,
            stopped: r.stopped[row],
          });
        }
      }
    }
    return out;
  }

  /** Releases the model's GPU memory. */
  release(): void {
    releaseModel(this.model);
  }
}
