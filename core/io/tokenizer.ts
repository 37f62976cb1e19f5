/**
 * Text tokenizers of Hugging Face checkpoints: `tokenizer.json` (byte-level BPE as in Qwen2, SentencePiece-style
 * BPE with the `▁` metaspace and byte fallback as in Llama-2/LLaVA) run by @huggingface/tokenizers, plus the
 * special tokens of `tokenizer_config.json` and the checkpoint's chat template.
 *
 * Added tokens (`<image>`, `<|image_pad|>`, `<|AUDIO|>`, ...) are matched whole before the model splits the text,
 * so a placeholder in a prompt always becomes exactly one id.
 */
import { Tokenizer } from "@huggingface/tokenizers";
import { ChatTemplate, ChatTemplateError } from "./chat_template.ts";
import type { ChatMessage, ChatTemplateRenderOptions } from "./chat_template.ts";

/** A tokenizer file that is missing, unreadable or inconsistent; the message names the file and the fix. */
export class TokenizerFileError extends Error {
  /** Creates the error for `path` (a file, or a directory when the whole set is at fault). */
  constructor(readonly path: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TokenizerFileError";
  }
}

/** Options of {@link TextTokenizer.encode}. */
export interface EncodeOptions {
  /** Add the tokens the tokenizer's post-processor adds (Llama's BOS); default true, as in transformers. */
  addSpecialTokens?: boolean;
}

/** Options of {@link TextTokenizer.decode}. */
export interface DecodeOptions {
  /** Leave special tokens (BOS, `<|im_end|>`, `<image>`, ...) out of the text; default false. */
  skipSpecialTokens?: boolean;
}

/** Options of {@link TextTokenizer.applyChatTemplate}. */
export interface ApplyChatTemplateOptions {
  /** Append the opening of an assistant turn (default false). */
  addGenerationPrompt?: boolean;
  /** Tool descriptions for templates that support them. */
  tools?: unknown[];
  /** Further template variables (e.g. `{ add_vision_id: true }`). */
  extra?: Record<string, unknown>;
}

/** Options of {@link TextTokenizer.fromDir}. */
export interface FromDirOptions {
  /** Template to use when the directory has none (e.g. a constant from chat_template.ts). */
  fallbackChatTemplate?: string;
}

/** A chat template found in a checkpoint, with the file it came from. */
interface FoundTemplate {
  text: string;
  source: string;
}

/** `dir` and a file name joined with one slash. */
function join(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

/** Reads a whole text file, or returns undefined when it does not exist. */
async function readOptionalText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new TokenizerFileError(path, `Cannot read ${path}: ${(err as Error).message}.`, { cause: err });
  }
}

/** Parses JSON text, naming the file when it is malformed. */
function parseJson(path: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new TokenizerFileError(path, `${path} is not valid JSON (${(err as Error).message}).`, { cause: err });
  }
}

/** Reads a required JSON file of a tokenizer directory. */
async function readRequiredJson(dir: string, name: string): Promise<unknown> {
  const path = join(dir, name);
  const text = await readOptionalText(path);
  if (text === undefined) {
    throw new TokenizerFileError(
      path,
      `Tokenizer directory ${dir} has no ${name}; copy it from the original Hugging Face checkpoint.`,
    );
  }
  return parseJson(path, text);
}

/** True for a plain JSON object. */
function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * The chat template stored in `tokenizer_config.json`: a string, or a list of named templates of which the one
 * named "default" is taken.
 */
function templateFromConfig(config: Record<string, unknown>, source: string): FoundTemplate | undefined {
  const value = config.chat_template;
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return { text: value, source };
  if (Array.isArray(value)) {
    const named = new Map<string, string>();
    for (const entry of value) {
      if (isObject(entry) && typeof entry.name === "string" && typeof entry.template === "string") {
        named.set(entry.name, entry.template);
      }
    }
    const text = named.get("default");
    if (text !== undefined) return { text, source: `${source} (chat_template "default")` };
  }
  throw new TokenizerFileError(
    source,
    `${source} has a chat_template that is neither a string nor a list with a "default" entry.`,
  );
}

/** Resolves a special-token field of tokenizer_config.json (a string, an AddedToken object or null). */
function specialTokenContent(config: Record<string, unknown>, field: string, source: string): string | undefined {
  const value = config[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (isObject(value) && typeof value.content === "string") return value.content;
  throw new TokenizerFileError(source, `${source} field "${field}" is neither a token string nor {"content": ...}.`);
}

/**
 * A checkpoint's text tokenizer: encode/decode with special tokens matched whole, the ids of its BOS/EOS/PAD
 * tokens, and its chat template.
 */
export class TextTokenizer {
  /** The beginning-of-sequence token string, when the tokenizer defines one. */
  readonly bosToken?: string;
  /** The end-of-sequence token string (for chat models the end-of-turn token, e.g. `<|im_end|>`). */
  readonly eosToken?: string;
  /** The padding token string, when defined. */
  readonly padToken?: string;
  /** The unknown token string, when defined. */
  readonly unkToken?: string;
  /** Id of {@link bosToken}. */
  readonly bosTokenId?: number;
  /** Id of {@link eosToken}. */
  readonly eosTokenId?: number;
  /** Id of {@link padToken}. */
  readonly padTokenId?: number;
  /** Id of {@link unkToken}. */
  readonly unkTokenId?: number;
  /** One past the largest token id (regular vocabulary and added tokens); the embedding needs this many rows. */
  readonly vocabSize: number;
  /** Where the tokenizer came from (its directory, or "the given objects"), for messages. */
  readonly source: string;

  private readonly tokenizer: Tokenizer;
  private readonly template?: ChatTemplate;
  private readonly specialIds: ReadonlySet<number>;

  private constructor(
    tokenizer: Tokenizer,
    config: Record<string, unknown>,
    template: FoundTemplate | undefined,
    source: string,
  ) {
    this.tokenizer = tokenizer;
    this.source = source;
    const configSource = `tokenizer_config.json of ${source}`;
    const idOf = (field: string, token: string | undefined): number | undefined => {
      if (token === undefined) return undefined;
      const id = tokenizer.token_to_id(token);
      if (id === undefined) {
        throw new TokenizerFileError(
          source,
          `${configSource} names ${field} ${JSON.stringify(token)}, which tokenizer.json does not contain.`,
        );
      }
      return id;
    };
    this.bosToken = specialTokenContent(config, "bos_token", configSource);
    this.eosToken = specialTokenContent(config, "eos_token", configSource);
    this.padToken = specialTokenContent(config, "pad_token", configSource);
    this.unkToken = specialTokenContent(config, "unk_token", configSource);
    this.bosTokenId = idOf("bos_token", this.bosToken);
    this.eosTokenId = idOf("eos_token", this.eosToken);
    this.padTokenId = idOf("pad_token", this.padToken);
    this.unkTokenId = idOf("unk_token", this.unkToken);
    let maxId = -1;
    for (const id of tokenizer.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    const special = new Set<number>();
    for (const [id, token] of tokenizer.get_added_tokens_decoder()) if (token.special) special.add(id);
    this.specialIds = special;
    if (template !== undefined) this.template = new ChatTemplate(template.text, template.source);
  }

  /**
   * Loads the tokenizer of a checkpoint directory: `tokenizer.json` and `tokenizer_config.json` (both required),
   * and the chat template from `chat_template.jinja`, `chat_template.json` or `tokenizer_config.json`, in that
   * order (the processor-level files first, as transformers' processors read them).
   */
  static async fromDir(dir: string, options: FromDirOptions = {}): Promise<TextTokenizer> {
    const tokenizerJson = await readRequiredJson(dir, "tokenizer.json");
    const configPath = join(dir, "tokenizer_config.json");
    const config = await readRequiredJson(dir, "tokenizer_config.json");
    if (!isObject(config)) {
      throw new TokenizerFileError(configPath, `${configPath} must hold a JSON object.`);
    }
    let template: FoundTemplate | undefined;
    const jinjaPath = join(dir, "chat_template.jinja");
    const jinja = await readOptionalText(jinjaPath);
    if (jinja !== undefined) template = { text: jinja, source: jinjaPath };
    if (template === undefined) {
      const jsonPath = join(dir, "chat_template.json");
      const jsonText = await readOptionalText(jsonPath);
      if (jsonText !== undefined) {
        const parsed = parseJson(jsonPath, jsonText);
        if (!isObject(parsed) || typeof parsed.chat_template !== "string") {
          throw new TokenizerFileError(jsonPath, `${jsonPath} must be an object with a string "chat_template".`);
        }
        template = { text: parsed.chat_template, source: jsonPath };
      }
    }
    template ??= templateFromConfig(config, configPath);
    if (template === undefined && options.fallbackChatTemplate !== undefined) {
      template = { text: options.fallbackChatTemplate, source: "the fallback template given to fromDir" };
    }
    return TextTokenizer.build(tokenizerJson, config, template, dir);
  }

  /**
   * Builds a tokenizer from already-parsed files. `chatTemplate`, when given, overrides one stored in the config.
   */
  static fromObjects(tokenizerJson: unknown, tokenizerConfig: unknown = {}, chatTemplate?: string): TextTokenizer {
    if (!isObject(tokenizerConfig)) {
      throw new TokenizerFileError("tokenizer_config", "The tokenizer config must be a JSON object.");
    }
    const template = chatTemplate !== undefined
      ? { text: chatTemplate, source: "the template given to fromObjects" }
      : templateFromConfig(tokenizerConfig, "the given tokenizer config");
    return TextTokenizer.build(tokenizerJson, tokenizerConfig, template, "the given objects");
  }

  /** Runs the tokenizer library on the parsed files, turning its failures into file errors. */
  private static build(
    tokenizerJson: unknown,
    config: Record<string, unknown>,
    template: FoundTemplate | undefined,
    source: string,
  ): TextTokenizer {
    const what = source === "the given objects" ? "The given tokenizer.json" : `tokenizer.json in ${source}`;
    if (!isObject(tokenizerJson) || !isObject(tokenizerJson.model)) {
      throw new TokenizerFileError(source, `${what} has no "model" object; it is not a Hugging Face tokenizer file.`);
    }
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer({ added_tokens: [], ...tokenizerJson }, config);
    } catch (err) {
      throw new TokenizerFileError(
        source,
        `${what} cannot be loaded (${(err as Error).message}).`,
        { cause: err },
      );
    }
    return new TextTokenizer(tokenizer, config, template, source);
  }

  /** Token ids of `text`; added tokens in the text are matched whole. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /** Token strings of `text` (the pieces behind {@link encode}'s ids, without added special tokens). */
  tokenize(text: string): string[] {
    return this.tokenizer.tokenize(text, { add_special_tokens: false });
  }

  /** The text of `ids`; an empty list gives "". Ids outside the vocabulary throw. */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    if (ids.length === 0) return "";
    for (const id of ids) {
      if (!Number.isInteger(id) || this.tokenizer.id_to_token(id) === undefined) {
        throw new RangeError(`Cannot decode token id ${id}: the vocabulary of ${this.source} has no such id.`);
      }
    }
    return this.tokenizer.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  /** The id of a token string (regular or added), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /** The token string of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /** True when `id` is an added token marked special (BOS/EOS, `<image>`, `<|im_start|>`, ...). */
  isSpecialId(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** Whether the tokenizer has a chat template (from its files, the fallback, or fromObjects). */
  get hasChatTemplate(): boolean {
    return this.template !== undefined;
  }

  /** The chat template text, when there is one. */
  get chatTemplate(): string | undefined {
    return this.template?.text;
  }

  /**
   * The prompt string of a conversation, rendered with the tokenizer's chat template and its special-token
   * strings (`bos_token`, `eos_token`, ...), as transformers' `apply_chat_template(tokenize=False)` returns it.
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: ApplyChatTemplateOptions = {}): string {
    if (this.template === undefined) {
      throw new ChatTemplateError(
        this.source,
        `The tokenizer of ${this.source} has no chat template; add chat_template.json or pass fallbackChatTemplate.`,
      );
    }
    const renderOptions: ChatTemplateRenderOptions = {
      addGenerationPrompt: options.addGenerationPrompt,
      tools: options.tools,
      extra: options.extra,
      specialTokens: {
        bos_token: this.bosToken,
        eos_token: this.eosToken,
        pad_token: this.padToken,
        unk_token: this.unkToken,
      },
    };
    return this.template.render(messages, renderOptions);
  }
}
