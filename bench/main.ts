/**
 * `deno task bench`: every benchmark table on the current WebGPU adapter — matmul GFLOP/s, kernel bandwidth, and
 * model prefill/decode throughput,
 * training tokens/s, one PPO iteration, and the scoring server under load. Performance claims in the README come from this command.
 *
 * Usage: deno run -A bench/main.ts [--only matmul,kernels,model,train,ppo,server] [--json FILE]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Gpu } from "../core/gpu/device.ts";
import { benchKernels } from "./kernels_bench.ts";
import { benchMatmul } from "./matmul_bench.ts";
import { benchModel } from "./model_bench.ts";
import { benchPPO } from "./ppo_bench.ts";
import { benchServer } from "./server_bench.ts";
import { benchTrain } from "./train_bench.ts";
import { formatTable, type Row } from "./table.ts";

const SUITES: Record<string, { title: string; run: (gpu: Gpu) => Promise<Row[]> }> = {
  matmul: { title: "matmul (f32)", run: (gpu) => benchMatmul({ gpu }) },
  kernels: { title: "kernels (bandwidth at minimum traffic)", run: (gpu) => benchKernels({ gpu }) },
  model: {
    title: "Qwen2-shaped model (random weights; readbacks per sequence)",
    run: (gpu) => benchModel({ gpu }),
  },
  train: {
    title: "training step, forward + backward + AdamW (random weights)",
    run: (gpu) => benchTrain({ gpu }),
  },
  ppo: {
    title: "one PPO iteration, tiny preset (seconds: generation / scoring / training)",
    run: (gpu) => benchPPO({ gpu }),
  },
  server: { title: "scoring server load test (loopback)", run: (gpu) => benchServer({ gpu }) },
};

const HELP = `Usage: deno task bench [--only ${Object.keys(SUITES).join(",")}] [--json FILE]

Prints benchmark tables for the current WebGPU adapter.

Options:
  --only   comma-separated suites to run (default: all)
  --json   also write every row as JSON lines to FILE
  -h, --help`;

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { only: { type: "string" }, json: { type: "string" }, help: { type: "boolean", short: "h" } },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const names = values.only ? values.only.split(",") : Object.keys(SUITES);
  const unknown = names.find((n) => !(n in SUITES));
  if (unknown) {
    console.error(`Unknown suite "${unknown}": expected one of ${Object.keys(SUITES).join(", ")}`);
    Deno.exit(2);
  }
  const gpu = await Gpu.create();
  console.log(`adapter: ${gpu.adapterName}${gpu.isCpu ? " (CPU)" : ""}`);
  const lines: string[] = [];
  for (const name of names) {
    const t0 = performance.now();
    const rows = await SUITES[name].run(gpu);
    console.log(
      `\n${formatTable(`${SUITES[name].title} — ${((performance.now() - t0) / 1000).toFixed(1)} s`, rows)}`,
    );
    for (const r of rows) lines.push(JSON.stringify({ suite: name, adapter: gpu.adapterName, ...r }));
  }
  if (values.json) await Deno.writeTextFile(values.json, lines.join("\n") + "\n");
  gpu.destroy();
}
