/**
 * Plain stochastic gradient descent over a model's parameters (`shaders/adamw.wgsl`, entry point `sgd`): no
 * momentum, no weight decay, exactly
 * ```
 * p ← p − lr · g        g = grad · gradScale · clipCoef   (gradScale = clipCoef = 1: g = grad exactly)
 * ```
 * This is the rule the SFT `--optimizer sgd` acceptance check relies on.
 *
 * @example
 * ```ts
 * const opt = new SGD(gpu, params.byName);
 * opt.step(batch, grads, { lr: 1e-2 });
 * ```
 *
 * @module
 */
import type { Batch } from "../gpu/batch.ts";
import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  checkGrads,
  checkParams,
  checkStep,
  dispatchUpdate,
  OPTIM_KERNELS,
  type StepOptions,
  unitStats,
} from "./adamw.ts";
import { loadOptimizerState, saveOptimizerState, type StateFileOptions } from "./state.ts";

/** Stateless SGD over named f32 parameters, updated in place; counts its steps (saved with the state). */
export class SGD {
  /** Optimiser name, stored in state files. */
  readonly kind = "sgd";
  /** The device. */
  readonly gpu: Gpu;
  /** Parameters by name, updated in place. */
  readonly params: ReadonlyMap<string, Tensor>;
  #step = 0;

  /** Optimises `params` (all f32, on `gpu`, no two sharing a buffer). */
  constructor(gpu: Gpu, params: ReadonlyMap<string, Tensor>) {
    checkParams("SGD", gpu, params);
    this.gpu = gpu;
    this.params = new Map(params);
  }

  /** Steps taken. */
  get stepCount(): number {
    return this.#step;
  }

  set stepCount(t: number) {
    if (!Number.isSafeInteger(t) || t < 0) {
      throw new Error(`SGD: step count must be an integer ≥ 0, got "${t}"`);
    }
    this.#step = t;
  }

  /**
   * Records `p ← p − lr·g` for every parameter into `batch` (with `opts.clip`, the global gradient norm first).
   * `grads` must hold one gradient per parameter, by the same name and shape.
   */
  step(batch: Batch, grads: ReadonlyMap<string, Tensor>, opts: StepOptions): void {
    const gradScale = checkStep("SGD", this.gpu, opts);
    checkGrads("SGD", this.params, grads);
    if (opts.clip) opts.clip.record(batch, grads, { gradScale });
    const stats = opts.clip?.stats ?? unitStats(this.gpu);
    for (const [name, param] of this.params) {
      if (param.size === 0) continue;
      const sharded = { param, grad: grads.get(name)! };
      dispatchUpdate(batch, OPTIM_KERNELS.sgd, { sharded, stats }, { gradScale, lr: opts.lr });
    }
    this.#step++;
  }

  /** SGD has no state tensors (the map is empty; state files hold only the step count). */
  stateTensors(): Map<string, Tensor> {
    return new Map();
  }

  /** Hyperparameters recorded in state files (none). */
  hyperparameters(): Record<string, string> {
    return {};
  }

  /** Saves the step count to a safetensors file (atomically; see state.ts). */
  save(path: string, opts: StateFileOptions = {}): Promise<void> {
    return saveOptimizerState(path, this, opts);
  }

  /** Restores the step count saved by {@linkcode SGD.save}. */
  load(path: string, opts: StateFileOptions = {}): Promise<void> {
    return loadOptimizerState(path, this, opts);
  }

  /** Nothing to release (SGD holds no state tensors); here so callers release any optimiser alike. */
  release(): void {}
}
