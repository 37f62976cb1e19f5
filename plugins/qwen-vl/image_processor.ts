/**
 * The image and video path of Qwen2-VL / Qwen2.5-VL / Qwen2.5-Omni: Hugging Face `Qwen2VLImageProcessor` with
 * Pillow resizing (spec model-formats.md sections 1.2 and 1.3).
 *
 * Steps: RGB -> `smartResize` to multiples of patch * merge (28) within [min_pixels, max_pixels] -> Pillow BICUBIC on
 * uint8 -> rescale 1/255 -> normalise (CLIP mean/std) -> channel-first frames; a single image is repeated to the
 * temporal patch size (2), a video's frame count is padded to a multiple of it by repeating the last frame; then
 * the frames [T, C, H, W] are cut into patches: reshape [gt, tp, C, gh/m, m, p, gw/m, m, p], transpose
 * (0, 3, 6, 4, 7, 2, 1, 5, 8), flatten to [gt * gh * gw, C * tp * p * p] (1176 columns). Rows come out grouped
 * by m x m merge blocks, which is the order the vision tower expects.
 */
import { normalizedChw, type RgbImage } from "@masquant/core";
import { ProcessorFieldReader, type ResampleFilter, resizeRgb } from "@masquant/core";

/** OpenAI CLIP per-channel mean (R, G, B), the Qwen-VL default. */
export const QWEN_IMAGE_MEAN: readonly number[] = [0.48145466, 0.4578275, 0.40821073];
/** OpenAI CLIP per-channel standard deviation (R, G, B), the Qwen-VL default. */
export const QWEN_IMAGE_STD: readonly number[] = [0.26862954, 0.26130258, 0.27577711];

/** Settings of the Qwen-VL image processor (the fields of a `preprocessor_config.json`). */
export interface QwenVisionProcessorConfig {
  /** Kept for completeness: an RgbImage is already RGB (decoding converts like Pillow), so it has no effect. */
  doConvertRgb: boolean;
  doResize: boolean;
  resample: ResampleFilter;
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: readonly number[];
  imageStd: readonly number[];
  minPixels: number;
  maxPixels: number;
  patchSize: number;
  temporalPatchSize: number;
  mergeSize: number;
}

/** The Qwen2.5-VL / Qwen2.5-Omni preprocessor settings. */
export const QWEN_VL_DEFAULTS: Readonly<QwenVisionProcessorConfig> = Object.freeze({
  doConvertRgb: true,
  doResize: true,
  resample: "bicubic",
  doRescale: true,
  rescaleFactor: 1 / 255,
  doNormalize: true,
  imageMean: QWEN_IMAGE_MEAN,
  imageStd: QWEN_IMAGE_STD,
  minPixels: 3136,
  maxPixels: 12845056,
  patchSize: 14,
  temporalPatchSize: 2,
  mergeSize: 2,
});

/** Raised for a bad `preprocessor_config.json` field or an image the processor cannot take. */
export class QwenVisionProcessorError extends Error {
  /** Creates the error with a complete sentence. */
  constructor(message: string) {
    super(message);
    this.name = "QwenVisionProcessorError";
  }
}

/**
 * Builds the processor settings from a parsed `preprocessor_config.json` object; absent fields take the Qwen2.5-VL
 * defaults. The pixel bounds come from `min_pixels` / `max_pixels` when present, otherwise from the newer
 * `size: {shortest_edge, longest_edge}` form (both are pixel counts there). `source` names the file in errors.
 */
export function parseQwenVisionProcessorConfig(
  json: unknown,
  source = "preprocessor_config.json",
): QwenVisionProcessorConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new QwenVisionProcessorError(`${source}: expected a JSON object with the image processor settings.`);
  }
  const o = json as Record<string, unknown>;
  const d = QWEN_VL_DEFAULTS;
  const r: ProcessorFieldReader = new ProcessorFieldReader(source, (m) => new QwenVisionProcessorError(m));
  let minPixels = d.minPixels, maxPixels = d.maxPixels;
  if (o.size !== undefined && o.size !== null) {
    if (typeof o.size !== "object" || Array.isArray(o.size)) {
      r.fail("size", '{"shortest_edge": min_pixels, "longest_edge": max_pixels}', o.size);
    }
    const s = o.size as Record<string, unknown>;
    minPixels = r.positiveInt(s.shortest_edge, "size.shortest_edge", minPixels);
    maxPixels = r.positiveInt(s.longest_edge, "size.longest_edge", maxPixels);
  }
  minPixels = r.positiveInt(o.min_pixels, "min_pixels", minPixels);
  maxPixels = r.positiveInt(o.max_pixels, "max_pixels", maxPixels);
  if (maxPixels < minPixels) r.fail("max_pixels", `at least min_pixels (${minPixels})`, maxPixels);
  const imageStd = r.channelTriple(o, "image_std", d.imageStd);
  if (imageStd.some((s) => s === 0)) r.fail("image_std", "nonzero", o.image_std);
  return {
    doConvertRgb: r.bool(o, "do_convert_rgb", d.doConvertRgb),
    doResize: r.bool(o, "do_resize", d.doResize),
    resample: r.resample(o, "resample", d.resample),
    doRescale: r.bool(o, "do_rescale", d.doRescale),
    rescaleFactor: r.finite(o, "rescale_factor", d.rescaleFactor),
    doNormalize: r.bool(o, "do_normalize", d.doNormalize),
    imageMean: r.channelTriple(o, "image_mean", d.imageMean),
    imageStd,
    minPixels,
    maxPixels,
    patchSize: r.positiveInt(o.patch_size, "patch_size", d.patchSize),
    temporalPatchSize: r.positiveInt(o.temporal_patch_size, "temporal_patch_size", d.temporalPatchSize),
    mergeSize: r.positiveInt(o.merge_size, "merge_size", d.mergeSize),
  };
}

/** Python's `round` on a float: nearest integer, ties to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const diff = x - f;
  if (diff > 0.5) return f + 1;
  if (diff < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * transformers' `smart_resize`: returns [height, width], both multiples of `factor`, with the pixel count within
 * [minPixels, maxPixels] and the aspect ratio kept as well as possible. Sides are first rounded to the nearest
 * multiple (Python `round`, ties to even); too many pixels -> scale by `beta = sqrt(h*w/max)` and floor (never below
 * one factor); too few -> scale by `sqrt(min/(h*w))` and ceil. Aspect ratios above 200 are rejected.
 */
export function smartResize(
  height: number,
  width: number,
  factor = 28,
  minPixels = 3136,
  maxPixels = 12845056,
): [number, number] {
  if (!Number.isInteger(height) || !Number.isInteger(width) || height <= 0 || width <= 0) {
    throw new QwenVisionProcessorError(
      `smartResize: the image size must be positive integers, got ${width}x${height}.`,
    );
  }
  if (Math.max(height, width) / Math.min(height, width) > 200) {
    throw new QwenVisionProcessorError(
      `smartResize: the aspect ratio of a ${width}x${height} image is above 200, which the Qwen-VL processor rejects.`,
    );
  }
  let h = roundHalfEven(height / factor) * factor;
  let w = roundHalfEven(width / factor) * factor;
  if (h * w > maxPixels) {
    const beta = Math.sqrt((height * width) / maxPixels);
    h = Math.max(factor, Math.floor(height / beta / factor) * factor);
    w = Math.max(factor, Math.floor(width / beta / factor) * factor);
  } else if (h * w < minPixels) {
    const beta = Math.sqrt(minPixels / (height * width));
    h = Math.ceil((height * beta) / factor) * factor;
    w = Math.ceil((width * beta) / factor) * factor;
  }
  return [h, w];
}

/** Patch rows of one image or video: `rows` x `cols` float32, row-major, with its [t, h, w] patch grid. */
export interface QwenVisionPatches {
  patches: Float32Array;
  rows: number;
  cols: number;
  /** Patch grid: temporal groups, patch rows, patch columns (`rows === t * h * w`). */
  gridThw: [number, number, number];
}

/** Number of LLM placeholder tokens a patch grid produces: `t * h * w / merge^2`. */
export function qwenVisionTokenCount(gridThw: readonly [number, number, number], mergeSize = 2): number {
  return (gridThw[0] * gridThw[1] * gridThw[2]) / (mergeSize * mergeSize);
}

/** Patch grid [1, h/p, w/p] of an image of the given size, without processing it. */
export function qwenImageGrid(
  height: number,
  width: number,
  config: Readonly<QwenVisionProcessorConfig> = QWEN_VL_DEFAULTS,
): [number, number, number] {
  const [h, w] = config.doResize
    ? smartResize(height, width, config.patchSize * config.mergeSize, config.minPixels, config.maxPixels)
    : [height, width];
  return [1, h / config.patchSize, w / config.patchSize];
}

/** Resizes and normalises every frame to the same size, returns [T, 3, H, W] float32 frames and that size. */
function normalizedFrames(
  frames: readonly RgbImage[],
  c: Readonly<QwenVisionProcessorConfig>,
): { data: Float32Array; height: number; width: number } {
  const factor = c.patchSize * c.mergeSize;
  const [h, w] = c.doResize
    ? smartResize(frames[0].height, frames[0].width, factor, c.minPixels, c.maxPixels)
    : [frames[0].height, frames[0].width];
  if (h % factor !== 0 || w % factor !== 0) {
    throw new QwenVisionProcessorError(
      `The image size ${w}x${h} is not a multiple of patch_size * merge_size = ${factor}; enable do_resize.`,
    );
  }
  const plane = 3 * h * w;
  const data = new Float32Array(frames.length * plane);
  const norm = {
    doRescale: c.doRescale,
    rescaleFactor: c.rescaleFactor,
    doNormalize: c.doNormalize,
    mean: c.imageMean,
    std: c.imageStd,
  };
  frames.forEach((f, i) => {
    const r = f.width === w && f.height === h ? f : resizeRgb(f, w, h, c.resample);
    normalizedChw(r, norm, data, i * plane);
  });
  return { data, height: h, width: w };
}

/**
 * Cuts [T, 3, H, W] frames into patch rows. Frame index `t` beyond the last frame reads the last frame (temporal
 * padding by repetition).
 */
function flattenPatches(
  frames: Float32Array,
  frameCount: number,
  height: number,
  width: number,
  c: Readonly<QwenVisionProcessorConfig>,
): QwenVisionPatches {
  const p = c.patchSize, m = c.mergeSize, tp = c.temporalPatchSize;
  const padded = Math.ceil(frameCount / tp) * tp;
  const gt = padded / tp, gh = height / p, gw = width / p;
  const cols = 3 * tp * p * p;
  const rows = gt * gh * gw;
  const out = new Float32Array(rows * cols);
  const plane = height * width;
  let o = 0;
  for (let t = 0; t < gt; t++) {
    for (let bh = 0; bh < gh / m; bh++) {
      for (let bw = 0; bw < gw / m; bw++) {
        for (let mh = 0; mh < m; mh++) {
          for (let mw = 0; mw < m; mw++) {
            const y0 = (bh * m + mh) * p, x0 = (bw * m + mw) * p;
            for (let ch = 0; ch < 3; ch++) {
              for (let tt = 0; tt < tp; tt++) {
                const f = Math.min(t * tp + tt, frameCount - 1);
                const base = (f * 3 + ch) * plane;
                for (let py = 0; py < p; py++) {
                  const rowStart = base + (y0 + py) * width + x0;
                  out.set(frames.subarray(rowStart, rowStart + p), o);
                  o += p;
                }
              }
            }
          }
        }
      }
    }
  }
  return { patches: out, rows, cols, gridThw: [gt, gh, gw] };
}

/** Preprocesses one RGB image into Qwen-VL patch rows (the image is repeated to the temporal patch size). */
export function preprocessQwenImage(
  img: RgbImage,
  config: Readonly<QwenVisionProcessorConfig> = QWEN_VL_DEFAULTS,
): QwenVisionPatches {
  const fr = normalizedFrames([img], config);
  return flattenPatches(fr.data, 1, fr.height, fr.width, config);
}

/**
 * Preprocesses a video (its sampled frames, in order) into Qwen-VL patch rows. Every frame is resized to the
 * `smartResize` size of the first; the frame count is padded to a multiple of the temporal patch size by repeating
 * the last frame, so `gridThw[0] = ceil(frames / temporal_patch_size)`.
 */
export function preprocessQwenVideo(
  frames: readonly RgbImage[],
  config: Readonly<QwenVisionProcessorConfig> = QWEN_VL_DEFAULTS,
): QwenVisionPatches {
  if (frames.length === 0) throw new QwenVisionProcessorError("preprocessQwenVideo: the video has no frames.");
  const fr = normalizedFrames(frames, config);
  return flattenPatches(fr.data, frames.length, fr.height, fr.width, config);
}
