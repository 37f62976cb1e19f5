/**
 * CMC — cross-modal compensation (masquant-algorithm §6, paper-notes §4). The deployed layer keeps one
 * quantized weight per linear, the text-smoothed Ŵ_t = Q_w(W·diag(s_t)). Tokens of another modality m
 * are smoothed by their own s_m, so they would need W·diag(s_m); the difference
 *
 *   ΔW_m = W·diag(s_m) − Ŵ_t            (or Q_w(W·diag(s_m)) − Ŵ_t with target "quantized")
 *
 * is approximated by a low-rank product fitted in the data-weighted norm of that modality's smoothed
 * activations X̃_m = X_m·diag(s_m)⁻¹: with C_m = X̃_mᵀX̃_m (+ damping) = TᵀT, the truncated SVD of
 * T·ΔW_mᵀ = UΣVᵀ gives L_m = T⁻¹·U_r and R_m = Σ_r·V_rᵀ, the best rank-r fit of the output error on the
 * calibration tokens (Eckart–Young). Rank r = max(32, ⌊ratio·min(d_in, d_out)⌋), capped at full rank.
 * Applied to q, k, v, o, gate and up; never to down_proj.
 */
import type { Backend } from "../tensor/mod.ts";
import { type DecoderLayerWeights, groupOf, type LinearName } from "../nn/decoder.ts";
import type { LayerStats } from "../calib/stats.ts";
import { quantWeight } from "../quant/linear.ts";
import { rankRuleFromSetting, whitenedLowRank } from "../linalg/lowrank.ts";
import { SMOOTHED } from "./mas.ts";
import type { LayerQuantState } from "./state.ts";

/** Options of CMC. */
export interface CmcOptions {
  /** Turn CMC on. */
  enabled: boolean;
  /** Rank as a fraction of min(d_in, d_out) when ≤ 1, or an absolute rank when > 1 (floor 32). */
  rankRatio: number;
  /** Whiten with the modality's second moments (false: plain truncated SVD of ΔWᵀ). */
  whiten: boolean;
  /** Compensate towards the float weight W·s_m (default) or its quantized version Q_w(W·s_m). */
  target: "float" | "quantized";
  /** Relative damping of the second-moment matrix before its Cholesky factor (default 1e-6 of the mean diagonal). */
  damping?: number;
}

/** The reference defaults: rank ratio 0.2 (the VL script), whitening on, float target. */
export const CMC_DEFAULTS: CmcOptions = { enabled: true, rankRatio: 0.2, whiten: true, target: "float" };

/** Diagnostics of one fitted pair. */
export interface CmcFit {
  linear: LinearName;
  modality: "vision" | "audio";
  rank: number;
  /** Whitened residual ‖T(ΔWᵀ − L·R)‖²_F as a fraction of ‖T·ΔWᵀ‖²_F. */
  residualFraction: number;
}

/** Fits the CMC factors of every smoothed linear and non-text modality of a layer, in place in `state`. */
export async function computeCmc(
  be: Backend,
  w: DecoderLayerWeights,
  state: LayerQuantState,
  stats: LayerStats,
  opts: CmcOptions,
): Promise<CmcFit[]> {
  const fits: CmcFit[] = [];
  for (const name of SMOOTHED) {
    const st = state.linears[name];
    const sText = st?.smooth?.text;
    if (!st || !sText) continue;
    const W = w.linears[name].w;
    const [dOut, dIn] = W.shape;
    const sT = be.tensor(sText, [dIn]);
    const wt = quantWeight(be, W, state.scheme, sT);
    const wtHost = await wt.read() as Float32Array;
    wt.dispose();
    sT.dispose();
    for (const m of ["vision", "audio"] as const) {
      const sm = st.smooth?.[m];
      if (!sm) continue;
      const raw = stats.gram.get(groupOf(name))?.get(m);
      if (opts.whiten && !raw) continue;
      const smT = be.tensor(sm, [dIn]);
      const tgt = opts.target === "quantized" ? quantWeight(be, W, state.scheme, smT) : be.binary("mul", W, smT);
      const tgtHost = await tgt.read() as Float32Array;
      tgt.dispose();
      smT.dispose();
      const delta = new Float64Array(dOut * dIn);
      for (let i = 0; i < delta.length; i++) delta[i] = tgtHost[i] - wtHost[i];
      let second: Float64Array | undefined;
      if (opts.whiten) {
        // Second moments of the smoothed activations: diag(1/s)·C·diag(1/s).
        second = new Float64Array(dIn * dIn);
        for (let a = 0; a < dIn; a++) {
          for (let b = 0; b < dIn; b++) second[a * dIn + b] = raw![a * dIn + b] / (sm[a] * sm[b]);
        }
      }
      const r = await whitenedLowRank(be, {
        deltaW: delta,
        inFeatures: dIn,
        outFeatures: dOut,
        whitening: second ? { secondMoment: second } : "identity",
        rank: rankRuleFromSetting(opts.rankRatio),
        relativeDamping: opts.damping,
        name: `${name}_proj, ${m}`,
      });
      (st.cmc ??= {})[m] = { L: Float32Array.from(r.left), R: Float32Array.from(r.right), rank: r.rank, dIn, dOut };
      fits.push({
        linear: name,
        modality: m,
        rank: r.rank,
        residualFraction: r.whitenedNormSquared > 0 ? r.residual / r.whitenedNormSquared : 0,
      });
    }
  }
  return fits;
}
