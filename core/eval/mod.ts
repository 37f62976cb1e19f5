/** Evaluation against the float model. */
export * from "./compare.ts";
export * from "./generate.ts";
