/**
 * GSM8K-format datasets: rows `{question, answer}` whose answer ends in `#### <number>`, loaded from
 * - a JSONL file (one JSON object per line, as `openai/grade-school-math`'s `train.jsonl`/`test.jsonl`),
 * - a Parquet file,
 * - a directory holding `<split>.jsonl` or `<config>/<split>-*.parquet` (a hub snapshot), or
 * - a Hugging Face hub dataset id such as `openai/gsm8k`, resolved through the hub cache (`resolveDataset`) to
 *   its `<config>/<split>-*.parquet` shards (`main/train-00000-of-00001.parquet`, …), read in name order.
 *
 * Every row is validated: both fields must be strings and the answer must have a `####` line with a number;
 * errors name the file and the line (JSONL, 1-based) or row (Parquet, 0-based).
 *
 * @module
 */

import { parquetMetadata, parquetReadObjects } from "hyparquet";
import { extractAnswer } from "../rewards/answer.ts";
import { type HubOptions, isHubRepoId, resolveDataset } from "../model/hub.ts";
import { exists, joinPath } from "../util/atomic.ts";
import type { MathExample } from "./arithmetic.ts";

/** Options of {@link loadGsm8k}. */
export interface LoadGsm8kOptions {
  /** Split for directories and hub ids (default "train"); ignored for a file. */
  split?: string;
  /** Hub dataset config, the folder of the parquet shards (default "main"; GSM8K also has "socratic"). */
  config?: string;
  /** Keep only the first `limit` examples. */
  limit?: number;
  /** Hub options for hub ids (revision, cache dir, endpoint, token, offline, …). */
  hub?: Omit<HubOptions, "files">;
}

/** Validates one raw row; `where` is e.g. `line 3` or `row 2`. */
function toExample(row: unknown, file: string, where: string): MathExample {
  const fail = (msg: string): never => {
    throw new Error(`Cannot load GSM8K "${file}": ${where}: ${msg}`);
  };
  if (typeof row !== "object" || row === null || Array.isArray(row)) {
    fail(`expected an object with "question" and "answer", got ${JSON.stringify(row)?.slice(0, 80)}`);
  }
  const r = row as Record<string, unknown>;
  for (const key of ["question", "answer"]) {
    if (r[key] === undefined || r[key] === null) fail(`field "${key}" is missing`);
    if (typeof r[key] !== "string") fail(`field "${key}" must be a string, got ${JSON.stringify(r[key])}`);
  }
  const answer = r.answer as string;
  const finalAnswer = answer.includes("####") ? extractAnswer(answer) : null;
  if (finalAnswer === null) {
    fail(`field "answer" has no final "#### <number>" line (ends with ${JSON.stringify(answer.slice(-40))})`);
  }
  return { question: r.question as string, answer, finalAnswer: finalAnswer! };
}

/** Parses GSM8K JSONL text; `file` names the source in errors. Blank lines are skipped. */
export function parseGsm8kJsonl(text: string, file: string): MathExample[] {
  const out: MathExample[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "") continue;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      throw new Error(`Cannot load GSM8K "${file}": line ${i + 1}: invalid JSON (${(e as Error).message})`);
    }
    out.push(toExample(row, file, `line ${i + 1}`));
  }
  return out;
}

/** Reads the `question` and `answer` columns of a GSM8K Parquet file (bytes); `file` names it in errors. */
export async function parseGsm8kParquet(bytes: Uint8Array, file: string): Promise<MathExample[]> {
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let names: string[];
  try {
    names = parquetMetadata(buf).schema.slice(1).map((s) => s.name);
  } catch (e) {
    throw new Error(`Cannot load GSM8K "${file}": not a valid Parquet file (${(e as Error).message})`);
  }
  for (const col of ["question", "answer"]) {
    if (!names.includes(col)) {
      throw new Error(
        `Cannot load GSM8K "${file}": column "${col}" is missing (columns: ${names.join(", ")})`,
      );
    }
  }
  const rows = await parquetReadObjects({ file: buf, columns: ["question", "answer"] });
  return rows.map((row, i) => toExample(row, file, `row ${i}`));
}

/** Reads one file by extension: `.parquet` as Parquet, anything else as JSONL. */
async function readFile(path: string): Promise<MathExample[]> {
  if (path.endsWith(".parquet")) return await parseGsm8kParquet(await Deno.readFile(path), path);
  return parseGsm8kJsonl(await Deno.readTextFile(path), path);
}

/** Files of `dir` whose names match `re`, sorted; [] when the folder does not exist. */
async function listMatching(dir: string, re: RegExp): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if ((e.isFile || e.isSymlink) && re.test(e.name)) out.push(e.name);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  return out.sort().map((n) => joinPath(dir, n));
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/**
 * Loads GSM8K-format examples from a file, a directory or a hub dataset id (see the module doc), in file order.
 *
 * @example const test = await loadGsm8k("openai/gsm8k", { split: "test" }); // 1,319 examples
 */
export async function loadGsm8k(source: string, opts: LoadGsm8kOptions = {}): Promise<MathExample[]> {
  const { split = "train", config = "main", limit } = opts;
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 0)) {
    throw new Error(`Cannot load GSM8K "${source}": limit must be a non-negative integer, got ${limit}`);
  }
  if (!/^[\w.-]+$/.test(split) || !/^[\w.-]+$/.test(config)) {
    throw new Error(`Cannot load GSM8K "${source}": invalid split "${split}" or config "${config}"`);
  }
  let info: Deno.FileInfo | null = null;
  try {
    info = await Deno.stat(source);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const shards = new RegExp(`^${escapeRe(split)}-.*\\.parquet$`);
  let files: string[];
  if (info?.isFile) {
    files = [source];
  } else if (info?.isDirectory) {
    const jsonl = joinPath(source, `${split}.jsonl`);
    files = (await exists(jsonl))
      ? [jsonl]
      : [...await listMatching(joinPath(source, config), shards), ...await listMatching(source, shards)];
    if (files.length === 0) {
      throw new Error(
        `Cannot load GSM8K "${source}": the directory has no "${split}.jsonl", "${config}/${split}-*.parquet" ` +
          `or "${split}-*.parquet"`,
      );
    }
  } else if (/\.(jsonl|json|parquet)$/.test(source) || /^\.{0,2}\//.test(source) || !isHubRepoId(source)) {
    throw new Error(
      `Cannot load GSM8K "${source}": file not found (and not a hub dataset id like "openai/gsm8k")`,
    );
  } else {
    const repo = await resolveDataset(source, { ...opts.hub, files: [`${config}/${split}-*.parquet`] });
    files = repo.files.map((f) => joinPath(repo.dir, f));
  }
  const out: MathExample[] = [];
  for (const f of files) {
    if (limit !== undefined && out.length >= limit) break;
    out.push(...await readFile(f));
  }
  return limit === undefined ? out : out.slice(0, limit);
}
