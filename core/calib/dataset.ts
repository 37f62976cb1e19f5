/**
 * Calibration and evaluation sets.
 *
 * JSONL: one conversation per line, in the Hugging Face chat-message shape; media parts name files
 * relative to the JSONL file:
 *
 * ```json
 * {"messages": [{"role": "user", "content": [
 *     {"type": "image", "image": "photos/cat.jpg"},
 *     {"type": "audio", "audio": "clips/question.wav"},
 *     {"type": "video", "video": ["frames/0001.jpg", "frames/0002.jpg"], "fps": 2},
 *     {"type": "text", "text": "What is happening here?"}]}]}
 * {"messages": [{"role": "user", "content": "Plain text turns are fine too."}], "add_generation_prompt": false}
 * ```
 *
 * Blank lines and lines starting with `//` are skipped. `add_generation_prompt` defaults to true (the
 * reference calibrates on prompts that end with the assistant turn's opening).
 *
 * Plain text (any other extension): the file is tokenized once and cut into consecutive chunks of
 * `maxSeqLength` tokens (the last partial chunk is dropped when there is at least one full chunk).
 */
import type { ChatContentPart, ChatMessage } from "../io/chat_template.ts";
import { readImage } from "../io/image.ts";
import { loadAudio16k } from "../io/audio_resample.ts";
import type { TextTokenizer } from "../io/tokenizer.ts";
import type { Sample, SampleMedia } from "../model/sample.ts";

/** A problem with a calibration file: names the file, the line and the reason. */
export class CalibrationSetError extends Error {
  /** Creates the error. */
  constructor(readonly file: string, readonly line: number | undefined, reason: string) {
    super(line ? `${file}:${line}: ${reason}` : `${file}: ${reason}`);
    this.name = "CalibrationSetError";
  }
}

/** Options of {@link loadCalibrationSet}. */
export interface CalibrationSetOptions {
  /** Keep at most this many samples (the first ones, in file order). */
  maxSamples?: number;
  /** Tokenizer for plain-text files. */
  tokenizer?: TextTokenizer;
  /** Tokens per chunk of a plain-text file (default 512). */
  maxSeqLength?: number;
  /** Decode media (default true); false only checks that the files exist. */
  decodeMedia?: boolean;
}

function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : path.slice(0, i) || "/";
}

function resolve(base: string, rel: string): string {
  return rel.startsWith("/") ? rel : `${base}/${rel}`;
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** Parses one JSONL line into messages and the list of media references, validating the shape. */
function parseLine(file: string, line: number, text: string): {
  messages: ChatMessage[];
  media: { kind: "image" | "audio" | "video"; paths: string[]; fps: number }[];
  addGenerationPrompt: boolean;
} {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new CalibrationSetError(file, line, `not valid JSON (${(e as Error).message})`);
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new CalibrationSetError(file, line, 'each line must be a JSON object with a "messages" list');
  }
  const o = obj as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (k !== "messages" && k !== "add_generation_prompt") {
      throw new CalibrationSetError(file, line, `unknown key "${k}" (allowed: messages, add_generation_prompt)`);
    }
  }
  if (!Array.isArray(o.messages) || o.messages.length === 0) {
    throw new CalibrationSetError(file, line, '"messages" must be a non-empty list of {role, content}');
  }
  if (o.add_generation_prompt !== undefined && typeof o.add_generation_prompt !== "boolean") {
    throw new CalibrationSetError(file, line, '"add_generation_prompt" must be true or false');
  }
  const media: { kind: "image" | "audio" | "video"; paths: string[]; fps: number }[] = [];
  const messages: ChatMessage[] = o.messages.map((m, i) => {
    if (typeof m !== "object" || m === null || typeof (m as ChatMessage).role !== "string") {
      throw new CalibrationSetError(file, line, `message ${i} must be an object with a string "role"`);
    }
    const msg = m as Record<string, unknown>;
    if (typeof msg.content === "string") return { role: msg.role as string, content: msg.content };
    if (!Array.isArray(msg.content)) {
      throw new CalibrationSetError(file, line, `message ${i}: "content" must be a string or a list of parts`);
    }
    const parts: ChatContentPart[] = msg.content.map((p, j) => {
      const where = `message ${i}, part ${j}`;
      if (typeof p !== "object" || p === null) throw new CalibrationSetError(file, line, `${where} must be an object`);
      const part = p as Record<string, unknown>;
      switch (part.type) {
        case "text":
          if (typeof part.text !== "string") {
            throw new CalibrationSetError(file, line, `${where}: a text part needs a string "text"`);
          }
          return { type: "text", text: part.text };
        case "image":
        case "audio": {
          const path = part[part.type];
          if (typeof path !== "string" || !path) {
            throw new CalibrationSetError(
              file,
              line,
              `${where}: an ${part.type} part needs a file path in "${part.type}"`,
            );
          }
          media.push({ kind: part.type, paths: [path], fps: 0 });
          return { type: part.type };
        }
        case "video": {
          const v = part.video;
          const fps = part.fps === undefined ? 2 : part.fps;
          if (!Array.isArray(v) || v.length === 0 || v.some((x) => typeof x !== "string")) {
            throw new CalibrationSetError(
              file,
              line,
              `${where}: a video part needs a list of frame image paths in "video"`,
            );
          }
          if (typeof fps !== "number" || !(fps > 0)) {
            throw new CalibrationSetError(file, line, `${where}: "fps" must be a positive number`);
          }
          media.push({ kind: "video", paths: v as string[], fps });
          return { type: "video" };
        }
        default:
          throw new CalibrationSetError(
            file,
            line,
            `${where}: unknown part type ${JSON.stringify(part.type)} (text, image, audio, video)`,
          );
      }
    });
    return { role: msg.role as string, content: parts };
  });
  return { messages, media, addGenerationPrompt: (o.add_generation_prompt as boolean | undefined) ?? true };
}

/** Loads a calibration set: JSONL conversations (media decoded) or a plain-text file cut into chunks. */
export async function loadCalibrationSet(path: string, opts: CalibrationSetOptions = {}): Promise<Sample[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CalibrationSetError(path, undefined, "file not found");
    throw new CalibrationSetError(path, undefined, `cannot be read (${(e as Error).message})`);
  }
  if (!path.endsWith(".jsonl")) return textChunks(path, text, opts);
  const base = dirOf(path);
  const out: Sample[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (opts.maxSamples !== undefined && out.length >= opts.maxSamples) break;
    const raw = lines[i].trim();
    if (!raw || raw.startsWith("//")) continue;
    const ln = i + 1;
    const parsed = parseLine(path, ln, raw);
    const media: SampleMedia[] = [];
    for (const m of parsed.media) {
      const files = m.paths.map((p) => resolve(base, p));
      for (const f of files) {
        if (!(await exists(f))) throw new CalibrationSetError(path, ln, `${m.kind} file ${f} does not exist`);
      }
      if (opts.decodeMedia === false) continue;
      try {
        if (m.kind === "image") media.push({ kind: "image", image: await readImage(files[0]), source: files[0] });
        else if (m.kind === "audio") {
          media.push({ kind: "audio", samples16k: await loadAudio16k(files[0]), source: files[0] });
        } else {
          const frames = [];
          for (const f of files) frames.push(await readImage(f));
          media.push({ kind: "video", frames, fps: m.fps, source: files[0] });
        }
      } catch (e) {
        throw new CalibrationSetError(path, ln, (e as Error).message);
      }
    }
    out.push({
      kind: "chat",
      messages: parsed.messages,
      media,
      addGenerationPrompt: parsed.addGenerationPrompt,
      source: `${path}:${ln}`,
    });
  }
  if (!out.length) throw new CalibrationSetError(path, undefined, "contains no samples");
  return out;
}

function textChunks(path: string, text: string, opts: CalibrationSetOptions): Sample[] {
  if (!opts.tokenizer) {
    throw new CalibrationSetError(path, undefined, "plain-text calibration needs the model's tokenizer");
  }
  const len = opts.maxSeqLength ?? 512;
  const ids = opts.tokenizer.encode(text, { addSpecialTokens: false });
  if (ids.length < 2) throw new CalibrationSetError(path, undefined, "holds fewer than two tokens of text");
  const out: Sample[] = [];
  for (let s = 0; s < ids.length; s += len) {
    const chunk = ids.slice(s, s + len);
    if (chunk.length < len && out.length > 0) break;
    out.push({ kind: "tokens", ids: chunk, source: `${path} tokens ${s}..${s + chunk.length}` });
    if (opts.maxSamples !== undefined && out.length >= opts.maxSamples) break;
  }
  return out;
}
