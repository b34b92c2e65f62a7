/**
 * GSM8K calculator for batched decoding (`shaders/calculator.wgsl`): inside a calculator annotation
 * `<<expr=value>>`, the value is forced to the exact result of expr, so a small model's arithmetic slips do not
 * decide the answer — the model still picks every operand and operator (Cobbe et al. 2021, "Training Verifiers
 * to Solve Math Word Problems", sample with a calculator). Decoding stays on the GPU: per step, `force` raises
 * the logit of a queued token before sampling and `update` parses the sampled token's bytes after it; nothing
 * is read back per token.
 *
 * {@linkcode calculatorStep} is the plain-TS reference of the per-row state machine (the shader implements the
 * same one; tests/calculator_test.ts compares them), also used to start each row from its prompt's tokens.
 *
 * @example
 * ```ts
 * const calc = calculatorTable(tokenizer, model.config.vocabSize);
 * const out = await generate(model, prompts, { maxNewTokens: 200, calculator: calc });
 * out.forced[0]; // which response tokens the calculator wrote
 * ```
 *
 * @module
 */
import src from "../../shaders/calculator.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import { upload, zeros } from "../gpu/io.ts";
import { grid1d, type KernelSpec } from "../gpu/kernel.ts";
import { rowShards } from "../gpu/shard.ts";
import { expectShape, type Tensor } from "../gpu/tensor.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";

/** State words per row (layout in shaders/calculator.wgsl). */
export const CALC_STATE_WORDS = 32;
const PHASE = 0, PREV_LT = 1, SUM = 2, TERM = 3, TERM_OP = 4, SIGN = 5, NUM = 6, NDIG = 7;
const QLEN = 8, QPOS = 9, QUEUE = 10;
// table words: digit ids at 0–9, then these (layout in shaders/calculator.wgsl)
const MINUS_ID = 10, N_CLOSE = 11, CLOSE_IDS = 12, OFFSETS = 16;
const LIMIT = 2e9;
/** Invocations per workgroup of both entry points (one row each). */
const WG = 64;

const PARAMS = [
  ["rows", "u32"],
  ["row0", "u32"],
  ["vocab", "u32"],
  ["max_new", "u32"],
  ["step", "u32"],
] as const;
const BINDINGS_FORCE = ["", "state", "", "done", "", "logits"];
const BINDINGS_UPDATE = ["table", "state", "tokens", "done", "forced"];
const FORCE: KernelSpec = {
  name: "calculator.force",
  code: src,
  entry: "force",
  constants: { WG },
  params: PARAMS,
  bindings: BINDINGS_FORCE,
};
const UPDATE: KernelSpec = {
  name: "calculator.update",
  code: src,
  entry: "update",
  constants: { WG },
  params: PARAMS,
  bindings: BINDINGS_UPDATE,
};

/**
 * The calculator's token table for one tokenizer and model vocabulary (see the shader's table layout): the
 * token ids of the digits, `-` and `>>`, and every token's bytes. Build it once per tokenizer.
 */
export interface CalculatorTable {
  /** Model vocabulary size V (rows of the offset table). */
  vocab: number;
  /** The table words. */
  words: Int32Array;
}

/**
 * Builds the calculator table of `tokenizer` for a model with `vocab` logits. Throws naming the problem when
 * the tokenizer cannot host the calculator: not byte-level, or a digit or `-` that is not one token.
 */
export function calculatorTable(tokenizer: Tokenizer, vocab: number): CalculatorTable {
  const single = (s: string): number => {
    const ids = tokenizer.encode(s, { addSpecialTokens: false });
    if (ids.length !== 1) {
      throw new Error(
        `Cannot use the calculator with this tokenizer: "${s}" encodes to ${ids.length} tokens, expected 1`,
      );
    }
    return ids[0];
  };
  const close = tokenizer.encode(">>", { addSpecialTokens: false });
  if (close.length < 1 || close.length > 4) {
    throw new Error(`Cannot use the calculator with this tokenizer: ">>" encodes to ${close.length} tokens`);
  }
  const bytes: Uint8Array[] = [];
  let total = 0;
  for (let id = 0; id < vocab; id++) {
    let b: Uint8Array = new Uint8Array(0);
    if (id < tokenizer.vocabSize && !tokenizer.isSpecial(id) && tokenizer.idToToken(id) !== undefined) {
      b = tokenizer.tokenBytes(id);
    }
    bytes.push(b);
    total += b.length;
  }
  const words = new Int32Array(OFFSETS + vocab + 1 + total);
  for (let d = 0; d < 10; d++) words[d] = single(String(d));
  words[MINUS_ID] = single("-");
  words[N_CLOSE] = close.length;
  close.forEach((id, i) => (words[CLOSE_IDS + i] = id));
  let at = OFFSETS + vocab + 1;
  for (let id = 0; id < vocab; id++) {
    words[OFFSETS + id] = at;
    words.set(bytes[id], at);
    at += bytes[id].length;
  }
  words[OFFSETS + vocab] = at;
  return { vocab, words };
}

const cache = new WeakMap<Tokenizer, Map<number, CalculatorTable>>();

/** {@linkcode calculatorTable}, built once per tokenizer and vocabulary. */
export function calculatorFor(tokenizer: Tokenizer, vocab: number): CalculatorTable {
  let m = cache.get(tokenizer);
  if (!m) cache.set(tokenizer, m = new Map());
  let t = m.get(vocab);
  if (!t) m.set(vocab, t = calculatorTable(tokenizer, vocab));
  return t;
}

/** A fresh row state (outside any annotation, nothing queued). */
export function calculatorState(): Int32Array {
  return new Int32Array(CALC_STATE_WORDS);
}

/** The token the calculator forces next for this row state, or null. */
export function forcedToken(state: Int32Array): number | null {
  return state[QPOS] < state[QLEN] ? state[QUEUE + state[QPOS]] : null;
}

/**
 * Reference of the shader's `update` for one row: pops the queued token if one is pending (returns true: the
 * token was forced) and parses the bytes of `token`, queueing a value when an annotation's `=` ends it.
 */
export function calculatorStep(table: CalculatorTable, state: Int32Array, token: number): boolean {
  const w = table.words, s = state;
  let forced = false;
  if (s[QPOS] < s[QLEN]) {
    forced = true;
    s[QPOS]++;
    if (s[QPOS] >= s[QLEN]) s[QLEN] = s[QPOS] = 0;
  }
  if (token < 0 || token >= table.vocab) return forced;
  const abort = () => (s[PHASE] = 0, s[PREV_LT] = 0);
  const foldNumber = (): boolean => {
    if (s[NDIG] === 0) return false;
    const num = s[NUM], term = s[TERM];
    if (s[TERM_OP] === 0) s[TERM] = num;
    else if (s[TERM_OP] === 1) {
      if (Math.abs(Math.fround(Math.fround(term) * Math.fround(num))) > LIMIT) return false;
      s[TERM] = term * num;
    } else {
      if (num === 0 || term % num !== 0) return false;
      s[TERM] = term / num;
    }
    s[NUM] = s[NDIG] = 0;
    return true;
  };
  const foldTerm = (): boolean => {
    const v = Math.fround(Math.fround(s[SUM]) + Math.fround(s[SIGN] * s[TERM]));
    if (Math.abs(v) > LIMIT) return false;
    s[SUM] = s[SUM] + s[SIGN] * s[TERM];
    s[TERM_OP] = 0;
    return true;
  };
  let pending = false;
  for (let i = w[OFFSETS + token]; i < w[OFFSETS + token + 1]; i++) {
    const c = w[i];
    if (pending) (pending = false, abort());
    if (s[PHASE] === 0) {
      if (c === 60) {
        if (s[PREV_LT]) {
          s.fill(0, PHASE, NDIG + 1);
          s[PHASE] = 1;
          s[SIGN] = 1;
        } else s[PREV_LT] = 1;
      } else s[PREV_LT] = 0;
      continue;
    }
    if (c >= 48 && c <= 57) {
      if (s[NDIG] >= 9) abort();
      else (s[NUM] = s[NUM] * 10 + (c - 48), s[NDIG]++);
    } else if (c === 32) {
      // spaces inside an annotation are skipped
    } else if (c === 42 || c === 47) {
      if (foldNumber()) s[TERM_OP] = c === 42 ? 1 : 2;
      else abort();
    } else if (c === 43 || c === 45 || c === 61) {
      if (foldNumber() && foldTerm()) (s[SIGN] = c === 45 ? -1 : 1, pending = c === 61);
      else abort();
    } else abort();
  }
  if (pending) {
    s[QLEN] = s[QPOS] = 0;
    const push = (id: number) => (s[QUEUE + s[QLEN]] = id, s[QLEN]++);
    let v = s[SUM];
    if (v < 0) (push(w[MINUS_ID]), v = -v);
    for (const d of String(v)) push(w[d.charCodeAt(0) - 48]);
    for (let j = 0; j < w[N_CLOSE]; j++) push(w[CLOSE_IDS + j]);
    abort();
  }
  return forced;
}

/**
 * Which tokens of a token stream (prompt and response, as decoded) the calculator would write: token t is
 * calculator-written when it equals the token the reference state machine has queued before it. Such tokens are
 * tool output rather than model output, e.g. not SFT targets with `sft --mask-calculator`.
 */
export function calculatorWritten(table: CalculatorTable, ids: readonly number[]): boolean[] {
  const state = calculatorState();
  return ids.map((id) => {
    const written = forcedToken(state) === id;
    calculatorStep(table, state, id);
    return written;
  });
}

/** The calculator's GPU state for one generate call: B rows, maxNew steps. */
export interface CalculatorRun {
  table: Tensor;
  /** (B, S) i32 row states. */
  state: Tensor;
  /** (B, maxNew) i32: 1 where the calculator wrote the token. */
  forced: Tensor;
}

/**
 * Uploads the table and the row states after each prompt's tokens (a prompt that ends inside an annotation
 * after `=` starts with its value queued). Release with {@linkcode releaseCalculatorRun}.
 */
export function createCalculatorRun(
  gpu: Gpu,
  table: CalculatorTable,
  prompts: readonly (readonly number[])[],
  maxNew: number,
): CalculatorRun {
  const B = prompts.length;
  const states = new Int32Array(B * CALC_STATE_WORDS);
  prompts.forEach((p, b) => {
    const s = calculatorState();
    for (const t of p) calculatorStep(table, s, t);
    states.set(s, b * CALC_STATE_WORDS);
  });
  return {
    table: upload(gpu, table.words, { label: "calculator.table" }),
    state: upload(gpu, states, { shape: [B, CALC_STATE_WORDS], label: "calculator.state" }),
    forced: zeros(gpu, [B, maxNew], { dtype: "i32", label: "calculator.forced" }),
  };
}

/** Releases the tensors of a {@linkcode CalculatorRun}. */
export function releaseCalculatorRun(run: CalculatorRun): void {
  run.table.release();
  run.state.release();
  run.forced.release();
}

/** Before sampling: raises the logit of each row's queued token in `logits` (B, V) (rows not done). */
export function calculatorForce(batch: Batch, run: CalculatorRun, logits: Tensor, done: Tensor): void {
  const [B, V] = logits.shape;
  expectShape(run.state, [B, CALC_STATE_WORDS], "calculatorForce");
  const gpu = batch.gpu;
  for (const { start, count } of rowShards(gpu, B, V)) {
    if (count === 0) continue;
    batch.dispatch(
      FORCE,
      { state: run.state, done, logits: logits.view(start * V, count * V) },
      grid1d(Math.ceil(count / WG), gpu.limits.maxWorkgroupsPerDimension),
      { rows: count, row0: start, vocab: V, max_new: 0, step: 0 },
    );
  }
}

/** After sampling column `step` of `tokens` (B, maxNew): pops forced tokens and parses the new tokens. */
export function calculatorUpdate(
  batch: Batch,
  run: CalculatorRun,
  tokens: Tensor,
  done: Tensor,
  step: number,
  vocab: number,
): void {
  const [B, maxNew] = tokens.shape;
  expectShape(run.forced, [B, maxNew], "calculatorUpdate");
  batch.dispatch(
    UPDATE,
    { table: run.table, state: run.state, tokens, done, forced: run.forced },
    grid1d(Math.ceil(B / WG), batch.gpu.limits.maxWorkgroupsPerDimension),
    { rows: B, row0: 0, vocab, max_new: maxNew, step },
  );
}
