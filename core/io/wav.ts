/**
 * RIFF/WAVE decoding to float32 channels: PCM unsigned 8-bit, signed 16/24/32-bit, IEEE float 32/64-bit, and the
 * same encodings inside WAVE_FORMAT_EXTENSIBLE. Integers are scaled as libsndfile/soundfile do when reading
 * float32: unsigned 8-bit (b - 128) / 128, signed b-bit v / 2^(b-1), so values lie in [-1, 1). Unknown chunks are
 * skipped (with their pad byte when the size is odd). Compressed encodings are rejected with their format tag.
 */

/** A WAV file that cannot be decoded; the message names the file and the problem. */
export class WavFormatError extends Error {
  /** Creates the error with a complete message. */
  constructor(message: string) {
    super(message);
    this.name = "WavFormatError";
  }
}

/** Decoded audio: one Float32Array per channel, all of the same length. */
export interface DecodedAudio {
  /** Frames per second. */
  sampleRate: number;
  /** Number of channels (samples.length). */
  channels: number;
  /** Per-channel samples in [-1, 1) (float files may exceed it). */
  samples: Float32Array<ArrayBuffer>[];
}

const FORMAT_PCM = 0x0001;
const FORMAT_IEEE_FLOAT = 0x0003;
const FORMAT_EXTENSIBLE = 0xfffe;

/** Names of common WAV format tags, for error messages. */
const FORMAT_NAMES: Record<number, string> = {
  0x0002: "Microsoft ADPCM",
  0x0006: "A-law",
  0x0007: "mu-law",
  0x0011: "IMA ADPCM",
  0x0031: "GSM 6.10",
  0x0050: "MPEG",
  0x0055: "MPEG Layer 3",
  0x00ff: "AAC",
  0x1610: "HE-AAC",
  0xf1ac: "FLAC",
};

/** The GUID tail shared by the KSDATAFORMAT_SUBTYPE_* GUIDs: xxxxxxxx-0000-0010-8000-00aa00389b71. */
const SUBTYPE_GUID_TAIL = [0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71];

function hexTag(tag: number): string {
  return "0x" + tag.toString(16).padStart(4, "0");
}

function fourCC(bytes: Uint8Array, at: number): string {
  return String.fromCharCode(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
}

interface WavFormat {
  tag: number; // FORMAT_PCM or FORMAT_IEEE_FLOAT after resolving EXTENSIBLE
  channels: number;
  sampleRate: number;
  blockAlign: number;
  bits: number;
}

function parseFormat(bytes: Uint8Array, view: DataView, at: number, size: number, name: string): WavFormat {
  if (size < 16) throw new WavFormatError(`${name} has a fmt chunk of ${size} bytes; at least 16 are needed.`);
  let tag = view.getUint16(at, true);
  const channels = view.getUint16(at + 2, true);
  const sampleRate = view.getUint32(at + 4, true);
  const blockAlign = view.getUint16(at + 12, true);
  const bits = view.getUint16(at + 14, true);
  if (tag === FORMAT_EXTENSIBLE) {
    if (size < 40) {
      throw new WavFormatError(`${name} declares WAVE_FORMAT_EXTENSIBLE but its fmt chunk has only ${size} bytes.`);
    }
    const sub = view.getUint16(at + 24, true);
    const tailOk = SUBTYPE_GUID_TAIL.every((b, i) => bytes[at + 28 + i] === b) && view.getUint16(at + 26, true) === 0;
    if (!tailOk) throw new WavFormatError(`${name} uses an extensible WAV sub-format GUID that is not supported.`);
    tag = sub;
  }
  if (tag !== FORMAT_PCM && tag !== FORMAT_IEEE_FLOAT) {
    const label = FORMAT_NAMES[tag] ? ` (${FORMAT_NAMES[tag]})` : "";
    throw new WavFormatError(
      `${name} uses WAV format tag ${hexTag(tag)}${label}, which is not supported; convert it to PCM or float WAV.`,
    );
  }
  if (channels === 0) throw new WavFormatError(`${name} declares 0 channels.`);
  if (sampleRate === 0) throw new WavFormatError(`${name} declares a sample rate of 0 Hz.`);
  const okBits = tag === FORMAT_PCM ? [8, 16, 24, 32] : [32, 64];
  if (!okBits.includes(bits)) {
    const kind = tag === FORMAT_PCM ? "integer PCM" : "IEEE float";
    throw new WavFormatError(`${name} stores ${bits}-bit ${kind} samples, which is not supported.`);
  }
  const needed = channels * (bits / 8);
  if (blockAlign !== needed) {
    throw new WavFormatError(
      `${name} declares a block align of ${blockAlign} bytes but ${channels} channels of ${bits} bits need ${needed}.`,
    );
  }
  return { tag, channels, sampleRate, blockAlign, bits };
}

function decodeSamples(view: DataView, at: number, frames: number, fmt: WavFormat): Float32Array<ArrayBuffer>[] {
  const out: Float32Array<ArrayBuffer>[] = [];
  for (let c = 0; c < fmt.channels; c++) out.push(new Float32Array(frames));
  const bytesPer = fmt.bits / 8;
  for (let c = 0; c < fmt.channels; c++) {
    const dst = out[c];
    let p = at + c * bytesPer;
    const step = fmt.blockAlign;
    if (fmt.tag === FORMAT_IEEE_FLOAT) {
      if (fmt.bits === 32) { for (let i = 0; i < frames; i++, p += step) dst[i] = view.getFloat32(p, true); }
      else for (let i = 0; i < frames; i++, p += step) dst[i] = view.getFloat64(p, true);
      continue;
    }
    switch (fmt.bits) {
      case 8:
        for (let i = 0; i < frames; i++, p += step) dst[i] = (view.getUint8(p) - 128) / 128;
        break;
      case 16:
        for (let i = 0; i < frames; i++, p += step) dst[i] = view.getInt16(p, true) / 32768;
        break;
      case 24:
        for (let i = 0; i < frames; i++, p += step) {
          const v = view.getUint8(p) | (view.getUint8(p + 1) << 8) | (view.getInt8(p + 2) << 16);
          dst[i] = v / 8388608;
        }
        break;
      default:
        for (let i = 0; i < frames; i++, p += step) dst[i] = view.getInt32(p, true) / 2147483648;
    }
  }
  return out;
}

/**
 * Decodes the bytes of a RIFF/WAVE file; `name` (usually the path) appears in every error message. Throws a
 * {@link WavFormatError} for non-WAV input, unsupported encodings, truncated chunks or zero channels/rate.
 */
export function decodeWav(bytes: Uint8Array, name: string): DecodedAudio {
  if (bytes.length < 12 || fourCC(bytes, 0) !== "RIFF" || fourCC(bytes, 8) !== "WAVE") {
    const head = bytes.length >= 4 ? fourCC(bytes, 0) : "";
    if (head === "RF64" || head === "RIFX") {
      throw new WavFormatError(`${name} is a ${head} WAV file, which is not supported; convert it to RIFF WAV.`);
    }
    throw new WavFormatError(`${name} is not a WAV file (no RIFF/WAVE header).`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let fmt: WavFormat | undefined;
  let pos = 12;
  while (pos + 8 <= bytes.length) {
    const id = fourCC(bytes, pos);
    const size = view.getUint32(pos + 4, true);
    const body = pos + 8;
    const remaining = bytes.length - body;
    if (id === "fmt ") {
      if (size > remaining) {
        throw new WavFormatError(`${name} is truncated: its fmt chunk declares ${size} bytes but ${remaining} remain.`);
      }
      fmt = parseFormat(bytes, view, body, size, name);
    } else if (id === "data") {
      if (!fmt) throw new WavFormatError(`${name} has its data chunk before any fmt chunk.`);
      if (size > remaining) {
        throw new WavFormatError(
          `${name} is truncated: its data chunk declares ${size} bytes but only ${remaining} remain.`,
        );
      }
      if (size % fmt.blockAlign !== 0) {
        throw new WavFormatError(
          `${name} is truncated: its data chunk of ${size} bytes ends inside a ${fmt.blockAlign}-byte sample frame.`,
        );
      }
      const samples = decodeSamples(view, body, size / fmt.blockAlign, fmt);
      return { sampleRate: fmt.sampleRate, channels: fmt.channels, samples };
    } else if (size > remaining) {
      throw new WavFormatError(
        `${name} is truncated: its "${id}" chunk declares ${size} bytes but ${remaining} remain.`,
      );
    }
    pos = body + size + (size & 1);
  }
  if (!fmt) throw new WavFormatError(`${name} has no fmt chunk.`);
  throw new WavFormatError(`${name} has no data chunk.`);
}

/** Reads and decodes the WAV file at `path` (see {@link decodeWav}). */
export async function readWav(path: string): Promise<DecodedAudio> {
  return decodeWav(await Deno.readFile(path), path);
}
