// The scoring server's app in process (hono `app.request`): routes, validation with field-named errors, body
// limits, auth, dynamic batching, queue-full 503, metrics, generation. Models are real tiny random-initialised
// Qwen2 models on the GPU: the policy generates through PolicyGenerator, and scores come from the real
// RewardScorer over a PRM and an ORM (tiny-preset trunks with fresh one-logit heads).
import assert from "node:assert/strict";
import fc from "fast-check";
import { tinyPresetConfig, writeTinyTokenizer } from "../core/data/tiny_tokenizer.ts";
import { Gpu } from "../core/gpu/device.ts";
import { generate } from "../core/model/generate.ts";
import { randomModel } from "../core/model/model.ts";
import { shapeStepRewards } from "../core/rewards/shaping.ts";
import { createOrm } from "../core/rm/orm.ts";
import { createPrm } from "../core/rm/prm.ts";
import { rewardModel, RewardScorer } from "../core/rm/scorer.ts";
import type { ModelInfo, ScoreItem, ScoreOutput, Scorer } from "../core/rm/types.ts";
import { applyChatTemplate } from "../core/tokenizer/chat_template.ts";
import { loadTokenizer } from "../core/tokenizer/tokenizer.ts";
import { type AppDeps, createApp } from "../server/app.ts";
import { Batcher, QueueFullError } from "../server/batcher.ts";
import { PolicyGenerator } from "../server/generator.ts";
import { parsePrometheus, quantile } from "../server/metrics.ts";

const gpu = await Gpu.create();
const dir = await Deno.makeTempDir({ prefix: "server_app_test_" });
await writeTinyTokenizer(dir);
const tok = await loadTokenizer(dir);
const trunk = (seed: number) => randomModel(gpu, tinyPresetConfig(), { seed, std: 0.2 });
const rewards = new RewardScorer({
  prm: rewardModel(createPrm(trunk(11), { seed: 1, std: 0.5 }), tok, "test-prm"),
  orm: rewardModel(createOrm(trunk(13), { seed: 2, std: 0.5 }), tok, "test-orm"),
});
const policyModel = trunk(12);
const policy = new PolicyGenerator(policyModel, tok, { source: "test-policy" });

/** The real scorer, recording each call's batch size, with a gate that holds calls while set. */
class Recording implements Scorer {
  calls: number[] = [];
  gate: Promise<void> | null = null;
  models = () => rewards.models();
  async score(items: readonly ScoreItem[]): Promise<ScoreOutput[]> {
    this.calls.push(items.length);
    if (this.gate) await this.gate;
    return rewards.score(items);
  }
}
const scorer = new Recording();

const QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?";
const SOLUTION = "Tom starts with 3 apples.\n3 + 4 = 7\n#### 7";

function appWith(extra: Partial<AppDeps> = {}) {
  scorer.calls = [];
  return createApp({ scorer, generator: policy, batching: { waitMs: 2 }, ...extra });
}

function post(body: unknown, headers: Record<string, string> = {}): RequestInit {
  return {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" || body instanceof Uint8Array ? body as BodyInit : JSON.stringify(body),
  };
}

function assertNear(got: number[], want: number[], what: string, atol = 1e-5) {
  assert.equal(got.length, want.length, `${what}: length`);
  got.forEach((g, i) => assert.ok(Math.abs(g - want[i]) <= atol, `${what}[${i}]: got ${g}, want ${want[i]}`));
}

Deno.test("POST /v1/score returns per-step and ORM scores, success and shaped rewards of the real scorer", async () => {
  const { app, close } = appWith();
  const res = await app.request(
    "/v1/score",
    post({
      question: QUESTION,
      solution: SOLUTION,
      gold_answer: "#### 7",
      shaping: { kind: "clip", eta: 0.2 },
    }),
  );
  assert.equal(res.status, 200);
  const out = await res.json();
  assert.deepEqual(Object.keys(out).sort(), [
    "orm_score",
    "shaped_rewards",
    "step_scores",
    "steps",
    "success",
  ]);
  const [ref] = await scorer.score([{ question: QUESTION, solution: SOLUTION }]);
  assert.deepEqual(out.steps, ["Tom starts with 3 apples.", "3 + 4 = 7", "#### 7"]);
  assertNear(out.step_scores, ref.stepScores!, "step_scores");
  assert.ok(Math.abs(out.orm_score - ref.ormScore!) < 1e-5);
  assert.equal(out.success, 1);
  assertNear(
    out.shaped_rewards,
    Array.from(shapeStepRewards(ref.stepScores!, { kind: "clip", eta: 0.2 })),
    "clip",
  );
  for (const s of out.step_scores) assert.ok(s > 0 && s < 1, `step score ${s} in (0, 1)`);
  // steps[] given directly score like the solution they come from; a wrong answer gets success 0
  const res2 = await app.request(
    "/v1/score",
    post({
      items: [
        { question: QUESTION, steps: out.steps, gold_answer: "8", shaping: { kind: "delta" } },
        { question: QUESTION, solution: SOLUTION },
      ],
    }),
  );
  assert.equal(res2.status, 200);
  const { results } = await res2.json();
  assert.equal(results.length, 2);
  assertNear(results[0].step_scores, out.step_scores, "steps[] item");
  assert.equal(results[0].success, 0);
  assertNear(
    results[0].shaped_rewards,
    Array.from(shapeStepRewards(ref.stepScores!, { kind: "delta" })),
    "delta",
  );
  assert.equal(results[1].success, null);
  assertNear(results[1].shaped_rewards, results[1].step_scores, "no shaping = raw scores");
  await close();
});

Deno.test("concurrent requests are coalesced into shared scorer calls with unchanged results", async () => {
  const { app, close, metrics } = appWith({ batching: { waitMs: 40, maxBatch: 4 } });
  const items = Array.from({ length: 6 }, (_, i) => ({
    question: `What is ${i} + ${i + 2}?`,
    solution: `${i} + ${i + 2} = ${2 * i + 2}\nSo the answer is ${2 * i + 2}.\n#### ${2 * i + 2}`,
  }));
  const alone = [];
  for (const item of items) alone.push((await scorer.score([item]))[0]);
  scorer.calls = [];
  const responses = await Promise.all(items.map((item) => app.request("/v1/score", post(item))));
  assert.deepEqual(scorer.calls, [4, 2], "6 concurrent requests → batches of maxBatch 4, then 2");
  for (const [i, r] of responses.entries()) {
    assert.equal(r.status, 200);
    const out = await r.json();
    assertNear(out.step_scores, alone[i].stepScores!, `request ${i} step_scores`);
  }
  const m = parsePrometheus(await (await app.request("/metrics")).text());
  assert.equal(m.get('prm_server_batch_size_count{kind="score"}'), 2);
  assert.equal(m.get('prm_server_batch_size_sum{kind="score"}'), 6);
  assert.equal(metrics.meanBatchSize("score"), 3);
  await close();
});

Deno.test("malformed bodies get 400/413/422 naming the field, and the app keeps serving", async () => {
  const { app, close } = appWith({ limits: { maxBodyBytes: 4096 } });
  const ok = { question: QUESTION, solution: SOLUTION };
  const cases: [string, RequestInit, number, string | undefined][] = [
    ["malformed JSON", post('{"question": "x", '), 400, undefined],
    ["empty body", post(""), 400, undefined],
    ["non-UTF-8 bytes", post(new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])), 400, undefined],
    ["array body", post([ok]), 422, "body"],
    ["missing question", post({ solution: SOLUTION }), 422, "question"],
    ["empty question", post({ ...ok, question: "" }), 422, "question"],
    ["blank solution", post({ question: QUESTION, solution: "  \n " }), 422, "solution"],
    ["number question", post({ ...ok, question: 7 }), 422, "question"],
    ["neither solution nor steps", post({ question: QUESTION }), 422, "solution"],
    ["both solution and steps", post({ ...ok, steps: ["a"] }), 422, "steps"],
    ["steps not an array", post({ question: QUESTION, steps: "a\nb" }), 422, "steps"],
    ["empty steps", post({ question: QUESTION, steps: [] }), 422, "steps"],
    ["empty step", post({ question: QUESTION, steps: ["a", ""] }), 422, "steps[1]"],
    ["camelCase field", post({ ...ok, goldAnswer: "7" }), 422, "goldAnswer"],
    ["bad shaping kind", post({ ...ok, shaping: { kind: "square" } }), 422, "shaping.kind"],
    ["clip without eta", post({ ...ok, shaping: { kind: "clip" } }), 422, "shaping.eta"],
    ["eta out of range", post({ ...ok, shaping: { kind: "clip", eta: 2 } }), 422, "shaping.eta"],
    ["empty items", post({ items: [] }), 422, "items"],
    ["bad item in batch", post({ items: [ok, { ...ok, gold_answer: 7 }] }), 422, "items[1].gold_answer"],
    ["declared too large", post({ ...ok, question: "x".repeat(5000) }), 413, undefined],
  ];
  for (const [what, init, status, field] of cases) {
    const res = await app.request("/v1/score", init);
    const body = await res.json();
    assert.equal(res.status, status, `${what}: ${JSON.stringify(body)}`);
    assert.equal(typeof body.error.message, "string", what);
    assert.equal(body.error.field, field, `${what}: field`);
  }
  // A streamed body without Content-Length is counted while read.
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < 10; i++) c.enqueue(new Uint8Array(1000).fill(0x20));
      c.close();
    },
  });
  const streamed = await app.request("/v1/score", { method: "POST", body: stream });
  assert.equal(streamed.status, 413);
  const after = await app.request("/v1/score", post(ok));
  assert.equal(after.status, 200, "still serving");
  await close();
});

Deno.test("random JSON bodies never cause a 5xx (fast-check)", async () => {
  const { app, close } = appWith();
  const field = fc.oneof(fc.string(), fc.integer(), fc.constant(null), fc.array(fc.string()), fc.boolean());
  const body = fc.oneof(
    fc.jsonValue(),
    fc.record(
      { question: field, solution: field, steps: field, gold_answer: field, shaping: fc.jsonValue() },
      {
        requiredKeys: [],
      },
    ),
    fc.record({ items: fc.oneof(fc.jsonValue(), fc.array(fc.record({ question: field, steps: field }))) }),
  );
  await fc.assert(
    fc.asyncProperty(body, async (b) => {
      const res = await app.request("/v1/score", post(b));
      await res.body?.cancel();
      return res.status === 200 || res.status === 400 || res.status === 422;
    }),
    { seed: 2024, numRuns: 150 },
  );
  await close();
});

Deno.test("100,000-character solutions are refused by the documented limit, or by the scorer's context", async () => {
  const long = Array.from({ length: 5000 }, (_, i) => `${i} + 1 = ${i + 1}`).join("\n").slice(0, 100_000);
  const { app, close } = appWith();
  const res = await app.request(
    "/v1/score",
    post({ question: QUESTION, solution: long.padEnd(100_000, "x") }),
  );
  assert.equal(res.status, 422);
  const err = (await res.json()).error;
  assert.equal(err.field, "solution");
  assert.match(err.message, /100000 characters, more than the limit of 32768/);
  await close();
  // With the limit raised, the scorer refuses the over-long sequence; its batch-mates are still scored.
  const big = appWith({ limits: { maxTextChars: 200_000, maxBodyBytes: 1 << 20 }, batching: { waitMs: 30 } });
  const [tooLong, fine] = await Promise.all([
    big.app.request("/v1/score", post({ question: QUESTION, solution: long })),
    big.app.request("/v1/score", post({ question: QUESTION, solution: SOLUTION })),
  ]);
  assert.equal(tooLong.status, 422);
  assert.match((await tooLong.json()).error.message, /more than max_position_embeddings 512/);
  assert.equal(fine.status, 200);
  assert.deepEqual(scorer.calls.slice(0, 1), [2], "both were batched together first");
  await big.close();
});

Deno.test("bearer token: 401 without or with a wrong one, /healthz stays open", async () => {
  const { app, close } = appWith({ token: "s3cret" });
  const body = { question: QUESTION, solution: SOLUTION };
  const attempts: Record<string, string>[] = [{}, { authorization: "Bearer nope" }, {
    authorization: "s3cret",
  }];
  for (const headers of attempts) {
    const res = await app.request("/v1/score", post(body, headers));
    assert.equal(res.status, 401);
    assert.match(res.headers.get("www-authenticate")!, /^Bearer/);
    assert.equal((await res.json()).error.code, "unauthorized");
  }
  assert.equal((await app.request("/v1/models")).status, 401);
  assert.equal((await app.request("/metrics")).status, 401);
  assert.equal((await app.request("/healthz")).status, 200);
  const res = await app.request("/v1/score", post(body, { authorization: "Bearer s3cret" }));
  assert.equal(res.status, 200);
  await res.body?.cancel();
  await close();
});

Deno.test("a full queue answers 503 with Retry-After, then recovers", async () => {
  const { app, close } = appWith({ batching: { waitMs: 0, maxBatch: 1, queueSize: 2 } });
  let open!: () => void;
  scorer.gate = new Promise((r) => (open = r));
  const body = { question: QUESTION, solution: SOLUTION };
  const first = app.request("/v1/score", post(body)); // runs (held at the gate)
  await new Promise((r) => setTimeout(r, 20));
  const queued = [app.request("/v1/score", post(body)), app.request("/v1/score", post(body))];
  await new Promise((r) => setTimeout(r, 20));
  const refused = await app.request("/v1/score", post(body));
  assert.equal(refused.status, 503);
  assert.ok(Number(refused.headers.get("retry-after")) >= 1, "Retry-After in whole seconds");
  assert.equal((await refused.json()).error.code, "overloaded");
  scorer.gate = null;
  open();
  for (const r of [await first, ...(await Promise.all(queued))]) {
    assert.equal(r.status, 200), await r.body?.cancel();
  }
  const again = await app.request("/v1/score", post(body));
  assert.equal(again.status, 200);
  await again.body?.cancel();
  await close();
});

Deno.test("scorer failures are 500 for their own request only; unknown routes 404, wrong methods 405", async () => {
  const failing: Scorer = {
    models: () => scorer.models(),
    score: (items) =>
      items.some((i) => i.question.includes("boom"))
        ? Promise.reject(new Error("GPU lost"))
        : scorer.score(items),
  };
  const logged: unknown[] = [];
  const { app, close } = createApp({
    scorer: failing,
    batching: { waitMs: 30 },
    logError: (_msg, e) => logged.push(e),
  });
  const [bad, good] = await Promise.all([
    app.request("/v1/score", post({ question: "boom", solution: SOLUTION })),
    app.request("/v1/score", post({ question: QUESTION, solution: SOLUTION })),
  ]);
  assert.equal(bad.status, 500);
  assert.deepEqual((await bad.json()).error, { code: "model_error", message: "GPU lost" });
  assert.deepEqual(logged.map((e) => (e as Error).message), ["GPU lost"], "the 500 is logged once");
  assert.equal(good.status, 200);
  await good.body?.cancel();
  assert.equal((await app.request("/v2/nothing")).status, 404);
  const wrong = await app.request("/v1/score");
  assert.equal(wrong.status, 405);
  assert.equal(wrong.headers.get("allow"), "POST");
  assert.equal((await app.request("/v1/generate", post({ question: "hi" }))).status, 501, "no policy: 501");
  await close();
});

Deno.test("GET /v1/models, /healthz and /metrics", async () => {
  const { app, close } = appWith();
  const models = await (await app.request("/v1/models")).json();
  assert.deepEqual(models.data.map((m: ModelInfo) => m.role), ["prm", "orm", "policy"]);
  assert.equal(models.data[2].parameters, 361_600);
  assert.deepEqual(await (await app.request("/healthz")).json(), { status: "ok" });
  await app.request("/v1/score", post({ question: "" }));
  await app.request("/v1/score", post({ question: QUESTION, solution: SOLUTION }));
  const res = await app.request("/metrics");
  assert.match(res.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  assert.match(text, /# TYPE prm_server_request_seconds histogram/);
  const m = parsePrometheus(text);
  assert.equal(m.get('prm_server_requests_total{route="/v1/score",method="POST",status="422"}'), 1);
  assert.equal(m.get('prm_server_requests_total{route="/v1/score",method="POST",status="200"}'), 1);
  assert.equal(m.get('prm_server_request_seconds_count{route="/v1/score"}'), 2);
  assert.equal(m.get('prm_server_request_seconds_bucket{route="/v1/score",le="+Inf"}'), 2);
  assert.ok(m.get('prm_server_request_latency_seconds{route="/v1/score",quantile="0.99"}')! > 0);
  assert.equal(m.get('prm_server_queue_items{kind="score"}'), 0);
  const closing = close();
  assert.equal((await app.request("/healthz")).status, 503, "draining");
  await closing;
});

Deno.test("POST /v1/generate samples from the policy exactly as generate() does", async () => {
  const { app, close } = appWith({ batching: { waitMs: 30 } });
  const q = "What is 2 + 3?";
  const [a, b] = await Promise.all([
    app.request("/v1/generate", post({ question: q, max_new_tokens: 6, temperature: 1, seed: 5, n: 3 })),
    app.request(
      "/v1/generate",
      post({ items: [{ messages: [{ role: "user", content: q }], max_new_tokens: 4 }] }),
    ),
  ]);
  assert.equal(a.status, 200);
  assert.equal(b.status, 200);
  const sampled = await a.json(), greedy = (await b.json()).results[0];
  const prompt = tok.encode(
    applyChatTemplate(tok, [{ role: "user", content: q }], { addGenerationPrompt: true }),
    {
      addSpecialTokens: false,
    },
  );
  const want = await generate(policyModel, [prompt, prompt, prompt], {
    maxNewTokens: 6,
    temperature: 1,
    seed: 5,
    sequenceSeeds: [0, 1, 2],
    stopIds: [2],
  });
  assert.equal(sampled.samples.length, 3);
  sampled.samples.forEach((s: { text: string; tokens: number; stopped: boolean }, i: number) => {
    assert.equal(s.text, tok.decode(want.tokens[i], { skipSpecialTokens: true }), `sample ${i}`);
    assert.equal(s.tokens, want.tokens[i].length);
    assert.equal(s.stopped, want.stopped[i]);
  });
  const g = await generate(policyModel, [prompt], { maxNewTokens: 4, stopIds: [2] });
  assert.equal(greedy.samples[0].text, tok.decode(g.tokens[0], { skipSpecialTokens: true }));
  const tooLong = await app.request(
    "/v1/generate",
    post({ question: "7 ".repeat(300), max_new_tokens: 400 }),
  );
  assert.equal(tooLong.status, 422);
  assert.match((await tooLong.json()).error.message, /exceeds the context length 512/);
  const bad = await app.request("/v1/generate", post({ question: q, top_p: 0 }));
  assert.equal((await bad.json()).error.field, "top_p");
  await close();
});

Deno.test("Batcher: coalescing, whole requests up to maxBatch, failure isolation, queue bound, drain", async () => {
  const seen: number[][] = [];
  let gate: Promise<void> = Promise.resolve();
  const square = async (xs: number[]) => {
    seen.push(xs);
    await gate;
    if (xs.some((x) => x < 0)) throw new Error(`negative in ${xs}`);
    return xs.map((x) => x * x);
  };
  const b = new Batcher(square, { maxBatch: 4, waitMs: 20, queueSize: 6 });
  const outs = await Promise.all([b.submit([1, 2]), b.submit([3]), b.submit([4, 5]), b.submit([6])]);
  assert.deepEqual(outs, [[1, 4], [9], [16, 25], [36]]);
  assert.deepEqual(seen, [[1, 2, 3], [4, 5, 6]], "whole requests, at most 4 items");
  seen.length = 0;
  const results = await Promise.allSettled([b.submit([7]), b.submit([-1]), b.submit([8])]);
  assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
  assert.deepEqual(seen, [[7, -1, 8], [7], [-1], [8]], "failed batch retried request by request");
  let open!: () => void;
  gate = new Promise((r) => (open = r));
  const running = b.submit([1, 2, 3, 4]); // starts at once (a full batch) and waits at the gate
  const held = Array.from({ length: 6 }, (_, i) => b.submit([i]));
  assert.equal(b.queued, 6);
  assert.throws(() => b.submit([9]), (e) => e instanceof QueueFullError && e.retryAfter >= 1);
  const closing = b.close();
  assert.throws(() => b.submit([1]), QueueFullError, "closed");
  open();
  await closing;
  assert.deepEqual(await running, [1, 4, 9, 16]);
  assert.deepEqual(await Promise.all(held), [[0], [1], [4], [9], [16], [25]], "queued work drained on close");
  assert.equal(quantile([5, 1, 3, 2, 4], 0.5), 3);
  assert.equal(quantile([5, 1, 3, 2, 4], 0.99), 5);
});

Deno.test({
  name: "release test models",
  fn() {
    policy.release();
    rewards.release();
    gpu.destroy();
    return Deno.remove(dir, { recursive: true });
  },
});
