/**
 * Hugging Face Hub resolution with the standard huggingface_hub cache layout, so files are shared with Python
 * tools: `<cache>/models--org--name/{blobs/<etag>, snapshots/<commit>/<file> → ../../blobs/<etag>, refs/<rev>}`
 * (datasets: `datasets--org--name`). The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
 * `~/.cache/huggingface/hub`; the endpoint is `$HF_ENDPOINT` (default https://huggingface.co); `$HF_TOKEN` is sent
 * as a bearer token; `$HF_HUB_OFFLINE=1` resolves from the cache only.
 *
 * Flow (as `snapshot_download`): `GET {endpoint}/api/{models|datasets}/{id}/revision/{rev}` → commit sha and file
 * list; for each wanted file missing from `snapshots/<sha>`, `GET .../resolve/<sha>/<file>` without following
 * redirects to read `x-linked-etag`/`etag` (+ `x-linked-size`), stream the body (following the CDN redirect) into
 * `blobs/<etag>.incomplete-<random>`, verify size and hash (sha256 for LFS etags, git blob sha1 for 40-hex
 * etags), rename to `blobs/<etag>`, symlink from the snapshot and write `refs/<rev>`. An interrupted download
 * never leaves a blob. When the hub is unreachable, a complete cached snapshot is used.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { exists, joinPath, randomSuffix, removeIfExists, writeAll, writeFileAtomic } from "../util/atomic.ts";
import { ProgressBar } from "../util/progress.ts";

/** Kind of hub repository. */
export type RepoType = "model" | "dataset";

/** Options of {@link resolveModel} and {@link resolveDataset}; unset fields come from the environment. */
export interface HubOptions {
  /** Branch, tag or commit sha. Default "main". */
  revision?: string;
  /** Glob patterns of files to fetch (`*` within a path segment, `**` across). Default: {@link DEFAULT_MODEL_FILES}. */
  files?: readonly string[];
  /** Cache root. Default {@link hubCacheDir}(). */
  cacheDir?: string;
  /** Hub endpoint. Default `$HF_ENDPOINT` or https://huggingface.co. */
  endpoint?: string;
  /** Access token (null: none). Default `$HF_TOKEN`. */
  token?: string | null;
  /** Use the cache only. Default `$HF_HUB_OFFLINE` is 1/true/yes/on. */
  offline?: boolean;
  /** Show download progress bars (on a TTY). Default true. */
  progress?: boolean;
  /** Timeout for metadata requests in ms. Default 10000. */
  timeoutMs?: number;
}

/** Where a model or dataset was resolved to. */
export interface ResolvedRepo {
  /** Directory holding the files (a snapshot directory or the local directory given). */
  dir: string;
  /** Hub repo id, or null for a local directory. */
  repoId: string | null;
  /** "model", "dataset", or "local". */
  source: RepoType | "local";
  /** Resolved commit sha (null for local directories). */
  commit: string | null;
  /** Relative paths of the resolved files. */
  files: string[];
  /** Whether nothing had to be downloaded. */
  fromCache: boolean;
}

/** Files fetched for a model when `files` is not given. */
export const DEFAULT_MODEL_FILES: readonly string[] = [
  "config.json",
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "chat_template.jinja",
  "model.safetensors.index.json",
  "*.safetensors",
];

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

const isTrue = (v: string | undefined) =>
  v !== undefined && ["1", "true", "yes", "on"].includes(v.toLowerCase());

/**
 * Cache root: `$HF_HUB_CACHE` › `$HUGGINGFACE_HUB_CACHE` › `$HF_HOME/hub` › `$XDG_CACHE_HOME/huggingface/hub` ›
 * `~/.cache/huggingface/hub`. `getEnv` (default: the process environment) lets callers resolve other environments.
 */
export function hubCacheDir(getEnv: (name: string) => string | undefined = env): string {
  const home = getEnv("HOME") ?? "/";
  const expand = (p: string) => (p.startsWith("~/") ? joinPath(home, p.slice(2)) : p);
  const direct = getEnv("HF_HUB_CACHE") ?? getEnv("HUGGINGFACE_HUB_CACHE");
  if (direct) return expand(direct);
  const hfHome = getEnv("HF_HOME") ??
    joinPath(getEnv("XDG_CACHE_HOME") ?? joinPath(home, ".cache"), "huggingface");
  return joinPath(expand(hfHome), "hub");
}

/** Cache folder name of a repo: `models--org--name` / `datasets--org--name`. */
export function repoFolderName(type: RepoType, repoId: string): string {
  return `${type}s--${repoId.replaceAll("/", "--")}`;
}

/** Whether `s` is shaped like a hub repo id (`name` or `org/name`). */
export function isHubRepoId(s: string): boolean {
  return /^[A-Za-z0-9][\w.-]{0,95}(\/[\w.-]{1,96})?$/.test(s) && !s.includes("..") && !s.endsWith(".");
}

/** Convert a glob (`*` = any chars but "/", `**` = anything, `?` = one char) to an anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*" && glob[i + 1] === "*") (re += ".*", i++);
    else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

const isCommit = (rev: string) => /^[0-9a-f]{40}$/.test(rev);

/**
 * Resolve a model: an existing local directory is returned as is; otherwise `idOrPath` must be a hub id
 * (`org/name`), resolved through the cache and downloaded as needed (see module doc). Requires `config.json`
 * and safetensors weights unless `files` is given.
 */
export async function resolveModel(idOrPath: string, opts: HubOptions = {}): Promise<ResolvedRepo> {
  let st: Deno.FileInfo | null = null;
  try {
    st = await Deno.stat(idOrPath);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (st?.isDirectory) {
    const files: string[] = [];
    for await (const e of Deno.readDir(idOrPath)) if (e.isFile || e.isSymlink) files.push(e.name);
    return {
      dir: idOrPath,
      repoId: null,
      source: "local",
      commit: null,
      files: files.sort(),
      fromCache: true,
    };
  }
  if (st) throw new Error(`Cannot load model "${idOrPath}": expected a directory or a hub id, got a file`);
  if (!isHubRepoId(idOrPath) || idOrPath.startsWith(".")) {
    throw new Error(`Cannot load model "${idOrPath}": directory not found and not a hub id like "org/name"`);
  }
  return await resolveRepo("model", idOrPath, opts, opts.files === undefined);
}

/** Resolve dataset files (e.g. `resolveDataset("openai/gsm8k", {files: ["main/*.parquet"]})`); each pattern must match. */
export function resolveDataset(
  id: string,
  opts: HubOptions & { files: readonly string[] },
): Promise<ResolvedRepo> {
  if (!isHubRepoId(id)) throw new Error(`Cannot load dataset "${id}": not a hub id like "org/name"`);
  return resolveRepo("dataset", id, opts, false);
}

interface Ctx {
  type: RepoType;
  id: string;
  what: string; // `model "org/name"` for messages
  endpoint: string;
  token: string | null;
  repoDir: string;
  patterns: RegExp[];
  globs: readonly string[];
  requireModel: boolean;
  opts: HubOptions;
}

async function resolveRepo(
  type: RepoType,
  id: string,
  opts: HubOptions,
  requireModel: boolean,
): Promise<ResolvedRepo> {
  const globs = opts.files ?? DEFAULT_MODEL_FILES;
  const ctx: Ctx = {
    type,
    id,
    what: `${type} "${id}"`,
    endpoint: (opts.endpoint ?? env("HF_ENDPOINT") ?? "https://huggingface.co").replace(/\/+$/, ""),
    token: opts.token === undefined ? env("HF_TOKEN") ?? env("HUGGING_FACE_HUB_TOKEN") ?? null : opts.token,
    repoDir: joinPath(opts.cacheDir ?? hubCacheDir(), repoFolderName(type, id)),
    patterns: globs.map(globToRegExp),
    globs,
    requireModel,
    opts,
  };
  const rev = opts.revision ?? "main";
  if (!/^[\w.\/-]+$/.test(rev) || rev.split("/").some((p) => p === "" || p === "." || p === "..")) {
    throw new Error(`Cannot load ${ctx.what}: invalid revision ${JSON.stringify(rev)}`);
  }
  if (opts.offline ?? isTrue(env("HF_HUB_OFFLINE"))) {
    const cached = await cachedSnapshot(ctx, rev);
    if (typeof cached === "string") {
      throw new Error(
        `Cannot load ${ctx.what} offline (HF_HUB_OFFLINE=1): ${cached} in cache "${ctx.repoDir}"`,
      );
    }
    return cached;
  }
  if (isCommit(rev)) {
    // a commit is immutable: a complete cached snapshot needs no network (as huggingface_hub does)
    const cached = await cachedSnapshot(ctx, rev);
    if (typeof cached !== "string") return cached;
  }
  let info: { sha: string; files: string[] };
  try {
    info = await fetchRevisionInfo(ctx, rev);
  } catch (e) {
    if (!(e instanceof NetworkError)) throw e;
    const cached = await cachedSnapshot(ctx, rev);
    if (typeof cached === "string") {
      throw new Error(
        `Cannot load ${ctx.what}: hub "${ctx.endpoint}" is unreachable (${e.message}) and ${cached}`,
      );
    }
    return cached;
  }
  const wanted = info.files.filter((f) => ctx.patterns.some((p) => p.test(f)));
  const problem = missingRequired(ctx, wanted);
  if (problem) throw new Error(`Cannot load ${ctx.what} at revision "${rev}": ${problem}`);
  const snap = joinPath(ctx.repoDir, "snapshots", info.sha);
  let fromCache = true;
  for (const file of wanted) {
    if (await exists(joinPath(snap, file))) continue;
    fromCache = false;
    const blob = await downloadBlob(ctx, info.sha, file);
    await linkIntoSnapshot(snap, file, blob);
  }
  if (rev !== info.sha) {
    const ref = joinPath(ctx.repoDir, "refs", rev);
    await Deno.mkdir(ref.slice(0, ref.lastIndexOf("/")), { recursive: true });
    await writeFileAtomic(ref, info.sha);
  }
  return { dir: snap, repoId: id, source: type, commit: info.sha, files: wanted.sort(), fromCache };
}

/** What is missing among `files` for the request: null when complete. */
function missingRequired(ctx: Ctx, files: readonly string[]): string | null {
  if (ctx.requireModel) {
    if (!files.includes("config.json")) return `"config.json" is missing`;
    if (!files.some((f) => f.endsWith(".safetensors"))) return "no safetensors weights (*.safetensors) found";
  } else {
    for (let i = 0; i < ctx.globs.length; i++) {
      if (!files.some((f) => ctx.patterns[i].test(f))) return `no file matches "${ctx.globs[i]}"`;
    }
  }
  return null;
}

/** A complete cached snapshot for `rev`, or a string saying what is missing. */
async function cachedSnapshot(ctx: Ctx, rev: string): Promise<ResolvedRepo | string> {
  let sha = rev;
  if (!isCommit(rev)) {
    try {
      sha = (await Deno.readTextFile(joinPath(ctx.repoDir, "refs", rev))).trim();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return `no cached snapshot for revision "${rev}"`;
      throw e;
    }
  }
  const snap = joinPath(ctx.repoDir, "snapshots", sha);
  const files: string[] = [];
  const walk = async (rel: string) => {
    for await (const e of Deno.readDir(joinPath(snap, rel))) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) await walk(p);
      else if (ctx.patterns.some((re) => re.test(p)) && (await exists(joinPath(snap, p)))) files.push(p);
    }
  };
  try {
    await walk("");
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return `no cached snapshot for revision "${rev}" (commit ${sha})`;
    throw e;
  }
  const problem = missingRequired(ctx, files);
  if (problem) return `the cached snapshot "${snap}" is incomplete: ${problem}`;
  if (files.includes("model.safetensors.index.json")) {
    const idx = JSON.parse(await Deno.readTextFile(joinPath(snap, "model.safetensors.index.json")));
    for (const shard of new Set(Object.values(idx.weight_map ?? {}) as string[])) {
      if (!files.includes(shard)) {
        return `the cached snapshot "${snap}" is incomplete: shard "${shard}" is missing`;
      }
    }
  }
  return { dir: snap, repoId: ctx.id, source: ctx.type, commit: sha, files: files.sort(), fromCache: true };
}

/** Thrown when the hub cannot be reached at all (as opposed to an HTTP error status). */
class NetworkError extends Error {}

function headers(ctx: Ctx): Headers {
  const h = new Headers({ "user-agent": "prm-rl-webgpu/0.1; deno" });
  if (ctx.token) h.set("authorization", `Bearer ${ctx.token}`);
  return h;
}

/** Fetch, mapping connection failures to {@link NetworkError}. */
async function hubFetch(url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (e) {
    if (e instanceof TypeError || (e instanceof DOMException && e.name === "TimeoutError")) {
      throw new NetworkError((e as Error).message);
    }
    throw e;
  }
}

/** Error for a failed hub response: 401/403 (auth or gated), 404 (not found), others with the status. */
async function httpError(ctx: Ctx, res: Response, action: string): Promise<Error> {
  const body = (await res.text().catch(() => "")).slice(0, 200);
  const why = res.status === 401
    ? `unauthorized (401): the repo is private, gated or does not exist${
      ctx.token ? " (token rejected)" : "; set HF_TOKEN"
    }`
    : res.status === 403
    ? "forbidden (403): the token has no access to this repo (gated? accept its terms on the hub)"
    : res.status === 404
    ? "not found (404)"
    : `HTTP ${res.status} ${res.statusText}`;
  return new Error(`Cannot ${action} ${ctx.what}: ${why}${body ? ` — ${body}` : ""}`);
}

async function fetchRevisionInfo(ctx: Ctx, rev: string): Promise<{ sha: string; files: string[] }> {
  const url = `${ctx.endpoint}/api/${ctx.type}s/${ctx.id}/revision/${encodeURIComponent(rev)}`;
  const res = await hubFetch(url, {
    headers: headers(ctx),
    signal: AbortSignal.timeout(ctx.opts.timeoutMs ?? 10_000),
  });
  if (!res.ok) throw await httpError(ctx, res, `resolve revision "${rev}" of`);
  const j = await res.json() as { sha?: unknown; siblings?: { rfilename?: unknown }[] };
  if (typeof j.sha !== "string" || !isCommit(j.sha) || !Array.isArray(j.siblings)) {
    throw new Error(`Cannot resolve ${ctx.what}: unexpected answer from "${url}" (no "sha"/"siblings")`);
  }
  const files = j.siblings.map((s) => s.rfilename).filter((f): f is string => typeof f === "string");
  for (const f of files) {
    if (f.startsWith("/") || f.split("/").includes("..")) {
      throw new Error(`Cannot resolve ${ctx.what}: unsafe file name "${f}"`);
    }
  }
  return { sha: j.sha, files };
}

const normEtag = (e: string | null) => (e ? e.replace(/^W\//, "").replace(/^"|"$/g, "") : null);

/** Download `file` at commit `sha` into `blobs/<etag>` (skipped when present); returns the etag. */
async function downloadBlob(ctx: Ctx, sha: string, file: string): Promise<string> {
  const prefix = ctx.type === "dataset" ? "datasets/" : "";
  const path = file.split("/").map(encodeURIComponent).join("/");
  let url = `${ctx.endpoint}/${prefix}${ctx.id}/resolve/${sha}/${path}`;
  const action = `download "${file}" of`;
  let res = await hubFetch(url, { headers: headers(ctx), redirect: "manual" });
  // Same-host relative redirects (renamed repos) keep auth; the first response carrying an etag wins.
  for (let hops = 0; res.status >= 300 && res.status < 400 && !res.headers.get("x-linked-etag"); hops++) {
    const loc = res.headers.get("location");
    if (!loc || hops > 5 || !loc.startsWith("/")) break;
    await res.body?.cancel();
    url = new URL(loc, url).href;
    res = await hubFetch(url, { headers: headers(ctx), redirect: "manual" });
  }
  if (res.status >= 400) throw await httpError(ctx, res, action);
  const etag = normEtag(res.headers.get("x-linked-etag") ?? res.headers.get("etag"));
  if (!etag || !/^[\w.-]+$/.test(etag)) {
    await res.body?.cancel();
    throw new Error(
      `Cannot ${action} ${ctx.what}: the server sent no usable ETag (got ${JSON.stringify(etag)})`,
    );
  }
  const blob = joinPath(ctx.repoDir, "blobs", etag);
  if (await exists(blob)) {
    await res.body?.cancel();
    return etag;
  }
  const sizeHeader = res.headers.get("x-linked-size") ??
    (res.headers.get("content-encoding") ? null : res.headers.get("content-length"));
  if (res.status >= 300) {
    const loc = res.headers.get("location");
    await res.body?.cancel();
    if (!loc) throw new Error(`Cannot ${action} ${ctx.what}: redirect without a location`);
    const target = new URL(loc, url);
    const sameHost = target.host === new URL(url).host;
    res = await hubFetch(target.href, { headers: sameHost ? headers(ctx) : undefined });
    if (!res.ok) throw await httpError(ctx, res, action);
  }
  await Deno.mkdir(joinPath(ctx.repoDir, "blobs"), { recursive: true });
  await streamToBlob(ctx, res, blob, sizeHeader === null ? null : Number(sizeHeader), etag, file);
  return etag;
}

/** Stream `res` into `blob` via a temp file, verifying size and hash; the temp file is removed on any failure. */
async function streamToBlob(
  ctx: Ctx,
  res: Response,
  blob: string,
  size: number | null,
  etag: string,
  file: string,
): Promise<void> {
  const tmp = `${blob}.incomplete-${randomSuffix()}`;
  const algo = /^[0-9a-f]{64}$/.test(etag)
    ? "sha256"
    : /^[0-9a-f]{40}$/.test(etag) && size !== null
    ? "sha1"
    : null;
  const hash = algo ? createHash(algo) : null;
  if (algo === "sha1") hash!.update(`blob ${size}\0`); // git blob id = sha1("blob <size>\0" + content)
  const bar = new ProgressBar({
    total: size ?? 0,
    label: file,
    enabled: ctx.opts.progress === false ? false : undefined,
  });
  const out = await Deno.open(tmp, { write: true, createNew: true });
  let got = 0;
  try {
    if (!res.body) throw new Error("empty response body");
    for await (const chunk of res.body) {
      await writeAll(out, chunk);
      hash?.update(chunk);
      got += chunk.length;
      bar.update(chunk.length);
    }
    if (size !== null && got !== size) throw new Error(`got ${got} of ${size} bytes`);
    const digest = hash?.digest("hex");
    if (digest !== undefined && digest !== etag) {
      throw new Error(`${algo} ${digest} does not match the ETag ${etag}`);
    }
    await out.sync();
    out.close();
    await Deno.rename(tmp, blob);
    bar.finish();
  } catch (e) {
    try {
      out.close();
    } catch { /* already closed */ }
    await removeIfExists(tmp);
    const msg = e instanceof Error ? e.message : String(e);
    throw new Error(`Cannot download "${file}" of ${ctx.what}: transfer failed after ${got} bytes (${msg})`);
  }
}

/** Symlink `snap/file` → `../../blobs/<etag>` (relative, as huggingface_hub does); copies where links fail. */
async function linkIntoSnapshot(snap: string, file: string, etag: string): Promise<void> {
  const target = joinPath(snap, file);
  await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
  const depth = file.split("/").length + 1; // snapshots/<sha>/<dirs...>/file → repo dir
  const rel = `${"../".repeat(depth)}blobs/${etag}`;
  const tmp = `${target}.link-${randomSuffix()}`;
  try {
    await Deno.symlink(rel, tmp);
  } catch {
    await Deno.copyFile(joinPath(snap, "..", "..", "blobs", etag), tmp);
  }
  await Deno.rename(tmp, target);
}
