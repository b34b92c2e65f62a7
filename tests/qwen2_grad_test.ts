// Full-model gradients on WebGPU against PyTorch autograd (tests/reference/make_fixtures.py): the mean completion
// cross-entropy and d loss / d param for every parameter, on tied and untied heads, GQA 1–5, F32 and BF16 weights.
import assert from "node:assert/strict";
import { Gpu } from "../core/gpu/device.ts";
import { readF32 } from "../core/gpu/io.ts";
import { loadModel, releaseModel } from "../core/model/model.ts";
import { createGrads } from "../core/model/qwen2_backward.ts";
import { type LMExample, lmLossAndGrads } from "../core/train/lm_loss.ts";
import { fixtureNames, openFixture } from "./util/fixtures.ts";

const gpu = await Gpu.create();

/** ‖got − want‖ / ‖want‖ (relative error of the whole tensor). */
function relError(got: Float32Array, want: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

/** The fixture's examples: each row's real tokens and its completion mask. */
export async function fixtureExamples(fx: Awaited<ReturnType<typeof openFixture>>): Promise<LMExample[]> {
  const mask = await fx.ints("attention_mask"), comp = await fx.ints("completion_mask");
  const ids = await fx.ints("input_ids");
  const T = fx.manifest.seq_len;
  return Array.from({ length: fx.manifest.batch }, (_, b) => {
    const cols = [...Array(T).keys()].filter((t) => mask[b * T + t]);
    return { ids: cols.map((t) => ids[b * T + t]), completionMask: cols.map((t) => comp[b * T + t]) };
  });
}

for (const name of fixtureNames()) {
  Deno.test(`qwen2 gradients match PyTorch autograd: ${name}`, async () => {
    const fx = await openFixture(name);
    const model = await loadModel(fx.dir, { gpu });
    const grads = createGrads(model.params);
    try {
      const r = await lmLossAndGrads(model, grads, await fixtureExamples(fx));
      assert.ok(Math.abs(r.loss - fx.manifest.loss) <= 1e-4 * Math.abs(fx.manifest.loss), `loss ${r.loss}`);
      const worst: [string, number][] = [];
      for (const [pname, g] of grads) {
        const err = relError(await readF32(g), await fx.tensor(`grad.${pname}`));
        worst.push([pname, err]);
        // The bar: relative error ≤ 1e-3 for every parameter's gradient.
        assert.ok(err <= 1e-3, `grad of ${pname}: relative error ${err.toExponential(2)} > 1e-3`);
        if (Deno.env.get("SHOW_GRAD_ERRORS")) console.log(`${name} ${pname} ${err.toExponential(2)}`);
      }
    } finally {
      for (const g of grads.values()) g.release();
      releaseModel(model);
      await fx.close();
    }
  });
}
