/**
 * The CMC factorisation (masquant-algorithm §6.3, paper-notes §4): the best rank-r approximation
 * L_m·R_m of ΔWᵀ in the data-weighted norm ‖T(ΔWᵀ − L·R)‖_F, where TᵀT is the (damped) second-moment
 * matrix of the smoothed modality activations. The O(n³) products run on a Backend; the eigensolver,
 * the Cholesky factor and the triangular solve run on the host in float64.
 */
import type { Backend, Tensor } from "../tensor/mod.ts";
import { type DampedCholesky, dampedCholesky } from "./cholesky.ts";
import { checkMatrix, denseColumns, frobeniusNormSquared, LinalgError, orthonormalColumns } from "./dense.ts";
import { symmetricEigen } from "./eigen.ts";
import { solveLower } from "./triangular.ts";

/**
 * How many singular directions CMC keeps. `ratio` gives ⌊ratio·min(d_in, d_out)⌋, `rank` an absolute
 * count; either is raised to `minRank` (default 32, the reference's floor) and capped at min(d_in, d_out).
 */
export type RankRule =
  | { ratio: number; minRank?: number }
  | { rank: number; minRank?: number };

/** The rank r the rule gives for a d_out × d_in weight: max(minRank, ⌊ratio·k⌋ or rank) capped at k = min(d_in, d_out). */
export function resolveRank(rule: RankRule, inFeatures: number, outFeatures: number): number {
  const k = Math.min(inFeatures, outFeatures);
  const minRank = rule.minRank ?? 32;
  if (!(Number.isInteger(minRank) && minRank >= 1)) {
    throw new LinalgError("resolveRank", `minRank must be an integer ≥ 1, got ${minRank}`);
  }
  let raw: number;
  if ("ratio" in rule) {
    if (!(rule.ratio > 0 && rule.ratio <= 1)) {
      throw new LinalgError("resolveRank", `ratio must be in (0, 1], got ${rule.ratio}; use { rank } for counts`);
    }
    raw = Math.floor(rule.ratio * k);
  } else {
    if (!(Number.isInteger(rule.rank) && rule.rank >= 1)) {
      throw new LinalgError("resolveRank", `rank must be an integer ≥ 1, got ${rule.rank}`);
    }
    raw = rule.rank;
  }
  return Math.min(k, Math.max(minRank, raw));
}

/**
 * The rule meant by the reference's `--rank` value: a value in (0, 1] is a ratio (so 1 is full rank),
 * an integer above 1 an absolute rank; both with the floor of 32. 0 means "no CMC" and is rejected here.
 */
export function rankRuleFromSetting(value: number): RankRule {
  if (value > 0 && value <= 1) return { ratio: value };
  if (Number.isInteger(value) && value > 1) return { rank: value };
  throw new LinalgError(
    "rankRuleFromSetting",
    `CMC rank ${value} is neither a ratio in (0, 1] nor an integer above 1 (0 disables CMC: skip the factorisation)`,
  );
}

/**
 * The whitening T (TᵀT = C + λI): from the second-moment matrix C = X̃ᵀX̃ [d_in, d_in] of the smoothed
 * modality activations, from a factor computed earlier (linears that share an input and smoothing share
 * it), or the identity (no whitening: a plain truncated SVD of ΔWᵀ).
 */
export type WhiteningSource =
  | "identity"
  | { secondMoment: ArrayLike<number> }
  | { factor: Pick<DampedCholesky, "lower" | "damping"> };

/** Inputs of {@link whitenedLowRank}. */
export interface WhitenedLowRankOptions {
  /** ΔW [d_out, d_in] row-major: the modality weight minus the unified quantized weight. */
  deltaW: Float32Array | Float64Array;
  /** d_in. */
  inFeatures: number;
  /** d_out. */
  outFeatures: number;
  /** Where T comes from. */
  whitening: WhiteningSource;
  /** The rank rule. */
  rank: RankRule;
  /** λ₀ / mean(diag C) of the damped Cholesky (default 1e-6); used with `secondMoment`. */
  relativeDamping?: number;
  /** Damping attempts (default 10); used with `secondMoment`. */
  maxDampingTries?: number;
  /** Dtype of the backend products: default f64 where the backend has it, else f32. */
  dtype?: "f32" | "f64";
  /** Names the linear and modality in error messages (e.g. "layers.3.mlp.up_proj, vision"). */
  name?: string;
}

/** The CMC factors and diagnostics. L_m·R_m ≈ ΔWᵀ, so the branch output for activations x̃ is x̃·L_m·R_m. */
export interface WhitenedLowRank {
  /** L_m = T⁻¹·U_r [d_in, r], row-major. */
  left: Float64Array;
  /** R_m = U_rᵀ·M = Σ_r·V_rᵀ [r, d_out], row-major. */
  right: Float64Array;
  /** r. */
  rank: number;
  /** All min(d_in, d_out) singular values of M = T·ΔWᵀ, descending. */
  singularValues: Float64Array;
  /** λ added to the diagonal of C (0 for identity whitening). */
  damping: number;
  /** The whitened residual ‖M − U_rU_rᵀM‖_F² = ‖T(ΔWᵀ − L_m·R_m)‖_F² (equal to Σ_{i>r} σ_i²). */
  residual: number;
  /** ‖M‖_F² (the whitened error without compensation). */
  whitenedNormSquared: number;
}

/**
 * Computes the CMC low-rank factors of ΔWᵀ (masquant-algorithm §6.3):
 *
 * 1. T = Lᵀ from the damped Cholesky C + λI = L·Lᵀ, so TᵀT = C + λI (identity whitening: T = I).
 * 2. M = T·ΔWᵀ [d_in, d_out] on the backend.
 * 3. The top-r singular subspace of M from the eigendecomposition of the smaller Gram matrix:
 *    - d_in ≤ d_out: G = M·Mᵀ [d_in, d_in] = U·Σ²·Uᵀ gives U_r directly;
 *    - d_out < d_in: G = MᵀM [d_out, d_out] = V·Σ²·Vᵀ, then U_r is an orthonormal basis of M·V_r
 *      (Householder QR, columns ≈ M·v_i/σ_i with no division by small σ_i).
 * 4. R_m = U_rᵀ·M on the backend (the optimal right factor for U_r), L_m = T⁻¹·U_r by one triangular solve
 *    with Lᵀ (no explicit inverse).
 *
 * Precision: forming the Gram matrix squares the condition number, so a small σ_i (below about
 * √ε·σ₁) and its singular vector come out inaccurate. That does not harm the factorisation, which only
 * needs a good top-r subspace: if the computed U_r are exact eigenvectors of G + E, Ky Fan's maximum
 * principle bounds the residual by the optimum Σ_{i>r} σ_i² plus 2r·‖E‖₂, and ‖E‖₂ is a small multiple
 * of ε·‖M‖₂² (rounding in the backend product that forms G plus the backward-stable eigensolver).
 * ε = 2⁻⁵² with f64 tensors on the CPU backend, 2⁻²⁴ with f32 on WebGPU; the eigensolver, the Cholesky
 * factor and the triangular solve are float64 in both cases. The residual is measured as
 * ‖M‖_F² − ‖R_m‖_F² (U_r is orthonormal), accurate to about ε·‖M‖_F².
 */
export async function whitenedLowRank(be: Backend, opts: WhitenedLowRankOptions): Promise<WhitenedLowRank> {
  const routine = opts.name ? `whitenedLowRank (${opts.name})` : "whitenedLowRank";
  const dIn = opts.inFeatures;
  const dOut = opts.outFeatures;
  if (!(Number.isInteger(dIn) && Number.isInteger(dOut) && dIn >= 1 && dOut >= 1)) {
    throw new LinalgError(routine, `inFeatures and outFeatures must be integers ≥ 1, got ${dIn} and ${dOut}`);
  }
  checkMatrix(routine, "deltaW [d_out, d_in]", opts.deltaW, dOut, dIn);
  const dtype = opts.dtype ?? (be.supportsF64 ? "f64" : "f32");
  if (dtype === "f64" && !be.supportsF64) {
    throw new LinalgError(routine, `the ${be.name} backend has no f64 tensors; pass dtype "f32"`);
  }
  const rank = resolveRank(opts.rank, dIn, dOut);
  const { lower, damping } = whiteningFactor(routine, opts, dIn);

  const owned: Tensor[] = [];
  const keep = <T extends Tensor>(t: T): T => {
    owned.push(t);
    return t;
  };
  try {
    const dW = keep(be.tensor(opts.deltaW, [dOut, dIn], dtype));
    const m = lower
      ? keep(be.matmul(keep(be.tensor(lower, [dIn, dIn], dtype)), dW, { transA: true, transB: true }))
      : keep(be.transpose(dW, [1, 0]));
    let ur: Float64Array;
    let gram: { values: Float64Array; trace: number };
    if (dIn <= dOut) {
      const g = await readF64(keep(be.matmul(m, m, { transB: true })));
      const eig = symmetricEigen(g, dIn);
      gram = { values: eig.values, trace: trace(g, dIn) };
      ur = denseColumns(eig.vectors, dIn, dIn, 0, rank);
    } else {
      const g = await readF64(keep(be.matmul(m, m, { transA: true })));
      const eig = symmetricEigen(g, dOut);
      gram = { values: eig.values, trace: trace(g, dOut) };
      const vr = keep(be.tensor(denseColumns(eig.vectors, dOut, dOut, 0, rank), [dOut, rank], dtype));
      ur = orthonormalColumns(await readF64(keep(be.matmul(m, vr))), dIn, rank);
    }
    const right = await readF64(keep(be.matmul(keep(be.tensor(ur, [dIn, rank], dtype)), m, { transA: true })));
    const left = lower ? solveLower(lower, ur, dIn, rank, { transpose: true }) : ur;
    const k = Math.min(dIn, dOut);
    const singularValues = new Float64Array(k);
    for (let i = 0; i < k; i++) singularValues[i] = Math.sqrt(Math.max(gram.values[i], 0));
    const whitenedNormSquared = Math.max(gram.trace, 0);
    const residual = Math.max(whitenedNormSquared - frobeniusNormSquared(right), 0);
    return { left, right, rank, singularValues, damping, residual, whitenedNormSquared };
  } finally {
    for (const t of owned) if (!t.disposed) t.dispose();
  }
}

/**
 * The entropy-based effective rank exp(H(p)) with p_i = σ_i/Σσ (0 when all σ are 0). The reference
 * prints it divided by min(d_in, d_out).
 */
export function effectiveRank(singularValues: ArrayLike<number>): number {
  let total = 0;
  for (let i = 0; i < singularValues.length; i++) total += singularValues[i];
  if (!(total > 0)) return 0;
  let h = 0;
  for (let i = 0; i < singularValues.length; i++) {
    const p = singularValues[i] / total;
    if (p > 0) h -= p * Math.log(p);
  }
  return Math.exp(h);
}

function whiteningFactor(
  routine: string,
  opts: WhitenedLowRankOptions,
  dIn: number,
): { lower?: Float64Array; damping: number } {
  const w = opts.whitening;
  if (w === "identity") return { damping: 0 };
  if ("secondMoment" in w) {
    checkMatrix(routine, "the second-moment matrix C [d_in, d_in]", w.secondMoment, dIn, dIn);
    const f = dampedCholesky(w.secondMoment, dIn, {
      relativeDamping: opts.relativeDamping,
      maxTries: opts.maxDampingTries,
    });
    return { lower: f.lower, damping: f.damping };
  }
  checkMatrix(routine, "the whitening factor L [d_in, d_in]", w.factor.lower, dIn, dIn);
  for (let i = 0; i < dIn; i++) {
    if (!(w.factor.lower[i * dIn + i] > 0)) {
      throw new LinalgError(routine, `the whitening factor has a non-positive diagonal entry at ${i}`);
    }
  }
  return { lower: w.factor.lower, damping: w.factor.damping };
}

async function readF64(t: Tensor): Promise<Float64Array> {
  const a = await t.read();
  return a instanceof Float64Array ? a : Float64Array.from(a as ArrayLike<number>);
}

function trace(a: Float64Array, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[i * n + i];
  return s;
}
