/**
 * Growing a trunk: decoder layers appended on top of a trained model's layers, initialised so that the grown
 * model computes exactly what the original did (their output projections `o_proj` and `down_proj` are zero, so
 * each new layer adds 0 to the residual stream). Used to give a reward model more depth than the policy it starts
 * from: a PRM that reuses the policy's two layers has no layer left that can compare what the policy predicted at
 * a position with the token that follows it, which is where a sampled solution's slips show.
 *
 * New layer l (0-based among the added ones): q/k/v/gate/up weights ~ N(0, 1/C) (unit-variance outputs for the
 * RMS-normed input), biases 0, both norms 1, `o_proj` and `down_proj` 0.
 *
 * @module
 */

import { upload } from "../gpu/io.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { normal } from "./heads.ts";
import type { Qwen2Model } from "./model.ts";
import { assembleParams, paramShapes } from "./params.ts";

/** Options of {@linkcode appendLayers}. */
export interface AppendLayersOptions {
  /** Seed of the new layers' weights (default 0). */
  seed?: number;
}

/**
 * `model` with `n` decoder layers appended after its last one (see the module doc); the result computes the
 * same outputs as `model` until its new layers are trained. `model`'s tensors are moved, not copied: do not use
 * `model` afterwards. The config records how many layers were added (`added_layers`).
 */
export function appendLayers(model: Qwen2Model, n: number, opts: AppendLayersOptions = {}): Qwen2Model {
  if (!(Number.isSafeInteger(n) && n >= 0)) {
    throw new Error(`Cannot append layers: the count must be a non-negative integer, got "${n}"`);
  }
  if (n === 0) return model;
  const { gpu, config: cfg } = model;
  const L0 = cfg.numHiddenLayers, C = cfg.hiddenSize;
  const added = Number(cfg.raw.added_layers ?? 0);
  const config = {
    ...cfg,
    numHiddenLayers: L0 + n,
    raw: { ...cfg.raw, num_hidden_layers: L0 + n, added_layers: added + n },
  };
  const byName = new Map(model.params.byName);
  const fresh: Tensor[] = [];
  try {
    let k = 0;
    for (const [name, shape] of paramShapes(config)) {
      const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
      if (!m || Number(m[1]) < L0) continue;
      const size = shape.reduce((a, b) => a * b, 1);
      const suffix = m[2];
      let data: Float32Array;
      if (suffix.endsWith("norm.weight")) data = new Float32Array(size).fill(1);
      else if (
        suffix.endsWith(".bias") || suffix === "self_attn.o_proj.weight" || suffix === "mlp.down_proj.weight"
      ) {
        data = new Float32Array(size);
      } else {
        data = normal(size, ((opts.seed ?? 0) * 1000003 + 7919 * ++k) >>> 0, 1 / Math.sqrt(C));
      }
      const t = upload(gpu, data, { shape, label: name });
      fresh.push(t);
      byName.set(name, t);
    }
    return { gpu, config, params: assembleParams(config, byName), dir: model.dir };
  } catch (e) {
    for (const t of fresh) t.release();
    throw e;
  }
}
