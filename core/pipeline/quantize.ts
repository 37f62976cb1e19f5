/**
 * The block-wise driver (DESIGN §3). One decoder layer is resident at a time; two chains of hidden
 * states are carried from layer to layer on the host: the float chain (float layers on float inputs:
 * the targets) and the quantized chain (quantized layers on the quantized chain's inputs).
 *
 * For layer i:
 *   a. load the weights; run the float chain and collect the layer's per-modality statistics from the
 *      float chain's inputs (and second moments for CMC);
 *   b. decide the layer's quantization: nothing (RTN), SmoothQuant factors, or MAS: per-modality
 *      SmoothQuant initialisation, learned with AdamW on the quantized chain against the float targets,
 *      then the CMC factors;
 *   c. hand the result to `onLayer` (the exporter writes a per-layer checkpoint there);
 *   d. propagate the quantized chain through the finished layer and free it.
 * Memory does not grow with depth: only the two chains (host) and one layer (backend) are held.
 */
import type { Backend, Tensor } from "../tensor/mod.ts";
import type { DecoderLayerWeights, LayerContext } from "../nn/decoder.ts";
import { floatLinear } from "../nn/decoder.ts";
import type { MultimodalModel, PreparedInput } from "../model/adapter.ts";
import { countModalities, MODALITIES, type Modality } from "../model/modality.ts";
import { LayerStats, NonFiniteError, type SampleRows, sampleRows } from "../calib/stats.ts";
import type { QuantScheme } from "../quant/scheme.ts";
import { type ForwardMode, type LayerQuantState, LayerRuntime, quantHook } from "../methods/state.ts";
import { foldedWeights, smoothQuantLayer } from "../methods/smoothquant.ts";
import { initSmoothing, learnSmoothing, type MasOptions, type MasSample, splitState } from "../methods/mas.ts";
import { type CmcOptions, computeCmc } from "../methods/cmc.ts";

/** Quantization methods. */
export type MethodName = "rtn" | "smoothquant" | "masquant";

/** Options of a quantization run. */
export interface RunOptions {
  method: MethodName;
  scheme: QuantScheme;
  /** SmoothQuant α (SmoothQuant and the MAS initialisation). */
  alpha: number;
  /** MAS learning options (masquant). */
  mas: MasOptions;
  /** Cross-modal compensation (masquant; off when absent or disabled). */
  cmc?: CmcOptions;
  /** Forward that propagates the quantized chain (default: merged for rtn/smoothquant, split for masquant). */
  chain?: ForwardMode;
  /** Modalities that get their own smoothing (masquant; default: those of the model present in calibration). */
  modalities?: readonly Modality[];
  /** Progress events. */
  onProgress?: (e: PipelineEvent) => void;
  /** Called with each finished layer before the chain moves on (e.g. to write a per-layer checkpoint). */
  onLayer?: (r: LayerResult) => Promise<void>;
  /**
   * Return every layer's state (default true). False drops each state once `onLayer` has had it (the
   * caller keeps its own checkpoints), so memory does not grow with the number of layers.
   */
  keepStates?: boolean;
}

/** What the run reports while it works. */
export type PipelineEvent =
  | { kind: "layer-start"; layer: number; layers: number }
  | {
    kind: "mas-step";
    layer: number;
    layers: number;
    epoch: number;
    epochs: number;
    step: number;
    steps: number;
    loss: number;
  }
  | { kind: "layer-done"; layer: number; layers: number; seconds: number; loss?: number[] };

/** One finished layer. */
export interface LayerResult {
  layer: number;
  state: LayerQuantState;
  /** The float weights (still loaded; valid during the onLayer call only). */
  weights: DecoderLayerWeights;
  /** MAS mean loss per epoch. */
  epochLoss?: number[];
  /** Seconds spent on the layer so far. */
  seconds: number;
}

/** Hidden states of both chains entering a layer (host copies, one per sample). */
export interface ChainState {
  layer: number;
  fp: Float32Array[];
  q: Float32Array[];
}

/** Thrown for settings or data that cannot work, before any layer is processed. */
export class RunConfigError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "RunConfigError";
  }
}

interface SampleCtx {
  ctx: LayerContext;
  rows: SampleRows;
  modality: Uint8Array;
  tokens: number;
}

/** The forward that propagates the quantized chain for these options. */
export function chainModeOf(opts: RunOptions): ForwardMode {
  return opts.chain ?? (opts.method === "masquant" ? "split" : "merged");
}

/** Modalities present in the calibration set. */
export function calibrationModalities(samples: readonly PreparedInput[]): Record<Modality, number> {
  const c = { text: 0, vision: 0, audio: 0 };
  for (const s of samples) {
    const k = countModalities(s.modality);
    for (const m of MODALITIES) c[m] += k[m];
  }
  return c;
}

/** Checks options against the model and the calibration set; returns the modalities to smooth. */
export function validateRun(
  model: MultimodalModel,
  samples: readonly PreparedInput[],
  opts: RunOptions,
): readonly Modality[] {
  if (!samples.length) throw new RunConfigError("the calibration set is empty");
  const counts = calibrationModalities(samples);
  if (counts.text === 0) throw new RunConfigError("the calibration set has no text tokens");
  const mods = opts.modalities ?? model.modalities.filter((m) => counts[m] > 0);
  for (const m of mods) {
    if (!model.modalities.includes(m)) {
      throw new RunConfigError(`the recipe names the ${m} modality, but ${model.family} models have no ${m} input`);
    }
    if (counts[m] === 0) {
      throw new RunConfigError(
        `the recipe needs ${m} tokens, but the calibration set has none; add ${m} samples or drop ${m} from the recipe`,
      );
    }
  }
  if (opts.method === "masquant") {
    if (!(opts.mas.epochs >= 0 && Number.isInteger(opts.mas.epochs))) {
      throw new RunConfigError(`epochs must be a non-negative integer, got ${opts.mas.epochs}`);
    }
    if (!(opts.mas.lr > 0)) throw new RunConfigError(`the learning rate must be positive, got ${opts.mas.lr}`);
  }
  if (!(opts.alpha >= 0 && opts.alpha <= 1)) throw new RunConfigError(`alpha must be in [0, 1], got ${opts.alpha}`);
  if (opts.scheme.weight.groupSize) {
    const ins = [model.shape.hidden, model.shape.heads * model.shape.headDim, model.shape.intermediate];
    for (const d of ins) {
      if (d > opts.scheme.weight.groupSize && d % opts.scheme.weight.groupSize !== 0) {
        throw new RunConfigError(
          `group size ${opts.scheme.weight.groupSize} does not divide the input width ${d} of the model's linears`,
        );
      }
    }
  }
  return mods;
}

/** Checks that a layer's weights are finite. */
async function checkWeights(be: Backend, w: DecoderLayerWeights, layer: number, names: () => Record<string, string>) {
  const entries: [string, Tensor][] = [["inputNorm", w.inputNorm], ["postNorm", w.postNorm]];
  for (const [n, l] of Object.entries(w.linears)) {
    entries.push([n, l.w]);
    if (l.b) entries.push([`${n}.bias`, l.b]);
  }
  for (const [n, t] of entries) {
    const flat = be.reshape(t, [t.size]);
    const m = be.reduce("maxabs", flat, 0);
    const v = (await m.read())[0];
    flat.dispose();
    m.dispose();
    if (!Number.isFinite(v)) {
      throw new NonFiniteError(
        `layer ${layer}: weight ${names()[n] ?? n} contains NaN or infinite values; ` +
          `the checkpoint is damaged: download or convert it again`,
      );
    }
  }
}

/**
 * Runs the block-wise quantization. Returns the per-layer states. `resume` restarts at a layer with the
 * saved chains (states of earlier layers must be supplied by the caller from its checkpoints).
 */
export async function runQuantization(
  model: MultimodalModel,
  samples: readonly PreparedInput[],
  opts: RunOptions,
  resume?: ChainState,
): Promise<{ states: LayerQuantState[]; chain: ChainState }> {
  const be = model.backend;
  const mods = validateRun(model, samples, opts);
  const chainMode = chainModeOf(opts);
  const cmcOn = opts.method === "masquant" && !!opts.cmc?.enabled;
  const gramMods = cmcOn ? mods.filter((m) => m !== "text") : [];
  const L = model.numLayers;
  const ctxs: SampleCtx[] = samples.map((s) => ({
    ctx: s.ctx,
    rows: sampleRows(be, s.modality),
    modality: s.modality,
    tokens: s.modality.length,
  }));
  let fp: Float32Array[];
  let q: Float32Array[];
  let start = 0;
  if (resume) {
    fp = resume.fp;
    q = resume.q;
    start = resume.layer;
  } else {
    fp = [];
    for (const s of samples) fp.push(Float32Array.from(await s.hidden.read()));
    q = fp.map((x) => Float32Array.from(x));
  }
  const states: LayerQuantState[] = [];
  const H = model.shape.hidden;
  try {
    for (let i = start; i < L; i++) {
      const t0 = performance.now();
      opts.onProgress?.({ kind: "layer-start", layer: i, layers: L });
      const w = await model.loadLayer(i);
      try {
        await checkWeights(be, w, i, () => {
          const n = model.layerTensorNames(i);
          const out: Record<string, string> = { inputNorm: n.inputNorm, postNorm: n.postNorm };
          for (const [k, v] of Object.entries(n.linears)) {
            out[k] = v.w;
            if (v.b) out[`${k}.bias`] = v.b;
          }
          return out;
        });
        // a. float chain + statistics
        const stats = new LayerStats(i, gramMods);
        const fpOut: Float32Array[] = [];
        for (let j = 0; j < samples.length; j++) {
          const c = ctxs[j];
          const x = be.tensor(fp[j], [c.tokens, H]);
          const y = model.forwardLayer(w, x, c.ctx, stats.hook(be, c.rows.ids, c.rows.rows, floatLinear(be)));
          stats.countTokens(c.modality);
          await stats.collect();
          fpOut.push(Float32Array.from(await y.read()));
          x.dispose();
          y.dispose();
        }
        // b. the method
        let state: LayerQuantState;
        let epochLoss: number[] | undefined;
        if (opts.method === "rtn") {
          state = { scheme: opts.scheme, linears: {} };
        } else if (opts.method === "smoothquant") {
          state = await smoothQuantLayer(be, w, stats, opts.scheme, opts.alpha);
        } else {
          const init = await initSmoothing(be, w, stats, mods, opts.alpha);
          let smoothing = init;
          if (opts.mas.epochs > 0) {
            const mas: MasSample[] = samples.map((_, j) => ({
              input: q[j],
              target: fpOut[j],
              modality: ctxs[j].modality,
              ctx: ctxs[j].ctx,
              rows: ctxs[j].rows.rows,
            }));
            const r = await learnSmoothing(
              be,
              (b, x, ctx, hook) => model.forwardLayer(w, x, ctx, hook, b),
              opts.scheme,
              init,
              mas,
              opts.mas,
              (p) =>
                opts.onProgress?.({
                  kind: "mas-step",
                  layer: i,
                  layers: L,
                  epoch: p.epoch,
                  epochs: opts.mas.epochs,
                  step: p.step,
                  steps: p.steps,
                  loss: p.loss,
                }),
            );
            smoothing = r.smoothing;
            epochLoss = r.epochLoss;
          }
          state = splitState(opts.scheme, smoothing);
          if (cmcOn) await computeCmc(be, w, state, stats, opts.cmc!);
        }
        // c. hand over
        await opts.onLayer?.({ layer: i, state, weights: w, epochLoss, seconds: (performance.now() - t0) / 1e3 });
        // d. propagate the quantized chain
        const qw = foldedWeights(be, w, state);
        const rt = new LayerRuntime(be, state);
        try {
          for (let j = 0; j < samples.length; j++) {
            const c = ctxs[j];
            const x = be.tensor(q[j], [c.tokens, H]);
            const y = model.forwardLayer(qw, x, c.ctx, quantHook(rt, chainMode, c.rows.rows));
            const host = Float32Array.from(await y.read());
            x.dispose();
            y.dispose();
            for (let e = 0; e < host.length; e++) {
              if (!Number.isFinite(host[e])) {
                throw new NonFiniteError(`layer ${i}: the quantized layer produced NaN or infinite values`);
              }
            }
            q[j] = host;
          }
        } finally {
          rt.dispose();
          disposeWeights(qw);
        }
        fp = fpOut;
        if (opts.keepStates ?? true) states.push(state);
        opts.onProgress?.({
          kind: "layer-done",
          layer: i,
          layers: L,
          seconds: (performance.now() - t0) / 1e3,
          loss: epochLoss,
        });
      } finally {
        disposeWeights(w);
      }
    }
  } finally {
    for (const c of ctxs) c.rows.dispose();
  }
  return { states, chain: { layer: L, fp, q } };
}

/**
 * Recomputes both chains through layers [0, upto) from finished layer states (for resuming a run):
 * the same forwards as the run itself, so the resumed run continues from bit-identical hidden states.
 * `states` is a list, or a function that loads one layer's state when it is needed.
 */
export async function replayChains(
  model: MultimodalModel,
  samples: readonly PreparedInput[],
  states: readonly LayerQuantState[] | ((layer: number) => Promise<LayerQuantState>),
  upto: number,
  chainMode: ForwardMode,
): Promise<ChainState> {
  const stateOf = typeof states === "function" ? states : (i: number) => Promise.resolve(states[i]);
  const be = model.backend;
  const H = model.shape.hidden;
  const fp: Float32Array[] = [];
  for (const s of samples) fp.push(Float32Array.from(await s.hidden.read()));
  const q = fp.map((x) => Float32Array.from(x));
  const rows = samples.map((s) => sampleRows(be, s.modality));
  try {
    for (let i = 0; i < upto; i++) {
      const state = await stateOf(i);
      const w = await model.loadLayer(i);
      const qw = foldedWeights(be, w, state);
      const rt = new LayerRuntime(be, state);
      try {
        for (let j = 0; j < samples.length; j++) {
          const t = samples[j].modality.length;
          const xf = be.tensor(fp[j], [t, H]);
          const yf = model.forwardLayer(w, xf, samples[j].ctx, floatLinear(be));
          fp[j] = Float32Array.from(await yf.read());
          const xq = be.tensor(q[j], [t, H]);
          const yq = model.forwardLayer(qw, xq, samples[j].ctx, quantHook(rt, chainMode, rows[j].rows));
          q[j] = Float32Array.from(await yq.read());
          for (const u of [xf, yf, xq, yq]) u.dispose();
        }
      } finally {
        rt.dispose();
        disposeWeights(qw);
        disposeWeights(w);
      }
    }
  } finally {
    for (const r of rows) r.dispose();
  }
  return { layer: upto, fp, q };
}

/** Disposes a layer's weight tensors. */
export function disposeWeights(w: DecoderLayerWeights): void {
  w.inputNorm.dispose();
  w.postNorm.dispose();
  for (const l of Object.values(w.linears)) {
    l.w.dispose();
    l.b?.dispose();
  }
}
