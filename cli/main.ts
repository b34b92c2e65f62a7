/**
 * The single CLI entry point: `deno run -A cli/main.ts <command> [options]`. Each command answers `--help`.
 *
 * @module
 */
import { ablationCommand } from "./ablation.ts";
import { type Command, UsageError } from "./command.ts";
import { evalRmCommand } from "./eval_rm.ts";
import { evalCommand } from "./eval.ts";
import { generateCommand } from "./generate.ts";
import { info } from "./info.ts";
import { logprobs } from "./logprobs.ts";
import { scoreCommand } from "./score.ts";
import { sftCommand } from "./sft.ts";
import { trainCommand } from "./train.ts";
import { trainOrmCommand } from "./train_orm.ts";
import { trainPrmCommand } from "./train_prm.ts";

/** Every subcommand, in the order `--help` lists them. */
export const commands: Command[] = [
  info,
  generateCommand,
  logprobs,
  sftCommand,
  trainPrmCommand,
  trainOrmCommand,
  scoreCommand,
  evalRmCommand,
  trainCommand,
  evalCommand,
  ablationCommand,
];

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    "Usage: deno run -A cli/main.ts <command> [options]",
    "",
    "WebGPU toolkit for RL fine-tuning of LLM reasoning with process and outcome reward models.",
    "",
    "Commands:",
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "Run `deno run -A cli/main.ts <command> --help` for a command's options.",
  ].join("\n");
}

/** Runs the CLI with `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name ? 0 : 2;
  }
  const command = commands.find((c) => c.name === name);
  if (!command) {
    console.error(`Unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(e.message);
      return 2;
    }
    throw e;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
