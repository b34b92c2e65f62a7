/**
 * Request bodies of the scoring server: size-limited, UTF-8-checked JSON reading and field-by-field validation
 * into the reward-model contract (`ScoreItem`, `GenerateItem`). The wire format is snake_case JSON.
 *
 * Errors are {@linkcode HttpError}s: 413 body over `maxBodyBytes` (by `Content-Length` and by counting streamed
 * bytes), 400 bytes that are not UTF-8 or not JSON, 422 a field of the wrong type, missing, empty, out of range,
 * unknown, or longer than the documented limits ({@linkcode DEFAULT_LIMITS}); the error names the field.
 *
 * @module
 */
import type { GenerateItem, ScoreItem } from "../core/rm/types.ts";
import type { ShapingKind } from "../core/rewards/shaping.ts";

/** An error answered as `{"error": {"code", "message", "field"?}}` with an HTTP status. */
export class HttpError extends Error {
  /** HTTP status code. */
  readonly status: number;
  /** Machine-readable code, e.g. "invalid_field". */
  readonly code: string;
  /** The offending field as a path (`items[2].steps[0]`), when one is to blame. */
  readonly field?: string;
  /** Extra response headers (e.g. `Retry-After`). */
  readonly headers: Record<string, string>;
  /** Creates the error. */
  constructor(
    status: number,
    code: string,
    message: string,
    opts: { field?: string; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.code = code;
    this.field = opts.field;
    this.headers = opts.headers ?? {};
  }
}

/** Request limits of the server. */
export interface Limits {
  /** Largest request body in bytes (default 1 MiB). */
  maxBodyBytes: number;
  /** Most items in one batch request (default 64). */
  maxItems: number;
  /** Longest question, solution, step, gold answer or message, in UTF-16 characters (default 32,768). */
  maxTextChars: number;
  /** Most steps in one solution (default 256). */
  maxSteps: number;
  /** Largest `max_new_tokens` of a generation request (default 512). */
  maxNewTokens: number;
  /** Largest `n` (samples per prompt) of a generation request (default 16). */
  maxSamples: number;
}

/** Default {@linkcode Limits}: a 100,000-character solution is refused with 422 (over `maxTextChars`). */
export const DEFAULT_LIMITS: Readonly<Limits> = {
  maxBodyBytes: 1 << 20,
  maxItems: 64,
  maxTextChars: 32_768,
  maxSteps: 256,
  maxNewTokens: 512,
  maxSamples: 16,
};

/**
 * Reads a JSON body of at most `maxBytes` bytes: 413 when `Content-Length` says more or more bytes arrive
 * (reading stops there), 400 when the bytes are not UTF-8 or not JSON.
 */
export async function readJson(req: Request, maxBytes: number): Promise<unknown> {
  const tooLarge = (size: string) =>
    new HttpError(
      413,
      "body_too_large",
      `Request body of ${size} bytes exceeds the limit of ${maxBytes} bytes`,
      { headers: { connection: "close" } },
    );
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge(declared);
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (req.body) {
    const reader = req.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        await reader.cancel().catch(() => {});
        throw tooLarge(`at least ${size}`);
      }
      chunks.push(value);
    }
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) bytes.set(c, at), at += c.byteLength;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new HttpError(400, "invalid_utf8", "Request body is not valid UTF-8");
  }
  if (text.trim() === "") {
    throw new HttpError(400, "invalid_json", "Request body is empty: expected a JSON object");
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, "invalid_json", `Request body is not valid JSON (${(e as Error).message})`);
  }
}

const show = (v: unknown): string => {
  const s = v === undefined ? "nothing" : JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
};

/** Field-path-aware validators over one JSON object. */
class Fields {
  constructor(readonly obj: Record<string, unknown>, readonly path: string, readonly limits: Limits) {}

  static of(v: unknown, path: string, limits: Limits, allowed: readonly string[]): Fields {
    if (typeof v !== "object" || v === null || Array.isArray(v)) fail(path || "body", "a JSON object", v);
    const obj = v as Record<string, unknown>;
    const unknown = Object.keys(obj).find((k) => !allowed.includes(k));
    if (unknown !== undefined) {
      const where = join(path, unknown);
      throw new HttpError(
        422,
        "unknown_field",
        `Unknown field "${where}": expected one of ${allowed.join(", ")}`,
        {
          field: where,
        },
      );
    }
    return new Fields(obj, path, limits);
  }

  at(key: string): string {
    return join(this.path, key);
  }

  /** A non-empty string of at most maxTextChars characters (`undefined` when optional and absent). */
  text(key: string, optional: true): string | undefined;
  text(key: string, optional?: false): string;
  text(key: string, optional = false): string | undefined {
    const v = this.obj[key];
    if (v === undefined && optional) return undefined;
    return checkText(v, this.at(key), this.limits);
  }

  /** A boolean (`undefined` when absent). */
  boolean(key: string): boolean | undefined {
    const v = this.obj[key];
    if (v !== undefined && typeof v !== "boolean") fail(this.at(key), "a boolean", v);
    return v;
  }

  number(key: string, check: (n: number) => boolean, expected: string): number | undefined {
    const v = this.obj[key];
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v) || !check(v)) fail(this.at(key), expected, v);
    return v;
  }
}

const join = (path: string, key: string) => (path ? `${path}.${key}` : key);

function fail(field: string, expected: string, got: unknown): never {
  throw new HttpError(
    422,
    "invalid_field",
    `Invalid field "${field}": expected ${expected}, got ${show(got)}`,
    {
      field,
    },
  );
}

function checkText(v: unknown, field: string, limits: Limits): string {
  if (typeof v !== "string" || v.trim() === "") fail(field, "a non-empty string", v);
  if (v.length > limits.maxTextChars) {
    throw new HttpError(
      422,
      "text_too_long",
      `Invalid field "${field}": ${v.length} characters, more than the limit of ${limits.maxTextChars}`,
      { field },
    );
  }
  return v;
}

/** Validates a body that is either one item or `{"items": [...]}`; `single` says which. */
function itemsOf<T>(
  body: unknown,
  limits: Limits,
  parse: (v: unknown, path: string) => T,
): { items: T[]; single: boolean } {
  if (typeof body === "object" && body !== null && !Array.isArray(body) && "items" in body) {
    const f = Fields.of(body, "", limits, ["items"]);
    const list = f.obj.items;
    if (!Array.isArray(list) || list.length === 0) fail("items", "a non-empty array", list);
    if (list.length > limits.maxItems) {
      throw new HttpError(
        422,
        "too_many_items",
        `Invalid field "items": ${list.length} items, more than the limit of ${limits.maxItems}`,
        {
          field: "items",
        },
      );
    }
    return { items: list.map((v, i) => parse(v, `items[${i}]`)), single: false };
  }
  return { items: [parse(body, "")], single: true };
}

const SHAPING_KINDS: readonly ShapingKind[] = ["none", "clip", "delta", "clip_delta", "min"];

function parseScoreItem(v: unknown, path: string, limits: Limits): ScoreItem {
  const f = Fields.of(v, path, limits, ["question", "solution", "steps", "gold_answer", "shaping"]);
  const item: ScoreItem = { question: f.text("question") };
  const hasSolution = f.obj.solution !== undefined, hasSteps = f.obj.steps !== undefined;
  if (hasSolution === hasSteps) {
    const field = f.at(hasSolution ? "steps" : "solution");
    throw new HttpError(
      422,
      hasSolution ? "invalid_field" : "missing_field",
      `Invalid item "${path || "body"}": give exactly one of "solution" and "steps"`,
      {
        field,
      },
    );
  }
  if (hasSolution) {
    item.solution = f.text("solution");
  } else {
    const steps = f.obj.steps;
    if (!Array.isArray(steps) || steps.length === 0) {
      fail(f.at("steps"), "a non-empty array of strings", steps);
    }
    if (steps.length > limits.maxSteps) {
      throw new HttpError(
        422,
        "too_many_steps",
        `Invalid field "${f.at("steps")}": ${steps.length} steps, more than the limit of ${limits.maxSteps}`,
        {
          field: f.at("steps"),
        },
      );
    }
    item.steps = steps.map((s, i) => checkText(s, `${f.at("steps")}[${i}]`, limits));
    const total = item.steps.reduce((a, s) => a + s.length + 1, 0);
    if (total > limits.maxTextChars) {
      throw new HttpError(
        422,
        "text_too_long",
        `Invalid field "${
          f.at("steps")
        }": ${total} characters in all, more than the limit of ${limits.maxTextChars}`,
        {
          field: f.at("steps"),
        },
      );
    }
  }
  const gold = f.text("gold_answer", true);
  if (gold !== undefined) item.goldAnswer = gold;
  if (f.obj.shaping !== undefined) {
    const s = Fields.of(f.obj.shaping, f.at("shaping"), limits, ["kind", "eta", "final_step_zero"]);
    const kind = s.obj.kind as ShapingKind;
    if (!SHAPING_KINDS.includes(kind)) fail(s.at("kind"), `one of ${SHAPING_KINDS.join(", ")}`, kind);
    const eta = s.number("eta", (n) => n >= 0 && n <= 1, "a number in [0, 1]");
    if (eta === undefined && (kind === "clip" || kind === "clip_delta")) {
      throw new HttpError(
        422,
        "missing_field",
        `Missing field "${s.at("eta")}": shaping "${kind}" needs a threshold in [0, 1]`,
        {
          field: s.at("eta"),
        },
      );
    }
    const fsz = s.boolean("final_step_zero");
    item.shaping = {
      kind,
      ...(eta !== undefined && { eta }),
      ...(fsz !== undefined && { finalStepZero: fsz }),
    };
  }
  return item;
}

/** Validates a `POST /v1/score` body: one item, or `{"items": [...]}` of at most `maxItems`. */
export function parseScoreRequest(body: unknown, limits: Limits): { items: ScoreItem[]; single: boolean } {
  return itemsOf(body, limits, (v, path) => parseScoreItem(v, path, limits));
}

const isInt = (n: number) => Number.isInteger(n);

function parseGenerateItem(v: unknown, path: string, limits: Limits): GenerateItem {
  const f = Fields.of(v, path, limits, [
    "question",
    "messages",
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "n",
    "calculator",
  ]);
  const item: GenerateItem = {};
  const calc = f.boolean("calculator");
  if (calc !== undefined) item.calculator = calc;
  if ((f.obj.question === undefined) === (f.obj.messages === undefined)) {
    throw new HttpError(
      422,
      "missing_field",
      `Invalid item "${path || "body"}": give exactly one of "question" and "messages"`,
      {
        field: f.at("question"),
      },
    );
  }
  if (f.obj.question !== undefined) item.question = f.text("question");
  else {
    const msgs = f.obj.messages;
    if (!Array.isArray(msgs) || msgs.length === 0) {
      fail(f.at("messages"), "a non-empty array of messages", msgs);
    }
    item.messages = msgs.map((m, i) => {
      const mf = Fields.of(m, `${f.at("messages")}[${i}]`, limits, ["role", "content"]);
      const content = mf.obj.content;
      if (typeof content !== "string") fail(mf.at("content"), "a string", content);
      if (content.length > limits.maxTextChars) checkText(content, mf.at("content"), limits);
      return { role: mf.text("role"), content };
    });
  }
  const { maxNewTokens: maxNew, maxSamples } = limits;
  const num = (key: string, check: (n: number) => boolean, expected: string) =>
    f.number(key, check, expected);
  const fields: [keyof GenerateItem, number | undefined][] = [
    [
      "maxNewTokens",
      num("max_new_tokens", (n) => isInt(n) && n >= 1 && n <= maxNew, `an integer in [1, ${maxNew}]`),
    ],
    ["temperature", num("temperature", (n) => n >= 0, "a number >= 0")],
    ["topK", num("top_k", (n) => isInt(n) && n >= 0, "an integer >= 0")],
    ["topP", num("top_p", (n) => n > 0 && n <= 1, "a number in (0, 1]")],
    ["seed", num("seed", (n) => isInt(n) && n >= 0 && n < 2 ** 32, "an integer in [0, 2^32)")],
    ["n", num("n", (n) => isInt(n) && n >= 1 && n <= maxSamples, `an integer in [1, ${maxSamples}]`)],
  ];
  for (const [k, val] of fields) if (val !== undefined) (item as Record<string, unknown>)[k] = val;
  return item;
}

/** Validates a `POST /v1/generate` body: one item, or `{"items": [...]}` of at most `maxItems`. */
export function parseGenerateRequest(
  body: unknown,
  limits: Limits,
): { items: GenerateItem[]; single: boolean } {
  return itemsOf(body, limits, (v, path) => parseGenerateItem(v, path, limits));
}
