/**
 * The image path of LLaVA-1.5 (llava-hf/llava-1.5-7b-hf): Hugging Face `CLIPImageProcessor` with Pillow resizing.
 *
 * Steps (spec model-formats.md section 1.1): RGB -> resize so the short side equals `size.shortest_edge` with the
 * long side `int(shortest * long / short)` (truncated), Pillow BICUBIC on uint8 -> centre crop to `crop_size`
 * (`top = (h - ch) // 2`, `left = (w - cw) // 2`; an image smaller than the crop is first zero-padded, centred with
 * the extra pixel after) -> rescale by 1/255 -> normalise with the CLIP mean/std -> channel-first float32.
 *
 * The original LLaVA code can first pad the image to a square with the mean colour (`image_aspect_ratio: pad`);
 * the Hugging Face processor does not, and neither does this module unless `padToSquare` is set.
 */
import { normalizedChw, type RgbImage } from "@masquant/core";
import { ProcessorFieldReader, type ResampleFilter, resizeRgb } from "@masquant/core";

/** OpenAI CLIP per-channel mean (R, G, B). */
export const CLIP_MEAN: readonly number[] = [0.48145466, 0.4578275, 0.40821073];
/** OpenAI CLIP per-channel standard deviation (R, G, B). */
export const CLIP_STD: readonly number[] = [0.26862954, 0.26130258, 0.27577711];

/** Target of the resize step: the short side (aspect kept) or an exact height and width. */
export type ClipResizeTarget = { shortestEdge: number } | { height: number; width: number };

/** Settings of the CLIP image processor (the fields of a `preprocessor_config.json`). */
export interface ClipImageProcessorConfig {
  /** Kept for completeness: an RgbImage is already RGB (decoding converts like Pillow), so it has no effect. */
  doConvertRgb: boolean;
  doResize: boolean;
  size: ClipResizeTarget;
  resample: ResampleFilter;
  doCenterCrop: boolean;
  cropHeight: number;
  cropWidth: number;
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: readonly number[];
  imageStd: readonly number[];
  /** Pad to a square with the mean colour before everything else (original LLaVA `image_aspect_ratio: pad`). */
  padToSquare: boolean;
}

/** The llava-1.5-7b-hf preprocessor settings (336 px, bicubic, CLIP mean/std, no square padding). */
export const LLAVA_CLIP_DEFAULTS: Readonly<ClipImageProcessorConfig> = Object.freeze({
  doConvertRgb: true,
  doResize: true,
  size: { shortestEdge: 336 },
  resample: "bicubic",
  doCenterCrop: true,
  cropHeight: 336,
  cropWidth: 336,
  doRescale: true,
  rescaleFactor: 1 / 255,
  doNormalize: true,
  imageMean: CLIP_MEAN,
  imageStd: CLIP_STD,
  padToSquare: false,
});

/** Raised for a `preprocessor_config.json` field with the wrong type or an impossible value. */
export class ImageProcessorConfigError extends Error {
  /** Creates the error with a complete sentence naming the file and field. */
  constructor(message: string) {
    super(message);
    this.name = "ImageProcessorConfigError";
  }
}

/** Reads a size that may be an integer, `{shortest_edge}` or `{height, width}` (transformers' get_size_dict). */
function readSize(r: ProcessorFieldReader, v: unknown, f: string, squareInt: boolean): ClipResizeTarget {
  if (typeof v === "number") {
    const n = r.positiveInt(v, f);
    return squareInt ? { height: n, width: n } : { shortestEdge: n };
  }
  if (typeof v === "object" && v !== null && !Array.isArray(v)) {
    const d = v as Record<string, unknown>;
    if (d.shortest_edge !== undefined) {
      return { shortestEdge: r.positiveInt(d.shortest_edge, `${f}.shortest_edge`) };
    }
    if (d.height !== undefined && d.width !== undefined) {
      return {
        height: r.positiveInt(d.height, `${f}.height`),
        width: r.positiveInt(d.width, `${f}.width`),
      };
    }
  }
  r.fail(f, 'an integer, {"shortest_edge": n} or {"height": h, "width": w}', v);
}

/**
 * Builds the processor settings from a parsed `preprocessor_config.json` object; absent fields take the
 * llava-1.5 defaults. `source` names the file in error messages. The non-standard `pad_to_square` (boolean) and
 * the original LLaVA `image_aspect_ratio: "pad"` both turn on square padding.
 */
export function parseClipImageProcessorConfig(
  json: unknown,
  source = "preprocessor_config.json",
): ClipImageProcessorConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new ImageProcessorConfigError(`${source}: expected a JSON object with the image processor settings.`);
  }
  const o = json as Record<string, unknown>;
  const d = LLAVA_CLIP_DEFAULTS;
  const r: ProcessorFieldReader = new ProcessorFieldReader(source, (m) => new ImageProcessorConfigError(m));
  const size = o.size === undefined || o.size === null ? d.size : readSize(r, o.size, "size", false);
  let cropHeight = d.cropHeight, cropWidth = d.cropWidth;
  if (o.crop_size !== undefined && o.crop_size !== null) {
    const c = readSize(r, o.crop_size, "crop_size", true);
    if (!("height" in c)) r.fail("crop_size", 'an integer or {"height": h, "width": w}', o.crop_size);
    cropHeight = c.height;
    cropWidth = c.width;
  }
  const imageStd = r.channelTriple(o, "image_std", d.imageStd);
  if (imageStd.some((s) => s === 0)) r.fail("image_std", "nonzero", o.image_std);
  const padFlag = o.pad_to_square === undefined ? false : r.bool(o, "pad_to_square", false);
  return {
    doConvertRgb: r.bool(o, "do_convert_rgb", d.doConvertRgb),
    doResize: r.bool(o, "do_resize", d.doResize),
    size,
    resample: r.resample(o, "resample", d.resample),
    doCenterCrop: r.bool(o, "do_center_crop", d.doCenterCrop),
    cropHeight,
    cropWidth,
    doRescale: r.bool(o, "do_rescale", d.doRescale),
    rescaleFactor: r.finite(o, "rescale_factor", d.rescaleFactor),
    doNormalize: r.bool(o, "do_normalize", d.doNormalize),
    imageMean: r.channelTriple(o, "image_mean", d.imageMean),
    imageStd,
    padToSquare: padFlag || o.image_aspect_ratio === "pad",
  };
}

/**
 * Output size (height, width) of the resize step, as transformers' `get_resize_output_image_size` with
 * `default_to_square=False`: the short side becomes `shortestEdge`, the long side `int(shortestEdge * long / short)`.
 */
export function clipResizeOutputSize(height: number, width: number, target: ClipResizeTarget): [number, number] {
  if ("height" in target) return [target.height, target.width];
  const s = target.shortestEdge;
  if (width <= height) return [Math.trunc((s * height) / width), s];
  return [s, Math.trunc((s * width) / height)];
}

/**
 * Centre crop to `cropHeight` x `cropWidth` as transformers' `center_crop`: offsets `(h - ch) // 2` and
 * `(w - cw) // 2`; where the image is smaller it is first placed on a zero canvas at `ceil((ch - h) / 2)`.
 */
export function centerCropRgb(img: RgbImage, cropHeight: number, cropWidth: number): RgbImage {
  const { width: w, height: h } = img;
  const newH = Math.max(cropHeight, h), newW = Math.max(cropWidth, w);
  const padTop = Math.ceil((newH - h) / 2), padLeft = Math.ceil((newW - w) / 2);
  const top = Math.floor((h - cropHeight) / 2) + padTop;
  const left = Math.floor((w - cropWidth) / 2) + padLeft;
  const out = new Uint8Array(cropHeight * cropWidth * 3);
  for (let y = 0; y < cropHeight; y++) {
    const sy = top + y - padTop; // row in the source image
    if (sy < 0 || sy >= h) continue;
    for (let x = 0; x < cropWidth; x++) {
      const sx = left + x - padLeft;
      if (sx < 0 || sx >= w) continue;
      const s = (sy * w + sx) * 3, d = (y * cropWidth + x) * 3;
      out[d] = img.data[s];
      out[d + 1] = img.data[s + 1];
      out[d + 2] = img.data[s + 2];
    }
  }
  return { width: cropWidth, height: cropHeight, data: out };
}

/**
 * Pads an image to a square with a background colour, the image centred with offset `(long - short) // 2`
 * (original LLaVA `expand2square`).
 */
export function expandToSquare(img: RgbImage, background: readonly number[]): RgbImage {
  const { width: w, height: h } = img;
  if (w === h) return img;
  const n = Math.max(w, h);
  const out = new Uint8Array(n * n * 3);
  for (let i = 0; i < n * n; i++) {
    out[i * 3] = background[0];
    out[i * 3 + 1] = background[1];
    out[i * 3 + 2] = background[2];
  }
  const ox = w < h ? Math.floor((h - w) / 2) : 0, oy = h < w ? Math.floor((w - h) / 2) : 0;
  for (let y = 0; y < h; y++) out.set(img.data.subarray(y * w * 3, (y + 1) * w * 3), ((y + oy) * n + ox) * 3);
  return { width: n, height: n, data: out };
}

/** A preprocessed image: channel-first float32 pixel values [channels, height, width]. */
export interface ClipPixelValues {
  data: Float32Array;
  channels: 3;
  height: number;
  width: number;
}

/** Runs the CLIP image processor on one RGB image (default: llava-1.5 settings) and returns [3, H, W] float32. */
export function preprocessClipImage(
  img: RgbImage,
  config: Readonly<ClipImageProcessorConfig> = LLAVA_CLIP_DEFAULTS,
): ClipPixelValues {
  let cur = img;
  if (config.padToSquare) {
    cur = expandToSquare(cur, config.imageMean.map((m) => Math.trunc(m * 255)));
  }
  if (config.doResize) {
    const [h, w] = clipResizeOutputSize(cur.height, cur.width, config.size);
    cur = resizeRgb(cur, w, h, config.resample);
  }
  if (config.doCenterCrop) cur = centerCropRgb(cur, config.cropHeight, config.cropWidth);
  const data = normalizedChw(cur, {
    doRescale: config.doRescale,
    rescaleFactor: config.rescaleFactor,
    doNormalize: config.doNormalize,
    mean: config.imageMean,
    std: config.imageStd,
  });
  return { data, channels: 3, height: cur.height, width: cur.width };
}
