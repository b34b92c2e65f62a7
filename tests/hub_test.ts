// Tests for core/model/hub.ts against a mock Hugging Face hub served by Deno.serve on 127.0.0.1 (random port),
// plus core/util/progress.ts formatting.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { globToRegExp, hubCacheDir, resolveDataset, resolveModel } from "../core/model/hub.ts";
import { SafetensorsCheckpoint, writeSafetensors } from "../core/model/checkpoint.ts";
import { formatBytes, formatDuration, ProgressBar } from "../core/util/progress.ts";

const SHA = "0123456789abcdef0123456789abcdef01234567";
const DS_SHA = "fedcba9876543210fedcba9876543210fedcba98";

interface MockFile {
  body: Uint8Array<ArrayBuffer>;
  lfs: boolean;
}
interface Logged {
  method: string;
  path: string;
  auth: string | null;
}

/** A mock hub: API revision endpoint, resolve endpoint (LFS files redirect to /cdn/<sha256>), datasets. */
class MockHub {
  server: Deno.HttpServer<Deno.NetAddr>;
  log: Logged[] = [];
  /** When set, the CDN sends this many bytes then ends the body early ("close") or resets the stream ("error"). */
  cutAfter: number | null = null;
  cutMode: "close" | "error" = "close";
  /** When true, the CDN serves different bytes than the ETag promises. */
  corrupt = false;
  requireToken: string | null = null;
  repos = new Map<string, { sha: string; files: Record<string, MockFile> }>();

  constructor() {
    this.server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => this.handle(req),
    );
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.server.addr.port}`;
  }

  handle(req: Request): Response {
    const url = new URL(req.url);
    const path = decodeURIComponent(url.pathname);
    this.log.push({ method: req.method, path, auth: req.headers.get("authorization") });
    if (
      this.requireToken && !path.startsWith("/cdn/") &&
      req.headers.get("authorization") !== `Bearer ${this.requireToken}`
    ) {
      return new Response("Invalid username or password.", { status: 401 });
    }
    let m = path.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/revision\/(.+)$/);
    if (m) {
      const repo = this.repos.get(`${m[1]}:${m[2]}`);
      if (!repo || m[3] !== "main" && m[3] !== repo.sha) {
        return new Response("Repository not found", { status: 404 });
      }
      return Response.json({
        id: m[2],
        sha: repo.sha,
        siblings: Object.keys(repo.files).map((rfilename) => ({ rfilename })),
      });
    }
    m = path.match(/^\/(datasets\/)?([^/]+\/[^/]+)\/resolve\/([0-9a-f]{40})\/(.+)$/);
    if (m) {
      const repo = this.repos.get(`${m[1] ? "datasets" : "models"}:${m[2]}`);
      const f = repo?.files[m[4]];
      if (!repo || !f || m[3] !== repo.sha) return new Response("Entry not found", { status: 404 });
      if (f.lfs) {
        const oid = sha256(f.body);
        return new Response(null, {
          status: 302,
          headers: {
            location: `/cdn/${oid}`,
            "x-linked-etag": `"${oid}"`,
            "x-linked-size": String(f.body.length),
            "x-repo-commit": repo.sha,
          },
        });
      }
      return new Response(f.body, { headers: { etag: `"${gitSha1(f.body)}"`, "x-repo-commit": repo.sha } });
    }
    m = path.match(/^\/cdn\/([0-9a-f]{64})$/);
    if (m) {
      const f = [...this.repos.values()].flatMap((r) => Object.values(r.files)).find((x) =>
        x.lfs && sha256(x.body) === m![1]
      );
      if (!f) return new Response("no such object", { status: 404 });
      const body = this.corrupt ? f.body.map((b) => b ^ 1) : f.body;
      if (this.cutAfter === null) return new Response(body);
      const [cut, mode] = [this.cutAfter, this.cutMode];
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(body.slice(0, cut));
          setTimeout(() => (mode === "close" ? c.close() : c.error(new Error("mock: connection reset"))), 20);
        },
      });
      return new Response(stream, { headers: { "content-length": String(body.length) } });
    }
    return new Response("Not found", { status: 404 });
  }

  async stop(): Promise<void> {
    await this.server.shutdown();
  }
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const gitSha1 = (b: Uint8Array) => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");
const text = (s: string): Uint8Array<ArrayBuffer> => new TextEncoder().encode(s);

/** Files of a tiny model repo: real safetensors weights, config and tokenizer stand-ins. */
async function tinyModelFiles(tmp: string): Promise<Record<string, MockFile>> {
  const w = `${tmp}/w.safetensors`;
  await writeSafetensors(w, [{
    name: "model.norm.weight",
    dtype: "F32",
    shape: [1000],
    data: new Float32Array(1000).fill(0.25),
  }]);
  return {
    "config.json": { body: text('{"model_type":"qwen2"}'), lfs: false },
    "tokenizer.json": { body: text('{"model":{"type":"BPE"}}'), lfs: false },
    "tokenizer_config.json": { body: text("{}"), lfs: false },
    "model.safetensors": { body: await Deno.readFile(w), lfs: true },
    "README.md": { body: text("# tiny"), lfs: false },
    "pytorch_model.bin": { body: text("not wanted"), lfs: true },
  };
}

async function setup(): Promise<
  {
    hub: MockHub;
    cache: string;
    tmp: string;
    opts: { cacheDir: string; endpoint: string; progress: false; offline: false };
  }
> {
  const tmp = await Deno.makeTempDir({ prefix: "hub_test_" });
  const hub = new MockHub();
  hub.repos.set("models:org/tiny", { sha: SHA, files: await tinyModelFiles(tmp) });
  const cache = `${tmp}/cache`;
  // offline: false so an ambient $HF_HUB_OFFLINE does not change these tests
  return {
    hub,
    cache,
    tmp,
    opts: { cacheDir: cache, endpoint: hub.endpoint, progress: false, offline: false },
  };
}

Deno.test("hub: downloads into the HF cache layout, then hits the cache without network", async () => {
  const { hub, cache, tmp, opts } = await setup();
  try {
    const r = await resolveModel("org/tiny", { ...opts, token: "hf_secret" });
    const repo = `${cache}/models--org--tiny`;
    assert.equal(r.dir, `${repo}/snapshots/${SHA}`);
    assert.equal(r.commit, SHA);
    assert.equal(r.fromCache, false);
    assert.deepEqual(r.files, [
      "config.json",
      "model.safetensors",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    assert.equal(await Deno.readTextFile(`${repo}/refs/main`), SHA);
    const st = hub.repos.get("models:org/tiny")!.files["model.safetensors"].body;
    assert.equal(await Deno.readLink(`${r.dir}/model.safetensors`), `../../blobs/${sha256(st)}`);
    assert.equal(
      await Deno.readLink(`${r.dir}/config.json`),
      `../../blobs/${gitSha1(text('{"model_type":"qwen2"}'))}`,
    );
    assert.deepEqual([...Deno.readDirSync(`${repo}/blobs`)].length, 4, "one blob per file, no temp files");
    await using ck = await SafetensorsCheckpoint.open(r.dir);
    assert.deepEqual(await ck.readTensorF32("model.norm.weight"), new Float32Array(1000).fill(0.25));
    // the token went to every hub request
    assert.ok(hub.log.length >= 5);
    for (const l of hub.log) {
      if (!l.path.startsWith("/cdn/")) assert.equal(l.auth, "Bearer hf_secret", l.path);
    }

    hub.log = [];
    assert.equal((await resolveModel("org/tiny", { ...opts, revision: SHA })).dir, r.dir);
    assert.equal(hub.log.length, 0, "a cached commit needs no request at all");
    const again = await resolveModel("org/tiny", opts);
    assert.equal(again.fromCache, true);
    assert.deepEqual(
      hub.log.map((l) => l.path),
      [`/api/models/org/tiny/revision/main`],
      "only the revision lookup",
    );

    await hub.stop();
    const offlineNet = await resolveModel("org/tiny", opts);
    assert.equal(offlineNet.dir, r.dir, "hub unreachable → complete cached snapshot is used");
    const byCommit = await resolveModel("org/tiny", { ...opts, revision: SHA, offline: true });
    assert.equal(byCommit.dir, r.dir);
    Deno.env.set("HF_HUB_OFFLINE", "1");
    try {
      assert.equal(
        (await resolveModel("org/tiny", { cacheDir: cache, endpoint: "http://127.0.0.1:9" })).dir,
        r.dir,
      );
      await assert.rejects(
        resolveModel("org/other", { cacheDir: cache }),
        new RegExp(
          `Cannot load model "org/other" offline \\(HF_HUB_OFFLINE=1\\): no cached snapshot for revision "main" in cache "${cache}/models--org--other"`,
        ),
      );
    } finally {
      Deno.env.delete("HF_HUB_OFFLINE");
    }
    await assert.rejects(
      resolveModel("org/other", opts),
      /Cannot load model "org\/other": hub ".*" is unreachable .* no cached snapshot/,
    );
  } finally {
    await hub.stop().catch(() => {});
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("hub: 404 and 401 errors are clear; token from $HF_TOKEN is sent", async () => {
  const { hub, tmp, opts } = await setup();
  try {
    await assert.rejects(
      resolveModel("org/missing", opts),
      /Cannot resolve revision "main" of model "org\/missing": not found \(404\)/,
    );
    await assert.rejects(
      resolveModel("org/tiny", { ...opts, revision: "../../etc" }),
      /invalid revision "..\/..\/etc"/,
    );
    await assert.rejects(
      resolveModel("org/tiny", { ...opts, revision: "v9" }),
      /revision "v9" of model "org\/tiny": not found \(404\)/,
    );
    hub.requireToken = "hf_right";
    await assert.rejects(
      resolveModel("org/tiny", { ...opts, token: null }),
      /unauthorized \(401\).*set HF_TOKEN/,
    );
    await assert.rejects(
      resolveModel("org/tiny", { ...opts, token: "hf_wrong" }),
      /unauthorized \(401\).*token rejected/,
    );
    Deno.env.set("HF_TOKEN", "hf_right");
    try {
      const r = await resolveModel("org/tiny", opts);
      assert.equal(r.commit, SHA);
    } finally {
      Deno.env.delete("HF_TOKEN");
    }
    hub.requireToken = null;
    hub.repos.get("models:org/tiny")!.files = { "config.json": { body: text("{}"), lfs: false } };
    await assert.rejects(
      resolveModel("org/tiny", { ...opts, cacheDir: `${tmp}/c2` }),
      /no safetensors weights/,
    );
  } finally {
    await hub.stop();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("hub: an interrupted or corrupt download leaves no blob, and a retry succeeds", async () => {
  const { hub, cache, tmp, opts } = await setup();
  try {
    hub.cutAfter = 100;
    await assert.rejects(
      resolveModel("org/tiny", opts),
      /Cannot download "model.safetensors" of model "org\/tiny": transfer failed after 100 bytes/,
    );
    const blobs = () => [...Deno.readDirSync(`${cache}/models--org--tiny/blobs`)].map((e) => e.name);
    const st = hub.repos.get("models:org/tiny")!.files["model.safetensors"].body;
    assert.ok(!blobs().some((b) => b.startsWith(sha256(st))), `no partial blob: ${blobs()}`);
    await assert.rejects(
      Deno.lstat(`${cache}/models--org--tiny/snapshots/${SHA}/model.safetensors`),
      Deno.errors.NotFound,
    );
    hub.cutAfter = null;
    hub.corrupt = true;
    await assert.rejects(resolveModel("org/tiny", opts), /sha256 [0-9a-f]{64} does not match the ETag/);
    assert.ok(!blobs().some((b) => b.startsWith(sha256(st))));
    hub.corrupt = false;
    const r = await resolveModel("org/tiny", opts);
    assert.equal((await Deno.readFile(`${r.dir}/model.safetensors`)).length, st.length);
  } finally {
    await hub.stop();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("hub: datasets resolve through datasets--org--name with nested paths", async () => {
  const { hub, cache, tmp, opts } = await setup();
  try {
    const parquet = text("PAR1 fake parquet PAR1");
    hub.repos.set("datasets:openai/gsm8k", {
      sha: DS_SHA,
      files: {
        "main/train-00000-of-00001.parquet": { body: parquet, lfs: true },
        "main/test-00000-of-00001.parquet": { body: text("PAR1 test PAR1"), lfs: true },
        "socratic/train-00000-of-00001.parquet": { body: text("x"), lfs: true },
        "README.md": { body: text("# gsm8k"), lfs: false },
      },
    });
    const r = await resolveDataset("openai/gsm8k", { ...opts, files: ["main/*.parquet"] });
    assert.equal(r.dir, `${cache}/datasets--openai--gsm8k/snapshots/${DS_SHA}`);
    assert.deepEqual(r.files, ["main/test-00000-of-00001.parquet", "main/train-00000-of-00001.parquet"]);
    assert.deepEqual(await Deno.readFile(`${r.dir}/main/train-00000-of-00001.parquet`), parquet);
    assert.equal(
      await Deno.readLink(`${r.dir}/main/train-00000-of-00001.parquet`),
      `../../../blobs/${sha256(parquet)}`,
    );
    assert.ok(
      hub.log.some((l) =>
        l.path === `/datasets/openai/gsm8k/resolve/${DS_SHA}/main/train-00000-of-00001.parquet`
      ),
    );
    await assert.rejects(
      resolveDataset("openai/gsm8k", { ...opts, files: ["*.csv"] }),
      /no file matches "\*.csv"/,
    );
    await hub.stop();
    const cached = await resolveDataset("openai/gsm8k", {
      ...opts,
      files: ["main/*.parquet"],
      offline: true,
    });
    assert.deepEqual(cached.files, r.files);
  } finally {
    await hub.stop().catch(() => {});
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("hub: local directories are used as is; bad ids and paths are rejected", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${tmp}/config.json`, "{}");
    const r = await resolveModel(tmp);
    assert.deepEqual([r.dir, r.source, r.files], [tmp, "local", ["config.json"]]);
    await assert.rejects(resolveModel(`${tmp}/config.json`), /expected a directory or a hub id, got a file/);
    await assert.rejects(
      resolveModel("./no/such/dir"),
      /Cannot load model ".\/no\/such\/dir": directory not found and not a hub id/,
    );
    await assert.rejects(resolveModel("a/b/c"), /not a hub id/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("hub: cache dir from environment and glob matching", () => {
  const vars: Record<string, string> = { HOME: "/home/u" };
  const get = (k: string) => vars[k];
  assert.equal(hubCacheDir(get), "/home/u/.cache/huggingface/hub");
  vars.XDG_CACHE_HOME = "/x";
  assert.equal(hubCacheDir(get), "/x/huggingface/hub");
  vars.HF_HOME = "~/hf";
  assert.equal(hubCacheDir(get), "/home/u/hf/hub");
  vars.HUGGINGFACE_HUB_CACHE = "/legacy";
  assert.equal(hubCacheDir(get), "/legacy");
  vars.HF_HUB_CACHE = "/c";
  assert.equal(hubCacheDir(get), "/c");
  assert.ok(globToRegExp("*.safetensors").test("model-00001-of-00002.safetensors"));
  assert.ok(!globToRegExp("*.safetensors").test("sub/model.safetensors"));
  assert.ok(globToRegExp("**.safetensors").test("sub/model.safetensors"));
  assert.ok(globToRegExp("main/train-?????-of-*.parquet").test("main/train-00000-of-00001.parquet"));
  assert.ok(!globToRegExp("config.json").test("configXjson"));
});

Deno.test("progress: renders rate and ETA on a TTY, stays quiet otherwise", () => {
  const written: string[] = [];
  let t = 0;
  const sink = (tty: boolean) => ({
    writeSync: (p: Uint8Array) => (written.push(new TextDecoder().decode(p)), p.length),
    isTerminal: () => tty,
  });
  const bar = new ProgressBar({
    total: 2_000_000,
    label: "model.safetensors",
    sink: sink(true),
    now: () => t,
    width: 10,
  });
  t = 1000;
  bar.update(500_000);
  assert.equal(
    written.at(-1),
    "\rmodel.safetensors  [###-------]   25%  500.0 kB/2.0 MB  500.0 kB/s  ETA 3s",
  );
  t = 1050;
  bar.update(100_000);
  assert.equal(written.length, 1, "redraws are throttled");
  t = 4000;
  bar.update(1_400_000);
  bar.finish();
  assert.ok(
    written.at(-1)!.endsWith("[##########]  100%  2.0 MB/2.0 MB  500.0 kB/s  in 4s\n"),
    written.at(-1),
  );
  written.length = 0;
  const quiet = new ProgressBar({ total: 10, sink: sink(false) });
  quiet.update(5);
  quiet.finish();
  assert.equal(quiet.enabled, false);
  assert.deepEqual(written, []);
  assert.equal(formatBytes(999), "999 B");
  assert.equal(formatBytes(1_234_567_890), "1.2 GB");
  assert.equal(formatDuration(185), "3m05s");
  assert.equal(formatDuration(7380), "2h03m");
});
