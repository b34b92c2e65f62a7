/**
 * `deno task serve`: the local scoring server. Loads the policy, PRM and ORM onto the GPU, serves the app of
 * `server/app.ts` with `Deno.serve`, and shuts down gracefully on SIGINT/SIGTERM (in-flight requests finish;
 * a second signal exits at once).
 *
 * Usage: deno run -A server/main.ts [--policy DIR] [--prm DIR] [--orm DIR] [--port 8787] [--host 127.0.0.1] …
 *
 * With none of --policy/--prm/--orm it serves the built-in task's trained tiny models from runs/ when all three
 * exist, else small random-initialised ones it builds into runs/serve-default on first run.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { createApp, type ScoringApp } from "./app.ts";
import { DEFAULT_LIMITS } from "./schema.ts";
import { loadServing, type ModelFlags } from "./models.ts";

/** A listening server. */
export interface RunningServer {
  /** Bound address (the actual port when 0 was asked). */
  addr: Deno.NetAddr;
  /** `http://host:port`. */
  url: string;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
  /** Stops accepting connections, answers new model work with 503, and resolves once in-flight requests finish. */
  shutdown(): Promise<void>;
}

/** Serves `scoring.app` on `host:port` (port 0: any free port). This is the only place the server listens. */
export function startServer(
  scoring: ScoringApp,
  opts: { host?: string; port?: number; onListen?: (addr: Deno.NetAddr) => void } = {},
): RunningServer {
  const server = Deno.serve({
    hostname: opts.host ?? "127.0.0.1",
    port: opts.port ?? 8787,
    onListen: opts.onListen ?? (() => {}),
  }, scoring.app.fetch);
  const addr = server.addr as Deno.NetAddr;
  let stopping: Promise<void> | undefined;
  return {
    addr,
    url: `http://${addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname}:${addr.port}`,
    finished: server.finished,
    shutdown: () => stopping ??= Promise.all([scoring.close(), server.shutdown()]).then(() => {}),
  };
}

/** Longest wait for open connections after SIGINT/SIGTERM before exiting anyway (ms). */
export const SHUTDOWN_GRACE_MS = 30_000;

const HELP = `Usage: deno run -A server/main.ts [options]

Local PRM/ORM scoring server (and policy sampling) on the GPU.

Models (directory or Hugging Face hub id; with none given: the built-in task's tiny models from runs/, else
random-initialised tiny ones built into runs/serve-default on first run):
  --policy           causal LM behind POST /v1/generate
  --prm              process reward model (per-step scores)
  --orm              outcome reward model (solution score)

Server:
  --port             TCP port (default 8787; 0 = any free port)
  --host             interface (default 127.0.0.1)
  --token            bearer token required on every route but /healthz (default: env PRM_RL_TOKEN, else none)
  --max-batch        most items per model call (default 32)
  --batch-wait-ms    longest wait for a batch to fill, ms (default 5)
  --queue-size       most items waiting before 503 + Retry-After (default 1024)
  --max-body-bytes   largest request body (default ${DEFAULT_LIMITS.maxBodyBytes})
  --max-text-chars   longest question/solution/step/message in characters (default ${DEFAULT_LIMITS.maxTextChars})
  -h, --help

SIGINT/SIGTERM: stop accepting connections, finish in-flight requests (at most 30 s), exit; twice: exit now.

Endpoints: POST /v1/score, POST /v1/generate, GET /v1/models, GET /healthz, GET /metrics`;

/** Parsed command line of the server. */
export interface ServeFlags extends ModelFlags {
  port: number;
  host: string;
  token?: string;
  maxBatch: number;
  batchWaitMs: number;
  queueSize: number;
  maxBodyBytes: number;
  maxTextChars: number;
  help: boolean;
}

/** Parses the server's flags; errors name the flag. `env` supplies PRM_RL_TOKEN. */
export function parseServeArgs(args: string[], env: { PRM_RL_TOKEN?: string } = {}): ServeFlags {
  const names = ["policy", "prm", "orm", "port", "host", "token", "max-batch", "batch-wait-ms", "queue-size"];
  names.push("max-body-bytes", "max-text-chars");
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = Object.fromEntries(
    names.map((k) => [k, { type: "string" }]),
  );
  options.help = { type: "boolean", short: "h" };
  const v = parseArgs({ args, strict: true, allowPositionals: false, options }).values as Record<
    string,
    string | boolean | undefined
  >;
  const num = (name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER) => {
    const s = v[name];
    if (s === undefined) return fallback;
    const n = Number(s);
    if (typeof s !== "string" || !Number.isInteger(n) || n < min || n > max) {
      throw new Error(`Invalid --${name} "${s}": expected an integer in [${min}, ${max}]`);
    }
    return n;
  };
  const str = (name: string) => (typeof v[name] === "string" ? v[name] as string : undefined);
  return {
    policy: str("policy"),
    prm: str("prm"),
    orm: str("orm"),
    port: num("port", 8787, 0, 65535),
    host: str("host") ?? "127.0.0.1",
    token: str("token") ?? (env.PRM_RL_TOKEN || undefined),
    maxBatch: num("max-batch", 32, 1),
    batchWaitMs: num("batch-wait-ms", 5, 0, 10_000),
    queueSize: num("queue-size", 1024, 1),
    maxBodyBytes: num("max-body-bytes", DEFAULT_LIMITS.maxBodyBytes, 1),
    maxTextChars: num("max-text-chars", DEFAULT_LIMITS.maxTextChars, 1),
    help: v.help === true,
  };
}

async function main(): Promise<number> {
  let flags: ServeFlags;
  try {
    flags = parseServeArgs(Deno.args, { PRM_RL_TOKEN: Deno.env.get("PRM_RL_TOKEN") });
  } catch (e) {
    console.error(`serve: ${(e as Error).message} (see --help)`);
    return 2;
  }
  if (flags.help) return console.log(HELP), 0;
  const log = (msg: string) => console.log(`[serve] ${msg}`);
  const serving = await loadServing(flags, log);
  const scoring = createApp({
    scorer: serving.scorer,
    generator: serving.generator,
    token: flags.token,
    limits: { maxBodyBytes: flags.maxBodyBytes, maxTextChars: flags.maxTextChars },
    batching: { maxBatch: flags.maxBatch, waitMs: flags.batchWaitMs, queueSize: flags.queueSize },
  });
  // Handlers first, so a signal arriving right after "listening" is printed finds them; they run on a later
  // tick, after `server` below is initialised.
  let signals = 0;
  const stop = (sig: string) => {
    if (signals++ > 0) {
      console.error(`[serve] ${sig} again: exiting without waiting`);
      Deno.exit(130);
    }
    log(`${sig}: finishing ${scoring.metrics.inFlight} in-flight request(s), then exiting`);
    server.shutdown();
    const grace = setTimeout(() => {
      console.error(`[serve] connections still open after ${SHUTDOWN_GRACE_MS / 1000} s: exiting`);
      Deno.exit(1);
    }, SHUTDOWN_GRACE_MS);
    Deno.unrefTimer(grace);
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, () => stop(sig));
  const server = startServer(scoring, {
    host: flags.host,
    port: flags.port,
    onListen: (a) => {
      log(`listening on http://${a.hostname}:${a.port}${flags.token ? " (bearer token required)" : ""}`);
    },
  });
  await server.finished;
  await server.shutdown();
  serving.release();
  log("stopped");
  return 0;
}

if (import.meta.main) Deno.exit(await main());
