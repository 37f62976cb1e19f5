/** Model plugins: the adapter interface, registry, samples, modalities and the shared decoder LM. */
export * from "./adapter.ts";
export * from "./registry.ts";
export * from "./modality.ts";
export * from "./sample.ts";
export * from "./decoder_lm.ts";
export * from "./open.ts";
