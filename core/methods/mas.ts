/**
 * MAS — modality-aware smoothing (masquant-algorithm §2–§4, paper-notes §3): one smoothing vector per
 * modality for q, k, v, o, gate and up (down_proj is quantized but not smoothed), initialised by the
 * SmoothQuant formula from each modality's statistics, then learned per decoder layer with AdamW on the
 * modality-balanced L1 loss
 *
 *   L = (Σ_text |Δ| + w_v·Σ_vision |Δ| + w_a·Σ_audio |Δ|) / (T·H),   Δ = layer_q(x_q) − layer_fp(x_fp),
 *
 * where x_q is the layer's input on the quantized chain and the target is the float chain's output
 * (§4.1). Before every forward, entries with |s| < 1e-2 become sign(s)·1e-2 (§2.4). Gradients reach s
 * through both x/s and W·diag(s), with straight-through rounding (§4.5).
 *
 * Differences from the reference code, on purpose (see the README): parameters and Adam state are float32
 * (the reference keeps them in bfloat16 with no master copy); the activation division uses s, not
 * s + 1e-5, in training as in inference; the weight maximum of the SmoothQuant initialisation is taken over
 * the whole group (q/k/v; gate/up) as in SmoothQuant, not over q_proj / up_proj alone.
 */
import type { Backend, Tensor } from "../tensor/mod.ts";
import { Tape } from "../tensor/autodiff.ts";
import type { DecoderLayerWeights, LayerContext, LinearHook, LinearName } from "../nn/decoder.ts";
import type { Modality } from "../model/modality.ts";
import type { LayerStats } from "../calib/stats.ts";
import { fakeQuantLinear } from "../quant/linear.ts";
import type { QuantScheme } from "../quant/scheme.ts";
import { groupFactors } from "./smoothquant.ts";
import { type LayerQuantState, type ModalityRows, perModality } from "./state.ts";

/** The smoothed linears. */
export const SMOOTHED: readonly LinearName[] = ["q", "k", "v", "o", "gate", "up"];

/** Options of the MAS learning step. */
export interface MasOptions {
  /** SmoothQuant migration strength of the initialisation (default 0.5). */
  alpha: number;
  /** Passes over the calibration samples (default 2). */
  epochs: number;
  /** AdamW learning rate (default 5e-2). */
  lr: number;
  /** AdamW decoupled weight decay (default 0). */
  weightDecay: number;
  /** Loss weight of each modality's tokens (default text 1, vision 0.5, audio 1). */
  lossWeights: Record<Modality, number>;
  /** Truncation threshold of |s| (default 1e-2). */
  truncate: number;
  /** AdamW betas and epsilon (PyTorch defaults). */
  betas?: [number, number];
  eps?: number;
  /** Replace rounding by the identity (gradient checks only). */
  round?: boolean;
}

/** The reference defaults. */
export const MAS_DEFAULTS: MasOptions = {
  alpha: 0.5,
  epochs: 2,
  lr: 5e-2,
  weightDecay: 0,
  lossWeights: { text: 1, vision: 0.5, audio: 1 },
  truncate: 1e-2,
};

/** Smoothing vectors per linear and modality. */
export type Smoothing = Partial<Record<LinearName, Partial<Record<Modality, Float32Array>>>>;

/** SmoothQuant initialisation per modality (k, v share q's; gate shares up's: same group, same factors). */
export async function initSmoothing(
  be: Backend,
  w: DecoderLayerWeights,
  stats: LayerStats,
  modalities: readonly Modality[],
  alpha: number,
): Promise<Smoothing> {
  const out: Smoothing = {};
  for (const m of modalities) {
    const f = await groupFactors(be, w, stats, m, alpha);
    const per: Record<string, Float32Array> = { q: f.qkv, k: f.qkv, v: f.qkv, o: f.o, gate: f.gateUp, up: f.gateUp };
    for (const n of SMOOTHED) (out[n] ??= {})[m] = Float32Array.from(per[n]);
  }
  return out;
}

/** |s| < t → sign(s)·t (zero stays zero), in place. */
export function truncateSmoothing(s: Float32Array, t: number): void {
  for (let i = 0; i < s.length; i++) {
    const v = s[i];
    if (Math.abs(v) < t) s[i] = Math.sign(v) * t;
  }
}

/** The split-mode hook with parameter tensors: per modality Q_a(x/s_m)·Q_w(W·s_m)ᵀ + b; down unsmoothed. */
export function splitTrainHook(
  be: Backend,
  scheme: QuantScheme,
  params: ReadonlyMap<string, Tensor>,
  rows: ModalityRows,
  round = true,
): LinearHook {
  return (name, x, lin) => {
    if (!SMOOTHED.includes(name)) return fakeQuantLinear(be, x, lin, scheme, undefined, { round });
    return perModality(be, x, lin.w.shape[0], rows, (m, xm) => {
      const s = params.get(`${name}:${m}`) ?? params.get(`${name}:text`);
      return fakeQuantLinear(be, xm, lin, scheme, s, { round });
    });
  };
}

/**
 * The modality-balanced L1 loss of §4.4 on the backend `be` (a tape when gradients are needed):
 * Σ_t w(modality of t) Σ_c |y − target| / (T·H).
 */
export function modalityL1(
  be: Backend,
  y: Tensor,
  target: Tensor,
  rowWeights: Tensor,
): Tensor {
  const d = be.binary("sub", y, target);
  const a = be.unary("abs", d);
  const perRow = be.reduce("sum", a, 1);
  const weighted = be.binary("mul", perRow, rowWeights);
  const total = be.reduce("sum", weighted, 0);
  const loss = be.affine(total, 1 / (y.shape[0] * y.shape[1]), 0);
  for (const t of [d, a, perRow, weighted, total]) t.dispose();
  return loss;
}

/** Per-token loss weights from modality ids. */
export function rowWeights(modality: Uint8Array, w: Record<Modality, number>): Float32Array {
  const byId = [w.text, w.vision, w.audio];
  return Float32Array.from(modality, (m) => byId[m]);
}

/** One calibration sample of a layer's training. */
export interface MasSample {
  /** Input on the quantized chain [T, H] (host copy; uploaded per step). */
  input: Float32Array;
  /** Target: the float chain's output [T, H] (host copy). */
  target: Float32Array;
  /** Modality per token. */
  modality: Uint8Array;
  /** Rotary tables and mask. */
  ctx: LayerContext;
  /** Row indices per modality on the backend. */
  rows: ModalityRows;
}

/** Runs a decoder layer on a backend with a hook (the model's forwardLayer with its weights bound). */
export type LayerForward = (be: Backend, x: Tensor, ctx: LayerContext, hook: LinearHook) => Tensor;

/** Progress of the learning step. */
export interface MasProgress {
  epoch: number;
  step: number;
  steps: number;
  loss: number;
}

/** Result of learning one layer. */
export interface MasResult {
  smoothing: Smoothing;
  /** Mean loss of each epoch. */
  epochLoss: number[];
  /** Steps skipped because a gradient was not finite. */
  skipped: number;
}

/**
 * Learns the per-modality smoothing vectors of one layer with AdamW (one step per sample, samples in
 * order, `epochs` passes). Modalities without a vector in `init` fall back to text's.
 */
export async function learnSmoothing(
  be: Backend,
  forward: LayerForward,
  scheme: QuantScheme,
  init: Smoothing,
  samples: readonly MasSample[],
  opts: MasOptions,
  onStep?: (p: MasProgress) => void,
): Promise<MasResult> {
  const [b1, b2] = opts.betas ?? [0.9, 0.999];
  const eps = opts.eps ?? 1e-8;
  const keys: string[] = [];
  const vals = new Map<string, Float32Array>();
  const m1 = new Map<string, Float32Array>();
  const m2 = new Map<string, Float32Array>();
  for (const n of SMOOTHED) {
    for (const [m, v] of Object.entries(init[n] ?? {})) {
      const k = `${n}:${m}`;
      keys.push(k);
      vals.set(k, Float32Array.from(v!));
      m1.set(k, new Float32Array(v!.length));
      m2.set(k, new Float32Array(v!.length));
    }
  }
  const epochLoss: number[] = [];
  let skipped = 0;
  let t = 0;
  const hostW = samples.map((s) => rowWeights(s.modality, opts.lossWeights));
  for (let epoch = 0; epoch < opts.epochs; epoch++) {
    let sum = 0;
    for (let j = 0; j < samples.length; j++) {
      const smp = samples[j];
      const tape = new Tape(be);
      const params = new Map<string, Tensor>();
      for (const k of keys) {
        const v = vals.get(k)!;
        truncateSmoothing(v, opts.truncate);
        params.set(k, tape.param(be.tensor(v, [v.length])));
      }
      const h = smp.input.length / smp.modality.length;
      const x = be.tensor(smp.input, [smp.modality.length, h]);
      const target = be.tensor(smp.target, [smp.modality.length, h]);
      const wrow = be.tensor(hostW[j], [hostW[j].length]);
      let lossValue = NaN;
      let grads: Tensor[] = [];
      try {
        const y = forward(tape, x, smp.ctx, splitTrainHook(tape, scheme, params, smp.rows, opts.round ?? true));
        const loss = modalityL1(tape, y, target, wrow);
        lossValue = (await loss.read())[0];
        grads = tape.grad(loss, keys.map((k) => params.get(k)!));
        y.dispose();
        loss.dispose();
      } finally {
        tape.dispose();
        for (const p of params.values()) p.dispose();
        for (const u of [x, target, wrow]) u.dispose();
      }
      if (!Number.isFinite(lossValue)) {
        for (const g of grads) g.dispose();
        throw new Error(`MAS: the loss became ${lossValue} at epoch ${epoch}, sample ${j}; lower the learning rate`);
      }
      const host: Float32Array[] = [];
      for (const g of grads) {
        host.push(await g.read() as Float32Array);
        g.dispose();
      }
      if (host.some((g) => g.some((v) => !Number.isFinite(v)))) {
        skipped++;
      } else {
        t++;
        const c1 = 1 - b1 ** t;
        const c2 = 1 - b2 ** t;
        keys.forEach((k, i) => {
          const p = vals.get(k)!;
          const a = m1.get(k)!;
          const b = m2.get(k)!;
          const g = host[i];
          for (let e = 0; e < p.length; e++) {
            let v = p[e] * (1 - opts.lr * opts.weightDecay);
            a[e] = b1 * a[e] + (1 - b1) * g[e];
            b[e] = b2 * b[e] + (1 - b2) * g[e] * g[e];
            v -= opts.lr * (a[e] / c1) / (Math.sqrt(b[e] / c2) + eps);
            p[e] = v;
          }
        });
      }
      sum += lossValue;
      onStep?.({ epoch, step: j, steps: samples.length, loss: lossValue });
    }
    epochLoss.push(sum / Math.max(samples.length, 1));
  }
  const smoothing: Smoothing = {};
  for (const k of keys) {
    const [n, m] = k.split(":") as [LinearName, Modality];
    const v = vals.get(k)!;
    truncateSmoothing(v, opts.truncate);
    (smoothing[n] ??= {})[m] = v;
  }
  return { smoothing, epochLoss, skipped };
}

/** A split-mode layer state from learned smoothing. */
export function splitState(scheme: QuantScheme, smoothing: Smoothing): LayerQuantState {
  const linears: LayerQuantState["linears"] = {};
  for (const n of SMOOTHED) if (smoothing[n]) linears[n] = { smooth: { ...smoothing[n] } };
  return { scheme, linears };
}
