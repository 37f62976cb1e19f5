/**
 * Chat templates: the Jinja programs that Hugging Face checkpoints ship to turn a conversation into the prompt
 * string a model was trained on, rendered with @huggingface/jinja the way transformers' `apply_chat_template`
 * renders them (messages, special-token strings, `add_generation_prompt`, `tools`, extra keyword arguments).
 *
 * The module also keeps the well-known templates of the three model families as constants, for checkpoints that
 * carry none (spec model-formats.md §1.1-1.3 for the prompt shapes).
 */
import { Template } from "@huggingface/jinja";

/** One part of a multimodal message, in the Hugging Face content-list shape. */
export type ChatContentPart =
  | { type: "text"; text: string }
  | { type: "image"; [key: string]: unknown }
  | { type: "audio"; [key: string]: unknown }
  | { type: "video"; [key: string]: unknown };

/** One conversation turn: a role ("system", "user", "assistant", "tool", ...) and its content. */
export interface ChatMessage {
  /** Who speaks. */
  role: string;
  /** Plain text, or a list of text/image/audio/video parts in order. */
  content: string | ChatContentPart[];
  /** Further fields some templates read (e.g. `tool_calls`). */
  [key: string]: unknown;
}

/** Options of {@link ChatTemplate.render}. */
export interface ChatTemplateRenderOptions {
  /** Append the opening of an assistant turn, as generation needs (default false). */
  addGenerationPrompt?: boolean;
  /** Tool (function) descriptions for templates that support them. */
  tools?: unknown[];
  /** Special-token strings the template may print (`bos_token` etc.); undefined ones are left out. */
  specialTokens?: { bos_token?: string; eos_token?: string; pad_token?: string; unk_token?: string };
  /** Further template variables, e.g. `{ add_vision_id: true }` for the Qwen templates. */
  extra?: Record<string, unknown>;
}

/** A chat template that could not be compiled or rendered, or a conversation it rejected. */
export class ChatTemplateError extends Error {
  /** Creates the error; `source` names where the template came from (a file or a constant). */
  constructor(readonly source: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ChatTemplateError";
  }
}

/**
 * LLaVA-1.5 (llava-hf) template: "USER: <image>\n{text} ASSISTANT:". Verbatim from transformers
 * tests/models/llava/test_processor_llava.py (commit 01080c62, `prepare_processor_dict`), which is the
 * chat_template.json of llava-hf/llava-1.5-7b-hf (the same string is listed as "llava-1.5 (chat_template.json)"
 * in openvino.genai's tokenizer fallback table). Images are printed before the text of each turn.
 */
export const LLAVA_1_5_CHAT_TEMPLATE: string =
  "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}" +
  "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}" +
  "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}" +
  "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}" +
  "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}" +
  "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}";

/**
 * Qwen2.5-VL (and Qwen2-VL) template: ChatML with a default system turn and
 * `<|vision_start|><|image_pad|><|vision_end|>` per image. Verbatim from transformers
 * tests/models/qwen2_5_vl/test_processor_qwen2_5_vl.py (commit 06b001ce, `prepare_processor_dict`); the same
 * string is the Qwen2-VL-Instruct chat template (openvino.genai fallback table, transformers model_doc/qwen2_vl.md).
 */
export const QWEN2_5_VL_CHAT_TEMPLATE: string =
  "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}" +
  "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}" +
  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n" +
  "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}" +
  "{% for content in message['content'] %}" +
  "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}" +
  "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: " +
  "{% endif %}<|vision_start|><|image_pad|><|vision_end|>" +
  "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}" +
  "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>" +
  "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/**
 * Qwen2.5-Omni template: ChatML with `<|vision_bos|><|IMAGE|><|vision_eos|>`,
 * `<|audio_bos|><|AUDIO|><|audio_eos|>` and `<|vision_bos|><|VIDEO|><|vision_eos|>` placeholders. Verbatim from
 * transformers tests/models/qwen2_5_omni/test_processor_qwen2_5_omni.py (commit 134856d3,
 * `prepare_processor_dict`), the template of Qwen/Qwen2.5-Omni-7B.
 */
export const QWEN2_5_OMNI_CHAT_TEMPLATE: string =
  "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}" +
  "{% set video_count = namespace(value=0) %}{% for message in messages %}" +
  "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
  "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}" +
  "<|im_end|>\n{% else %}{% for content in message['content'] %}" +
  "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}" +
  "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: " +
  "{% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>" +
  "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}" +
  "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: " +
  "{% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>{% elif content['type'] == 'video' or 'video' in content %}" +
  "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: " +
  "{% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}" +
  "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/** Known templates by config `model_type` (top level or thinker), for checkpoints that ship none. */
const KNOWN_TEMPLATES: Record<string, string> = {
  llava: LLAVA_1_5_CHAT_TEMPLATE,
  qwen2_vl: QWEN2_5_VL_CHAT_TEMPLATE,
  qwen2_5_vl: QWEN2_5_VL_CHAT_TEMPLATE,
  qwen2_5_omni: QWEN2_5_OMNI_CHAT_TEMPLATE,
  qwen2_5_omni_thinker: QWEN2_5_OMNI_CHAT_TEMPLATE,
};

/** The well-known chat template of a config `model_type`, or undefined when there is none. */
export function knownChatTemplate(modelType: string): string | undefined {
  return KNOWN_TEMPLATES[modelType];
}

/** Checks the conversation's shape so template failures are not blamed on the template. */
function validateMessages(source: string, messages: readonly ChatMessage[]): void {
  if (!Array.isArray(messages)) {
    throw new ChatTemplateError(source, "Chat messages must be an array of {role, content} objects.");
  }
  messages.forEach((message, i) => {
    if (message === null || typeof message !== "object" || typeof message.role !== "string") {
      throw new ChatTemplateError(source, `Chat message ${i} has no string "role".`);
    }
    const content = message.content;
    if (typeof content === "string") return;
    if (!Array.isArray(content)) {
      throw new ChatTemplateError(source, `Chat message ${i} content must be a string or an array of parts.`);
    }
    content.forEach((part, j) => {
      const type = (part as { type?: unknown } | null)?.type;
      if (type !== "text" && type !== "image" && type !== "audio" && type !== "video") {
        throw new ChatTemplateError(
          source,
          `Chat message ${i} part ${j} has type ${JSON.stringify(type)}; use "text", "image", "audio" or "video".`,
        );
      }
      if (type === "text" && typeof (part as { text?: unknown }).text !== "string") {
        throw new ChatTemplateError(source, `Chat message ${i} part ${j} is a text part without a string "text".`);
      }
    });
  });
}

/** A parsed chat template, ready to render many conversations. */
export class ChatTemplate {
  private readonly program: Template;

  /** Parses `text`; `source` names its origin in error messages (a file path or a constant's name). */
  constructor(readonly text: string, readonly source: string = "an inline string") {
    try {
      this.program = new Template(text);
    } catch (err) {
      throw new ChatTemplateError(
        source,
        `The chat template from ${source} is not valid Jinja (${(err as Error).message}).`,
        {
          cause: err,
        },
      );
    }
  }

  /** Renders the prompt string for `messages`, as transformers' `apply_chat_template(tokenize=False)` does. */
  render(messages: readonly ChatMessage[], options: ChatTemplateRenderOptions = {}): string {
    validateMessages(this.source, messages);
    const variables: Record<string, unknown> = {
      ...(options.extra ?? {}),
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? false,
    };
    if (options.tools !== undefined) variables.tools = options.tools;
    for (const [name, value] of Object.entries(options.specialTokens ?? {})) {
      if (value !== undefined) variables[name] = value;
    }
    try {
      return this.program.render(variables);
    } catch (err) {
      throw new ChatTemplateError(
        this.source,
        `The chat template from ${this.source} failed on this conversation: ${(err as Error).message}.`,
        { cause: err },
      );
    }
  }
}

/** Parses `template` and renders `messages` in one call (see {@link ChatTemplate.render}). */
export function renderChatTemplate(
  template: string,
  messages: readonly ChatMessage[],
  options: ChatTemplateRenderOptions = {},
): string {
  return new ChatTemplate(template).render(messages, options);
}
