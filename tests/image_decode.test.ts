/**
 * Image decoding: PNG variants converted like Pillow's convert("RGB") (expected values follow Pillow 9.4's rules,
 * checked by hand), JPEG colour handling (libjpeg colour-space rules, chroma upsampling), raw pixel input, and
 * error messages that name the file.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { deflateSync } from "node:zlib";
import { PNG } from "pngjs";
import jpeg from "jpeg-js";
import {
  decodeImage,
  detectImageFormat,
  ImageDecodeError,
  readImage,
  rgbImageFromPixels,
  upsampleJpegPlane,
} from "../core/io/image.ts";

// ------------------------------------------------------------------------------------------------------------
// A minimal PNG writer (any colour type and bit depth, filter 0, optional PLTE/tRNS) for variants pngjs cannot
// write.

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Writes a PNG from already packed rows (without filter bytes). */
function writePng(
  width: number,
  height: number,
  depth: number,
  colorType: number,
  rows: Uint8Array[],
  extra: { plte?: number[]; trns?: number[] } = {},
): Uint8Array {
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, width);
  dv.setUint32(4, height);
  ihdr[8] = depth;
  ihdr[9] = colorType;
  const raw = concat(rows.flatMap((r) => [new Uint8Array([0]), r]));
  const parts = [new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr)];
  if (extra.plte) parts.push(chunk("PLTE", new Uint8Array(extra.plte)));
  if (extra.trns) parts.push(chunk("tRNS", new Uint8Array(extra.trns)));
  parts.push(chunk("IDAT", new Uint8Array(deflateSync(raw))), chunk("IEND", new Uint8Array(0)));
  return concat(parts);
}

/** Big-endian 16-bit samples as bytes. */
function be16(values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  values.forEach((v, i) => {
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 255;
  });
  return out;
}

function pixels(img: { data: Uint8Array }): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < img.data.length; i += 3) out.push([img.data[i], img.data[i + 1], img.data[i + 2]]);
  return out;
}

const grey = (v: number) => [v, v, v];

// ------------------------------------------------------------------------------------------------------------
// PNG

Deno.test("png: 8-bit RGBA written by pngjs -> alpha dropped, colour kept (not composited)", () => {
  const png = new PNG({ width: 3, height: 2 });
  const src = [10, 20, 30, 255, 40, 50, 60, 0, 70, 80, 90, 128, 1, 2, 3, 4, 250, 251, 252, 253, 0, 0, 0, 0];
  (png.data as Buffer).set(src);
  const bytes = new Uint8Array((PNG as unknown as { sync: { write(p: unknown): Buffer } }).sync.write(png));
  const img = decodeImage(bytes, "rgba.png");
  assert.equal(img.width, 3);
  assert.equal(img.height, 2);
  const want: number[][] = [];
  for (let i = 0; i < src.length; i += 4) want.push(src.slice(i, i + 3));
  assert.deepEqual(pixels(img), want);
});

Deno.test("png: 8-bit grey written by pngjs -> replicated to R, G, B", () => {
  const png = new PNG({ width: 4, height: 1, colorType: 0, inputColorType: 0, inputHasAlpha: false });
  const bytes = new Uint8Array(
    (PNG as unknown as { sync: { write(p: unknown, o: unknown): Buffer } }).sync.write(
      Object.assign(png, { data: Buffer.from([0, 17, 128, 255]) }),
      { colorType: 0, inputColorType: 0, inputHasAlpha: false },
    ),
  );
  assert.deepEqual(pixels(decodeImage(bytes, "grey.png")), [grey(0), grey(17), grey(128), grey(255)]);
});

Deno.test("png: low bit-depth grey is scaled to 0..255 (1 bit -> 0/255, 2 bits x85, 4 bits x17)", () => {
  const g1 = writePng(8, 1, 1, 0, [new Uint8Array([0b10100001])]);
  assert.deepEqual(pixels(decodeImage(g1, "g1.png")), [1, 0, 1, 0, 0, 0, 0, 1].map((b) => grey(b * 255)));
  const g2 = writePng(4, 1, 2, 0, [new Uint8Array([0b00011011])]);
  assert.deepEqual(pixels(decodeImage(g2, "g2.png")), [grey(0), grey(85), grey(170), grey(255)]);
  const g4 = writePng(3, 1, 4, 0, [new Uint8Array([0x0f, 0x80])]);
  assert.deepEqual(pixels(decodeImage(g4, "g4.png")), [grey(0), grey(255), grey(136)]);
});

Deno.test("png: 16-bit grey is clipped to 255 (Pillow opens it as a 32-bit integer image)", () => {
  const g16 = writePng(4, 1, 16, 0, [be16([100, 255, 256, 0x1234])]);
  assert.deepEqual(pixels(decodeImage(g16, "g16.png")), [grey(100), grey(255), grey(255), grey(255)]);
});

Deno.test("png: 16-bit RGB, RGBA and grey+alpha keep the high byte", () => {
  const rgb16 = writePng(1, 1, 16, 2, [be16([0x1234, 0xff80, 0x00ff])]);
  assert.deepEqual(pixels(decodeImage(rgb16, "rgb16.png")), [[0x12, 0xff, 0x00]]);
  const rgba16 = writePng(1, 1, 16, 6, [be16([0x1234, 0xff80, 0x00ff, 0x0101])]);
  assert.deepEqual(pixels(decodeImage(rgba16, "rgba16.png")), [[0x12, 0xff, 0x00]]);
  const la16 = writePng(2, 1, 16, 4, [be16([0x1234, 0x5678, 0x80ff, 0])]);
  assert.deepEqual(pixels(decodeImage(la16, "la16.png")), [grey(0x12), grey(0x80)]);
});

Deno.test("png: grey+alpha 8-bit drops alpha", () => {
  const la8 = writePng(2, 1, 8, 4, [new Uint8Array([10, 0, 200, 128])]);
  assert.deepEqual(pixels(decodeImage(la8, "la8.png")), [grey(10), grey(200)]);
});

Deno.test("png: palette images (8, 4, 1 bit) map through the palette; tRNS is ignored", () => {
  const plte = [10, 20, 30, 40, 50, 60, 70, 80, 90];
  const p8 = writePng(3, 1, 8, 3, [new Uint8Array([0, 1, 2])], { plte, trns: [0, 128] });
  assert.deepEqual(pixels(decodeImage(p8, "p8.png")), [[10, 20, 30], [40, 50, 60], [70, 80, 90]]);
  const p4 = writePng(3, 1, 4, 3, [new Uint8Array([0x12, 0x00])], { plte });
  assert.deepEqual(pixels(decodeImage(p4, "p4.png")), [[40, 50, 60], [70, 80, 90], [10, 20, 30]]);
  const p1 = writePng(3, 1, 1, 3, [new Uint8Array([0b10100000])], { plte: plte.slice(0, 6) });
  assert.deepEqual(pixels(decodeImage(p1, "p1.png")), [[40, 50, 60], [10, 20, 30], [40, 50, 60]]);
});

Deno.test("png: a tRNS colour key does not change the colour of matching pixels", () => {
  const g8 = writePng(2, 1, 8, 0, [new Uint8Array([7, 9])], { trns: [0, 7] });
  assert.deepEqual(pixels(decodeImage(g8, "g8trns.png")), [grey(7), grey(9)]);
  const rgb8 = writePng(2, 1, 8, 2, [new Uint8Array([1, 2, 3, 4, 5, 6])], { trns: [0, 1, 0, 2, 0, 3] });
  assert.deepEqual(pixels(decodeImage(rgb8, "rgbtrns.png")), [[1, 2, 3], [4, 5, 6]]);
});

// ------------------------------------------------------------------------------------------------------------
// JPEG

/** A smooth, colourful 48x40 test picture as RGBA (for the jpeg-js encoder). */
function testPicture(w = 48, h = 40): Uint8Array {
  const rgba = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = (y * w + x) * 4;
      rgba[o] = Math.round(40 + (180 * x) / (w - 1));
      rgba[o + 1] = Math.round(200 - (150 * y) / (h - 1));
      rgba[o + 2] = Math.round(128 + 100 * Math.sin((x + y) / 9));
      rgba[o + 3] = 255;
    }
  }
  return rgba;
}

function encodeJpeg(w = 48, h = 40, quality = 95): Uint8Array {
  return new Uint8Array(jpeg.encode({ width: w, height: h, data: testPicture(w, h) }, quality).data);
}

/** Replaces the JFIF APP0 segment (right after SOI) with an Adobe APP14 segment carrying `transform`. */
function withAdobeInsteadOfJfif(bytes: Uint8Array, transform: number): Uint8Array {
  assert.equal(bytes[2], 0xff);
  assert.equal(bytes[3], 0xe0, "the jpeg-js encoder writes JFIF APP0 first");
  const app0Len = (bytes[4] << 8) | bytes[5];
  const adobe = new Uint8Array([0xff, 0xee, 0, 14, 0x41, 0x64, 0x6f, 0x62, 0x65, 0, 100, 0, 0, 0, 0, transform]);
  return concat([bytes.subarray(0, 2), adobe, bytes.subarray(4 + app0Len)]);
}

Deno.test("jpeg: a high-quality encode decodes close to the source picture", () => {
  const img = decodeImage(encodeJpeg(), "pic.jpg");
  const src = testPicture();
  assert.equal(img.width, 48);
  assert.equal(img.height, 40);
  let sum = 0, max = 0;
  for (let i = 0; i < 48 * 40; i++) {
    for (let c = 0; c < 3; c++) {
      const d = Math.abs(img.data[i * 3 + c] - src[i * 4 + c]);
      sum += d;
      max = Math.max(max, d);
    }
  }
  const mean = sum / (48 * 40 * 3);
  assert.ok(mean < 1.5 && max <= 12, `mean ${mean}, max ${max}`);
});

Deno.test("jpeg: Adobe transform=1 without JFIF is YCbCr (same pixels); transform=0 means raw RGB components", () => {
  const base = encodeJpeg();
  const a = decodeImage(base, "jfif.jpg");
  const b = decodeImage(withAdobeInsteadOfJfif(base, 1), "adobe1.jpg");
  assert.deepEqual(b.data, a.data);
  const raw = decodeImage(withAdobeInsteadOfJfif(base, 0), "adobe0.jpg");
  // The components are then Y, Cb, Cr taken as R, G, B: compare with the BT.601 transform of the YCbCr decode.
  let worst = 0;
  for (let i = 0; i < a.data.length; i += 3) {
    const [r, g, bl] = [a.data[i], a.data[i + 1], a.data[i + 2]];
    const y = 0.299 * r + 0.587 * g + 0.114 * bl;
    const cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * bl;
    const cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * bl;
    worst = Math.max(worst, Math.abs(raw.data[i] - y), Math.abs(raw.data[i + 1] - cb), Math.abs(raw.data[i + 2] - cr));
  }
  assert.ok(worst <= 2.5, `raw component planes differ from the colour transform by ${worst}`);
});

Deno.test("jpeg upsampling: fancy 2x1, 1x2 and 2x2 are within 1 of exact linear interpolation at 1/4, 3/4", () => {
  // Samples at integer positions; output pixel centres sit at (x + 0.5) / r - 0.5 in sample coordinates.
  const dw = 7, dh = 5;
  const s = new Uint8Array(dw * dh);
  for (let i = 0; i < s.length; i++) s[i] = (i * 67 + 13) % 256;
  const at = (i: number, j: number) => s[Math.min(dh - 1, Math.max(0, j)) * dw + Math.min(dw - 1, Math.max(0, i))];
  const lerp1 = (p: number, n: number, get: (k: number) => number) => {
    const c = Math.min(n - 1, Math.max(0, p));
    const k0 = Math.floor(c), f = c - k0;
    return get(k0) * (1 - f) + get(Math.min(n - 1, k0 + 1)) * f;
  };
  for (const [rh, rv] of [[2, 1], [1, 2], [2, 2]]) {
    const w = dw * rh - 1, h = dh * rv; // odd width: the last output column is dropped as in libjpeg
    const up = upsampleJpegPlane(s, dw, dh, rh, rv, w, h);
    let worst = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const sx = (x + 0.5) / rh - 0.5, sy = (y + 0.5) / rv - 0.5;
        const want = lerp1(sy, dh, (j) => lerp1(sx, dw, (i) => at(i, j)));
        worst = Math.max(worst, Math.abs(up[y * w + x] - want));
      }
    }
    assert.ok(worst <= 1, `ratio ${rh}x${rv}: worst ${worst}`);
  }
  // Ratios without a fancy method replicate.
  const rep = upsampleJpegPlane(s, dw, dh, 3, 1, 3 * dw, dh);
  for (let x = 0; x < 3 * dw; x++) assert.equal(rep[x], s[Math.floor(x / 3)]);
});

// ------------------------------------------------------------------------------------------------------------
// Raw pixels, format detection, errors

Deno.test("rgbImageFromPixels: grey replicated, alpha dropped, wrong length rejected", () => {
  assert.deepEqual(pixels(rgbImageFromPixels(2, 1, [5, 250], "grey")), [grey(5), grey(250)]);
  assert.deepEqual(pixels(rgbImageFromPixels(2, 1, [5, 0, 250, 9], "grey-alpha")), [grey(5), grey(250)]);
  assert.deepEqual(pixels(rgbImageFromPixels(1, 2, [1, 2, 3, 0, 4, 5, 6, 77], "rgba")), [[1, 2, 3], [4, 5, 6]]);
  assert.deepEqual(pixels(rgbImageFromPixels(1, 1, new Uint8Array([9, 8, 7]))), [[9, 8, 7]]);
  assert.throws(() => rgbImageFromPixels(2, 2, [1, 2, 3], "rgb"), /2x2 rgb pixels need 12 values, got 3/);
});

Deno.test("detectImageFormat: magic bytes", () => {
  assert.equal(detectImageFormat(encodeJpeg(16, 8)), "jpeg");
  assert.equal(detectImageFormat(writePng(1, 1, 8, 0, [new Uint8Array([1])])), "png");
  assert.equal(detectImageFormat(new TextEncoder().encode("GIF89a")), undefined);
  assert.equal(detectImageFormat(new Uint8Array(0)), undefined);
});

Deno.test("errors name the file: not an image, corrupt PNG, corrupt JPEG, missing file", async () => {
  assert.throws(
    () => decodeImage(new TextEncoder().encode("hello world"), "notes/readme.txt"),
    (e: unknown) => e instanceof ImageDecodeError && e.message === "notes/readme.txt is not a JPEG or PNG image.",
  );
  const png = writePng(4, 4, 8, 2, Array.from({ length: 4 }, () => new Uint8Array(12).fill(99)));
  assert.throws(
    () => decodeImage(png.subarray(0, png.length - 30), "cut.png"),
    (e: unknown) => e instanceof ImageDecodeError && /^cut\.png could not be decoded as PNG: .+\.$/.test(e.message),
  );
  const jpg = encodeJpeg();
  assert.throws(
    () => decodeImage(jpg.subarray(0, 200), "cut.jpg"),
    (e: unknown) => e instanceof ImageDecodeError && /^cut\.jpg could not be decoded as JPEG: .+\.$/.test(e.message),
  );
  await assert.rejects(
    () => readImage("/nonexistent/dir/photo.png"),
    (e: unknown) =>
      e instanceof ImageDecodeError && e.message.startsWith("/nonexistent/dir/photo.png could not be read"),
  );
});
