/**
 * `deno task quantize`: quantize a Hugging Face checkpoint with RTN, SmoothQuant or MASQuant and write a
 * quantized Hugging Face directory. With no arguments it runs the bundled demo.
 */
import { parseArgs } from "node:util";
import { basename, dirname, resolve as resolvePath } from "node:path";
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
  NonFiniteError,
  openModel,
  PARTIAL_DIR,
  type PreparedInput,
  quantHook,
  QuantizedModel,
  readLayerRecord,
  readLayerState,
  removePartial,
  replayChains,
  type RunOptions,
  runQuantization,
  type Sample,
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

/** One sentence from a `node:util` parseArgs error (its messages may span several lines). */
function parseErrorSentence(message: string): string {
  const ambiguous = /^Option '(--[\w-]+)' argument is ambiguous/.exec(message);
  if (ambiguous) {
    const flag = ambiguous[1];
    return `${flag} needs a value; for a value that starts with "-", write ${flag}=VALUE`;
  }
  return message.split("\n")[0].replace(/\.\s*$/, "").replace(/\. To specify.*$/, "");
}

/** Parses the command line (reads the recipe file when given). */
export async function parseQuantizeArgs(argv: string[]): Promise<QuantizeArgs> {
  let values: Record<string, unknown>;
  try {
    values = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError(`${parseErrorSentence((e as Error).message)}; see --help`);
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

async function statOf(p: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(p);
  } catch {
    return undefined;
  }
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
  return (await statOf(p)) !== undefined;
}

/** Absolute path with symbolic links resolved as far as the path exists. */
async function canonical(p: string): Promise<string> {
  const abs = resolvePath(p);
  try {
    return await Deno.realPath(abs);
  } catch {
    const parent = dirname(abs);
    return parent === abs ? abs : `${await canonical(parent)}/${basename(abs)}`;
  }
}

function isSameOrInside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith("/") ? dir : `${dir}/`);
}

/** Checks the model, calibration and output paths before anything is opened or written. */
async function checkPaths(args: QuantizeArgs, model: string, calib: string, out: string): Promise<void> {
  const m = await statOf(model);
  if (!m) throw new UsageError(`--model ${model}: the model directory does not exist`);
  if (!m.isDirectory) throw new UsageError(`--model ${model} is not a directory; pass the checkpoint directory`);
  const o = await statOf(out);
  if (o && !o.isDirectory) throw new UsageError(`--out ${out} is a file, not a directory; choose another output path`);
  const outPath = await canonical(out);
  if (isSameOrInside(await canonical(model), outPath)) {
    throw new UsageError(`--out ${out} would contain the model directory ${model}; choose another output directory`);
  }
  if (args.overwrite && isSameOrInside(await canonical(calib), outPath)) {
    throw new UsageError(`--overwrite would delete the calibration set ${calib}, which is inside --out ${out}`);
  }
}

/** What an interrupted run recorded in `.partial/recipe.json`. */
interface SavedRun {
  recipe: Record<string, unknown>;
  model: string;
  calib: string;
}

/** Checks that `out` holds an interrupted run started with this recipe; returns its record (none yet: undefined). */
async function checkResumable(out: string, recipe: Recipe): Promise<SavedRun | undefined> {
  const partial = `${out}/${PARTIAL_DIR}`;
  if (!(await exists(out))) {
    throw new UsageError(
      `--resume: the output directory ${out} does not exist, so there is no interrupted run to continue; ` +
        `run without --resume to start one`,
    );
  }
  if (!(await exists(partial))) {
    throw new UsageError(
      (await exists(`${out}/config.json`))
        ? `--resume: ${out} holds a finished output, not an interrupted run; pass --overwrite instead to redo it`
        : `--resume: ${out} holds no interrupted run (no ${PARTIAL_DIR} directory); pass --overwrite instead to start over`,
    );
  }
  let text: string;
  try {
    text = await Deno.readTextFile(`${partial}/recipe.json`);
  } catch {
    // Killed before it recorded its recipe: no layer was finished (they are written after it).
    if ((await completedLayers(out, 1)) > 0) {
      throw new UsageError(
        `--resume: ${partial}/recipe.json is missing, so the finished layers cannot be trusted; pass --overwrite instead`,
      );
    }
    return undefined;
  }
  let saved: SavedRun;
  try {
    saved = JSON.parse(text) as SavedRun;
  } catch {
    throw new UsageError(`--resume: ${partial}/recipe.json is not valid JSON; pass --overwrite instead to start over`);
  }
  if (JSON.stringify(saved.recipe) !== JSON.stringify(recipeToObject(recipe))) {
    throw new UsageError(
      `--resume: the recipe differs from the one ${out} was started with; use the same recipe and flags`,
    );
  }
  return saved;
}

/** Modalities whose media a calibration sample carries (text is always present). */
function sampleModalities(s: Sample): Set<Modality> {
  const out = new Set<Modality>(["text"]);
  if (s.kind === "chat") {
    for (const m of s.media) out.add(m.kind === "audio" ? "audio" : "vision");
  }
  return out;
}

/** Checks the recipe's modalities against the model and the calibration samples, before they are prepared. */
function checkModalities(args: QuantizeArgs, model: MultimodalModel, samples: readonly Sample[]): void {
  const wanted = args.recipe.modalities;
  if (!wanted || args.recipe.method !== "masquant") return;
  const recipe = args.recipeFile ?? "the recipe";
  const present = new Set<Modality>();
  for (const s of samples) for (const m of sampleModalities(s)) present.add(m);
  for (const m of wanted) {
    if (!model.modalities.includes(m)) {
      throw new UsageError(
        `${recipe}: modalities lists ${m}, but ${model.family} models have no ${m} input; remove it from the list`,
      );
    }
    if (!present.has(m)) {
      const parts = m === "audio" ? "audio" : "image or video";
      throw new CalibrationSetError(
        args.calib!,
        undefined,
        `has no ${m} samples (no ${parts} parts), but ${recipe} lists ${m} in its modalities; ` +
          `add ${m} samples or remove ${m} from the recipe`,
      );
    }
  }
}

/** Result of {@link quantizeCommand}. */
export interface QuantizeResult {
  out: string;
  /** Every layer's state (empty when the command was asked not to keep them). */
  states: LayerQuantState[];
  /** Largest relative difference between the reloaded output and the run's deploy-mode outputs. */
  reloadError: number;
  seconds: number;
  peakRssBytes: number;
}

/** Options of {@link quantizeCommand} beyond the command line. */
export interface QuantizeIo {
  progress?: Progress;
  backend?: Backend;
  /**
   * Keep every layer's state in memory and return it (default true). The command line passes false:
   * states are then read back from the per-layer checkpoints when needed, so memory does not grow with
   * the number of layers.
   */
  keepStates?: boolean;
}

/**
 * Runs a quantization from parsed arguments. Everything that can be checked is checked before anything
 * is written: the recipe, the model directory, the calibration set and its modalities, the output path.
 */
export async function quantizeCommand(args: QuantizeArgs, io: QuantizeIo = {}): Promise<QuantizeResult> {
  if (!args.model) throw new UsageError("--model DIR is required (or run without any option for the demo)");
  if (!args.calib) throw new UsageError("--calib FILE is required: a .jsonl calibration set or a text file");
  const r = args.recipe;
  const keepStates = io.keepStates ?? true;
  const scheme = recipeScheme(r);
  const out = (args.out ?? `${args.model.replace(/\/+$/, "")}-${r.method}-${scheme.name}`).replace(/\/+$/, "");
  const partial = `${out}/${PARTIAL_DIR}`;
  await checkPaths(args, args.model, args.calib, out);
  let saved: SavedRun | undefined;
  if (args.resume) {
    saved = await checkResumable(out, r);
    if (saved) {
      for (
        const [what, was, now] of [["model", saved.model, args.model], ["calibration set", saved.calib, args.calib]]
      ) {
        if (was && (await canonical(was)) !== (await canonical(now))) {
          throw new UsageError(
            `--resume: ${out} was started with the ${what} ${was}, not ${now}; resume with the same inputs`,
          );
        }
      }
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
  let owned = false; // whether this run created `out` (so may remove it again)
  try {
    const samples = await loadCalibrationSet(args.calib, {
      maxSamples: r.numSamples,
      tokenizer: model.tokenizer,
      maxSeqLength: r.maxSeqLength,
    });
    checkModalities(args, model, samples);
    progress.log(
      `model ${args.model}: ${model.family}, ${model.numLayers} layers, hidden ${model.shape.hidden}; backend ${description}`,
    );
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
    // NaN or infinity anywhere in the checkpoint would make a NaN model: look before writing anything.
    const bad = await model.checkpoint.findNonFinite((done, total) =>
      progress.status(
        `checking the weights for NaN/Inf: ${(done / 2 ** 30).toFixed(2)} of ${(total / 2 ** 30).toFixed(2)} GiB`,
      )
    );
    if (bad) {
      throw new NonFiniteError(
        `tensor ${bad.tensor} holds a NaN or infinite value (element ${bad.index}) in ${bad.file}; ` +
          `the checkpoint is damaged: download or convert it again`,
      );
    }
    // Nothing was written so far. From here on the run owns `out`.
    if (!args.resume) {
      if (args.overwrite && await exists(out)) await Deno.remove(out, { recursive: true });
      await Deno.mkdir(partial, { recursive: true });
      owned = true;
    }
    if (!saved) {
      await writeTextAtomic(
        `${partial}/recipe.json`,
        JSON.stringify(
          { recipe: recipeToObject(r), model: await canonical(args.model), calib: await canonical(args.calib) },
          null,
          2,
        ),
      );
    }
    const t0 = performance.now();
    const states: LayerQuantState[] = [];
    const layerRecords: Record<string, unknown>[] = [];
    const loadState = async (i: number) => (await readLayerState(model, out, i)).state;
    let resume: ChainState | undefined;
    if (args.resume) {
      const done = saved ? await completedLayers(out, model.numLayers) : 0;
      for (let i = 0; i < done; i++) {
        if (keepStates) {
          const { state, record } = await readLayerState(model, out, i);
          states.push(state);
          layerRecords.push(record);
        } else {
          layerRecords.push(await readLayerRecord(out, i));
        }
      }
      progress.log(`resuming at layer ${done + 1}/${model.numLayers} (replaying ${done} finished layers)`);
      resume = await replayChains(model, prepared, keepStates ? states : loadState, done, chainModeOf(opts));
    }
    const run = await runQuantization(model, prepared, {
      ...opts,
      keepStates,
      onProgress: (e) => progress.event(e),
      onLayer: async (res) => {
        const rec = { layer: res.layer, seconds: res.seconds, epoch_loss: res.epochLoss ?? null };
        await writeLayerCheckpoint(backend, model, out, res.layer, res.weights, res.state, rec);
        // With --v8-flags=--expose-gc (the deno tasks set it) collect the finished layer's garbage now, so the
        // resident memory stays flat over the layers instead of growing until V8 decides to collect.
        (globalThis as { gc?: () => void }).gc?.();
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
    await finishExport(
      model,
      out,
      {
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
      },
      record,
      { keepPartial: true },
    );
    // Verify: the output reloads and reproduces the run's deploy-mode outputs (the per-layer checkpoints
    // stay until this is done, so a run killed here resumes into a complete output).
    const reloadError = await verifyReload(model, out, keepStates ? states : loadState, prepared.slice(0, 2), backend);
    await removePartial(out);
    progress.log(
      `wrote ${out} in ${seconds.toFixed(1)} s; reload check: max relative difference ${reloadError.toExponential(2)}`,
    );
    return { out, states, reloadError, seconds, peakRssBytes: peaks.rss };
  } catch (e) {
    // NaN or infinity in the weights or activations is a property of the inputs: a rerun stops at the
    // same place, so the finished layers are of no use. Remove what this run started.
    if (e instanceof NonFiniteError) {
      if (owned) await Deno.remove(out, { recursive: true }).catch(() => {});
      throw new NonFiniteError(`${args.model}: ${e.message}${owned ? `; nothing was left in ${out}` : ""}`);
    }
    throw e;
  } finally {
    for (const p of prepared) p.dispose();
    model.close();
  }
}

/**
 * Runs samples through the deploy-mode forward with the run's states (a list, or a loader of one layer's
 * state) and through the reloaded output; returns the largest relative difference.
 */
export async function verifyReload(
  model: MultimodalModel,
  out: string,
  states: readonly LayerQuantState[] | ((layer: number) => Promise<LayerQuantState>),
  samples: readonly PreparedInput[],
  backend: Backend,
): Promise<number> {
  const stateOf = typeof states === "function" ? states : (i: number) => Promise.resolve(states[i]);
  const expected = await deployHidden(model, samples, stateOf);
  let reloaded: QuantizedModel | undefined;
  let worst = 0;
  try {
    reloaded = await QuantizedModel.open(out, backend, { cacheLayers: false, tokenizer: false });
    for (let j = 0; j < samples.length; j++) {
      const b = await reloaded.forwardAll(samples[j]);
      const av = await expected[j].read();
      const bv = await b.read();
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
    for (const t of expected) t.dispose();
    reloaded?.close();
  }
  return worst;
}

/** Deploy-mode forward of samples through all layers, one layer (weights and state) at a time. */
async function deployHidden(
  model: MultimodalModel,
  samples: readonly PreparedInput[],
  stateOf: (layer: number) => Promise<LayerQuantState>,
): Promise<Tensor[]> {
  const be = model.backend;
  const rows = samples.map((s) => sampleRows(be, s.modality));
  const xs = samples.map((s) => s.hidden.retain());
  try {
    for (let i = 0; i < model.numLayers; i++) {
      const state = await stateOf(i);
      const w = await model.loadLayer(i);
      const qw = foldedWeights(be, w, state);
      const rt = new LayerRuntime(be, state);
      try {
        for (let j = 0; j < samples.length; j++) {
          const y = model.forwardLayer(qw, xs[j], samples[j].ctx, quantHook(rt, "deploy", rows[j].rows));
          xs[j].dispose();
          xs[j] = y;
        }
      } finally {
        rt.dispose();
        disposeWeights(qw);
        disposeWeights(w);
      }
    }
    return xs;
  } catch (e) {
    for (const x of xs) x.dispose();
    throw e;
  } finally {
    for (const r of rows) r.dispose();
  }
}
