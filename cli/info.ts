/**
 * `info`: prints the WebGPU adapter and the limits the runtime uses.
 *
 * @module
 */
import { Gpu } from "../core/gpu/device.ts";
import { type Command, parseFlags } from "./command.ts";

/** The `info` command. */
export const info: Command = {
  name: "info",
  summary: "Show the WebGPU adapter, its features and the limits in use",
  help: `Usage: deno run -A cli/main.ts info [--json]

Prints the WebGPU adapter the runtime opens (e.g. lavapipe on a CPU-only machine), its features and limits.

Options:
  --json    print one JSON object instead of text
  -h, --help`,
  async run(args) {
    const flags = parseFlags("info", args, { json: { type: "boolean" } });
    if (flags.help) return console.log(this.help), 0;
    const gpu = await Gpu.create();
    const out = {
      adapter: gpu.adapterName,
      cpu: gpu.isCpu,
      features: [...gpu.features].sort(),
      limits: gpu.limits,
    };
    if (flags.json) console.log(JSON.stringify(out));
    else {
      console.log(`adapter   ${out.adapter}${out.cpu ? " (CPU)" : ""}`);
      console.log(`features  ${out.features.join(", ")}`);
      for (const [k, v] of Object.entries(out.limits)) console.log(`${k.padEnd(28)} ${v}`);
    }
    gpu.destroy();
    return 0;
  },
};
