/**
 * Token embeddings (`shaders/embedding.wgsl`): the gather `out[t] = table[ids[t]]` and its deterministic
 * backward scatter-add `dTable[ids[t]] += dOut[t]`.
 *
 * Out-of-range ids (outside `[0, V)`) never read memory: their output rows are zeros and, when a status tensor is
 * passed, they are counted on the GPU so the caller can check them with {@linkcode checkEmbeddingStatus} after
 * the batch runs (reading the 8-byte status alongside other reads costs no extra sync). They receive no gradient.
 *
 * Tables and activations larger than the storage-binding limit are processed in vocab-row and token shards.
 *
 * @module
 */
import src from "../../shaders/embedding.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import { grid1d, type KernelSpec, MAX_LOOP_ITERATIONS, type ParamField } from "../gpu/kernel.ts";
import { rowShards } from "../gpu/shard.ts";
import { expectShape, Tensor } from "../gpu/tensor.ts";

const WG = 256;
const PARAM_NAMES = ["n", "C", "vStart", "vCount", "V", "tStart", "tCount", "N", "k", "j"] as const;
const PARAMS: ParamField[] = PARAM_NAMES.map((n) => [n, "u32"]);
type Params = Partial<Record<(typeof PARAM_NAMES)[number], number>>;
const spec = (entry: string, bindings: string[]): KernelSpec => ({
  name: `embedding.${entry}`,
  code: src,
  entry,
  constants: { WG },
  params: PARAMS,
  bindings,
});
const KERNELS = {
  forward: spec("forward", ["table", "ids", "out", "", ""]),
  forwardChecked: spec("forward_checked", ["table", "ids", "out", "status", ""]),
  sortInit: spec("sort_init", ["", "", "", "", "perm"]),
  sortStep: spec("sort_step", ["", "ids", "", "", "perm"]),
  scatter: spec("scatter", ["dOut", "ids", "dTable", "", "perm"]),
};

/** Uniform values with every field present (unused ones 0). */
function params(values: Params): Record<string, number> {
  return Object.fromEntries(PARAM_NAMES.map((n) => [n, values[n] ?? 0]));
}

/** Options of {@linkcode embedding}. */
export interface EmbeddingOptions {
  /**
   * A `u32` tensor of shape `[2]`, zeroed by the caller, that accumulates out-of-range ids:
   * `[count of such tokens, 0xFFFFFFFF − index of the first one]`. Check it with {@linkcode checkEmbeddingStatus}.
   */
  status?: Tensor;
}

function checkDtype(name: string, t: Tensor, dtype: string): void {
  if (t.dtype !== dtype) {
    throw new Error(`${name}: tensor "${t.label}" has dtype ${t.dtype}, expected ${dtype}`);
  }
}

/** Validates `(T, C)` activations against a `(V, C)` table and `(T)` ids; returns `[T, V, C]`. */
function dims(name: string, rows: Tensor, table: Tensor, ids: Tensor): [number, number, number] {
  if (table.shape.length !== 2) {
    throw new Error(`${name}: tensor "${table.label}" has shape [${table.shape}], expected (V, C)`);
  }
  const [V, C] = table.shape;
  if (V === 0) throw new Error(`${name}: tensor "${table.label}" has an empty vocabulary`);
  const T = ids.size;
  expectShape(ids, [T], name);
  expectShape(rows, [T, C], name);
  checkDtype(name, ids, "i32");
  checkDtype(name, table, "f32");
  checkDtype(name, rows, "f32");
  if (T * 4 > table.gpu.limits.maxBindingSize) {
    throw new Error(
      `${name}: ${T} token ids exceed the storage binding limit of ${table.gpu.limits.maxBindingSize} bytes`,
    );
  }
  return [T, V, C];
}

/**
 * Embedding gather: `out[t, c] = table[ids[t], c]` for `ids: (T)` i32, `table: (V, C)`, `out: (T, C)`.
 * Rows of out-of-range ids are zero; pass `opts.status` to count them.
 *
 * @example
 * ```ts
 * const status = zeros(gpu, [2], { dtype: "u32", label: "status" });
 * embedding(batch, x, wte, ids, { status });
 * const s = batch.read(status);
 * await batch.submit();
 * checkEmbeddingStatus(await s, { vocab: wte.shape[0] });
 * ```
 */
export function embedding(
  batch: Batch,
  out: Tensor,
  table: Tensor,
  ids: Tensor,
  opts: EmbeddingOptions = {},
): void {
  const kernel = opts.status ? KERNELS.forwardChecked : KERNELS.forward;
  const [T, V, C] = dims(kernel.name, out, table, ids);
  if (opts.status) {
    expectShape(opts.status, [2], kernel.name);
    checkDtype(kernel.name, opts.status, "u32");
  }
  if (T === 0 || C === 0) return;
  const gpu = batch.gpu;
  const tokenShards = rowShards(gpu, T, C);
  for (const v of rowShards(gpu, V, C)) {
    for (const t of tokenShards) {
      const bindings: Record<string, Tensor | ReturnType<Tensor["view"]>> = {
        table: table.view(v.start * C, v.count * C),
        ids,
        out: out.view(t.start * C, t.count * C),
      };
      if (opts.status) bindings.status = opts.status;
      const n = t.count * C;
      batch.dispatch(
        kernel,
        bindings,
        grid1d(Math.ceil(n / WG), gpu.limits.maxWorkgroupsPerDimension),
        params({
          n,
          C,
          vStart: v.start,
          vCount: v.count,
          V,
          tStart: t.start,
        }),
      );
    }
  }
}

/**
 * Embedding backward, accumulating in place: `dTable[ids[t], c] += dOut[t, c]` for every in-range token.
 * Deterministic (no float atomics): tokens are sorted by `(id, t)` on the GPU and each `(row, c)` is summed by one
 * thread in token order, then added once to `dTable`. `dTable` must not alias `dOut`.
 */
export function embeddingBackward(batch: Batch, dTable: Tensor, dOut: Tensor, ids: Tensor): void {
  const name = KERNELS.scatter.name;
  const [T, V, C] = dims(name, dOut, dTable, ids);
  if (T === 0 || C === 0) return;
  const gpu = batch.gpu;
  const N = 2 ** Math.ceil(Math.log2(T));
  if (N * 4 > gpu.limits.maxBindingSize) {
    throw new Error(
      `${name}: a sort of ${N} token slots exceeds the storage binding limit of ${gpu.limits.maxBindingSize} bytes`,
    );
  }
  const maxPerDim = gpu.limits.maxWorkgroupsPerDimension;
  const perm = new Tensor(gpu, [N], "u32", `${dTable.label}.perm`);
  batch.dispatch(KERNELS.sortInit, { perm }, grid1d(Math.ceil(N / WG), maxPerDim), params({ n: T, N }));
  const half = grid1d(Math.ceil(N / 2 / WG), maxPerDim);
  for (let k = 2; k <= N; k *= 2) {
    for (let j = k / 2; j >= 1; j /= 2) {
      batch.dispatch(KERNELS.sortStep, { ids, perm }, half, params({ n: T, N, k, j }));
    }
  }
  const groups = grid1d(Math.ceil((T * C) / WG), maxPerDim);
  for (const v of rowShards(gpu, V, C)) {
    // An invocation sums one token's run inside the window of tokens: windows within the loop budget of CPU
    // adapters (MAX_LOOP_ITERATIONS).
    for (const t of rowShards(gpu, T, C, { maxRows: MAX_LOOP_ITERATIONS - 1 })) {
      const bindings = {
        dOut: dOut.view(t.start * C, t.count * C),
        ids,
        dTable: dTable.view(v.start * C, v.count * C),
        perm,
      };
      batch.dispatch(
        KERNELS.scatter,
        bindings,
        groups,
        params({
          n: T,
          C,
          vStart: v.start,
          vCount: v.count,
          V,
          tStart: t.start,
          tCount: t.count,
        }),
      );
    }
  }
  perm.release();
}

/**
 * Throws if a status tensor filled by {@linkcode embedding} (read back as `[count, 0xFFFFFFFF − first]`) reports
 * out-of-range token ids, naming the count and the first token.
 */
export function checkEmbeddingStatus(
  status: ArrayLike<number>,
  opts: { vocab: number; label?: string },
): void {
  const count = status[0];
  if (!count) return;
  const first = 0xffffffff - status[1];
  throw new Error(
    `Embedding${opts.label ? ` "${opts.label}"` : ""}: ${count} token id${
      count === 1 ? " is" : "s are"
    } outside ` +
      `the vocabulary [0, ${opts.vocab}) (first at token ${first})`,
  );
}
