/**
 * PPO losses on the GPU (`shaders/ppo_loss.wgsl`): the WGSL twin of `ppoLoss` in `ppo_loss.ts`, with
 * the same definitions, defaults and masked means, in f32. Three dispatches: per-workgroup partial sums of the
 * per-token terms, a one-workgroup finalize writing the statistics, and a per-token backward writing
 * d loss/d logp and d loss/d V (already divided by the valid-token count n, so they are the gradients of the
 * masked means). Reductions have a fixed order (no atomics): results are bit-reproducible.
 *
 * Unlike the reference, which throws, an all-masked batch (n = 0) gives 0 statistics and 0 gradients.
 *
 * @module
 */
import src from "../../shaders/ppo_loss.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import { readF32 } from "../gpu/io.ts";
import { grid1d, type KernelSpec, type ParamField } from "../gpu/kernel.ts";
import { rowShards } from "../gpu/shard.ts";
import { expectShape, Tensor, type TensorView } from "../gpu/tensor.ts";
import type { KLEstimator } from "./kl.ts";

const WG = 256;
/** Tokens summed by one workgroup of the partials pass. */
const CHUNK = 4096;
/** Per-token sums per workgroup partial (NSUM in the shader). */
const NSUM = 9;

/**
 * Names of the statistics in the stats tensor, in order (see `PPOLossResult` in `ppo_loss.ts` for
 * their definitions); `tokens` is the valid-token count n = Σ mask.
 */
export const PPO_STATS = [
  "loss",
  "policyLoss",
  "valueLoss",
  "entropy",
  "clipFrac",
  "approxKL",
  "approxKLk2",
  "klLoss",
  "valueClipFrac",
  "tokens",
] as const;

/** One statistic of {@linkcode PPO_STATS}. */
export type PPOStatName = typeof PPO_STATS[number];

/** The statistics of {@linkcode ppoLossGpu} by name (all 0 when no token is valid). */
export type PPOStats = Record<PPOStatName, number>;

const PARAMS: ParamField[] = [
  ["n", "u32"],
  ["chunk", "u32"],
  ["groupBase", "u32"],
  ["groups", "u32"],
  ["hasMask", "u32"],
  ["hasValues", "u32"],
  ["hasEntropy", "u32"],
  ["klEstimator", "u32"],
  ["writeDLogp", "u32"],
  ["writeDValues", "u32"],
  ["clipRange", "f32"],
  ["clipRangeValue", "f32"],
  ["vfCoef", "f32"],
  ["entCoef", "f32"],
  ["klCoef", "f32"],
];
const TOKEN_INPUTS = [
  "logp",
  "logpOld",
  "advantages",
  "mask",
  "values",
  "valuesOld",
  "returns",
  "entropy",
  "logpRef",
] as const;
const spec = (entry: string, bindings: string[]): KernelSpec => ({
  name: `ppo_loss.${entry}`,
  code: src,
  entry,
  constants: { WG },
  params: PARAMS,
  bindings,
});
const KERNELS = {
  partials: spec("forward_partials", [...TOKEN_INPUTS, "partials", "", "", ""]),
  finalize: spec("forward_finalize", ["", "", "", "", "", "", "", "", "", "partials", "stats", "", ""]),
  backward: spec("backward", [
    ...TOKEN_INPUTS.map((n) => (n === "entropy" ? "" : n)),
    "",
    "stats",
    "dLogp",
    "dValues",
  ]),
};
/** Storage buffers bound by the widest entry point (backward). */
const MAX_BINDINGS = 11;
const ESTIMATORS: Record<KLEstimator, number> = { k1: 1, k2: 2, k3: 3 };

/** Outputs of {@linkcode ppoLossGpu}. */
export interface PPOLossGpuOutputs {
  /** Statistics, shape `[PPO_STATS.length]` in {@linkcode PPO_STATS} order; read with {@linkcode readPPOStats}. */
  stats: Tensor;
  /** d loss / d logp_t, shape of `logp` (0 at masked tokens); omit to skip it. */
  dLogp?: Tensor;
  /** d loss / d V_t, shape of `logp` (all 0 without values); omit to skip it. */
  dValues?: Tensor;
}

/** Per-token f32 inputs of {@linkcode ppoLossGpu}, all of `logp`'s shape (e.g. (B, T)). */
export interface PPOLossGpuInputs {
  /** log π_θ(a_t) of the current policy. */
  logp: Tensor;
  /** log π_old(a_t) of the sampling policy. */
  logpOld: Tensor;
  /** Advantages A_t. */
  advantages: Tensor;
  /** Optional 0/1 mask (1 = valid token); default all valid. */
  mask?: Tensor;
  /** Current value predictions V_t; give with `valuesOld` and `returns` for the value loss. */
  values?: Tensor;
  /** Value predictions at sampling time (centre of the value clip). */
  valuesOld?: Tensor;
  /** Return targets R_t. */
  returns?: Tensor;
  /** Optional per-token entropy H_t (enters the loss value only). */
  entropy?: Tensor;
  /** log π_ref(a_t) for the in-loss KL term; required with `klInLoss`. */
  logpRef?: Tensor;
}

/** Options of {@linkcode ppoLossGpu}: those of `ppoLoss`, with `logpRef` moved to the inputs. */
export interface PPOLossGpuOptions {
  /** Policy ratio clip ε (default 0.2). */
  clipRange?: number;
  /** Value clip ε_v around V_old (default 0.2). */
  clipRangeValue?: number;
  /** Weight of the value loss (default 0.1). */
  vfCoef?: number;
  /** Weight of the entropy bonus (default 0). */
  entCoef?: number;
  /** In-loss KL penalty β·mean(k_t) against `inputs.logpRef` (estimator default "k3"). */
  klInLoss?: { coef: number; estimator?: KLEstimator };
}

function nonNegative(name: string, v: number): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
    throw new Error(`ppo_loss: invalid option "${name}": expected a finite number >= 0, got "${v}"`);
  }
  return v;
}

function checkF32(t: Tensor, name: string): void {
  if (t.dtype !== "f32") {
    throw new Error(`ppo_loss: "${name}" (tensor "${t.label}") has dtype ${t.dtype}, expected f32`);
  }
}

/** Validates a {@linkcode ppoLossGpu} call and returns its kernel parameters (dims not yet set). */
function checkCall(gpu: Gpu, out: PPOLossGpuOutputs, inputs: PPOLossGpuInputs, opts: PPOLossGpuOptions) {
  const what = "ppo_loss";
  const { logp } = inputs;
  if (logp.size === 0) throw new Error(`${what}: tensor "${logp.label}" of shape [${logp.shape}] is empty`);
  const given: [string, Tensor][] = [];
  for (const name of TOKEN_INPUTS) {
    const t = inputs[name];
    if (t === undefined) continue;
    checkF32(t, name);
    expectShape(t, logp.shape, `${what}: input "${name}"`);
    given.push([name, t]);
  }
  for (const name of ["dLogp", "dValues"] as const) {
    const t = out[name];
    if (t === undefined) continue;
    checkF32(t, name);
    expectShape(t, logp.shape, `${what}: output "${name}"`);
  }
  checkF32(out.stats, "stats");
  expectShape(out.stats, [PPO_STATS.length], `${what}: output "stats"`);
  for (const o of [out.stats, out.dLogp, out.dValues]) {
    const alias = given.find(([, t]) => o !== undefined && t.buffer === o.buffer);
    if (alias) throw new Error(`${what}: output tensor "${o!.label}" aliases input "${alias[0]}"`);
  }
  if (out.dLogp && out.dValues && out.dLogp.buffer === out.dValues.buffer) {
    throw new Error(`${what}: outputs "dLogp" and "dValues" share tensor "${out.dValues.label}"`);
  }
  const v = [inputs.values, inputs.valuesOld, inputs.returns];
  const hasValues = v.some((t) => t !== undefined);
  if (hasValues && v.some((t) => t === undefined)) {
    throw new Error(`${what}: "values", "valuesOld" and "returns" must be given together`);
  }
  const kl = opts.klInLoss;
  if ((kl === undefined) !== (inputs.logpRef === undefined)) {
    throw new Error(`${what}: the "klInLoss" option and the "logpRef" input must be given together`);
  }
  const estimator = kl?.estimator ?? "k3";
  if (!(estimator in ESTIMATORS)) {
    throw new Error(`${what}: invalid KL estimator "${estimator}": expected "k1", "k2" or "k3"`);
  }
  const maxBuffers = gpu.device.limits.maxStorageBuffersPerShaderStage;
  if (maxBuffers < MAX_BINDINGS) {
    throw new Error(
      `${what}: the device allows ${maxBuffers} storage buffers per shader stage, the kernels need ${MAX_BINDINGS}`,
    );
  }
  return {
    n: 0,
    chunk: CHUNK,
    groupBase: 0,
    groups: 0,
    hasMask: inputs.mask ? 1 : 0,
    hasValues: hasValues ? 1 : 0,
    hasEntropy: inputs.entropy ? 1 : 0,
    klEstimator: kl ? ESTIMATORS[estimator] : 0,
    writeDLogp: out.dLogp ? 1 : 0,
    writeDValues: out.dValues ? 1 : 0,
    clipRange: nonNegative("clipRange", opts.clipRange ?? 0.2),
    clipRangeValue: nonNegative("clipRangeValue", opts.clipRangeValue ?? 0.2),
    vfCoef: nonNegative("vfCoef", opts.vfCoef ?? 0.1),
    entCoef: nonNegative("entCoef", opts.entCoef ?? 0),
    klCoef: kl ? nonNegative("klInLoss.coef", kl.coef) : 0,
  };
}

/**
 * PPO loss, statistics and gradients over the tokens of `inputs.logp` (any shape, e.g. (B, T)), in one batch:
 *
 *   ρ_t = exp(clamp(logp_t − logpOld_t, ±20)),   pg_t = max(−A_t ρ_t, −A_t clip(ρ_t, 1−ε, 1+ε))
 *   vf_t = ½ max((V_t − R_t)², (clip(V_t, V_old,t ± ε_v) − R_t)²)
 *   loss = mean(pg) + vfCoef·mean(vf) − entCoef·mean(H) + β·mean(k(logp, logpRef))
 *   dLogp_t = m_t/n · (−A_t ρ_t [unclipped] + β dk_t/dlogp_t),   dValues_t = m_t/n · vfCoef (V_t − R_t) [unclipped]
 *
 * with masked means over n = Σ m (see `ppoLoss` for the exact clip conditions). `out.stats` gets
 * {@linkcode PPO_STATS}; with n = 0 everything is 0. Outputs must not alias inputs.
 *
 * @example
 * ```ts
 * ppoLossGpu(batch, { stats, dLogp, dValues }, { logp, logpOld, advantages, mask, values, valuesOld, returns });
 * await batch.submit();
 * const { loss, clipFrac, approxKL } = await readPPOStats(stats);
 * ```
 */
export function ppoLossGpu(
  batch: Batch,
  out: PPOLossGpuOutputs,
  inputs: PPOLossGpuInputs,
  opts: PPOLossGpuOptions = {},
): void {
  const gpu = batch.gpu;
  const params = checkCall(gpu, out, inputs, opts);
  const N = inputs.logp.size;
  const shards = rowShards(gpu, N, 1);
  const groupsOf = (count: number) => Math.ceil(count / Math.min(CHUNK, count));
  const groups = shards.reduce((g, s) => g + groupsOf(s.count), 0);
  if (groups * NSUM * 4 > gpu.limits.maxBindingSize) {
    throw new Error(`ppo_loss: ${N} tokens need ${groups} partial sums, more than one binding holds`);
  }
  // Stand-ins for absent inputs (read-only) and an absent gradient output (written by no thread).
  const placeholder = new Tensor(gpu, [1], "f32", "ppo_loss.unused");
  const sink = new Tensor(gpu, [1], "f32", "ppo_loss.unused_out");
  const partials = new Tensor(gpu, [groups, NSUM], "f32", "ppo_loss.partials");
  const maxDim = gpu.limits.maxWorkgroupsPerDimension;
  const views = (start: number, count: number) => {
    const b: Record<string, Tensor | TensorView> = {};
    for (const name of TOKEN_INPUTS) b[name] = inputs[name]?.view(start, count) ?? placeholder;
    return b;
  };
  let groupBase = 0;
  for (const { start, count } of shards) {
    const chunk = Math.min(CHUNK, count);
    batch.dispatch(KERNELS.partials, { ...views(start, count), partials }, grid1d(groupsOf(count), maxDim), {
      ...params,
      n: count,
      chunk,
      groupBase,
    });
    groupBase += groupsOf(count);
  }
  batch.dispatch(KERNELS.finalize, { partials, stats: out.stats }, [1, 1, 1], { ...params, groups });
  if (out.dLogp || out.dValues) {
    for (const { start, count } of shards) {
      const { entropy: _, ...tokenViews } = views(start, count);
      const bindings = {
        ...tokenViews,
        stats: out.stats,
        dLogp: out.dLogp?.view(start, count) ?? sink,
        dValues: out.dValues?.view(start, count) ?? sink,
      };
      batch.dispatch(KERNELS.backward, bindings, grid1d(Math.ceil(count / WG), maxDim), {
        ...params,
        n: count,
      });
    }
  }
  for (const t of [placeholder, sink, partials]) t.release();
}

/** Names the values of a stats tensor read back from {@linkcode ppoLossGpu} (length {@linkcode PPO_STATS}). */
export function parsePPOStats(values: ArrayLike<number>): PPOStats {
  if (values.length !== PPO_STATS.length) {
    throw new Error(`Invalid PPO stats: expected ${PPO_STATS.length} values, got ${values.length}`);
  }
  return Object.fromEntries(PPO_STATS.map((name, i) => [name, values[i]])) as PPOStats;
}

/** Reads the stats tensor of {@linkcode ppoLossGpu} back (one readback) as a named object. */
export async function readPPOStats(stats: Tensor): Promise<PPOStats> {
  return parsePPOStats(await readF32(stats));
}
