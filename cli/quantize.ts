/**
 * `deno task quantize`: quantize a Hugging Face checkpoint with RTN, SmoothQuant or MASQuant and write a
 * quantized Hugging Face directory. With no arguments it runs the bundled demo.
 */
import { parseArgs } from "node:util";
import {
  type Backend,
  CalibrationSetError,
  chainModeOf,
  type ChainState,
  completedLayers,
  disposeWeights,
  finishExport,
  foldedWeights,
  type LayerQuantState,
  LayerRuntime,
  loadCalibrationSet,
  MODALITIES,
  type Modality,
  type MultimodalModel,
  openModel,
  PARTIAL_DIR,
  type PreparedInput,
  quantHook,
  QuantizedModel,
  readLayerState,
  replayChains,
  type RunOptions,
  runQuantization,
  sampleRows,
  type Tensor,
  validateRun,
  writeLayerCheckpoint,
  writeTextAtomic,
} from "@masquant/core";
import { type BackendChoice, openBackend } from "./backend.ts";
import { Progress } from "./progress.ts";
import { parseRecipe, type Recipe, RECIPE_DEFAULTS, recipeScheme, recipeToObject } from "./recipe.ts";
import { loadPlugins, registerBuiltinPlugins } from "./plugins.ts";
import { VERSION } from "./version.ts";

/** A command-line usage error (one sentence, no stack trace). */
export class UsageError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The help text (every option with its default). */
export const QUANTIZE_HELP = `Usage: deno task quantize [options]

Quantizes a Hugging Face checkpoint (LLaVA-1.5, Qwen2.5-VL, Qwen2.5-Omni thinker, Llama, or a plugin's
family) and writes a quantized Hugging Face directory. Without options it quantizes the bundled synthetic
demo model with RTN, SmoothQuant and MASQuant and prints a per-modality SQNR table.

Inputs and outputs:
  --model DIR           checkpoint directory (config.json, *.safetensors, tokenizer, processor files)
  --recipe FILE.yaml    recipe (see recipes/); flags below override it        (default: built-in MASQuant W4A8)
  --calib FILE          calibration set: .jsonl conversations with image/audio/video parts, or a text
                        file cut into chunks of --max-seq-len tokens                         (required)
  --out DIR             output directory                         (default: <model>-<method>-<scheme>)
  --resume              continue an interrupted run in --out from its last finished layer
  --overwrite           replace an existing --out
  --backend KIND        auto | webgpu | cpu                                            (default: auto)
  --plugin MODULE       import an adapter plugin (repeatable; the module registers its adapter)

Method (override the recipe):
  --method NAME         rtn | smoothquant | masquant                             (default: masquant)
  --bits SCHEME         w4a16 (group 128, asymmetric) | w8a8 | w4a8 | w4a6            (default: w4a8)
  --group-size N        weight group size, 0 = per output channel              (default: the scheme's)
  --alpha A             SmoothQuant migration strength                                  (default: 0.5)
  --epochs N            MAS epochs over the calibration samples                          (default: 2)
  --lr LR               AdamW learning rate of the smoothing vectors                  (default: 0.05)
  --loss-weights W      per-modality loss weights, e.g. text=1,vision=0.5,audio=1
                                                              (default: text=1,vision=0.5,audio=1)
  --chain MODE          forward propagating the quantized chain: split | deploy      (default: split)
  --cmc-rank R          CMC rank: a ratio in (0, 1] or an absolute rank > 1; 0 disables CMC (default: 0.2)
  --whiten, --no-whiten whiten the CMC fit with the modality's second moments            (default: on)
  --cmc-target T        float | quantized: compensate towards W·s_m or Q(W·s_m)        (default: float)

Calibration:
  --samples N           calibration samples                                            (default: 128)
  --seed N              seed (recorded; the run is deterministic)                          (default: 0)
  --max-seq-len N       tokens per chunk of a plain-text calibration file                (default: 512)

  --help                this text
`;

const OPTIONS = {
  model: { type: "string" },
  recipe: { type: "string" },
  calib: { type: "string" },
  out: { type: "string" },
  resume: { type: "boolean" },
  overwrite: { type: "boolean" },
  backend: { type: "string" },
  plugin: { type: "string", multiple: true },
  method: { type: "string" },
  bits: { type: "string" },
  "group-size": { type: "string" },
  alpha: { type: "string" },
  epochs: { type: "string" },
  lr: { type: "string" },
  "loss-weights": { type: "string" },
  chain: { type: "string" },
  "cmc-rank": { type: "string" },
  whiten: { type: "boolean" },
  "no-whiten": { type: "boolean" },
  "cmc-target": { type: "string" },
  samples: { type: "string" },
  seed: { type: "string" },
  "max-seq-len": { type: "string" },
  help: { type: "boolean" },
} as const;

/** Parsed command line of `quantize`. */
export interface QuantizeArgs {
  model?: string;
  recipeFile?: string;
  calib?: string;
  out?: string;
  resume: boolean;
  overwrite: boolean;
  backend: BackendChoice;
  plugins: string[];
  recipe: Recipe;
  help: boolean;
}

function numberFlag(name: string, v: string | undefined, ok: (n: number) => boolean, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || !ok(n)) throw new UsageError(`--${name} must be ${what}, got "${v}"`);
  return n;
}

/** Parses the command line (reads the recipe file when given). */
export async function parseQuantizeArgs(argv: string[]): Promise<QuantizeArgs> {
  let values: Record<string, unknown>;
  try {
    values = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError(`${(e as Error).message.replace(/\. To specify.*$/, "")}; see --help`);
  }
  const v = values as Record<string, string | boolean | string[] | undefined>;
  let recipe: Recipe = structuredClone(RECIPE_DEFAULTS);
  const recipeFile = v.recipe as string | undefined;
  if (recipeFile) {
    let text: string;
    try {
      text = await Deno.readTextFile(recipeFile);
    } catch {
      throw new UsageError(`--recipe ${recipeFile}: file not found`);
    }
    recipe = parseRecipe(text, recipeFile);
  }
  const method = v.method as string | undefined;
  if (method !== undefined) {
    if (!["rtn", "smoothquant", "masquant"].includes(method)) {
      throw new UsageError(`--method must be rtn, smoothquant or masquant, got "${method}"`);
    }
    recipe.method = method as Recipe["method"];
  }
  const bits = (v.bits as string | undefined)?.toLowerCase();
  if (bits !== undefined) {
    if (!["w4a16", "w8a8", "w4a8", "w4a6"].includes(bits)) {
      throw new UsageError(`--bits must be w4a16, w8a8, w4a8 or w4a6, got "${bits}"`);
    }
    recipe.schemeName = bits as Recipe["schemeName"];
  }
  const gs = numberFlag(
    "group-size",
    v["group-size"] as string,
    (n) => Number.isInteger(n) && n >= 0,
    "a non-negative integer",
  );
  if (gs !== undefined) recipe.groupSize = gs;
  recipe.alpha = numberFlag("alpha", v.alpha as string, (n) => n >= 0 && n <= 1, "a number in [0, 1]") ?? recipe.alpha;
  recipe.epochs =
    numberFlag("epochs", v.epochs as string, (n) => Number.isInteger(n) && n >= 0, "a non-negative integer") ??
      recipe.epochs;
  recipe.learningRate = numberFlag("lr", v.lr as string, (n) => n > 0, "a positive number") ?? recipe.learningRate;
  const lw = v["loss-weights"] as string | undefined;
  if (lw !== undefined) {
    for (const part of lw.split(",")) {
      const [k, val] = part.split("=");
      if (!MODALITIES.includes(k as Modality) || val === undefined || !(Number(val) >= 0)) {
        throw new UsageError(`--loss-weights must look like text=1,vision=0.5,audio=1, got "${lw}"`);
      }
      recipe.lossWeights[k as Modality] = Number(val);
    }
  }
  const chain = v.chain as string | undefined;
  if (chain !== undefined) {
    if (chain !== "split" && chain !== "deploy") {
      throw new UsageError(`--chain must be split or deploy, got "${chain}"`);
    }
    recipe.chain = chain;
  }
  const rank = numberFlag(
    "cmc-rank",
    v["cmc-rank"] as string,
    (n) => n >= 0 && (n <= 1 || Number.isInteger(n)),
    "0, a ratio in (0, 1] or an integer",
  );
  if (rank !== undefined) {
    recipe.cmc.enabled = rank > 0;
    if (rank > 0) recipe.cmc.rankRatio = rank;
  }
  if (v.whiten && v["no-whiten"]) throw new UsageError("--whiten and --no-whiten contradict each other");
  if (v.whiten) recipe.cmc.whiten = true;
  if (v["no-whiten"]) recipe.cmc.whiten = false;
  const tgt = v["cmc-target"] as string | undefined;
  if (tgt !== undefined) {
    if (tgt !== "float" && tgt !== "quantized") {
      throw new UsageError(`--cmc-target must be float or quantized, got "${tgt}"`);
    }
    recipe.cmc.target = tgt;
  }
  recipe.numSamples =
    numberFlag("samples", v.samples as string, (n) => Number.isInteger(n) && n >= 1, "a positive integer") ??
      recipe.numSamples;
  recipe.seed = numberFlag("seed", v.seed as string, Number.isInteger, "an integer") ?? recipe.seed;
  recipe.maxSeqLength =
    numberFlag("max-seq-len", v["max-seq-len"] as string, (n) => Number.isInteger(n) && n >= 2, "an integer ≥ 2") ??
      recipe.maxSeqLength;
  const backend = (v.backend as string | undefined) ?? "auto";
  if (!["auto", "webgpu", "cpu"].includes(backend)) {
    throw new UsageError(`--backend must be auto, webgpu or cpu, got "${backend}"`);
  }
  if (v.resume && v.overwrite) throw new UsageError("--resume and --overwrite contradict each other");
  return {
    model: v.model as string | undefined,
    recipeFile,
    calib: v.calib as string | undefined,
    out: v.out as string | undefined,
    resume: !!v.resume,
    overwrite: !!v.overwrite,
    backend: backend as BackendChoice,
    plugins: (v.plugin as string[] | undefined) ?? [],
    recipe,
    help: !!v.help,
  };
}

/** The pipeline options a recipe describes. */
export function runOptionsOf(r: Recipe): RunOptions {
  return {
    method: r.method,
    scheme: recipeScheme(r),
    alpha: r.alpha,
    mas: {
      alpha: r.alpha,
      epochs: r.epochs,
      lr: r.learningRate,
      weightDecay: r.weightDecay,
      lossWeights: r.lossWeights,
      truncate: 1e-2,
    },
    cmc: r.cmc,
    chain: r.method === "masquant" ? r.chain : undefined,
    modalities: r.modalities,
  };
}

async function isNonEmptyDir(p: string): Promise<boolean> {
  try {
    for await (const _ of Deno.readDir(p)) return true;
    return false;
  } catch {
    return false;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Result of {@link quantizeCommand}. */
export interface QuantizeResult {
  out: string;
  states: LayerQuantState[];
  /** Largest relative difference between the reloaded output and the run's deploy-mode outputs. */
  reloadError: number;
  seconds: number;
  peakRssBytes: number;
}

/**
 * Runs a quantization from parsed arguments. Everything that can be checked is checked before anything
 * is written: the recipe, the model directory, the calibration set and its modalities, the output path.
 */
export async function quantizeCommand(
  args: QuantizeArgs,
  io: { progress?: Progress; backend?: Backend } = {},
): Promise<QuantizeResult> {
  if (!args.model) throw new UsageError("--model DIR is required (or run without any option for the demo)");
  if (!args.calib) throw new UsageError("--calib FILE is required: a .jsonl calibration set or a text file");
  const r = args.recipe;
  const scheme = recipeScheme(r);
  const out = (args.out ?? `${args.model.replace(/\/+$/, "")}-${r.method}-${scheme.name}`).replace(/\/+$/, "");
  const partial = `${out}/${PARTIAL_DIR}`;
  if (args.resume) {
    if (!(await exists(partial))) {
      throw new UsageError(
        `--resume: ${out} holds no interrupted run (${PARTIAL_DIR} is missing)${
          await exists(`${out}/config.json`) ? "; it is already complete" : ""
        }`,
      );
    }
  } else if (await isNonEmptyDir(out) && !args.overwrite) {
    throw new UsageError(
      `output directory ${out} already exists; pass --overwrite to replace it or --resume to continue it`,
    );
  }
  const { backend, description } = io.backend
    ? { backend: io.backend, description: io.backend.name }
    : await openBackend(args.backend);
  const progress = io.progress ?? new Progress(backend);
  registerBuiltinPlugins();
  await loadPlugins(args.plugins);
  const model = await openModel(args.model, { backend });
  if (model instanceof QuantizedModel) {
    model.close();
    throw new UsageError(`${args.model} is already a quantized masquant output; pass the original checkpoint`);
  }
  const opts = runOptionsOf(r);
  const prepared: PreparedInput[] = [];
  try {
    progress.log(
      `model ${args.model}: ${model.family}, ${model.numLayers} layers, hidden ${model.shape.hidden}; backend ${description}`,
    );
    const samples = await loadCalibrationSet(args.calib, {
      maxSamples: r.numSamples,
      tokenizer: model.tokenizer,
      maxSeqLength: r.maxSeqLength,
    });
    for (let i = 0; i < samples.length; i++) {
      progress.status(`preparing calibration sample ${i + 1}/${samples.length}`);
      try {
        prepared.push(await model.prepare(samples[i]));
      } catch (e) {
        throw new CalibrationSetError(samples[i].source, undefined, (e as Error).message);
      }
    }
    const mods = validateRun(model, prepared, opts);
    const counts = { text: 0, vision: 0, audio: 0 };
    for (const p of prepared) for (const m of p.modality) counts[MODALITIES[m]]++;
    progress.log(
      `calibration: ${prepared.length} samples, ${counts.text} text / ${counts.vision} vision / ${counts.audio} audio tokens; ` +
        `${r.method} ${scheme.name}${r.method === "masquant" ? ` (modalities ${mods.join(", ")})` : ""}`,
    );
    // Nothing was written so far. From here on the run owns `out`.
    if (!args.resume) {
      if (args.overwrite && await exists(out)) await Deno.remove(out, { recursive: true });
      await Deno.mkdir(partial, { recursive: true });
      await writeTextAtomic(
        `${partial}/recipe.json`,
        JSON.stringify({ recipe: recipeToObject(r), model: args.model, calib: args.calib }, null, 2),
      );
    } else {
      const saved = JSON.parse(await Deno.readTextFile(`${partial}/recipe.json`));
      if (JSON.stringify(saved.recipe) !== JSON.stringify(recipeToObject(r))) {
        throw new UsageError(
          `--resume: the recipe differs from the one ${out} was started with; use the same recipe and flags`,
        );
      }
    }
    const t0 = performance.now();
    const states: LayerQuantState[] = [];
    const layerRecords: Record<string, unknown>[] = [];
    let resume: ChainState | undefined;
    if (args.resume) {
      const done = await completedLayers(out, model.numLayers);
      for (let i = 0; i < done; i++) {
        const { state, record } = await readLayerState(model, out, i);
        states.push(state);
        layerRecords.push(record);
      }
      progress.log(`resuming at layer ${done + 1}/${model.numLayers} (replaying ${done} finished layers)`);
      resume = await replayChains(model, prepared, states, done, chainModeOf(opts));
    }
    const run = await runQuantization(model, prepared, {
      ...opts,
      onProgress: (e) => progress.event(e),
      onLayer: async (res) => {
        const rec = { layer: res.layer, seconds: res.seconds, epoch_loss: res.epochLoss ?? null };
        await writeLayerCheckpoint(backend, model, out, res.layer, res.weights, res.state, rec);
        layerRecords.push(rec);
      },
    }, resume);
    states.push(...run.states);
    const seconds = (performance.now() - t0) / 1e3;
    const peaks = progress.peaks;
    const record = {
      tool: { name: "masquant", version: VERSION, deno: Deno.version.deno, v8: Deno.version.v8 },
      source_model: args.model,
      calibration: { file: args.calib, samples: prepared.length, tokens: counts },
      recipe: recipeToObject(r),
      backend: description,
      timings: { quantize_seconds: seconds, layers: layerRecords },
      memory: { peak_rss_bytes: peaks.rss, peak_backend_bytes: peaks.backend },
    };
    progress.status("writing the output", true);
    await finishExport(model, out, {
      method: r.method,
      scheme,
      details: {
        alpha: r.alpha,
        modalities: mods,
        chain: chainModeOf(opts),
        cmc: r.method === "masquant" ? r.cmc : undefined,
        epochs: r.method === "masquant" ? r.epochs : undefined,
        family: model.family,
      },
    }, record);
    // Verify: the output reloads and reproduces the run's deploy-mode outputs.
    const reloadError = await verifyReload(model, out, states, prepared.slice(0, 2), backend);
    progress.log(
      `wrote ${out} in ${seconds.toFixed(1)} s; reload check: max relative difference ${reloadError.toExponential(2)}`,
    );
    return { out, states, reloadError, seconds, peakRssBytes: peaks.rss };
  } finally {
    for (const p of prepared) p.dispose();
    model.close();
  }
}

/** Runs samples through the in-memory deploy forward and through the reloaded output; returns the largest relative difference. */
export async function verifyReload(
  model: MultimodalModel,
  out: string,
  states: readonly LayerQuantState[],
  samples: readonly PreparedInput[],
  backend: Backend,
): Promise<number> {
  const reloaded = await QuantizedModel.open(out, backend);
  let worst = 0;
  try {
    for (const s of samples) {
      const a = await deployHidden(model, s, states);
      const b = await reloaded.forwardAll(s);
      const av = await a.read();
      const bv = await b.read();
      a.dispose();
      b.dispose();
      let num = 0;
      let den = 0;
      for (let i = 0; i < av.length; i++) {
        num += (av[i] - bv[i]) ** 2;
        den += av[i] ** 2;
      }
      worst = Math.max(worst, Math.sqrt(num / Math.max(den, 1e-30)));
    }
  } finally {
    reloaded.close();
  }
  return worst;
}

/** Deploy-mode forward of one sample through all layers using in-memory states. */
async function deployHidden(
  model: MultimodalModel,
  s: PreparedInput,
  states: readonly LayerQuantState[],
): Promise<Tensor> {
  const be = model.backend;
  const rows = sampleRows(be, s.modality);
  let x = s.hidden.retain();
  try {
    for (let i = 0; i < model.numLayers; i++) {
      const w = await model.loadLayer(i);
      const qw = foldedWeights(be, w, states[i]);
      const rt = new LayerRuntime(be, states[i]);
      const y = model.forwardLayer(qw, x, s.ctx, quantHook(rt, "deploy", rows.rows));
      x.dispose();
      x = y;
      rt.dispose();
      disposeWeights(qw);
      disposeWeights(w);
    }
    return x;
  } finally {
    rows.dispose();
  }
}
