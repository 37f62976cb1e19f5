/** The block-wise quantization driver and the quantized checkpoint format. */
export * from "./quantize.ts";
export * from "./export.ts";
export * from "./quantized_model.ts";
