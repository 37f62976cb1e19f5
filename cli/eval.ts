/**
 * `deno task eval`: compares a float checkpoint with one or more quantized outputs of it, each run as it is
 * deployed (integer kernels on the stored codes, per-modality smoothing, cross-modal compensation), and
 * writes report.json plus a self-contained report.html.
 *
 * - On a calibration-format set (`--calib`): per-layer, per-modality SQNR of the hidden states, the KL
 *   divergence of the next-token distributions and the relative error of the final normed states; the float
 *   and quantized chains run side by side one decoder layer at a time.
 * - On a plain text file (`--text`): perplexity of the float model and of each output over non-overlapping
 *   chunks of `--max-seq-len` tokens.
 * - The per-input-channel activation max-abs by modality at one layer of the float model (the inputs of the
 *   q/k/v and gate/up groups), from the calibration-format set.
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import {
  accumulateEnergy,
  type Backend,
  CalibrationSetError,
  type DecoderLayerWeights,
  disposeWeights,
  emptyEnergy,
  floatLinear,
  floatNll,
  LayerStats,
  type Linear,
  LINEAR_NAMES,
  type LinearName,
  loadCalibrationSet,
  type MasquantConfig,
  MODALITIES,
  type Modality,
  type ModalityEnergy,
  type MultimodalModel,
  openModel,
  type PreparedInput,
  quantHook,
  type QuantizedLayer,
  QuantizedModel,
  readConfigJson,
  sampleRows,
  sqnrDb,
  type TextTokenizer,
  writeTextAtomic,
} from "@masquant/core";
import { type BackendChoice, openBackend } from "./backend.ts";
import { Progress } from "./progress.ts";
import { loadPlugins, registerBuiltinPlugins } from "./plugins.ts";
import { UsageError } from "./quantize.ts";
import { VERSION } from "./version.ts";
import {
  type ActivationProfile,
  type CalibrationResult,
  type CalibrationVariantResult,
  type EvalReport,
  markdownReport,
  type PerplexityEntry,
  type PerplexityResult,
  renderReportHtml,
  type ReportVariant,
} from "./report.ts";

/** Where `--text wikitext2` looks for the WikiText-2 test split (the shared data folder beside the project). */
export const WIKITEXT2_TEST: string = fileURLToPath(
  new URL("../../shared/data/text/wikitext-2-raw/wiki.test.raw", import.meta.url),
);

/** The help text (every option with its default). */
export const EVAL_HELP = `Usage: deno task eval --model FLOAT_DIR --quantized OUT_DIR [--quantized OUT2 ...] [options]

Compares a float checkpoint with quantized outputs of it (written by deno task quantize). Each output runs
in deploy mode, as deployed: integer kernels on its stored weights, activations divided by their
modality's smoothing vector, low-rank cross-modal compensation for vision and audio tokens. Prints
markdown tables and writes report.json and report.html (self-contained, inline SVG plots).

Inputs:
  --model DIR           the float checkpoint the outputs were quantized from                 (required)
  --quantized DIR       a quantized output directory (repeatable)                  (at least one required)
  --calib FILE          calibration-format set (.jsonl conversations, or a text file cut into chunks):
                        per-layer and per-modality SQNR, logit KL, activation ranges by modality
  --text FILE           plain text for perplexity, cut into non-overlapping chunks of --max-seq-len
                        tokens; "wikitext2" reads ../shared/data/text/wikitext-2-raw/wiki.test.raw
                        (at least one of --calib and --text is required)
  --samples N           calibration samples, and text chunks, used at most                (default: 32)
  --max-seq-len N       tokens per text chunk                                            (default: 512)
  --layer L             layer of the activation-range plots               (default: the middle layer)

Output and runtime:
  --report DIR          where report.json and report.html are written               (default: ./report)
  --backend KIND        auto | webgpu | cpu                                            (default: auto)
  --plugin MODULE       import an adapter plugin (repeatable; the module registers its adapter)

  --help                this text
`;

const OPTIONS = {
  model: { type: "string" },
  quantized: { type: "string", multiple: true },
  calib: { type: "string" },
  text: { type: "string" },
  samples: { type: "string" },
  "max-seq-len": { type: "string" },
  layer: { type: "string" },
  report: { type: "string" },
  backend: { type: "string" },
  plugin: { type: "string", multiple: true },
  help: { type: "boolean" },
} as const;

/** Parsed command line of `eval`. */
export interface EvalArgs {
  model?: string;
  quantized: string[];
  calib?: string;
  text?: string;
  samples: number;
  maxSeqLength: number;
  /** Layer of the activation-range plots (undefined: the middle layer). */
  layer?: number;
  report: string;
  backend: BackendChoice;
  plugins: string[];
  help: boolean;
}

function integerFlag(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isInteger(n) || n < min) {
    throw new UsageError(`--${name} must be an integer ≥ ${min}, got "${v}"`);
  }
  return n;
}

/** Parses the command line of `eval` (no file is read). */
export function parseEvalArgs(argv: string[]): EvalArgs {
  let values: Record<string, unknown>;
  try {
    values = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError(`${(e as Error).message.replace(/\. To specify.*$/, "")}; see --help`);
  }
  const v = values as Record<string, string | boolean | string[] | undefined>;
  const backend = (v.backend as string | undefined) ?? "auto";
  if (!["auto", "webgpu", "cpu"].includes(backend)) {
    throw new UsageError(`--backend must be auto, webgpu or cpu, got "${backend}"`);
  }
  return {
    model: v.model as string | undefined,
    quantized: (v.quantized as string[] | undefined) ?? [],
    calib: v.calib as string | undefined,
    text: v.text as string | undefined,
    samples: integerFlag("samples", v.samples as string | undefined, 1) ?? 32,
    maxSeqLength: integerFlag("max-seq-len", v["max-seq-len"] as string | undefined, 2) ?? 512,
    layer: integerFlag("layer", v.layer as string | undefined, 0),
    report: ((v.report as string | undefined) ?? "report").replace(/(.)\/+$/, "$1"),
    backend: backend as BackendChoice,
    plugins: (v.plugin as string[] | undefined) ?? [],
    help: !!v.help,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Inputs

async function statKind(path: string): Promise<"dir" | "file" | undefined> {
  try {
    const s = await Deno.stat(path);
    return s.isDirectory ? "dir" : "file";
  } catch {
    return undefined;
  }
}

async function requireDir(flag: string, dir: string): Promise<void> {
  const kind = await statKind(dir);
  if (kind === undefined) throw new UsageError(`${flag} ${dir}: directory not found`);
  if (kind !== "dir") throw new UsageError(`${flag} ${dir}: not a directory (pass a checkpoint directory)`);
  if ((await statKind(`${dir}/config.json`)) !== "file") {
    throw new UsageError(`${flag} ${dir}: config.json is missing, so this is not a Hugging Face checkpoint directory`);
  }
}

function architectureOf(config: Record<string, unknown>): string {
  const a = config.architectures;
  const names = Array.isArray(a) ? a.filter((x) => typeof x === "string").join(", ") : "";
  const type = typeof config.model_type === "string" ? config.model_type : "";
  return names && type ? `${names} (${type})` : names || type || "unknown";
}

/** Reads a quantized output's masquant_config.json and checks that its architecture is the float model's. */
async function describeQuantized(dir: string, model: MultimodalModel, modelDir: string): Promise<ReportVariant> {
  await requireDir("--quantized", dir);
  if ((await statKind(`${dir}/masquant_config.json`)) !== "file") {
    throw new UsageError(
      `--quantized ${dir}: masquant_config.json is missing, so this is not a masquant output; ` +
        `pass a directory written by deno task quantize`,
    );
  }
  const config = await readConfigJson(dir);
  const qa = architectureOf(config);
  const fa = architectureOf(model.config);
  if (qa !== fa) {
    throw new UsageError(
      `--quantized ${dir}: its config.json describes ${qa}, but the float model ${modelDir} is ${fa}; ` +
        `pass the checkpoint it was quantized from`,
    );
  }
  let q: Partial<MasquantConfig>;
  try {
    q = JSON.parse(await Deno.readTextFile(`${dir}/masquant_config.json`));
  } catch (e) {
    throw new UsageError(`${dir}/masquant_config.json is not valid JSON (${(e as Error).message})`);
  }
  if (typeof q.method !== "string" || typeof q.scheme?.name !== "string") {
    throw new UsageError(`${dir}/masquant_config.json lacks "method" or "scheme.name"; re-export the output`);
  }
  return { label: `${q.method} ${q.scheme.name}`, dir, method: q.method, scheme: q.scheme.name };
}

/** Makes labels unique by appending the directory name where two outputs share method and scheme. */
function uniqueLabels(vs: ReportVariant[]): void {
  const count = new Map<string, number>();
  for (const v of vs) count.set(v.label, (count.get(v.label) ?? 0) + 1);
  for (const v of vs) {
    if (count.get(v.label)! > 1) v.label = `${v.label} (${v.dir.replace(/\/+$/, "").split("/").pop()})`;
  }
}

/** Checks that an opened output has the float model's decoder geometry. */
function checkGeometry(q: QuantizedModel, model: MultimodalModel, dir: string, modelDir: string): void {
  const a = q.shape;
  const b = model.shape;
  const desc = (m: MultimodalModel) =>
    `${m.numLayers} decoder layers of width ${m.shape.hidden} (MLP ${m.shape.intermediate}, vocabulary ${m.vocabSize})`;
  if (
    q.numLayers !== model.numLayers || a.hidden !== b.hidden || a.intermediate !== b.intermediate ||
    a.heads !== b.heads || a.kvHeads !== b.kvHeads || q.vocabSize !== model.vocabSize
  ) {
    throw new UsageError(
      `--quantized ${dir} has ${desc(q)} but the float model ${modelDir} has ${desc(model)}; ` +
        `pass the checkpoint it was quantized from`,
    );
  }
}

/** The text of --text (the WikiText-2 test split for "wikitext2"). */
async function readEvalText(spec: string): Promise<{ file: string; text: string }> {
  let file = spec;
  if (spec === "wikitext2" && (await statKind(spec)) === undefined) {
    if ((await statKind(WIKITEXT2_TEST)) !== "file") {
      throw new UsageError(
        `--text wikitext2: ${WIKITEXT2_TEST} is not present; pass the path of a text file instead`,
      );
    }
    file = WIKITEXT2_TEST;
  }
  try {
    return { file, text: await Deno.readTextFile(file) };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new UsageError(`--text ${file}: file not found`);
    throw new UsageError(`--text ${file}: cannot be read (${(e as Error).message})`);
  }
}

/**
 * The first `needed` token ids of a text (all of them when it has fewer): the text is
 * tokenized as one string (with the tokenizer's own special tokens, e.g. Llama's BOS at the start, as
 * transformers does by default), but only a prefix of it, cut at a line end (else a space) and doubled
 * until it yields `needed` tokens plus a margin; the tokens beyond `needed` that the cut may change are
 * dropped. Tokenizing all of a large file (WikiText-2's test split is 1.3 MB) would take tens of seconds.
 */
export function tokenizePrefix(tokenizer: TextTokenizer, text: string, needed: number): number[] {
  const margin = 16;
  let chars = needed * 8 + 1024;
  for (;;) {
    let cut = chars >= text.length ? text.length : text.indexOf("\n", chars);
    if (cut < 0) cut = text.slice(chars).search(/\s/) + chars;
    if (cut < chars) cut = text.length;
    const ids = tokenizer.encode(text.slice(0, cut + 1));
    if (cut + 1 >= text.length || ids.length >= needed + margin) return ids.slice(0, needed);
    chars *= 2;
  }
}

/**
 * Cuts token ids into non-overlapping chunks of `len` tokens, at most `max`; a last partial chunk is kept
 * only when it is the only one (and has at least two tokens).
 */
export function textChunks(ids: readonly number[], len: number, max: number): number[][] {
  const out: number[][] = [];
  for (let s = 0; s < ids.length && out.length < max; s += len) {
    const chunk = ids.slice(s, s + len);
    if (chunk.length < len && out.length > 0) break;
    if (chunk.length >= 2) out.push(chunk);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// The layer-by-layer comparison

type Energy = ModalityEnergy;

/**
 * Log-sum-exp of row `off..off+n` of x (float64); when `expOut` is given it receives exp(x − max), whose sum
 * is returned as `sum` (so p = expOut / sum).
 */
function logSumExp(x: Float32Array, off: number, n: number, expOut?: Float64Array): { lse: number; sum: number } {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[off + i] > max) max = x[off + i];
  let sum = 0;
  if (expOut) {
    for (let i = 0; i < n; i++) sum += expOut[i] = Math.exp(x[off + i] - max);
  } else {
    for (let i = 0; i < n; i++) sum += Math.exp(x[off + i] - max);
  }
  return { lse: max + Math.log(sum), sum };
}

/**
 * KL(p_f ‖ p_q) of the softmaxes of two logit rows, as Σ p_f·(x_f − x_q) − lse_f + lse_q (Σ p_f = 1), with
 * the log-sum-exps; two exponentials per entry instead of four.
 */
function klRow(f: Float32Array, q: Float32Array, off: number, n: number, buf: Float64Array) {
  const lf = logSumExp(f, off, n, buf);
  const lq = logSumExp(q, off, n);
  let dot = 0;
  for (let i = 0; i < n; i++) dot += buf[i] * (f[off + i] - q[off + i]);
  return { kl: dot / lf.sum - lf.lse + lq.lse, lseF: lf.lse, lseQ: lq.lse };
}

/** The decoder-layer weights the deploy forward of a quantized layer reads (codes stay owned by the model). */
function deployedLayerWeights(layer: QuantizedLayer): DecoderLayerWeights {
  const linears = {} as Record<LinearName, Linear>;
  for (const n of LINEAR_NAMES) {
    const p = layer.packed[n];
    linears[n] = { w: p.w ?? p.q!, b: p.b };
  }
  return { inputNorm: layer.norms.input, postNorm: layer.norms.post, linears };
}

/** Result of {@link compareDeployed}. */
export interface DeployComparison {
  /** sqnr[m][l] in dB (l = numLayers: final norm output); NaN where m has no token. */
  sqnr: Record<Modality, number[]>;
  meanKl: number;
  finalRelError: number;
  /** Mean next-token NLL of the positions whose next token is text, quantized and float (NaN without any). */
  textNll: number;
  floatTextNll: number;
}

/**
 * Runs the float model and a quantized output (deploy mode, its stored codes) side by side on prepared
 * samples, one decoder layer at a time, and measures per-layer per-modality SQNR, final-output error and
 * logit KL. When `stats` is given, the float chain records its per-channel statistics at `stats.layer`.
 * Both chains start from the same layer-0 inputs (the exporter copies embeddings and towers verbatim).
 */
export async function compareDeployed(
  model: MultimodalModel,
  qmodel: QuantizedModel,
  samples: readonly PreparedInput[],
  opts: { stats?: LayerStats; onLayer?: (layer: number, layers: number) => void } = {},
): Promise<DeployComparison> {
  const be: Backend = model.backend;
  const L = model.numLayers;
  const H = model.shape.hidden;
  const rows = samples.map((s) => sampleRows(be, s.modality));
  const fp = samples.map((s) => s.hidden.retain());
  const q = samples.map((s) => s.hidden.retain());
  const energy = Array.from({ length: L + 1 }, emptyEnergy);
  try {
    for (let l = 0; l < L; l++) {
      const w = await model.loadLayer(l);
      try {
        for (let j = 0; j < samples.length; j++) {
          const stats = opts.stats?.layer === l ? opts.stats : undefined;
          const hook = stats?.hook(be, rows[j].ids, rows[j].rows, floatLinear(be));
          const y = model.forwardLayer(w, fp[j], samples[j].ctx, hook);
          fp[j].dispose();
          fp[j] = y;
          if (stats) {
            stats.countTokens(samples[j].modality);
            await stats.collect();
          }
        }
      } finally {
        disposeWeights(w);
      }
      const { layer, rt } = await qmodel.loadQuantizedLayer(l);
      const qw = deployedLayerWeights(layer);
      for (let j = 0; j < samples.length; j++) {
        const y = qmodel.forwardLayer(qw, q[j], samples[j].ctx, quantHook(rt, "deploy", rows[j].rows));
        q[j].dispose();
        q[j] = y;
        accumulateEnergy(
          energy[l],
          await fp[j].read() as Float32Array,
          await y.read() as Float32Array,
          samples[j].modality,
          H,
        );
      }
      opts.onLayer?.(l, L);
    }
    let kl = 0;
    let klCount = 0;
    let nllQ = 0;
    let nllF = 0;
    let nllCount = 0;
    let finNum = 0;
    let finDen = 0;
    for (let j = 0; j < samples.length; j++) {
      const fo = await model.finalNorm(fp[j]);
      const qo = await qmodel.finalNorm(q[j]);
      const fa = await fo.read() as Float32Array;
      const qa = await qo.read() as Float32Array;
      fo.dispose();
      qo.dispose();
      accumulateEnergy(energy[L], fa, qa, samples[j].modality, H);
      for (let i = 0; i < fa.length; i++) {
        finNum += (fa[i] - qa[i]) ** 2;
        finDen += fa[i] ** 2;
      }
      const fl = await model.head(fp[j]);
      const ql = await qmodel.head(q[j]);
      const fL = await fl.read() as Float32Array;
      const qL = await ql.read() as Float32Array;
      fl.dispose();
      ql.dispose();
      const { modality, tokenIds } = samples[j];
      const V = fL.length / modality.length;
      const buf = new Float64Array(V);
      for (let t = 0; t < modality.length; t++) {
        const r = klRow(fL, qL, t * V, V, buf);
        kl += r.kl;
        klCount++;
        if (t + 1 < modality.length && modality[t + 1] === 0) {
          nllQ += r.lseQ - qL[t * V + tokenIds[t + 1]];
          nllF += r.lseF - fL[t * V + tokenIds[t + 1]];
          nllCount++;
        }
      }
    }
    const sqnr = { text: [] as number[], vision: [] as number[], audio: [] as number[] };
    for (const e of energy) for (const m of MODALITIES) sqnr[m].push(sqnrDb(e[m].sig, e[m].noise));
    return {
      sqnr,
      meanKl: kl / Math.max(klCount, 1),
      finalRelError: Math.sqrt(finNum / Math.max(finDen, 1e-30)),
      textNll: nllCount ? nllQ / nllCount : NaN,
      floatTextNll: nllCount ? nllF / nllCount : NaN,
    };
  } finally {
    for (const r of rows) r.dispose();
    for (const t of [...fp, ...q]) t.dispose();
  }
}

/** Mean next-token NLL of a model over token chunks (every position but the last of each chunk). */
async function chunkNll(
  m: MultimodalModel,
  chunks: readonly number[][],
  label: string,
  progress: Progress,
): Promise<PerplexityEntry> {
  let sum = 0;
  let n = 0;
  for (let i = 0; i < chunks.length; i++) {
    progress.status(`perplexity · ${label} · chunk ${i + 1}/${chunks.length}`);
    sum += (await floatNll(m, [chunks[i]])) * (chunks[i].length - 1);
    n += chunks[i].length - 1;
  }
  const mean = sum / Math.max(n, 1);
  return { label, mean_nll: mean, perplexity: Math.exp(mean) };
}

function finiteOrNull(v: number): number | null {
  return Number.isFinite(v) ? v : null;
}

// ---------------------------------------------------------------------------------------------------------
// The command

/** Result of {@link evalCommand}: the report and the files written. */
export interface EvalResult {
  report: EvalReport;
  jsonPath: string;
  htmlPath: string;
}

/** Checks what can be checked without opening a model: required flags, directories, the report path. */
async function checkArgs(args: EvalArgs): Promise<void> {
  if (!args.model) throw new UsageError("--model DIR is required: the float checkpoint the outputs came from");
  if (!args.quantized.length) throw new UsageError("--quantized DIR is required (repeat it for several outputs)");
  if (!args.calib && !args.text) {
    throw new UsageError(
      "nothing to evaluate on: pass --calib FILE (per-layer SQNR, KL) and/or --text FILE (perplexity)",
    );
  }
  await requireDir("--model", args.model);
  if ((await statKind(`${args.model}/masquant_config.json`)) === "file") {
    throw new UsageError(`--model ${args.model} is a quantized masquant output; pass the float checkpoint`);
  }
  for (const d of args.quantized) await requireDir("--quantized", d);
  if ((await statKind(args.report)) === "file") {
    throw new UsageError(`--report ${args.report} is a file; pass a directory`);
  }
}

/** Describes every output and checks it against the float model (architecture, then decoder geometry). */
async function checkedOutputs(args: EvalArgs, model: MultimodalModel, backend: Backend): Promise<ReportVariant[]> {
  const variants: ReportVariant[] = [];
  for (const d of args.quantized) {
    variants.push(await describeQuantized(d, model, args.model!));
    const q = await QuantizedModel.open(d, backend, { tokenizer: false });
    try {
      checkGeometry(q, model, d, args.model!);
    } finally {
      q.close();
    }
  }
  uniqueLabels(variants);
  return variants;
}

/** The text chunks of --text. */
async function loadTextChunks(
  model: MultimodalModel,
  args: EvalArgs,
  progress: Progress,
): Promise<{ file: string; chunks: number[][] }> {
  const { file, text } = await readEvalText(args.text!);
  if (!model.tokenizer) throw new UsageError(`--text needs the model's tokenizer, which ${args.model} lacks`);
  progress.status(`tokenizing ${file}`, true);
  const ids = tokenizePrefix(model.tokenizer, text, args.samples * args.maxSeqLength);
  const chunks = textChunks(ids, args.maxSeqLength, args.samples);
  if (!chunks.length) throw new UsageError(`--text ${file}: holds fewer than two tokens of text`);
  return { file, chunks };
}

/** Prepares the samples of --calib (layer-0 inputs) into `out`; returns the token count per modality. */
async function prepareCalibration(
  model: MultimodalModel,
  args: EvalArgs,
  progress: Progress,
  out: PreparedInput[],
): Promise<Record<Modality, number>> {
  const samples = await loadCalibrationSet(args.calib!, {
    maxSamples: args.samples,
    tokenizer: model.tokenizer,
    maxSeqLength: args.maxSeqLength,
  });
  for (let i = 0; i < samples.length; i++) {
    progress.status(`preparing sample ${i + 1}/${samples.length}`);
    try {
      out.push(await model.prepare(samples[i]));
    } catch (e) {
      throw new CalibrationSetError(samples[i].source, undefined, (e as Error).message);
    }
  }
  const tokens: Record<Modality, number> = { text: 0, vision: 0, audio: 0 };
  for (const p of out) for (const m of p.modality) tokens[MODALITIES[m]]++;
  return tokens;
}

/** The activation profile of the stats layer, per modality present. */
function activationProfile(stats: LayerStats, samples: number, hidden: number): ActivationProfile {
  const present = MODALITIES.filter((m) => stats.tokens[m] > 0);
  const pick = (group: "qkv" | "gateUp") => {
    const out: Partial<Record<Modality, number[]>> = {};
    for (const m of present) out[m] = Array.from(stats.stat(group, m, hidden));
    return out;
  };
  return { layer: stats.layer, samples, tokens: { ...stats.tokens }, qkv: pick("qkv"), gate_up: pick("gateUp") };
}

/**
 * Runs an evaluation from parsed arguments and writes report.json and report.html into `args.report`.
 * Every input is checked (directories, architectures, geometry, layer, files) before the first decoder
 * layer runs; the quantized outputs are then evaluated one at a time (one resident).
 */
export async function evalCommand(
  args: EvalArgs,
  io: { backend?: Backend; progress?: Progress } = {},
): Promise<EvalResult> {
  await checkArgs(args);
  const modelDir = args.model!;
  const { backend, description } = io.backend
    ? { backend: io.backend, description: io.backend.name }
    : await openBackend(args.backend);
  const progress = io.progress ?? new Progress(backend);
  registerBuiltinPlugins();
  await loadPlugins(args.plugins);
  const model = await openModel(modelDir, { backend });
  const prepared: PreparedInput[] = [];
  try {
    if (model instanceof QuantizedModel) {
      throw new UsageError(`--model ${modelDir} is a quantized masquant output; pass the float checkpoint`);
    }
    const variants = await checkedOutputs(args, model, backend);
    const L = model.numLayers;
    const statsLayer = args.layer ?? Math.floor(L / 2);
    if (statsLayer >= L) {
      throw new UsageError(`--layer ${statsLayer} is out of range: ${modelDir} has layers 0 to ${L - 1}`);
    }
    progress.log(
      `model ${modelDir}: ${model.family}, ${L} layers, hidden ${model.shape.hidden}; backend ${description}`,
    );
    const text = args.text ? await loadTextChunks(model, args, progress) : undefined;
    const tokens = args.calib ? await prepareCalibration(model, args, progress, prepared) : undefined;
    const present = MODALITIES.filter((m) => (tokens?.[m] ?? 0) > 0);
    const stats = tokens ? new LayerStats(statsLayer) : undefined;
    const calibResults: CalibrationVariantResult[] = [];
    let floatTextNll = NaN;
    const pplResults: PerplexityEntry[] = [];
    for (const [v, info] of variants.entries()) {
      progress.log(`== ${info.label}: ${info.dir}`);
      const qmodel = await QuantizedModel.open(info.dir, backend, { tokenizer: false });
      try {
        if (tokens) {
          const cmp = await compareDeployed(model, qmodel, prepared, {
            stats: v === 0 ? stats : undefined,
            onLayer: (l, n) => progress.status(`${info.label} · layer ${l + 1}/${n}`),
          });
          const sqnr: CalibrationVariantResult["sqnr"] = {};
          for (const m of present) sqnr[m] = cmp.sqnr[m].map(finiteOrNull);
          calibResults.push({
            label: info.label,
            sqnr,
            mean_kl: cmp.meanKl,
            final_rel_error: cmp.finalRelError,
            text_nll: finiteOrNull(cmp.textNll),
          });
          floatTextNll = cmp.floatTextNll;
        }
        if (text) pplResults.push(await chunkNll(qmodel, text.chunks, info.label, progress));
      } finally {
        qmodel.close();
      }
    }
    const calibration: CalibrationResult | null = tokens
      ? {
        file: args.calib!,
        samples: prepared.length,
        layers: L,
        tokens,
        modalities: present,
        float_text_nll: finiteOrNull(floatTextNll),
        variants: calibResults,
      }
      : null;
    const perplexity: PerplexityResult | null = text
      ? {
        file: text.file,
        seq_len: args.maxSeqLength,
        chunks: text.chunks.length,
        tokens: text.chunks.reduce((a, c) => a + c.length - 1, 0),
        float: await chunkNll(model, text.chunks, "float", progress),
        variants: pplResults,
      }
      : null;
    const report: EvalReport = {
      tool: { name: "masquant", version: VERSION },
      model: {
        dir: modelDir,
        family: model.family,
        architecture: architectureOf(model.config),
        layers: L,
        hidden: model.shape.hidden,
      },
      backend: description,
      mode: "deploy",
      quantized: variants,
      calibration,
      perplexity,
      activations: stats ? activationProfile(stats, prepared.length, model.shape.hidden) : null,
    };
    progress.status("writing the report", true);
    await Deno.mkdir(args.report, { recursive: true });
    const jsonPath = `${args.report}/report.json`;
    const htmlPath = `${args.report}/report.html`;
    await writeTextAtomic(jsonPath, JSON.stringify(report, null, 2) + "\n");
    await writeTextAtomic(htmlPath, renderReportHtml(report));
    progress.log(`wrote ${jsonPath} and ${htmlPath}`);
    return { report, jsonPath, htmlPath };
  } finally {
    for (const p of prepared) p.dispose();
    model.close();
  }
}

/** `deno task eval`: parses the command line, runs the evaluation, prints the tables; returns the exit code. */
export async function evalMain(argv: string[]): Promise<number> {
  const args = parseEvalArgs(argv);
  if (args.help) {
    console.log(EVAL_HELP);
    return 0;
  }
  const { report } = await evalCommand(args);
  console.log(markdownReport(report));
  return 0;
}
