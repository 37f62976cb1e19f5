/**
 * Image front-end timings on a synthetic 1024x768 picture held in memory: JPEG and PNG decoding, the Pillow-exact
 * bicubic resize, and the LLaVA (CLIP 336) and Qwen-VL (smart_resize + patches) processors. Prints the median of a
 * few runs.
 *
 *   deno run -A bench/image.ts
 */
import type { Buffer } from "node:buffer";
import jpeg from "jpeg-js";
import { PNG } from "pngjs";
import { decodeImage, type RgbImage } from "../core/io/image.ts";
import { resizeRgb } from "../core/io/resample.ts";
import { preprocessClipImage } from "../plugins/llava/image_processor.ts";
import { preprocessQwenImage, smartResize } from "../plugins/qwen-vl/image_processor.ts";

const RUNS = 5;
const W = 1024, H = 768;

/** A smooth colourful picture with some texture, as RGBA. */
function pictureRgba(): Uint8Array {
  const rgba = new Uint8Array(W * H * 4);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const o = (y * W + x) * 4;
      rgba[o] = (x * 255) / W;
      rgba[o + 1] = 128 + 100 * Math.sin(x / 23 + y / 31);
      rgba[o + 2] = ((x ^ y) & 63) * 4;
      rgba[o + 3] = 255;
    }
  }
  return rgba;
}

function median(fn: () => unknown): number {
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(RUNS / 2)];
}

const rgba = pictureRgba();
const jpegBytes = new Uint8Array(jpeg.encode({ width: W, height: H, data: rgba }, 90).data);
const png = new PNG({ width: W, height: H });
(png.data as Buffer).set(rgba);
const pngBytes = new Uint8Array((PNG as unknown as { sync: { write(p: unknown): Buffer } }).sync.write(png));
const img: RgbImage = decodeImage(pngBytes, "synthetic.png");

const [qh, qw] = smartResize(H, W);
const qRows = (qh / 14) * (qw / 14);

const rows: [string, number][] = [
  ["decode JPEG 1024x768 (4:4:4)", median(() => decodeImage(jpegBytes, "synthetic.jpg"))],
  ["decode PNG 1024x768 (RGBA)", median(() => decodeImage(pngBytes, "synthetic.png"))],
  ["resize bicubic -> 448x336", median(() => resizeRgb(img, 448, 336, "bicubic"))],
  ["resize bicubic -> 2048x1536", median(() => resizeRgb(img, 2048, 1536, "bicubic"))],
  ["LLaVA CLIP processor (336x336)", median(() => preprocessClipImage(img))],
  [`Qwen-VL processor (${qw}x${qh} -> ${qRows}x1176)`, median(() => preprocessQwenImage(img))],
];
console.log(`median of ${RUNS} runs`);
for (const [name, ms] of rows) console.log(`${name.padEnd(44)} ${ms.toFixed(1).padStart(8)} ms`);
