/**
 * @module
 * The WebGPU backend of masquant: device discovery (dawn-node, then Deno's navigator.gpu) and WGSL
 * kernels for every op of the core Backend interface.
 */
export { findGpu, type FindGpuOptions, type GpuContext, type GpuProvider } from "./webgpu/device.ts";
export { openWebGPU, WebGPUBackend, type WebGPUBackendOptions } from "./webgpu/backend.ts";
