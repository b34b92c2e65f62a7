/**
 * Checkpoint I/O on top of safetensors: the safetensors writer (single file and sharded with
 * `model.safetensors.index.json`), {@link SafetensorsCheckpoint} which reads single-file or sharded weights
 * lazily (one open handle per shard, one tensor at a time), and {@link saveCheckpointDir}, which writes a
 * `transformers`-loadable directory (config.json + weights + tokenizer files) atomically as a whole.
 *
 * @module
 */

import {
  exists,
  joinPath,
  replaceDirAtomic,
  resolveAtomicDir,
  withAtomicFile,
  writeAll,
  writeFileAtomic,
} from "../util/atomic.ts";
import { configToJson, loadConfig, type Qwen2Config } from "./config.ts";
import {
  DTYPE_SIZE,
  encodeF32,
  type ReadOptions,
  type SafetensorsDtype,
  SafetensorsFile,
  type TensorInfo,
} from "./safetensors.ts";

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** A tensor to write. Float32Array data is encoded to `dtype` (F32/F16/BF16); a Uint8Array is taken as raw bytes. */
export interface TensorToWrite {
  /** Tensor name. */
  name: string;
  /** Element type on disk. */
  dtype: SafetensorsDtype;
  /** Shape (row-major). */
  shape: readonly number[];
  /** Values: Float32Array (F32/F16/BF16), Int32Array (I32), BigInt64Array (I64) or raw little-endian bytes. */
  data: Float32Array | Int32Array | BigInt64Array | Uint8Array;
}

/** Elements encoded per write call (bounds the extra memory used while converting). */
const CHUNK_ELEMS = 1 << 20;

/** Build the header bytes (length prefix + JSON padded with spaces to a multiple of 8) for `tensors`. */
export function buildSafetensorsHeader(
  tensors: readonly Pick<TensorToWrite, "name" | "dtype" | "shape">[],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    const len = numel(t.shape) * DTYPE_SIZE[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + len] };
    off += len;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

/** Check a tensor's dtype/shape/data agree; returns the encoder for its chunks. */
function encoderFor(t: TensorToWrite, path: string): (start: number, end: number) => Uint8Array {
  const bad = (msg: string): never => {
    throw new Error(`Cannot write safetensors "${path}": tensor "${t.name}" ${msg}`);
  };
  if (!(t.dtype in DTYPE_SIZE)) bad(`has unknown dtype "${t.dtype}"`);
  if (t.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    bad(`has invalid shape ${JSON.stringify(t.shape)}`);
  }
  const n = numel(t.shape);
  const size = DTYPE_SIZE[t.dtype];
  const d = t.data;
  const bytes = (a: Float32Array | Int32Array | BigInt64Array) =>
    new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (d instanceof Uint8Array && !(t.dtype === "U8" || t.dtype === "BOOL")) {
    if (d.length !== n * size) {
      bad(`has shape ${JSON.stringify(t.shape)} (${n * size} bytes) but ${d.length} raw bytes`);
    }
    return (s, e) => d.subarray(s * size, e * size);
  }
  if (d.length !== n) bad(`has shape ${JSON.stringify(t.shape)} (${n} elements) but data has ${d.length}`);
  if (d instanceof Float32Array && (t.dtype === "F32" || t.dtype === "F16" || t.dtype === "BF16")) {
    const dt = t.dtype;
    return (s, e) => encodeF32(d.subarray(s, e), dt);
  }
  if (d instanceof Int32Array && t.dtype === "I32") return (s, e) => bytes(d.subarray(s, e));
  if (d instanceof BigInt64Array && t.dtype === "I64") return (s, e) => bytes(d.subarray(s, e));
  if (d instanceof Uint8Array) return (s, e) => d.subarray(s, e);
  return bad(`cannot encode ${d.constructor.name} data as ${t.dtype}`);
}

/**
 * Write `tensors` to `path` as one safetensors file, atomically (temporary file in the same directory, fsync,
 * rename). Float data is converted chunk by chunk, so peak extra memory is a few MB regardless of model size.
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  opts: { metadata?: Record<string, string> } = {},
): Promise<void> {
  const seen = new Set<string>();
  for (const t of tensors) {
    if (seen.has(t.name)) throw new Error(`Cannot write safetensors "${path}": duplicate tensor "${t.name}"`);
    if (t.name === "__metadata__") {
      throw new Error(`Cannot write safetensors "${path}": "__metadata__" is reserved`);
    }
    seen.add(t.name);
  }
  const encoders = tensors.map((t) => encoderFor(t, path));
  const header = buildSafetensorsHeader(tensors, opts.metadata);
  await withAtomicFile(path, async (file) => {
    await writeAll(file, header);
    for (let i = 0; i < tensors.length; i++) {
      const n = numel(tensors[i].shape);
      for (let s = 0; s < n; s += CHUNK_ELEMS) {
        await writeAll(file, encoders[i](s, Math.min(n, s + CHUNK_ELEMS)));
      }
    }
  });
}

/** Default shard size limit of {@link writeSafetensorsSharded} (HF's `max_shard_size="5GB"`). */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

/** Name of the index file of a sharded checkpoint. */
export const INDEX_FILE = "model.safetensors.index.json";

/**
 * Write `tensors` into directory `dir` the way `transformers.save_pretrained` does: `model.safetensors` when the
 * total fits in `maxShardBytes`, else `model-0000i-of-0000N.safetensors` shards (greedy, in order; a tensor
 * larger than the limit gets its own shard) plus `model.safetensors.index.json`
 * (`{metadata: {total_size}, weight_map: {tensor: shard}}`). Returns the file names written.
 */
export async function writeSafetensorsSharded(
  dir: string,
  tensors: readonly TensorToWrite[],
  opts: { maxShardBytes?: number; metadata?: Record<string, string> } = {},
): Promise<string[]> {
  const limit = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  const shards: TensorToWrite[][] = [];
  let cur: TensorToWrite[] = [];
  let curBytes = 0;
  let total = 0;
  for (const t of tensors) {
    const bytes = numel(t.shape) * (DTYPE_SIZE[t.dtype] ?? 0);
    if (cur.length > 0 && curBytes + bytes > limit) {
      shards.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(t);
    curBytes += bytes;
    total += bytes;
  }
  shards.push(cur);
  if (shards.length === 1) {
    await writeSafetensors(joinPath(dir, "model.safetensors"), tensors, opts);
    return ["model.safetensors"];
  }
  const pad = (i: number) => String(i).padStart(5, "0");
  const names = shards.map((_, i) => `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`);
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < shards.length; i++) {
    await writeSafetensors(joinPath(dir, names[i]), shards[i], opts);
    for (const t of shards[i]) weightMap[t.name] = names[i];
  }
  const index = { metadata: { total_size: total }, weight_map: weightMap };
  await writeFileAtomic(joinPath(dir, INDEX_FILE), JSON.stringify(index, null, 2) + "\n");
  return [...names, INDEX_FILE];
}

// ---- reading ----------------------------------------------------------------------------------------------

/**
 * Weights of a checkpoint: one `.safetensors` file, or shards listed by `model.safetensors.index.json`.
 * Shards are opened on first use (one handle each, kept until {@link SafetensorsCheckpoint.close}).
 */
export class SafetensorsCheckpoint {
  /** Directory or file the checkpoint was opened from (used in errors). */
  readonly source: string;
  /** Absolute-or-relative paths of all weight files. */
  readonly files: string[];
  readonly #weightMap: Map<string, string> | null;
  readonly #open = new Map<string, Promise<SafetensorsFile>>();

  private constructor(source: string, files: string[], weightMap: Map<string, string> | null) {
    this.source = source;
    this.files = files;
    this.#weightMap = weightMap;
  }

  /**
   * Open a checkpoint from a directory (index file preferred, else `model.safetensors`), an index JSON file, or
   * a single `.safetensors` file. Validates the index and that every shard exists; reads no tensor data.
   */
  static async open(path: string): Promise<SafetensorsCheckpoint> {
    const fail = (msg: string): never => {
      throw new Error(`Cannot load checkpoint "${path}": ${msg}`);
    };
    let stat: Deno.FileInfo | null = null;
    try {
      stat = await Deno.stat(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      fail("path not found");
    }
    let indexPath: string | null = null;
    let dir = path;
    if (stat!.isDirectory) {
      if (await exists(joinPath(path, INDEX_FILE))) indexPath = joinPath(path, INDEX_FILE);
      else if (await exists(joinPath(path, "model.safetensors"))) {
        return new SafetensorsCheckpoint(path, [joinPath(path, "model.safetensors")], null);
      } else fail(`neither "model.safetensors" nor "${INDEX_FILE}" exists`);
    } else if (path.endsWith(".json")) {
      indexPath = path;
      dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ".";
    } else return new SafetensorsCheckpoint(path, [path], null);
    let index: { weight_map?: unknown };
    try {
      index = JSON.parse(await Deno.readTextFile(indexPath!));
    } catch (e) {
      return fail(`index "${indexPath}" is not valid JSON (${(e as Error).message})`);
    }
    const wm = index?.weight_map;
    if (typeof wm !== "object" || wm === null || Array.isArray(wm)) {
      fail(`index "${indexPath}" has no "weight_map" object`);
    }
    const map = new Map<string, string>();
    for (const [name, file] of Object.entries(wm as Record<string, unknown>)) {
      if (typeof file !== "string" || file.startsWith("/") || file.split("/").includes("..")) {
        fail(`index "${indexPath}" maps tensor "${name}" to invalid shard ${JSON.stringify(file)}`);
      }
      map.set(name, joinPath(dir, file as string));
    }
    const files = [...new Set(map.values())];
    for (const f of files) if (!(await exists(f))) fail(`shard "${f}" listed in "${INDEX_FILE}" is missing`);
    return new SafetensorsCheckpoint(path, files, map);
  }

  #file(path: string): Promise<SafetensorsFile> {
    let f = this.#open.get(path);
    if (!f) {
      f = SafetensorsFile.open(path);
      this.#open.set(path, f);
      f.catch(() => this.#open.delete(path));
    }
    return f;
  }

  /** The shard holding `name`; throws `Cannot load checkpoint "<source>": tensor "<name>" is missing`. */
  async #locate(name: string): Promise<SafetensorsFile> {
    const shard = this.#weightMap ? this.#weightMap.get(name) : this.files[0];
    if (shard === undefined) {
      throw new Error(`Cannot load checkpoint "${this.source}": tensor "${name}" is missing`);
    }
    const f = await this.#file(shard);
    if (!f.has(name)) {
      throw new Error(
        `Cannot load checkpoint "${this.source}": tensor "${name}" is missing` +
          (this.#weightMap ? ` from shard "${shard}" although "${INDEX_FILE}" lists it there` : ""),
      );
    }
    return f;
  }

  /** Whether the checkpoint has tensor `name` (for sharded checkpoints: per the index, without opening shards). */
  async has(name: string): Promise<boolean> {
    if (this.#weightMap) return this.#weightMap.has(name);
    return (await this.#file(this.files[0])).has(name);
  }

  /** Names, shapes, dtypes and locations of all tensors (opens every shard's header). */
  async list(): Promise<TensorInfo[]> {
    const out: TensorInfo[] = [];
    for (const f of this.files) out.push(...(await this.#file(f)).list());
    return out;
  }

  /** Header entry of `name`. */
  async info(name: string): Promise<TensorInfo> {
    return (await this.#locate(name)).info(name);
  }

  /** Raw little-endian bytes of `name` (or a row range of it). */
  async readRaw(name: string, opts: ReadOptions = {}): Promise<Uint8Array> {
    return (await this.#locate(name)).readRaw(name, opts);
  }

  /** Tensor `name` (or a row range) as Float32Array (F16/BF16 widened exactly). */
  async readTensorF32(name: string, opts: ReadOptions = {}): Promise<Float32Array> {
    return (await this.#locate(name)).readTensorF32(name, opts);
  }

  /** Close all opened shards. */
  async close(): Promise<void> {
    const opened = [...this.#open.values()];
    this.#open.clear();
    for (const p of opened) await p.then((f) => f.close(), () => {});
  }

  /** `await using` support. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

// ---- checkpoint directories -------------------------------------------------------------------------------

/** Tokenizer files copied from a directory by {@link saveCheckpointDir} when present. */
export const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "vocab.json",
  "merges.txt",
  "chat_template.jinja",
];

/** What {@link saveCheckpointDir} writes. */
export interface CheckpointContents {
  /** Model configuration, written as HF `config.json`. */
  config: Qwen2Config;
  /** Weights, with HF names (e.g. "model.layers.0.mlp.up_proj.weight"). */
  tensors: readonly TensorToWrite[];
  /** A tokenizer directory (its {@link TOKENIZER_FILES} are copied; tokenizer.json is required) or file paths. */
  tokenizerFiles?: string | readonly string[];
  /** Extra files by relative name: text, bytes, or a value serialised as JSON (e.g. generation_config.json). */
  extraFiles?: Record<string, string | Uint8Array | object>;
  /** Safetensors metadata; `format: "pt"` is always set (transformers requires it). */
  metadata?: Record<string, string>;
  /** Shard size limit (bytes). Default 5 GB. */
  maxShardBytes?: number;
}

const TORCH_DTYPE: Partial<Record<SafetensorsDtype, string>> = {
  F32: "float32",
  BF16: "bfloat16",
  F16: "float16",
};

/**
 * Write a complete checkpoint directory that `transformers` can load (`config.json`, `model.safetensors` or
 * shards + index, tokenizer files, extras). The directory is built as `dir.tmp-<random>` and swapped in only
 * once complete, so a crash mid-write leaves the previous checkpoint intact (see util/atomic.ts).
 */
export async function saveCheckpointDir(dir: string, contents: CheckpointContents): Promise<void> {
  const fail = (msg: string): never => {
    throw new Error(`Cannot save checkpoint "${dir}": ${msg}`);
  };
  let tokFiles: string[] = [];
  if (typeof contents.tokenizerFiles === "string") {
    const src = contents.tokenizerFiles;
    if (!(await exists(joinPath(src, "tokenizer.json")))) {
      fail(`tokenizer file "${joinPath(src, "tokenizer.json")}" not found`);
    }
    for (const f of TOKENIZER_FILES) if (await exists(joinPath(src, f))) tokFiles.push(joinPath(src, f));
  } else if (contents.tokenizerFiles) {
    tokFiles = [...contents.tokenizerFiles];
    for (const f of tokFiles) if (!(await exists(f))) fail(`tokenizer file "${f}" not found`);
  }
  const extra = Object.entries(contents.extraFiles ?? {});
  for (const [name] of extra) {
    if (name.startsWith("/") || name.split("/").includes("..") || name === "") {
      fail(`invalid extra file name "${name}"`);
    }
  }
  const floatDtypes = contents.tensors.map((t) => TORCH_DTYPE[t.dtype]).filter((d) => d !== undefined);
  const torchDtype = floatDtypes[0] ?? contents.config.torchDtype ?? "float32";
  await replaceDirAtomic(dir, async (tmp) => {
    await writeFileAtomic(
      joinPath(tmp, "config.json"),
      JSON.stringify(configToJson(contents.config, { torchDtype }), null, 2) + "\n",
    );
    await writeSafetensorsSharded(tmp, contents.tensors, {
      maxShardBytes: contents.maxShardBytes,
      metadata: { ...contents.metadata, format: "pt" },
    });
    for (const f of tokFiles) await Deno.copyFile(f, joinPath(tmp, f.slice(f.lastIndexOf("/") + 1)));
    for (const [name, value] of extra) {
      const target = joinPath(tmp, name);
      await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
      const data = typeof value === "string" || value instanceof Uint8Array
        ? value
        : JSON.stringify(value, null, 2) + "\n";
      await writeFileAtomic(target, data);
    }
  });
}

/** An opened checkpoint directory: validated config plus lazily opened weights. */
export interface OpenedCheckpoint {
  /** Directory path. */
  dir: string;
  /** Parsed config.json. */
  config: Qwen2Config;
  /** Weights reader; close it when done. */
  weights: SafetensorsCheckpoint;
}

/**
 * Open a checkpoint directory written by {@link saveCheckpointDir} or `transformers`: loads config.json and opens
 * the weights. If a writer crashed between its two renames, the surviving `dir.old-*` copy is read instead
 * ({@link resolveAtomicDir}; nothing is modified).
 */
export async function openCheckpointDir(dir: string): Promise<OpenedCheckpoint> {
  const found = await resolveAtomicDir(dir);
  if (found === null) throw new Error(`Cannot load checkpoint "${dir}": directory not found`);
  const config = await loadConfig(found);
  return { dir: found, config, weights: await SafetensorsCheckpoint.open(found) };
}
