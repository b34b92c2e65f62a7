/**
 * Scoring-server load test on loopback: a real listening server (`startServer`, 127.0.0.1, random port) with a
 * PRM + ORM, and 1, 8 and 64 concurrent clients, each sending `POST /v1/score` requests (one built-in arithmetic
 * problem with its step-by-step solution per request) back to back. Bounded: at most `requests` requests and
 * `maxSeconds` seconds per concurrency level.
 *
 * Reported per level: requests/s (completed requests over the level's wall time), p50 and p99 request latency
 * (client side, nearest rank), and the mean items per model call read from the server's `/metrics`
 * (`prm_server_batch_size_sum / _count`), which shows dynamic batching at work.
 *
 * Models: `prm`/`orm` directories or hub ids when given, else random-initialised tiny-preset ones built in memory
 * (the shape `deno task serve` falls back to).
 *
 * @example
 * ```ts
 * import { formatTable } from "./table.ts";
 * console.log(formatTable("server", await benchServer({ levels: [1, 8] })));
 * ```
 *
 * @module
 */
import { generateProblems } from "../core/data/arithmetic.ts";
import { buildTinyTokenizer, tinyPresetConfig } from "../core/data/tiny_tokenizer.ts";
import { Gpu } from "../core/gpu/device.ts";
import { randomModel } from "../core/model/model.ts";
import { createOrm } from "../core/rm/orm.ts";
import { createPrm } from "../core/rm/prm.ts";
import { rewardModel, RewardScorer } from "../core/rm/scorer.ts";
import { Tokenizer } from "../core/tokenizer/tokenizer.ts";
import { createApp } from "../server/app.ts";
import { startServer } from "../server/main.ts";
import { parsePrometheus, quantile } from "../server/metrics.ts";
import type { Row } from "./table.ts";

/** Options of {@linkcode benchServer}. */
export interface ServerBenchOptions {
  /** Device (default: a new one, destroyed at the end). */
  gpu?: Gpu;
  /** PRM directory or hub id (default: random-init tiny PRM in memory, with an ORM likewise). */
  prm?: string;
  /** ORM directory or hub id. */
  orm?: string;
  /** Concurrent clients per level (default [1, 8, 64]). */
  levels?: number[];
  /** Most requests per level (default 128 on a CPU adapter, 1024 on a GPU). */
  requests?: number;
  /** Most seconds per level (default 20). */
  maxSeconds?: number;
  /** Server batching (defaults: maxBatch 64, waitMs 5). */
  maxBatch?: number;
  waitMs?: number;
}

async function loadScorer(gpu: Gpu, opts: ServerBenchOptions): Promise<RewardScorer> {
  if (opts.prm || opts.orm) return await RewardScorer.load({ prm: opts.prm, orm: opts.orm, gpu });
  const files = buildTinyTokenizer();
  const tok = new Tokenizer(files.tokenizerJson, files.tokenizerConfig);
  const trunk = (seed: number) => randomModel(gpu, tinyPresetConfig(), { seed, std: 0.02 });
  return new RewardScorer({
    prm: rewardModel(createPrm(trunk(1), { seed: 1 }), tok, "random-init tiny PRM"),
    orm: rewardModel(createOrm(trunk(2), { seed: 2 }), tok, "random-init tiny ORM"),
  });
}

/** Runs the load test; one row per concurrency level. */
export async function benchServer(opts: ServerBenchOptions = {}): Promise<Row[]> {
  const gpu = opts.gpu ?? await Gpu.create();
  const scorer = await loadScorer(gpu, opts);
  const levels = opts.levels ?? [1, 8, 64];
  const maxRequests = opts.requests ?? (gpu.isCpu ? 128 : 1024);
  const maxMs = (opts.maxSeconds ?? 20) * 1000;
  const problems = generateProblems(256, { seed: "server-bench" });
  const bodies = problems.map((p) =>
    JSON.stringify({ question: p.question, solution: p.answer, gold_answer: String(p.finalAnswer) })
  );
  const rows: Row[] = [];
  try {
    for (const clients of levels) {
      const scoring = createApp({
        scorer,
        batching: { maxBatch: opts.maxBatch ?? 64, waitMs: opts.waitMs ?? 5, queueSize: 4096 },
      });
      const server = startServer(scoring, { host: "127.0.0.1", port: 0 });
      const post = async (i: number) => {
        const res = await fetch(`${server.url}/v1/score`, {
          method: "POST",
          body: bodies[i % bodies.length],
        });
        if (res.status !== 200) {
          throw new Error(`Server bench: request answered ${res.status}: ${await res.text()}`);
        }
        await res.json();
      };
      try {
        await post(0); // warm-up: pipelines compiled, buffers pooled
        const latencies: number[] = [];
        let issued = 0;
        const t0 = performance.now();
        const worker = async () => {
          while (issued < maxRequests && performance.now() - t0 < maxMs) {
            const i = issued++;
            const s = performance.now();
            await post(i);
            latencies.push(performance.now() - s);
          }
        };
        await Promise.all(Array.from({ length: clients }, worker));
        const seconds = (performance.now() - t0) / 1000;
        const m = parsePrometheus(await (await fetch(`${server.url}/metrics`)).text());
        const size = (k: string) => m.get(`prm_server_batch_size_${k}{kind="score"}`)!;
        rows.push({
          clients,
          requests: latencies.length,
          "req/s": latencies.length / seconds,
          "p50 ms": quantile(latencies, 0.5),
          "p99 ms": quantile(latencies, 0.99),
          "mean batch": (size("sum") - 1) / (size("count") - 1), // warm-up call excluded
        });
      } finally {
        await server.shutdown();
      }
    }
  } finally {
    scorer.release();
    if (!opts.gpu) gpu.destroy();
  }
  return rows;
}

if (import.meta.main) {
  const { formatTable } = await import("./table.ts");
  console.log(formatTable("scoring server (loopback, POST /v1/score)", await benchServer()));
}
