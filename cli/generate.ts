/**
 * `generate`: continue a prompt or a chat conversation with a model (KV-cache decoding on the GPU).
 *
 * @module
 */
import { generate as generateTokens } from "../core/model/generate.ts";
import { loadModel, releaseModel } from "../core/model/model.ts";
import { applyChatTemplate, type ChatMessage } from "../core/tokenizer/chat_template.ts";
import { loadTokenizer } from "../core/tokenizer/tokenizer.ts";
import { type Command, parseFlags, UsageError } from "./command.ts";

function num(flags: Record<string, unknown>, name: string, fallback: number): number {
  const v = flags[name];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (typeof v !== "string" || v.trim() === "" || !Number.isFinite(n)) {
    throw new UsageError(`generate: --${name} must be a number, got "${v}"`);
  }
  return n;
}

/** The `generate` command. */
export const generateCommand: Command = {
  name: "generate",
  summary: "Generate text from a prompt or chat messages (chat template, GPU sampling)",
  help:
    `Usage: deno run -A cli/main.ts generate --model DIR_OR_HUB_ID (--prompt TEXT | --messages JSON) [options]

The prompt is wrapped in the model's chat template as a user message (unless --raw); --messages takes a JSON
list of {role, content}. Decoding runs on the GPU with a KV cache; tokens are sampled on the GPU.

Options:
  --model            local checkpoint directory or Hugging Face hub id (required)
  --prompt           user message text
  --messages         JSON list of chat messages, e.g. '[{"role":"user","content":"2+2?"}]'
  --system           system message put before --prompt
  --raw              feed --prompt as plain text, without the chat template
  --max-new-tokens   new tokens at most (default 256)
  --temperature      0 = greedy (default 0)
  --top-k            keep the k most likely tokens (default 0 = off)
  --top-p            nucleus mass (default 1 = off)
  --seed             random seed (default 0)
  --num              samples of the same prompt (default 1)
  --json             print one JSON line per sample {text, tokens, stopped}
  -h, --help`,
  async run(args) {
    const flags = parseFlags("generate", args, {
      model: { type: "string" },
      prompt: { type: "string" },
      messages: { type: "string" },
      system: { type: "string" },
      raw: { type: "boolean" },
      "max-new-tokens": { type: "string" },
      temperature: { type: "string" },
      "top-k": { type: "string" },
      "top-p": { type: "string" },
      seed: { type: "string" },
      num: { type: "string" },
      json: { type: "boolean" },
    });
    if (flags.help) return console.log(this.help), 0;
    if (typeof flags.model !== "string") throw new UsageError("generate: --model is required");
    if ((flags.prompt === undefined) === (flags.messages === undefined)) {
      throw new UsageError("generate: give exactly one of --prompt and --messages");
    }
    let messages: ChatMessage[] | undefined;
    if (typeof flags.messages === "string") {
      try {
        messages = JSON.parse(flags.messages);
      } catch (e) {
        throw new UsageError(`generate: --messages is not valid JSON (${(e as Error).message})`);
      }
    } else if (!flags.raw) {
      messages = [
        ...(typeof flags.system === "string" ? [{ role: "system", content: flags.system }] : []),
        { role: "user", content: flags.prompt as string },
      ];
    }
    const model = await loadModel(flags.model);
    try {
      const tokenizer = await loadTokenizer(model.dir!);
      const text = messages
        ? applyChatTemplate(tokenizer, messages, { addGenerationPrompt: true })
        : (flags.prompt as string);
      const prompt = tokenizer.encode(text, { addSpecialTokens: false });
      const n = num(flags, "num", 1);
      const stopIds = [
        ...new Set([...model.config.eosTokenIds, ...(tokenizer.imEndId !== null ? [tokenizer.imEndId] : [])]),
      ];
      const out = await generateTokens(model, Array.from({ length: n }, () => prompt), {
        maxNewTokens: num(flags, "max-new-tokens", 256),
        temperature: num(flags, "temperature", 0),
        topK: num(flags, "top-k", 0),
        topP: num(flags, "top-p", 1),
        seed: num(flags, "seed", 0),
        stopIds,
      });
      out.tokens.forEach((tokens, i) => {
        const text = tokenizer.decode(tokens, { skipSpecialTokens: true });
        if (flags.json) console.log(JSON.stringify({ text, tokens, stopped: out.stopped[i] }));
        else console.log(n > 1 ? `--- sample ${i + 1}\n${text}` : text);
      });
    } finally {
      releaseModel(model);
    }
    return 0;
  },
};
