/**
 * Triangular solves with matrix right-hand sides (forward and back substitution) in float64. CMC uses
 * them in place of explicit inverses: L_m = T⁻¹·U_r with T = Lᵀ is one solve with Lᵀ.
 */
import { checkMatrix, LinalgError } from "./dense.ts";

/** Options of the triangular solves. */
export interface TriangularSolveOptions {
  /** Solve with the transpose of the given matrix (Lᵀ is upper triangular, Uᵀ lower). Default false. */
  transpose?: boolean;
}

/**
 * X [n, k] with L·X = B (or Lᵀ·X = B when `transpose`) for a lower-triangular L [n, n] (entries above
 * the diagonal are ignored) and B [n, k]. Throws a LinalgError for a zero diagonal entry.
 */
export function solveLower(
  l: ArrayLike<number>,
  b: ArrayLike<number>,
  n: number,
  k: number,
  opts: TriangularSolveOptions = {},
): Float64Array {
  check("solveLower", l, b, n, k);
  return opts.transpose ? backward("solveLower", l, b, n, k, true) : forward("solveLower", l, b, n, k, false);
}

/**
 * X [n, k] with U·X = B (or Uᵀ·X = B when `transpose`) for an upper-triangular U [n, n] (entries below
 * the diagonal are ignored) and B [n, k]. Throws a LinalgError for a zero diagonal entry.
 */
export function solveUpper(
  u: ArrayLike<number>,
  b: ArrayLike<number>,
  n: number,
  k: number,
  opts: TriangularSolveOptions = {},
): Float64Array {
  check("solveUpper", u, b, n, k);
  return opts.transpose ? forward("solveUpper", u, b, n, k, true) : backward("solveUpper", u, b, n, k, false);
}

function check(routine: string, t: ArrayLike<number>, b: ArrayLike<number>, n: number, k: number): void {
  checkMatrix(routine, "the triangular matrix", t, n, n);
  checkMatrix(routine, "the right-hand side", b, n, k);
}

function pivot(routine: string, t: ArrayLike<number>, n: number, i: number): number {
  const d = t[i * n + i];
  if (d === 0) {
    throw new LinalgError(routine, `the triangular matrix is singular: diagonal entry ${i} of ${n} is 0`);
  }
  return d;
}

/**
 * Forward substitution: row i of X is (B[i] − Σ_{j<i} A[i, j]·X[j]) / A[i, i], where A[i, j] is t[i, j]
 * (lower) or t[j, i] (`trans`, the transpose of an upper matrix). Rows of X are updated as whole rows.
 */
function forward(
  routine: string,
  t: ArrayLike<number>,
  b: ArrayLike<number>,
  n: number,
  k: number,
  trans: boolean,
): Float64Array {
  const x = Float64Array.from(b);
  for (let i = 0; i < n; i++) {
    const oi = i * k;
    for (let j = 0; j < i; j++) {
      const a = trans ? t[j * n + i] : t[i * n + j];
      if (a === 0) continue;
      const oj = j * k;
      for (let c = 0; c < k; c++) x[oi + c] -= a * x[oj + c];
    }
    const inv = 1 / pivot(routine, t, n, i);
    for (let c = 0; c < k; c++) x[oi + c] *= inv;
  }
  return x;
}

/**
 * Back substitution: row i of X is (B[i] − Σ_{j>i} A[i, j]·X[j]) / A[i, i], where A[i, j] is t[i, j]
 * (upper) or t[j, i] (`trans`, the transpose of a lower matrix).
 */
function backward(
  routine: string,
  t: ArrayLike<number>,
  b: ArrayLike<number>,
  n: number,
  k: number,
  trans: boolean,
): Float64Array {
  const x = Float64Array.from(b);
  for (let i = n - 1; i >= 0; i--) {
    const oi = i * k;
    for (let j = i + 1; j < n; j++) {
      const a = trans ? t[j * n + i] : t[i * n + j];
      if (a === 0) continue;
      const oj = j * k;
      for (let c = 0; c < k; c++) x[oi + c] -= a * x[oj + c];
    }
    const inv = 1 / pivot(routine, t, n, i);
    for (let c = 0; c < k; c++) x[oi + c] *= inv;
  }
  return x;
}
