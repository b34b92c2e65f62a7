/**
 * The PPO experience record (OpenRLHF's `Experience`): everything one batch of rollouts produced, as per-sequence
 * (B) fields and per-token (B, T) fields, plus the packing that lays sequences out for a forward pass.
 *
 * Per-token fields are row-major (B, T) with T = the longest response of the batch; response token j of sequence
 * b sits at index b·T + j, and `actionMask[b·T + j] = 1` for j < responseLength[b], 0 after (every other
 * per-token field is 0 there). Token j is the action a_j; its log-probs and value come from the state
 * s_j = prompt + response[0..j), i.e. the model's row that predicts response[j].
 *
 * ```
 * rewards_j    = α · Σ_{k: end_k = j} shaped_k + [j = T_b − 1]·success − β·kl_j        (combineRewards)
 * advantages_j = GAE(rewards, values; γ, λ), whitened over all valid tokens           (gaeGpu, whitenGpu)
 * returns_j    = GAE advantage (before whitening) + values_j
 * ```
 *
 * @module
 */
import { type PackedBatch, packSequences } from "../model/model.ts";

/** One batch of scored rollouts (see the module doc for the layout). */
export interface Experience {
  /** Sequences B. */
  B: number;
  /** Longest response T (tokens). */
  T: number;
  // ---- per sequence (B) ----
  /** Prompt token ids (chat template applied), (B) ragged. */
  prompts: number[][];
  /** Response token ids, stop token included when the sequence stopped, (B) ragged. */
  responses: number[][];
  /** Decoded response texts (special tokens dropped), (B). */
  texts: string[];
  /** Index of each sequence's question in the iteration's question list, (B). */
  questionIndex: Int32Array;
  /** Response lengths T_b ≥ 1, (B). */
  responseLength: Int32Array;
  /** 1 when the sequence ended with a stop token, 0 when it hit the token limit, (B). */
  stopped: Uint8Array;
  /** Outcome reward (success) of each sequence, (B). */
  success: Float32Array;
  /** 1 when the final answer is correct, (B). */
  correct: Uint8Array;
  /** Reasoning steps K_b (non-empty lines), (B). */
  numSteps: Int32Array;
  /** Steps that repeat an earlier step of the same solution verbatim, (B). */
  repeatedSteps: Int32Array;
  /** PRM probability of each step, (B) ragged (empty without a PRM). */
  stepScores: number[][];
  /** Shaped step rewards before the α weight, (B) ragged. */
  shapedRewards: number[][];
  /** Response token that ends each step, (B) ragged. */
  stepEnds: number[][];
  // ---- per token (B, T) ----
  /** 1 for response tokens, 0 for padding, (B, T). */
  actionMask: Float32Array;
  /**
   * 1 for response tokens the policy chose, (B, T): the action mask without the tokens the GSM8K calculator
   * wrote (those are the environment's, not actions, so the policy loss leaves them out).
   */
  policyMask: Float32Array;
  /** log π_old(a_j | s_j), recomputed by a training-mode forward pass, (B, T). */
  logp: Float32Array;
  /** log π_ref(a_j | s_j) of the frozen reference policy, (B, T). */
  logpRef: Float32Array;
  /** log π(a_j | s_j) reported by the sampler (temperature 1), (B, T), for diagnostics. */
  logpGen: Float32Array;
  /** Entropy of π_old(· | s_j), (B, T). */
  entropy: Float32Array;
  /** Critic values V(s_j) at sampling time, (B, T) (0 without a critic). */
  values: Float32Array;
  /** Per-token KL estimate k(logp, logpRef) (β not applied), (B, T). */
  kl: Float32Array;
  /** α-weighted shaped process reward placed on step-end tokens, (B, T). */
  processRewards: Float32Array;
  /** Total per-token reward fed to GAE, (B, T). */
  rewards: Float32Array;
  /** Whitened advantages, (B, T). */
  advantages: Float32Array;
  /** Return targets of the critic, (B, T). */
  returns: Float32Array;
}

/** Per-token field names of {@linkcode Experience}. */
export const TOKEN_FIELDS = [
  "actionMask",
  "policyMask",
  "logp",
  "logpRef",
  "logpGen",
  "entropy",
  "values",
  "kl",
  "processRewards",
  "rewards",
  "advantages",
  "returns",
] as const;

/** A per-token field of {@linkcode Experience}. */
export type TokenField = typeof TOKEN_FIELDS[number];

/** A (B, T) zero matrix. */
export function tokenMatrix(B: number, T: number): Float32Array {
  return new Float32Array(B * T);
}

/** Row b of a (B, T) per-token field, cut to the sequence's response length. */
export function tokenRow(exp: Experience, field: TokenField, b: number): Float32Array {
  return exp[field].subarray(b * exp.T, b * exp.T + exp.responseLength[b]);
}

/**
 * The sub-batch of sequences `indices` (in that order), with T shrunk to its longest response. Ragged fields are
 * shared, typed arrays copied.
 */
export function selectExperience(exp: Experience, indices: readonly number[]): Experience {
  for (const i of indices) {
    if (!Number.isInteger(i) || i < 0 || i >= exp.B) {
      throw new Error(`Cannot select sequence "${i}" of an experience batch of ${exp.B}`);
    }
  }
  const B = indices.length;
  const T = Math.max(1, ...indices.map((i) => exp.responseLength[i]));
  const pick = <A extends Int32Array | Uint8Array | Float32Array>(a: A, make: (n: number) => A): A => {
    const out = make(B);
    indices.forEach((i, k) => (out[k] = a[i]));
    return out;
  };
  const out: Experience = {
    B,
    T,
    prompts: indices.map((i) => exp.prompts[i]),
    responses: indices.map((i) => exp.responses[i]),
    texts: indices.map((i) => exp.texts[i]),
    questionIndex: pick(exp.questionIndex, (n) => new Int32Array(n)),
    responseLength: pick(exp.responseLength, (n) => new Int32Array(n)),
    stopped: pick(exp.stopped, (n) => new Uint8Array(n)),
    success: pick(exp.success, (n) => new Float32Array(n)),
    correct: pick(exp.correct, (n) => new Uint8Array(n)),
    numSteps: pick(exp.numSteps, (n) => new Int32Array(n)),
    repeatedSteps: pick(exp.repeatedSteps, (n) => new Int32Array(n)),
    stepScores: indices.map((i) => exp.stepScores[i]),
    shapedRewards: indices.map((i) => exp.shapedRewards[i]),
    stepEnds: indices.map((i) => exp.stepEnds[i]),
  } as Experience;
  for (const f of TOKEN_FIELDS) {
    const m = tokenMatrix(B, T);
    indices.forEach((i, k) => m.set(exp[f].subarray(i * exp.T, i * exp.T + exp.responseLength[i]), k * T));
    out[f] = m;
  }
  return out;
}

/** Prompt + response sequences of a batch, packed for one forward pass, with the rows of every action. */
export interface PackedRollouts {
  /** The packed (B, Tp) batch of full sequences (right-padded). */
  packed: PackedBatch;
  /** (B·Tp) i32 target of each row: the action it predicts, −1 for prompt and padding rows. */
  targets: Int32Array;
  /** (B·Tmax) flat row of action j of sequence b at index b·Tmax + j (−1 past the response), Tmax = `T`. */
  actionRows: Int32Array;
  /** Per-token width T of `actionRows` (the longest response). */
  T: number;
}

/**
 * Packs `prompts[b] ++ responses[b]` right-padded into one (B, Tp) batch (`packSequences`) and finds the row that
 * predicts each response token: action j of sequence b is predicted at row b·Tp + P_b + j − 1.
 */
export function packRollouts(prompts: readonly number[][], responses: readonly number[][]): PackedRollouts {
  if (prompts.length !== responses.length) {
    throw new Error(`Cannot pack rollouts: ${prompts.length} prompts for ${responses.length} responses`);
  }
  prompts.forEach((p, b) => {
    if (p.length === 0) throw new Error(`Cannot pack rollout ${b}: its prompt is empty`);
    if (responses[b].length === 0) throw new Error(`Cannot pack rollout ${b}: its response is empty`);
  });
  const packed = packSequences(prompts.map((p, b) => [...p, ...responses[b]]));
  const T = Math.max(1, ...responses.map((r) => r.length));
  const targets = new Int32Array(packed.B * packed.T).fill(-1);
  const actionRows = new Int32Array(packed.B * T).fill(-1);
  responses.forEach((r, b) => {
    const base = b * packed.T + packed.starts[b] + prompts[b].length - 1;
    r.forEach((id, j) => {
      targets[base + j] = id;
      actionRows[b * T + j] = base + j;
    });
  });
  return { packed, targets, actionRows, T };
}

/** Scatters a (B, T) per-token array into (B·Tp) packed rows (0 elsewhere). */
export function toRows(pr: PackedRollouts, tokens: ArrayLike<number>): Float32Array {
  const out = new Float32Array(pr.packed.B * pr.packed.T);
  for (let i = 0; i < pr.actionRows.length; i++) if (pr.actionRows[i] >= 0) out[pr.actionRows[i]] = tokens[i];
  return out;
}

/** Gathers (B·Tp) packed rows into a (B, T) per-token array (0 past each response). */
export function fromRows(pr: PackedRollouts, rows: ArrayLike<number>): Float32Array {
  const out = new Float32Array(pr.actionRows.length);
  for (let i = 0; i < pr.actionRows.length; i++) if (pr.actionRows[i] >= 0) out[i] = rows[pr.actionRows[i]];
  return out;
}

/** Masked mean Σ m·x / Σ m of a (B, T) field over the valid tokens (0 when none). */
export function maskedMean(x: ArrayLike<number>, mask: ArrayLike<number>): number {
  let s = 0, n = 0;
  for (let i = 0; i < x.length; i++) if (mask[i]) (s += x[i], n++);
  return n ? s / n : 0;
}

/** Mean of a per-sequence field (0 when empty). */
export function mean(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i];
  return x.length ? s / x.length : 0;
}
