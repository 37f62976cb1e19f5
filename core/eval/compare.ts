/**
 * Evaluation against the float model: per-layer and per-modality SQNR of the hidden states, mean
 * next-token NLL (perplexity) and the KL divergence of the logits.
 *
 * SQNR of modality m at a layer = 10·log10(Σ o² / Σ (o − q)²) over the elements of m's tokens only
 * (o = float model, q = quantized model, both fed the same sample); the last entry is the final
 * RMSNorm output. Energies are summed over all evaluation samples before the ratio.
 */
import type { Tensor } from "../tensor/mod.ts";
import type { MultimodalModel, PreparedInput } from "../model/adapter.ts";
import { MODALITIES, type Modality } from "../model/modality.ts";
import { type SampleRows, sampleRows } from "../calib/stats.ts";
import { type ForwardMode, type LayerQuantState, LayerRuntime, quantHook } from "../methods/state.ts";
import { foldedWeights } from "../methods/smoothquant.ts";
import { disposeWeights } from "../pipeline/quantize.ts";

/** A quantized model to compare: per-layer states and the forward mode. */
export interface Variant {
  /** Label in reports, e.g. "MASQuant (deploy)". */
  label: string;
  mode: ForwardMode;
  /** One state per layer (ignored in "float" mode). */
  states: readonly LayerQuantState[];
}

/** Signal and error energies (and token counts) per modality. */
export type ModalityEnergy = Record<Modality, { sig: number; noise: number; count: number }>;
type Energy = ModalityEnergy;

/** Zero energies for every modality. */
export function emptyEnergy(): ModalityEnergy {
  return {
    text: { sig: 0, noise: 0, count: 0 },
    vision: { sig: 0, noise: 0, count: 0 },
    audio: { sig: 0, noise: 0, count: 0 },
  };
}

/** SQNR in dB (Infinity when the error is exactly zero, NaN without tokens). */
export function sqnrDb(sig: number, noise: number): number {
  if (sig === 0 && noise === 0) return NaN;
  return 10 * Math.log10(sig / noise);
}

/** Results of one variant. */
export interface VariantReport {
  label: string;
  mode: ForwardMode;
  /** sqnr[m][l]: layer l output (l = numLayers is the final norm output); NaN where m has no tokens. */
  sqnr: Record<Modality, number[]>;
  /** Mean next-token NLL of the text-only samples (natural log), when logits were computed. */
  meanNll?: number;
  /** Mean over tokens of KL(float ‖ quantized) of the next-token distributions. */
  meanKl?: number;
  /** Relative Frobenius error of the final (normed) hidden states. */
  finalRelError: number;
}

/** Options of {@link compareVariants}. */
export interface CompareOptions {
  /** Also compute logits: NLL of token sequences and KL against the float model (default false). */
  logits?: boolean;
  /** Progress callback (layer done). */
  onLayer?: (layer: number, layers: number) => void;
}

/** Per-sample state of the chains during the comparison. */
interface Chains {
  rows: SampleRows;
  fp: Tensor;
  q: Tensor[];
}

/** Adds each token's signal energy Σo² and error energy Σ(o − q)² to its modality's sums. */
export function accumulateEnergy(
  e: ModalityEnergy,
  o: Float32Array,
  q: Float32Array,
  modality: Uint8Array,
  h: number,
): void {
  for (let t = 0; t < modality.length; t++) {
    const m = e[MODALITIES[modality[t]]];
    let s = 0;
    let n = 0;
    for (let c = 0; c < h; c++) {
      const v = o[t * h + c];
      const d = v - q[t * h + c];
      s += v * v;
      n += d * d;
    }
    m.sig += s;
    m.noise += n;
    m.count++;
  }
}

function logSoftmaxRow(x: Float32Array, off: number, n: number): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < n; i++) m = Math.max(m, x[off + i]);
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(x[off + i] - m);
  const lse = m + Math.log(s);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = x[off + i] - lse;
  return out;
}

/**
 * Runs the float model and every variant on the samples, layer by layer (one layer resident), and
 * reports per-layer per-modality SQNR, final-output error and, optionally, NLL and KL.
 */
export async function compareVariants(
  model: MultimodalModel,
  samples: readonly PreparedInput[],
  variants: readonly Variant[],
  opts: CompareOptions = {},
): Promise<VariantReport[]> {
  const be = model.backend;
  const L = model.numLayers;
  const H = model.shape.hidden;
  const chains: Chains[] = samples.map((s) => ({
    rows: sampleRows(be, s.modality),
    fp: s.hidden.retain(),
    q: variants.map(() => s.hidden.retain()),
  }));
  const energies = variants.map(() => Array.from({ length: L + 1 }, emptyEnergy));
  try {
    for (let l = 0; l < L; l++) {
      const w = await model.loadLayer(l);
      try {
        for (const c of chains) {
          const y = model.forwardLayer(w, c.fp, samples[chains.indexOf(c)].ctx);
          c.fp.dispose();
          c.fp = y;
        }
        for (let v = 0; v < variants.length; v++) {
          const variant = variants[v];
          const state = variant.states[l];
          const qw = variant.mode === "float" ? undefined : foldedWeights(be, w, state);
          const rt = variant.mode === "float" ? undefined : new LayerRuntime(be, state);
          try {
            for (let j = 0; j < chains.length; j++) {
              const c = chains[j];
              const hook = rt ? quantHook(rt, variant.mode, c.rows.rows) : undefined;
              const y = model.forwardLayer(qw ?? w, c.q[v], samples[j].ctx, hook);
              c.q[v].dispose();
              c.q[v] = y;
              accumulateEnergy(
                energies[v][l],
                await c.fp.read() as Float32Array,
                await y.read() as Float32Array,
                samples[j].modality,
                H,
              );
            }
          } finally {
            rt?.dispose();
            if (qw) disposeWeights(qw);
          }
        }
      } finally {
        disposeWeights(w);
      }
      opts.onLayer?.(l, L);
    }
    const reports: VariantReport[] = [];
    for (let v = 0; v < variants.length; v++) {
      let nll = 0;
      let nllCount = 0;
      let kl = 0;
      let klCount = 0;
      let finNum = 0;
      let finDen = 0;
      for (let j = 0; j < chains.length; j++) {
        const c = chains[j];
        const fo = await model.finalNorm(c.fp);
        const qo = await model.finalNorm(c.q[v]);
        const fa = await fo.read() as Float32Array;
        const qa = await qo.read() as Float32Array;
        accumulateEnergy(energies[v][L], fa, qa, samples[j].modality, H);
        for (let i = 0; i < fa.length; i++) {
          finNum += (fa[i] - qa[i]) ** 2;
          finDen += fa[i] ** 2;
        }
        fo.dispose();
        qo.dispose();
        if (opts.logits) {
          const fl = await model.head(c.fp);
          const ql = await model.head(c.q[v]);
          const fL = await fl.read() as Float32Array;
          const qL = await ql.read() as Float32Array;
          fl.dispose();
          ql.dispose();
          const V = fL.length / samples[j].modality.length;
          const ids = samples[j].tokenIds;
          for (let t = 0; t < ids.length; t++) {
            const lf = logSoftmaxRow(fL, t * V, V);
            const lq = logSoftmaxRow(qL, t * V, V);
            let k = 0;
            for (let i = 0; i < V; i++) k += Math.exp(lf[i]) * (lf[i] - lq[i]);
            kl += k;
            klCount++;
            if (t + 1 < ids.length && samples[j].modality[t + 1] === 0) {
              nll -= lq[ids[t + 1]];
              nllCount++;
            }
          }
        }
      }
      const sqnr = { text: [] as number[], vision: [] as number[], audio: [] as number[] };
      for (let l = 0; l <= L; l++) {
        for (const m of MODALITIES) sqnr[m].push(sqnrDb(energies[v][l][m].sig, energies[v][l][m].noise));
      }
      reports.push({
        label: variants[v].label,
        mode: variants[v].mode,
        sqnr,
        meanNll: opts.logits ? nll / Math.max(nllCount, 1) : undefined,
        meanKl: opts.logits ? kl / Math.max(klCount, 1) : undefined,
        finalRelError: Math.sqrt(finNum / Math.max(finDen, 1e-30)),
      });
    }
    return reports;
  } finally {
    for (const c of chains) {
      c.rows.dispose();
      c.fp.dispose();
      for (const t of c.q) t.dispose();
    }
  }
}

/** Mean next-token NLL of the float model on token sequences (natural log). */
export async function floatNll(model: MultimodalModel, sequences: readonly number[][]): Promise<number> {
  let nll = 0;
  let n = 0;
  for (const ids of sequences) {
    const logits = await model.logits(ids);
    const a = await logits.read() as Float32Array;
    logits.dispose();
    const V = a.length / ids.length;
    for (let t = 0; t + 1 < ids.length; t++) {
      nll -= logSoftmaxRow(a, t * V, V)[ids[t + 1]];
      n++;
    }
  }
  return nll / Math.max(n, 1);
}
