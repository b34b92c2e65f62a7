/**
 * Crash-safe file and directory writes.
 *
 * Files: write `<dir>/.<name>.tmp-<random>`, fsync, then `rename(2)` over the target (atomic on POSIX within one
 * filesystem). Directories: build `<dir>.tmp-<random>` completely, then swap it in with two renames
 * (`dir → dir.old-<random>`, `tmp → dir`) and delete the old one. `rename(2)` cannot replace a non-empty directory,
 * so there is a short window between the two renames where `dir` is absent; {@link recoverAtomicDir} (called by
 * every {@link replaceDirAtomic}) restores the newest complete copy after a crash in that window.
 *
 * @module
 */

/** Random hex suffix for temporary names (collision-free across processes for practical purposes). */
export function randomSuffix(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Split a path into its directory part (without trailing slash, "." when none) and base name. */
export function splitPath(path: string): { dir: string; base: string } {
  const trimmed = path.length > 1 ? path.replace(/\/+$/, "") : path;
  const i = trimmed.lastIndexOf("/");
  if (i < 0) return { dir: ".", base: trimmed };
  return { dir: i === 0 ? "/" : trimmed.slice(0, i), base: trimmed.slice(i + 1) };
}

/** Join path segments with "/" (no normalisation beyond collapsing the separators between segments). */
export function joinPath(...parts: string[]): string {
  return parts.filter((p) => p !== "").map((
    p,
    i,
  ) => (i === 0 ? p.replace(/\/+$/, "") : p.replace(/^\/+|\/+$/g, "")))
    .join("/") || "/";
}

/** True when `path` exists (follows symlinks); false on NotFound, rethrows other errors. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Remove a path recursively, ignoring NotFound. */
export async function removeIfExists(path: string): Promise<void> {
  try {
    await Deno.remove(path, { recursive: true });
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/** Write the whole `data` buffer to an open file (Deno's `write` may write partially). */
export async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}

/**
 * Create `path` atomically by streaming into a temporary file in the same directory and renaming it over the
 * target once `fill` resolves and the data is fsynced. If `fill` throws, the temporary file is deleted and the
 * previous `path` (if any) is untouched.
 */
export async function withAtomicFile(
  path: string,
  fill: (file: Deno.FsFile) => Promise<void>,
): Promise<void> {
  const { dir, base } = splitPath(path);
  const tmp = joinPath(dir, `.${base}.tmp-${randomSuffix()}`);
  const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
  let closed = false;
  try {
    await fill(file);
    await file.sync();
    file.close();
    closed = true;
    await Deno.rename(tmp, path);
  } catch (e) {
    if (!closed) file.close();
    await removeIfExists(tmp);
    throw e;
  }
}

/** Write `data` (bytes or UTF-8 text) to `path` atomically; see {@link withAtomicFile}. */
export function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  return withAtomicFile(path, (f) => writeAll(f, bytes));
}

/** Write `value` as pretty-printed JSON (2-space indent, trailing newline) to `path` atomically. */
export function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  return writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n");
}

/** Sibling entries of `dir` named `<base><marker><suffix>` (e.g. `ckpt.old-1a2b`), newest mtime first. */
async function siblings(dir: string, marker: string): Promise<string[]> {
  const { dir: parent, base } = splitPath(dir);
  const found: { path: string; mtime: number }[] = [];
  try {
    for await (const e of Deno.readDir(parent)) {
      if (!e.name.startsWith(base + marker)) continue;
      const p = joinPath(parent, e.name);
      const st = await Deno.lstat(p);
      found.push({ path: p, mtime: st.mtime?.getTime() ?? 0 });
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return found.sort((a, b) => b.mtime - a.mtime).map((f) => f.path);
}

/**
 * Repair the state a crash inside {@link replaceDirAtomic} can leave: when `dir` is missing but a complete
 * `dir.old-*` exists (crash between the two renames), move the newest one back; then delete leftover
 * `dir.tmp-*` (incomplete builds) and, once `dir` exists, stale `dir.old-*` copies. Only the (single) writer of
 * `dir` may call this: it deletes in-progress builds. Returns true when `dir` exists afterwards.
 */
export async function recoverAtomicDir(dir: string): Promise<boolean> {
  const olds = await siblings(dir, ".old-");
  if (!(await exists(dir)) && olds.length > 0) await Deno.rename(olds.shift()!, dir);
  for (const t of await siblings(dir, ".tmp-")) await removeIfExists(t);
  const present = await exists(dir);
  if (present) { for (const o of olds) await removeIfExists(o); }
  return present;
}

/**
 * Read-only counterpart of {@link recoverAtomicDir} for readers: `dir` when it exists, else the newest complete
 * `dir.old-*` left by a writer that crashed (or is) between its two renames, else null. Modifies nothing.
 */
export async function resolveAtomicDir(dir: string): Promise<string | null> {
  if (await exists(dir)) return dir;
  return (await siblings(dir, ".old-"))[0] ?? null;
}

/**
 * Replace directory `dir` as a whole: `build(tmpDir)` fills a fresh `dir.tmp-<random>` (a sibling, so the final
 * renames stay on one filesystem); only after it resolves is the previous `dir` swapped out and deleted. If `build`
 * throws, the temporary directory is removed and `dir` is untouched. A crash at any point leaves either the old or
 * the new complete directory (possibly under `dir.old-*`, restored by {@link recoverAtomicDir}).
 */
export async function replaceDirAtomic(dir: string, build: (tmpDir: string) => Promise<void>): Promise<void> {
  const { dir: parent } = splitPath(dir);
  await Deno.mkdir(parent, { recursive: true });
  await recoverAtomicDir(dir);
  const tmp = `${dir.replace(/\/+$/, "")}.tmp-${randomSuffix()}`;
  await Deno.mkdir(tmp);
  try {
    await build(tmp);
  } catch (e) {
    await removeIfExists(tmp);
    throw e;
  }
  const old = `${dir.replace(/\/+$/, "")}.old-${randomSuffix()}`;
  const hadOld = await exists(dir);
  if (hadOld) await Deno.rename(dir, old);
  await Deno.rename(tmp, dir);
  if (hadOld) await removeIfExists(old);
}
