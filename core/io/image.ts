/**
 * Image loading: JPEG and PNG files decoded to 8-bit RGB the way Pillow's `Image.open(f).convert("RGB")` does,
 * which is what the Hugging Face image processors start from.
 *
 * PNG (pngjs): grey is replicated to R, G and B; alpha (RGBA, grey+alpha, palette or tRNS transparency) is dropped,
 * never composited; low bit depths are scaled to 0..255 (1 bit -> 0/255, 2 bits -> x*85, 4 bits -> x*17); 16-bit
 * colour and grey+alpha keep the high byte, while 16-bit grey without alpha is clipped to 255 (Pillow opens it as a
 * 32-bit integer image and its RGB conversion clips instead of scaling).
 *
 * JPEG (jpeg-js for entropy decoding and the inverse DCT): the colour components are taken raw and then upsampled
 * and converted as libjpeg(-turbo) does with Pillow's settings: "fancy" triangle-filter chroma upsampling for 2x1,
 * 1x2 and 2x2 subsampling, and YCbCr -> RGB with libjpeg's 16-bit fixed-point tables; the colour space is chosen
 * by libjpeg's rules (JFIF marker, Adobe transform flag, component ids). The inverse DCT itself is jpeg-js's and
 * may differ from libjpeg's by a grey level here and there. Four-component (CMYK/YCCK) files use jpeg-js's own
 * conversion.
 */
import { Buffer } from "node:buffer";
import { readFileSync } from "node:fs";
import { PNG } from "pngjs";
import jpeg from "jpeg-js";

/** An 8-bit RGB image, rows top to bottom, pixels interleaved R, G, B (`data.length === width * height * 3`). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** Raised when a file is not a JPEG or PNG image, or its contents cannot be decoded. */
export class ImageDecodeError extends Error {
  /** Creates the error with a complete sentence naming the file. */
  constructor(message: string) {
    super(message);
    this.name = "ImageDecodeError";
  }
}

/** Channel layouts accepted by {@link rgbImageFromPixels}. */
export type PixelLayout = "grey" | "grey-alpha" | "rgb" | "rgba";

const LAYOUT_CHANNELS: Record<PixelLayout, number> = { "grey": 1, "grey-alpha": 2, "rgb": 3, "rgba": 4 };

/**
 * Builds an RgbImage from raw interleaved 8-bit pixels (row-major), converting like Pillow's `convert("RGB")`:
 * grey is replicated, alpha is dropped. The input is copied.
 */
export function rgbImageFromPixels(
  width: number,
  height: number,
  pixels: ArrayLike<number>,
  layout: PixelLayout = "rgb",
): RgbImage {
  const ch = LAYOUT_CHANNELS[layout];
  if (ch === undefined) throw new ImageDecodeError(`rgbImageFromPixels: unknown pixel layout "${layout}".`);
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new ImageDecodeError(`rgbImageFromPixels: the size must be positive integers, got ${width}x${height}.`);
  }
  const n = width * height;
  if (pixels.length !== n * ch) {
    throw new ImageDecodeError(
      `rgbImageFromPixels: ${width}x${height} ${layout} pixels need ${n * ch} values, got ${pixels.length}.`,
    );
  }
  const data = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const s = i * ch;
    if (ch <= 2) {
      const v = pixels[s];
      data[i * 3] = v;
      data[i * 3 + 1] = v;
      data[i * 3 + 2] = v;
    } else {
      data[i * 3] = pixels[s];
      data[i * 3 + 1] = pixels[s + 1];
      data[i * 3 + 2] = pixels[s + 2];
    }
  }
  return { width, height, data };
}

/** The container formats recognised by their leading bytes. */
export type ImageFormat = "jpeg" | "png";

/** Recognises JPEG (FF D8 FF) and PNG (89 50 4E 47 0D 0A 1A 0A) by their magic bytes; undefined otherwise. */
export function detectImageFormat(bytes: Uint8Array): ImageFormat | undefined {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "jpeg";
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length >= 8 && sig.every((b, i) => bytes[i] === b)) return "png";
  return undefined;
}

/** Decodes JPEG or PNG bytes to RGB; `name` (usually the file path) is used in error messages. */
export function decodeImage(bytes: Uint8Array, name: string): RgbImage {
  const format = detectImageFormat(bytes);
  if (!format) throw new ImageDecodeError(`${name} is not a JPEG or PNG image.`);
  try {
    return format === "png" ? decodePng(bytes) : decodeJpeg(bytes);
  } catch (e) {
    if (e instanceof ImageDecodeError) throw e;
    let reason = e instanceof Error ? e.message : String(e);
    if (/finished stream/.test(reason)) reason = "the data ends before the image is complete";
    throw new ImageDecodeError(`${name} could not be decoded as ${format.toUpperCase()}: ${reason}.`);
  }
}

/** Reads and decodes an image file (JPEG or PNG) to RGB. */
export async function readImage(path: string): Promise<RgbImage> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new ImageDecodeError(`${path} could not be read: ${e instanceof Error ? e.message : String(e)}.`);
  }
  return decodeImage(bytes, path);
}

/** Synchronous form of {@link readImage}. */
export function readImageSync(path: string): RgbImage {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new ImageDecodeError(`${path} could not be read: ${e instanceof Error ? e.message : String(e)}.`);
  }
  return decodeImage(bytes, path);
}

// ---------------------------------------------------------------------------------------------------------------
// PNG

/** Returns the PNG bytes without any chunk of type `type` (chunk CRCs are kept as they are). */
function withoutPngChunk(bytes: Uint8Array, type: string): Uint8Array {
  const code = [...type].map((c) => c.charCodeAt(0));
  const parts: Uint8Array[] = [bytes.subarray(0, 8)];
  let pos = 8;
  let removed = false;
  while (pos + 12 <= bytes.length) {
    const len = ((bytes[pos] << 24) | (bytes[pos + 1] << 16) | (bytes[pos + 2] << 8) | bytes[pos + 3]) >>> 0;
    const end = pos + 12 + len;
    if (end > bytes.length) break;
    const isType = code.every((c, i) => bytes[pos + 4 + i] === c);
    if (isType) removed = true;
    else parts.push(bytes.subarray(pos, end));
    pos = end;
  }
  if (!removed) return bytes;
  if (pos < bytes.length) parts.push(bytes.subarray(pos));
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

interface PngDecoded {
  width: number;
  height: number;
  depth: number;
  colorType: number;
  data: Uint8Array | Uint16Array;
}

/** The part of pngjs's synchronous API used here (pngjs ships no type declarations). */
interface PngSyncReader {
  read(buffer: Buffer, options: { skipRescale: boolean }): PngDecoded;
}

const pngSync = (PNG as unknown as { sync: PngSyncReader }).sync;

function decodePng(bytes: Uint8Array): RgbImage {
  // tRNS only affects alpha, which is dropped; pngjs would also blacken the colour of tRNS-matching pixels.
  const clean = withoutPngChunk(bytes, "tRNS");
  const png = pngSync.read(Buffer.from(clean.buffer, clean.byteOffset, clean.byteLength), {
    skipRescale: true,
  });
  const { width, height, depth, colorType } = png;
  const src = png.data; // RGBA per pixel; palettes already expanded; grey replicated
  const n = width * height;
  const out = new Uint8Array(n * 3);
  if (depth === 16) {
    // Pillow: 16-bit grey opens as a 32-bit integer image whose RGB conversion clips; other 16-bit types keep
    // the high byte.
    const clipGrey = colorType === 0;
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < 3; c++) {
        const v = src[i * 4 + c];
        out[i * 3 + c] = clipGrey ? (v > 255 ? 255 : v) : v >> 8;
      }
    }
  } else {
    const scale = colorType === 3 || depth === 8 ? 1 : 255 / ((1 << depth) - 1);
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < 3; c++) out[i * 3 + c] = scale === 1 ? src[i * 4 + c] : src[i * 4 + c] * scale;
    }
  }
  return { width, height, data: out };
}

// ---------------------------------------------------------------------------------------------------------------
// JPEG

interface JpegComponentInfo {
  id: number;
  h: number;
  v: number;
}

interface JpegHeader {
  width: number;
  height: number;
  precision: number;
  components: JpegComponentInfo[];
  jfif: boolean;
  /** Adobe APP14 transform flag, or -1 when there is no Adobe marker. */
  adobeTransform: number;
  /** Byte offset of the Adobe transform flag (for patching), or -1. */
  adobeTransformAt: number;
}

const SOF_MARKERS = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

/** Reads the markers before the first scan: frame header, JFIF and Adobe segments. */
function readJpegHeader(b: Uint8Array): JpegHeader {
  const h: JpegHeader = {
    width: 0,
    height: 0,
    precision: 8,
    components: [],
    jfif: false,
    adobeTransform: -1,
    adobeTransformAt: -1,
  };
  let pos = 2;
  while (pos + 4 <= b.length) {
    if (b[pos] !== 0xff) throw new Error(`unexpected byte 0x${b[pos].toString(16)} where a marker was expected`);
    const m = b[pos + 1];
    if (m === 0xff) {
      pos++;
      continue;
    }
    if (m === 0x01 || (m >= 0xd0 && m <= 0xd8)) {
      pos += 2;
      continue;
    }
    if (m === 0xda || m === 0xd9) break;
    const len = (b[pos + 2] << 8) | b[pos + 3];
    const seg = pos + 4;
    if (len < 2 || pos + 2 + len > b.length) throw new Error(`truncated marker segment 0x${m.toString(16)}`);
    const dataLen = len - 2;
    if (
      m === 0xe0 && dataLen >= 14 && b[seg] === 0x4a && b[seg + 1] === 0x46 && b[seg + 2] === 0x49 &&
      b[seg + 3] === 0x46 && b[seg + 4] === 0
    ) {
      h.jfif = true;
    } else if (
      m === 0xee && dataLen >= 12 && b[seg] === 0x41 && b[seg + 1] === 0x64 && b[seg + 2] === 0x6f &&
      b[seg + 3] === 0x62 && b[seg + 4] === 0x65
    ) {
      h.adobeTransform = b[seg + 11];
      h.adobeTransformAt = seg + 11;
    } else if (SOF_MARKERS.has(m) && h.components.length === 0 && dataLen >= 6) {
      h.precision = b[seg];
      h.height = (b[seg + 1] << 8) | b[seg + 2];
      h.width = (b[seg + 3] << 8) | b[seg + 4];
      const nc = b[seg + 5];
      for (let i = 0; i < nc && seg + 8 + i * 3 <= b.length; i++) {
        const o = seg + 6 + i * 3;
        h.components.push({ id: b[o], h: b[o + 1] >> 4, v: b[o + 1] & 15 });
      }
    }
    pos += 2 + len;
  }
  if (h.components.length === 0) throw new Error("no frame header (SOF) before the first scan");
  return h;
}

/** libjpeg's default colour space for a three-component file: true when it is YCbCr (false: plain RGB). */
function isYcbcr(h: JpegHeader): boolean {
  if (h.jfif) return true;
  if (h.adobeTransform >= 0) return h.adobeTransform !== 0;
  const [a, b, c] = h.components.map((x) => x.id);
  return !(a === 0x52 && b === 0x47 && c === 0x42);
}

/** Takes every rh-th column / rv-th row of a full-size replicated plane: the component's own samples. */
function subsamplePlane(
  plane: Uint8Array,
  stride: number,
  offset: number,
  w: number,
  dw: number,
  dh: number,
  rh: number,
  rv: number,
): Uint8Array {
  const out = new Uint8Array(dw * dh);
  for (let j = 0; j < dh; j++) {
    const row = j * rv * w;
    for (let i = 0; i < dw; i++) out[j * dw + i] = plane[(row + i * rh) * stride + offset];
  }
  return out;
}

/** libjpeg's h2v1 triangle-filter upsampling of one row of `dw` samples into `out` (length 2*dw). */
function fancyRowH2(inp: Uint8Array, at: number, dw: number, out: Int32Array): void {
  out[0] = inp[at];
  out[1] = (inp[at] * 3 + inp[at + 1] + 2) >> 2;
  for (let i = 1; i < dw - 1; i++) {
    const v = inp[at + i] * 3;
    out[2 * i] = (v + inp[at + i - 1] + 1) >> 2;
    out[2 * i + 1] = (v + inp[at + i + 1] + 2) >> 2;
  }
  const last = inp[at + dw - 1];
  out[2 * dw - 2] = (last * 3 + inp[at + dw - 2] + 1) >> 2;
  out[2 * dw - 1] = last;
}

/**
 * Upsamples one JPEG component of `dw` x `dh` samples (row-major) to the full `width` x `height` image the way
 * libjpeg-turbo does with fancy upsampling on (Pillow's setting): triangle filters for 2x1 (when dw > 2), 1x2 and
 * 2x2 (when dw > 2) ratios, with libjpeg's alternating rounding biases and edge replication; plain replication for
 * every other integral ratio. `rh` and `rv` are the horizontal and vertical ratios.
 */
export function upsampleJpegPlane(
  s: Uint8Array,
  dw: number,
  dh: number,
  rh: number,
  rv: number,
  width: number,
  height: number,
): Uint8Array {
  const w = width, h = height;
  const dst = new Uint8Array(w * h);
  const fancyH2 = rh === 2 && dw > 2;
  if (rh === 2 && rv === 1 && fancyH2) {
    const row = new Int32Array(2 * dw);
    for (let y = 0; y < h; y++) {
      fancyRowH2(s, y * dw, dw, row);
      for (let x = 0; x < w; x++) dst[y * w + x] = row[x];
    }
    return dst;
  }
  if (rh === 1 && rv === 2) {
    for (let y = 0; y < h; y++) {
      const j = y >> 1;
      const k = y & 1 ? Math.min(j + 1, dh - 1) : Math.max(j - 1, 0);
      for (let x = 0; x < w; x++) dst[y * w + x] = (s[j * dw + x] * 3 + s[k * dw + x] + 1) >> 2;
    }
    return dst;
  }
  if (rh === 2 && rv === 2 && fancyH2) {
    const col = new Int32Array(dw);
    const row = new Int32Array(2 * dw);
    for (let y = 0; y < h; y++) {
      const j = y >> 1;
      const k = y & 1 ? Math.min(j + 1, dh - 1) : Math.max(j - 1, 0);
      for (let i = 0; i < dw; i++) col[i] = s[j * dw + i] * 3 + s[k * dw + i];
      row[0] = (col[0] * 4 + 8) >> 4;
      row[1] = (col[0] * 3 + col[1] + 7) >> 4;
      for (let i = 1; i < dw - 1; i++) {
        row[2 * i] = (col[i] * 3 + col[i - 1] + 8) >> 4;
        row[2 * i + 1] = (col[i] * 3 + col[i + 1] + 7) >> 4;
      }
      row[2 * dw - 2] = (col[dw - 1] * 3 + col[dw - 2] + 8) >> 4;
      row[2 * dw - 1] = (col[dw - 1] * 4 + 7) >> 4;
      for (let x = 0; x < w; x++) dst[y * w + x] = row[x];
    }
    return dst;
  }
  for (let y = 0; y < h; y++) {
    const j = Math.floor(y / rv);
    for (let x = 0; x < w; x++) dst[y * w + x] = s[j * dw + Math.floor(x / rh)];
  }
  return dst;
}

/** libjpeg's YCbCr -> RGB tables (16 fraction bits), built once. */
const YCC = (() => {
  const SCALE = 16;
  const HALF = 1 << (SCALE - 1);
  const fix = (x: number) => Math.trunc(x * (1 << SCALE) + 0.5);
  const crR = new Int32Array(256), cbB = new Int32Array(256), crG = new Int32Array(256), cbG = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    const x = i - 128;
    crR[i] = (fix(1.402) * x + HALF) >> SCALE;
    cbB[i] = (fix(1.772) * x + HALF) >> SCALE;
    crG[i] = -fix(0.71414) * x;
    cbG[i] = -fix(0.34414) * x + HALF;
  }
  return { crR, cbB, crG, cbG, SCALE };
})();

function clampByte(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

interface JpegJsImage {
  width: number;
  height: number;
  data: Uint8Array;
}

function decodeJpeg(bytes: Uint8Array): RgbImage {
  const hdr = readJpegHeader(bytes);
  if (hdr.precision !== 8) throw new Error(`${hdr.precision}-bit samples are not supported (only 8-bit)`);
  const opts = {
    useTArray: true as const,
    formatAsRGBA: false,
    tolerantDecoding: false,
    maxResolutionInMP: 200,
    maxMemoryUsageInMB: 2048,
  };
  if (hdr.components.length !== 3) {
    const img = jpeg.decode(bytes, opts) as JpegJsImage;
    return { width: img.width, height: img.height, data: img.data };
  }
  // Three components: take the raw component planes (patch a nonzero Adobe transform flag to 0 so that jpeg-js
  // does not convert), then upsample and convert like libjpeg.
  let input = bytes;
  if (hdr.adobeTransformAt >= 0 && hdr.adobeTransform !== 0) {
    input = bytes.slice();
    input[hdr.adobeTransformAt] = 0;
  }
  const raw = jpeg.decode(input, { ...opts, colorTransform: false }) as JpegJsImage;
  const { width: w, height: h } = raw;
  const maxH = Math.max(...hdr.components.map((c) => c.h));
  const maxV = Math.max(...hdr.components.map((c) => c.v));
  const planes = new Uint8Array(w * h * 3);
  for (let ci = 0; ci < 3; ci++) {
    const c = hdr.components[ci];
    const rh = maxH / c.h, rv = maxV / c.v;
    if (rh === 1 && rv === 1) {
      for (let i = ci; i < planes.length; i += 3) planes[i] = raw.data[i];
      continue;
    }
    if (!Number.isInteger(rh) || !Number.isInteger(rv)) {
      // Non-integral sampling ratios: keep jpeg-js's nearest-neighbour expansion.
      for (let i = ci; i < planes.length; i += 3) planes[i] = raw.data[i];
      continue;
    }
    const dw = Math.ceil((w * c.h) / maxH), dh = Math.ceil((h * c.v) / maxV);
    const s = subsamplePlane(raw.data, 3, ci, w, dw, dh, rh, rv);
    const up = upsampleJpegPlane(s, dw, dh, rh, rv, w, h);
    for (let i = 0; i < w * h; i++) planes[i * 3 + ci] = up[i];
  }
  if (!isYcbcr(hdr)) return { width: w, height: h, data: planes };
  const { crR, cbB, crG, cbG, SCALE } = YCC;
  const out = new Uint8Array(w * h * 3);
  for (let i = 0; i < out.length; i += 3) {
    const y = planes[i], cb = planes[i + 1], cr = planes[i + 2];
    out[i] = clampByte(y + crR[cr]);
    out[i + 1] = clampByte(y + ((cbG[cb] + crG[cr]) >> SCALE));
    out[i + 2] = clampByte(y + cbB[cb]);
  }
  return { width: w, height: h, data: out };
}

// ---------------------------------------------------------------------------------------------------------------
// Conversion to model input

/** The rescale and normalise steps of the Hugging Face image processors. */
export interface NormalizeOptions {
  /** Multiply by `rescaleFactor` (usually 1/255). */
  doRescale: boolean;
  rescaleFactor: number;
  /** Subtract `mean` and divide by `std`, per channel R, G, B. */
  doNormalize: boolean;
  mean: readonly number[];
  std: readonly number[];
}

/**
 * Converts an RGB image to a channel-first float32 tensor [3, height, width] with the same float arithmetic as
 * the Hugging Face numpy path: rescale as `float32(float64(x) * rescaleFactor)`, then normalise in float32 as
 * `(x - float32(mean)) / float32(std)`. Writes into `out` at `offset` when given (it must have room for
 * 3 * width * height values) and returns the array written.
 */
export function normalizedChw(img: RgbImage, o: NormalizeOptions, out?: Float32Array, offset = 0): Float32Array {
  const plane = img.width * img.height;
  const dst = out ?? new Float32Array(3 * plane);
  if (dst.length < offset + 3 * plane) {
    throw new RangeError(`normalizedChw: the output holds ${dst.length} values, needs ${offset + 3 * plane}.`);
  }
  const lut = new Float32Array(256);
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(o.mean[c]), s = Math.fround(o.std[c]);
    for (let v = 0; v < 256; v++) {
      let x = o.doRescale ? Math.fround(v * o.rescaleFactor) : v;
      if (o.doNormalize) x = Math.fround(Math.fround(x - m) / s);
      lut[v] = x;
    }
    const base = offset + c * plane;
    const src = img.data;
    for (let i = 0; i < plane; i++) dst[base + i] = lut[src[i * 3 + c]];
  }
  return dst;
}
