/**
 * Host float64 matrix helpers for the CMC linear algebra (masquant-algorithm §6). Matrices are row-major
 * Float64Arrays with their dimensions passed beside them: element (i, j) of an m×n matrix is `a[i * n + j]`.
 */

/** Bad input to a linear algebra routine, or a factorisation that cannot proceed. */
export class LinalgError extends Error {
  /** Creates an error whose message starts with the routine's name. */
  constructor(readonly routine: string, detail: string) {
    super(`${routine}: ${detail}`);
    this.name = "LinalgError";
  }
}

/** Throws a LinalgError unless `cond` holds. */
export function ensure(cond: unknown, routine: string, detail: string | (() => string)): asserts cond {
  if (!cond) throw new LinalgError(routine, typeof detail === "string" ? detail : detail());
}

/** Checks that `a` holds exactly rows·cols finite values; `what` names the argument in the message. */
export function checkMatrix(
  routine: string,
  what: string,
  a: ArrayLike<number>,
  rows: number,
  cols: number,
): void {
  ensure(
    Number.isInteger(rows) && Number.isInteger(cols) && rows >= 0 && cols >= 0,
    routine,
    () => `${what} has invalid dimensions ${rows}×${cols}; pass non-negative integers`,
  );
  ensure(
    a.length === rows * cols,
    routine,
    () => `${what} has ${a.length} values but ${rows}×${cols} = ${rows * cols} were expected`,
  );
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) {
      const r = Math.floor(i / Math.max(cols, 1));
      throw new LinalgError(routine, `${what} has a non-finite value (${a[i]}) at (${r}, ${i - r * cols})`);
    }
  }
}

/** The n×n identity matrix. */
export function denseIdentity(n: number): Float64Array {
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) a[i * n + i] = 1;
  return a;
}

/** The transpose [cols, rows] of a rows×cols matrix (any numeric array; the result is float64). */
export function denseTranspose(a: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  const B = 32;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(r0 + B, rows);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(c0 + B, cols);
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) t[c * rows + r] = a[r * cols + c];
      }
    }
  }
  return t;
}

/** Transposes of {@link denseMatmul}: `transA` means `a` is stored [k, m]; `transB` means `b` is stored [n, k]. */
export interface DenseMatmulOptions {
  /** Use aᵀ. */
  transA?: boolean;
  /** Use bᵀ. */
  transB?: boolean;
}

/**
 * op(a)·op(b) in float64 for op(a) m×k and op(b) k×n → m×n. Operands are first brought to the
 * layout "a as [m, k], b as [k, n]" and multiplied row by row (each output row is a sum of rows of b).
 */
export function denseMatmul(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  k: number,
  n: number,
  opts: DenseMatmulOptions = {},
): Float64Array {
  ensure(a.length === m * k, "denseMatmul", () => `a has ${a.length} values, expected ${m}×${k}`);
  ensure(b.length === k * n, "denseMatmul", () => `b has ${b.length} values, expected ${k}×${n}`);
  const A = opts.transA ? denseTranspose(a, k, m) : a;
  const B = opts.transB ? denseTranspose(b, n, k) : b instanceof Float64Array ? b : Float64Array.from(b);
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const o = i * n;
    for (let t = 0; t < k; t++) {
      const av = A[i * k + t];
      if (av === 0) continue;
      const bo = t * n;
      for (let j = 0; j < n; j++) out[o + j] += av * B[bo + j];
    }
  }
  return out;
}

/** Σ a_i² over all entries (the squared Frobenius norm). */
export function frobeniusNormSquared(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return s;
}

/** √(Σ a_i²), scaled against overflow and underflow. */
export function frobeniusNorm(a: ArrayLike<number>): number {
  const scale = denseMaxAbs(a);
  if (scale === 0 || !Number.isFinite(scale)) return scale;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const v = a[i] / scale;
    s += v * v;
  }
  return scale * Math.sqrt(s);
}

/** max |a_i| (0 for an empty array). */
export function denseMaxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const v = Math.abs(a[i]);
    if (v > m || v !== v) m = v;
  }
  return m;
}

/** Columns [c0, c1) of a rows×cols matrix, as a rows×(c1−c0) matrix. */
export function denseColumns(a: ArrayLike<number>, rows: number, cols: number, c0: number, c1: number): Float64Array {
  ensure(0 <= c0 && c0 <= c1 && c1 <= cols, "denseColumns", () => `range [${c0}, ${c1}) is outside 0..${cols}`);
  const w = c1 - c0;
  const out = new Float64Array(rows * w);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < w; c++) out[r * w + c] = a[r * cols + c0 + c];
  }
  return out;
}

/**
 * An orthonormal basis Q [m, r] of the column space of y [m, r] (m ≥ r) by Householder QR, with the
 * signs chosen so that diag(R) ≥ 0 in y = Q·R: column j of Q then points the way column j of y does
 * once the earlier columns are removed. Columns of y that are (numerically) dependent on earlier ones still
 * get an orthonormal column, so the result always has QᵀQ = I.
 */
export function orthonormalColumns(y: ArrayLike<number>, m: number, r: number): Float64Array {
  ensure(r <= m, "orthonormalColumns", () => `needs at least as many rows as columns, got ${m}×${r}`);
  ensure(y.length === m * r, "orthonormalColumns", () => `y has ${y.length} values, expected ${m}×${r}`);
  // Work on yᵀ so that every column is a contiguous row; reflectors are kept in the rows of w.
  const w = denseTranspose(y, m, r);
  const tau = new Float64Array(r);
  const beta = new Float64Array(r);
  for (let j = 0; j < r; j++) {
    const o = j * m;
    const h = householder(w, o + j, m - j);
    tau[j] = h.tau;
    beta[j] = h.beta;
    if (h.tau === 0) continue;
    for (let i = j + 1; i < r; i++) {
      const oi = i * m;
      let s = w[oi + j];
      for (let t = j + 1; t < m; t++) s += w[o + t] * w[oi + t];
      s *= h.tau;
      w[oi + j] -= s;
      for (let t = j + 1; t < m; t++) w[oi + t] -= s * w[o + t];
    }
  }
  // Q = H_0⋯H_{r−1}·[I; 0], built as Qᵀ = [I 0]·H_{r−1}⋯H_0, applying H_j to rows j..r−1.
  const qt = new Float64Array(r * m);
  for (let i = 0; i < r; i++) qt[i * m + i] = 1;
  for (let j = r - 1; j >= 0; j--) {
    const tj = tau[j];
    if (tj === 0) continue;
    const o = j * m;
    for (let i = j; i < r; i++) {
      const oi = i * m;
      let s = qt[oi + j];
      for (let t = j + 1; t < m; t++) s += qt[oi + t] * w[o + t];
      s *= tj;
      qt[oi + j] -= s;
      for (let t = j + 1; t < m; t++) qt[oi + t] -= s * w[o + t];
    }
  }
  for (let j = 0; j < r; j++) {
    if (beta[j] < 0) {
      for (let t = 0; t < m; t++) qt[j * m + t] = -qt[j * m + t];
    }
  }
  return denseTranspose(qt, r, m);
}

/** A Householder reflector H = I − τ·v·vᵀ with v₀ = 1 and H·x = β·e₀. */
export interface Reflector {
  /** τ (0 when x is already a multiple of e₀). */
  tau: number;
  /** β = ∓‖x‖, the value H·x leaves in position 0. */
  beta: number;
}

/**
 * Builds the reflector for x = a[off .. off+len) in place: on return a[off] = β and a[off+1 ..] holds
 * v₁.. (v₀ = 1 is implicit). β has the sign opposite to x₀ so that forming v does not cancel.
 */
export function householder(a: Float64Array, off: number, len: number): Reflector {
  const x0 = a[off];
  let tail = 0;
  let scale = 0;
  for (let t = 1; t < len; t++) scale = Math.max(scale, Math.abs(a[off + t]));
  if (scale === 0) return { tau: 0, beta: x0 };
  for (let t = 1; t < len; t++) {
    const v = a[off + t] / scale;
    tail += v * v;
  }
  const s0 = x0 / scale;
  const norm = scale * Math.sqrt(s0 * s0 + tail);
  const beta = x0 >= 0 ? -norm : norm;
  const tau = (beta - x0) / beta;
  const inv = 1 / (x0 - beta);
  for (let t = 1; t < len; t++) a[off + t] *= inv;
  a[off] = beta;
  return { tau, beta };
}
