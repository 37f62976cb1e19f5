/**
 * SmoothQuant (Xiao et al. 2023; paper-notes §2.1): one factor per input channel shared by the linears
 * that read one input, s_j = max|X_j|^α / max|W_j|^(1−α), with the weight maximum taken over the rows of
 * every linear of the group (q/k/v; gate/up; o alone). Activation and weight maxima are clamped at 1e-5,
 * and so is s (masquant-algorithm §2.1). The q/k/v and gate/up factors fold into the preceding RMSNorm
 * weights; o_proj keeps an explicit division (folding it into v_proj is not exact under GQA, §3.4).
 */
import type { Backend, Tensor } from "../tensor/mod.ts";
import { type DecoderLayerWeights, LINEAR_GROUPS, type LinearName } from "../nn/decoder.ts";
import type { LayerStats, StatKey } from "../calib/stats.ts";
import type { QuantScheme } from "../quant/scheme.ts";
import type { LayerQuantState } from "./state.ts";

/** Smallest activation/weight maximum and smoothing factor. */
export const SMOOTH_MIN = 1e-5;

/** Per-column max |W| over the rows of several weights [out_i, in] → [in]. */
export async function columnMaxAbs(be: Backend, ws: readonly Tensor[]): Promise<Float32Array> {
  let out: Float32Array | undefined;
  for (const w of ws) {
    const t = be.reduce("maxabs", w, 0);
    const v = await t.read() as Float32Array;
    t.dispose();
    if (!out) out = Float32Array.from(v);
    else for (let i = 0; i < v.length; i++) out[i] = Math.max(out[i], v[i]);
  }
  return out!;
}

/** s = clamp(clamp(a, 1e-5)^α / clamp(w, 1e-5)^(1−α), 1e-5) per channel. */
export function smoothingFactors(actMax: ArrayLike<number>, weightMax: ArrayLike<number>, alpha: number): Float32Array {
  if (!(alpha >= 0 && alpha <= 1)) throw new RangeError(`alpha must be in [0, 1], got ${alpha}`);
  if (actMax.length !== weightMax.length) {
    throw new RangeError(`activation (${actMax.length}) and weight (${weightMax.length}) statistics differ in width`);
  }
  const s = new Float32Array(actMax.length);
  for (let j = 0; j < s.length; j++) {
    const a = Math.max(actMax[j], SMOOTH_MIN);
    const w = Math.max(weightMax[j], SMOOTH_MIN);
    s[j] = Math.max(Math.pow(a, alpha) / Math.pow(w, 1 - alpha), SMOOTH_MIN);
  }
  return s;
}

/** SmoothQuant factors of the q/k/v, o and gate/up groups from one statistic key. */
export async function groupFactors(
  be: Backend,
  w: DecoderLayerWeights,
  stats: LayerStats,
  key: StatKey,
  alpha: number,
): Promise<{ qkv: Float32Array; o: Float32Array; gateUp: Float32Array }> {
  const f = async (group: "qkv" | "o" | "gateUp") => {
    const names = LINEAR_GROUPS[group];
    const wmax = await columnMaxAbs(be, names.map((n) => w.linears[n].w));
    return smoothingFactors(stats.stat(group, key, wmax.length), wmax, alpha);
  };
  return { qkv: await f("qkv"), o: await f("o"), gateUp: await f("gateUp") };
}

/** Applies SmoothQuant to a layer (α default 0.5): factors from the all-token statistics. */
export async function smoothQuantLayer(
  be: Backend,
  w: DecoderLayerWeights,
  stats: LayerStats,
  scheme: QuantScheme,
  alpha = 0.5,
): Promise<LayerQuantState> {
  const f = await groupFactors(be, w, stats, "all", alpha);
  return { scheme, linears: { o: { smooth: { all: f.o } } }, fold: { qkv: f.qkv, gateUp: f.gateUp } };
}

/** Divides a norm weight by s and multiplies the columns of the group's weights by s. */
function fold(
  be: Backend,
  w: DecoderLayerWeights,
  s: Float32Array,
  norm: "inputNorm" | "postNorm",
  names: readonly LinearName[],
) {
  const st = be.tensor(s, [s.length]);
  const normW = be.binary("div", w[norm], st);
  const lin: Partial<Record<LinearName, { w: Tensor; b?: Tensor }>> = {};
  for (const n of names) lin[n] = { w: be.binary("mul", w.linears[n].w, st), b: w.linears[n].b?.retain() };
  st.dispose();
  return { normW, lin };
}

/**
 * The layer with SmoothQuant factors folded in (new tensor handles; the caller disposes them), or the
 * original weights retained when the state has no fold.
 */
export function foldedWeights(be: Backend, w: DecoderLayerWeights, state: LayerQuantState): DecoderLayerWeights {
  const retain = (l: { w: Tensor; b?: Tensor }) => ({ w: l.w.retain(), b: l.b?.retain() });
  if (!state.fold) {
    return {
      inputNorm: w.inputNorm.retain(),
      postNorm: w.postNorm.retain(),
      linears: Object.fromEntries(
        Object.entries(w.linears).map(([k, l]) => [k, retain(l)]),
      ) as DecoderLayerWeights["linears"],
    };
  }
  const a = fold(be, w, state.fold.qkv, "inputNorm", LINEAR_GROUPS.qkv);
  const b = fold(be, w, state.fold.gateUp, "postNorm", LINEAR_GROUPS.gateUp);
  return {
    inputNorm: a.normW,
    postNorm: b.normW,
    linears: {
      ...a.lin,
      ...b.lin,
      o: retain(w.linears.o),
      down: retain(w.linears.down),
    } as DecoderLayerWeights["linears"],
  };
}
