/**
 * AdamW over a model's parameters (`shaders/adamw.wgsl`): one in-place update kernel per parameter tensor,
 * sharded over the storage-binding limit, recorded into the caller's batch — plus the kernel plumbing shared with
 * {@linkcode SGD} and {@linkcode GradClip}.
 *
 * Exact rule (torch.optim.AdamW, `foreach=False`), with g the effective gradient `grad · gradScale · clipCoef`:
 * ```
 * t ← t + 1
 * p ← p · (1 − lr·wd)                          (decoupled weight decay; wd = 0 for undecayed tensors)
 * m ← β1·m + (1 − β1)·g
 * v ← β2·v + (1 − β2)·g·g
 * p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
 * ```
 * Bias corrections, `1 − lr·wd`, `1 − β` and the step size are computed on the host in f64 and rounded once to
 * f32 uniforms, as PyTorch rounds its Python-float scalars.
 *
 * @example
 * ```ts
 * const opt = new AdamW(gpu, params.byName, { weightDecay: 0.1 });
 * const clip = new GradClip(gpu, { maxNorm: 1 });
 * const batch = new Batch(gpu, "step");
 * opt.step(batch, grads, { lr: lrAt(step, sched), gradScale: 1 / microBatches, clip });
 * const stats = clip.read(batch);
 * zeroGrads(batch, grads);
 * await batch.submit();
 * console.log((await stats).norm);
 * ```
 *
 * @module
 */
import src from "../../shaders/adamw.wgsl" with { type: "text" };
import type { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import { upload, zeros } from "../gpu/io.ts";
import { grid1d, type KernelSpec, type ParamField } from "../gpu/kernel.ts";
import { rowShards } from "../gpu/shard.ts";
import { type Binding, expectShape, type Tensor } from "../gpu/tensor.ts";
import type { GradClip } from "./clip.ts";
import { loadOptimizerState, saveOptimizerState, type StateFileOptions } from "./state.ts";

const WG = 256;
/** Uniform struct of `shaders/adamw.wgsl`, in declaration order. */
const PARAMS: ParamField[] = [
  ["n", "u32"],
  ["gradScale", "f32"],
  ["decay", "f32"],
  ["lr", "f32"],
  ["beta1", "f32"],
  ["oneMinusBeta1", "f32"],
  ["beta2", "f32"],
  ["oneMinusBeta2", "f32"],
  ["stepSize", "f32"],
  ["bc2Sqrt", "f32"],
  ["eps", "f32"],
  ["chunk", "u32"],
  ["outBase", "u32"],
  ["maxNorm", "f32"],
  ["clip", "u32"],
];
const spec = (name: string, entry: string, bindings: string[], wg = true): KernelSpec => ({
  name: `adamw.${name}`,
  code: src,
  entry,
  constants: wg ? { WG } : undefined,
  params: PARAMS,
  bindings,
});

/** Kernels of `shaders/adamw.wgsl` (internal to core/optim). */
export const OPTIM_KERNELS = {
  adamw: spec("adamw", "adamw", ["param", "grad", "m", "v", "stats", "", "", ""]),
  sgd: spec("sgd", "sgd", ["param", "grad", "", "", "stats", "", "", ""]),
  sumsq: spec("sumsq", "sumsq", ["", "grad", "", "", "", "partials", "", ""]),
  clipCoef: spec("clip_coef", "clip_coef", ["", "", "", "", "", "", "total", "statsOut"], false),
} as const;

/** Complete uniform values for an optimiser kernel: unused fields are zero (internal to core/optim). */
export function optimParams(values: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name] of PARAMS) out[name] = values[name] ?? 0;
  return out;
}

/**
 * Dispatches an elementwise update kernel over aligned shards of the parameter's elements, binding the same
 * element range of every tensor in `sharded` and the whole `[norm, coef]` tensor `stats` (internal to core/optim).
 */
export function dispatchUpdate(
  batch: Batch,
  kernel: KernelSpec,
  tensors: { sharded: Readonly<Record<string, Tensor>>; stats: Tensor },
  params: Readonly<Record<string, number>>,
): void {
  const n = tensors.sharded.param.size;
  for (const { start, count } of rowShards(batch.gpu, n, 1)) {
    const views: Record<string, Binding> = { stats: tensors.stats };
    for (const [k, t] of Object.entries(tensors.sharded)) views[k] = t.view(start, count);
    const groups = grid1d(Math.ceil(count / WG), batch.gpu.limits.maxWorkgroupsPerDimension);
    batch.dispatch(kernel, views, groups, optimParams({ ...params, n: count }));
  }
}

const UNIT_STATS = new WeakMap<Gpu, Tensor>();

/** The `[norm, coef] = [0, 1]` tensor read by updates without clipping (one per device; internal). */
export function unitStats(gpu: Gpu): Tensor {
  let t = UNIT_STATS.get(gpu);
  if (!t) {
    t = upload(gpu, new Float32Array([0, 1]), { label: "optim.unit_stats" });
    UNIT_STATS.set(gpu, t);
  }
  return t;
}

/** Throws unless every parameter is an f32 tensor of one device and the map is not empty. */
export function checkParams(what: string, gpu: Gpu, params: ReadonlyMap<string, Tensor>): void {
  if (params.size === 0) throw new Error(`${what}: no parameters to optimise`);
  const seen = new Map<GPUBuffer, string>();
  for (const [name, t] of params) {
    if (t.gpu !== gpu) throw new Error(`${what}: parameter "${name}" lives on another device`);
    if (t.dtype !== "f32") throw new Error(`${what}: parameter "${name}" has dtype ${t.dtype}, expected f32`);
    const other = seen.get(t.buffer);
    if (other !== undefined) {
      throw new Error(
        `${what}: parameters "${other}" and "${name}" share one buffer (tied weights: pass it once)`,
      );
    }
    seen.set(t.buffer, name);
  }
}

/**
 * Throws unless `grads` holds exactly one f32 tensor of each parameter's shape under the parameter's name
 * (internal to core/optim).
 */
export function checkGrads(
  what: string,
  params: ReadonlyMap<string, Tensor>,
  grads: ReadonlyMap<string, Tensor>,
): void {
  for (const [name, p] of params) {
    const g = grads.get(name);
    if (!g) throw new Error(`${what}: gradient of parameter "${name}" is missing`);
    expectShape(g, p.shape, `${what}: gradient of "${name}"`);
    if (g.dtype !== "f32") {
      throw new Error(`${what}: gradient of "${name}" has dtype ${g.dtype}, expected f32`);
    }
  }
  for (const name of grads.keys()) {
    if (!params.has(name)) throw new Error(`${what}: gradient "${name}" has no parameter`);
  }
}

/** Throws unless the step options are usable; returns the gradient scale. */
export function checkStep(what: string, gpu: Gpu, opts: StepOptions): number {
  if (!(Number.isFinite(opts.lr) && opts.lr >= 0)) {
    throw new Error(`${what}: learning rate must be a finite number ≥ 0, got "${opts.lr}"`);
  }
  const gradScale = opts.gradScale ?? 1;
  if (!(Number.isFinite(gradScale) && gradScale > 0)) {
    throw new Error(`${what}: gradScale must be a finite number > 0, got "${gradScale}"`);
  }
  if (opts.clip && opts.clip.gpu !== gpu) throw new Error(`${what}: the GradClip lives on another device`);
  return gradScale;
}

/**
 * Zeroes every gradient in `batch` (the start of a gradient-accumulation window: backward passes then add into
 * the gradients, and the step averages them with `gradScale = 1 / microBatches`).
 */
export function zeroGrads(batch: Batch, grads: ReadonlyMap<string, Tensor> | Iterable<Tensor>): void {
  const list = grads instanceof Map ? grads.values() : grads as Iterable<Tensor>;
  for (const g of list) batch.clear(g);
}

/** Options of one optimiser step. */
export interface StepOptions {
  /** Learning rate of this step (see `lrAt` in schedule.ts). */
  lr: number;
  /** Factor applied to every gradient before anything else, e.g. `1 / microBatches` (default 1). */
  gradScale?: number;
  /** Global gradient-norm clipping: the norm is computed in the same batch and the updates read its factor. */
  clip?: GradClip;
}

/** Options of {@linkcode AdamW}; defaults are PyTorch's. */
export interface AdamWOptions {
  /** (β1, β2), default (0.9, 0.999). */
  betas?: readonly [number, number];
  /** ε added to the bias-corrected √v, default 1e-8. */
  eps?: number;
  /** Decoupled weight decay coefficient, default 0.01. */
  weightDecay?: number;
  /**
   * Whether a parameter is weight-decayed; default: tensors with at least 2 dimensions (matrices, embeddings),
   * so biases and norm weights are not.
   */
  decay?: (name: string, param: Tensor) => boolean;
}

/**
 * AdamW over named f32 parameters, state (m, v: zero-initialised, one tensor each per parameter) on the GPU.
 * {@linkcode AdamW.step} records the updates into a batch; the step count advances when the step is recorded.
 */
export class AdamW {
  /** Optimiser name, stored in state files. */
  readonly kind = "adamw";
  /** The device. */
  readonly gpu: Gpu;
  /** Parameters by name, updated in place. */
  readonly params: ReadonlyMap<string, Tensor>;
  /** β1, β2. */
  readonly betas: readonly [number, number];
  /** ε. */
  readonly eps: number;
  /** Weight decay coefficient. */
  readonly weightDecay: number;
  /** Names of the weight-decayed parameters. */
  readonly decayed: ReadonlySet<string>;
  readonly #m = new Map<string, Tensor>();
  readonly #v = new Map<string, Tensor>();
  #step = 0;

  /** Allocates zeroed m and v for every parameter of `params` (all f32, on `gpu`, no two sharing a buffer). */
  constructor(gpu: Gpu, params: ReadonlyMap<string, Tensor>, opts: AdamWOptions = {}) {
    checkParams("AdamW", gpu, params);
    const [b1, b2] = opts.betas ?? [0.9, 0.999];
    const eps = opts.eps ?? 1e-8, wd = opts.weightDecay ?? 0.01;
    for (const [k, x] of [["beta1", b1], ["beta2", b2]] as const) {
      if (!(x >= 0 && x < 1)) throw new Error(`AdamW: ${k} must be in [0, 1), got "${x}"`);
    }
    if (!(Number.isFinite(eps) && eps >= 0)) {
      throw new Error(`AdamW: eps must be finite and ≥ 0, got "${eps}"`);
    }
    if (!(Number.isFinite(wd) && wd >= 0)) {
      throw new Error(`AdamW: weightDecay must be finite and ≥ 0, got "${wd}"`);
    }
    this.gpu = gpu;
    this.params = new Map(params);
    this.betas = [b1, b2];
    this.eps = eps;
    this.weightDecay = wd;
    const decay = opts.decay ?? ((_: string, p: Tensor) => p.shape.length >= 2);
    this.decayed = new Set([...params].filter(([name, p]) => decay(name, p)).map(([name]) => name));
    for (const [name, p] of params) {
      this.#m.set(name, zeros(gpu, p.shape, { label: `exp_avg.${name}` }));
      this.#v.set(name, zeros(gpu, p.shape, { label: `exp_avg_sq.${name}` }));
    }
  }

  /** Steps taken (PyTorch's `state["step"]`): the bias corrections of the next step use `t = stepCount + 1`. */
  get stepCount(): number {
    return this.#step;
  }

  set stepCount(t: number) {
    if (!Number.isSafeInteger(t) || t < 0) {
      throw new Error(`AdamW: step count must be an integer ≥ 0, got "${t}"`);
    }
    this.#step = t;
  }

  /**
   * Records one AdamW update of every parameter into `batch` (and, with `opts.clip`, the global gradient norm
   * before it). `grads` must hold one gradient per parameter, by the same name and shape.
   */
  step(batch: Batch, grads: ReadonlyMap<string, Tensor>, opts: StepOptions): void {
    const gradScale = checkStep("AdamW", this.gpu, opts);
    checkGrads("AdamW", this.params, grads);
    const t = this.#step + 1;
    const [b1, b2] = this.betas;
    const common = {
      gradScale,
      beta1: b1,
      oneMinusBeta1: 1 - b1,
      beta2: b2,
      oneMinusBeta2: 1 - b2,
      stepSize: opts.lr / (1 - b1 ** t),
      bc2Sqrt: Math.sqrt(1 - b2 ** t),
      eps: this.eps,
    };
    if (opts.clip) opts.clip.record(batch, grads, { gradScale });
    const stats = opts.clip?.stats ?? unitStats(this.gpu);
    for (const [name, param] of this.params) {
      if (param.size === 0) continue;
      const decay = this.decayed.has(name) ? 1 - opts.lr * this.weightDecay : 1;
      const sharded = { param, grad: grads.get(name)!, m: this.#m.get(name)!, v: this.#v.get(name)! };
      dispatchUpdate(batch, OPTIM_KERNELS.adamw, { sharded, stats }, { ...common, decay });
    }
    this.#step = t;
  }

  /** State tensors by their file names: `exp_avg.<param>` (m) and `exp_avg_sq.<param>` (v), per parameter. */
  stateTensors(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const name of this.params.keys()) {
      out.set(`exp_avg.${name}`, this.#m.get(name)!);
      out.set(`exp_avg_sq.${name}`, this.#v.get(name)!);
    }
    return out;
  }

  /** Hyperparameters recorded in state files (for reference; loading does not apply them). */
  hyperparameters(): Record<string, string> {
    return {
      beta1: String(this.betas[0]),
      beta2: String(this.betas[1]),
      eps: String(this.eps),
      weight_decay: String(this.weightDecay),
    };
  }

  /** Saves m, v and the step count to a safetensors file (atomically; see state.ts). Submit pending steps first. */
  save(path: string, opts: StateFileOptions = {}): Promise<void> {
    return saveOptimizerState(path, this, opts);
  }

  /** Restores m, v and the step count saved by {@linkcode AdamW.save}. */
  load(path: string, opts: StateFileOptions = {}): Promise<void> {
    return loadOptimizerState(path, this, opts);
  }

  /** Releases the state tensors (the parameters belong to the caller). */
  release(): void {
    for (const t of [...this.#m.values(), ...this.#v.values()]) t.release();
    this.#m.clear();
    this.#v.clear();
  }
}
