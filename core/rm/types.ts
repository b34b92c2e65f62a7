/**
 * The contract between reward models and their users (the scoring server, the CLI, PPO): what a scoring request
 * holds and what comes back.
 *
 * @module
 */
import type { ShapeOptions } from "../rewards/shaping.ts";

/** One solution to score. */
export interface ScoreItem {
  /** The problem statement. */
  question: string;
  /** The full solution text (steps are its non-empty lines); give this or `steps`. */
  solution?: string;
  /** The solution already split into steps; give this or `solution`. */
  steps?: string[];
  /** Gold answer (a GSM8K answer text with `#### n`, or the number): enables the success reward. */
  goldAnswer?: string;
  /** Shaping applied to the PRM step scores (default none). */
  shaping?: ShapeOptions;
}

/** Scores of one solution. */
export interface ScoreOutput {
  /** The steps scored. */
  steps: string[];
  /** PRM probability that each step is correct, read at each step's end token (null without a PRM). */
  stepScores: number[] | null;
  /** ORM probability that the solution reaches the right answer (null without an ORM). */
  ormScore: number | null;
  /** 1/0 success against the gold answer (null without one). */
  success: number | null;
  /** Step scores after the requested shaping (null without a PRM). */
  shapedRewards: number[] | null;
}

/** Description of a loaded model, for `GET /v1/models`. */
export interface ModelInfo {
  /** "policy", "prm" or "orm". */
  role: "policy" | "prm" | "orm";
  /** Where it was loaded from (directory or hub id). */
  source: string;
  /** Architecture from config.json. */
  architecture: string;
  /** Parameter count. */
  parameters: number;
}

/** Anything that scores batches of solutions (the PRM/ORM pair on the GPU, in production). */
export interface Scorer {
  /** Scores a batch in shared forward passes; results in input order. */
  score(items: readonly ScoreItem[]): Promise<ScoreOutput[]>;
  /** Models behind the scorer. */
  models(): ModelInfo[];
}

/** One generation request of the server. */
export interface GenerateItem {
  /** Chat messages, or a bare question (sent as one user message). */
  messages?: { role: string; content: string }[];
  question?: string;
  maxNewTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** Number of samples. */
  n?: number;
  /** Decode with the GSM8K calculator (exact values inside `<<expr=…>>`). */
  calculator?: boolean;
}

/** Generated samples for one request. */
export interface GenerateOutput {
  samples: { text: string; tokens: number; stopped: boolean }[];
}

/** Anything that generates from a policy. */
export interface Generator {
  generate(items: readonly GenerateItem[]): Promise<GenerateOutput[]>;
}
