/**
 * The shape of a CLI subcommand and shared argument helpers.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";

/** One subcommand of `cli/main.ts`. */
export interface Command {
  /** Name typed after `main.ts`. */
  name: string;
  /** One-line summary for the command list. */
  summary: string;
  /** Full `--help` text. */
  help: string;
  /** Runs the command with its arguments (after the command name); returns the exit code. */
  run(args: string[]): Promise<number>;
}

/** Options of {@linkcode parseFlags}. */
export type FlagSpec = NonNullable<ParseArgsConfig["options"]>;

/**
 * Parses `args` strictly with `node:util` parseArgs, adding `--help`. Unknown flags throw an error naming the flag
 * and the command.
 */
export function parseFlags(command: string, args: string[], options: FlagSpec) {
  try {
    return parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: false,
      strict: true,
    }).values as Record<string, string | boolean | string[] | undefined>;
  } catch (e) {
    throw new UsageError(`${command}: ${(e as Error).message} (see --help)`);
  }
}

/** An error in the command line: printed without a stack trace, exit code 2. */
export class UsageError extends Error {}

/**
 * Copies parsed `flags` onto the config `target`, field by field: booleans and strings as given, the rest as
 * finite numbers (a usage error naming the flag otherwise). `flagOf(field)` is the field's `--flag`.
 */
export function applyFlags(
  command: string,
  flags: Record<string, unknown>,
  fields: Iterable<string>,
  target: object,
  kinds: { flagOf: (field: string) => string; boolean: ReadonlySet<string>; string: ReadonlySet<string> },
): void {
  const set = target as Record<string, unknown>;
  for (const field of fields) {
    const flag = kinds.flagOf(field);
    const v = flags[flag.slice(2)];
    if (v === undefined) continue;
    if (kinds.boolean.has(field) || kinds.string.has(field)) {
      set[field] = v;
      continue;
    }
    const n = Number(v);
    if (typeof v !== "string" || v.trim() === "" || !Number.isFinite(n)) {
      throw new UsageError(`${command}: ${flag} must be a number, got "${v}"`);
    }
    set[field] = n;
  }
}

/**
 * Runs `fn` with an abort signal raised by the first Ctrl-C (after printing that the run stops after the
 * current `unit` and saves a checkpoint); a second Ctrl-C exits at once with status 130.
 */
export async function withInterrupt<T>(unit: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const stop = new AbortController();
  let interrupts = 0;
  const onInt = () => {
    if (++interrupts > 1) Deno.exit(130);
    console.error(
      `\nInterrupted: stopping after this ${unit} and saving a checkpoint (Ctrl-C again to quit now)`,
    );
    stop.abort();
  };
  Deno.addSignalListener("SIGINT", onInt);
  try {
    return await fn(stop.signal);
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
  }
}
