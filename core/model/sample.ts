/**
 * A calibration or evaluation sample as the adapters receive it: a conversation (HF chat messages whose
 * image/audio/video parts are matched in order with `media`), or a raw token sequence.
 */
import type { ChatMessage } from "../io/chat_template.ts";
import type { RgbImage } from "../io/image.ts";

/** One media item of a sample. */
export type SampleMedia =
  | { kind: "image"; image: RgbImage; source: string }
  | { kind: "video"; frames: RgbImage[]; fps: number; source: string }
  | { kind: "audio"; samples16k: Float32Array; source: string };

/** A sample: a conversation with media, or token ids. */
export type Sample =
  | {
    kind: "chat";
    messages: ChatMessage[];
    /** Media in the order their parts appear in `messages`. */
    media: SampleMedia[];
    /** Append the assistant-turn opening (as generation and the reference calibration do). */
    addGenerationPrompt?: boolean;
    /** Where the sample came from (file and line), for error messages. */
    source: string;
  }
  | { kind: "tokens"; ids: number[]; source: string };
