/**
 * Chat templates: render the tokenizer's Jinja `chat_template` with `@huggingface/jinja`, with the same context
 * `transformers.apply_chat_template` provides (`messages`, `add_generation_prompt`, `tools`, the special tokens
 * that are set, plus the library's `raise_exception`/`strftime_now`). For Qwen this yields ChatML:
 * `<|im_start|>system\n…<|im_end|>\n<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n`.
 *
 * @module
 */

import { Template } from "@huggingface/jinja";
import type { Tokenizer } from "./tokenizer.ts";

/** One chat message. Extra fields (e.g. `tool_calls`, `reasoning_content`) are passed to the template. */
export interface ChatMessage {
  /** "system", "user", "assistant" or "tool". */
  role: string;
  /** Message text. */
  content: string;
  /** Template-specific extras. */
  [key: string]: unknown;
}

/** Options of {@link applyChatTemplate}. */
export interface ChatTemplateOptions {
  /** Append the assistant turn header (`<|im_start|>assistant\n`) so the model continues as the assistant. */
  addGenerationPrompt?: boolean;
  /** Tool (function) schemas for templates that support them. */
  tools?: unknown[];
  /** Extra template variables, e.g. `{ enable_thinking: false }` for Qwen3 templates. */
  context?: Record<string, unknown>;
  /** Template source overriding the tokenizer's. */
  template?: string;
}

const compiled = new Map<string, Template>();

/** Parse (and cache) a template; parse errors name the problem. */
function compile(source: string): Template {
  let t = compiled.get(source);
  if (!t) {
    try {
      t = new Template(source);
    } catch (e) {
      throw new Error(`Cannot parse chat template: ${(e as Error).message}`);
    }
    if (compiled.size > 32) compiled.clear();
    compiled.set(source, t);
  }
  return t;
}

/** Render `messages` with the tokenizer's chat template; returns the prompt text. */
export function applyChatTemplate(
  tokenizer: Tokenizer,
  messages: readonly ChatMessage[],
  opts: ChatTemplateOptions = {},
): string {
  const source = opts.template ?? tokenizer.chatTemplate;
  if (source === null) throw new Error("Cannot apply chat template: the tokenizer has no chat_template");
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new Error("Cannot apply chat template: messages must be a non-empty list");
  }
  messages.forEach((m, i) => {
    if (typeof m?.role !== "string" || typeof m?.content !== "string") {
      throw new Error(
        `Cannot apply chat template: message ${i} must have string "role" and "content", got ${
          JSON.stringify(m)
        }`,
      );
    }
  });
  const ctx: Record<string, unknown> = {
    messages: messages.map((m) => ({ ...m })),
    add_generation_prompt: opts.addGenerationPrompt ?? false,
    ...opts.context,
  };
  if (opts.tools?.length) ctx.tools = opts.tools;
  const special: [string, string | null][] = [
    ["bos_token", tokenizer.bosToken],
    ["eos_token", tokenizer.eosToken],
    ["pad_token", tokenizer.padToken],
  ];
  for (const [k, v] of special) if (v !== null && !(k in ctx)) ctx[k] = v;
  try {
    return compile(source).render(ctx);
  } catch (e) {
    throw new Error(`Cannot apply chat template: ${(e as Error).message}`);
  }
}

/**
 * Render and tokenize in one step (as `apply_chat_template(tokenize=True)`: the template already contains the
 * special tokens, so none are added by the post-processor).
 */
export function applyChatTemplateIds(
  tokenizer: Tokenizer,
  messages: readonly ChatMessage[],
  opts: ChatTemplateOptions = {},
): number[] {
  return tokenizer.encode(applyChatTemplate(tokenizer, messages, opts), { addSpecialTokens: false });
}
