/**
 * Training metrics as JSON Lines: one JSON object per line, flushed as it is written, so a crashed run keeps every
 * record up to the crash and `tail -f` / pandas `read_json(lines=True)` read it live.
 *
 * Records carry a `type` ("train", "eval", "info") and the optimiser `step` they belong to. Resuming from a
 * checkpoint at step s first drops the records of steps > s (written by the interrupted run after its last
 * checkpoint), so the file reads as one uninterrupted run.
 *
 * @example
 * ```ts
 * const log = await MetricsWriter.open("runs/a/metrics.jsonl", { keepUpToStep: 0 });
 * log.write({ type: "train", step: 1, loss: 2.31 });
 * log.close();
 * ```
 *
 * @module
 */
import { splitPath, writeFileAtomic } from "../util/atomic.ts";

/** One metrics record: flat JSON values. */
export type MetricsRecord = Record<string, string | number | boolean | null>;

/** Options of {@linkcode MetricsWriter.open}. */
export interface MetricsOpenOptions {
  /**
   * Keep the existing records with `step ≤ keepUpToStep` (and those without a step) and append after them;
   * default: start a new, empty file.
   */
  keepUpToStep?: number;
}

/** Reads a metrics file; unparsable lines (a torn last line after a crash) are skipped. */
export async function readMetrics(path: string): Promise<MetricsRecord[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  const out: MetricsRecord[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      const v = JSON.parse(line);
      if (v && typeof v === "object" && !Array.isArray(v)) out.push(v);
    } catch {
      // torn line
    }
  }
  return out;
}

/** An append-only JSONL writer; see the module doc. */
export class MetricsWriter {
  /** File path. */
  readonly path: string;
  readonly #file: Deno.FsFile;
  readonly #enc = new TextEncoder();

  private constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  /** Opens `path` (creating its directory), truncated or trimmed to `keepUpToStep`. */
  static async open(path: string, opts: MetricsOpenOptions = {}): Promise<MetricsWriter> {
    await Deno.mkdir(splitPath(path).dir, { recursive: true });
    if (opts.keepUpToStep === undefined) {
      await writeFileAtomic(path, "");
    } else {
      const keep = (await readMetrics(path)).filter((r) =>
        typeof r.step !== "number" || r.step <= opts.keepUpToStep!
      );
      await writeFileAtomic(path, keep.map((r) => JSON.stringify(r) + "\n").join(""));
    }
    return new MetricsWriter(path, await Deno.open(path, { append: true }));
  }

  /** Appends one record as a line (non-finite numbers become null, as JSON has no NaN). */
  write(record: MetricsRecord): void {
    const line = JSON.stringify(record, (_, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v));
    const bytes = this.#enc.encode(line + "\n");
    let off = 0;
    while (off < bytes.length) off += this.#file.writeSync(bytes.subarray(off));
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }
}
