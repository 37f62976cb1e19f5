/** Transformer building blocks over the Backend interface. */
export * from "./linear.ts";
export * from "./attention.ts";
export * from "./rope.ts";
export * from "./mlp.ts";
export * from "./decoder.ts";
export * from "./encoder.ts";
