/**
 * Cholesky factorisation C = L·Lᵀ of symmetric positive definite matrices in float64, and the damped
 * variant used to whiten CMC second-moment matrices (masquant-algorithm §6.2, §9.12).
 */
import { checkMatrix, LinalgError } from "./dense.ts";

/** C is not positive definite: elimination met a pivot that is not > 0. */
export class NotPositiveDefiniteError extends LinalgError {
  /** Creates the error for the failing pivot (row index) and its value. */
  constructor(routine: string, readonly pivot: number, readonly value: number, n: number) {
    super(
      routine,
      `the matrix is not positive definite: pivot ${pivot} of ${n} is ${value} after eliminating the rows ` +
        `above it; use dampedCholesky for second-moment matrices that may be singular`,
    );
    this.name = "NotPositiveDefiniteError";
  }
}

/**
 * The lower-triangular L [n, n] (row-major, zeros above the diagonal) with C = L·Lᵀ. Only the lower
 * triangle of C is read. Throws {@link NotPositiveDefiniteError} naming the first pivot that is not
 * positive (C singular, indefinite, or an all-zero row such as a dead channel).
 */
export function cholesky(c: ArrayLike<number>, n: number): Float64Array {
  checkMatrix("cholesky", "C", c, n, n);
  return factor("cholesky", c, n, 0);
}

/** Options of {@link dampedCholesky}. */
export interface DampedCholeskyOptions {
  /** λ₀ relative to mean(diag C). Default 1e-6. */
  relativeDamping?: number;
  /** Attempts, λ growing ×10 after each failure. Default 10 (the last λ is 10⁹·λ₀). */
  maxTries?: number;
}

/** Result of {@link dampedCholesky}. */
export interface DampedCholesky {
  /** L [n, n], lower triangular, with C + damping·I = L·Lᵀ. */
  lower: Float64Array;
  /** The absolute λ that was added to the diagonal. */
  damping: number;
  /** Number of factorisations attempted (1 when the first λ worked). */
  tries: number;
}

/**
 * Factorises C + λ·I = L·Lᵀ for a symmetric positive semi-definite C [n, n] (a second-moment matrix
 * X̃ᵀX̃, summed over calibration tokens). The rule:
 *
 * - λ₀ = relativeDamping · mean(diag C); when diag C is all zero (no tokens of the modality) λ₀ =
 *   relativeDamping, so the whitening degenerates to a multiple of the identity (a plain SVD).
 * - Try λ₀; on a non-positive pivot multiply λ by 10 and retry, up to `maxTries` attempts.
 *
 * λ is always added (also when C itself is positive definite), so the factor does not depend on how
 * close to singular C happens to be. For a semi-definite C the first λ succeeds unless rounding in C
 * exceeds about λ₀: a modality with fewer tokens than channels (rank-deficient C) or dead channels
 * (all-zero rows and columns) cannot make it fail. It throws a {@link LinalgError} only for invalid
 * input: a non-finite entry, a negative diagonal entry, or a matrix so indefinite that the largest λ
 * still fails.
 */
export function dampedCholesky(c: ArrayLike<number>, n: number, opts: DampedCholeskyOptions = {}): DampedCholesky {
  const routine = "dampedCholesky";
  const rel = opts.relativeDamping ?? 1e-6;
  const maxTries = opts.maxTries ?? 10;
  if (!(rel > 0 && Number.isFinite(rel))) {
    throw new LinalgError(routine, `relativeDamping must be a positive number, got ${rel}`);
  }
  if (!(Number.isInteger(maxTries) && maxTries >= 1)) {
    throw new LinalgError(routine, `maxTries must be an integer ≥ 1, got ${maxTries}`);
  }
  checkMatrix(routine, "C", c, n, n);
  let trace = 0;
  for (let i = 0; i < n; i++) {
    const d = c[i * n + i];
    if (d < 0) {
      throw new LinalgError(
        routine,
        `diagonal entry ${i} of C is negative (${d}), so C is not a second-moment matrix XᵀX`,
      );
    }
    trace += d;
  }
  const mean = n > 0 ? trace / n : 0;
  let damping = mean > 0 ? rel * mean : rel;
  let last: NotPositiveDefiniteError | undefined;
  for (let t = 1; t <= maxTries; t++) {
    try {
      return { lower: factor(routine, c, n, damping), damping, tries: t };
    } catch (e) {
      if (!(e instanceof NotPositiveDefiniteError)) throw e;
      last = e;
      damping *= 10;
    }
  }
  throw new LinalgError(
    routine,
    `C + λ·I is not positive definite even with λ = ${damping / 10} (${maxTries} tries; last failing pivot ` +
      `${last?.pivot} = ${last?.value}); C is far from positive semi-definite`,
  );
}

/**
 * Row-by-row Cholesky–Banachiewicz on C + shift·I: L[i, j] = (C[i, j] − Σ_{k<j} L[i, k]·L[j, k]) / L[j, j].
 * The inner sums run over contiguous row prefixes of L.
 */
function factor(routine: string, c: ArrayLike<number>, n: number, shift: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const oi = i * n;
    for (let j = 0; j <= i; j++) {
      const oj = j * n;
      let s = c[oi + j];
      let t = 0;
      for (; t + 4 <= j; t += 4) {
        s -= l[oi + t] * l[oj + t] + l[oi + t + 1] * l[oj + t + 1] + l[oi + t + 2] * l[oj + t + 2] +
          l[oi + t + 3] * l[oj + t + 3];
      }
      for (; t < j; t++) s -= l[oi + t] * l[oj + t];
      if (i === j) {
        s += shift;
        if (!(s > 0)) throw new NotPositiveDefiniteError(routine, i, s, n);
        l[oi + i] = Math.sqrt(s);
      } else {
        l[oi + j] = s / l[oj + j];
      }
    }
  }
  return l;
}
