/** Quantizers: bit settings and fake-quantized linear layers. */
export * from "./scheme.ts";
export * from "./linear.ts";
