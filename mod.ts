/**
 * @module
 * masquant: quantize multimodal LLMs (LLaVA-1.5, Qwen2.5-VL, Qwen2.5-Omni) with MASQuant — modality-aware
 * smoothing plus cross-modal compensation — and the RTN / SmoothQuant baselines, in TypeScript on Deno,
 * with WebGPU kernels and a CPU backend.
 *
 * ```ts
 * import { quantize } from "jsr:@masquant/masquant";
 * await quantize({ model: "llava-1.5-7b-hf", calib: "calib.jsonl", out: "llava-w4a8" });
 * ```
 */
export * from "@masquant/core";
export {
  findGpu,
  type FindGpuOptions,
  type GpuContext,
  openWebGPU,
  WebGPUBackend,
  type WebGPUBackendOptions,
} from "@masquant/kernels";
export { llamaAdapter, LlamaModel } from "@masquant/plugin-llama";
export { llavaAdapter, LlavaModel } from "@masquant/plugin-llava";
export { qwen2_5VlAdapter, Qwen2_5VLModel } from "@masquant/plugin-qwen-vl";
export { qwen2_5OmniAdapter, Qwen2_5OmniModel } from "@masquant/plugin-qwen-omni";
export {
  type BackendChoice,
  loadPlugins,
  openBackend,
  parseRecipe,
  quantize,
  type QuantizeOptions,
  type QuantizeResult,
  type Recipe,
  RECIPE_DEFAULTS,
  registerBuiltinPlugins,
  VERSION,
} from "@masquant/cli";
