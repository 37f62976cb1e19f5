/**
 * @module
 * masquant core: the tensor interface and CPU backend, transformer blocks, checkpoint I/O, quantizers,
 * calibration statistics, the MASQuant methods, linear algebra, the block-wise pipeline and evaluation.
 */
export * from "./tensor/mod.ts";
