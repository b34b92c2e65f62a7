import assert from "node:assert/strict";
import elementwiseSrc from "../shaders/elementwise.wgsl" with { type: "text" };
import { Batch, runBatch } from "../core/gpu/batch.ts";
import { Gpu, NATIVE_BACKENDS, NO_ADAPTER_MESSAGE } from "../core/gpu/device.ts";
import { readF32, upload } from "../core/gpu/io.ts";
import type { KernelSpec } from "../core/gpu/kernel.ts";
import { Tensor } from "../core/gpu/tensor.ts";
import { add, scale } from "../core/ops/elementwise.ts";
import { softmax } from "../core/ops/softmax.ts";
import { softmaxRef } from "../core/ref/softmax_ref.ts";
import { assertClose } from "./util/close.ts";

const gpu = await Gpu.create();

Deno.test("buffer pool: 2,000 forward cycles create no buffers after warm-up and return live bytes to baseline", async () => {
  const rows = 8, cols = 100;
  const x = upload(gpu, Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i)), {
    shape: [rows, cols],
  });
  const base = gpu.pool.stats();
  let afterWarmup = 0;
  let last: Float32Array | undefined;
  for (let step = 0; step < 2000; step++) {
    // A step's worth of temporaries of a few sizes, two dependent kernels, release, submit.
    const batch = new Batch(gpu, "cycle");
    const h = new Tensor(gpu, [rows, cols], "f32", "h");
    const p = new Tensor(gpu, [rows, cols], "f32", "p");
    const e1 = new Tensor(gpu, [1 + (step % 3) * 500], "f32", "e1");
    const e2 = new Tensor(gpu, e1.shape, "f32", "e2");
    batch.clear(e1);
    add(batch, h, x, x);
    softmax(batch, p, h);
    scale(batch, e2, e1, { alpha: 2 });
    const read = step === 1999 ? batch.read(p) : undefined;
    for (const t of [h, e1, e2]) t.release();
    await batch.submit();
    if (read) last = (await read) as Float32Array;
    p.release();
    if (step === 9) afterWarmup = gpu.pool.stats().created;
  }
  const end = gpu.pool.stats();
  assert.ok(afterWarmup > base.created, "warm-up created the step's buffers");
  assert.equal(end.created, afterWarmup, `pool created ${end.created - afterWarmup} buffers after warm-up`);
  assert.equal(end.liveBytes, base.liveBytes, "live bytes back to baseline");
  assert.equal(end.liveBuffers, base.liveBuffers, "live buffers back to baseline");
  const h = Float32Array.from(await readF32(x), (v) => 2 * v);
  assertClose(last!, softmaxRef(h, { cols }), { atol: 1e-6, rtol: 1e-5 }, "last cycle's softmax");
  x.release();
});

const PROBE = (name: string, code: string, constants: Record<string, number> = {}): KernelSpec => ({
  name,
  code,
  entry: "main",
  constants,
  bindings: ["out"],
});
const FILL = `override V: f32 = 1.0;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1)
fn main() { out[0] = V; }
`;

Deno.test("pipeline cache compiles once per shader, entry point and constants", async () => {
  const out = new Tensor(gpu, [1], "f32", "out");
  const before = gpu.pipelines.size;
  for (let i = 0; i < 50; i++) {
    await runBatch(gpu, "fill", (b) => b.dispatch(PROBE("probe.fill", FILL), { out }, [1]));
  }
  assert.equal(gpu.pipelines.size, before + 1);
  for (let i = 0; i < 5; i++) {
    await runBatch(gpu, "fill", (b) => b.dispatch(PROBE("probe.fill", FILL, { V: 2 }), { out }, [1]));
  }
  assert.equal(gpu.pipelines.size, before + 2);
  assert.equal((await readF32(out))[0], 2);
  // Same source under another kernel name is the same pipeline.
  await runBatch(gpu, "fill", (b) => b.dispatch(PROBE("probe.alias", FILL, { V: 2 }), { out }, [1]));
  assert.equal(gpu.pipelines.size, before + 2);
  out.release();
});

Deno.test("compile errors name the kernel, entry point and WGSL line", async () => {
  const bad = PROBE(
    "probe.broken",
    "@group(0) @binding(1) var<storage, read_write> out: array<f32>;\n\n" +
      "@compute @workgroup_size(1)\nfn main() {\n  out[0] = undefined_thing;\n}\n",
  );
  const out = new Tensor(gpu, [1], "f32", "out");
  await assert.rejects(
    () => runBatch(gpu, "broken", (b) => b.dispatch(bad, { out }, [1])),
    /Kernel "probe\.broken" \(entry "main"\) failed to compile: line 5:\d+: .*undefined_thing/,
  );
  out.release();
});

Deno.test("a binding over the (lowered) storage binding limit throws naming the kernel and tensor", async () => {
  const small = await Gpu.create({ maxBindingSize: 4096 });
  try {
    const a = new Tensor(small, [2048], "f32", "big_a");
    const o = new Tensor(small, [2048], "f32", "big_o");
    const spec: KernelSpec = {
      name: "elementwise.scale",
      code: elementwiseSrc,
      entry: "scale",
      constants: { WG: 256 },
      params: [["n", "u32"], ["alpha", "f32"]],
      bindings: ["a", "", "out"],
    };
    await assert.rejects(
      () => runBatch(small, "unsharded", (b) => b.dispatch(spec, { a, out: o }, [8], { n: 2048, alpha: 1 })),
      /Kernel "elementwise\.scale": binding "a" \(tensor "big_a", 8192 bytes\) exceeds the storage binding limit of 4096 bytes/,
    );
    // The wrapper shards the same call instead.
    await runBatch(small, "sharded", (b) => scale(b, o, a, { alpha: 1 }));
  } finally {
    small.destroy();
  }
});

Deno.test("validation errors of a dispatch become thrown errors naming the kernel", async () => {
  const a = upload(gpu, new Float32Array(100).fill(1), { label: "a" });
  // A tensor claiming 100 elements over a 16-byte buffer: the binding overflows the buffer.
  const tiny = gpu.device.createBuffer({ label: "tiny", size: 16, usage: GPUBufferUsage.STORAGE });
  await assert.rejects(
    () => runBatch(gpu, "size", (b) => add(b, new Tensor(gpu, [100], "f32", "short", tiny), a, a)),
    /Kernel "elementwise\.add": .*overflow/,
  );
  // A buffer without STORAGE usage.
  const copyOnly = gpu.device.createBuffer({ label: "copy_only", size: 400, usage: GPUBufferUsage.COPY_DST });
  await assert.rejects(
    () => runBatch(gpu, "usage", (b) => add(b, new Tensor(gpu, [100], "f32", "no_storage", copyOnly), a, a)),
    /Kernel "elementwise\.add": .*STORAGE/,
  );
  // Wrong dtype or shape is caught by the wrappers before any GPU call.
  await assert.rejects(
    () =>
      runBatch(
        gpu,
        "dtype",
        (b) => softmax(b, new Tensor(gpu, [100], "f32", "y"), upload(gpu, new Int32Array(100))),
      ),
    /softmax\.forward: tensor "upload" has dtype i32, expected f32/,
  );
  // Binding one buffer as input and output is rejected by WebGPU at submit, naming the batch and the tensor.
  await assert.rejects(
    () => runBatch(gpu, "alias", (b) => add(b, a, a, a)),
    /Batch "alias": .*'a' label.*conflicting usages/,
  );
  // The device is still usable afterwards.
  const out = new Tensor(gpu, [100], "f32", "ok");
  await runBatch(gpu, "after", (b) => add(b, out, a, a));
  assert.deepEqual(Array.from(await readF32(out)), new Array(100).fill(2));
  tiny.destroy();
  copyOnly.destroy();
});

Deno.test("Gpu.create without an adapter names the missing driver", async () => {
  assert.match(NO_ADAPTER_MESSAGE, /mesa-vulkan-drivers/);
  const gpuApi = navigator.gpu as unknown as { requestAdapter: () => Promise<GPUAdapter | null> };
  gpuApi.requestAdapter = () => Promise.resolve(null); // own property shadowing the prototype method
  try {
    await assert.rejects(() => Gpu.create(), (e: Error) => e.message === NO_ADAPTER_MESSAGE);
  } finally {
    delete (gpuApi as { requestAdapter?: unknown }).requestAdapter;
  }
  assert.equal(typeof navigator.gpu.requestAdapter, "function");
});

Deno.test("Gpu.create keeps WebGPU off the OpenGL backend (libEGL's destructor races thread exit) unless told", async () => {
  // A fresh process per case: WebGPU reads DENO_WEBGPU_BACKEND once, when it starts.
  const device = new URL("../core/gpu/device.ts", import.meta.url).href;
  const probe = `import { Gpu } from ${JSON.stringify(device)};
    const gpu = await Gpu.create();
    const maps = Deno.build.os === "linux" ? Deno.readTextFileSync("/proc/self/maps") : "";
    console.log(JSON.stringify({
      backend: Deno.env.get("DENO_WEBGPU_BACKEND"), adapter: gpu.adapterName, egl: /libEGL/.test(maps),
    }));`;
  const run = async (backend: string | undefined) => {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(Deno.env.toObject())) {
      if (k !== "DENO_WEBGPU_BACKEND") env[k] = v;
    }
    if (backend !== undefined) env.DENO_WEBGPU_BACKEND = backend;
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", probe],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(r.stdout), err = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 0, err);
    return JSON.parse(out.trim().split("\n").at(-1)!) as { backend: string; adapter: string; egl: boolean };
  };
  const byDefault = await run(undefined), vulkan = await run("vulkan");
  assert.equal(byDefault.backend, NATIVE_BACKENDS);
  assert.equal(vulkan.backend, "vulkan"); // a value the user set is kept
  assert.equal(byDefault.adapter, vulkan.adapter);
  // libEGL is loaded only if the Vulkan driver itself loads it (NVIDIA's does; lavapipe's does not)
  assert.equal(byDefault.egl, vulkan.egl);
  if (gpu.isCpu && Deno.build.os === "linux") assert.equal(byDefault.egl, false);
});
