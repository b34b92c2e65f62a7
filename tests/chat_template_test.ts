// Tests for core/tokenizer/chat_template.ts with the real Qwen tokenizer_config.json chat template.
import assert from "node:assert/strict";
import { loadTokenizer, type Tokenizer } from "../core/tokenizer/tokenizer.ts";
import {
  applyChatTemplate,
  applyChatTemplateIds,
  type ChatMessage,
} from "../core/tokenizer/chat_template.ts";

const QWEN_DIR = new URL("../../shared/tokenizers/qwen", import.meta.url).pathname;
let cached: Promise<Tokenizer> | null = null;
function qwen(): Promise<Tokenizer> {
  cached ??= Deno.stat(`${QWEN_DIR}/tokenizer_config.json`).then(
    () => loadTokenizer(QWEN_DIR),
    () => {
      throw new Error(`Qwen tokenizer not found at "${QWEN_DIR}" (shared data missing)`);
    },
  );
  return cached;
}

const SYS = "You are a careful math tutor.";
const Q = "Natalia sold 48 clips in April and half as many in May. How many in total?";
const A = "In May she sold 48/2 = 24 clips.\nIn total 48+24 = 72.\n#### 72";

Deno.test("chat template: system + user + assistant renders ChatML", async () => {
  const tok = await qwen();
  const msgs: ChatMessage[] = [
    { role: "system", content: SYS },
    { role: "user", content: Q },
    { role: "assistant", content: A },
  ];
  const out = applyChatTemplate(tok, msgs);
  // Qwen3's template wraps the final assistant turn (after the last user query) in an empty think block.
  const expected = `<|im_start|>system\n${SYS}<|im_end|>\n` +
    `<|im_start|>user\n${Q}<|im_end|>\n` +
    `<|im_start|>assistant\n<think>\n\n</think>\n\n${A}<|im_end|>\n`;
  assert.equal(out, expected);
  const ids = applyChatTemplateIds(tok, msgs);
  assert.deepEqual(ids, tok.encode(expected, { addSpecialTokens: false }));
  assert.equal(ids[0], tok.imStartId);
  assert.equal(ids.filter((i) => i === tok.imStartId).length, 3);
  assert.equal(ids.filter((i) => i === tok.imEndId).length, 3);
  assert.equal(tok.decode(ids), expected);
});

Deno.test("chat template: generation prompt, thinking switch and multi-turn history", async () => {
  const tok = await qwen();
  const prompt = applyChatTemplate(tok, [{ role: "user", content: Q }], { addGenerationPrompt: true });
  assert.equal(prompt, `<|im_start|>user\n${Q}<|im_end|>\n<|im_start|>assistant\n`);
  const noPrompt = applyChatTemplate(tok, [{ role: "user", content: Q }]);
  assert.equal(noPrompt, `<|im_start|>user\n${Q}<|im_end|>\n`);
  const noThink = applyChatTemplate(tok, [{ role: "user", content: Q }], {
    addGenerationPrompt: true,
    context: { enable_thinking: false },
  });
  assert.equal(noThink, `${prompt}<think>\n\n</think>\n\n`);
  // earlier assistant turns (before the last user message) are rendered without think blocks
  const multi = applyChatTemplate(tok, [
    { role: "user", content: "1+1?" },
    { role: "assistant", content: "<think>\nadd\n</think>\n\n2" },
    { role: "user", content: "2+2?" },
  ], { addGenerationPrompt: true });
  assert.equal(
    multi,
    "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n" +
      "<|im_start|>assistant\n",
  );
});

Deno.test("chat template: custom templates, special-token variables and errors", async () => {
  const tok = await qwen();
  const tpl = "{{ eos_token }}|{{ pad_token }}|{{ bos_token is defined }}|" +
    "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}";
  assert.equal(
    applyChatTemplate(tok, [{ role: "user", content: "hi" }], { template: tpl, addGenerationPrompt: true }),
    "<|im_end|>|<|endoftext|>|false|[user:hi]>",
  );
  assert.throws(() => applyChatTemplate(tok, []), /messages must be a non-empty list/);
  assert.throws(
    () => applyChatTemplate(tok, [{ role: "user" } as unknown as ChatMessage]),
    /message 0 must have string "role" and "content"/,
  );
  assert.throws(
    () =>
      applyChatTemplate(tok, [{ role: "user", content: "x" }], {
        template: "{{ raise_exception('no users') }}",
      }),
    /Cannot apply chat template: .*no users/,
  );
  assert.throws(
    () => applyChatTemplate(tok, [{ role: "user", content: "x" }], { template: "{% if %}" }),
    /Cannot parse chat template/,
  );
});
