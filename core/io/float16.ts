/**
 * Conversions between float32 and the 16- and 8-bit float formats found in checkpoints.
 *
 * - BF16: the top 16 bits of an IEEE binary32. Encoding rounds to nearest, ties to even; every NaN
 *   becomes the quiet NaN 0x7FC0 (model-formats.md §2.1).
 * - F16: IEEE binary16, through Deno's native `Float16Array` (round to nearest, ties to even, with
 *   subnormals and overflow to ±Infinity as IEEE 754 specifies); every NaN becomes 0x7E00.
 * - F8_E5M2 is the top byte of a binary16; F8_E4M3 is the "FN" variant (bias 7, no infinities, NaN =
 *   S.1111.111), as in the OCP 8-bit float specification and PyTorch's `float8_e4m3fn`.
 */

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);
const f16Scratch = new Float16Array(1);
const u16Scratch = new Uint16Array(f16Scratch.buffer);

/** The BF16 bit pattern written for every NaN (a positive quiet NaN). */
export const BF16_NAN = 0x7fc0;

/** Rounds one float32 bit pattern (as an unsigned 32-bit integer) to a BF16 bit pattern. */
function bf16FromBits(bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) return BF16_NAN;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** BF16 bit pattern of `x` (rounded to float32 first, then to BF16 with ties to even). */
export function f32ToBf16Bits(x: number): number {
  f32Scratch[0] = x;
  return bf16FromBits(u32Scratch[0]);
}

/** The float value of a BF16 bit pattern. */
export function bf16BitsToF32(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16;
  return f32Scratch[0];
}

/** The F16 bit pattern written for every NaN (a positive quiet NaN). */
export const F16_NAN = 0x7e00;

/** F16 bit pattern of `x` (round to nearest, ties to even; every NaN becomes {@link F16_NAN}). */
export function f32ToF16Bits(x: number): number {
  if (x !== x) return F16_NAN;
  f16Scratch[0] = x;
  return u16Scratch[0];
}

/** The float value of an F16 bit pattern. */
export function f16BitsToF32(bits: number): number {
  u16Scratch[0] = bits & 0xffff;
  return f16Scratch[0];
}

/** Encodes float32 values as BF16 bit patterns. */
export function encodeBf16(values: ArrayLike<number>): Uint16Array<ArrayBuffer> {
  const n = values.length;
  const out = new Uint16Array(n);
  if (values instanceof Float32Array) {
    const bits = new Uint32Array(values.buffer, values.byteOffset, n);
    for (let i = 0; i < n; i++) out[i] = bf16FromBits(bits[i]);
  } else {
    for (let i = 0; i < n; i++) out[i] = f32ToBf16Bits(values[i]);
  }
  return out;
}

/** Decodes BF16 bit patterns into float32 values. */
export function decodeBf16(bits: Uint16Array): Float32Array<ArrayBuffer> {
  const n = bits.length;
  const out = new Float32Array(n);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < n; i++) outBits[i] = bits[i] << 16;
  return out;
}

/** Encodes float32 values as F16 bit patterns (every NaN becomes {@link F16_NAN}). */
export function encodeF16(values: ArrayLike<number>): Uint16Array<ArrayBuffer> {
  const bits = new Uint16Array(Float16Array.from(values).buffer);
  for (let i = 0; i < bits.length; i++) {
    if ((bits[i] & 0x7c00) === 0x7c00 && (bits[i] & 0x03ff) !== 0) bits[i] = F16_NAN;
  }
  return bits;
}

/** Decodes F16 bit patterns into float32 values. */
export function decodeF16(bits: Uint16Array): Float32Array<ArrayBuffer> {
  const half = new Float16Array(bits.buffer, bits.byteOffset, bits.length);
  return Float32Array.from(half);
}

/** Decodes F8_E5M2 bytes (the top byte of an F16) into float32 values. */
export function decodeF8E5M2(bytes: Uint8Array): Float32Array<ArrayBuffer> {
  const table = new Float32Array(256);
  for (let b = 0; b < 256; b++) table[b] = f16BitsToF32(b << 8);
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = table[bytes[i]];
  return out;
}

/** The float value of one F8_E4M3 (FN variant) byte. */
export function f8E4M3ToF32(byte: number): number {
  const sign = byte & 0x80 ? -1 : 1;
  const exp = (byte >>> 3) & 0xf;
  const man = byte & 0x7;
  if (exp === 0xf && man === 0x7) return NaN;
  if (exp === 0) return sign * man * 2 ** -9;
  return sign * (1 + man / 8) * 2 ** (exp - 7);
}

/** Decodes F8_E4M3 (FN variant) bytes into float32 values. */
export function decodeF8E4M3(bytes: Uint8Array): Float32Array<ArrayBuffer> {
  const table = new Float32Array(256);
  for (let b = 0; b < 256; b++) table[b] = f8E4M3ToF32(b);
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = table[bytes[i]];
  return out;
}
