/**
 * The scoring server's HTTP application (hono), independent of any listening socket: `createApp(deps)` wires a
 * {@linkcode Scorer} (PRM + ORM) and optionally a policy {@linkcode Generator} behind dynamic batchers.
 *
 * Routes (JSON in and out, snake_case):
 * - `POST /v1/score`: one item `{question, solution | steps, gold_answer?, shaping?}` → `{steps, step_scores,
 *   orm_score, success, shaped_rewards}`, or `{items: [...]}` → `{results: [...]}`;
 * - `POST /v1/generate`: `{question | messages, max_new_tokens?, temperature?, top_k?, top_p?, seed?, n?,
 *   calculator?}` → `{samples: [{text, tokens, stopped}]}`, or `{items: [...]}` → `{results: [...]}` (501
 *   without a policy);
 * - `GET /v1/models`, `GET /healthz` (never needs the token), `GET /metrics` (Prometheus text).
 *
 * Errors are `{"error": {"code", "message", "field"?}}`: 400 bad JSON or UTF-8, 401 missing or wrong bearer
 * token, 404/405 unknown route or method, 413 body too large, 422 invalid field, 503 queue full (with
 * `Retry-After`), 500 model failure.
 *
 * @example
 * ```ts
 * const { app } = createApp({ scorer, token: "secret" });
 * const res = await app.request("/v1/score", {
 *   method: "POST",
 *   headers: { authorization: "Bearer secret" },
 *   body: JSON.stringify({ question: "2+3?", solution: "2+3=5\n#### 5", gold_answer: "5" }),
 * });
 * ```
 *
 * @module
 */
import { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type {
  GenerateItem,
  GenerateOutput,
  Generator,
  ModelInfo,
  ScoreItem,
  ScoreOutput,
  Scorer,
} from "../core/rm/types.ts";
import { Batcher, type BatcherOptions, QueueFullError } from "./batcher.ts";
import { Metrics } from "./metrics.ts";
import {
  DEFAULT_LIMITS,
  HttpError,
  type Limits,
  parseGenerateRequest,
  parseScoreRequest,
  readJson,
} from "./schema.ts";

/** What the app serves with. */
export interface AppDeps {
  /** PRM/ORM scorer behind `POST /v1/score`. */
  scorer: Scorer;
  /** Policy behind `POST /v1/generate` (absent: 501); its `models()` joins `GET /v1/models` when present. */
  generator?: Generator & { models?(): ModelInfo[] };
  /** Bearer token every route but `/healthz` requires (absent: no authentication). */
  token?: string;
  /** Request limits (defaults: {@linkcode DEFAULT_LIMITS}). */
  limits?: Partial<Limits>;
  /** Dynamic batching: most items per model call, wait window in ms, most items queued. */
  batching?: Omit<BatcherOptions, "onBatch">;
  /** Metrics registry (default: a new one). */
  metrics?: Metrics;
  /** Where 500 errors are logged (default `console.error`). */
  logError?: (msg: string, e: unknown) => void;
}

/** The app and its parts. */
export interface ScoringApp {
  /** The hono application: serve `app.fetch`, or call `app.request` in tests. */
  app: Hono;
  /** Its metrics registry. */
  metrics: Metrics;
  /** The batcher in front of the scorer. */
  scoreBatcher: Batcher<ScoreItem, ScoreOutput>;
  /** Marks the app draining (`/healthz` answers 503), refuses new model work and waits for queued work. */
  close(): Promise<void>;
}

const ROUTES = new Set(["/v1/score", "/v1/generate", "/v1/models", "/healthz", "/metrics"]);

const list = (xs: ArrayLike<number> | null) => (xs === null ? null : Array.from(xs));

/** ScoreOutput → wire JSON. */
function scoreJson(o: ScoreOutput) {
  return {
    steps: o.steps,
    step_scores: list(o.stepScores),
    orm_score: o.ormScore,
    success: o.success,
    shaped_rewards: list(o.shapedRewards),
  };
}

/** Constant-time string equality (length leaks, content does not). */
function safeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a), y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ (y[i % Math.max(1, y.length)] ?? 0);
  return diff === 0;
}

/**
 * Model errors that are the request's fault: inputs longer than the model's context (the message of the GPU
 * forward passes, `core/model/heads.ts` and `generate.ts`).
 */
const INPUT_TOO_LONG = /max_position_embeddings|context length/;

/**
 * Any thrown value → the HTTP error answered for it: model errors carrying a 4xx `status` keep it, inputs over
 * the context length are 422, other model errors 500 (and are logged).
 */
function toHttpError(e: unknown, log: (msg: string, e: unknown) => void): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof QueueFullError) {
    return new HttpError(503, "overloaded", e.message, { headers: { "retry-after": String(e.retryAfter) } });
  }
  const status = (e as { status?: unknown })?.status;
  const message = e instanceof Error ? e.message : String(e);
  if (typeof status === "number" && status >= 400 && status < 500) {
    return new HttpError(status, "invalid_request", message);
  }
  if (INPUT_TOO_LONG.test(message)) return new HttpError(422, "input_too_long", message);
  log("Request failed:", e);
  return new HttpError(500, "model_error", message);
}

/** Builds the app over `deps`; see the module doc for the routes. */
export function createApp(deps: AppDeps): ScoringApp {
  const limits: Limits = { ...DEFAULT_LIMITS, ...deps.limits };
  const metrics = deps.metrics ?? new Metrics();
  const { scorer, generator, token } = deps;
  const scoreBatcher = new Batcher((items: ScoreItem[]) => scorer.score(items), {
    ...deps.batching,
    onBatch: (n, s) => metrics.observeBatch("score", n, s),
  });
  const genBatcher = generator &&
    new Batcher((items: GenerateItem[]) => generator.generate(items), {
      ...deps.batching,
      onBatch: (n, s) => metrics.observeBatch("generate", n, s),
    });
  metrics.gauge('prm_server_queue_items{kind="score"}', () => scoreBatcher.queued);
  if (genBatcher) metrics.gauge('prm_server_queue_items{kind="generate"}', () => genBatcher.queued);
  let draining = false;

  const app = new Hono();
  app.onError((err, c) => {
    const e = toHttpError(err, deps.logError ?? console.error);
    const error = { code: e.code, message: e.message, ...(e.field !== undefined && { field: e.field }) };
    return c.json({ error }, e.status as ContentfulStatusCode, e.headers);
  });
  app.notFound((c) =>
    c.json({ error: { code: "not_found", message: `No route "${c.req.method} ${c.req.path}"` } }, 404)
  );

  app.use("*", async (c, next) => {
    const t0 = performance.now();
    metrics.inFlight++;
    try {
      await next();
    } finally {
      metrics.inFlight--;
      const route = ROUTES.has(c.req.path) ? c.req.path : "other";
      metrics.observeRequest(route, c.req.method, c.res.status, (performance.now() - t0) / 1000);
    }
  });
  app.use("*", async (c, next) => {
    if (
      token !== undefined && c.req.path !== "/healthz" &&
      !safeEqual(c.req.header("authorization") ?? "", `Bearer ${token}`)
    ) {
      throw new HttpError(
        401,
        "unauthorized",
        'Missing or wrong bearer token: send "Authorization: Bearer <token>"',
        {
          headers: { "www-authenticate": 'Bearer realm="prm-rl"' },
        },
      );
    }
    await next();
  });

  const run = async <I, O>(batcher: Batcher<I, O>, items: I[]): Promise<O[]> => {
    if (draining) throw new QueueFullError("The server is shutting down", 1);
    return await batcher.submit(items);
  };

  app.post("/v1/score", async (c) => {
    const { items, single } = parseScoreRequest(await readJson(c.req.raw, limits.maxBodyBytes), limits);
    const out = (await run(scoreBatcher, items)).map(scoreJson);
    return c.json(single ? out[0] : { results: out });
  });
  app.post("/v1/generate", async (c) => {
    if (!genBatcher) {
      throw new HttpError(
        501,
        "no_policy",
        "No policy model is loaded: start the server with --policy DIR_OR_HUB_ID",
      );
    }
    const { items, single } = parseGenerateRequest(await readJson(c.req.raw, limits.maxBodyBytes), limits);
    const out: GenerateOutput[] = await run(genBatcher, items);
    return c.json(single ? out[0] : { results: out });
  });
  app.get("/v1/models", (c) => c.json({ data: [...scorer.models(), ...(generator?.models?.() ?? [])] }));
  app.get("/healthz", (c) => c.json({ status: draining ? "draining" : "ok" }, draining ? 503 : 200));
  app.get(
    "/metrics",
    (c) => c.text(metrics.render(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }),
  );
  for (const path of ROUTES) {
    const allow = path.startsWith("/v1/") && path !== "/v1/models" ? "POST" : "GET";
    app.all(path, (c) => {
      throw new HttpError(405, "method_not_allowed", `Method ${c.req.method} is not allowed on "${path}"`, {
        headers: { allow },
      });
    });
  }

  return {
    app,
    metrics,
    scoreBatcher,
    async close() {
      draining = true;
      await Promise.all([scoreBatcher.close(), genBatcher?.close()]);
    },
  };
}
