/**
 * SFT data: JSONL rows (or the built-in arithmetic task, or GSM8K) turned into {@link LMExample}s — token ids and
 * the completion mask that marks the targets of the loss.
 *
 * Row formats (detected per row):
 * - `{"prompt": str, "completion": str}`: rendered with the model's chat template as a user turn and an assistant
 *   turn. ids = tokens of the generation prompt (`…<|im_start|>assistant\n`) followed by the tokens of the
 *   assistant text up to and including the end-of-turn token (`<|im_end|>`); the targets are exactly those
 *   completion tokens. Anything the template writes after the end-of-turn token (ChatML's "\n") is dropped.
 * - `{"question": str, "answer": str}` (GSM8K): the same, with prompt = question and completion = answer.
 * - `{"input_ids": int[], "completion_mask": (0|1)[]}` (pre-tokenized), optionally with `attention_mask`
 *   (positions with 0 are removed): `completion_mask[t] = 1` makes token t a target, predicted from t − 1.
 *
 * Without a chat template the text rows are plain `prompt + completion + eos`. Examples longer than `maxLen` keep
 * their first `maxLen` tokens; an example left without targets is dropped (and counted). Errors name the file,
 * the line (1-based) and the field.
 *
 * @module
 */
import { generateProblems, type MathExample, toMathExample } from "../data/arithmetic.ts";
import { loadGsm8k } from "../data/gsm8k.ts";
import { Rng } from "../data/rng.ts";
import { isHubRepoId } from "../model/hub.ts";
import { applyChatTemplate } from "../tokenizer/chat_template.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import type { LMExample } from "./lm_loss.ts";

/** Options of {@linkcode parseSftJsonl}, {@linkcode loadSftData} and {@linkcode mathSftData}. */
export interface SftDataOptions {
  /** Tokenizer with the chat template; needed for text rows. */
  tokenizer?: Tokenizer | null;
  /** Why no tokenizer is available (appended to the error a text row raises). */
  tokenizerError?: string;
  /** Keep at most this many tokens per example (default: no limit). */
  maxLen?: number;
  /** Reject token ids ≥ vocabSize (the model's embedding rows). */
  vocabSize?: number;
  /** Keep only the first `limit` rows. */
  limit?: number;
}

/** A tokenized SFT dataset. */
export interface SftDataset {
  /** The examples, in file order (dropped ones removed). */
  examples: LMExample[];
  /** Where the rows came from. */
  source: string;
  /** Examples cut to `maxLen`. */
  truncated: number;
  /** Examples dropped because truncation removed every target. */
  dropped: number;
}

/** Tokens of the chat-template generation prompt for a user message: what generation continues from. */
export function promptIds(tokenizer: Tokenizer, prompt: string): number[] {
  if (tokenizer.chatTemplate === null) return tokenizer.encode(prompt, { addSpecialTokens: false });
  const text = applyChatTemplate(tokenizer, [{ role: "user", content: prompt }], {
    addGenerationPrompt: true,
  });
  return tokenizer.encode(text, { addSpecialTokens: false });
}

/** The end-of-turn token: `<|im_end|>` for ChatML tokenizers, else the EOS token. */
function endOfTurn(tokenizer: Tokenizer): { text: string | null; id: number | null } {
  if (tokenizer.imEndId !== null) return { text: "<|im_end|>", id: tokenizer.imEndId };
  return { text: tokenizer.eosToken, id: tokenizer.eosTokenId };
}

/**
 * One prompt/completion pair as an {@link LMExample} (see the module doc): the generation prompt's tokens
 * (mask 0), then the completion's tokens through the end-of-turn token (mask 1).
 */
export function chatExample(
  tokenizer: Tokenizer,
  pair: { prompt: string; completion: string },
): LMExample {
  const { prompt, completion } = pair;
  const enc = (s: string) => tokenizer.encode(s, { addSpecialTokens: false });
  const end = endOfTurn(tokenizer);
  let p: number[], c: number[];
  if (tokenizer.chatTemplate === null) {
    p = enc(prompt);
    c = [...enc(completion), ...(end.id !== null ? [end.id] : [])];
  } else {
    const user = { role: "user", content: prompt };
    const promptText = applyChatTemplate(tokenizer, [user], { addGenerationPrompt: true });
    const full = applyChatTemplate(tokenizer, [user, { role: "assistant", content: completion }]);
    if (!full.startsWith(promptText)) {
      throw new Error(
        "The chat template renders a conversation that does not start with its generation prompt: " +
          `${JSON.stringify(promptText.slice(-40))} is not a prefix`,
      );
    }
    const rest = full.slice(promptText.length);
    const from = rest.indexOf(completion);
    const at = end.text === null ? -1 : rest.indexOf(end.text, from < 0 ? 0 : from + completion.length);
    p = enc(promptText);
    c = at < 0
      ? [...enc(rest.trimEnd()), ...(end.id !== null ? [end.id] : [])]
      : enc(rest.slice(0, at + end.text!.length));
  }
  return { ids: [...p, ...c], completionMask: [...p.map(() => 0), ...c.map(() => 1)] };
}

/** Whether the example has a target (a 1 at a position ≥ 1: position 0 has no prediction). */
export function hasTarget(ex: LMExample): boolean {
  for (let t = 1; t < ex.completionMask.length; t++) if (ex.completionMask[t]) return true;
  return false;
}

/** The example cut to its first `maxLen` tokens (itself when short enough). */
export function truncateExample(ex: LMExample, maxLen: number): LMExample {
  if (ex.ids.length <= maxLen) return ex;
  return { ids: ex.ids.slice(0, maxLen), completionMask: ex.completionMask.slice(0, maxLen) };
}

function checkMaxLen(maxLen: number | undefined): void {
  if (maxLen !== undefined && !(Number.isSafeInteger(maxLen) && maxLen >= 2)) {
    throw new Error(`Invalid maximum length "${maxLen}": expected an integer ≥ 2`);
  }
}

/** Builds a dataset from examples: truncation, dropping, counting. */
function finish(raw: LMExample[], source: string, opts: SftDataOptions): SftDataset {
  checkMaxLen(opts.maxLen);
  const out: SftDataset = { examples: [], source, truncated: 0, dropped: 0 };
  for (const ex of raw) {
    const cut = opts.maxLen === undefined ? ex : truncateExample(ex, opts.maxLen);
    if (cut !== ex) out.truncated++;
    if (hasTarget(cut)) out.examples.push(cut);
    else out.dropped++;
  }
  return out;
}

const is01 = (x: unknown) => x === 0 || x === 1 || x === true || x === false;

/** Validates a pre-tokenized row; `fail` names the line. */
function tokenRow(r: Record<string, unknown>, fail: (msg: string) => never, vocabSize?: number): LMExample {
  const ids = r.input_ids, mask = r.completion_mask, attn = r.attention_mask;
  if (!Array.isArray(ids) || ids.length === 0) {
    fail(`field "input_ids" must be a non-empty list of token ids`);
  }
  const idList = ids as unknown[];
  if (!Array.isArray(mask)) fail(`field "completion_mask" must be a list of 0/1 (required with "input_ids")`);
  const maskList = mask as unknown[];
  const check = (name: string, list: unknown[]) => {
    if (list.length !== idList.length) {
      fail(`field "${name}" has ${list.length} entries, expected ${idList.length} (one per input id)`);
    }
    const bad = list.findIndex((x) => !is01(x));
    if (bad >= 0) fail(`field "${name}"[${bad}] is ${JSON.stringify(list[bad])}, expected 0 or 1`);
  };
  check("completion_mask", maskList);
  if (attn !== undefined) {
    if (!Array.isArray(attn)) fail(`field "attention_mask" must be a list of 0/1`);
    check("attention_mask", attn as unknown[]);
  }
  idList.forEach((id, i) => {
    if (!Number.isSafeInteger(id) || (id as number) < 0) {
      fail(`field "input_ids"[${i}] is ${JSON.stringify(id)}, expected an integer ≥ 0`);
    }
    if (vocabSize !== undefined && (id as number) >= vocabSize) {
      fail(`field "input_ids"[${i}] is ${id}, outside the model's vocabulary [0, ${vocabSize})`);
    }
  });
  const keep = idList.map((_, i) => attn === undefined || Number((attn as unknown[])[i]) === 1);
  const ex = {
    ids: idList.filter((_, i) => keep[i]) as number[],
    completionMask: maskList.filter((_, i) => keep[i]).map(Number),
  };
  if (ex.ids.length === 0) fail(`field "attention_mask" masks every token`);
  if (!hasTarget(ex)) fail(`field "completion_mask" has no 1 after the first token: the row has no target`);
  return ex;
}

/**
 * Parses SFT JSONL text (see the module doc for the row formats); `file` names the source in errors. Blank lines
 * are skipped.
 */
export function parseSftJsonl(text: string, file: string, opts: SftDataOptions = {}): SftDataset {
  const raw: LMExample[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (opts.limit !== undefined && raw.length >= opts.limit) break;
    const line = lines[i].trim();
    if (line === "") continue;
    const fail = (msg: string): never => {
      throw new Error(`Cannot load SFT data "${file}": line ${i + 1}: ${msg}`);
    };
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      fail(`not valid JSON (${(e as Error).message})`);
    }
    if (typeof row !== "object" || row === null || Array.isArray(row)) {
      fail(`expected a JSON object, got ${JSON.stringify(row)?.slice(0, 60)}`);
    }
    const r = row as Record<string, unknown>;
    if ("input_ids" in r) {
      raw.push(tokenRow(r, fail, opts.vocabSize));
      continue;
    }
    const pair = "prompt" in r || "completion" in r
      ? ["prompt", "completion"]
      : "question" in r || "answer" in r
      ? ["question", "answer"]
      : fail(
        `expected {"prompt", "completion"}, {"question", "answer"} or {"input_ids", "completion_mask"}, ` +
          `got fields ${JSON.stringify(Object.keys(r))}`,
      );
    for (const key of pair) {
      if (r[key] === undefined || r[key] === null) fail(`field "${key}" is missing`);
      if (typeof r[key] !== "string") fail(`field "${key}" must be a string, got ${JSON.stringify(r[key])}`);
    }
    if (!opts.tokenizer) {
      fail(`text rows need a tokenizer${opts.tokenizerError ? ` (${opts.tokenizerError})` : ""}`);
    }
    const ex = chatExample(opts.tokenizer!, {
      prompt: r[pair[0]] as string,
      completion: r[pair[1]] as string,
    });
    if (opts.vocabSize !== undefined) {
      const bad = ex.ids.find((id) => id >= opts.vocabSize!);
      if (bad !== undefined) fail(`token id ${bad} of the tokenized text is outside the model's vocabulary`);
    }
    raw.push(ex);
  }
  return finish(raw, file, opts);
}

/** GSM8K-form examples as an SFT dataset: prompt = question, completion = answer. */
export function mathSftData(
  examples: readonly MathExample[],
  source: string,
  opts: SftDataOptions,
): SftDataset {
  if (!opts.tokenizer) {
    throw new Error(
      `Cannot load SFT data "${source}": text rows need a tokenizer${
        opts.tokenizerError ? ` (${opts.tokenizerError})` : ""
      }`,
    );
  }
  return finish(
    examples.map((e) => chatExample(opts.tokenizer!, { prompt: e.question, completion: e.answer })),
    source,
    opts,
  );
}

/** `count` problems of the built-in arithmetic task's `split`, generated with `seed`, in GSM8K form. */
export function builtinProblems(
  count: number,
  opts: { seed: number; split: "train" | "test" },
): MathExample[] {
  return generateProblems(count, { seed: opts.seed, split: opts.split }).map(toMathExample);
}

/**
 * Loads SFT data from `source`: a JSONL file of any row format above; a Parquet file, a directory or a hub id
 * of a GSM8K-format dataset (its train split, via `loadGsm8k`).
 */
export async function loadSftData(source: string, opts: SftDataOptions = {}): Promise<SftDataset> {
  let info: Deno.FileInfo | null = null;
  try {
    info = await Deno.stat(source);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (info?.isFile && !source.endsWith(".parquet")) {
    return parseSftJsonl(await Deno.readTextFile(source), source, opts);
  }
  if (!info && (/\.(jsonl|json)$/.test(source) || /^\.{0,2}\//.test(source) || !isHubRepoId(source))) {
    throw new Error(`Cannot load SFT data "${source}": file not found (and not a hub dataset id)`);
  }
  return mathSftData(await loadGsm8k(source, { split: "train", limit: opts.limit }), source, opts);
}

/** How {@linkcode DataOrder} orders the examples (recorded in trainer states). */
export const DATA_ORDER_SCHEME = "epoch e: Fisher-Yates shuffle of 0..n-1 by mulberry32 seeded " +
  'fnv1a32("sft-order:<seed>:<e>"); with length grouping, each run of groupBatches·batchSize positions is ' +
  'sorted by length (stable), cut into batches, and the batches shuffled by "sft-group:<seed>:<e>:<g>"';

/** Options of {@linkcode DataOrder}. */
export interface DataOrderOptions {
  /** Seed of the shuffles (default 0). */
  seed?: number;
  /** Examples per micro-batch (for length grouping; default 1). */
  batchSize?: number;
  /** Length grouping: sort each run of this many micro-batches by length (0 or 1: off; default 0). */
  groupBatches?: number;
  /** Example lengths (required for length grouping). */
  lengths?: readonly number[];
}

/**
 * The data stream of a run: epoch after epoch, each a seeded permutation of the n examples (see
 * {@linkcode DATA_ORDER_SCHEME}). Position p of the stream is example `epoch(⌊p/n⌋)[p mod n]`, so the position
 * alone restores the data order (and its RNG) on resume.
 *
 * Length grouping (as `group_by_length` in `transformers`) makes every micro-batch hold examples of similar
 * lengths, so little of a padded (B, T) batch is padding — attention costs O(B·T²) — while batches of all
 * lengths stay mixed within each group of `groupBatches`.
 */
export class DataOrder {
  /** Number of examples. */
  readonly size: number;
  /** Seed of the shuffles. */
  readonly seed: number;
  readonly #batch: number;
  readonly #group: number;
  readonly #lengths?: readonly number[];
  readonly #epochs = new Map<number, number[]>();

  /** A stream over `size` ≥ 1 examples. */
  constructor(size: number, opts: DataOrderOptions = {}) {
    if (!(Number.isSafeInteger(size) && size >= 1)) {
      throw new Error(`Cannot order the data: there are ${size} examples, expected at least 1`);
    }
    this.size = size;
    this.seed = opts.seed ?? 0;
    this.#batch = opts.batchSize ?? 1;
    this.#group = opts.groupBatches ?? 0;
    this.#lengths = opts.lengths;
    if (this.#group > 1 && opts.lengths?.length !== size) {
      throw new Error(
        `Cannot group the data by length: expected ${size} lengths, got ${opts.lengths?.length}`,
      );
    }
  }

  /** The order of epoch `e`. */
  epoch(e: number): number[] {
    let order = this.#epochs.get(e);
    if (order) return order;
    order = new Rng(`sft-order:${this.seed}:${e}`).shuffle([...Array(this.size).keys()]);
    if (this.#group > 1) order = this.#grouped(order, e);
    if (this.#epochs.size >= 2) this.#epochs.delete(this.#epochs.keys().next().value!);
    this.#epochs.set(e, order);
    return order;
  }

  /**
   * Length grouping of epoch `e`'s shuffled `order`. Batch boundaries fall at stream positions that are multiples
   * of the batch size, so when n is not a multiple of it, the first `head` examples of the epoch complete the
   * batch begun at the end of the previous epoch; they are sorted on their own. The rest is cut into groups of
   * `groupBatches` batches, each sorted by length and cut into batches, whose order is then shuffled (a short
   * final batch stays last: it continues into the next epoch).
   */
  #grouped(order: number[], e: number): number[] {
    const B = this.#batch, span = this.#group * B, len = this.#lengths!;
    const byLength = (a: number, b: number) => len[a] - len[b];
    const head = (B - ((e * this.size) % B)) % B;
    const out = order.slice(0, head).sort(byLength);
    for (let g0 = head; g0 < order.length; g0 += span) {
      const chunk = order.slice(g0, g0 + span).sort(byLength);
      const full: number[][] = [];
      let i = 0;
      for (; i + B <= chunk.length; i += B) full.push(chunk.slice(i, i + B));
      const rng = new Rng(`sft-group:${this.seed}:${e}:${(g0 - head) / span}`);
      for (const b of rng.shuffle(full)) out.push(...b);
      out.push(...chunk.slice(i));
    }
    return out;
  }

  /** Example indices at stream positions [position, position + count). */
  take(position: number, count: number): number[] {
    return Array.from({ length: count }, (_, i) => {
      const p = position + i;
      return this.epoch(Math.floor(p / this.size))[p % this.size];
    });
  }
}

/** What {@linkcode loadRunData} needs of a run's configuration. */
export interface RunDataOptions {
  /** "builtin", a JSONL file, or a GSM8K-format dataset (Parquet, directory, hub id). */
  data: string;
  /** Built-in task: number of generated train problems. */
  trainProblems: number;
  /** Built-in task: generator seed of the train problems. */
  seed: number;
  /** Maximum tokens per example (0: no limit). */
  maxLen: number;
  /** "auto" (built-in test split for `--data builtin`, else none), "none", "builtin" or a GSM8K source. */
  evalData: string;
  /** Held-out problems to evaluate (the first n of the eval set). */
  evalProblems: number;
  /** Examples per micro-batch. */
  batchSize: number;
  /** Length grouping: micro-batches per sorted group (0: off). */
  lengthGroup: number;
}

/** The data of one run: the tokenized train set, its stream order, the held-out problems. */
export interface RunData {
  train: SftDataset;
  order: DataOrder;
  evalSet: MathExample[];
}

/** Loads the train set and held-out set of a run (see {@linkcode RunDataOptions}). */
export async function loadRunData(opts: RunDataOptions, data: SftDataOptions = {}): Promise<RunData> {
  const dataOpts = { ...data, maxLen: opts.maxLen > 0 ? opts.maxLen : undefined };
  const train = opts.data === "builtin"
    ? mathSftData(
      builtinProblems(opts.trainProblems, { seed: opts.seed, split: "train" }),
      `the built-in task (${opts.trainProblems} train problems, seed ${opts.seed})`,
      dataOpts,
    )
    : await loadSftData(opts.data, dataOpts);
  if (train.examples.length === 0) {
    throw new Error(`Cannot train: "${opts.data}" has no examples with a target token`);
  }
  const source = opts.evalData === "auto" ? (opts.data === "builtin" ? "builtin" : "none") : opts.evalData;
  let evalSet: MathExample[] = [];
  if (source === "builtin") {
    evalSet = builtinProblems(opts.evalProblems, { seed: 0, split: "test" });
  } else if (source !== "none" && opts.evalProblems > 0) {
    evalSet = await loadGsm8k(source, { split: "test", limit: opts.evalProblems });
  }
  const order = new DataOrder(train.examples.length, {
    seed: opts.seed,
    batchSize: opts.batchSize,
    groupBatches: opts.lengthGroup,
    lengths: train.examples.map((e) => e.ids.length),
  });
  return { train, order, evalSet };
}
