/**
 * Eigendecomposition of real symmetric matrices in float64: Householder reduction to tridiagonal form,
 * then implicit symmetric QR steps with Wilkinson shifts (Golub & Van Loan, §8.3), accumulating the
 * rotations into the eigenvectors. CMC uses it on the Gram matrix of the whitened weight difference.
 */
import { checkMatrix, householder, LinalgError } from "./dense.ts";

/** Options of {@link symmetricEigen}. */
export interface SymmetricEigenOptions {
  /** Also compute eigenvectors (default true); eigenvalues alone cost about a sixth (mostly the reduction). */
  vectors?: boolean;
}

/** Eigenvalues and eigenvectors of a symmetric matrix, A·V = V·diag(values). */
export interface SymmetricEigen {
  /** The n eigenvalues, in descending order. */
  values: Float64Array;
  /**
   * V [n, n] row-major; column j is the unit eigenvector of values[j], its largest-magnitude entry made
   * positive (the first such entry on ties). Empty when vectors were not requested.
   */
  vectors: Float64Array;
}

const EPS = 2 ** -52;

/**
 * All eigenvalues (descending) and orthonormal eigenvectors of the symmetric part (A + Aᵀ)/2 of
 * A [n, n]. Backward stable: ‖A·V − V·Λ‖ and ‖VᵀV − I‖ are a small multiple of n·ε·‖A‖ and n·ε.
 */
export function symmetricEigen(a: ArrayLike<number>, n: number, opts: SymmetricEigenOptions = {}): SymmetricEigen {
  checkMatrix("symmetricEigen", "A", a, n, n);
  const wantVectors = opts.vectors ?? true;
  // Work on the symmetric part, scaled to max |entry| ≤ 1 (≤ 2 near overflow) so that no step can
  // overflow or underflow.
  const w = new Float64Array(n * n);
  let scale = 0;
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      const v = 0.5 * a[i * n + j] + 0.5 * a[j * n + i];
      w[i * n + j] = v;
      w[j * n + i] = v;
      scale = Math.max(scale, Math.abs(v));
    }
  }
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  let v: Float64Array | undefined;
  if (scale === 0) {
    v = wantVectors ? identityRows(n) : undefined;
  } else {
    // A power of two (within the normal range), so that scaling is exact.
    const exponent = Math.min(1023, Math.max(-1022, Math.ceil(Math.log2(scale))));
    scale = 2 ** exponent;
    const inv = 2 ** -exponent;
    for (let i = 0; i < w.length; i++) w[i] *= inv;
    const tau = tridiagonalize(w, n, d, e);
    v = wantVectors ? reflectorProduct(w, n, tau) : undefined;
    tridiagonalQR(d, e, n, v);
    for (let i = 0; i < n; i++) d[i] *= scale;
  }
  return sorted(d, v, n);
}

function identityRows(n: number): Float64Array {
  const z = new Float64Array(n * n);
  for (let i = 0; i < n; i++) z[i * n + i] = 1;
  return z;
}

/**
 * Reduces the symmetric w [n, n] (upper triangle used and updated) to tridiagonal T = QᵀwQ with
 * Q = H₀H₁⋯H_{n−3}: diagonal → d, superdiagonal → e[0..n−2]. Reflector k acts on indices k+1..n−1;
 * its vector (v_{k+1} = 1 implicit) is left in w[k, k+2..] and its τ is returned in tau[k].
 *
 * Step k replaces the trailing block A by H·A·H = A − v·qᵀ − q·vᵀ with p = τ·A·v and
 * q = p − (τ/2)(pᵀv)·v. The row that defines reflector k+1 is updated first, so that the rank-2 update
 * of step k and the product p = A·v of step k+1 share one pass over the trailing block.
 */
function tridiagonalize(w: Float64Array, n: number, d: Float64Array, e: Float64Array): Float64Array {
  const tau = new Float64Array(n);
  let v = new Float64Array(n); // reflector k, indexed by absolute row (entries k+1..n−1)
  let p = new Float64Array(n); // A·v of the current trailing block
  let vNext = new Float64Array(n);
  let pNext = new Float64Array(n);
  const q = new Float64Array(n);
  if (n >= 3) {
    reflectorFromRow(w, n, 0, d, e, tau, v);
    // The first product has no update to share a pass with.
    for (let i = 1; i < n; i++) {
      const oi = i * n;
      const vi = v[i];
      let s = p[i] + w[oi + i] * vi;
      for (let j = i + 1; j < n; j++) {
        const a = w[oi + j];
        s += a * v[j];
        p[j] += a * vi;
      }
      p[i] = s;
    }
  }
  for (let k = 0; k + 2 < n; k++) {
    const b0 = k + 1;
    const tk = tau[k];
    let pv = 0;
    for (let j = b0; j < n; j++) pv += p[j] * v[j];
    const half = 0.5 * tk * tk * pv;
    for (let j = b0; j < n; j++) q[j] = tk * p[j] - half * v[j];
    if (k + 3 < n) {
      // Row k+1 first: it defines reflector k+1.
      const o1 = b0 * n;
      const v1 = v[b0];
      const q1 = q[b0];
      for (let j = b0; j < n; j++) w[o1 + j] -= v1 * q[j] + q1 * v[j];
      reflectorFromRow(w, n, b0, d, e, tau, vNext);
      pNext.fill(0, b0 + 1);
      for (let i = b0 + 1; i < n; i++) {
        const oi = i * n;
        const vi = v[i];
        const qi = q[i];
        const ui = vNext[i];
        const aii = w[oi + i] - 2 * vi * qi;
        w[oi + i] = aii;
        let s0 = pNext[i] + aii * ui;
        let s1 = 0;
        let j = i + 1;
        for (; j + 2 <= n; j += 2) {
          const a0 = w[oi + j] - (vi * q[j] + qi * v[j]);
          const a1 = w[oi + j + 1] - (vi * q[j + 1] + qi * v[j + 1]);
          w[oi + j] = a0;
          w[oi + j + 1] = a1;
          s0 += a0 * vNext[j];
          s1 += a1 * vNext[j + 1];
          pNext[j] += a0 * ui;
          pNext[j + 1] += a1 * ui;
        }
        if (j < n) {
          const a = w[oi + j] - (vi * q[j] + qi * v[j]);
          w[oi + j] = a;
          s0 += a * vNext[j];
          pNext[j] += a * ui;
        }
        pNext[i] = s0 + s1;
      }
      [v, vNext] = [vNext, v];
      [p, pNext] = [pNext, p];
    } else {
      for (let i = b0; i < n; i++) {
        const oi = i * n;
        for (let j = i; j < n; j++) w[oi + j] -= v[i] * q[j] + q[i] * v[j];
      }
    }
  }
  if (n >= 2) {
    d[n - 2] = w[(n - 2) * n + n - 2];
    e[n - 2] = w[(n - 2) * n + n - 1];
  }
  if (n >= 1) d[n - 1] = w[n * n - 1];
  e[n - 1] = 0;
  return tau;
}

/** Builds reflector k from w[k, k+1..] (stored back in place), records d[k], e[k], τ_k and copies v into `v`. */
function reflectorFromRow(
  w: Float64Array,
  n: number,
  k: number,
  d: Float64Array,
  e: Float64Array,
  tau: Float64Array,
  v: Float64Array,
): void {
  const ok = k * n;
  const h = householder(w, ok + k + 1, n - k - 1);
  d[k] = w[ok + k];
  e[k] = h.beta;
  tau[k] = h.tau;
  v[k + 1] = 1;
  for (let j = k + 2; j < n; j++) v[j] = w[ok + j];
}

/** Reflectors applied together per row when forming Q. */
const REFLECTOR_BLOCK = 32;

/**
 * Q = H₀H₁⋯H_{n−3} as a row-major matrix. It is formed as Qᵀ = H_{n−3}⋯H₀ by multiplying reflectors
 * on the right, from the last one down, so that every row is independent: each row is kept hot while a
 * block of reflectors is applied to it. Row i is first touched by H_k with k+1 ≤ i.
 */
function reflectorProduct(w: Float64Array, n: number, tau: Float64Array): Float64Array {
  const qt = identityRows(n);
  for (let kHi = n - 3; kHi >= 0; kHi -= REFLECTOR_BLOCK) {
    const kLo = Math.max(0, kHi - REFLECTOR_BLOCK + 1);
    for (let i = kLo + 1; i < n; i++) {
      const oi = i * n;
      for (let k = Math.min(kHi, i - 1); k >= kLo; k--) {
        const tk = tau[k];
        if (tk === 0) continue;
        const vo = k * n; // v_j = w[vo + j] for j ≥ k+2, v_{k+1} = 1
        const b0 = k + 1;
        let s = dotFrom(qt, oi, w, vo, b0 + 1, n) + qt[oi + b0];
        s *= tk;
        if (s === 0) continue;
        qt[oi + b0] -= s;
        for (let j = b0 + 1; j < n; j++) qt[oi + j] -= s * w[vo + j];
      }
    }
  }
  return transposeSquare(qt, n);
}

/** Σ_{j ∈ [from, to)} x[xo + j]·y[yo + j] with four partial sums (independent dependency chains). */
function dotFrom(x: Float64Array, xo: number, y: Float64Array, yo: number, from: number, to: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let j = from;
  for (; j + 4 <= to; j += 4) {
    s0 += x[xo + j] * y[yo + j];
    s1 += x[xo + j + 1] * y[yo + j + 1];
    s2 += x[xo + j + 2] * y[yo + j + 2];
    s3 += x[xo + j + 3] * y[yo + j + 3];
  }
  for (; j < to; j++) s0 += x[xo + j] * y[yo + j];
  return (s0 + s1) + (s2 + s3);
}

function transposeSquare(a: Float64Array, n: number): Float64Array {
  const t = new Float64Array(n * n);
  const B = 32;
  for (let i0 = 0; i0 < n; i0 += B) {
    for (let j0 = 0; j0 < n; j0 += B) {
      const i1 = Math.min(i0 + B, n);
      const j1 = Math.min(j0 + B, n);
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) t[j * n + i] = a[i * n + j];
    }
  }
  return t;
}

/** |e_i| is negligible next to its two diagonal neighbours. */
function negligible(d: Float64Array, e: Float64Array, i: number): boolean {
  const ei = Math.abs(e[i]);
  return ei <= EPS * (Math.abs(d[i]) + Math.abs(d[i + 1])) || ei < 1e-300;
}

/**
 * Rotation sweeps recorded by the QR iteration and applied to the eigenvector matrix later, many sweeps
 * per pass over its rows (each row of V is transformed independently of the others).
 */
class SweepBuffer {
  readonly c: Float64Array;
  readonly s: Float64Array;
  readonly lo: number[] = [];
  readonly hi: number[] = [];
  used = 0;

  constructor(readonly v: Float64Array, readonly n: number, capacity: number) {
    this.c = new Float64Array(capacity);
    this.s = new Float64Array(capacity);
  }

  /** Room for a sweep over [lo, hi] (flushing first when needed); returns the offset of its first rotation. */
  begin(lo: number, hi: number): number {
    if (this.used + (hi - lo) > this.c.length) this.flush();
    this.lo.push(lo);
    this.hi.push(hi);
    const off = this.used;
    this.used += hi - lo;
    return off;
  }

  /**
   * Applies the recorded sweeps in order to every row of V: the rotation (c, s) of columns (k, k+1) maps
   * (x_k, x_{k+1}) to (c·x_k + s·x_{k+1}, c·x_{k+1} − s·x_k); along a sweep the new x_{k+1} stays in a register.
   */
  flush(): void {
    const { v, n, c, s, lo, hi } = this;
    const sweeps = lo.length;
    let r = 0;
    // Four rows at a time: four independent dependency chains per rotation.
    for (; r + 4 <= n; r += 4) {
      const o0 = r * n, o1 = o0 + n, o2 = o1 + n, o3 = o2 + n;
      let off = 0;
      for (let t = 0; t < sweeps; t++) {
        const l = lo[t];
        const h = hi[t];
        let a0 = v[o0 + l], a1 = v[o1 + l], a2 = v[o2 + l], a3 = v[o3 + l];
        for (let k = l; k < h; k++) {
          const ck = c[off];
          const sk = s[off];
          off++;
          const b0 = v[o0 + k + 1], b1 = v[o1 + k + 1], b2 = v[o2 + k + 1], b3 = v[o3 + k + 1];
          v[o0 + k] = ck * a0 + sk * b0;
          v[o1 + k] = ck * a1 + sk * b1;
          v[o2 + k] = ck * a2 + sk * b2;
          v[o3 + k] = ck * a3 + sk * b3;
          a0 = ck * b0 - sk * a0;
          a1 = ck * b1 - sk * a1;
          a2 = ck * b2 - sk * a2;
          a3 = ck * b3 - sk * a3;
        }
        v[o0 + h] = a0;
        v[o1 + h] = a1;
        v[o2 + h] = a2;
        v[o3 + h] = a3;
      }
    }
    for (; r < n; r++) {
      const o = r * n;
      let off = 0;
      for (let t = 0; t < sweeps; t++) {
        const l = lo[t];
        const h = hi[t];
        let a = v[o + l];
        for (let k = l; k < h; k++) {
          const b = v[o + k + 1];
          const ck = c[off];
          const sk = s[off];
          off++;
          v[o + k] = ck * a + sk * b;
          a = ck * b - sk * a;
        }
        v[o + h] = a;
      }
    }
    lo.length = 0;
    hi.length = 0;
    this.used = 0;
  }
}

/**
 * Diagonalises the symmetric tridiagonal (d, e) in place: the active unreduced block [lo, hi] at the
 * bottom gets implicit QR steps with the Wilkinson shift until its last off-diagonal entry is negligible.
 * Each rotation G acting on (k, k+1) maps T to G·T·Gᵀ and V to V·Gᵀ.
 */
function tridiagonalQR(d: Float64Array, e: Float64Array, n: number, v: Float64Array | undefined): void {
  const maxSteps = 30 * n + 30;
  const buf = v ? new SweepBuffer(v, n, Math.max(4 * n, 1 << 14)) : undefined;
  let steps = 0;
  let hi = n - 1;
  while (hi > 0) {
    if (negligible(d, e, hi - 1)) {
      e[hi - 1] = 0;
      hi--;
      continue;
    }
    let lo = hi - 1;
    while (lo > 0 && !negligible(d, e, lo - 1)) lo--;
    if (lo > 0) e[lo - 1] = 0;
    if (++steps > maxSteps) {
      throw new LinalgError("symmetricEigen", `the QR iteration did not converge in ${maxSteps} steps (n = ${n})`);
    }
    qrStep(d, e, lo, hi, buf);
  }
  buf?.flush();
}

/**
 * One implicit shifted QR step on the unreduced block [lo, hi]: the first rotation comes from the first
 * column of T − μI, the following ones chase the bulge it creates down to the bottom of the block.
 */
function qrStep(d: Float64Array, e: Float64Array, lo: number, hi: number, buf: SweepBuffer | undefined): void {
  // Wilkinson shift: the eigenvalue of the trailing 2×2 block closer to d[hi].
  const b = e[hi - 1];
  const delta = 0.5 * (d[hi - 1] - d[hi]);
  const root = Math.hypot(delta, b);
  const mu = d[hi] - (b * b) / (delta >= 0 ? delta + root : delta - root);
  let off = buf ? buf.begin(lo, hi) : 0;
  let x = d[lo] - mu;
  let z = e[lo];
  for (let k = lo; k < hi; k++) {
    let r = Math.sqrt(x * x + z * z);
    if (r < 1e-150) r = Math.hypot(x, z);
    let c = 1;
    let s = 0;
    if (r !== 0) {
      c = x / r;
      s = z / r;
    }
    if (k > lo) e[k - 1] = r;
    const dp = d[k];
    const dq = d[k + 1];
    const ep = e[k];
    const cs = c * s;
    d[k] = c * c * dp + 2 * cs * ep + s * s * dq;
    d[k + 1] = s * s * dp - 2 * cs * ep + c * c * dq;
    e[k] = cs * (dq - dp) + (c * c - s * s) * ep;
    if (k + 1 < hi) {
      z = s * e[k + 1];
      e[k + 1] *= c;
      x = e[k];
    }
    if (buf) {
      buf.c[off] = c;
      buf.s[off] = s;
      off++;
    }
  }
}

/** Sorts eigenpairs by descending eigenvalue and fixes the sign of every eigenvector (column of v). */
function sorted(d: Float64Array, v: Float64Array | undefined, n: number): SymmetricEigen {
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => d[j] - d[i] || i - j);
  const values = Float64Array.from(order, (i) => d[i]);
  if (!v) return { values, vectors: new Float64Array(0) };
  const big = new Float64Array(n);
  const sign = new Float64Array(n).fill(1);
  for (let i = 0; i < n; i++) {
    const o = i * n;
    for (let j = 0; j < n; j++) {
      const x = v[o + j];
      if (Math.abs(x) > big[j]) {
        big[j] = Math.abs(x);
        sign[j] = x < 0 ? -1 : 1;
      }
    }
  }
  const vectors = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const o = i * n;
    for (let j = 0; j < n; j++) vectors[o + j] = sign[order[j]] * v[o + order[j]];
  }
  return { values, vectors };
}
