/** Quantization methods: per-layer states and forwards, SmoothQuant, MAS. */
export * from "./state.ts";
export * from "./smoothquant.ts";
export * from "./mas.ts";
export * from "./cmc.ts";
