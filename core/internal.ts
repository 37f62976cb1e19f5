/**
 * @module
 * Helpers shared between core and the kernel packages (shape arithmetic, scalar quantizer formulas).
 * Not part of the stable public API.
 */
export * from "./tensor/shape.ts";
export * from "./tensor/quant_math.ts";
export { int4WordsPerRow, packInt4, unpackInt4 } from "./tensor/cpu/int4.ts";
export * from "./tensor/validate.ts";
