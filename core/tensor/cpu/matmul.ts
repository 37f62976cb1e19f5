/**
 * CPU matrix multiply. Operands are brought to the "A rows × Bᵀ rows" layout (transposing when
 * needed). f32 products run in a WebAssembly SIMD kernel (wasm_gemm.ts); f64 products and tiny ones in a
 * 4×2 register-blocked TypeScript kernel that accumulates in doubles and rounds once.
 */
import type { MatmulGeometry } from "../shape.ts";
import { gemmF32Wasm } from "./wasm_gemm.ts";

/** Products smaller than this many multiply-adds stay in TypeScript (the WebAssembly call costs more). */
const WASM_MIN_WORK = 16384;

type FloatArray = Float32Array | Float64Array;

function transposeInto(src: FloatArray, off: number, rows: number, cols: number, dst: FloatArray): void {
  // dst[c, r] = src[off + r*cols + c], in 32×32 tiles for cache friendliness.
  const T = 32;
  for (let r0 = 0; r0 < rows; r0 += T) {
    const r1 = Math.min(r0 + T, rows);
    for (let c0 = 0; c0 < cols; c0 += T) {
      const c1 = Math.min(c0 + T, cols);
      for (let r = r0; r < r1; r++) {
        const so = off + r * cols;
        for (let c = c0; c < c1; c++) dst[c * rows + r] = src[so + c];
      }
    }
  }
}

/**
 * C[m, n] = Σ_k A[m, k] · Bt[n, k] for row-major A (offset aOff) and Bt (offset bOff),
 * written to C at cOff. All loop bounds are integers (fractional bounds deoptimise V8).
 */
export function gemmABt(
  A: FloatArray,
  aOff: number,
  Bt: FloatArray,
  bOff: number,
  C: FloatArray,
  cOff: number,
  m: number,
  n: number,
  k: number,
): void {
  m = m | 0;
  n = n | 0;
  k = k | 0;
  let i = 0;
  for (; i + 4 <= m; i += 4) {
    const a0 = aOff + i * k, a1 = a0 + k, a2 = a1 + k, a3 = a2 + k;
    let j = 0;
    for (; j + 2 <= n; j += 2) {
      const b0 = bOff + j * k, b1 = b0 + k;
      let c00 = 0, c01 = 0, c10 = 0, c11 = 0, c20 = 0, c21 = 0, c30 = 0, c31 = 0;
      for (let t = 0; t < k; t++) {
        const x0 = Bt[b0 + t], x1 = Bt[b1 + t];
        const y0 = A[a0 + t], y1 = A[a1 + t], y2 = A[a2 + t], y3 = A[a3 + t];
        c00 += y0 * x0;
        c01 += y0 * x1;
        c10 += y1 * x0;
        c11 += y1 * x1;
        c20 += y2 * x0;
        c21 += y2 * x1;
        c30 += y3 * x0;
        c31 += y3 * x1;
      }
      const o = cOff + i * n + j;
      C[o] = c00;
      C[o + 1] = c01;
      C[o + n] = c10;
      C[o + n + 1] = c11;
      C[o + 2 * n] = c20;
      C[o + 2 * n + 1] = c21;
      C[o + 3 * n] = c30;
      C[o + 3 * n + 1] = c31;
    }
    for (; j < n; j++) {
      const b0 = bOff + j * k;
      let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
      for (let t = 0; t < k; t++) {
        const x0 = Bt[b0 + t];
        c0 += A[a0 + t] * x0;
        c1 += A[a1 + t] * x0;
        c2 += A[a2 + t] * x0;
        c3 += A[a3 + t] * x0;
      }
      const o = cOff + i * n + j;
      C[o] = c0;
      C[o + n] = c1;
      C[o + 2 * n] = c2;
      C[o + 3 * n] = c3;
    }
  }
  for (; i < m; i++) {
    const a0 = aOff + i * k;
    for (let j = 0; j < n; j++) {
      const b0 = bOff + j * k;
      let c = 0;
      for (let t = 0; t < k; t++) c += A[a0 + t] * Bt[b0 + t];
      C[cOff + i * n + j] = c;
    }
  }
}

/** Batched matmul into `out` following a validated geometry. */
export function matmulInto(
  A: FloatArray,
  B: FloatArray,
  out: FloatArray,
  g: MatmulGeometry,
  transA: boolean,
  transB: boolean,
): void {
  const { m, n, k } = g;
  const Ctor = A instanceof Float64Array ? Float64Array : Float32Array;
  const aTmp = transA ? new Ctor(m * k) : undefined;
  const bTmp = transB ? undefined : new Ctor(n * k);
  let lastA = -1;
  let lastB = -1;
  for (let bi = 0; bi < g.batch; bi++) {
    const ao = bi * g.strideA;
    const bo = bi * g.strideB;
    let aSrc: FloatArray = A;
    let aOff = ao;
    if (aTmp) {
      if (ao !== lastA) transposeInto(A, ao, k, m, aTmp);
      lastA = ao;
      aSrc = aTmp;
      aOff = 0;
    }
    let bSrc: FloatArray = B;
    let bOff = bo;
    if (bTmp) {
      if (bo !== lastB) transposeInto(B, bo, k, n, bTmp);
      lastB = bo;
      bSrc = bTmp;
      bOff = 0;
    }
    if (
      aSrc instanceof Float32Array && bSrc instanceof Float32Array && out instanceof Float32Array &&
      m * n * k >= WASM_MIN_WORK
    ) {
      // f32: WebAssembly SIMD kernel (f32 accumulation, ~6e-7 relative at n = 1024).
      gemmF32Wasm(aSrc, aOff, bSrc, bOff, out, bi * m * n, m, n, k);
    } else {
      gemmABt(aSrc, aOff, bSrc, bOff, out, bi * m * n, m, n, k);
    }
  }
}
