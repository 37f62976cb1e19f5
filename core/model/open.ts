/** Opening any checkpoint directory: a Hugging Face model, or a masquant quantized output. */
import type { Backend } from "../tensor/mod.ts";
import type { MultimodalModel, OpenOptions } from "./adapter.ts";
import { openWith } from "./registry.ts";
import { isQuantizedDir, QuantizedModel } from "../pipeline/quantized_model.ts";

/** Opens a model directory with the adapter its config.json selects (quantized outputs included). */
export async function openModel(
  dir: string,
  opts: { backend: Backend } & OpenOptions,
): Promise<MultimodalModel> {
  if (await isQuantizedDir(dir)) return await QuantizedModel.open(dir, opts.backend, opts);
  return await openWith(dir, opts.backend, opts);
}
