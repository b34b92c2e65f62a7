/**
 * Safetensors reader and writer (https://github.com/huggingface/safetensors format):
 * `u64 LE header length N | N bytes UTF-8 JSON header | data`, header
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}` with offsets relative to the
 * data section. The reader validates the header as strictly as the reference Rust implementation (sane length,
 * valid JSON, known dtypes, `prod(shape) · itemsize = end − begin`, tensors tiling the data section without
 * overlap or gap) and reads one tensor (or a row range of it) at a time with seek + read on a single file handle,
 * never the whole file. F16/BF16/F64/integer tensors are widened to Float32Array on request.
 *
 * @module
 */

/** Bytes per element of each dtype. */
export const DTYPE_SIZE = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
} as const;

/** Element types defined by the safetensors format. */
export type SafetensorsDtype = keyof typeof DTYPE_SIZE;

/** Largest header accepted (same limit as the Rust crate). */
export const MAX_HEADER_BYTES = 100_000_000;

/** One tensor's header entry. `byteOffset` is absolute in the file. */
export interface TensorInfo {
  /** Tensor name, e.g. "model.layers.0.self_attn.q_proj.weight". */
  name: string;
  /** Element type on disk. */
  dtype: SafetensorsDtype;
  /** Shape (row-major); [] for a scalar. */
  shape: number[];
  /** Absolute byte offset of the first element in the file. */
  byteOffset: number;
  /** Byte length (= prod(shape) · itemsize). */
  byteLength: number;
  /** Path of the file holding the tensor. */
  file: string;
}

/** Parsed header: tensors in file order plus the `__metadata__` map. */
export interface SafetensorsHeader {
  /** Tensors sorted by byte offset. */
  tensors: TensorInfo[];
  /** String metadata (`__metadata__`), {} when absent. */
  metadata: Record<string, string>;
  /** Byte offset where the data section starts (8 + N). */
  dataStart: number;
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("Cannot use safetensors: a little-endian host is required");
}

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/**
 * Parse and validate a header. `prefix` holds at least the first `8 + N` bytes of the file, `fileSize` is the
 * full file size and `source` names the file in errors.
 */
export function parseSafetensorsHeader(
  prefix: Uint8Array,
  fileSize: number,
  source: string,
): SafetensorsHeader {
  const bad = (msg: string): never => {
    throw new Error(`Cannot read safetensors "${source}": ${msg}`);
  };
  if (fileSize < 8) bad(`file is ${fileSize} bytes, too small for the 8-byte header length`);
  const n64 = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    bad(`header length ${n64} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);
  }
  const n = Number(n64);
  if (8 + n > fileSize) {
    bad(`file is truncated: header length ${n} exceeds the ${fileSize - 8} bytes after it`);
  }
  if (prefix.length < 8 + n) bad(`only ${prefix.length} header bytes were read, expected ${8 + n}`);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(prefix.subarray(8, 8 + n)));
  } catch (e) {
    bad(`header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) bad("header is not a JSON object");
  const dataStart = 8 + n;
  const dataSize = fileSize - dataStart;
  const tensors: TensorInfo[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof v !== "object" || v === null || Object.values(v).some((x) => typeof x !== "string")) {
        bad(`"__metadata__" must map strings to strings, got ${JSON.stringify(v)}`);
      }
      metadata = v as Record<string, string>;
      continue;
    }
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const where = `tensor "${name}"`;
    if (typeof e !== "object" || e === null) {
      bad(`${where}: entry must be an object, got ${JSON.stringify(v)}`);
    }
    if (typeof e.dtype !== "string" || !(e.dtype in DTYPE_SIZE)) {
      bad(
        `${where}: unknown dtype ${JSON.stringify(e.dtype)}, expected one of ${
          Object.keys(DTYPE_SIZE).join(", ")
        }`,
      );
    }
    const shape = e.shape;
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      bad(`${where}: shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    const off = e.data_offsets;
    if (
      !Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      off[1] < off[0]
    ) bad(`${where}: data_offsets must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(off)}`);
    const dtype = e.dtype as SafetensorsDtype;
    const expect = numel(shape as number[]) * DTYPE_SIZE[dtype];
    const [b, end] = off as number[];
    if (expect !== end - b) {
      bad(
        `${where}: shape ${JSON.stringify(shape)} × ${
          DTYPE_SIZE[dtype]
        } bytes (${dtype}) = ${expect} bytes, ` +
          `but data_offsets span ${end - b}`,
      );
    }
    tensors.push({
      name,
      dtype,
      shape: shape as number[],
      byteOffset: dataStart + b,
      byteLength: end - b,
      file: source,
    });
  }
  tensors.sort((a, b) => a.byteOffset - b.byteOffset || a.byteLength - b.byteLength);
  let pos = dataStart;
  let prev = "";
  for (const t of tensors) {
    if (t.byteOffset < pos) {
      bad(`tensor "${t.name}" overlaps tensor "${prev}" (data_offsets are not disjoint)`);
    }
    if (t.byteOffset > pos) bad(`gap of ${t.byteOffset - pos} bytes before tensor "${t.name}"`);
    if (t.byteOffset + t.byteLength > fileSize) {
      bad(
        `file is truncated: tensor "${t.name}" ends at data byte ${
          t.byteOffset + t.byteLength - dataStart
        }, ` +
          `but the data section has ${dataSize} bytes`,
      );
    }
    pos = t.byteOffset + t.byteLength;
    prev = t.name;
  }
  if (pos !== fileSize) {
    bad(`${fileSize - pos} trailing bytes after the last tensor (data section does not match)`);
  }
  return { tensors, metadata, dataStart };
}

// ---- dtype conversion -------------------------------------------------------------------------------------

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** f32 → bf16 bits, round-to-nearest-even (NaN stays a quiet NaN with its sign; overflow rounds to ±inf). */
export function f32ToBf16Bits(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x0040;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** bf16 bits → f32 value (exact: bf16 is the top half of an f32). */
export function bf16BitsToF32(h: number): number {
  u32Scratch[0] = (h & 0xffff) << 16;
  return f32Scratch[0];
}

/**
 * f32 → IEEE binary16 bits, round-to-nearest-even, including subnormals (|x| < 2^−14), overflow to ±inf
 * (|x| ≥ 65520) and NaN (quiet, sign kept).
 */
export function f32ToF16Bits(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e; // value = r · 2^−24
    let r = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) r++; // a carry into the exponent is the correct result
  return sign | r;
}

/** binary16 bits → f32 value (exact). */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

let f16Table: Float32Array | null = null;
function f16Lut(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32(h);
  }
  return f16Table;
}

/** Widen little-endian `bytes` of `dtype` to a Float32Array (F8 types are not supported). */
export function decodeToF32(bytes: Uint8Array, dtype: SafetensorsDtype): Float32Array {
  const n = bytes.length / DTYPE_SIZE[dtype];
  const buf = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  const view = <T>(C: new (b: ArrayBufferLike, o: number, n: number) => T): T =>
    new C(buf.buffer, buf.byteOffset, n);
  switch (dtype) {
    case "F32":
      return view(Float32Array);
    case "BF16": {
      const src = view(Uint16Array);
      const out = new Uint32Array(n);
      for (let i = 0; i < n; i++) out[i] = src[i] << 16;
      return new Float32Array(out.buffer);
    }
    case "F16": {
      const src = view(Uint16Array);
      const lut = f16Lut();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = lut[src[i]];
      return out;
    }
    case "F64":
      return Float32Array.from(view(Float64Array));
    case "I64":
    case "U64": {
      const src = dtype === "I64" ? view(BigInt64Array) : view(BigUint64Array);
      return Float32Array.from(src, (v) => Number(v));
    }
    case "BOOL":
    case "U8":
      return Float32Array.from(buf);
    case "I8":
      return Float32Array.from(view(Int8Array));
    case "I16":
      return Float32Array.from(view(Int16Array));
    case "U16":
      return Float32Array.from(view(Uint16Array));
    case "I32":
      return Float32Array.from(view(Int32Array));
    case "U32":
      return Float32Array.from(view(Uint32Array));
    default:
      throw new Error(`Cannot convert dtype "${dtype}" to float32: not supported`);
  }
}

/** Narrow f32 values to little-endian bytes of `dtype` (F32, F16 or BF16; rounding to nearest even). */
export function encodeF32(data: Float32Array, dtype: "F32" | "F16" | "BF16"): Uint8Array {
  if (dtype === "F32") return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint16Array(data.length);
  if (dtype === "BF16") {
    const u = new Uint32Array(data.buffer, data.byteOffset, data.length);
    for (let i = 0; i < data.length; i++) {
      const b = u[i];
      out[i] = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  } else {
    for (let i = 0; i < data.length; i++) out[i] = f32ToF16Bits(data[i]);
  }
  return new Uint8Array(out.buffer);
}

// ---- reader -----------------------------------------------------------------------------------------------

/** Options to read part of a tensor: rows `[rowStart, rowStart + rowCount)` of its leading dimension. */
export interface ReadOptions {
  /** First row (default 0). */
  rowStart?: number;
  /** Number of rows (default: all rows from rowStart). */
  rowCount?: number;
}

/**
 * One open `.safetensors` file. Holds a single file handle; reads are serialised (seek + read is not reentrant)
 * and fetch exactly the requested bytes. Close it with {@link SafetensorsFile.close} or `using`.
 */
export class SafetensorsFile {
  /** Path the file was opened from. */
  readonly path: string;
  /** `__metadata__` of the header. */
  readonly metadata: Record<string, string>;
  readonly #file: Deno.FsFile;
  readonly #tensors: Map<string, TensorInfo>;
  readonly #size: number;
  #lock: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(path: string, file: Deno.FsFile, header: SafetensorsHeader, size: number) {
    this.path = path;
    this.#file = file;
    this.metadata = header.metadata;
    this.#tensors = new Map(header.tensors.map((t) => [t.name, t]));
    this.#size = size;
  }

  /** Open `path` and parse + validate its header (reads only the header bytes). */
  static async open(path: string): Promise<SafetensorsFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new Error(`Cannot read safetensors "${path}": file not found`);
      }
      throw e;
    }
    try {
      const size = (await file.stat()).size;
      const lenBytes = await readAt(file, 0, Math.min(8, size), path);
      let prefix = lenBytes;
      if (size >= 8) {
        const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
        if (n <= BigInt(MAX_HEADER_BYTES) && 8 + Number(n) <= size) {
          prefix = new Uint8Array(8 + Number(n));
          prefix.set(lenBytes);
          prefix.set(await readAt(file, 8, Number(n), path), 8);
        }
      }
      return new SafetensorsFile(path, file, parseSafetensorsHeader(prefix, size, path), size);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** All tensors in file order. */
  list(): TensorInfo[] {
    return [...this.#tensors.values()];
  }

  /** Whether the file holds tensor `name`. */
  has(name: string): boolean {
    return this.#tensors.has(name);
  }

  /** Header entry of `name`; throws naming the file when missing. */
  info(name: string): TensorInfo {
    const t = this.#tensors.get(name);
    if (!t) {
      throw new Error(
        `Cannot read safetensors "${this.path}": tensor "${name}" is missing ` +
          `(file has ${this.#tensors.size} tensors)`,
      );
    }
    return t;
  }

  /** Raw little-endian bytes of `name` (or of a row range, see {@link ReadOptions}). */
  readRaw(name: string, opts: ReadOptions = {}): Promise<Uint8Array> {
    const t = this.info(name);
    const { offset, length } = rowRange(t, opts, this.path);
    if (offset + length > this.#size) {
      throw new Error(
        `Cannot read safetensors "${this.path}": tensor "${name}" lies beyond the end of the file`,
      );
    }
    const run = () => {
      if (this.#closed) throw new Error(`Cannot read safetensors "${this.path}": file is closed`);
      return readAt(this.#file, offset, length, this.path, name);
    };
    const p = this.#lock.then(run, run);
    this.#lock = p.catch(() => {});
    return p;
  }

  /** Tensor `name` (or a row range) widened to Float32Array, converting F16/BF16/F64/integers exactly. */
  async readTensorF32(name: string, opts: ReadOptions = {}): Promise<Float32Array> {
    const t = this.info(name);
    return decodeToF32(await this.readRaw(name, opts), t.dtype);
  }

  /** Close the file handle (idempotent). Pending reads finish first. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#lock;
    this.#closed = true;
    this.#file.close();
  }

  /** `await using f = await SafetensorsFile.open(p)` support. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Byte range of a row slice of `t` along its leading dimension. */
function rowRange(t: TensorInfo, opts: ReadOptions, source: string): { offset: number; length: number } {
  if (opts.rowStart === undefined && opts.rowCount === undefined) {
    return { offset: t.byteOffset, length: t.byteLength };
  }
  const rows = t.shape[0];
  const start = opts.rowStart ?? 0;
  const count = opts.rowCount ?? rows - start;
  if (
    t.shape.length === 0 || !Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 ||
    start + count > rows
  ) {
    throw new Error(
      `Cannot read safetensors "${source}": rows [${start}, ${start + count}) are out of range ` +
        `for tensor "${t.name}" with shape ${JSON.stringify(t.shape)}`,
    );
  }
  const rowBytes = t.byteLength / rows;
  return { offset: t.byteOffset + start * rowBytes, length: count * rowBytes };
}

/** Read exactly `length` bytes at `offset`; errors name the file (and tensor) when the file ends early. */
async function readAt(
  file: Deno.FsFile,
  offset: number,
  length: number,
  source: string,
  tensor?: string,
): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await file.seek(offset, Deno.SeekMode.Start);
  let got = 0;
  while (got < length) {
    const n = await file.read(out.subarray(got));
    if (n === null) {
      throw new Error(
        `Cannot read safetensors "${source}": file is truncated` +
          `${tensor ? ` inside tensor "${tensor}"` : ""} (got ${got} of ${length} bytes at offset ${offset})`,
      );
    }
    got += n;
  }
  return out;
}
