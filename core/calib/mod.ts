/** Calibration statistics. */
export * from "./stats.ts";
