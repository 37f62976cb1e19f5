/**
 * core/linalg against independent float64 references written here (naive products, modified Gram–Schmidt,
 * a one-sided Jacobi SVD, matrices with spectra known by construction). Tolerances are stated per test.
 * The CMC factorisation runs on every backend: f64 and f32 tensors on the CPU backend, f32 on WebGPU.
 */
import { assert, assertAlmostEquals, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { type Backend, Rng } from "@masquant/core";
import {
  cholesky,
  dampedCholesky,
  denseColumns,
  denseIdentity,
  denseMatmul,
  denseTranspose,
  effectiveRank,
  frobeniusNorm,
  LinalgError,
  NotPositiveDefiniteError,
  orthonormalColumns,
  rankRuleFromSetting,
  resolveRank,
  solveLower,
  solveUpper,
  symmetricEigen,
  whitenedLowRank,
  type WhitenedLowRankOptions,
} from "../core/linalg/mod.ts";
import { allBackends } from "./backends.ts";

const rng = new Rng(20261128);

// ---- independent references -------------------------------------------------------------------------

/** op(a)·op(b) by the textbook triple loop (a: m×k, b: k×n after the transposes). */
function refMul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number, tA = false, tB = false) {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += (tA ? a[t * m + i] : a[i * k + t]) * (tB ? b[j * k + t] : b[t * n + j]);
      out[i * n + j] = s;
    }
  }
  return out;
}

function refT(a: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
  return t;
}

function sub(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  return Float64Array.from(a, (v, i) => v - b[i]);
}

function sumSq(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return s;
}

function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  return Math.sqrt(sumSq(sub(got, want)) / Math.max(sumSq(want), 1e-300));
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function gaussian(n: number, std = 1): Float64Array {
  return Float64Array.from({ length: n }, () => rng.normal() * std);
}

function randomSymmetric(n: number): Float64Array {
  const r = gaussian(n * n);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = r[i * n + j] + r[j * n + i];
  return a;
}

/** A random orthogonal n×n matrix: modified Gram–Schmidt (twice) on a Gaussian matrix, columns as output. */
function randomOrthogonal(n: number): Float64Array {
  const cols = Array.from({ length: n }, () => gaussian(n));
  for (let j = 0; j < n; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < j; i++) {
        let d = 0;
        for (let t = 0; t < n; t++) d += cols[i][t] * cols[j][t];
        for (let t = 0; t < n; t++) cols[j][t] -= d * cols[i][t];
      }
    }
    const nrm = Math.sqrt(sumSq(cols[j]));
    for (let t = 0; t < n; t++) cols[j][t] /= nrm;
  }
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) q[i * n + j] = cols[j][i];
  return q;
}

/** Q·diag(λ)·Qᵀ. */
function withSpectrum(q: Float64Array, lambda: number[], n: number): Float64Array {
  const ql = Float64Array.from(q, (v, idx) => v * lambda[idx % n]);
  return refMul(ql, q, n, n, n, false, true);
}

/**
 * One-sided Jacobi SVD (Hestenes) of a [m, n]: rotates column pairs until all are orthogonal; returns the
 * singular values (descending) and the right singular vectors V [n, n] (column j ↔ σ_j).
 */
function jacobiSvd(a: ArrayLike<number>, m: number, n: number): { sigma: Float64Array; v: Float64Array } {
  const cols = Array.from({ length: n }, (_, j) => Float64Array.from({ length: m }, (_, i) => a[i * n + j]));
  const vc = Array.from({ length: n }, (_, j) => Float64Array.from({ length: n }, (_, i) => (i === j ? 1 : 0)));
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let alpha = 0, beta = 0, gamma = 0;
        for (let i = 0; i < m; i++) {
          alpha += cols[p][i] ** 2;
          beta += cols[q][i] ** 2;
          gamma += cols[p][i] * cols[q][i];
        }
        if (gamma === 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (const x of [cols, vc]) {
          const xp = x[p], xq = x[q];
          for (let i = 0; i < xp.length; i++) {
            const u = xp[i], w = xq[i];
            xp[i] = c * u - s * w;
            xq[i] = s * u + c * w;
          }
        }
      }
    }
    if (!rotated) break;
  }
  const norms = cols.map((c) => Math.sqrt(sumSq(c)));
  const order = norms.map((_, j) => j).sort((i, j) => norms[j] - norms[i]);
  const sigma = Float64Array.from(order, (j) => norms[j]);
  const v = new Float64Array(n * n);
  for (let jj = 0; jj < n; jj++) for (let i = 0; i < n; i++) v[i * n + jj] = vc[order[jj]][i];
  return { sigma, v };
}

// ---- dense helpers ----------------------------------------------------------------------------------

Deno.test("dense: matmul with all transposes equals the triple loop (1e-14 relative)", () => {
  for (const [m, k, n] of [[1, 1, 1], [3, 5, 7], [17, 9, 33]]) {
    for (const tA of [false, true]) {
      for (const tB of [false, true]) {
        const a = gaussian(m * k);
        const b = gaussian(k * n);
        const got = denseMatmul(a, b, m, k, n, { transA: tA, transB: tB });
        assert(relErr(got, refMul(a, b, m, k, n, tA, tB)) < 1e-14, `matmul ${m}×${k}×${n} ${tA} ${tB}`);
      }
    }
  }
  assertThrows(() => denseMatmul(new Float64Array(5), new Float64Array(6), 2, 3, 2), LinalgError, "a has 5 values");
});

Deno.test("dense: transpose, identity, columns, Frobenius norm without overflow", () => {
  const a = gaussian(6 * 35);
  assertEquals(denseTranspose(a, 6, 35), refT(a, 6, 35));
  assertEquals(Array.from(denseIdentity(3)), [1, 0, 0, 0, 1, 0, 0, 0, 1]);
  assertEquals(Array.from(denseColumns([1, 2, 3, 4, 5, 6], 2, 3, 1, 3)), [2, 3, 5, 6]);
  assertAlmostEquals(frobeniusNorm([3e200, 4e200]), 5e200, 1e186);
  assertAlmostEquals(frobeniusNorm([3e-200, 4e-200]), 5e-200, 1e-214);
  assertEquals(frobeniusNorm([]), 0);
});

Deno.test("dense: orthonormalColumns spans the columns, QᵀQ = I (1e-14), also for dependent columns", () => {
  for (const [m, r] of [[1, 1], [9, 4], [40, 40], [64, 13]]) {
    const y = gaussian(m * r);
    const q = orthonormalColumns(y, m, r);
    assert(maxAbsDiff(refMul(q, q, r, m, r, true), denseIdentity(r)) < 1e-14, `QᵀQ ${m}×${r}`);
    const proj = refMul(q, refMul(q, y, r, m, r, true), m, r, r);
    assert(relErr(proj, y) < 1e-13, `range ${m}×${r}`);
    const qty = refMul(q, y, r, m, r, true);
    for (let j = 0; j < r; j++) assert(qty[j * r + j] > 0, "diag(R) > 0");
  }
  // Column 2 repeats column 0 and column 3 is zero: Q must still be orthonormal and span the rest.
  const m = 7;
  const y = gaussian(m * 4);
  for (let i = 0; i < m; i++) {
    y[i * 4 + 2] = y[i * 4];
    y[i * 4 + 3] = 0;
  }
  const q = orthonormalColumns(y, m, 4);
  assert(maxAbsDiff(refMul(q, q, 4, m, 4, true), denseIdentity(4)) < 1e-14);
  assert(relErr(refMul(q, refMul(q, y, 4, m, 4, true), m, 4, 4), y) < 1e-13);
});

// ---- Cholesky -----------------------------------------------------------------------------------------

/** C = XᵀX for X [t, n] with column scales (activation-like outlier channels). */
function secondMoment(t: number, n: number, scales?: ArrayLike<number>): { x: Float64Array; c: Float64Array } {
  const x = gaussian(t * n);
  if (scales) { for (let i = 0; i < t; i++) for (let j = 0; j < n; j++) x[i * n + j] *= scales[j]; }
  return { x, c: refMul(x, x, n, t, n, true) };
}

function isLower(l: Float64Array, n: number): boolean {
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) if (l[i * n + j] !== 0) return false;
  return true;
}

Deno.test("cholesky: L·Lᵀ = C for random SPD matrices (1e-14 relative), L lower with positive diagonal", () => {
  for (const n of [1, 2, 7, 33, 100]) {
    const { c } = secondMoment(2 * n + 3, n);
    const l = cholesky(c, n);
    assert(isLower(l, n));
    for (let i = 0; i < n; i++) assert(l[i * n + i] > 0);
    assert(relErr(refMul(l, l, n, n, n, false, true), c) < 1e-14, `n = ${n}`);
  }
});

Deno.test("cholesky: names the failing pivot for singular, zero-column and indefinite matrices", () => {
  // v·vᵀ with v = (1, 2, 3): exact arithmetic, pivot 1 is exactly 0.
  const vvt = [1, 2, 3, 2, 4, 6, 3, 6, 9];
  const e1 = assertThrows(
    () => cholesky(vvt, 3),
    NotPositiveDefiniteError,
    "pivot 1 of 3 is 0",
  ) as NotPositiveDefiniteError;
  assertEquals([e1.pivot, e1.value], [1, 0]);
  // A dead channel: row and column 4 are zero.
  const n = 9;
  const { c } = secondMoment(30, n);
  for (let i = 0; i < n; i++) c[i * n + 4] = c[4 * n + i] = 0;
  const e2 = assertThrows(() => cholesky(c, n), NotPositiveDefiniteError) as NotPositiveDefiniteError;
  assertEquals(e2.pivot, 4);
  const e3 = assertThrows(
    () => cholesky([1, 2, 2, 1], 2),
    NotPositiveDefiniteError,
    "pivot 1 of 2",
  ) as NotPositiveDefiniteError;
  assertEquals(e3.value, -3);
  assertThrows(() => cholesky([1, 2, 3], 2), LinalgError, "C has 3 values but 2×2 = 4 were expected");
  assertThrows(() => cholesky([1, 0, 0, NaN], 2), LinalgError, "non-finite value (NaN) at (1, 1)");
});

Deno.test("dampedCholesky: λ = 1e-6·mean(diag C) factors rank-deficient and zero-column matrices (1e-13)", () => {
  const n = 48;
  const scales = Float64Array.from({ length: n }, (_, j) => (j % 11 === 0 ? 30 : 1));
  // Fewer tokens than channels: rank 20 of 48.
  const deficient = secondMoment(20, n, scales).c;
  // Dead channels 3 and 40.
  const dead = secondMoment(100, n, scales).c;
  for (const j of [3, 40]) for (let i = 0; i < n; i++) dead[i * n + j] = dead[j * n + i] = 0;
  for (const c of [deficient, dead]) {
    let tr = 0;
    for (let i = 0; i < n; i++) tr += c[i * n + i];
    const f = dampedCholesky(c, n);
    assertEquals(f.tries, 1);
    assertAlmostEquals(f.damping, 1e-6 * tr / n, 1e-20 * tr);
    assert(isLower(f.lower, n));
    const want = Float64Array.from(c);
    for (let i = 0; i < n; i++) want[i * n + i] += f.damping;
    assert(relErr(refMul(f.lower, f.lower, n, n, n, false, true), want) < 1e-13);
  }
  const f = dampedCholesky(dead, n);
  assertAlmostEquals(f.lower[3 * n + 3], Math.sqrt(f.damping), 1e-15 * Math.sqrt(f.damping) + 1e-300);
});

Deno.test("dampedCholesky: λ grows ×10 per failure; all-zero C uses λ = relativeDamping; bad input throws", () => {
  // Eigenvalues 101 and −99 (mean diagonal 1): λ = 1e-6·10^k first succeeds at k = 8 (λ = 100).
  const c = [1, 100, 100, 1];
  const f = dampedCholesky(c, 2);
  assertEquals(f.tries, 9);
  assertAlmostEquals(f.damping, 100, 1e-9);
  const want = [101, 100, 100, 101];
  assert(relErr(refMul(f.lower, f.lower, 2, 2, 2, false, true), want) < 1e-14);
  // PSD up to a perturbation of −1e-4·mean(diag): fails at λ₀, succeeds once λ > 1e-4·mean.
  const n = 12;
  const { c: c2 } = secondMoment(5, n);
  const q = randomOrthogonal(n);
  let mean = 0;
  for (let i = 0; i < n; i++) mean += c2[i * n + i] / n;
  const pert = withSpectrum(q, Array.from({ length: n }, (_, i) => (i === 0 ? -1e-4 * mean : 0)), n);
  const c3 = Float64Array.from(c2, (v, i) => v + pert[i]);
  const f3 = dampedCholesky(c3, n);
  assert(f3.tries > 1, `tries ${f3.tries}`);
  assert(f3.damping > 0.5e-4 * mean && f3.damping <= 1e-2 * mean, `damping ${f3.damping}`);
  // No tokens at all.
  const z = dampedCholesky(new Float64Array(16), 4, { relativeDamping: 1e-3 });
  assertEquals(z.damping, 1e-3);
  assert(maxAbsDiff(z.lower, denseIdentity(4).map((v) => v * Math.sqrt(1e-3))) < 1e-18);
  assertThrows(() => dampedCholesky(c, 2, { maxTries: 3 }), LinalgError, "not positive definite even with λ");
  assertThrows(() => dampedCholesky([1, 0, 0, -2], 2), LinalgError, "diagonal entry 1 of C is negative");
  assertThrows(() => dampedCholesky([1, Infinity, 0, 1], 2), LinalgError, "non-finite");
  assertThrows(() => dampedCholesky([1, 0, 0, 1], 2, { relativeDamping: 0 }), LinalgError, "relativeDamping");
});

// ---- symmetric eigendecomposition -------------------------------------------------------------------

/** ‖A·V − V·Λ‖_F / ‖A‖_F and max |VᵀV − I|. */
function eigenChecks(a: Float64Array, n: number, values: Float64Array, v: Float64Array): [number, number] {
  const av = refMul(a, v, n, n, n);
  const vl = Float64Array.from(v, (x, idx) => x * values[idx % n]);
  const res = Math.sqrt(sumSq(sub(av, vl)) / Math.max(sumSq(a), 1e-300));
  const orth = maxAbsDiff(refMul(v, v, n, n, n, true), denseIdentity(n));
  return [res, orth];
}

Deno.test("symmetricEigen: A·V = V·Λ and VᵀV = I within 1e-12 at n = 1, 2, 7, 33, 129, 300", () => {
  for (const n of [1, 2, 7, 33, 129, 300]) {
    const a = randomSymmetric(n);
    const { values, vectors } = symmetricEigen(a, n);
    for (let i = 1; i < n; i++) assert(values[i] <= values[i - 1], "descending");
    const [res, orth] = eigenChecks(a, n, values, vectors);
    assert(res < 1e-12, `n = ${n}: residual ${res}`);
    assert(orth < 1e-12, `n = ${n}: orthogonality ${orth}`);
    let tr = 0;
    for (let i = 0; i < n; i++) tr += a[i * n + i];
    const sum = values.reduce((s, x) => s + x, 0);
    assertAlmostEquals(sum, tr, 1e-12 * Math.sqrt(sumSq(a)) * n);
  }
});

Deno.test("symmetricEigen: a known spectrum with repeated eigenvalues (1e-12) and matching eigenspaces", () => {
  const n = 40;
  const lambda = Array.from({ length: n }, (_, i) => (i < 5 ? 7 : i < 12 ? -3 : i < 30 ? 0 : 0.5 * i));
  const q = randomOrthogonal(n);
  const a = withSpectrum(q, lambda, n);
  const { values, vectors } = symmetricEigen(a, n);
  const want = [...lambda].sort((x, y) => y - x);
  assert(maxAbsDiff(values, want) < 1e-12 * 20, `values ${maxAbsDiff(values, want)}`);
  const [res, orth] = eigenChecks(a, n, values, vectors);
  assert(res < 1e-12 && orth < 1e-12, `${res} ${orth}`);
  // The eigenspace of 7 (five-fold) equals span of the matching columns of Q.
  const idx = lambda.map((l, i) => (l === 7 ? i : -1)).filter((i) => i >= 0);
  const pos = Array.from(values).map((l, i) => (Math.abs(l - 7) < 1e-9 ? i : -1)).filter((i) => i >= 0);
  assertEquals(pos.length, 5);
  const projQ = new Float64Array(n * n);
  const projV = new Float64Array(n * n);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      for (const j of idx) projQ[r * n + c] += q[r * n + j] * q[c * n + j];
      for (const j of pos) projV[r * n + c] += vectors[r * n + j] * vectors[c * n + j];
    }
  }
  assert(maxAbsDiff(projQ, projV) < 1e-12);
});

Deno.test("symmetricEigen: the path-graph matrix has eigenvalues 2·cos(kπ/(n+1)) (1e-13)", () => {
  for (const n of [5, 64, 257]) {
    const a = new Float64Array(n * n);
    for (let i = 0; i + 1 < n; i++) a[i * n + i + 1] = a[(i + 1) * n + i] = 1;
    const { values, vectors } = symmetricEigen(a, n);
    const want = Array.from({ length: n }, (_, k) => 2 * Math.cos(((k + 1) * Math.PI) / (n + 1)));
    assert(maxAbsDiff(values, want) < 1e-13, `n = ${n}`);
    const [res, orth] = eigenChecks(a, n, values, vectors);
    assert(res < 1e-12 && orth < 1e-12);
  }
});

Deno.test("symmetricEigen: diagonal, zero and extreme-scale inputs; sign convention; values only", () => {
  const d = [3, -1, 3, 0, 10];
  const a = new Float64Array(25);
  d.forEach((x, i) => (a[i * 5 + i] = x));
  const { values, vectors } = symmetricEigen(a, 5);
  assertEquals(Array.from(values), [10, 3, 3, 0, -1]);
  const perm = [4, 0, 2, 3, 1];
  const want = new Float64Array(25);
  perm.forEach((row, col) => (want[row * 5 + col] = 1));
  assertEquals(vectors, want);
  const z = symmetricEigen(new Float64Array(9), 3);
  assertEquals(Array.from(z.values), [0, 0, 0]);
  assertEquals(z.vectors, denseIdentity(3));
  for (const scale of [1e-300, 1e-200, 1e200, 1e306]) {
    const b = randomSymmetric(20);
    const big = b.map((x) => x * scale);
    const e0 = symmetricEigen(b, 20);
    const e1 = symmetricEigen(big, 20);
    assert(maxAbsDiff(e1.values.map((x) => x / scale), e0.values) < 1e-12 * Math.abs(e0.values[0]));
    assert(maxAbsDiff(e1.vectors, e0.vectors) < 1e-10);
  }
  const c = randomSymmetric(50);
  const e = symmetricEigen(c, 50);
  for (let j = 0; j < 50; j++) {
    let big = 0;
    let sign = 0;
    for (let i = 0; i < 50; i++) {
      const x = e.vectors[i * 50 + j];
      if (Math.abs(x) > big) [big, sign] = [Math.abs(x), Math.sign(x)];
    }
    assertEquals(sign, 1);
  }
  const valuesOnly = symmetricEigen(c, 50, { vectors: false });
  assertEquals(valuesOnly.vectors.length, 0);
  assert(maxAbsDiff(valuesOnly.values, e.values) < 1e-12 * Math.abs(e.values[0]));
});

Deno.test("symmetricEigen: uses the symmetric part; rejects bad input", () => {
  const n = 16;
  const a = randomSymmetric(n);
  const k = gaussian(n * n);
  const skewed = Float64Array.from(a, (x, idx) => x + k[idx] - k[(idx % n) * n + Math.floor(idx / n)]);
  const e0 = symmetricEigen(a, n);
  const e1 = symmetricEigen(skewed, n);
  assert(maxAbsDiff(e0.values, e1.values) < 1e-12 * Math.abs(e0.values[0]));
  assertThrows(() => symmetricEigen([1, 2, 3], 2), LinalgError, "A has 3 values");
  assertThrows(() => symmetricEigen([1, NaN, NaN, 1], 2), LinalgError, "non-finite");
});

// ---- triangular solves ------------------------------------------------------------------------------

function randomLower(n: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) l[i * n + j] = rng.normal() / Math.sqrt(n);
    l[i * n + i] = 1 + rng.next();
  }
  return l;
}

Deno.test("triangular solves: L·X = B, Lᵀ·X = B, U·X = B, Uᵀ·X = B (residual 1e-13 relative)", () => {
  for (const [n, k] of [[1, 1], [6, 3], [50, 17], [120, 1]]) {
    const l = randomLower(n);
    const u = refT(l, n, n);
    // Garbage in the ignored triangle must not matter.
    const lDirty = Float64Array.from(l);
    const uDirty = Float64Array.from(u);
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        lDirty[i * n + j] = 1e3;
        uDirty[j * n + i] = -1e3;
      }
    }
    const b = gaussian(n * k);
    const cases: [Float64Array, Float64Array][] = [
      [solveLower(lDirty, b, n, k), l],
      [solveLower(lDirty, b, n, k, { transpose: true }), u],
      [solveUpper(uDirty, b, n, k), u],
      [solveUpper(uDirty, b, n, k, { transpose: true }), l],
    ];
    for (const [x, a] of cases) assert(relErr(refMul(a, x, n, n, k), b) < 1e-13, `n = ${n}, k = ${k}`);
  }
  assertThrows(() => solveLower([1, 0, 5, 0], [1, 2], 2, 1), LinalgError, "diagonal entry 1 of 2 is 0");
  assertThrows(() => solveUpper([1, 0, 0, 1], [1, 2, 3], 2, 1), LinalgError, "right-hand side has 3 values");
});

// ---- rank rule --------------------------------------------------------------------------------------

Deno.test("rank rule: max(32, ⌊ratio·min(d_in, d_out)⌋) capped at the full rank; absolute ranks", () => {
  assertEquals(resolveRank({ ratio: 0.05 }, 2048, 256), 32); // ⌊12.8⌋ = 12, raised to 32
  assertEquals(resolveRank({ ratio: 0.2 }, 2048, 11008), 409);
  assertEquals(resolveRank({ ratio: 1 }, 2048, 11008), 2048);
  assertEquals(resolveRank({ ratio: 0.05 }, 20, 30), 20); // the floor is capped at the full rank
  assertEquals(resolveRank({ rank: 64 }, 2048, 256), 64);
  assertEquals(resolveRank({ rank: 5000 }, 2048, 256), 256);
  assertEquals(resolveRank({ rank: 10 }, 2048, 256), 32);
  assertEquals(resolveRank({ rank: 10, minRank: 1 }, 2048, 256), 10);
  assertEquals(resolveRank({ ratio: 0.29, minRank: 1 }, 100, 100), 28); // ⌊0.29·100⌋ in doubles
  assertThrows(() => resolveRank({ ratio: 0 }, 10, 10), LinalgError, "ratio must be in (0, 1]");
  assertThrows(() => resolveRank({ ratio: 1.5 }, 10, 10), LinalgError);
  assertThrows(() => resolveRank({ rank: 2.5 }, 10, 10), LinalgError, "rank must be an integer");
  assertEquals(rankRuleFromSetting(1), { ratio: 1 });
  assertEquals(rankRuleFromSetting(0.2), { ratio: 0.2 });
  assertEquals(rankRuleFromSetting(64), { rank: 64 });
  assertThrows(() => rankRuleFromSetting(0), LinalgError, "0 disables CMC");
});

Deno.test("effectiveRank: exp of the entropy of σ/Σσ", () => {
  assertAlmostEquals(effectiveRank([2, 2, 2, 2]), 4, 1e-12);
  assertAlmostEquals(effectiveRank([5, 0, 0]), 1, 1e-12);
  assertEquals(effectiveRank([0, 0]), 0);
  const p = [0.5, 0.25, 0.25];
  assertAlmostEquals(effectiveRank([2, 1, 1]), Math.exp(-p.reduce((s, x) => s + x * Math.log(x), 0)), 1e-12);
});

// ---- CMC low-rank factorisation ----------------------------------------------------------------------

/**
 * Tolerances of one backend/dtype configuration. The whitened error is stationary at the optimum, so
 * rounding in the backend products moves it only to second order, except for singular directions below
 * the resolution of the Gram matrix (σ_i² ≲ ε·σ₁², ε = 6e-8 in f32) whose order is arbitrary: eyAbs
 * covers those (observed ≤ 2e-10·‖M‖² with f32 WebGPU products on the rank-deficient case). The reported
 * residual (‖M‖² − ‖R‖²), the singular values and the reconstructions are first order in the rounding.
 */
interface Tol {
  /** |err − optimum| ≤ eyRel·optimum + eyAbs·‖M‖². */
  eyRel: number;
  eyAbs: number;
  /** |residual − optimum| ≤ residual·‖M‖². */
  residual: number;
  /** Relative error of L·R against ΔWᵀ at full rank. */
  full: number;
  /** Singular values: |σ − σ_ref| ≤ sigma·σ₁. */
  sigma: number;
  /** Relative error of L·R against the reference truncated SVD (identity whitening). */
  svd: number;
}

const F64: Tol = { eyRel: 1e-9, eyAbs: 1e-13, residual: 1e-12, full: 1e-11, sigma: 1e-12, svd: 1e-11 };
const F32: Tol = { eyRel: 1e-6, eyAbs: 1e-8, residual: 1e-5, full: 2e-5, sigma: 2e-5, svd: 1e-5 };

interface Problem {
  dIn: number;
  dOut: number;
  x: Float64Array; // [tokens, d_in]
  tokens: number;
  c: Float64Array;
  dw: Float32Array; // [d_out, d_in]
}

function problem(dIn: number, dOut: number, tokens: number): Problem {
  const scales = Float64Array.from({ length: dIn }, (_, j) => (j % 7 === 0 ? 20 : 0.5 + rng.next()));
  const { x, c } = secondMoment(tokens, dIn, scales);
  const dw = Float32Array.from({ length: dOut * dIn }, () => rng.normal() * 0.01);
  return { dIn, dOut, x, tokens, c, dw };
}

/** ‖T·D‖_F² = trace(Dᵀ(C + λI)D) for D = ΔWᵀ − L·R, straight from C (no factorisation). */
function whitenedError(p: Problem, damping: number, l: ArrayLike<number>, r: ArrayLike<number>, rank: number): number {
  const lr = refMul(l, r, p.dIn, rank, p.dOut);
  const d = sub(refT(p.dw, p.dOut, p.dIn), lr); // [d_in, d_out]
  const cd = refMul(p.c, d, p.dIn, p.dIn, p.dOut);
  let s = damping * sumSq(d);
  for (let i = 0; i < d.length; i++) s += d[i] * cd[i];
  return s;
}

/** Singular values of T·ΔWᵀ from the stacked [X; √λ·I]·ΔWᵀ (same Gram matrix), by one-sided Jacobi. */
function referenceSigma(p: Problem, damping: number): Float64Array {
  const rows = p.tokens + p.dIn;
  const z = new Float64Array(rows * p.dIn);
  z.set(p.x);
  for (let i = 0; i < p.dIn; i++) z[(p.tokens + i) * p.dIn + i] = Math.sqrt(damping);
  const zm = refMul(z, p.dw, rows, p.dIn, p.dOut, false, true);
  return jacobiSvd(zm, rows, p.dOut).sigma.slice(0, Math.min(p.dIn, p.dOut));
}

function tail(sigma: Float64Array, r: number): number {
  let s = 0;
  for (let i = r; i < sigma.length; i++) s += sigma[i] ** 2;
  return s;
}

const backends = await allBackends();
const configs: { be: Backend; dtype: "f32" | "f64"; tol: Tol }[] = [];
for (const be of backends) {
  if (be.supportsF64) configs.push({ be, dtype: "f64", tol: F64 });
  configs.push({ be, dtype: "f32", tol: F32 });
}

function lowrankTest(name: string, fn: (be: Backend, dtype: "f32" | "f64", tol: Tol) => Promise<void>): void {
  for (const { be, dtype, tol } of configs) {
    Deno.test(`lowrank: ${name} [${be.name} ${dtype}]`, () => fn(be, dtype, tol));
  }
}

function run(be: Backend, dtype: "f32" | "f64", p: Problem, extra: Partial<WhitenedLowRankOptions>) {
  return whitenedLowRank(be, {
    deltaW: p.dw,
    inFeatures: p.dIn,
    outFeatures: p.dOut,
    whitening: { secondMoment: p.c },
    rank: { rank: 1, minRank: 1 },
    dtype,
    ...extra,
  });
}

lowrankTest("Eckart–Young in the whitened norm, monotone in the rank, exact at full rank", async (be, dtype, tol) => {
  // Wide (Gram of M·Mᵀ) and tall (Gram of MᵀM, then QR) differences.
  for (const [dIn, dOut] of [[24, 40], [40, 24]]) {
    const p = problem(dIn, dOut, 150);
    const k = Math.min(dIn, dOut);
    let prev = Infinity;
    let sigmaRef: Float64Array | undefined;
    for (let r = 1; r <= k; r++) {
      const res = await run(be, dtype, p, { rank: { rank: r, minRank: 1 } });
      assertEquals(res.rank, r);
      assertEquals([res.left.length, res.right.length], [dIn * r, r * dOut]);
      let meanDiag = 0;
      for (let i = 0; i < dIn; i++) meanDiag += p.c[i * dIn + i] / dIn;
      assertAlmostEquals(res.damping, 1e-6 * meanDiag, 1e-12 * meanDiag);
      sigmaRef ??= referenceSigma(p, res.damping);
      const scale = tail(sigmaRef, 0);
      const opt = tail(sigmaRef, r);
      const err = whitenedError(p, res.damping, res.left, res.right, r);
      const slack = tol.eyRel * opt + tol.eyAbs * scale;
      assert(Math.abs(err - opt) <= slack, `${dIn}×${dOut} r = ${r}: error ${err} vs optimum ${opt}`);
      assert(Math.abs(res.residual - opt) <= tol.residual * scale, `residual ${res.residual} vs ${opt}`);
      assert(Math.abs(res.whitenedNormSquared - scale) <= tol.residual * scale, "‖M‖²");
      assert(err < prev, `monotone at r = ${r}`);
      prev = err;
      if (r === 1) {
        for (let i = 0; i < k; i++) {
          assert(Math.abs(res.singularValues[i] - sigmaRef[i]) <= tol.sigma * sigmaRef[0], `σ_${i}`);
        }
      }
      if (r === k) {
        const lr = refMul(res.left, res.right, dIn, r, dOut);
        const e = relErr(lr, refT(p.dw, dOut, dIn));
        assert(e < tol.full, `full-rank reconstruction ${e}`);
      }
    }
  }
});

lowrankTest("beats random rank-r alternatives and the unwhitened truncated SVD", async (be, dtype, tol) => {
  const p = problem(32, 48, 120);
  const r = 6;
  const res = await run(be, dtype, p, { rank: { rank: r, minRank: 1 } });
  const best = whitenedError(p, res.damping, res.left, res.right, r);
  const plain = await run(be, dtype, p, { rank: { rank: r, minRank: 1 }, whitening: "identity" });
  const plainErr = whitenedError(p, res.damping, plain.left, plain.right, r);
  assert(plainErr > best * 1.01, `plain SVD ${plainErr} vs whitened ${best}`);
  const scale = res.whitenedNormSquared;
  for (let trial = 0; trial < 20; trial++) {
    const eps = trial < 10 ? 1e-3 : 1e-1;
    const l2 = res.left.map((v) => v + eps * rng.normal() * Math.sqrt(sumSq(res.left) / res.left.length));
    const r2 = res.right.map((v) => v + eps * rng.normal() * Math.sqrt(sumSq(res.right) / res.right.length));
    assert(whitenedError(p, res.damping, l2, r2, r) >= best - tol.eyAbs * scale, `perturbation ${trial}`);
    const l3 = gaussian(p.dIn * r, 0.01);
    const r3 = gaussian(r * p.dOut, 0.01);
    assert(whitenedError(p, res.damping, l3, r3, r) > best, `random ${trial}`);
  }
});

lowrankTest("identity whitening is the plain truncated SVD", async (be, dtype, tol) => {
  for (const [dIn, dOut] of [[30, 45], [45, 30]]) {
    const p = problem(dIn, dOut, 10);
    const k = Math.min(dIn, dOut);
    const r = 8;
    const res = await run(be, dtype, p, { whitening: "identity", rank: { rank: r, minRank: 1 } });
    assertEquals(res.damping, 0);
    const a = refT(p.dw, dOut, dIn); // ΔWᵀ [d_in, d_out]
    const { sigma, v } = jacobiSvd(a, dIn, dOut);
    const vr = denseColumns(v, dOut, dOut, 0, r);
    const best = refMul(refMul(a, vr, dIn, dOut, r), vr, dIn, r, dOut, false, true); // A·V_r·V_rᵀ
    const lr = refMul(res.left, res.right, dIn, r, dOut);
    assert(relErr(lr, best) < tol.svd, `${dIn}×${dOut}: ${relErr(lr, best)}`);
    for (let i = 0; i < k; i++) assert(Math.abs(res.singularValues[i] - sigma[i]) <= tol.sigma * sigma[0]);
    // L = U_r has orthonormal columns and R·Rᵀ = Σ_r².
    assert(maxAbsDiff(refMul(res.left, res.left, r, dIn, r, true), denseIdentity(r)) < 1e-12);
    const rrt = refMul(res.right, res.right, r, dOut, r, false, true);
    const want = new Float64Array(r * r);
    for (let i = 0; i < r; i++) want[i * r + i] = sigma[i] ** 2;
    assert(maxAbsDiff(rrt, want) < tol.sigma * 10 * sigma[0] ** 2, `RRᵀ ${maxAbsDiff(rrt, want)}`);
  }
});

lowrankTest(
  "rank-deficient and dead-channel second moments, precomputed factor, rank floor",
  async (be, dtype, tol) => {
    // 20 tokens for 40 channels, and channel 5 never active.
    const p = problem(40, 100, 20);
    for (let t = 0; t < p.tokens; t++) p.x[t * p.dIn + 5] = 0;
    p.c = refMul(p.x, p.x, p.dIn, p.tokens, p.dIn, true);
    const res = await run(be, dtype, p, { rank: { ratio: 0.1 } });
    assertEquals(res.rank, 32); // ⌊0.1·40⌋ = 4, raised to 32
    const sigmaRef = referenceSigma(p, res.damping);
    const opt = tail(sigmaRef, 32);
    const err = whitenedError(p, res.damping, res.left, res.right, 32);
    assert(Math.abs(err - opt) <= tol.eyRel * opt + tol.eyAbs * tail(sigmaRef, 0), `${err} vs ${opt}`);
    for (const v of res.left) assert(Number.isFinite(v));
    // A factor computed once and shared gives the same result as the second moment it came from.
    const f = dampedCholesky(p.c, p.dIn);
    const again = await run(be, dtype, p, { rank: { ratio: 0.1 }, whitening: { factor: f } });
    assertEquals(again.damping, res.damping);
    assertEquals(again.right, res.right);
    assertEquals(again.left, res.left);
    // Full rank through the ratio rule: 40 ≥ min(d_in, d_out).
    const full = await run(be, dtype, p, { rank: { ratio: 1 } });
    assertEquals(full.rank, 40);
    assert(relErr(refMul(full.left, full.right, 40, 40, 100), refT(p.dw, 100, 40)) < tol.full * 10);
    // Ranks beyond the full rank are capped.
    const capped = await run(be, dtype, problem(12, 20, 30), { rank: { rank: 64 } });
    assertEquals(capped.rank, 12);
  },
);

lowrankTest("zero difference, effective rank of the result, input errors", async (be, dtype) => {
  const p = problem(16, 24, 40);
  p.dw.fill(0);
  const res = await run(be, dtype, p, { rank: { rank: 4, minRank: 1 } });
  assertEquals(res.residual, 0);
  assertEquals(maxAbsDiff(res.right, new Float64Array(res.right.length)), 0);
  assertEquals(effectiveRank(res.singularValues), 0);
  await assertRejects(
    () => run(be, dtype, { ...p, dw: new Float32Array(10) }, { name: "layers.0.q_proj, vision" }),
    LinalgError,
    "whitenedLowRank (layers.0.q_proj, vision): deltaW [d_out, d_in] has 10 values",
  );
  const bad = Float64Array.from(p.c);
  bad[3] = NaN;
  await assertRejects(() => run(be, dtype, { ...p, c: bad }, {}), LinalgError, "second-moment matrix C");
  if (!be.supportsF64) await assertRejects(() => run(be, "f64", p, {}), LinalgError, "has no f64 tensors");
});
