// Tests for core/data/gsm8k.ts: the shared GSM8K JSONL files (../shared/data/gsm8k/), row validation errors,
// Parquet files written here with hyparquet-writer (test-only dependency), hub snapshot directories, and hub
// ids resolved through a mock Hugging Face hub (Deno.serve on 127.0.0.1, random port).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { parquetWriteBuffer } from "hyparquet-writer";
import { loadGsm8k, parseGsm8kJsonl } from "../core/data/gsm8k.ts";
import { generateProblems, toMathExample } from "../core/data/arithmetic.ts";

const GSM8K_DIR = new URL("../../shared/data/gsm8k", import.meta.url).pathname;

/** Rows of a shared split; fails naming the path when the shared data is missing. */
async function shared(split: "train" | "test") {
  const path = `${GSM8K_DIR}/${split}.jsonl`;
  try {
    await Deno.stat(path);
  } catch {
    throw new Error(`GSM8K not found at "${path}" (shared data missing)`);
  }
  return { path, rows: await loadGsm8k(path) };
}

/** A Parquet file with string columns `question` and `answer` (SNAPPY, as on the hub). */
function parquet(
  rows: { question: string; answer: string }[],
  opts: { rowGroupSize?: number } = {},
): Uint8Array {
  const buf = parquetWriteBuffer({
    columnData: [
      { name: "question", data: rows.map((r) => r.question), type: "STRING" },
      { name: "answer", data: rows.map((r) => r.answer), type: "STRING" },
    ],
    rowGroupSize: opts.rowGroupSize,
  });
  return new Uint8Array(buf);
}

Deno.test("gsm8k: shared JSONL splits load completely with exact final answers", async () => {
  for (const [split, count] of [["train", 7473], ["test", 1319]] as const) {
    const { path, rows } = await shared(split);
    assert.equal(rows.length, count);
    const raw = (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
    rows.forEach((r, i) => {
      assert.equal(r.question, raw[i].question);
      assert.equal(r.answer, raw[i].answer);
      // independent parse: the text after "#### ", commas removed
      const gold = raw[i].answer.split("#### ").at(-1).trim().replaceAll(",", "");
      assert.equal(r.finalAnswer, gold, `${split} line ${i + 1}`);
    });
    assert.deepEqual(await loadGsm8k(GSM8K_DIR, { split }), rows, "directory + split");
  }
  assert.equal((await loadGsm8k(GSM8K_DIR, { split: "test", limit: 5 })).length, 5);
});

Deno.test("gsm8k: bad rows are reported with file and line", () => {
  const ok = JSON.stringify({ question: "q", answer: "a\n#### 1,234" });
  assert.deepEqual(parseGsm8kJsonl(`${ok}\n\n${ok}\n`, "f.jsonl").map((r) => r.finalAnswer), [
    "1234",
    "1234",
  ]);
  const cases: [string, RegExp][] = [
    [`${ok}\n{"question": "q",`, /Cannot load GSM8K "f.jsonl": line 2: invalid JSON/],
    [`${ok}\n\n{"question": "q"}`, /Cannot load GSM8K "f.jsonl": line 3: field "answer" is missing/],
    [`{"question": 7, "answer": "#### 1"}`, /line 1: field "question" must be a string, got 7/],
    [`[1, 2]`, /line 1: expected an object with "question" and "answer", got \[1,2\]/],
    [`{"question": "q", "answer": "it is 4"}`, /line 1: field "answer" has no final "#### <number>" line/],
    [`{"question": "q", "answer": "#### four"}`, /line 1: field "answer" has no final "#### <number>" line/],
  ];
  for (const [text, re] of cases) assert.throws(() => parseGsm8kJsonl(text, "f.jsonl"), re);
});

Deno.test("gsm8k: Parquet files and hub snapshot directories", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gsm8k_test_" });
  try {
    const { rows } = await shared("test");
    const first = rows.slice(0, 300).map(({ question, answer }) => ({ question, answer }));
    await Deno.writeFile(`${dir}/t.parquet`, parquet(first, { rowGroupSize: 128 }));
    assert.deepEqual(
      await loadGsm8k(`${dir}/t.parquet`),
      rows.slice(0, 300),
      "same rows as the JSONL loader",
    );
    // snapshot layout: <config>/<split>-NNNNN-of-NNNNN.parquet, shards in name order
    await Deno.mkdir(`${dir}/snap/main`, { recursive: true });
    await Deno.writeFile(`${dir}/snap/main/test-00001-of-00002.parquet`, parquet(first.slice(100, 300)));
    await Deno.writeFile(`${dir}/snap/main/test-00000-of-00002.parquet`, parquet(first.slice(0, 100)));
    await Deno.writeFile(`${dir}/snap/main/train-00000-of-00001.parquet`, parquet(first.slice(0, 3)));
    assert.deepEqual(await loadGsm8k(`${dir}/snap`, { split: "test" }), rows.slice(0, 300));
    assert.equal((await loadGsm8k(`${dir}/snap`, { split: "test", limit: 120 })).length, 120);
    assert.equal((await loadGsm8k(`${dir}/snap`)).length, 3, "default split is train");
    // generated problems are GSM8K rows too
    const gen = generateProblems(20, { seed: 1 }).map(toMathExample);
    await Deno.writeTextFile(`${dir}/gen.jsonl`, gen.map((g) => JSON.stringify(g)).join("\n"));
    assert.deepEqual(await loadGsm8k(`${dir}/gen.jsonl`), gen);
    // errors
    const noAnswer = parquetWriteBuffer({ columnData: [{ name: "question", data: ["q"], type: "STRING" }] });
    await Deno.writeFile(`${dir}/bad.parquet`, new Uint8Array(noAnswer));
    await assert.rejects(loadGsm8k(`${dir}/bad.parquet`), /"[^"]*bad.parquet": column "answer" is missing/);
    await Deno.writeTextFile(`${dir}/junk.parquet`, "not parquet at all");
    await assert.rejects(loadGsm8k(`${dir}/junk.parquet`), /junk.parquet": not a valid Parquet file/);
    const wrong = parquet([{ question: "q", answer: "#### 1" }, { question: "q", answer: "none" }]);
    await Deno.writeFile(`${dir}/wrong.parquet`, wrong);
    await assert.rejects(
      loadGsm8k(`${dir}/wrong.parquet`),
      /wrong.parquet": row 1: field "answer" has no final/,
    );
    await assert.rejects(
      loadGsm8k(`${dir}/snap`, { split: "dev" }),
      /has no "dev.jsonl", "main\/dev-\*.parquet"/,
    );
    await assert.rejects(loadGsm8k(`${dir}/nope.jsonl`), /"[^"]*nope.jsonl": file not found/);
    await assert.rejects(loadGsm8k("./data/x"), /file not found \(and not a hub dataset id/);
    await assert.rejects(loadGsm8k(dir, { split: "../x" }), /invalid split "..\/x"/);
    await assert.rejects(loadGsm8k(dir, { limit: -1 }), /limit must be a non-negative integer, got -1/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gsm8k: hub ids resolve the <config>/<split>-*.parquet shards through the hub cache", async () => {
  const { rows } = await shared("train");
  const pick = (a: number, b: number) =>
    rows.slice(a, b).map(({ question, answer }) => ({ question, answer }));
  const files: Record<string, Uint8Array> = {
    "main/train-00000-of-00002.parquet": parquet(pick(0, 40)),
    "main/train-00001-of-00002.parquet": parquet(pick(40, 50)),
    "main/test-00000-of-00001.parquet": parquet(pick(50, 55)),
    "socratic/train-00000-of-00001.parquet": parquet(pick(60, 61)),
    "README.md": new TextEncoder().encode("# gsm8k"),
  };
  const sha = "0123456789abcdef0123456789abcdef01234567";
  const requests: string[] = [];
  const sha1 = (b: Uint8Array) => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    requests.push(path);
    if (path === "/api/datasets/openai/gsm8k/revision/main") {
      return Response.json({ sha, siblings: Object.keys(files).map((rfilename) => ({ rfilename })) });
    }
    const m = path.match(/^\/datasets\/openai\/gsm8k\/resolve\/([0-9a-f]{40})\/(.+)$/);
    const body = m && m[1] === sha ? files[m[2]] : undefined;
    if (!body) return new Response("Entry not found", { status: 404 });
    return new Response(body.slice(), { headers: { etag: `"${sha1(body)}"` } });
  });
  const cacheDir = await Deno.makeTempDir({ prefix: "gsm8k_hub_" });
  const hub = { endpoint: `http://127.0.0.1:${server.addr.port}`, cacheDir, progress: false, offline: false };
  try {
    assert.deepEqual(await loadGsm8k("openai/gsm8k", { hub }), rows.slice(0, 50));
    assert.deepEqual(await loadGsm8k("openai/gsm8k", { split: "test", hub }), rows.slice(50, 55));
    assert.deepEqual(await loadGsm8k("openai/gsm8k", { config: "socratic", hub }), rows.slice(60, 61));
    assert.ok(!requests.some((r) => r.endsWith("README.md")), "only the wanted shards are downloaded");
    assert.ok(
      (await Deno.lstat(
        `${cacheDir}/datasets--openai--gsm8k/snapshots/${sha}/main/train-00000-of-00002.parquet`,
      ))
        .isSymlink,
    );
    await assert.rejects(
      loadGsm8k("openai/gsm8k", { split: "dev", hub }),
      /no file matches "main\/dev-\*.parquet"/,
    );
    await assert.rejects(loadGsm8k("org/missing", { hub }), /dataset "org\/missing": not found \(404\)/);
    await server.shutdown();
    // offline: served from the cache
    assert.deepEqual(
      await loadGsm8k("openai/gsm8k", { split: "test", hub: { ...hub, offline: true } }),
      rows.slice(50, 55),
    );
  } finally {
    await server.shutdown().catch(() => {});
    await Deno.remove(cacheDir, { recursive: true });
  }
});
