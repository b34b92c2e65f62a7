/**
 * Commands whose engine is not built yet: they exist, answer `--help`, and say plainly (on stderr, exit code 0)
 * that they are not built.
 *
 * @module
 */
import type { Command } from "./command.ts";

function pending(name: string, summary: string, issue: string): Command {
  return {
    name,
    summary: `${summary} (not built yet)`,
    help: `Usage: deno run -A cli/main.ts ${name} [options]

${summary}.

This command is not built yet: it arrives with ${issue}.`,
    run(args) {
      if (args.includes("--help") || args.includes("-h")) return console.log(this.help), Promise.resolve(0);
      console.error(`${name}: not built yet — it arrives with ${issue}. See README.md for what works today.`);
      return Promise.resolve(0);
    },
  };
}

/** Subcommands announced but not yet implemented. */
export const pendingCommands: Command[] = [
  pending("train", "Run PPO with process rewards (built-in task by default)", "the PPO issue"),
  pending("sft", "Supervised fine-tuning", "the training-engine issue"),
  pending("eval", "Evaluate a checkpoint (pass@1, pass@k, maj@k)", "the PPO issue"),
  pending("train-prm", "Train a process reward model", "the reward-model issue"),
  pending("train-orm", "Train an outcome reward model", "the reward-model issue"),
  pending("score", "Score a solution with PRM/ORM and shaped rewards", "the reward-model issue"),
  pending("eval-rm", "Evaluate reward models", "the reward-model issue"),
];
