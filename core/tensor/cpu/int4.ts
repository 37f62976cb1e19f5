/** Packing of int4 values: eight per 32-bit word along the last axis, value + 8 in nibble i. */
import { shapeSize } from "../tensor.ts";

/** Words per row for a last axis of `cols` int4 values. */
export function int4WordsPerRow(cols: number): number {
  return Math.ceil(cols / 8);
}

/** Packs signed values −8..7 (row-major, shape `shape`) into words, rows padded to whole words. */
export function packInt4(values: Int8Array, shape: readonly number[]): Uint32Array {
  const cols = shape.length ? shape[shape.length - 1] : 1;
  const rows = cols === 0 ? 0 : shapeSize(shape) / cols;
  const wpr = int4WordsPerRow(cols);
  const out = new Uint32Array(rows * wpr);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const nib = (values[r * cols + c] + 8) & 15;
      out[r * wpr + (c >> 3)] |= nib << ((c & 7) * 4);
    }
  }
  return out;
}

/** Inverse of {@link packInt4}. */
export function unpackInt4(words: Uint32Array, shape: readonly number[]): Int8Array {
  const cols = shape.length ? shape[shape.length - 1] : 1;
  const rows = cols === 0 ? 0 : shapeSize(shape) / cols;
  const wpr = int4WordsPerRow(cols);
  const out = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      out[r * cols + c] = ((words[r * wpr + (c >> 3)] >>> ((c & 7) * 4)) & 15) - 8;
    }
  }
  return out;
}
