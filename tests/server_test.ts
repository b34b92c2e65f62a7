// The scoring server over real HTTP: a listening server on 127.0.0.1 (random port) with real tiny random-init
// models on the GPU. Every endpoint; 100 concurrent clients; malformed JSON, wrong types, missing fields, empty
// strings, 10 MB bodies, non-UTF-8 bytes, 100k-character solutions (each the right 4xx, and the server keeps
// serving); bearer token 401; queue-full 503 with Retry-After; graceful shutdown finishing an in-flight request;
// and server/main.ts as a process (--help, bad flags, SIGTERM).
import assert from "node:assert/strict";
import { tinyPresetConfig, writeTinyTokenizer } from "../core/data/tiny_tokenizer.ts";
import { Gpu } from "../core/gpu/device.ts";
import { randomModel, releaseModel, saveModel } from "../core/model/model.ts";
import { createOrm } from "../core/rm/orm.ts";
import { createPrm } from "../core/rm/prm.ts";
import type { ScoreItem, ScoreOutput, Scorer } from "../core/rm/types.ts";
import { type AppDeps, createApp } from "../server/app.ts";
import { parsePrometheus } from "../server/metrics.ts";
import { loadServing, type Serving } from "../server/models.ts";
import { type RunningServer, startServer } from "../server/main.ts";

const gpu = await Gpu.create();
const root = await Deno.makeTempDir({ prefix: "server_test_" });
await writeTinyTokenizer(`${root}/tok`);
// Random-init tiny policy, PRM and ORM (std 0.2 so that scores vary), saved as checkpoint directories.
for (const role of ["policy", "prm", "orm"] as const) {
  const trunk = randomModel(gpu, tinyPresetConfig(), { seed: role.length, std: 0.2 });
  const m = role === "policy"
    ? trunk
    : role === "prm"
    ? createPrm(trunk, { seed: 2, std: 0.5 })
    : createOrm(trunk, { seed: 3, std: 0.5 });
  await saveModel(m, `${root}/${role}`, { tokenizerDir: `${root}/tok` });
  releaseModel(m);
}
const serving: Serving = await loadServing(
  { policy: `${root}/policy`, prm: `${root}/prm`, orm: `${root}/orm` },
  () => {},
  { gpu },
);

/** The real scorer, with a gate to hold batches and a record of batch sizes. */
class Gated implements Scorer {
  calls: number[] = [];
  gate: Promise<void> | null = null;
  models = () => serving.scorer.models();
  async score(items: readonly ScoreItem[]): Promise<ScoreOutput[]> {
    this.calls.push(items.length);
    if (this.gate) await this.gate;
    return serving.scorer.score(items);
  }
}
const scorer = new Gated();

async function withServer(deps: Partial<AppDeps>, fn: (s: RunningServer) => Promise<void>) {
  scorer.calls = [];
  const server = startServer(createApp({ scorer, generator: serving.generator, ...deps }), { port: 0 });
  try {
    await fn(server);
  } finally {
    await server.shutdown();
  }
}

const QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?";
const SOLUTION = "Tom starts with 3 apples.\n3 + 4 = 7\n#### 7";
const json = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body),
});

Deno.test("every endpoint answers over HTTP", async () => {
  await withServer({}, async ({ url }) => {
    const health = await fetch(`${url}/healthz`);
    assert.deepEqual([health.status, await health.json()], [200, { status: "ok" }]);
    const models = (await (await fetch(`${url}/v1/models`)).json()).data;
    assert.deepEqual(models.map((m: { role: string }) => m.role).sort(), ["orm", "policy", "prm"]);
    const res = await fetch(
      `${url}/v1/score`,
      json({ question: QUESTION, solution: SOLUTION, gold_answer: "7" }),
    );
    assert.equal(res.status, 200);
    const out = await res.json();
    const [direct] = await serving.scorer.score([{
      question: QUESTION,
      solution: SOLUTION,
      goldAnswer: "7",
    }]);
    assert.deepEqual(out.steps, direct.steps);
    out.step_scores.forEach((s: number, i: number) => assert.ok(Math.abs(s - direct.stepScores![i]) < 1e-5));
    assert.ok(Math.abs(out.orm_score - direct.ormScore!) < 1e-5);
    assert.equal(out.success, 1);
    const gen = await fetch(
      `${url}/v1/generate`,
      json({ question: "What is 2 + 3?", max_new_tokens: 5, n: 2 }),
    );
    assert.equal(gen.status, 200);
    const { samples } = await gen.json();
    assert.equal(samples.length, 2);
    assert.equal(samples[0].text, samples[1].text, "greedy samples agree");
    assert.ok(samples[0].tokens >= 1 && samples[0].tokens <= 5);
    const metrics = await fetch(`${url}/metrics`);
    assert.equal(metrics.status, 200);
    const m = parsePrometheus(await metrics.text());
    assert.equal(m.get('prm_server_requests_total{route="/v1/score",method="POST",status="200"}'), 1);
  });
});

Deno.test("100 concurrent clients are all answered, in shared batches, with their own results", async () => {
  await withServer({ batching: { waitMs: 10, maxBatch: 32 } }, async ({ url }) => {
    const items = Array.from({ length: 100 }, (_, i) => ({
      question: `Sam has ${i} pens and gets ${i % 7} more. How many pens?`,
      solution: `${i} + ${i % 7} = ${i + (i % 7)}\n#### ${i + (i % 7)}`,
      gold_answer: String(i + (i % 7) + (i % 2)),
    }));
    const outs = await Promise.all(items.map(async (item) => {
      const r = await fetch(`${url}/v1/score`, json(item));
      assert.equal(r.status, 200);
      return r.json();
    }));
    outs.forEach((o, i) => assert.equal(o.success, i % 2 === 0 ? 1 : 0, `request ${i} got its own result`));
    const direct = await serving.scorer.score(
      items.map(({ question, solution, gold_answer }) => ({ question, solution, goldAnswer: gold_answer })),
    );
    outs.forEach((o, i) => {
      assert.ok(Math.abs(o.orm_score - direct[i].ormScore!) < 1e-5, `request ${i} orm_score`);
      o.step_scores.forEach((s: number, j: number) =>
        assert.ok(Math.abs(s - direct[i].stepScores![j]) < 1e-5, `request ${i} step ${j}: ${s}`)
      );
    });
    assert.equal(scorer.calls.reduce((a, b) => a + b, 0), 100);
    assert.ok(scorer.calls.length < 100 && Math.max(...scorer.calls) > 1, `batches ${scorer.calls}`);
    const m = parsePrometheus(await (await fetch(`${url}/metrics`)).text());
    assert.equal(m.get('prm_server_requests_total{route="/v1/score",method="POST",status="200"}'), 100);
    assert.ok(
      m.get('prm_server_batch_size_sum{kind="score"}')! /
          m.get('prm_server_batch_size_count{kind="score"}')! > 1,
    );
  });
});

Deno.test("bad requests get the right 4xx and the server keeps serving", async () => {
  await withServer({}, async ({ url }) => {
    const ok = { question: QUESTION, solution: SOLUTION };
    const raw = (body: BodyInit): RequestInit => ({ method: "POST", body });
    const huge = new Uint8Array(10 << 20).fill(0x20);
    const hugeStream = () => { // 10 MB in 1 MiB chunks, no Content-Length
      let sent = 0;
      return new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent++ === 10) return c.close();
          c.enqueue(new Uint8Array(1 << 20).fill(0x20));
        },
      });
    };
    const cases: [string, RequestInit, number, string | undefined][] = [
      ["malformed JSON", raw('{"question": '), 400, undefined],
      ["non-UTF-8 bytes", raw(new Uint8Array([0x7b, 0x7d, 0xc3, 0x28])), 400, undefined],
      ["wrong type", json({ ...ok, question: ["x"] }), 422, "question"],
      ["missing field", json({ solution: SOLUTION }), 422, "question"],
      ["empty string", json({ ...ok, solution: "" }), 422, "solution"],
      ["wrong type in batch", json({ items: [ok, { ...ok, steps: [1, 2] }] }), 422, "items[1].steps"],
      ["10 MB body (Content-Length)", raw(huge), 413, undefined],
      ["10 MB body (streamed)", { method: "POST", body: hugeStream() }, 413, undefined],
      ["100k-character solution", json({ ...ok, solution: "1 + 1 = 2\n".repeat(10_000) }), 422, "solution"],
      ["longer than the PRM's context", json({ ...ok, solution: "1 + 1 = 2\n".repeat(200) }), 422, undefined],
      ["generate: wrong type", json({ question: "hi", n: "3" }), 422, "n"],
    ];
    for (const [what, init, status, field] of cases) {
      const path = what.startsWith("generate") ? "/v1/generate" : "/v1/score";
      const res = await fetch(`${url}${path}`, init);
      const body = await res.json();
      assert.equal(res.status, status, `${what}: ${JSON.stringify(body)}`);
      assert.equal(body.error.field, field, `${what}: field`);
      const after = await fetch(`${url}/v1/score`, json(ok));
      assert.equal(after.status, 200, `serving after ${what}`);
      await after.body?.cancel();
    }
  });
});

Deno.test("bearer token: 401 without it, 200 with it", async () => {
  await withServer({ token: "tok-123" }, async ({ url }) => {
    const none = await fetch(`${url}/v1/score`, json({ question: QUESTION, solution: SOLUTION }));
    assert.equal(none.status, 401);
    assert.equal((await none.json()).error.code, "unauthorized");
    const wrong = await fetch(`${url}/v1/models`, { headers: { authorization: "Bearer tok-124" } });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    const good = await fetch(
      `${url}/v1/score`,
      json({ question: QUESTION, solution: SOLUTION }, { authorization: "Bearer tok-123" }),
    );
    assert.equal(good.status, 200);
    await good.body?.cancel();
    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
  });
});

Deno.test("queue full: 503 with Retry-After, then the queued requests complete", async () => {
  await withServer({ batching: { waitMs: 0, maxBatch: 2, queueSize: 4 } }, async ({ url }) => {
    let open!: () => void;
    scorer.gate = new Promise((r) => (open = r));
    const body = json({
      items: [{ question: QUESTION, solution: SOLUTION }, { question: QUESTION, steps: ["3 + 4 = 7"] }],
    });
    const running = fetch(`${url}/v1/score`, body);
    while (scorer.calls.length === 0) await new Promise((r) => setTimeout(r, 5));
    const queued = [fetch(`${url}/v1/score`, body), fetch(`${url}/v1/score`, body)];
    await new Promise((r) => setTimeout(r, 50));
    const refused = await fetch(`${url}/v1/score`, body);
    assert.equal(refused.status, 503);
    assert.match(refused.headers.get("retry-after") ?? "", /^[1-9]\d*$/);
    assert.equal((await refused.json()).error.code, "overloaded");
    scorer.gate = null;
    open();
    for (const r of await Promise.all([running, ...queued])) {
      assert.equal(r.status, 200);
      assert.equal((await r.json()).results.length, 2);
    }
  });
});

Deno.test("graceful shutdown finishes the in-flight request and then stops listening", async () => {
  scorer.calls = [];
  const server = startServer(createApp({ scorer, batching: { waitMs: 0 } }), { port: 0 });
  let open!: () => void;
  scorer.gate = new Promise((r) => (open = r));
  const inFlight = fetch(`${server.url}/v1/score`, json({ question: QUESTION, solution: SOLUTION }));
  while (scorer.calls.length === 0) await new Promise((r) => setTimeout(r, 5));
  let stopped = false;
  const shutdown = server.shutdown().then(() => (stopped = true));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(stopped, false, "shutdown waits for the in-flight request");
  scorer.gate = null;
  open();
  const res = await inFlight;
  assert.equal(res.status, 200);
  assert.equal((await res.json()).steps.length, 3);
  await shutdown;
  await assert.rejects(fetch(`${server.url}/healthz`), "no longer listening");
});

const MAIN = new URL("../server/main.ts", import.meta.url).pathname;
const serveCmd = (args: string[], cwd?: string) =>
  new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    cwd,
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", NO_COLOR: "1", PRM_RL_TOKEN: "" },
    stdout: "piped",
    stderr: "piped",
  });

/** Spawns server/main.ts and waits for its "listening on" line; `rest()` reads the log to the end. */
async function spawnServer(args: string[], cwd?: string) {
  const proc = serveCmd(args, cwd).spawn();
  const lines = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = new Response(proc.stderr).text();
  let log = "";
  while (!/listening on (http:\S+)/.test(log)) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`server/main.ts exited before listening: ${log}${await stderr}`);
    log += value;
  }
  const url = log.match(/listening on (http:\S+)/)![1];
  const rest = async () => {
    for (let r = await lines.read(); !r.done; r = await lines.read()) log += r.value;
    return { code: (await proc.status).code, log, stderr: await stderr };
  };
  return { proc, url, log, rest };
}

Deno.test("server/main.ts: --help, bad flags exit 2, SIGTERM finishes an in-flight request", async () => {
  const help = await serveCmd(["--help"]).output();
  assert.equal(help.code, 0);
  const text = new TextDecoder().decode(help.stdout);
  const flags = [
    "--policy",
    "--prm",
    "--orm",
    "--port",
    "--host",
    "--token",
    "--max-batch",
    "--batch-wait-ms",
  ];
  for (const flag of [...flags, "--queue-size", "--max-body-bytes"]) assert.ok(text.includes(flag), flag);
  const bad = await serveCmd(["--port", "x"]).output();
  assert.equal(bad.code, 2);
  assert.match(new TextDecoder().decode(bad.stderr), /--port "x"/);
  const unknown = await serveCmd(["--bogus"]).output();
  assert.equal(unknown.code, 2);
  assert.match(new TextDecoder().decode(unknown.stderr), /--bogus/);
  const models = ["--policy", `${root}/policy`, "--prm", `${root}/prm`, "--orm", `${root}/orm`];
  const { proc, url, rest } = await spawnServer([...models, "--port", "0", "--token", "t"]);
  const auth = { authorization: "Bearer t" };
  const first = await fetch(`${url}/v1/score`, json({ question: QUESTION, solution: SOLUTION }));
  assert.equal(first.status, 401, "--token enforced");
  await first.body?.cancel();
  const items = Array.from(
    { length: 64 },
    (_, i) => ({ question: `${QUESTION} (${i})`, solution: SOLUTION }),
  );
  let settled = false;
  const inFlight = fetch(`${url}/v1/score`, json({ items }, auth)).finally(() => (settled = true));
  // Wait until the server is handling it (in-flight gauge: this scrape + the scoring request).
  for (;;) {
    const m = parsePrometheus(await (await fetch(`${url}/metrics`, { headers: auth })).text());
    if (m.get("prm_server_in_flight_requests")! >= 2) break;
    assert.ok(!settled, "the scoring request finished before SIGTERM could be sent");
  }
  proc.kill("SIGTERM");
  const res = await inFlight;
  assert.equal(res.status, 200);
  assert.equal((await res.json()).results.length, 64);
  await assert.rejects(fetch(`${url}/healthz`), "stopped listening");
  const { code, log } = await rest();
  assert.equal(code, 0, log);
  assert.match(log, /SIGTERM: finishing 1 in-flight request/);
  assert.match(log, /stopped/);
});

Deno.test("server/main.ts with no model flags serves the shipped tiny models", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "server_default_" });
  try {
    const { proc, url, log, rest } = await spawnServer(["--port", "0"], cwd);
    for (const role of ["policy", "prm", "orm"]) {
      assert.match(
        log,
        new RegExp(
          `${role}: "runs/\\S+" not found; the shipped trained tiny model from "\\S+core/assets/tiny/`,
        ),
      );
    }
    const models = (await (await fetch(`${url}/v1/models`)).json()).data;
    assert.deepEqual(
      models.map((m: { source: string }) => m.source.replace(/.*core\/assets\//, "")),
      ["tiny/prm", "tiny/orm", "tiny/sft"],
    );
    const res = await fetch(`${url}/v1/score`, json({ question: QUESTION, solution: SOLUTION }));
    assert.equal(res.status, 200);
    assert.equal((await res.json()).step_scores.length, 3);
    proc.kill("SIGTERM");
    assert.equal((await rest()).code, 0);
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("with no model flags: runs/ models first, then the shipped ones, then random stand-ins", async () => {
  const lines: string[] = [];
  const missing = `${root}/absent`;
  const s = await loadServing({}, (l) => lines.push(l), {
    gpu,
    builtin: { policy: `${root}/policy`, prm: missing, orm: missing },
    shipped: { policy: missing, prm: `${root}/prm`, orm: missing },
    defaultDir: `${root}/fallback`,
  });
  try {
    const src = Object.fromEntries(s.models().map((m) => [m.role, m.source]));
    assert.equal(src.policy, `${root}/policy`);
    assert.equal(src.prm, `${root}/prm`);
    assert.equal(src.orm, `${root}/fallback/orm`);
    assert.match(lines.join("\n"), /prm: ".*absent" not found; the shipped trained tiny model from/);
    assert.match(lines.join("\n"), /orm: ".*absent" not found; built a random-initialised tiny model/);
  } finally {
    s.release();
  }
  // A second start reuses the stand-in it built.
  const again: string[] = [];
  const s2 = await loadServing({}, (l) => again.push(l), {
    gpu,
    builtin: { policy: `${root}/policy`, prm: missing, orm: missing },
    shipped: { policy: missing, prm: `${root}/prm`, orm: missing },
    defaultDir: `${root}/fallback`,
  });
  s2.release();
  assert.match(again.join("\n"), /orm: .* using a random-initialised tiny model from ".*fallback\/orm"/);
});

Deno.test("release test models", async () => {
  serving.release();
  gpu.destroy();
  await Deno.remove(root, { recursive: true });
});
