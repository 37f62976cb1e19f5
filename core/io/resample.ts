/**
 * Separable convolution resizing of 8-bit RGB images that reproduces Pillow's `Image.resize` for its convolution
 * filters (BOX, BILINEAR, HAMMING, BICUBIC, LANCZOS) bit for bit on the same input pixels.
 *
 * The recipe (Pillow `ImagingResample`, 8 bits per channel):
 * - per axis, the filter support is widened by the downscale factor (`max(1, in/out)`), and output pixel `i`
 *   takes input pixels `[xmin, xmin + n)` around its centre `(i + 0.5) * in / out`, with the window ends rounded
 *   half up and clamped to the image;
 * - the weights of each window are normalised to sum 1 in float64, then turned into fixed point with 22 fraction
 *   bits (`32 - 8 - 2`), each rounded half away from zero;
 * - the horizontal pass runs first (only over the input rows the vertical pass will read), its result is rounded
 *   half up and clipped to 0..255, then the vertical pass does the same on that intermediate image.
 * Bicubic uses the Keys kernel with a = -0.5.
 */
import type { RgbImage } from "./image.ts";

/** The convolution filters Pillow's resampler offers (NEAREST is not a convolution and is not provided). */
export type ResampleFilter = "box" | "bilinear" | "hamming" | "bicubic" | "lanczos";

/** Raised for impossible resize requests (non-positive or non-integer sizes, unknown filter codes). */
export class ResampleError extends Error {
  /** Creates the error with a complete sentence. */
  constructor(message: string) {
    super(message);
    this.name = "ResampleError";
  }
}

/** Fraction bits of the fixed-point weights (Pillow's PRECISION_BITS). */
const PRECISION_BITS = 32 - 8 - 2;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

interface FilterKernel {
  /** Kernel value at distance x (in input pixels at scale 1). */
  f: (x: number) => number;
  /** Half-width of the kernel at scale 1. */
  support: number;
}

function boxKernel(x: number): number {
  return x > -0.5 && x <= 0.5 ? 1 : 0;
}

function bilinearKernel(x: number): number {
  const ax = x < 0 ? -x : x;
  return ax < 1 ? 1 - ax : 0;
}

/** Pillow evaluates the Hamming window constants as C floats; these are those float values. */
const HAMMING_A = Math.fround(0.54);
const HAMMING_B = Math.fround(0.46);

function hammingKernel(x: number): number {
  const ax = x < 0 ? -x : x;
  if (ax === 0) return 1;
  if (ax >= 1) return 0;
  const px = ax * Math.PI;
  return (Math.sin(px) / px) * (HAMMING_A + HAMMING_B * Math.cos(px));
}

/** Keys cubic convolution kernel with a = -0.5, written in the same evaluation order as Pillow. */
function bicubicKernel(x: number): number {
  const a = -0.5;
  const ax = x < 0 ? -x : x;
  if (ax < 1) return ((a + 2) * ax - (a + 3)) * ax * ax + 1;
  if (ax < 2) return (((ax - 5) * ax + 8) * ax - 4) * a;
  return 0;
}

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

function lanczosKernel(x: number): number {
  return x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

const KERNELS: Record<ResampleFilter, FilterKernel> = {
  box: { f: boxKernel, support: 0.5 },
  bilinear: { f: bilinearKernel, support: 1 },
  hamming: { f: hammingKernel, support: 1 },
  bicubic: { f: bicubicKernel, support: 2 },
  lanczos: { f: lanczosKernel, support: 3 },
};

/**
 * Maps a Pillow/Hugging Face `resample` code (PIL.Image.Resampling) to a filter: 1 LANCZOS, 2 BILINEAR,
 * 3 BICUBIC, 4 BOX, 5 HAMMING. Code 0 (NEAREST) is rejected because only convolution filters are implemented.
 */
export function resampleFilterFromPilCode(code: number, source = "resample setting"): ResampleFilter {
  switch (code) {
    case 1:
      return "lanczos";
    case 2:
      return "bilinear";
    case 3:
      return "bicubic";
    case 4:
      return "box";
    case 5:
      return "hamming";
    default:
      throw new ResampleError(
        `${source}: resample code ${code} is not supported; use 1 (LANCZOS), 2 (BILINEAR), 3 (BICUBIC), 4 (BOX) or ` +
          `5 (HAMMING).`,
      );
  }
}

/** Fixed-point weights of one axis: for output i, `count[i]` taps starting at input `start[i]`. */
interface AxisWeights {
  start: Int32Array;
  count: Int32Array;
  /** Row-major [out, taps] fixed-point weights. */
  weights: Int32Array;
  taps: number;
}

/** Computes the per-output windows and fixed-point weights for resizing an axis of `inSize` to `outSize`. */
function axisWeights(inSize: number, outSize: number, kernel: FilterKernel): AxisWeights {
  const scale = inSize / outSize;
  const filterScale = scale < 1 ? 1 : scale;
  const support = kernel.support * filterScale;
  const taps = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * taps);
  const w = new Float64Array(taps);
  const inv = 1 / filterScale;
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    let lo = Math.trunc(center - support + 0.5);
    if (lo < 0) lo = 0;
    let hi = Math.trunc(center + support + 0.5);
    if (hi > inSize) hi = inSize;
    const n = hi - lo;
    let sum = 0;
    for (let k = 0; k < n; k++) {
      const v = kernel.f((k + lo - center + 0.5) * inv);
      w[k] = v;
      sum += v;
    }
    const base = i * taps;
    for (let k = 0; k < n; k++) {
      const nv = sum !== 0 ? w[k] / sum : w[k];
      weights[base + k] = nv < 0 ? Math.trunc(-0.5 + nv * ONE) : Math.trunc(0.5 + nv * ONE);
    }
    start[i] = lo;
    count[i] = n;
  }
  return { start, count, weights, taps };
}

/** Rounds a fixed-point accumulator (already holding the +0.5 bias) to 0..255. */
function clip8(acc: number): number {
  const v = acc >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Horizontal pass over rows [row0, row0 + rows) of `src` (width srcW), producing `rows` rows of width outW. */
function horizontalPass(
  src: Uint8Array,
  srcW: number,
  row0: number,
  rows: number,
  outW: number,
  ax: AxisWeights,
): Uint8Array {
  const out = new Uint8Array(outW * rows * 3);
  const { start, count, weights, taps } = ax;
  for (let y = 0; y < rows; y++) {
    const rowBase = (y + row0) * srcW * 3;
    const outBase = y * outW * 3;
    for (let x = 0; x < outW; x++) {
      const n = count[x];
      const kb = x * taps;
      let p = rowBase + start[x] * 3;
      let r = HALF, g = HALF, b = HALF;
      for (let k = 0; k < n; k++) {
        const c = weights[kb + k];
        r += src[p] * c;
        g += src[p + 1] * c;
        b += src[p + 2] * c;
        p += 3;
      }
      const o = outBase + x * 3;
      out[o] = clip8(r);
      out[o + 1] = clip8(g);
      out[o + 2] = clip8(b);
    }
  }
  return out;
}

/** Vertical pass: `src` has width w; output row y reads rows start[y] - rowOffset .. of `src`. */
function verticalPass(src: Uint8Array, w: number, outH: number, ay: AxisWeights, rowOffset: number): Uint8Array {
  const out = new Uint8Array(w * outH * 3);
  const { start, count, weights, taps } = ay;
  const stride = w * 3;
  for (let y = 0; y < outH; y++) {
    const n = count[y];
    const kb = y * taps;
    const first = (start[y] - rowOffset) * stride;
    const outBase = y * stride;
    for (let x = 0; x < stride; x += 3) {
      let r = HALF, g = HALF, b = HALF;
      let p = first + x;
      for (let k = 0; k < n; k++) {
        const c = weights[kb + k];
        r += src[p] * c;
        g += src[p + 1] * c;
        b += src[p + 2] * c;
        p += stride;
      }
      out[outBase + x] = clip8(r);
      out[outBase + x + 1] = clip8(g);
      out[outBase + x + 2] = clip8(b);
    }
  }
  return out;
}

function checkSize(v: number, what: string): void {
  if (!Number.isInteger(v) || v <= 0) {
    throw new ResampleError(`resizeRgb: the ${what} must be a positive integer, got ${v}.`);
  }
}

/**
 * Resizes an 8-bit RGB image to `width` x `height` exactly as Pillow's `Image.resize(size, filter)` does for an
 * "RGB" image (default box, no `reducing_gap`). Returns a new image; the input is not modified. Same size returns
 * a copy.
 */
export function resizeRgb(img: RgbImage, width: number, height: number, filter: ResampleFilter = "bicubic"): RgbImage {
  checkSize(width, "target width");
  checkSize(height, "target height");
  checkSize(img.width, "source width");
  checkSize(img.height, "source height");
  if (img.data.length !== img.width * img.height * 3) {
    throw new ResampleError(
      `resizeRgb: the source holds ${img.data.length} bytes, expected ${img.width}x${img.height}x3.`,
    );
  }
  const kernel = KERNELS[filter];
  if (!kernel) throw new ResampleError(`resizeRgb: unknown filter "${filter}".`);
  const needH = width !== img.width;
  const needV = height !== img.height;
  if (!needH && !needV) return { width, height, data: img.data.slice() };

  const ay = axisWeights(img.height, height, kernel);
  let src = img.data;
  let srcW = img.width;
  let rowOffset = 0;
  if (needH) {
    // Only the input rows the vertical pass reads are resampled horizontally.
    const first = needV ? ay.start[0] : 0;
    const last = needV ? ay.start[height - 1] + ay.count[height - 1] : img.height;
    const ax = axisWeights(img.width, width, kernel);
    src = horizontalPass(img.data, img.width, first, last - first, width, ax);
    srcW = width;
    rowOffset = first;
  }
  if (!needV) return { width, height, data: src };
  return { width, height, data: verticalPass(src, srcW, height, ay, rowOffset) };
}
