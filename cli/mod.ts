/**
 * @module
 * The command-line tools as a library: quantize a checkpoint directory, evaluate a quantized output,
 * recipes, backend choice and plugin loading.
 */
export { type BackendChoice, openBackend } from "./backend.ts";
export { loadPlugins, PluginError, registerBuiltinPlugins } from "./plugins.ts";
export { parseRecipe, type Recipe, RECIPE_DEFAULTS, RecipeError, recipeScheme, recipeToObject } from "./recipe.ts";
export { Progress } from "./progress.ts";
export { EVAL_HELP, evalCommand, type EvalResult, parseEvalArgs } from "./eval.ts";
export { type EvalReport, markdownReport, renderReportHtml } from "./report.ts";
export {
  parseQuantizeArgs,
  QUANTIZE_HELP,
  type QuantizeArgs,
  quantizeCommand,
  type QuantizeResult,
  runOptionsOf,
  UsageError,
} from "./quantize.ts";
export { VERSION } from "./version.ts";

import type { Backend } from "@masquant/core";
import { Progress } from "./progress.ts";
import { quantizeCommand, type QuantizeResult } from "./quantize.ts";
import { type Recipe, RECIPE_DEFAULTS } from "./recipe.ts";
import { type BackendChoice, openBackend } from "./backend.ts";

/** Options of {@link quantize}. */
export interface QuantizeOptions {
  /** Checkpoint directory. */
  model: string;
  /** Calibration set (.jsonl or text). */
  calib: string;
  /** Output directory. */
  out: string;
  /** Recipe fields to change from the defaults (MASQuant W4A8). */
  recipe?: Partial<Recipe>;
  /** A backend, or a choice ("auto" by default). */
  backend?: Backend | BackendChoice;
  /** Replace an existing output / resume an interrupted one. */
  overwrite?: boolean;
  resume?: boolean;
}

/** Quantizes a checkpoint directory into `out` (the library form of `deno task quantize`). */
export async function quantize(opts: QuantizeOptions): Promise<QuantizeResult> {
  const be = typeof opts.backend === "object" ? opts.backend : (await openBackend(opts.backend ?? "auto")).backend;
  const recipe = { ...structuredClone(RECIPE_DEFAULTS), ...opts.recipe } as Recipe;
  return await quantizeCommand({
    model: opts.model,
    calib: opts.calib,
    out: opts.out,
    resume: !!opts.resume,
    overwrite: !!opts.overwrite,
    backend: "auto",
    plugins: [],
    recipe,
    help: false,
  }, { backend: be, progress: new Progress(be) });
}
