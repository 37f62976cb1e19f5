/**
 * The CPU backend: the numerical reference every kernel is checked against. Float tensors are
 * Float32Array (or Float64Array for f64); arithmetic runs in JS doubles and is rounded to the
 * storage type once per output element.
 */
import type {
  Backend,
  BinaryOp,
  FakeQuantOptions,
  MatmulOptions,
  Quantized,
  QuantSpec,
  ReduceOp,
  SoftmaxMask,
  UnaryOp,
} from "../backend.ts";
import { type DType, DTYPES, type HostArray, hostArray, isFloat, toHostArray } from "../dtype.ts";
import { check, fmtShape, TensorOpError } from "../errors.ts";
import { broadcastShapes, broadcastStrides, groupsPerRow, matmulGeometry, normAxis, resolveReshape } from "../shape.ts";
import { shapeSize, type Storage, stridesOf, Tensor } from "../tensor.ts";
import {
  checkChannelMaxAbs,
  checkConcat,
  checkDequantize,
  checkGatherRows,
  checkInt8Matmul,
  checkRopeTables,
  checkRotary,
  checkScatterRows,
  checkSlice,
  checkSoftmaxMask,
  checkTranspose,
} from "../validate.ts";
import { type GroupParams, groupParams, roundHalfEven, symMax, validateQuantSpec } from "../quant_math.ts";
import { binaryFn, unaryDerivative, unaryFn } from "./elementwise.ts";
import { gemmABt, matmulInto } from "./matmul.ts";
import { gemmF32Wasm } from "./wasm_gemm.ts";
import { packInt4, unpackInt4 } from "./int4.ts";

/** CPU storage: a host array (int4 is packed into 32-bit words, eight values per word per row). */
export class CpuStorage implements Storage {
  refs = 1;
  /** `pooled`: the array came from the backend's pool and returns to it when released. */
  constructor(readonly data: HostArray | Uint32Array, readonly bytes: number, readonly pooled = false) {}
}

/** Bytes of freed arrays the backend keeps for reuse. */
const POOL_BYTES = 256 * 2 ** 20;

type FloatArray = Float32Array | Float64Array;

const identity = (x: number) => x;

/** Options of the CPU backend. */
export interface CpuBackendOptions {
  /** Name shown in messages (default "cpu"). */
  name?: string;
}

/** The reference backend in plain TypeScript. */
export class CpuBackend implements Backend {
  readonly name: string;
  readonly supportsF64 = true;
  #live = 0;

  constructor(opts: CpuBackendOptions = {}) {
    this.name = opts.name ?? "cpu";
  }

  // ---- memory ----------------------------------------------------------------------------------

  readonly #pool = new Map<string, HostArray[]>();
  #pooledBytes = 0;
  readonly #owned = new WeakSet<HostArray | Uint32Array>();

  #make(shape: readonly number[], dtype: DType, data: HostArray | Uint32Array): Tensor {
    const bytes = data.byteLength;
    this.#live += bytes;
    return new Tensor(this, [...shape], dtype, new CpuStorage(data, bytes, this.#owned.has(data)));
  }

  /**
   * A zeroed output array for an op: reused from the pool of released op outputs when one of the same
   * kind and length is free. Recycling keeps the resident memory flat over long runs (the same shapes
   * recur layer after layer) instead of leaving freed arrays to the garbage collector.
   */
  #alloc(dtype: DType, n: number): HostArray {
    const key = `${dtype}:${n}`;
    const a = this.#pool.get(key)?.pop();
    if (a) {
      this.#pooledBytes -= a.byteLength;
      a.fill(0);
      this.#owned.add(a);
      return a;
    }
    const fresh = hostArray(dtype, n);
    this.#owned.add(fresh);
    return fresh;
  }

  /** Wraps a host array as a tensor without copying (the array must not be modified afterwards). */
  wrap(data: HostArray, shape: readonly number[], dtype: DType): Tensor {
    check(
      shapeSize(shape) === data.length,
      "tensor",
      () => `${data.length} values do not fill shape ${fmtShape(shape)}`,
    );
    if (dtype === "int4") return this.#make(shape, dtype, packInt4(data as Int8Array, shape));
    return this.#make(shape, dtype, data);
  }

  /** The host array behind a tensor (unpacked copy for int4). Synchronous: CPU only. */
  data(t: Tensor): HostArray {
    this.#own("data", t);
    const s = t.storage as CpuStorage;
    if (t.dtype === "int4") return unpackInt4(s.data as Uint32Array, t.shape);
    return s.data as HostArray;
  }

  tensor(data: ArrayLike<number>, shape: readonly number[], dtype: DType = "f32"): Tensor {
    check(DTYPES.includes(dtype), "tensor", `unsupported dtype ${dtype}`);
    check(shape.every((d) => Number.isInteger(d) && d >= 0), "tensor", () => `bad shape ${fmtShape(shape)}`);
    check(
      shapeSize(shape) === data.length,
      "tensor",
      () => `${data.length} values do not fill shape ${fmtShape(shape)}`,
    );
    return this.wrap(toHostArray(data, dtype), shape, dtype);
  }

  full(shape: readonly number[], value: number, dtype: DType = "f32"): Tensor {
    const a = this.#alloc(dtype, shapeSize(shape));
    if (value !== 0) (a as Float64Array).fill(value);
    return this.wrap(a, shape, dtype);
  }

  read(t: Tensor): Promise<HostArray> {
    const d = this.data(t);
    return Promise.resolve(d.slice() as HostArray);
  }

  release(s: Storage): void {
    const c = s as CpuStorage;
    this.#live -= c.bytes;
    if (!c.pooled || this.#pooledBytes + c.bytes > POOL_BYTES || c.data instanceof Uint32Array) return;
    const d = c.data as HostArray;
    const dtype = d instanceof Float32Array
      ? "f32"
      : d instanceof Float64Array
      ? "f64"
      : d instanceof Int32Array
      ? "i32"
      : d instanceof Int8Array
      ? "i8"
      : undefined;
    if (!dtype || d.length === 0) return;
    const key = `${dtype}:${d.length}`;
    let list = this.#pool.get(key);
    if (!list) this.#pool.set(key, list = []);
    list.push(d);
    this.#pooledBytes += c.bytes;
  }

  sync(): Promise<void> {
    return Promise.resolve();
  }

  memory(): { liveBytes: number; pooledBytes: number } {
    return { liveBytes: this.#live, pooledBytes: this.#pooledBytes };
  }

  #own(op: string, ...ts: (Tensor | undefined)[]): void {
    for (const t of ts) {
      if (!t) continue;
      check(t.backend === this, op, () => `${t} belongs to another backend`);
      check(!t.disposed, op, () => `${t} was disposed`);
    }
  }

  #float(op: string, ...ts: (Tensor | undefined)[]): DType {
    this.#own(op, ...ts);
    let dt: DType | undefined;
    for (const t of ts) {
      if (!t) continue;
      check(isFloat(t.dtype), op, () => `expects float tensors, got ${t.dtype} ${fmtShape(t.shape)}`);
      if (dt === undefined) dt = t.dtype;
      check(dt === t.dtype, op, () => `mixed dtypes ${dt} and ${t.dtype}`);
    }
    return dt ?? "f32";
  }

  #f(dtype: DType): (x: number) => number {
    return dtype === "f32" ? Math.fround : identity;
  }

  #fl(t: Tensor): FloatArray {
    return (t.storage as CpuStorage).data as FloatArray;
  }

  #i32(op: string, t: Tensor): Int32Array {
    this.#own(op, t);
    check(t.dtype === "i32", op, () => `expects an i32 index tensor, got ${t.dtype} ${fmtShape(t.shape)}`);
    return (t.storage as CpuStorage).data as Int32Array;
  }

  // ---- layout ----------------------------------------------------------------------------------

  reshape(x: Tensor, shape: readonly number[]): Tensor {
    this.#own("reshape", x);
    const out = resolveReshape("reshape", x.shape, shape);
    if (x.dtype === "int4") {
      check(
        out[out.length - 1] === x.shape[x.rank - 1],
        "reshape",
        () => `int4 tensors keep their last axis (packing); ${fmtShape(x.shape)} -> ${fmtShape(out)}`,
      );
    }
    x.storage.refs++;
    return new Tensor(this, out, x.dtype, x.storage);
  }

  transpose(x: Tensor, perm: readonly number[]): Tensor {
    this.#own("transpose", x);
    const r = x.rank;
    const outShape = checkTranspose(x, perm);
    const src = this.data(x);
    const inStr = stridesOf(x.shape);
    const pStr = perm.map((p) => inStr[p]);
    const n = x.size;
    const out = this.#alloc(x.dtype, n);
    const idx = new Array<number>(r).fill(0);
    let off = 0;
    for (let i = 0; i < n; i++) {
      out[i] = src[off];
      for (let a = r - 1; a >= 0; a--) {
        idx[a]++;
        off += pStr[a];
        if (idx[a] < outShape[a]) break;
        off -= pStr[a] * outShape[a];
        idx[a] = 0;
      }
    }
    return this.wrap(out, outShape, x.dtype);
  }

  slice(x: Tensor, axis: number, start: number, end: number): Tensor {
    this.#own("slice", x);
    const a = normAxis("slice", axis, x.rank);
    const d = x.shape[a];
    checkSlice(x, axis, start, end);
    const outer = shapeSize(x.shape.slice(0, a));
    const inner = shapeSize(x.shape.slice(a + 1));
    const src = this.data(x);
    const len = end - start;
    const out = this.#alloc(x.dtype, outer * len * inner);
    for (let o = 0; o < outer; o++) {
      const s0 = (o * d + start) * inner;
      (out as Float64Array).set((src as Float64Array).subarray(s0, s0 + len * inner), o * len * inner);
    }
    const shape = [...x.shape];
    shape[a] = len;
    return this.wrap(out, shape, x.dtype);
  }

  concat(xs: readonly Tensor[], axis: number): Tensor {
    const { axis: a, shape } = checkConcat(xs, axis);
    this.#own("concat", ...xs);
    const outer = shapeSize(xs[0].shape.slice(0, a));
    const inner = shapeSize(xs[0].shape.slice(a + 1));
    const total = shape[a];
    const out = this.#alloc(xs[0].dtype, outer * total * inner);
    let off = 0;
    for (const t of xs) {
      const src = this.data(t) as Float64Array;
      const len = t.shape[a] * inner;
      for (let o = 0; o < outer; o++) {
        (out as Float64Array).set(src.subarray(o * len, (o + 1) * len), o * total * inner + off);
      }
      off += len;
    }
    return this.wrap(out, shape, xs[0].dtype);
  }

  gatherRows(table: Tensor, idx: Tensor): Tensor {
    const ix = this.#i32("gatherRows", idx);
    this.#own("gatherRows", table);
    checkGatherRows(table, idx);
    const [rows, cols] = table.shape;
    const src = this.data(table) as Float64Array;
    const out = this.#alloc(table.dtype, ix.length * cols) as Float64Array;
    for (let i = 0; i < ix.length; i++) {
      const r = ix[i];
      check(r >= 0 && r < rows, "gatherRows", () => `index ${r} at position ${i} is outside [0, ${rows})`);
      out.set(src.subarray(r * cols, (r + 1) * cols), i * cols);
    }
    return this.wrap(out, [ix.length, cols], table.dtype);
  }

  scatterRows(base: Tensor, rows: Tensor, idx: Tensor): Tensor {
    const ix = this.#i32("scatterRows", idx);
    this.#own("scatterRows", base, rows);
    checkScatterRows(base, rows, idx);
    const [nr, cols] = base.shape;
    const out = (this.data(base) as Float64Array).slice();
    const src = this.data(rows) as Float64Array;
    for (let i = 0; i < ix.length; i++) {
      const r = ix[i];
      check(r >= 0 && r < nr, "scatterRows", () => `index ${r} at position ${i} is outside [0, ${nr})`);
      out.set(src.subarray(i * cols, (i + 1) * cols), r * cols);
    }
    return this.wrap(out, base.shape, base.dtype);
  }

  cast(x: Tensor, dtype: DType): Tensor {
    this.#own("cast", x);
    check(DTYPES.includes(dtype), "cast", `unsupported dtype ${dtype}`);
    const src = this.data(x);
    if (dtype === "int4" || dtype === "i8") {
      for (let i = 0; i < src.length; i++) {
        const v = isFloat(x.dtype) ? Math.trunc(src[i]) : src[i];
        const lo = dtype === "int4" ? -8 : -128;
        const hi = dtype === "int4" ? 7 : 127;
        check(
          v >= lo && v <= hi,
          "cast",
          () => `value ${src[i]} at ${i} does not fit ${dtype} (shape ${fmtShape(x.shape)})`,
        );
      }
    }
    const out = this.#alloc(dtype, src.length);
    if (isFloat(x.dtype) && !isFloat(dtype)) {
      for (let i = 0; i < src.length; i++) out[i] = Math.trunc(src[i]);
    } else {
      (out as Float64Array).set(src as Float64Array);
    }
    return this.wrap(out, x.shape, dtype);
  }

  // ---- elementwise -----------------------------------------------------------------------------

  unary(op: UnaryOp, x: Tensor): Tensor {
    const dt = this.#float(`unary(${op})`, x);
    const fn = unaryFn(op);
    const src = this.#fl(x);
    const out = this.#alloc(dt, src.length) as FloatArray;
    for (let i = 0; i < src.length; i++) out[i] = fn(src[i]);
    return this.wrap(out, x.shape, dt);
  }

  unaryGrad(op: UnaryOp, x: Tensor, gy: Tensor): Tensor {
    const dt = this.#float(`unaryGrad(${op})`, x, gy);
    check(x.size === gy.size, `unaryGrad(${op})`, () => `x ${fmtShape(x.shape)} and gy ${fmtShape(gy.shape)} differ`);
    const d = unaryDerivative(op);
    const xs = this.#fl(x);
    const gs = this.#fl(gy);
    const out = this.#alloc(dt, xs.length) as FloatArray;
    for (let i = 0; i < xs.length; i++) out[i] = gs[i] * d(xs[i]);
    return this.wrap(out, x.shape, dt);
  }

  binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
    const name = `binary(${op})`;
    const dt = this.#float(name, a, b);
    const shape = broadcastShapes(name, a.shape, b.shape);
    const fn = binaryFn(op);
    const A = this.#fl(a);
    const B = this.#fl(b);
    const n = shapeSize(shape);
    const out = this.#alloc(dt, n) as FloatArray;
    if (A.length === n && B.length === n) {
      for (let i = 0; i < n; i++) out[i] = fn(A[i], B[i]);
    } else if (B.length === 1) {
      const bv = B[0];
      if (A.length === n) { for (let i = 0; i < n; i++) out[i] = fn(A[i], bv); }
      else return this.#binaryGeneral(fn, a, b, shape, dt);
    } else if (
      A.length === n && shape.length >= 1 && B.length === shape[shape.length - 1] &&
      b.shape[b.rank - 1] === B.length
    ) {
      const c = B.length;
      for (let i = 0; i < n; i += c) for (let j = 0; j < c; j++) out[i + j] = fn(A[i + j], B[j]);
    } else {
      return this.#binaryGeneral(fn, a, b, shape, dt);
    }
    return this.wrap(out, shape, dt);
  }

  #binaryGeneral(fn: (a: number, b: number) => number, a: Tensor, b: Tensor, shape: number[], dt: DType): Tensor {
    const A = this.#fl(a);
    const B = this.#fl(b);
    const sa = broadcastStrides(a.shape, shape);
    const sb = broadcastStrides(b.shape, shape);
    const r = shape.length;
    const n = shapeSize(shape);
    const out = this.#alloc(dt, n) as FloatArray;
    const idx = new Array<number>(r).fill(0);
    let ia = 0;
    let ib = 0;
    for (let i = 0; i < n; i++) {
      out[i] = fn(A[ia], B[ib]);
      for (let ax = r - 1; ax >= 0; ax--) {
        idx[ax]++;
        ia += sa[ax];
        ib += sb[ax];
        if (idx[ax] < shape[ax]) break;
        ia -= sa[ax] * shape[ax];
        ib -= sb[ax] * shape[ax];
        idx[ax] = 0;
      }
    }
    return this.wrap(out, shape, dt);
  }

  affine(x: Tensor, mul: number, add: number): Tensor {
    const dt = this.#float("affine", x);
    const src = this.#fl(x);
    const out = this.#alloc(dt, src.length) as FloatArray;
    for (let i = 0; i < src.length; i++) out[i] = src[i] * mul + add;
    return this.wrap(out, x.shape, dt);
  }

  pow(x: Tensor, p: number): Tensor {
    const dt = this.#float("pow", x);
    const src = this.#fl(x);
    const out = this.#alloc(dt, src.length) as FloatArray;
    for (let i = 0; i < src.length; i++) {
      const v = src[i];
      out[i] = v < 0 ? -Math.pow(-v, p) : Math.pow(v, p);
    }
    return this.wrap(out, x.shape, dt);
  }

  clamp(x: Tensor, lo: number, hi: number): Tensor {
    const dt = this.#float("clamp", x);
    check(!(lo > hi), "clamp", `lo ${lo} > hi ${hi}`);
    const src = this.#fl(x);
    const out = this.#alloc(dt, src.length) as FloatArray;
    for (let i = 0; i < src.length; i++) out[i] = Math.min(Math.max(src[i], lo), hi);
    return this.wrap(out, x.shape, dt);
  }

  // ---- reductions ------------------------------------------------------------------------------

  reduce(op: ReduceOp, x: Tensor, axis: number, keepDims = false): Tensor {
    const name = `reduce(${op})`;
    const dt = this.#float(name, x);
    const a = normAxis(name, axis, x.rank);
    const n = x.shape[a];
    check(
      n > 0 || op === "sum" || op === "maxabs",
      name,
      () => `cannot reduce an empty axis ${a} of ${fmtShape(x.shape)}`,
    );
    const outer = shapeSize(x.shape.slice(0, a));
    const inner = shapeSize(x.shape.slice(a + 1));
    const src = this.#fl(x);
    const out = this.#alloc(dt, outer * inner) as FloatArray;
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        let base = o * n * inner + i;
        let acc: number;
        switch (op) {
          case "sum":
          case "mean":
            acc = 0;
            for (let k = 0; k < n; k++, base += inner) acc += src[base];
            if (op === "mean") acc /= n;
            break;
          case "max":
            acc = -Infinity;
            for (let k = 0; k < n; k++, base += inner) if (src[base] > acc || src[base] !== src[base]) acc = src[base];
            break;
          case "min":
            acc = Infinity;
            for (let k = 0; k < n; k++, base += inner) if (src[base] < acc || src[base] !== src[base]) acc = src[base];
            break;
          case "maxabs":
            acc = 0;
            for (let k = 0; k < n; k++, base += inner) {
              const v = Math.abs(src[base]);
              if (v > acc || v !== v) acc = v;
            }
            break;
        }
        out[o * inner + i] = acc;
      }
    }
    const shape = [...x.shape];
    if (keepDims) shape[a] = 1;
    else shape.splice(a, 1);
    return this.wrap(out, shape, dt);
  }

  channelMaxAbs(x: Tensor, rowIds?: Tensor, id = 0): Tensor {
    const dt = this.#float("channelMaxAbs", x);
    check(x.rank === 2, "channelMaxAbs", () => `expects [rows, channels], got ${fmtShape(x.shape)}`);
    const [rows, cols] = x.shape;
    let ids: Int32Array | undefined;
    if (rowIds) {
      ids = this.#i32("channelMaxAbs", rowIds);
      checkChannelMaxAbs(x, rowIds);
    }
    const src = this.#fl(x);
    const out = this.#alloc(dt, cols) as FloatArray;
    for (let r = 0; r < rows; r++) {
      if (ids && ids[r] !== id) continue;
      const base = r * cols;
      for (let c = 0; c < cols; c++) {
        const v = Math.abs(src[base + c]);
        if (v > out[c] || v !== v) out[c] = v;
      }
    }
    return this.wrap(out, [cols], dt);
  }

  // ---- matmul ----------------------------------------------------------------------------------

  matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
    const dt = this.#float("matmul", a, b);
    const g = matmulGeometry(a.shape, b.shape, !!opts.transA, !!opts.transB);
    const out = this.#alloc(dt, g.batch * g.m * g.n) as FloatArray;
    matmulInto(this.#fl(a), this.#fl(b), out, g, !!opts.transA, !!opts.transB);
    return this.wrap(out, g.outShape, dt);
  }

  // ---- transformer ops -------------------------------------------------------------------------

  softmax(x: Tensor, mask: SoftmaxMask = {}): Tensor {
    const dt = this.#float("softmax", x);
    check(x.rank >= 1, "softmax", "needs rank >= 1");
    const cols = x.shape[x.rank - 1];
    const rows = x.size / Math.max(cols, 1);
    let seg: Int32Array | undefined;
    if (mask.segments) {
      seg = this.#i32("softmax", mask.segments);
      checkSoftmaxMask(x, mask);
    }
    const src = this.#fl(x);
    const out = this.#alloc(dt, src.length) as FloatArray;
    const e = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      const q = r % cols;
      const base = r * cols;
      // Keys k < end are candidates (causal: k ≤ q); segments filter further.
      const end = mask.causal ? q + 1 : cols;
      const sq = seg ? seg[q] : 0;
      let m = -Infinity;
      for (let k = 0; k < end; k++) {
        if (seg && seg[k] !== sq) continue;
        const v = src[base + k];
        if (v > m) m = v;
      }
      if (m === -Infinity) continue;
      let sum = 0;
      for (let k = 0; k < end; k++) {
        if (seg && seg[k] !== sq) {
          e[k] = 0;
          continue;
        }
        const v = Math.exp(src[base + k] - m);
        e[k] = v;
        sum += v;
      }
      const inv = 1 / sum;
      for (let k = 0; k < end; k++) out[base + k] = e[k] * inv;
    }
    return this.wrap(out, x.shape, dt);
  }

  softmaxGrad(y: Tensor, gy: Tensor): Tensor {
    const dt = this.#float("softmaxGrad", y, gy);
    check(y.size === gy.size, "softmaxGrad", () => `y ${fmtShape(y.shape)} and gy ${fmtShape(gy.shape)} differ`);
    const cols = y.shape[y.rank - 1];
    const rows = y.size / Math.max(cols, 1);
    const Y = this.#fl(y);
    const G = this.#fl(gy);
    const out = this.#alloc(dt, Y.length) as FloatArray;
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let dot = 0;
      for (let k = 0; k < cols; k++) dot += Y[base + k] * G[base + k];
      for (let k = 0; k < cols; k++) out[base + k] = Y[base + k] * (G[base + k] - dot);
    }
    return this.wrap(out, y.shape, dt);
  }

  #normCheck(op: string, x: Tensor, w?: Tensor, b?: Tensor): DType {
    const dt = this.#float(op, x, w, b);
    const c = x.shape[x.rank - 1];
    for (const p of [w, b]) {
      if (p) {
        check(
          p.rank === 1 && p.shape[0] === c,
          op,
          () => `parameter ${fmtShape(p.shape)} does not match ${fmtShape(x.shape)}`,
        );
      }
    }
    return dt;
  }

  rmsNorm(x: Tensor, w: Tensor | undefined, eps: number): Tensor {
    const dt = this.#normCheck("rmsNorm", x, w);
    const cols = x.shape[x.rank - 1];
    const rows = x.size / cols;
    const X = this.#fl(x);
    const W = w ? this.#fl(w) : undefined;
    const out = this.#alloc(dt, X.length) as FloatArray;
    const f = this.#f(dt);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let ss = 0;
      for (let c = 0; c < cols; c++) ss += X[base + c] * X[base + c];
      const inv = f(1 / Math.sqrt(ss / cols + eps));
      for (let c = 0; c < cols; c++) {
        const v = f(X[base + c] * inv);
        out[base + c] = W ? v * W[c] : v;
      }
    }
    return this.wrap(out, x.shape, dt);
  }

  rmsNormGrad(x: Tensor, w: Tensor | undefined, eps: number, gy: Tensor): Tensor {
    const dt = this.#normCheck("rmsNormGrad", x, w, undefined);
    check(gy.size === x.size, "rmsNormGrad", () => `gy ${fmtShape(gy.shape)} does not match x ${fmtShape(x.shape)}`);
    const cols = x.shape[x.rank - 1];
    const rows = x.size / cols;
    const X = this.#fl(x);
    const G = this.#fl(gy);
    const W = w ? this.#fl(w) : undefined;
    const out = this.#alloc(dt, X.length) as FloatArray;
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let ss = 0;
      let dot = 0;
      for (let c = 0; c < cols; c++) {
        const xv = X[base + c];
        ss += xv * xv;
        dot += G[base + c] * (W ? W[c] : 1) * xv;
      }
      const inv = 1 / Math.sqrt(ss / cols + eps);
      const k = inv * inv * inv * dot / cols;
      for (let c = 0; c < cols; c++) out[base + c] = inv * G[base + c] * (W ? W[c] : 1) - k * X[base + c];
    }
    return this.wrap(out, x.shape, dt);
  }

  layerNorm(x: Tensor, w: Tensor | undefined, b: Tensor | undefined, eps: number): Tensor {
    const dt = this.#normCheck("layerNorm", x, w, b);
    const cols = x.shape[x.rank - 1];
    const rows = x.size / cols;
    const X = this.#fl(x);
    const W = w ? this.#fl(w) : undefined;
    const B = b ? this.#fl(b) : undefined;
    const out = this.#alloc(dt, X.length) as FloatArray;
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let mean = 0;
      for (let c = 0; c < cols; c++) mean += X[base + c];
      mean /= cols;
      let v = 0;
      for (let c = 0; c < cols; c++) v += (X[base + c] - mean) ** 2;
      const inv = 1 / Math.sqrt(v / cols + eps);
      for (let c = 0; c < cols; c++) {
        out[base + c] = (X[base + c] - mean) * inv * (W ? W[c] : 1) + (B ? B[c] : 0);
      }
    }
    return this.wrap(out, x.shape, dt);
  }

  ropeTables(positions: Tensor, invFreq: Tensor, sections: readonly number[]): [Tensor, Tensor] {
    const pos = this.#i32("ropeTables", positions);
    const dt = this.#float("ropeTables", invFreq);
    const { t, nf } = checkRopeTables(positions, invFreq, sections);
    const inv = this.#fl(invFreq);
    const axisOf = new Int32Array(nf);
    let i0 = 0;
    sections.forEach((len, ax) => {
      axisOf.fill(ax, i0, i0 + len);
      i0 += len;
    });
    const cos = this.#alloc(dt, t * nf) as FloatArray;
    const sin = this.#alloc(dt, t * nf) as FloatArray;
    const f = this.#f(dt);
    for (let tok = 0; tok < t; tok++) {
      for (let i = 0; i < nf; i++) {
        const ang = f(pos[axisOf[i] * t + tok] * inv[i]);
        cos[tok * nf + i] = Math.cos(ang);
        sin[tok * nf + i] = Math.sin(ang);
      }
    }
    return [this.wrap(cos, [t, nf], dt), this.wrap(sin, [t, nf], dt)];
  }

  rotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
    const dt = this.#float("rotary", x, cos, sin);
    check(x.rank === 3, "rotary", () => `x must be [T, H, D], got ${fmtShape(x.shape)}`);
    const [t, h, d] = x.shape;
    const half = d / 2;
    checkRotary(x, cos, sin);
    const X = this.#fl(x);
    const C = this.#fl(cos);
    const S = this.#fl(sin);
    const out = this.#alloc(dt, X.length) as FloatArray;
    for (let tok = 0; tok < t; tok++) {
      for (let hh = 0; hh < h; hh++) {
        const base = (tok * h + hh) * d;
        for (let i = 0; i < half; i++) {
          const c = C[tok * half + i];
          const s = S[tok * half + i];
          const x1 = X[base + i];
          const x2 = X[base + half + i];
          out[base + i] = x1 * c - x2 * s;
          out[base + half + i] = x2 * c + x1 * s;
        }
      }
    }
    return this.wrap(out, x.shape, dt);
  }

  // ---- quantization ----------------------------------------------------------------------------

  /** Visits every quantization group of x: (offset, length, params). */
  #groups(
    op: string,
    x: Tensor,
    spec: QuantSpec,
    visit: (off: number, len: number, p: GroupParams, row: number, g: number) => void,
  ): { rows: number; groups: number } {
    validateQuantSpec(op, spec);
    check(x.rank >= 1, op, "needs rank >= 1");
    const cols = x.shape[x.rank - 1];
    const groups = groupsPerRow(op, cols, spec.groupSize);
    const len = cols / groups;
    const rows = cols === 0 ? 0 : x.size / cols;
    const X = this.#fl(x);
    const f = this.#f(x.dtype);
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g < groups; g++) {
        const off = r * cols + g * len;
        let lo = Infinity;
        let hi = -Infinity;
        for (let i = 0; i < len; i++) {
          const v = X[off + i];
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        if (len === 0) lo = hi = 0;
        visit(off, len, groupParams(spec, lo, hi, f), r, g);
      }
    }
    return { rows, groups };
  }

  fakeQuant(x: Tensor, spec: QuantSpec, opts: FakeQuantOptions = {}): Tensor {
    const dt = this.#float("fakeQuant", x);
    if (spec.bits >= 16) {
      validateQuantSpec("fakeQuant", spec);
      return this.affine(x, 1, 0);
    }
    const round = opts.round ?? true;
    const X = this.#fl(x);
    const out = this.#alloc(dt, X.length) as FloatArray;
    const f = this.#f(dt);
    const sym = spec.symmetric;
    const hi = sym ? symMax(spec.bits) : 2 ** spec.bits - 1;
    const lo = sym ? -hi : 0;
    this.#groups("fakeQuant", x, spec, (off, len, p) => {
      const step = p.step;
      const z = p.zero;
      for (let i = off; i < off + len; i++) {
        const t = f(X[i] / step);
        let u = (round ? roundHalfEven(t) : t) + z;
        if (u > hi) u = hi;
        else if (u < lo) u = lo;
        out[i] = f((u - z) * step);
      }
    });
    return this.wrap(out, x.shape, dt);
  }

  fakeQuantGrad(x: Tensor, gy: Tensor, spec: QuantSpec, opts: FakeQuantOptions = {}): Tensor {
    const dt = this.#float("fakeQuantGrad", x, gy);
    check(x.size === gy.size, "fakeQuantGrad", () => `x ${fmtShape(x.shape)} and gy ${fmtShape(gy.shape)} differ`);
    if (spec.bits >= 16) return this.affine(gy, 1, 0);
    const round = opts.round ?? true;
    const X = this.#fl(x);
    const G = this.#fl(gy);
    const out = this.#alloc(dt, X.length) as FloatArray;
    const f = this.#f(dt);
    const levels = spec.symmetric ? symMax(spec.bits) : 2 ** spec.bits - 1;
    const hiL = spec.symmetric ? symMax(spec.bits) : 2 ** spec.bits - 1;
    const loL = spec.symmetric ? -hiL : 0;
    this.#groups("fakeQuantGrad", x, spec, (off, len, p) => {
      // d x̂_i / dΔ = (level − z) − [in range]·x_i/Δ  (STE: round′ = 1)
      let gStep = 0;
      let iMax = off;
      let iMin = off;
      let iAbs = off;
      const step = p.step;
      const z = p.zero;
      for (let i = off; i < off + len; i++) {
        const t = f(X[i] / step);
        const u = (round ? roundHalfEven(t) : t) + z;
        const inRange = u <= hiL && u >= loL;
        const level = u > hiL ? hiL : u < loL ? loL : u;
        out[i] = inRange ? G[i] : 0;
        gStep += G[i] * ((level - z) - (inRange ? X[i] / step : 0));
        if (X[i] > X[iMax]) iMax = i;
        if (X[i] < X[iMin]) iMin = i;
        if (Math.abs(X[i]) > Math.abs(X[iAbs])) iAbs = i;
      }
      if (!p.stepFree || len === 0) return;
      const gRange = gStep / levels;
      if (spec.symmetric) out[iAbs] += Math.sign(X[iAbs]) * gRange;
      else {
        out[iMax] += gRange;
        out[iMin] -= gRange;
      }
    });
    return this.wrap(out, x.shape, dt);
  }

  quantize(x: Tensor, spec: QuantSpec, packInt4 = false): Quantized {
    this.#float("quantize", x);
    check(spec.bits <= 8, "quantize", `integer codes need bits <= 8, got ${spec.bits}`);
    const X = this.#fl(x);
    const codes = new Int8Array(X.length);
    const f = Math.fround;
    const shift = spec.symmetric ? 0 : 2 ** (spec.bits - 1);
    const scales: number[] = [];
    const zeros: number[] = [];
    const hiQ = spec.symmetric ? symMax(spec.bits) : 2 ** spec.bits - 1;
    const loQ = spec.symmetric ? -hiQ : 0;
    const { rows, groups } = this.#groups("quantize", x, spec, (off, len, p) => {
      scales.push(p.step);
      zeros.push(p.zero - shift);
      for (let i = off; i < off + len; i++) {
        let u = roundHalfEven(f(X[i] / p.step)) + p.zero;
        if (u > hiQ) u = hiQ;
        else if (u < loQ) u = loQ;
        codes[i] = u - shift;
      }
    });
    const q = this.wrap(codes, x.shape, packInt4 && spec.bits <= 4 ? "int4" : "i8");
    const scale = this.tensor(scales, [rows, groups], "f32");
    return spec.symmetric ? { q, scale } : { q, scale, zero: this.tensor(zeros, [rows, groups], "i32") };
  }

  dequantize(qz: Quantized, groupSize: number): Tensor {
    this.#own("dequantize", qz.q, qz.scale, qz.zero);
    const q = this.data(qz.q);
    const cols = qz.q.shape[qz.q.rank - 1];
    const groups = groupsPerRow("dequantize", cols, groupSize);
    const rows = qz.q.size / cols;
    checkDequantize(qz.scale, qz.zero, rows, groups);
    const s = this.#fl(qz.scale);
    const z = qz.zero ? this.data(qz.zero) : undefined;
    const len = cols / groups;
    const out = new Float32Array(q.length);
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g < groups; g++) {
        const gi = r * groups + g;
        const zv = z ? z[gi] : 0;
        for (let i = 0; i < len; i++) {
          const k = r * cols + g * len + i;
          out[k] = (q[k] - zv) * s[gi];
        }
      }
    }
    return this.wrap(out, qz.q.shape, "f32");
  }

  int8Matmul(a: Tensor, aScale: Tensor, b: Tensor, bScale: Tensor, bias?: Tensor): Tensor {
    const op = "int8Matmul";
    this.#own(op, a, aScale, b, bScale, bias);
    checkInt8Matmul(a, aScale, b, bScale, bias);
    const [m, k] = a.shape;
    const n = b.shape[0];

    const A = this.data(a) as Int8Array;
    const B = this.data(b) as Int8Array;
    const sa = this.#fl(aScale);
    const sb = this.#fl(bScale);
    const bi = bias ? this.#fl(bias) : undefined;
    const acc = int8Products(A, B, m, n, k);
    const out = new Float32Array(m * n);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        // Same rounding sequence as the WGSL epilogue: f32(acc) · aScale · bScale + bias, each step in f32.
        const y = Math.fround(Math.fround(Math.fround(acc[i * n + j]) * sa[i]) * sb[j]);
        out[i * n + j] = bi ? Math.fround(y + bi[j]) : y;
      }
    }
    return this.wrap(out, [m, n], "f32");
  }
}

/**
 * Exact integer products Σ_k a[i,k]·b[j,k] of int8 matrices, computed with the f32 GEMM on slices of at
 * most 1024 columns: every partial sum is an integer of magnitude ≤ 1024·128² < 2²⁴, so f32 arithmetic
 * is exact within a slice; slices are summed in float64 (exact below 2⁵³).
 */
export function int8Products(A: Int8Array, B: Int8Array, m: number, n: number, k: number): Float64Array {
  const out = new Float64Array(m * n);
  const KC = 1024;
  for (let k0 = 0; k0 < k; k0 += KC) {
    const kc = Math.min(KC, k - k0);
    const af = new Float32Array(m * kc);
    const bf = new Float32Array(n * kc);
    for (let i = 0; i < m; i++) for (let t = 0; t < kc; t++) af[i * kc + t] = A[i * k + k0 + t];
    for (let j = 0; j < n; j++) for (let t = 0; t < kc; t++) bf[j * kc + t] = B[j * k + k0 + t];
    const c = new Float32Array(m * n);
    if (m * n * kc >= 16384) gemmF32Wasm(af, 0, bf, 0, c, 0, m, n, kc);
    else gemmABt(af, 0, bf, 0, c, 0, m, n, kc);
    for (let i = 0; i < out.length; i++) out[i] += c[i];
  }
  return out;
}

/** Throws when a tensor is not on the CPU backend; returns its host data. */
export function cpuData(t: Tensor): HostArray {
  if (!(t.backend instanceof CpuBackend)) throw new TensorOpError("cpuData", `${t} is not a CPU tensor`);
  return t.backend.data(t);
}
