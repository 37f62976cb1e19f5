import type { DType, HostArray } from "./dtype.ts";
import type { Storage, Tensor } from "./tensor.ts";

/** Elementwise functions of one argument. */
export type UnaryOp =
  | "neg"
  | "abs"
  | "sign"
  | "exp"
  | "log"
  | "sqrt"
  | "rsqrt"
  | "square"
  | "recip"
  | "tanh"
  | "sigmoid"
  | "relu"
  | "silu"
  | "gelu" // exact: x·Φ(x) with erf
  | "gelu_tanh" // tanh approximation
  | "quick_gelu"; // x·sigmoid(1.702x)

/** Elementwise functions of two broadcast arguments. */
export type BinaryOp = "add" | "sub" | "mul" | "div" | "maximum" | "minimum";

/** Reductions over one axis. `maxabs` is max(|x|). */
export type ReduceOp = "sum" | "mean" | "max" | "min" | "maxabs";

/** Options of {@link Backend.matmul}. */
export interface MatmulOptions {
  /** Use aᵀ: `a` is stored as [..., K, M]. */
  transA?: boolean;
  /** Use bᵀ: `b` is stored as [..., N, K] (the PyTorch weight layout). */
  transB?: boolean;
}

/**
 * Attention mask of {@link Backend.softmax}. The last axis holds T keys; row r of the softmax is query
 * `r mod T` (so [heads, groups·T, T] layouts work). Masked entries get probability 0; a fully masked
 * row is all zeros.
 */
export interface SoftmaxMask {
  /** Query q may attend key k only if k ≤ q. */
  causal?: boolean;
  /** Block-diagonal: query q may attend key k only if segments[q] == segments[k] (i32 [T]). */
  segments?: Tensor;
}

/**
 * A uniform quantizer (masquant-algorithm §5.1). Ranges are taken over the last axis: per row
 * (weights: per output channel; activations: per token), or per group of `groupSize` consecutive
 * elements along it.
 *
 * - symmetric: Δ = clamp(max|x| / (2^(b−1)−1), 1e-5, 1e4), q = clamp(round(x/Δ), −(2^(b−1)−1), 2^(b−1)−1).
 * - asymmetric: Δ = clamp((max−min)/(2^b−1), 1e-5, 1e4), z = round(clamp(−min/Δ, −1e4, 1e4)),
 *   u = clamp(round(x/Δ)+z, 0, 2^b−1), x̂ = (u−z)·Δ.
 *
 * Rounding is half to even. `bits >= 16` is the identity.
 */
export interface QuantSpec {
  /** Bits per value, 2..16. */
  bits: number;
  /** Symmetric grid (no zero point) or asymmetric (zero point). */
  symmetric: boolean;
  /** Group size along the last axis; 0 means the whole row. */
  groupSize: number;
}

/** Extra switches of the fake quantizer. */
export interface FakeQuantOptions {
  /** When false, rounding is replaced by the identity (for gradient checks). Default true. */
  round?: boolean;
}

/** Integer quantization of a tensor: x ≈ (q − zero) · scale, per row or per group. */
export interface Quantized {
  /** Signed integer codes, shape of x: `i8`, or `int4` when requested and bits ≤ 4. Asymmetric
   * codes are stored shifted by −2^(b−1) so they fit a signed type. */
  q: Tensor;
  /** f32 [rows, groups] step sizes (groups = 1 for per-row quantization). */
  scale: Tensor;
  /** i32 [rows, groups] zero points on the same shifted scale as `q`; absent when symmetric. */
  zero?: Tensor;
}

/**
 * The op set the algorithms are written against. One CPU implementation (the reference) and one
 * WebGPU implementation; the autodiff tape also implements it by delegation.
 *
 * Conventions: ops never modify their inputs; outputs are new tensors owned by the caller (dispose
 * them, or run inside `scope`). Float ops accept f32 (and f64 on backends with `supportsF64`).
 * Bad shapes, dtypes or arguments raise a TensorOpError naming the op and the shapes.
 */
export interface Backend {
  /** "cpu", "webgpu", or a wrapper's name. */
  readonly name: string;
  /** Whether f64 tensors are supported. */
  readonly supportsF64: boolean;

  // ---- memory ---------------------------------------------------------------------------
  /** Uploads host data. `int4` takes unpacked values in −8..7. */
  tensor(data: ArrayLike<number>, shape: readonly number[], dtype?: DType): Tensor;
  /** A tensor filled with `value`. */
  full(shape: readonly number[], value: number, dtype?: DType): Tensor;
  /** Reads a tensor back (int4 comes back unpacked as Int8Array). */
  read(t: Tensor): Promise<HostArray>;
  /** Frees storage whose last reference was disposed. Called by Tensor.dispose(). */
  release(s: Storage): void;
  /** Waits until all submitted work has finished. */
  sync(): Promise<void>;
  /** Bytes of backend memory currently held by live tensors (and, for pooled backends, in pools). */
  memory(): { liveBytes: number; pooledBytes: number };

  // ---- layout -----------------------------------------------------------------------------
  /** Same data, new shape (no copy; the storage is shared). One dimension may be −1. */
  reshape(x: Tensor, shape: readonly number[]): Tensor;
  /** Permutes axes (copies). */
  transpose(x: Tensor, perm: readonly number[]): Tensor;
  /** Elements [start, end) along `axis` (copies). */
  slice(x: Tensor, axis: number, start: number, end: number): Tensor;
  /** Joins tensors along `axis`. */
  concat(xs: readonly Tensor[], axis: number): Tensor;
  /** Rows `idx` (i32 [n]) of a 2-D table [R, C] → [n, C]. */
  gatherRows(table: Tensor, idx: Tensor): Tensor;
  /** A copy of `base` [R, C] whose rows `idx` (i32 [n], distinct) are replaced by `rows` [n, C]. */
  scatterRows(base: Tensor, rows: Tensor, idx: Tensor): Tensor;
  /** Converts dtype. Float→int truncates toward zero after range checks are the caller's job;
   * i8↔int4 packs/unpacks (values must fit). */
  cast(x: Tensor, dtype: DType): Tensor;

  // ---- elementwise ------------------------------------------------------------------------
  /** f(x) elementwise. */
  unary(op: UnaryOp, x: Tensor): Tensor;
  /** gy · f′(x), the backward of {@link unary}. */
  unaryGrad(op: UnaryOp, x: Tensor, gy: Tensor): Tensor;
  /** a ∘ b with NumPy broadcasting. */
  binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor;
  /** x · mul + add. */
  affine(x: Tensor, mul: number, add: number): Tensor;
  /** sign(x)·|x|^p (odd extension; use on non-negative data for the usual power). */
  pow(x: Tensor, p: number): Tensor;
  /** min(max(x, lo), hi). */
  clamp(x: Tensor, lo: number, hi: number): Tensor;

  // ---- reductions ---------------------------------------------------------------------------
  /** Reduces one axis. */
  reduce(op: ReduceOp, x: Tensor, axis: number, keepDims?: boolean): Tensor;
  /**
   * Per-column max |x| of a 2-D tensor [R, C] over the rows r with `rowIds[r] == id` (all rows when
   * `rowIds` is omitted) → [C]; 0 where no row qualifies. The MASQuant calibration statistic.
   */
  channelMaxAbs(x: Tensor, rowIds?: Tensor, id?: number): Tensor;

  // ---- linear algebra ------------------------------------------------------------------------
  /** Batched matrix product; batch dims must be equal or absent on one side. */
  matmul(a: Tensor, b: Tensor, opts?: MatmulOptions): Tensor;

  // ---- transformer ops ---------------------------------------------------------------------
  /** Softmax over the last axis with an optional attention mask. */
  softmax(x: Tensor, mask?: SoftmaxMask): Tensor;
  /** Backward of softmax: y ⊙ (gy − Σ gy⊙y). */
  softmaxGrad(y: Tensor, gy: Tensor): Tensor;
  /** x / rms(x) · w over the last axis (w optional, float32 statistics). */
  rmsNorm(x: Tensor, w: Tensor | undefined, eps: number): Tensor;
  /** ∂/∂x of rmsNorm for upstream gy. */
  rmsNormGrad(x: Tensor, w: Tensor | undefined, eps: number, gy: Tensor): Tensor;
  /** (x − mean)/sqrt(var + eps) · w + b over the last axis. */
  layerNorm(x: Tensor, w: Tensor | undefined, b: Tensor | undefined, eps: number): Tensor;
  /**
   * Cos/sin tables for rotary embeddings: for token t and frequency i,
   * angle = positions[axis(i), t] · invFreq[i], where frequencies are split into consecutive
   * `sections` (summing to invFreq.length) taken from position rows 0, 1, 2, … (M-RoPE);
   * a single section is 1-D RoPE. positions: i32 [P, T]. Returns [cos, sin], each [T, F].
   */
  ropeTables(positions: Tensor, invFreq: Tensor, sections: readonly number[]): [Tensor, Tensor];
  /** Rotate-half rotary embedding of x [T, H, D] with cos/sin [T, D/2]. */
  rotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor;

  // ---- quantization -------------------------------------------------------------------------
  /** Quantize-dequantize over the last axis (float in, float out). */
  fakeQuant(x: Tensor, spec: QuantSpec, opts?: FakeQuantOptions): Tensor;
  /**
   * Straight-through backward of fakeQuant: rounding has derivative 1, the gradient also flows
   * through the step size Δ into the min/max elements (masquant-algorithm §4.5); zero points carry
   * no gradient and clamped elements pass none through x.
   */
  fakeQuantGrad(x: Tensor, gy: Tensor, spec: QuantSpec, opts?: FakeQuantOptions): Tensor;
  /** Integer quantization over the last axis; int4 codes when `packInt4` and bits ≤ 4. */
  quantize(x: Tensor, spec: QuantSpec, packInt4?: boolean): Quantized;
  /** (q − zero)·scale back to f32 (inverse of {@link quantize}). */
  dequantize(qz: Quantized, groupSize: number): Tensor;
  /**
   * y[m, n] = (Σ_k a[m,k]·b[n,k]) · aScale[m] · bScale[n] + bias[n] with exact int32 accumulation.
   * a: i8 [M, K] (per-row scale aScale f32 [M]); b: i8 or int4 [N, K] (bScale f32 [N]).
   */
  int8Matmul(a: Tensor, aScale: Tensor, b: Tensor, bScale: Tensor, bias?: Tensor): Tensor;
}
