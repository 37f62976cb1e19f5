/**
 * @module
 * masquant core: the tensor interface and CPU backend, transformer blocks, checkpoint I/O, model
 * plugins, quantizers, calibration statistics, the MASQuant methods, linear algebra, the block-wise
 * pipeline and evaluation.
 */
export * from "./tensor/mod.ts";
export * from "./nn/mod.ts";
export * from "./io/mod.ts";
export * from "./model/mod.ts";
export * from "./quant/mod.ts";
export * from "./calib/mod.ts";
export * from "./methods/mod.ts";
export { Tape } from "./tensor/autodiff.ts";
export * from "./pipeline/mod.ts";
export * from "./eval/mod.ts";
