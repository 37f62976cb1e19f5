/** Calibration statistics. */
export * from "./stats.ts";
export * from "./dataset.ts";
