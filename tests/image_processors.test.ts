/**
 * Resizing and the LLaVA (CLIP) and Qwen-VL image processors.
 *
 * References: an independent float64 implementation of the separable convolution resize (within 1 grey level of
 * Pillow's fixed-point arithmetic); SHA-256 digests of Pillow 9.4 resize outputs and of whole numpy + PIL pipeline
 * outputs on synthetic images, written by tests/reference/make_image_refs.py (bit-exact checks); a generic
 * numpy-style reshape/transpose for the Qwen patch order; and, on the shared photos, values at seeded positions
 * of the PIL + transformers-equivalent pipelines (image_refs.json).
 */
import assert from "node:assert/strict";
import { readImageSync, type RgbImage } from "../core/io/image.ts";
import { resampleFilterFromPilCode, resizeRgb } from "../core/io/resample.ts";
import { Rng } from "../core/tensor/random.ts";
import {
  centerCropRgb,
  CLIP_STD,
  clipResizeOutputSize,
  expandToSquare,
  LLAVA_CLIP_DEFAULTS,
  parseClipImageProcessorConfig,
  preprocessClipImage,
} from "../plugins/llava/image_processor.ts";
import {
  parseQwenVisionProcessorConfig,
  preprocessQwenImage,
  preprocessQwenVideo,
  QWEN_VL_DEFAULTS,
  qwenImageGrid,
  qwenVisionTokenCount,
  smartResize,
} from "../plugins/qwen-vl/image_processor.ts";
import { sharedTest } from "./shared_data.ts";

interface SampledValues {
  idx: number[];
  values: number[];
}

interface ImageRef {
  file: string;
  source_mode: string;
  decoded: { width: number; height: number } & SampledValues;
  clip: {
    resized: { width: number; height: number };
    resized_idx: number[];
    resized_values: number[];
    shape: number[];
    channel_mean: number[];
  } & SampledValues;
  qwen: {
    resized: { width: number; height: number };
    resized_idx: number[];
    resized_values: number[];
    grid_thw: number[];
    shape: number[];
    channel_mean: number[];
  } & SampledValues;
}

interface Refs {
  pil_version: string;
  smart_resize: { in: [number, number]; out?: [number, number]; error?: boolean }[];
  clip_output_size: { in: [number, number]; out: [number, number] }[];
  resize_cases: {
    src: [number, number, number];
    src_sha256: string;
    dst: [number, number];
    filter: number;
    dst_sha256: string;
  }[];
  pipeline_cases: {
    kind: "clip" | "qwen";
    frames: [number, number, number][];
    shortest_edge?: number;
    crop?: [number, number];
    grid_thw?: [number, number, number];
    shape: number[];
    sha256: string;
  }[];
  images: ImageRef[];
}

const REFS: Refs = JSON.parse(Deno.readTextFileSync(new URL("./reference/image_refs.json", import.meta.url)));

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(bytes)));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** The synthetic picture of make_image_refs.py: 8x8 blocks of ramps alternating with integer-hash noise. */
function syntheticImage(width: number, height: number, seed: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        const i = (y * width + x) * 3 + c;
        let n = Math.imul(i + seed, 2654435761) >>> 0;
        n = (n ^ (n >>> 15)) >>> 0;
        n = Math.imul(n, 2246822519) >>> 0;
        n = (n ^ (n >>> 13)) >>> 0;
        const noise = n >>> 24;
        const ramp = (x * 7 + y * 5 + c * 40) % 256;
        data[i] = ((x >> 3) + (y >> 3)) % 2 === 1 ? noise : ramp;
      }
    }
  }
  return { width, height, data };
}

// ------------------------------------------------------------------------------------------------------------
// Independent float64 resize reference

function cubic(x: number): number {
  const a = -0.5, t = Math.abs(x);
  if (t < 1) return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1;
  if (t < 2) return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a;
  return 0;
}

function triangle(x: number): number {
  return Math.max(0, 1 - Math.abs(x));
}

/** One axis of a convolution resize in float64, rounding half up and clipping to 0..255 like Pillow's passes. */
function resizeAxis(
  get: (i: number) => number,
  inSize: number,
  outSize: number,
  kernel: (x: number) => number,
): number[] {
  const scale = inSize / outSize;
  const fs = Math.max(1, scale);
  const out: number[] = [];
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    let num = 0, den = 0;
    for (let i = 0; i < inSize; i++) {
      const w = kernel((i + 0.5 - center) / fs);
      num += w * get(i);
      den += w;
    }
    out.push(Math.min(255, Math.max(0, Math.floor(num / den + 0.5))));
  }
  return out;
}

function referenceResize(img: RgbImage, w: number, h: number, kernel: (x: number) => number): Uint8Array {
  let cur = img.data, cw = img.width;
  if (w !== img.width) {
    const tmp = new Uint8Array(w * img.height * 3);
    for (let y = 0; y < img.height; y++) {
      for (let c = 0; c < 3; c++) {
        const row = resizeAxis((i) => cur[(y * cw + i) * 3 + c], cw, w, kernel);
        row.forEach((v, x) => (tmp[(y * w + x) * 3 + c] = v));
      }
    }
    cur = tmp;
    cw = w;
  }
  if (h === img.height) return cur;
  const out = new Uint8Array(w * h * 3);
  for (let x = 0; x < w; x++) {
    for (let c = 0; c < 3; c++) {
      const col = resizeAxis((i) => cur[(i * cw + x) * 3 + c], img.height, h, kernel);
      col.forEach((v, y) => (out[(y * w + x) * 3 + c] = v));
    }
  }
  return out;
}

Deno.test("resizeRgb: within 1 grey level of a float64 reference (random sizes, up/down, bicubic and bilinear)", () => {
  const rng = new Rng(11);
  let total = 0, exact = 0, worst = 0;
  for (let t = 0; t < 60; t++) {
    const sw = 1 + rng.int(40), sh = 1 + rng.int(40);
    const dw = 1 + rng.int(70), dh = 1 + rng.int(70);
    const img: RgbImage = { width: sw, height: sh, data: new Uint8Array(sw * sh * 3) };
    const smooth = t % 2 === 0;
    for (let i = 0; i < img.data.length; i++) {
      img.data[i] = smooth ? Math.round(127.5 + 127.5 * Math.sin(i / 17 + t)) : rng.int(256);
    }
    const filter = t % 3 === 2 ? "bilinear" : "bicubic";
    const got = resizeRgb(img, dw, dh, filter).data;
    const want = referenceResize(img, dw, dh, filter === "bicubic" ? cubic : triangle);
    assert.equal(got.length, want.length);
    for (let i = 0; i < got.length; i++) {
      const d = Math.abs(got[i] - want[i]);
      worst = Math.max(worst, d);
      if (d === 0) exact++;
      total++;
    }
    assert.ok(worst <= 1, `case ${t}: ${sw}x${sh} -> ${dw}x${dh} ${filter}: difference ${worst}`);
  }
  console.log(
    `  resize vs float64 reference: ${(100 * exact / total).toFixed(2)}% exact, max ${worst} (${total} values)`,
  );
});

Deno.test(`resizeRgb: bit-identical to Pillow ${REFS.pil_version} on synthetic images (all filters)`, async () => {
  for (const c of REFS.resize_cases) {
    const [sw, sh, seed] = c.src;
    const src = syntheticImage(sw, sh, seed);
    assert.equal(await sha256Hex(src.data), c.src_sha256, `synthetic input ${sw}x${sh} seed ${seed} differs`);
    const out = resizeRgb(src, c.dst[0], c.dst[1], resampleFilterFromPilCode(c.filter));
    assert.equal(
      await sha256Hex(out.data),
      c.dst_sha256,
      `${sw}x${sh} -> ${c.dst[0]}x${c.dst[1]} filter ${c.filter} differs from Pillow`,
    );
  }
});

Deno.test("resizeRgb: same size copies; bad sizes and filter codes are rejected", () => {
  const img = syntheticImage(5, 4, 1);
  const same = resizeRgb(img, 5, 4);
  assert.deepEqual(same.data, img.data);
  assert.notEqual(same.data, img.data);
  assert.throws(() => resizeRgb(img, 0, 4), /target width must be a positive integer, got 0/);
  assert.throws(() => resizeRgb(img, 3, 2.5), /target height must be a positive integer, got 2.5/);
  assert.throws(() => resampleFilterFromPilCode(0, "cfg.json"), /cfg\.json: resample code 0 is not supported/);
});

// ------------------------------------------------------------------------------------------------------------
// Whole pipelines on synthetic images (bit-exact against numpy + PIL)

Deno.test("CLIP and Qwen pipelines: float32 outputs bit-identical to numpy + PIL on synthetic images", async () => {
  for (const c of REFS.pipeline_cases) {
    const frames = c.frames.map(([w, h, s]) => syntheticImage(w, h, s));
    if (c.kind === "clip") {
      const cfg = {
        ...LLAVA_CLIP_DEFAULTS,
        size: { shortestEdge: c.shortest_edge! },
        cropHeight: c.crop![0],
        cropWidth: c.crop![1],
      };
      const out = preprocessClipImage(frames[0], cfg);
      assert.deepEqual([out.channels, out.height, out.width], c.shape);
      assert.equal(await sha256Hex(f32Bytes(out.data)), c.sha256, `clip case ${JSON.stringify(c.frames)}`);
    } else {
      const out = frames.length === 1 ? preprocessQwenImage(frames[0]) : preprocessQwenVideo(frames);
      assert.deepEqual(out.gridThw, c.grid_thw);
      assert.deepEqual([out.rows, out.cols], c.shape);
      assert.equal(await sha256Hex(f32Bytes(out.patches)), c.sha256, `qwen case ${JSON.stringify(c.frames)}`);
    }
  }
});

// ------------------------------------------------------------------------------------------------------------
// Sizes

Deno.test("smartResize matches Python's smart_resize (round half to even) on reference sizes", () => {
  for (const r of REFS.smart_resize) {
    const [h, w] = r.in;
    if (r.error) assert.throws(() => smartResize(h, w), /aspect ratio/);
    else assert.deepEqual(smartResize(h, w), r.out, `smart_resize(${h}, ${w})`);
  }
  // Ties: 14/28 = 0.5 -> 0 and 42/28 = 1.5 -> 2 (then the min_pixels rule applies to the 0).
  assert.deepEqual(smartResize(42, 70, 28, 1, 1e9), [56, 56]);
  assert.deepEqual(smartResize(98, 126, 28, 1, 1e9), [112, 112]);
  assert.deepEqual(smartResize(427, 640), [420, 644]);
});

Deno.test("clipResizeOutputSize: short side to 336, long side truncated", () => {
  for (const r of REFS.clip_output_size) {
    assert.deepEqual(clipResizeOutputSize(r.in[0], r.in[1], { shortestEdge: 336 }), r.out);
  }
  assert.deepEqual(clipResizeOutputSize(100, 200, { height: 30, width: 40 }), [30, 40]);
});

Deno.test("centerCropRgb: offsets (h - ch) // 2 and zero padding with the extra pixel after", () => {
  const img: RgbImage = { width: 4, height: 3, data: new Uint8Array(36) };
  for (let i = 0; i < 12; i++) img.data.fill(i + 1, i * 3, i * 3 + 3);
  const at = (im: RgbImage) => Array.from({ length: im.width * im.height }, (_, i) => im.data[i * 3]);
  // Crop 2x2: top = (3 - 2) // 2 = 0, left = (4 - 2) // 2 = 1.
  assert.deepEqual(at(centerCropRgb(img, 2, 2)), [2, 3, 6, 7]);
  // Crop 5 rows x 3 cols: height padded (pad top ceil(2/2) = 1), left = (4 - 3) // 2 = 0.
  assert.deepEqual(at(centerCropRgb(img, 5, 3)), [0, 0, 0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 0, 0, 0]);
  // Crop 4 rows x 6 cols: pad top ceil(1/2) = 1, pad left 1; the extra row and column land after.
  assert.deepEqual(at(centerCropRgb(img, 4, 6)), [
    ...[0, 0, 0, 0, 0, 0],
    ...[0, 1, 2, 3, 4, 0],
    ...[0, 5, 6, 7, 8, 0],
    ...[0, 9, 10, 11, 12, 0],
  ]);
});

Deno.test("expandToSquare: centred with offset (long - short) // 2 on the background colour", () => {
  const img: RgbImage = { width: 1, height: 4, data: new Uint8Array(12).fill(200) };
  const sq = expandToSquare(img, [1, 2, 3]);
  assert.equal(sq.width, 4);
  const row0 = Array.from(sq.data.subarray(0, 12));
  assert.deepEqual(row0, [1, 2, 3, 200, 200, 200, 1, 2, 3, 1, 2, 3]);
});

// ------------------------------------------------------------------------------------------------------------
// Config parsing

Deno.test("parseClipImageProcessorConfig: llava-1.5 config gives the defaults; errors name fields", () => {
  const llava = {
    crop_size: { height: 336, width: 336 },
    do_center_crop: true,
    do_convert_rgb: true,
    do_normalize: true,
    do_rescale: true,
    do_resize: true,
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_processor_type: "CLIPImageProcessor",
    image_std: [0.26862954, 0.26130258, 0.27577711],
    processor_class: "LlavaProcessor",
    resample: 3,
    rescale_factor: 0.00392156862745098,
    size: { shortest_edge: 336 },
  };
  assert.deepEqual(parseClipImageProcessorConfig(llava), { ...LLAVA_CLIP_DEFAULTS });
  const old = parseClipImageProcessorConfig({ size: 224, crop_size: 224, resample: 2, image_aspect_ratio: "pad" });
  assert.deepEqual(old.size, { shortestEdge: 224 });
  assert.deepEqual([old.cropHeight, old.cropWidth, old.resample, old.padToSquare], [224, 224, "bilinear", true]);
  assert.throws(
    () => parseClipImageProcessorConfig({ image_mean: [0.5, 0.5] }, "m/preprocessor_config.json"),
    /^ImageProcessorConfigError: m\/preprocessor_config\.json: field "image_mean" must be a number or a list of 3/,
  );
  assert.throws(() => parseClipImageProcessorConfig({ size: { longest_edge: 3 } }), /field "size" must be/);
  assert.throws(() => parseClipImageProcessorConfig({ crop_size: { height: -1, width: 3 } }), /"crop_size.height"/);
  assert.throws(() => parseClipImageProcessorConfig([]), /expected a JSON object/);
});

Deno.test("parseQwenVisionProcessorConfig: min/max_pixels, the size form, defaults and errors", () => {
  const qwen = {
    min_pixels: 3136,
    max_pixels: 12845056,
    patch_size: 14,
    temporal_patch_size: 2,
    merge_size: 2,
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_std: [0.26862954, 0.26130258, 0.27577711],
    image_processor_type: "Qwen2VLImageProcessor",
    processor_class: "Qwen2_5_VLProcessor",
  };
  assert.deepEqual(parseQwenVisionProcessorConfig(qwen), { ...QWEN_VL_DEFAULTS });
  const sized = parseQwenVisionProcessorConfig({ size: { shortest_edge: 100, longest_edge: 200000 } });
  assert.deepEqual([sized.minPixels, sized.maxPixels], [100, 200000]);
  const both = parseQwenVisionProcessorConfig({ size: { shortest_edge: 100, longest_edge: 200000 }, max_pixels: 5000 });
  assert.deepEqual([both.minPixels, both.maxPixels], [100, 5000]);
  assert.throws(
    () => parseQwenVisionProcessorConfig({ patch_size: 0 }, "q/preprocessor_config.json"),
    /q\/preprocessor_config\.json: field "patch_size" must be a positive integer, got 0/,
  );
  assert.throws(
    () => parseQwenVisionProcessorConfig({ min_pixels: 10, max_pixels: 5 }),
    /"max_pixels" must be at least/,
  );
});

// ------------------------------------------------------------------------------------------------------------
// Qwen patch order

/** numpy-style reshape + transpose + reshape, by index arithmetic over the contiguous source. */
function numpyPatchOrder(
  frames: Float32Array,
  shape: number[],
  perm: number[],
  rows: number,
  cols: number,
): Float32Array {
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const tShape = perm.map((p) => shape[p]);
  const out = new Float32Array(rows * cols);
  const multi = new Array(shape.length).fill(0);
  for (let flat = 0; flat < rows * cols; flat++) {
    let rest = flat;
    for (let j = tShape.length - 1; j >= 0; j--) {
      multi[perm[j]] = rest % tShape[j];
      rest = Math.floor(rest / tShape[j]);
    }
    out[flat] = frames[multi.reduce((s, v, i) => s + v * strides[i], 0)];
  }
  return out;
}

Deno.test("Qwen patches equal numpy reshape/transpose (0,3,6,4,7,2,1,5,8); videos pad by the last frame", () => {
  const cfg = {
    ...QWEN_VL_DEFAULTS,
    doResize: false,
    doRescale: false,
    doNormalize: false,
    patchSize: 2,
    mergeSize: 2,
    temporalPatchSize: 2,
  };
  const h = 8, w = 12;
  const frames = [1, 2, 3].map((s) => syntheticImage(w, h, s));
  const got = preprocessQwenVideo(frames, cfg);
  assert.deepEqual(got.gridThw, [2, 4, 6]);
  assert.deepEqual([got.rows, got.cols], [48, 24]);
  // Reference input: [T=4, C, H, W] with the last frame repeated, as float32 pixel values.
  const padded = [...frames, frames[2]];
  const chw = new Float32Array(4 * 3 * h * w);
  padded.forEach((f, t) => {
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < h * w; i++) chw[(t * 3 + c) * h * w + i] = f.data[i * 3 + c];
    }
  });
  const shape = [2, 2, 3, 2, 2, 2, 3, 2, 2];
  const want = numpyPatchOrder(chw, shape, [0, 3, 6, 4, 7, 2, 1, 5, 8], 48, 24);
  assert.deepEqual(got.patches, want);
  // A single image is its own temporal pair: both temporal halves of each channel are equal.
  const one = preprocessQwenImage(frames[0], cfg);
  assert.deepEqual(one.gridThw, [1, 4, 6]);
  for (let r = 0; r < one.rows; r++) {
    for (let c = 0; c < 3; c++) {
      const base = r * 24 + c * 8;
      assert.deepEqual(one.patches.subarray(base, base + 4), one.patches.subarray(base + 4, base + 8));
    }
  }
});

Deno.test("qwenVisionTokenCount and qwenImageGrid", () => {
  assert.equal(qwenVisionTokenCount([1, 30, 46]), 345);
  assert.equal(qwenVisionTokenCount([2, 4, 6], 2), 12);
  assert.deepEqual(qwenImageGrid(427, 640), [1, 30, 46]);
  assert.throws(
    () => preprocessQwenImage(syntheticImage(30, 20, 1), { ...QWEN_VL_DEFAULTS, doResize: false }),
    /not a multiple of patch_size \* merge_size = 28/,
  );
});

// ------------------------------------------------------------------------------------------------------------
// Shared photos against the PIL + transformers-equivalent pipelines

interface DiffStats {
  mean: number;
  max: number;
  exact: number;
}

function diffStats(got: (i: number) => number, ref: SampledValues, scale: (i: number) => number): DiffStats {
  let sum = 0, max = 0, exact = 0;
  ref.idx.forEach((idx, k) => {
    const d = Math.abs(got(idx) - ref.values[k]) * scale(idx);
    sum += d;
    max = Math.max(max, d);
    if (d < 1e-3) exact++;
  });
  return { mean: sum / ref.idx.length, max, exact: exact / ref.idx.length };
}

sharedTest("CLIP and Qwen processors vs PIL + transformers on the shared photos", "data/images", (dir) => {
  const rows: string[] = [];
  const clipMeans: number[] = [];
  for (const ref of REFS.images) {
    const path = `${dir}/${ref.file}`;
    const lossless = ref.file.endsWith(".png");
    const img = readImageSync(path);
    assert.deepEqual([img.width, img.height], [ref.decoded.width, ref.decoded.height], `${ref.file}: decoded size`);
    const dec = diffStats((i) => img.data[i], ref.decoded, () => 1);

    // CLIP (llava-1.5): resized uint8, then the normalised crop.
    const [rh, rw] = clipResizeOutputSize(img.height, img.width, { shortestEdge: 336 });
    assert.deepEqual([rw, rh], [ref.clip.resized.width, ref.clip.resized.height], `${ref.file}: CLIP resize size`);
    const resized = resizeRgb(img, rw, rh, "bicubic");
    const res = diffStats(
      (i) => resized.data[i],
      { idx: ref.clip.resized_idx, values: ref.clip.resized_values },
      () => 1,
    );
    const clip = preprocessClipImage(img);
    assert.deepEqual([clip.channels, clip.height, clip.width], ref.clip.shape);
    const plane = clip.height * clip.width;
    const clipGrey = (i: number) => CLIP_STD[Math.floor(i / plane)] * 255;
    const cl = diffStats((i) => clip.data[i], ref.clip, clipGrey);
    const chMean = [0, 1, 2].map((c) => {
      let s = 0;
      for (let i = c * plane; i < (c + 1) * plane; i++) s += clip.data[i];
      return Math.abs(s / plane - ref.clip.channel_mean[c]) * CLIP_STD[c] * 255;
    });

    // Qwen-VL: smart_resize size, grid and patch values.
    const q = preprocessQwenImage(img);
    assert.deepEqual(q.gridThw, ref.qwen.grid_thw, `${ref.file}: Qwen grid`);
    assert.deepEqual([q.rows, q.cols], ref.qwen.shape);
    const qGrey = (i: number) => CLIP_STD[Math.floor((i % q.cols) / (q.cols / 3))] * 255;
    const qw = diffStats((i) => q.patches[i], ref.qwen, qGrey);

    rows.push(
      `  ${ref.file.padEnd(48)} decode ${dec.mean.toFixed(3)}/${dec.max} | resize ${res.mean.toFixed(3)}/${res.max}` +
        ` | clip ${cl.mean.toFixed(3)}/${cl.max.toFixed(2)} (channel means ${Math.max(...chMean).toFixed(3)})` +
        ` | qwen ${qw.mean.toFixed(3)}/${qw.max.toFixed(2)}`,
    );
    clipMeans.push(cl.mean);
    if (lossless) {
      // Identical decoded pixels: everything downstream must be bit-identical (JSON keeps 6 decimals).
      assert.equal(dec.max, 0, `${ref.file}: decoded pixels differ`);
      assert.equal(res.max, 0, `${ref.file}: resized pixels differ`);
      assert.ok(cl.max < 1e-3 && qw.max < 1e-3, `${ref.file}: tensors differ (${cl.max}, ${qw.max})`);
    }
    // JPEG: only the inverse DCT differs from libjpeg (colour conversion and chroma upsampling follow it).
    assert.ok(dec.mean < 0.3, `${ref.file}: decoded pixels differ by ${dec.mean} grey levels on average`);
    assert.ok(cl.mean < 1, `${ref.file}: CLIP mean difference ${cl.mean} grey levels`);
    assert.ok(qw.mean < 1, `${ref.file}: Qwen mean difference ${qw.mean} grey levels`);
    assert.ok(Math.max(...chMean) < 0.5, `${ref.file}: CLIP channel means differ by ${chMean} grey levels`);
  }
  console.log("  mean/max |difference| in grey levels (decode and resize on uint8 samples, tensors x std x 255):");
  for (const r of rows) console.log(r);
  console.log(`  CLIP mean over photos: ${(clipMeans.reduce((a, b) => a + b, 0) / clipMeans.length).toFixed(4)}`);
});
