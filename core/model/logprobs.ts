/**
 * Fused target log-probabilities (`shaders/logprobs.wgsl`): log p(t_r | x_r), logsumexp and entropy per row of a
 * logits matrix, and the backward pass — without materialising log-softmax over the vocabulary.
 *
 * @module
 */
import src from "../../shaders/logprobs.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import {
  grid1d,
  type KernelSpec,
  MAX_LOOP_ITERATIONS,
  type ParamField,
  useRowsVariant,
} from "../gpu/kernel.ts";
import { rowShards } from "../gpu/shard.ts";
import { expectShape, type Tensor, type TensorView } from "../gpu/tensor.ts";

const WG = 256;
const PARAMS: ParamField[] = [["rows", "u32"], ["vocab", "u32"]];
const FORWARD: KernelSpec = {
  name: "logprobs.forward",
  code: src,
  entry: "forward",
  constants: { WG },
  params: PARAMS,
  bindings: ["x", "targets", "logp", "lse", "entropy", "", "", ""],
};
/** One invocation per row, no barriers: for CPU adapters. */
const ROWS_WG = 16;
const FORWARD_ROWS: KernelSpec = {
  ...FORWARD,
  name: "logprobs.forward_rows",
  entry: "forward_rows",
  constants: { WG: ROWS_WG },
};
const BACKWARD: KernelSpec = {
  name: "logprobs.backward",
  code: src,
  entry: "backward",
  constants: { WG },
  params: PARAMS,
  bindings: ["x", "targets", "", "lse", "entropy", "dlogp", "dentropy", "dx"],
};

function rowsOf(t: Tensor, n: number, start: number, count: number): TensorView {
  return t.view(start * n, count * n);
}

/** Options of {@linkcode logprobsForward}. */
export interface LogprobsOptions {
  /**
   * `"workgroup"` (one workgroup per row, tree reductions: GPUs), `"rows"` (one invocation per row, no
   * barriers: CPU adapters; V ≤ 32767) or `"auto"` (default: rows on a CPU adapter when V allows).
   */
  variant?: "auto" | "workgroup" | "rows";
}

/**
 * Forward. Shapes: `x` (R, V) logits, `targets` (R) i32 (−1 = ignored row, whose log-prob is 0);
 * outputs `logp`, `lse`, `entropy` (R): logp_r = x[r, t_r] − lse_r, lse_r = log Σ_v e^{x[r,v]},
 * entropy_r = −Σ_v p_v log p_v. Rows are sharded when `x` exceeds the storage-binding limit.
 */
export function logprobsForward(
  batch: Batch,
  out: { logp: Tensor; lse: Tensor; entropy: Tensor },
  x: Tensor,
  targets: Tensor,
  opts: LogprobsOptions = {},
): void {
  const [R, V] = x.shape;
  expectShape(targets, [R], "logprobs.forward targets");
  for (const t of [out.logp, out.lse, out.entropy]) expectShape(t, [R], "logprobs.forward output");
  // The rows kernel's invocations loop twice over V: within the loop budget of CPU adapters.
  const unfit = 2 * V > MAX_LOOP_ITERATIONS
    ? `the rows kernel loops over V twice, at most ${MAX_LOOP_ITERATIONS} times; V = ${V}`
    : undefined;
  const rows = useRowsVariant(batch.gpu, opts.variant, "logprobs", unfit);
  const max = batch.gpu.limits.maxWorkgroupsPerDimension;
  for (const { start, count } of rowShards(batch.gpu, R, [V, 1])) {
    if (count === 0) continue;
    batch.dispatch(
      rows ? FORWARD_ROWS : FORWARD,
      {
        x: rowsOf(x, V, start, count),
        targets: rowsOf(targets, 1, start, count),
        logp: rowsOf(out.logp, 1, start, count),
        lse: rowsOf(out.lse, 1, start, count),
        entropy: rowsOf(out.entropy, 1, start, count),
      },
      rows ? grid1d(Math.ceil(count / ROWS_WG), max) : grid1d(count, max),
      { rows: count, vocab: V },
    );
  }
}

/**
 * Backward: dx[r, v] = dlogp_r·(1[v = t_r] − p_v) − dentropy_r·p_v·(log p_v + entropy_r), with p = softmax(x_r)
 * recomputed from the saved `lse`. `dx` (R, V) is overwritten.
 */
export function logprobsBackward(
  batch: Batch,
  dx: Tensor,
  grads: { dlogp: Tensor; dentropy: Tensor },
  x: Tensor,
  targets: Tensor,
  saved: { lse: Tensor; entropy: Tensor },
): void {
  const [R, V] = x.shape;
  expectShape(dx, [R, V], "logprobs.backward dx");
  for (const { start, count } of rowShards(batch.gpu, R, [V, 1])) {
    if (count === 0) continue;
    batch.dispatch(
      BACKWARD,
      {
        x: rowsOf(x, V, start, count),
        targets: rowsOf(targets, 1, start, count),
        lse: rowsOf(saved.lse, 1, start, count),
        entropy: rowsOf(saved.entropy, 1, start, count),
        dlogp: rowsOf(grads.dlogp, 1, start, count),
        dentropy: rowsOf(grads.dentropy, 1, start, count),
        dx: rowsOf(dx, V, start, count),
      },
      grid1d(count, batch.gpu.limits.maxWorkgroupsPerDimension),
      { rows: count, vocab: V },
    );
  }
}
