/**
 * `logprobs`: log-probabilities of a token sequence under a model, as one JSON line.
 *
 * @module
 */
import { loadModel, releaseModel, scoreSequences } from "../core/model/model.ts";
import { type Command, parseFlags, UsageError } from "./command.ts";

/** The `logprobs` command. */
export const logprobs: Command = {
  name: "logprobs",
  summary: "Print log p(x_t | x_<t) of a token sequence and the last position's log-softmax",
  help: `Usage: deno run -A cli/main.ts logprobs --model DIR_OR_HUB_ID --ids 1,2,3 [--json]

Runs one forward pass on the GPU and prints
  {"token_logprobs": [log p(x_t | x_<t) for t = 1..T-1], "last_logprobs": [log-softmax at the last position]}

Options:
  --model   local checkpoint directory or Hugging Face hub id (required)
  --ids     comma-separated token ids (required)
  --json    print one JSON line (the default and only format; accepted for scripts)
  -h, --help`,
  async run(args) {
    const flags = parseFlags("logprobs", args, {
      model: { type: "string" },
      ids: { type: "string" },
      json: { type: "boolean" },
    });
    if (flags.help) return console.log(this.help), 0;
    if (typeof flags.model !== "string") throw new UsageError("logprobs: --model is required");
    if (typeof flags.ids !== "string") throw new UsageError("logprobs: --ids is required");
    const ids = flags.ids.split(",").map((s) => s.trim());
    const bad = ids.find((s) => !/^\d+$/.test(s));
    if (bad !== undefined) {
      throw new UsageError(`logprobs: --ids has "${bad}", expected a non-negative integer`);
    }
    const model = await loadModel(flags.model);
    try {
      const r = await scoreSequences(model, [ids.map(Number)], { lastLogprobs: true });
      console.log(JSON.stringify({
        token_logprobs: Array.from(r.tokenLogprobs[0]),
        last_logprobs: Array.from(r.lastLogprobs![0]),
      }));
    } finally {
      releaseModel(model);
    }
    return 0;
  },
};
