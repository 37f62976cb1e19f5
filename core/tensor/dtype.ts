/**
 * Element types of tensors.
 *
 * - `f32`: the compute type everywhere (f16/bf16 checkpoints are widened to it on load).
 * - `f64`: CPU backend only; used for float64 references and gradient checks.
 * - `i32`, `u32`: indices, token ids, integer accumulators.
 * - `i8`: signed 8-bit integers (quantized activations and weights).
 * - `int4`: signed 4-bit integers in [-8, 7], packed eight to a 32-bit word along the last axis
 *   (value + 8 in nibble i of the word, low nibble first — the compressed-tensors packing).
 *   Host arrays of `int4` tensors are unpacked `Int8Array`s.
 */
export type DType = "f32" | "f64" | "i32" | "u32" | "i8" | "int4";

/** Floating-point element types. */
export type FloatDType = "f32" | "f64";

/** Host-side arrays that carry tensor data in and out of a backend. */
export type HostArray = Float32Array | Float64Array | Int32Array | Uint32Array | Int8Array;

/** Every dtype name, for validation. */
export const DTYPES: readonly DType[] = ["f32", "f64", "i32", "u32", "i8", "int4"];

/** True for `f32` and `f64`. */
export function isFloat(d: DType): d is FloatDType {
  return d === "f32" || d === "f64";
}

/** True for the integer types. */
export function isInteger(d: DType): boolean {
  return !isFloat(d);
}

/** Allocates a zeroed host array of the right kind for `n` elements of `dtype`. */
export function hostArray(dtype: DType, n: number): HostArray {
  switch (dtype) {
    case "f32":
      return new Float32Array(n);
    case "f64":
      return new Float64Array(n);
    case "i32":
      return new Int32Array(n);
    case "u32":
      return new Uint32Array(n);
    case "i8":
    case "int4":
      return new Int8Array(n);
  }
}

/** Copies (and converts) arbitrary numbers into a host array of `dtype`; int4 values are range-checked. */
export function toHostArray(data: ArrayLike<number>, dtype: DType): HostArray {
  const out = hostArray(dtype, data.length);
  if (dtype === "int4") {
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (!(v >= -8 && v <= 7) || Math.trunc(v) !== v) {
        throw new RangeError(`int4 tensor: element ${i} is ${v}, outside the integers -8..7`);
      }
      out[i] = v;
    }
    return out;
  }
  (out as Float64Array).set(data as ArrayLike<number>);
  return out;
}

/** The host array kind a dtype reads back as. */
export function hostArrayMatches(a: HostArray, dtype: DType): boolean {
  switch (dtype) {
    case "f32":
      return a instanceof Float32Array;
    case "f64":
      return a instanceof Float64Array;
    case "i32":
      return a instanceof Int32Array;
    case "u32":
      return a instanceof Uint32Array;
    case "i8":
    case "int4":
      return a instanceof Int8Array;
  }
}
