/**
 * What a quantization method decides for one decoder layer, and the three forwards of a quantized layer
 * (DESIGN §3, masquant-algorithm §3.3, §6.4):
 *
 * - merged: one smoothing vector per linear (SmoothQuant; none for RTN): y = Q_a(x/s)·Q_w(W·s)ᵀ + b;
 * - split: one vector per modality, and one quantized weight per modality — the token of modality m
 *   computes Q_a(x/s_m)·Q_w(W·s_m)ᵀ + b (the reference's evaluation mode, three weight copies);
 * - deploy: one unified weight Q_w(W·s_text) for every token, run with integer kernels, plus the low-rank
 *   cross-modal compensation (x/s_m)·L_m·R_m for vision and audio tokens:
 *   y = Q_a(x/s_m)·Q_w(W·s_t)ᵀ + b + [m ≠ text]·(x/s_m)·L_m·R_m.
 */
import { type Backend, type Tensor, untracked } from "../tensor/mod.ts";
import type { LinearHook, LinearName } from "../nn/decoder.ts";
import { type Linear, linear } from "../nn/linear.ts";
import { MODALITIES, type Modality } from "../model/modality.ts";
import { quantAct, quantWeight } from "../quant/linear.ts";
import type { QuantScheme } from "../quant/scheme.ts";

/** A smoothing vector key: one per modality (split), or "all" (merged). */
export type SmoothKey = "all" | Modality;

/** Low-rank compensation factors of one linear for one modality: L [in, r], R [r, out]. */
export interface CmcFactors {
  L: Float32Array;
  R: Float32Array;
  rank: number;
  dIn: number;
  dOut: number;
}

/** Decisions for one linear. */
export interface LinearQuantState {
  /** Smoothing vectors [in]; absent means no smoothing (RTN, or down_proj). */
  smooth?: Partial<Record<SmoothKey, Float32Array>>;
  /** CMC factors per non-text modality. */
  cmc?: Partial<Record<"vision" | "audio", CmcFactors>>;
}

/** Decisions for one layer. */
export interface LayerQuantState {
  scheme: QuantScheme;
  linears: Partial<Record<LinearName, LinearQuantState>>;
  /**
   * SmoothQuant factors folded into the layer: q/k/v columns ×s and input_layernorm ÷s (qkv), gate/up
   * columns ×s and post_attention_layernorm ÷s (gateUp). Apply with `foldedWeights` before the forward.
   */
  fold?: { qkv: Float32Array; gateUp: Float32Array };
}

/** The forward modes of a quantized layer. */
export type ForwardMode = "float" | "merged" | "split" | "deploy";

/** Row indices (i32 tensors) of each modality present in a sample. */
export type ModalityRows = Partial<Record<Modality, Tensor>>;

/** Uploaded per-layer tensors shared by the forwards of many samples (freed with {@link dispose}). */
export class LayerRuntime {
  readonly #cache = new Map<string, Tensor>();
  readonly #packed = new Map<string, { q?: Tensor; scale?: Tensor; w?: Tensor }>();

  constructor(readonly be: Backend, readonly state: LayerQuantState) {}

  /** A smoothing vector on the backend (cached). */
  smooth(name: LinearName, key: SmoothKey): Tensor | undefined {
    const v = this.state.linears[name]?.smooth?.[key];
    if (!v) return undefined;
    const k = `s:${name}:${key}`;
    let t = this.#cache.get(k);
    if (!t) this.#cache.set(k, t = untracked(() => this.be.tensor(v, [v.length])));
    return t;
  }

  /** Q_w(W·s) on the backend (cached; fake-quantized float weights). */
  quantizedWeight(name: LinearName, key: SmoothKey | "none", lin: Linear): Tensor {
    const k = `w:${name}:${key}`;
    let t = this.#cache.get(k);
    if (!t) {
      const s = key === "none" ? undefined : this.smooth(name, key);
      this.#cache.set(k, t = untracked(() => quantWeight(this.be, lin.w, this.state.scheme, s)));
    }
    return t;
  }

  /**
   * The unified deployed weight Q_w(W·s_text): integer codes and per-channel scales when the scheme is
   * symmetric per channel (integer kernels), else the dequantized float weight.
   */
  deployedWeight(name: LinearName, lin: Linear): { q?: Tensor; scale?: Tensor; w?: Tensor } {
    const p = this.#packed.get(name);
    if (p) return p;
    return untracked(() => this.#pack(name, lin));
  }

  #pack(name: LinearName, lin: Linear): { q?: Tensor; scale?: Tensor; w?: Tensor } {
    let p: { q?: Tensor; scale?: Tensor; w?: Tensor };
    const be = this.be;
    const scheme = this.state.scheme;
    const s = this.smooth(name, "text") ?? this.smooth(name, "all");
    const ws = s ? be.binary("mul", lin.w, s) : lin.w.retain();
    if (scheme.weight.symmetric && scheme.weight.groupSize === 0 && scheme.weight.bits <= 8 && scheme.act) {
      const qz = be.quantize(ws, scheme.weight, scheme.weight.bits <= 4);
      const scale = be.reshape(qz.scale, [qz.scale.shape[0]]);
      qz.scale.dispose();
      p = { q: qz.q, scale };
    } else {
      p = { w: be.fakeQuant(ws, scheme.weight) };
    }
    ws.dispose();
    this.#packed.set(name, p);
    return p;
  }

  /** Installs a precomputed deployed weight (e.g. integer codes read from a checkpoint). */
  setDeployed(name: LinearName, p: { q?: Tensor; scale?: Tensor; w?: Tensor }): void {
    this.#packed.set(name, p);
  }

  /** CMC factors on the backend (cached). */
  cmc(name: LinearName, m: "vision" | "audio"): { L: Tensor; R: Tensor } | undefined {
    const f = this.state.linears[name]?.cmc?.[m];
    if (!f) return undefined;
    const kl = `L:${name}:${m}`;
    let L = this.#cache.get(kl);
    if (!L) this.#cache.set(kl, L = untracked(() => this.be.tensor(f.L, [f.dIn, f.rank])));
    const kr = `R:${name}:${m}`;
    let R = this.#cache.get(kr);
    if (!R) this.#cache.set(kr, R = untracked(() => this.be.tensor(f.R, [f.rank, f.dOut])));
    return { L, R };
  }

  /** Frees every cached tensor. */
  dispose(): void {
    for (const t of this.#cache.values()) t.dispose();
    for (const p of this.#packed.values()) for (const t of [p.q, p.scale, p.w]) t?.dispose();
    this.#cache.clear();
    this.#packed.clear();
  }
}

function addBias(be: Backend, y: Tensor, b?: Tensor): Tensor {
  if (!b) return y;
  const out = be.binary("add", y, b);
  y.dispose();
  return out;
}

/** Runs `per(m, xm)` on the rows of each modality and assembles the full output [T, outWidth]. */
export function perModality(
  be: Backend,
  x: Tensor,
  outWidth: number,
  rows: ModalityRows,
  per: (m: Modality, xm: Tensor) => Tensor,
): Tensor {
  const present = MODALITIES.filter((m) => rows[m] && rows[m]!.size > 0);
  if (present.length === 1 && rows[present[0]]!.size === x.shape[0]) return per(present[0], x);
  let y = be.full([x.shape[0], outWidth], 0, x.dtype);
  for (const m of present) {
    const xm = be.gatherRows(x, rows[m]!);
    const ym = per(m, xm);
    const next = be.scatterRows(y, ym, rows[m]!);
    for (const t of [xm, ym, y]) t.dispose();
    y = next;
  }
  return y;
}

/** The smoothing key used for a modality's tokens (falls back to text, then to the merged vector). */
export function smoothKeyFor(st: LinearQuantState | undefined, m: Modality): SmoothKey | undefined {
  if (!st?.smooth) return undefined;
  if (st.smooth[m]) return m;
  if (st.smooth.text) return "text";
  return st.smooth.all ? "all" : undefined;
}

/** The linear hook of a quantized layer in a given mode (weights cached in `rt` across samples). */
export function quantHook(rt: LayerRuntime, mode: ForwardMode, rows: ModalityRows): LinearHook {
  const be = rt.be;
  const scheme = rt.state.scheme;
  if (mode === "float") return (_n, x, lin) => linear(be, x, lin);
  const present = MODALITIES.filter((m) => rows[m] && rows[m]!.size > 0);
  return (name, x, lin) => {
    const st = rt.state.linears[name];
    const out = lin.w.shape[0];
    const keyOf = (m: Modality): SmoothKey | undefined =>
      mode === "merged" ? (st?.smooth?.all ? "all" : undefined) : smoothKeyFor(st, m);
    // One pass over all tokens when every modality uses the same vector and no compensation applies.
    const keys = new Set(present.map(keyOf));
    const needsCmc = mode === "deploy" && present.some((m) => m !== "text" && st?.cmc?.[m as "vision" | "audio"]);
    const run = (m: Modality, xm: Tensor) => mode === "deploy" ? deployed(m, xm) : fakeQuantized(keyOf(m), xm);
    const fakeQuantized = (key: SmoothKey | undefined, xm: Tensor) => {
      const xq = quantAct(be, xm, scheme, key ? rt.smooth(name, key) : undefined);
      const y = be.matmul(xq, rt.quantizedWeight(name, key ?? "none", lin), { transB: true });
      xq.dispose();
      return addBias(be, y, lin.b);
    };
    const deployed = (m: Modality, xm: Tensor) => {
      const dw = rt.deployedWeight(name, lin);
      const key = keyOf(m);
      const s = key ? rt.smooth(name, key) : undefined;
      const xs = s ? be.binary("div", xm, s) : xm.retain();
      let y: Tensor;
      if (dw.q && scheme.act) {
        const qa = be.quantize(xs, scheme.act);
        const as = be.reshape(qa.scale, [qa.scale.shape[0]]);
        y = be.int8Matmul(qa.q, as, dw.q, dw.scale!, lin.b);
        for (const t of [qa.q, qa.scale, as]) t.dispose();
      } else {
        const xq = quantAct(be, xs, scheme);
        y = addBias(be, be.matmul(xq, dw.w!, { transB: true }), lin.b);
        xq.dispose();
      }
      if (m !== "text") {
        const f = rt.cmc(name, m);
        if (f) {
          const a = be.matmul(xs, f.L);
          const c = be.matmul(a, f.R);
          const sum = be.binary("add", y, c);
          for (const t of [a, c, y]) t.dispose();
          y = sum;
        }
      }
      xs.dispose();
      return y;
    };
    if (keys.size <= 1 && !needsCmc) return run(present[0] ?? "text", x);
    return perModality(be, x, out, rows, run);
  };
}
