/**
 * Linear algebra for cross-modal compensation (masquant-algorithm §6): host float64 matrix helpers,
 * Cholesky (plain and damped), symmetric eigendecomposition, triangular solves, and the whitened low-rank
 * factorisation whose large products run on a Backend.
 */
export {
  checkMatrix,
  denseColumns,
  denseIdentity,
  denseMatmul,
  type DenseMatmulOptions,
  denseMaxAbs,
  denseTranspose,
  frobeniusNorm,
  frobeniusNormSquared,
  LinalgError,
  orthonormalColumns,
} from "./dense.ts";
export {
  cholesky,
  type DampedCholesky,
  dampedCholesky,
  type DampedCholeskyOptions,
  NotPositiveDefiniteError,
} from "./cholesky.ts";
export { type SymmetricEigen, symmetricEigen, type SymmetricEigenOptions } from "./eigen.ts";
export { solveLower, solveUpper, type TriangularSolveOptions } from "./triangular.ts";
export {
  effectiveRank,
  type RankRule,
  rankRuleFromSetting,
  resolveRank,
  type WhitenedLowRank,
  whitenedLowRank,
  type WhitenedLowRankOptions,
  type WhiteningSource,
} from "./lowrank.ts";
