/**
 * Prompt handling shared by the Qwen2.5-VL and Qwen2.5-Omni adapters: render a chat sample with the checkpoint's
 * template, tokenize it (every placeholder is an added token, so it becomes exactly one id and the text around it is
 * tokenized on its own), check that the placeholders match the sample's media in kind and order, and expand each
 * placeholder into the token run the processor would produce. Expanding ids instead of strings gives the same ids
 * as transformers' string replacement followed by tokenization, without re-tokenizing thousands of placeholders.
 */
import type { Sample, SampleMedia, TextTokenizer } from "@masquant/core";

/** Media kinds that have a placeholder token. */
export type PlaceholderKind = "image" | "video" | "audio";

/** Thrown when a sample's media do not fit its prompt or the model (the message names the sample or file). */
export class QwenMediaError extends Error {
  /** Creates the error with a complete sentence. */
  constructor(message: string) {
    super(message);
    this.name = "QwenMediaError";
  }
}

/** A chat sample (the kind with media). */
export type ChatSample = Extract<Sample, { kind: "chat" }>;

/** One placeholder token of a tokenized prompt. */
export interface PlaceholderAt {
  /** Token index. */
  index: number;
  kind: PlaceholderKind;
}

/** Renders `sample` with the tokenizer's chat template and tokenizes it. */
export function chatPromptIds(tokenizer: TextTokenizer, sample: ChatSample): number[] {
  const text = tokenizer.applyChatTemplate(sample.messages, {
    addGenerationPrompt: sample.addGenerationPrompt ?? true,
  });
  return tokenizer.encode(text, { addSpecialTokens: true });
}

/** The placeholder tokens of `ids` in order; `tokenIds` maps each kind the model knows to its id. */
export function findPlaceholders(
  ids: readonly number[],
  tokenIds: Partial<Record<PlaceholderKind, number>>,
): PlaceholderAt[] {
  const kindOf = new Map<number, PlaceholderKind>();
  for (const [kind, id] of Object.entries(tokenIds)) if (id !== undefined) kindOf.set(id, kind as PlaceholderKind);
  const out: PlaceholderAt[] = [];
  ids.forEach((id, index) => {
    const kind = kindOf.get(id);
    if (kind) out.push({ index, kind });
  });
  return out;
}

const PLURAL: Record<PlaceholderKind, string> = { image: "image(s)", video: "video(s)", audio: "audio clip(s)" };

/**
 * Checks that the prompt's placeholders and the sample's media agree in number per kind and in order; throws a
 * {@link QwenMediaError} naming the sample otherwise. `tokenNames` are the placeholder strings for the message.
 */
export function matchPlaceholders(
  found: readonly PlaceholderAt[],
  media: readonly SampleMedia[],
  tokenNames: Partial<Record<PlaceholderKind, string>>,
  source: string,
): void {
  for (const kind of ["image", "video", "audio"] as const) {
    const inPrompt = found.filter((p) => p.kind === kind).length;
    const given = media.filter((m) => m.kind === kind).length;
    if (inPrompt !== given) {
      throw new QwenMediaError(
        `${source}: the prompt has ${inPrompt} ${tokenNames[kind] ?? kind} placeholder(s) but ${given} ` +
          `${PLURAL[kind]} were given; give one ${kind} per ${kind} part of the messages`,
      );
    }
  }
  const order = found.map((p) => p.kind).join(", ");
  const given = media.map((m) => m.kind).join(", ");
  if (order !== given) {
    throw new QwenMediaError(
      `${source}: the placeholders appear in the order (${order}) but the media are given as (${given}); ` +
        `list the media in the order of their message parts`,
    );
  }
}

/** Replaces the token at each `index` of `found` by `replacement(i)` (i = 0, 1, … in order). */
export function expandPlaceholders(
  ids: readonly number[],
  found: readonly PlaceholderAt[],
  replacement: (i: number) => readonly number[],
): number[] {
  const out: number[] = [];
  let from = 0;
  found.forEach((p, i) => {
    for (let j = from; j < p.index; j++) out.push(ids[j]);
    for (const id of replacement(i)) out.push(id);
    from = p.index + 1;
  });
  for (let j = from; j < ids.length; j++) out.push(ids[j]);
  return out;
}

/** `n` copies of `id`. */
export function repeatId(id: number, n: number): number[] {
  return new Array<number>(n).fill(id);
}

/** Checks an image's size and pixel buffer; throws a {@link QwenMediaError} naming its source. */
export function checkImage(img: { width: number; height: number; data: ArrayLike<number> }, source: string): void {
  if (
    !Number.isInteger(img.width) || !Number.isInteger(img.height) || img.width <= 0 || img.height <= 0 ||
    img.data.length !== img.width * img.height * 3
  ) {
    throw new QwenMediaError(
      `${source}: the decoded image is ${img.width}x${img.height} with ${img.data.length} values, which is not ` +
        `an RGB image; decode it with readImage()`,
    );
  }
}
