/**
 * The WebGPU backend: every op of the Backend interface as WGSL compute kernels (kernels/wgsl/), run
 * through dawn-node or Deno's WebGPU. f32 is the only float type; i8 and int4 tensors are stored
 * packed (4 or 8 values per 32-bit word, rows padded to whole words).
 */
import {
  type Backend,
  type BinaryOp,
  check,
  type DType,
  type FakeQuantOptions,
  fmtShape,
  type HostArray,
  hostArray,
  isFloat,
  type MatmulOptions,
  type Quantized,
  type QuantSpec,
  type ReduceOp,
  shapeSize,
  type SoftmaxMask,
  type Storage,
  stridesOf,
  Tensor,
  TensorOpError,
  toHostArray,
  type UnaryOp,
} from "@masquant/core";
import {
  broadcastShapes,
  broadcastStrides,
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
  groupsPerRow,
  matmulGeometry,
  normAxis,
  resolveReshape,
  validateQuantSpec,
} from "@masquant/core/internal";
import { findGpu, type FindGpuOptions, type GpuContext } from "./device.ts";
import { GpuRuntime, Params, type RuntimeOptions } from "./runtime.ts";
import { binaryKernel, FILL, unaryKernel } from "../wgsl/elementwise.ts";
import { castPackedKernel, castScalarKernel, CHECK_INDEX, rowMoveKernel, STRIDED_COPY } from "../wgsl/layout.ts";
import { axisReduceKernel, CHANNEL_MAXABS, rowReduceKernel } from "../wgsl/reduce.ts";
import { MATMUL_BLOCKED, MATMUL_TILED, PACK_B } from "../wgsl/matmul.ts";
import { normKernel, RMS_NORM_GRAD, ROPE_TABLES, ROTARY, SOFTMAX, SOFTMAX_GRAD } from "../wgsl/nn.ts";
import {
  dequantKernel,
  FAKE_QUANT,
  FAKE_QUANT_GRAD,
  QUANT_PARAMS,
  QUANT_SPLIT,
  quantCodesKernel,
} from "../wgsl/quant.ts";
import { int8MatmulF32Kernel, int8MatmulKernel, int8MatmulWordMajorKernel, PACK_I8_WORD_MAJOR } from "../wgsl/int8.ts";
import { WG1D } from "../wgsl/common.ts";

/** GPU storage: one buffer, `words` 32-bit words of payload. */
class GpuStorage implements Storage {
  refs = 1;
  constructor(readonly buffer: GPUBuffer, readonly words: number) {}
}

/** Options of the WebGPU backend. */
export interface WebGPUBackendOptions extends RuntimeOptions {
  /** Matmul kernel: "blocked" (software GPUs), "tiled" (discrete GPUs) or "auto" (by adapter). */
  matmul?: "blocked" | "tiled" | "auto";
  /** int8 kernel variant (default: "f32-fma" on software adapters, "rows" otherwise). */
  int8Layout?: "rows" | "word-major" | "f32-fma";
}

const MAX_RANK = 8;

/** Builds the uniform block of the quantization kernels for one chunk. */
type QParams = (groups: number, offX: number, offY: number, offG: number, wpr?: number, g0?: number) => Params;

/** Words per row and rows of a tensor's physical layout. */
function layout(dtype: DType, shape: readonly number[]): { rows: number; cols: number; wpr: number; words: number } {
  const cols = shape.length ? shape[shape.length - 1] : 1;
  const rows = cols === 0 ? 0 : shapeSize(shape) / cols;
  const wpr = dtype === "i8" ? Math.ceil(cols / 4) : dtype === "int4" ? Math.ceil(cols / 8) : cols;
  return { rows, cols, wpr, words: rows * wpr };
}

function packed(d: DType): boolean {
  return d === "i8" || d === "int4";
}

/** The WebGPU implementation of {@link Backend}. */
export class WebGPUBackend implements Backend {
  readonly name = "webgpu";
  readonly supportsF64 = false;
  readonly rt: GpuRuntime;
  readonly matmulKind: "blocked" | "tiled";
  /**
   * int8 kernel: "rows" (dot4I8Packed on the weights as stored), "word-major" (dot4I8Packed on weights
   * repacked so neighbouring columns read neighbouring words) or "f32-fma" (word-major, bytes widened to f32
   * and summed exactly with FMAs in runs of 1024; for software adapters).
   */
  int8Layout: "rows" | "word-major" | "f32-fma";
  /** Rows per invocation of the f32-fma int8 kernel. */
  int8Rows = 4;
  #live = 0;
  readonly #dot4: boolean;

  /** Wraps an opened GPU context. Prefer {@link openWebGPU}. */
  constructor(readonly ctx: GpuContext, opts: WebGPUBackendOptions = {}) {
    this.rt = new GpuRuntime(ctx, opts);
    const m = opts.matmul ?? "auto";
    this.matmulKind = m === "auto" ? (ctx.software ? "blocked" : "tiled") : m;
    this.#dot4 = ctx.wgslFeatures.has("packed_4x8_integer_dot_product");
    // dot4I8Packed is a native instruction on hardware GPUs; a software adapter emulates it, and exact f32
    // FMAs on widened bytes run about twice as fast there.
    this.int8Layout = opts.int8Layout ?? (ctx.software ? "f32-fma" : "rows");
  }

  /** Adapter description for reports. */
  get description(): string {
    const i = this.ctx.info;
    return `${this.ctx.provider}: ${i.description || i.device || i.vendor} (${
      this.ctx.software ? "software" : "hardware"
    })`;
  }

  // ---- memory ----------------------------------------------------------------------------------

  #make(shape: readonly number[], dtype: DType, buffer: GPUBuffer, words: number): Tensor {
    this.#live += buffer.size;
    return new Tensor(this, [...shape], dtype, new GpuStorage(buffer, words));
  }

  #new(shape: readonly number[], dtype: DType): Tensor {
    const { words } = layout(dtype, shape);
    return this.#make(shape, dtype, this.rt.alloc(words * 4), words);
  }

  #buf(t: Tensor): GPUBuffer {
    return (t.storage as GpuStorage).buffer;
  }

  #own(op: string, ...ts: (Tensor | undefined)[]): void {
    for (const t of ts) {
      if (!t) continue;
      check(t.backend === this, op, () => `${t} belongs to another backend`);
      check(!t.disposed, op, () => `${t} was disposed`);
    }
  }

  #f32(op: string, ...ts: (Tensor | undefined)[]): void {
    this.#own(op, ...ts);
    for (const t of ts) {
      if (t) {
        check(t.dtype === "f32", op, () => `the WebGPU backend computes in f32; got ${t.dtype} ${fmtShape(t.shape)}`);
      }
    }
  }

  /** Binding of an optional 1-D parameter (a 4-byte dummy window when absent). */
  #param(t: Tensor | undefined): GPUBufferBinding {
    if (t) return this.rt.window(this.#buf(t), 0, Math.max(t.size, 1)).binding;
    this.#dummy ??= this.rt.alloc(256);
    return { buffer: this.#dummy, offset: 0, size: 16 };
  }
  #dummy: GPUBuffer | undefined;

  #i32(op: string, t: Tensor): void {
    this.#own(op, t);
    check(t.dtype === "i32", op, () => `expects an i32 index tensor, got ${t.dtype} ${fmtShape(t.shape)}`);
  }

  tensor(data: ArrayLike<number>, shape: readonly number[], dtype: DType = "f32"): Tensor {
    check(dtype !== "f64", "tensor", "the WebGPU backend has no f64; use f32");
    check(shape.every((d) => Number.isInteger(d) && d >= 0), "tensor", () => `bad shape ${fmtShape(shape)}`);
    check(
      shapeSize(shape) === data.length,
      "tensor",
      () => `${data.length} values do not fill shape ${fmtShape(shape)}`,
    );
    const host = toHostArray(data, dtype);
    const { rows, cols, wpr, words } = layout(dtype, shape);
    let payload: Uint32Array;
    if (dtype === "i8" || dtype === "int4") {
      payload = new Uint32Array(Math.max(words, 1));
      const per = dtype === "i8" ? 4 : 8;
      const bits = 32 / per;
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const v = host[r * cols + c];
          const code = dtype === "i8" ? v & 255 : (v + 8) & 15;
          payload[r * wpr + Math.floor(c / per)] |= code << ((c % per) * bits);
        }
      }
    } else {
      payload = new Uint32Array(host.buffer, host.byteOffset, host.length);
      if (payload.length === 0) payload = new Uint32Array(1);
    }
    return this.#make(shape, dtype, this.rt.upload(payload), words);
  }

  full(shape: readonly number[], value: number, dtype: DType = "f32"): Tensor {
    check(dtype !== "f64", "full", "the WebGPU backend has no f64; use f32");
    const t = this.#new(shape, dtype);
    const words = (t.storage as GpuStorage).words;
    let bits: number;
    if (dtype === "f32") bits = new Uint32Array(new Float32Array([value]).buffer)[0];
    else if (dtype === "i32" || dtype === "u32") bits = value >>> 0;
    else {
      const host = toHostArray([value], dtype)[0];
      check(
        value === 0 || layout(dtype, shape).cols % (dtype === "i8" ? 4 : 8) === 0,
        "full",
        `packed ${dtype} fill of a non-zero value needs rows of whole words`,
      );
      const per = dtype === "i8" ? 4 : 8;
      const code = dtype === "i8" ? host & 255 : (host + 8) & 15;
      bits = 0;
      for (let j = 0; j < per; j++) bits |= code << (j * (32 / per));
      bits >>>= 0;
    }
    this.#fillWords(this.#buf(t), 0, words, bits);
    return t;
  }

  #fillWords(buf: GPUBuffer, start: number, n: number, bits: number): void {
    const per = this.rt.bindableElems();
    for (let s = 0; s < n; s += per) {
      const m = Math.min(per, n - s);
      const w = this.rt.window(buf, start + s, start + s + m);
      this.rt.dispatch(FILL, new Params().u(m).u(w.off).u(bits), [w.binding], this.rt.grid1d(Math.ceil(m / WG1D)));
    }
  }

  async read(t: Tensor): Promise<HostArray> {
    this.#own("read", t);
    const { rows, cols, wpr, words } = layout(t.dtype, t.shape);
    const out = hostArray(t.dtype, t.size);
    if (words === 0) return out;
    const bytes = await this.rt.readBytes(this.#buf(t), 0, words * 4);
    const w = new Uint32Array(bytes.buffer, bytes.byteOffset, words);
    if (t.dtype === "i8" || t.dtype === "int4") {
      const per = t.dtype === "i8" ? 4 : 8;
      const bits = 32 / per;
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const word = w[r * wpr + Math.floor(c / per)];
          const code = (word >>> ((c % per) * bits)) & (per === 4 ? 255 : 15);
          out[r * cols + c] = per === 4 ? (code << 24) >> 24 : code - 8;
        }
      }
      return out;
    }
    new Uint32Array(out.buffer, out.byteOffset, out.length).set(w);
    return out;
  }

  release(s: Storage): void {
    const g = s as GpuStorage;
    this.#live -= g.buffer.size;
    this.rt.free(g.buffer);
  }

  sync(): Promise<void> {
    return this.rt.sync();
  }

  memory(): { liveBytes: number; pooledBytes: number } {
    return { liveBytes: this.#live, pooledBytes: this.rt.pooledBytes };
  }

  // ---- layout ----------------------------------------------------------------------------------

  reshape(x: Tensor, shape: readonly number[]): Tensor {
    this.#own("reshape", x);
    const out = resolveReshape("reshape", x.shape, shape);
    if (packed(x.dtype)) {
      check(
        out.length > 0 && out[out.length - 1] === x.shape[x.rank - 1],
        "reshape",
        () => `packed ${x.dtype} tensors keep their last axis; ${fmtShape(x.shape)} -> ${fmtShape(out)}`,
      );
    }
    x.storage.refs++;
    return new Tensor(this, out, x.dtype, x.storage);
  }

  /**
   * Strided copy over an iteration shape. When the source or destination span does not fit one binding,
   * the axis contributing most to the spans is halved recursively.
   */
  #stridedCopy(
    src: GPUBuffer,
    srcOff: number,
    ss: number[],
    dst: GPUBuffer,
    dstOff: number,
    ds: number[],
    dims: number[],
  ): void {
    const n = shapeSize(dims);
    if (n === 0) return;
    check(dims.length <= MAX_RANK, "copy", `rank ${dims.length} exceeds ${MAX_RANK}`);
    const lim = this.rt.bindableElems();
    const spanS = dims.reduce((acc, d, i) => acc + (d - 1) * ss[i], 0) + 1;
    const spanD = dims.reduce((acc, d, i) => acc + (d - 1) * ds[i], 0) + 1;
    if (spanS <= lim && spanD <= lim) {
      const ws = this.rt.window(src, srcOff, srcOff + spanS);
      const wd = this.rt.window(dst, dstOff, dstOff + spanD);
      const p = new Params().u(n).u(ws.off).u(wd.off).u(dims.length).uvec(dims, 8).uvec(ss, 8).uvec(ds, 8);
      this.rt.dispatch(STRIDED_COPY, p, [ws.binding, wd.binding], this.rt.grid1d(Math.ceil(n / WG1D)));
      return;
    }
    let axis = -1;
    let best = 0;
    dims.forEach((d, i) => {
      const c = (d - 1) * Math.max(ss[i], ds[i]);
      if (d > 1 && c > best) {
        best = c;
        axis = i;
      }
    });
    check(axis >= 0, "copy", "a single element span is too large to bind");
    const h = Math.floor(dims[axis] / 2);
    const lo = [...dims];
    lo[axis] = h;
    const hi = [...dims];
    hi[axis] = dims[axis] - h;
    this.#stridedCopy(src, srcOff, ss, dst, dstOff, ds, lo);
    this.#stridedCopy(src, srcOff + h * ss[axis], ss, dst, dstOff + h * ds[axis], ds, hi);
  }

  #words32(op: string, x: Tensor): void {
    this.#own(op, x);
    check(!packed(x.dtype), op, () => `packed ${x.dtype} tensors are not supported here; cast to i32 or f32 first`);
  }

  transpose(x: Tensor, perm: readonly number[]): Tensor {
    this.#words32("transpose", x);
    const outShape = checkTranspose(x, perm);
    const out = this.#new(outShape, x.dtype);
    const st = stridesOf(x.shape);
    this.#stridedCopy(this.#buf(x), 0, perm.map((p) => st[p]), this.#buf(out), 0, stridesOf(outShape), outShape);
    return out;
  }

  slice(x: Tensor, axis: number, start: number, end: number): Tensor {
    this.#words32("slice", x);
    const a = normAxis("slice", axis, x.rank);
    checkSlice(x, axis, start, end);
    const shape = [...x.shape];
    shape[a] = end - start;
    const out = this.#new(shape, x.dtype);
    const st = stridesOf(x.shape);
    this.#stridedCopy(this.#buf(x), start * st[a], st, this.#buf(out), 0, stridesOf(shape), shape);
    return out;
  }

  concat(xs: readonly Tensor[], axis: number): Tensor {
    const { axis: a, shape } = checkConcat(xs, axis);
    for (const t of xs) this.#words32("concat", t);
    const out = this.#new(shape, xs[0].dtype);
    const ds = stridesOf(shape);
    let off = 0;
    for (const t of xs) {
      this.#stridedCopy(this.#buf(t), 0, stridesOf(t.shape), this.#buf(out), off * ds[a], ds, [...t.shape]);
      off += t.shape[a];
    }
    return out;
  }

  /** Throws (after a sync) if any index lies outside [0, rows). */
  async #validateIndex(op: string, idx: Tensor, rows: number): Promise<void> {
    const flag = this.tensor([0xffffffff], [1], "u32");
    try {
      const w = this.rt.window(this.#buf(idx), 0, idx.size);
      this.rt.dispatch(
        CHECK_INDEX,
        new Params().u(idx.size).u(rows).u(w.off),
        [w.binding, this.#buf(flag)],
        this.rt.grid1d(Math.ceil(idx.size / WG1D)),
      );
      const v = (await this.read(flag))[0] >>> 0;
      if (v !== 0xffffffff) {
        const pos = v - 1;
        const bad = (await this.read(idx))[pos];
        throw new TensorOpError(op, `index ${bad} at position ${pos} is outside [0, ${rows})`);
      }
    } finally {
      flag.dispose();
    }
  }

  /** Checks indices of gather/scatter (an extra round trip; call explicitly where inputs are untrusted). */
  validateRowIndex(op: string, idx: Tensor, rows: number): Promise<void> {
    return this.#validateIndex(op, idx, rows);
  }

  #rowMove(kind: "gather" | "scatter", src: Tensor, dst: Tensor, idx: Tensor, tableRows: number, cols: number) {
    // Table = src for gather, dst for scatter: processed in row ranges so windows fit.
    const lim = this.rt.bindableElems();
    check(cols <= lim, kind === "gather" ? "gatherRows" : "scatterRows", "a single row is too large to bind");
    const perRows = Math.max(1, Math.floor(lim / Math.max(cols, 1)));
    const list = kind === "gather" ? dst : src; // the [n, C] side, bound whole
    check(
      list.size <= lim,
      kind === "gather" ? "gatherRows" : "scatterRows",
      () => `the ${fmtShape(list.shape)} row list is too large to bind; split it`,
    );
    const n = idx.size;
    const code = rowMoveKernel(kind);
    const wi = this.rt.window(this.#buf(idx), 0, Math.max(n, 1));
    const wl = this.rt.window(this.#buf(list), 0, Math.max(list.size, 1));
    for (let r0 = 0; r0 < tableRows; r0 += perRows) {
      const r1 = Math.min(tableRows, r0 + perRows);
      const table = kind === "gather" ? src : dst;
      const wt = this.rt.window(this.#buf(table), r0 * cols, Math.max(r1 * cols, r0 * cols + 1));
      const [ws, wd] = kind === "gather" ? [wt, wl] : [wl, wt];
      const p = new Params().u(n).u(cols).u(r0).u(r1).u(ws.off).u(wd.off).u(wi.off);
      this.rt.dispatch(code, p, [ws.binding, wd.binding, wi.binding], this.rt.grid1d(n));
    }
  }

  gatherRows(table: Tensor, idx: Tensor): Tensor {
    this.#i32("gatherRows", idx);
    this.#words32("gatherRows", table);
    checkGatherRows(table, idx);
    const [rows, cols] = table.shape;
    const out = this.#new([idx.size, cols], table.dtype);
    if (idx.size && cols) this.#rowMove("gather", table, out, idx, rows, cols);
    return out;
  }

  scatterRows(base: Tensor, rows: Tensor, idx: Tensor): Tensor {
    this.#i32("scatterRows", idx);
    this.#words32("scatterRows", base);
    this.#words32("scatterRows", rows);
    checkScatterRows(base, rows, idx);
    const out = this.#new(base.shape, base.dtype);
    this.#stridedCopy(this.#buf(base), 0, stridesOf(base.shape), this.#buf(out), 0, stridesOf(base.shape), [
      ...base.shape,
    ]);
    if (idx.size && base.shape[1]) this.#rowMove("scatter", rows, out, idx, base.shape[0], base.shape[1]);
    return out;
  }

  cast(x: Tensor, dtype: DType): Tensor {
    this.#own("cast", x);
    check(dtype !== "f64", "cast", "the WebGPU backend has no f64");
    if (x.dtype === dtype) return this.copy(x);
    const out = this.#new(x.shape, dtype);
    const n = x.size;
    if (n === 0) return out;
    if (!packed(x.dtype) && !packed(dtype)) {
      const mode = `${x.dtype}_${dtype}` as Parameters<typeof castScalarKernel>[0];
      const per = this.rt.bindableElems();
      for (let s = 0; s < n; s += per) {
        const m = Math.min(per, n - s);
        const ws = this.rt.window(this.#buf(x), s, s + m);
        const wd = this.rt.window(this.#buf(out), s, s + m);
        this.rt.dispatch(
          castScalarKernel(mode),
          new Params().u(m).u(ws.off).u(wd.off),
          [ws.binding, wd.binding],
          this.rt.grid1d(Math.ceil(m / WG1D)),
        );
      }
      return out;
    }
    check(
      x.dtype !== "u32" && dtype !== "u32",
      "cast",
      `u32 ↔ ${packed(x.dtype) ? x.dtype : dtype} is not supported; go through i32`,
    );
    const src = layout(x.dtype, x.shape);
    const dst = layout(dtype, x.shape);
    const lim = this.rt.bindableElems();
    const per = Math.max(1, Math.floor(lim / Math.max(src.wpr, dst.wpr, 1)));
    const code = castPackedKernel(x.dtype as "f32" | "i32" | "i8" | "int4", dtype as "f32" | "i32" | "i8" | "int4");
    for (let r0 = 0; r0 < src.rows; r0 += per) {
      const r1 = Math.min(src.rows, r0 + per);
      const ws = this.rt.window(this.#buf(x), r0 * src.wpr, r1 * src.wpr);
      const wd = this.rt.window(this.#buf(out), r0 * dst.wpr, r1 * dst.wpr);
      const m = (r1 - r0) * (packed(dtype) ? dst.wpr : dst.cols);
      const p = new Params().u(m).u(src.cols).u(src.wpr).u(dst.wpr).u(ws.off).u(wd.off);
      this.rt.dispatch(code, p, [ws.binding, wd.binding], this.rt.grid1d(Math.ceil(m / WG1D)));
    }
    return out;
  }

  /** A copy of a tensor (same dtype and layout). */
  copy(x: Tensor): Tensor {
    const out = this.#new(x.shape, x.dtype);
    const words = (x.storage as GpuStorage).words;
    if (words) this.#stridedCopy(this.#buf(x), 0, [1], this.#buf(out), 0, [1], [words]);
    return out;
  }

  // ---- elementwise -----------------------------------------------------------------------------

  #map1(code: string, x: Tensor, a: number, b: number, gy?: Tensor): Tensor {
    const out = this.#new(x.shape, "f32");
    const n = x.size;
    const per = this.rt.bindableElems();
    for (let s = 0; s < n; s += per) {
      const m = Math.min(per, n - s);
      const wx = this.rt.window(this.#buf(x), s, s + m);
      const wy = this.rt.window(this.#buf(out), s, s + m);
      const wg = gy ? this.rt.window(this.#buf(gy), s, s + m) : undefined;
      const p = new Params().u(m).u(wx.off).u(wy.off).u(wg?.off ?? 0).f(a).f(b);
      const binds = wg ? [wx.binding, wy.binding, wg.binding] : [wx.binding, wy.binding];
      this.rt.dispatch(code, p, binds, this.rt.grid1d(Math.ceil(m / WG1D)));
    }
    return out;
  }

  unary(op: UnaryOp, x: Tensor): Tensor {
    this.#f32(`unary(${op})`, x);
    return this.#map1(unaryKernel(op, false), x, 0, 0);
  }

  unaryGrad(op: UnaryOp, x: Tensor, gy: Tensor): Tensor {
    this.#f32(`unaryGrad(${op})`, x, gy);
    check(x.size === gy.size, `unaryGrad(${op})`, () => `x ${fmtShape(x.shape)} and gy ${fmtShape(gy.shape)} differ`);
    return this.#map1(unaryKernel(op, true), x, 0, 0, gy);
  }

  affine(x: Tensor, mul: number, add: number): Tensor {
    this.#f32("affine", x);
    return this.#map1(unaryKernel("affine", false), x, mul, add);
  }

  pow(x: Tensor, p: number): Tensor {
    this.#f32("pow", x);
    return this.#map1(unaryKernel("pow", false), x, p, 0);
  }

  clamp(x: Tensor, lo: number, hi: number): Tensor {
    this.#f32("clamp", x);
    check(!(lo > hi), "clamp", `lo ${lo} > hi ${hi}`);
    return this.#map1(unaryKernel("clamp", false), x, lo, hi);
  }

  binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
    const name = `binary(${op})`;
    this.#f32(name, a, b);
    const shape = broadcastShapes(name, a.shape, b.shape);
    check(shape.length <= MAX_RANK, name, `rank ${shape.length} exceeds ${MAX_RANK}`);
    const n = shapeSize(shape);
    const out = this.#new(shape, "f32");
    if (n === 0) return out;
    const lim = this.rt.bindableElems();
    const sameA = a.size === n;
    const sameB = b.size === n;
    const mode: "same" | "scalar" | "general" = sameA && sameB ? "same" : sameA && b.size === 1 ? "scalar" : "general";
    if (mode === "general") {
      check(
        a.size <= lim && b.size <= lim && n <= lim,
        name,
        () => `broadcasting ${fmtShape(a.shape)} with ${fmtShape(b.shape)} is too large to bind; split it`,
      );
      const p = new Params().u(n).u(0).u(0).u(0).u(shape.length).align()
        .uvec(shape, 8).uvec(broadcastStrides(a.shape, shape), 8).uvec(broadcastStrides(b.shape, shape), 8);
      const wa = this.rt.window(this.#buf(a), 0, a.size);
      const wb = this.rt.window(this.#buf(b), 0, b.size);
      const wy = this.rt.window(this.#buf(out), 0, n);
      this.rt.dispatch(
        binaryKernel(op, "general"),
        p,
        [wa.binding, wb.binding, wy.binding],
        this.rt.grid1d(Math.ceil(n / WG1D)),
      );
      return out;
    }
    for (let s = 0; s < n; s += lim) {
      const m = Math.min(lim, n - s);
      const wa = this.rt.window(this.#buf(a), s, s + m);
      const wb = mode === "scalar" ? this.rt.window(this.#buf(b), 0, 1) : this.rt.window(this.#buf(b), s, s + m);
      const wy = this.rt.window(this.#buf(out), s, s + m);
      const p = new Params().u(m).u(wa.off).u(wb.off).u(wy.off).u(0).align().uvec([], 24);
      this.rt.dispatch(
        binaryKernel(op, mode),
        p,
        [wa.binding, wb.binding, wy.binding],
        this.rt.grid1d(Math.ceil(m / WG1D)),
      );
    }
    return out;
  }

  // ---- reductions ------------------------------------------------------------------------------

  reduce(op: ReduceOp, x: Tensor, axis: number, keepDims = false): Tensor {
    const name = `reduce(${op})`;
    this.#f32(name, x);
    const a = normAxis(name, axis, x.rank);
    const n = x.shape[a];
    check(
      n > 0 || op === "sum" || op === "maxabs",
      name,
      () => `cannot reduce an empty axis ${a} of ${fmtShape(x.shape)}`,
    );
    const outer = shapeSize(x.shape.slice(0, a));
    const inner = shapeSize(x.shape.slice(a + 1));
    const shape = [...x.shape];
    if (keepDims) shape[a] = 1;
    else shape.splice(a, 1);
    const out = this.#new(shape, "f32");
    if (outer * inner === 0) return out;
    const lim = this.rt.bindableElems();
    const perOuter = Math.floor(lim / Math.max(n * inner, 1));
    if (perOuter < 1) {
      // One slice does not fit: reduce pieces of the axis and combine them.
      out.dispose();
      check(inner <= lim, name, () => `a reduction over axis ${a} of ${fmtShape(x.shape)} is too large to bind`);
      const nPer = Math.max(1, Math.floor(lim / inner));
      const partOp: ReduceOp = op === "mean" ? "sum" : op;
      let acc: Tensor | undefined;
      for (let k0 = 0; k0 < n; k0 += nPer) {
        const piece = this.slice(x, a, k0, Math.min(n, k0 + nPer));
        const r = this.reduce(partOp, piece, a, keepDims);
        piece.dispose();
        if (!acc) acc = r;
        else {
          const next = this.binary(partOp === "sum" ? "add" : partOp === "min" ? "minimum" : "maximum", acc, r);
          acc.dispose();
          r.dispose();
          acc = next;
        }
      }
      if (op !== "mean") return acc!;
      const mean = this.affine(acc!, 1 / n, 0);
      acc!.dispose();
      return mean;
    }
    for (let o0 = 0; o0 < outer; o0 += perOuter) {
      const o1 = Math.min(outer, o0 + perOuter);
      const wx = this.rt.window(this.#buf(x), o0 * n * inner, Math.max(o1 * n * inner, o0 * n * inner + 1));
      const wy = this.rt.window(this.#buf(out), o0 * inner, o1 * inner);
      if (inner === 1) {
        const rows = o1 - o0;
        this.rt.dispatch(
          rowReduceKernel(op),
          new Params().u(rows).u(n).u(wx.off).u(wy.off),
          [wx.binding, wy.binding],
          this.rt.grid1d(rows),
        );
      } else {
        const m = (o1 - o0) * inner;
        this.rt.dispatch(
          axisReduceKernel(op),
          new Params().u(o1 - o0).u(n).u(inner).u(wx.off).u(wy.off),
          [wx.binding, wy.binding],
          this.rt.grid1d(Math.ceil(m / WG1D)),
        );
      }
    }
    return out;
  }

  channelMaxAbs(x: Tensor, rowIds?: Tensor, id = 0): Tensor {
    this.#f32("channelMaxAbs", x);
    check(x.rank === 2, "channelMaxAbs", () => `expects [rows, channels], got ${fmtShape(x.shape)}`);
    const [rows, cols] = x.shape;
    if (rowIds) {
      this.#i32("channelMaxAbs", rowIds);
      checkChannelMaxAbs(x, rowIds);
    }
    const out = this.full([cols], 0, "f32");
    if (rows === 0 || cols === 0) return out;
    const lim = this.rt.bindableElems();
    const per = Math.max(1, Math.floor(lim / cols));
    const wi = { binding: this.#param(rowIds), off: 0 };
    for (let r0 = 0; r0 < rows; r0 += per) {
      const r1 = Math.min(rows, r0 + per);
      const wx = this.rt.window(this.#buf(x), r0 * cols, r1 * cols);
      const p = new Params().u(r1 - r0).u(cols).u(wx.off).u(wi.off).u(rowIds ? 1 : 0).i(id).u(r0);
      this.rt.dispatch(
        CHANNEL_MAXABS,
        p,
        [wx.binding, wi.binding, this.#buf(out)],
        this.rt.grid1d(Math.ceil(cols / WG1D)),
      );
    }
    return out;
  }

  // ---- matmul ----------------------------------------------------------------------------------

  matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
    this.#f32("matmul", a, b);
    const transA = !!opts.transA;
    const transB = !!opts.transB;
    const g = matmulGeometry(a.shape, b.shape, transA, transB);
    const out = this.#new(g.outShape, "f32");
    const { m, n, k, batch } = g;
    if (batch * m * n === 0) return out;
    if (k === 0) {
      this.#fillWords(this.#buf(out), 0, batch * m * n, 0);
      return out;
    }
    const lim = this.rt.bindableElems();
    // B is packed into vec4 column panels of width pw (multiple of 4) so that a panel fits one binding.
    const n4 = Math.ceil(n / 4) * 4;
    let pw = n4;
    if (k * pw > lim) pw = Math.max(4, Math.floor(lim / k / 4) * 4);
    check(k * 4 <= lim, "matmul", () => `K = ${k} is too large to bind a 4-column panel`);
    const panels = Math.ceil(n4 / pw);
    const panelElems = k * pw;
    const bBatches = g.strideB === 0 ? 1 : batch;
    const packed = this.rt.alloc(bBatches * panels * panelElems * 4);
    try {
      // Pack B: element (k, col) of batch bt at [bt][panel][k][col - panel*pw], in k-ranges whose source
      // window fits one binding.
      const sk = transB ? 1 : n;
      const sn = transB ? k : 1;
      for (let bt = 0; bt < bBatches; bt++) {
        for (let pi = 0; pi < panels; pi++) {
          const n0 = pi * pw;
          const w4 = Math.min(pw, n4 - n0) / 4;
          const nEnd = Math.min(n, n0 + w4 * 4);
          const dStart = (bt * panels + pi) * panelElems;
          const wdst = this.rt.window(packed, dStart / 4, (dStart + k * w4 * 4) / 4, 16);
          const span = (k0: number, k1: number) => (k1 - 1 - k0) * sk + (nEnd - 1 - n0) * sn + 1;
          let kPer = k;
          while (kPer > 1 && span(0, kPer) > lim) kPer = Math.ceil(kPer / 2);
          check(span(0, kPer) <= lim, "matmul", () => `B ${fmtShape(b.shape)} cannot be packed within one binding`);
          for (let k0 = 0; k0 < k; k0 += kPer) {
            const k1 = Math.min(k, k0 + kPer);
            const sStart = bt * g.strideB + k0 * sk + n0 * sn;
            const wsrc = this.rt.window(this.#buf(b), sStart, sStart + span(k0, k1));
            // Transposed B: consecutive invocations walk k, so reads are contiguous.
            const kmajor = transB ? 1 : 0;
            const p = new Params().u(k1 - k0).u(n).u(n0).u(w4).u(wsrc.off).u(sk).u(sn).u(wdst.off).u(0).u(0).u(k0)
              .u(kmajor);
            const grid: [number, number, number] = kmajor
              ? [Math.ceil((k1 - k0) / 64), Math.ceil(w4 / 4), 1]
              : [Math.ceil(w4 / 64), Math.ceil((k1 - k0) / 4), 1];
            this.rt.dispatch(PACK_B, p, [wsrc.binding, wdst.binding], grid);
          }
        }
      }
      // A rows per chunk so that A (m×k) and C (m×n) windows fit.
      const sam = transA ? 1 : k;
      const sak = transA ? m : 1;
      const rowsPer = Math.max(1, Math.min(transA ? Infinity : Math.floor(lim / k), Math.floor(lim / n)));
      check(
        !transA || m * k <= lim,
        "matmul",
        () => `transposed A ${fmtShape(a.shape)} is too large to bind; transpose it first`,
      );
      check(n <= lim, "matmul", () => `an output row of ${n} columns is too large to bind`);
      const code = this.matmulKind === "tiled" ? MATMUL_TILED : MATMUL_BLOCKED;
      for (let bt = 0; bt < batch; bt++) {
        for (let r0 = 0; r0 < m; r0 += rowsPer) {
          const r1 = Math.min(m, r0 + rowsPer);
          const mm = r1 - r0;
          const aStart = bt * g.strideA + r0 * sam;
          const wa = this.rt.window(this.#buf(a), aStart, aStart + (transA ? (k - 1) * m + mm : mm * k));
          const cStart = (bt * m + r0) * n;
          const wc = this.rt.window(this.#buf(out), cStart, cStart + mm * n);
          for (let pi = 0; pi < panels; pi++) {
            const n0 = pi * pw;
            const w4 = Math.min(pw, n4 - n0) / 4;
            const pb = ((g.strideB === 0 ? 0 : bt) * panels + pi) * panelElems;
            const wb = this.rt.window(packed, pb / 4, (pb + k * w4 * 4) / 4, 16);
            const p = new Params().u(mm).u(n).u(k).u(w4)
              .u(wa.off).u(sam).u(sak).u(0)
              .u(wb.off).u(0).u(wc.off).u(n)
              .u(0).u(n0).u(0).u(0);
            const groups: [number, number, number] = this.matmulKind === "tiled"
              ? [Math.ceil(w4 / 16), Math.ceil(mm / 64), 1]
              : [Math.ceil(w4 / 2 / 16), Math.ceil(mm / 4 / 4), 1];
            this.rt.dispatch(code, p, [wa.binding, wb.binding, wc.binding], groups);
          }
        }
      }
    } finally {
      this.rt.free(packed);
    }
    return out;
  }

  // ---- transformer ops -------------------------------------------------------------------------

  /** Rows per chunk for row-wise kernels whose tensors have `cols` elements per row. */
  #rowsPer(op: string, cols: number): number {
    const lim = this.rt.bindableElems();
    check(cols <= lim, op, () => `a row of ${cols} elements is too large to bind`);
    return Math.max(1, Math.floor(lim / Math.max(cols, 1)));
  }

  softmax(x: Tensor, mask: SoftmaxMask = {}): Tensor {
    this.#f32("softmax", x);
    check(x.rank >= 1, "softmax", "needs rank >= 1");
    const cols = x.shape[x.rank - 1];
    const rows = cols === 0 ? 0 : x.size / cols;
    if (mask.segments) {
      this.#i32("softmax", mask.segments);
      checkSoftmaxMask(x, mask);
    }
    const out = this.#new(x.shape, "f32");
    const wsg = { binding: this.#param(mask.segments), off: 0 };
    const per = this.#rowsPer("softmax", cols);
    for (let r0 = 0; r0 < rows; r0 += per) {
      const r1 = Math.min(rows, r0 + per);
      const wx = this.rt.window(this.#buf(x), r0 * cols, r1 * cols);
      const wy = this.rt.window(this.#buf(out), r0 * cols, r1 * cols);
      const p = new Params().u(r1 - r0).u(cols).u(wx.off).u(wy.off).u(mask.causal ? 1 : 0)
        .u(mask.segments ? 1 : 0).u(wsg.off).u(r0 % cols);
      this.rt.dispatch(SOFTMAX, p, [wx.binding, wy.binding, wsg.binding], this.rt.grid1d(r1 - r0));
    }
    return out;
  }

  softmaxGrad(y: Tensor, gy: Tensor): Tensor {
    this.#f32("softmaxGrad", y, gy);
    check(y.size === gy.size, "softmaxGrad", () => `y ${fmtShape(y.shape)} and gy ${fmtShape(gy.shape)} differ`);
    const cols = y.shape[y.rank - 1];
    const rows = cols === 0 ? 0 : y.size / cols;
    const out = this.#new(y.shape, "f32");
    const per = this.#rowsPer("softmaxGrad", cols);
    for (let r0 = 0; r0 < rows; r0 += per) {
      const r1 = Math.min(rows, r0 + per);
      const wy = this.rt.window(this.#buf(y), r0 * cols, r1 * cols);
      const wg = this.rt.window(this.#buf(gy), r0 * cols, r1 * cols);
      const wo = this.rt.window(this.#buf(out), r0 * cols, r1 * cols);
      this.rt.dispatch(
        SOFTMAX_GRAD,
        new Params().u(r1 - r0).u(cols).u(wy.off).u(wg.off).u(wo.off),
        [wy.binding, wg.binding, wo.binding],
        this.rt.grid1d(r1 - r0),
      );
    }
    return out;
  }

  #norm(kind: "rms" | "layer", x: Tensor, w: Tensor | undefined, b: Tensor | undefined, eps: number): Tensor {
    const op = kind === "rms" ? "rmsNorm" : "layerNorm";
    this.#f32(op, x, w, b);
    const cols = x.shape[x.rank - 1];
    for (const p of [w, b]) {
      if (p) {
        check(
          p.rank === 1 && p.shape[0] === cols,
          op,
          () => `parameter ${fmtShape(p.shape)} does not match ${fmtShape(x.shape)}`,
        );
      }
    }
    const rows = cols === 0 ? 0 : x.size / cols;
    const out = this.#new(x.shape, "f32");
    const per = this.#rowsPer(op, cols);
    for (let r0 = 0; r0 < rows; r0 += per) {
      const r1 = Math.min(rows, r0 + per);
      const wx = this.rt.window(this.#buf(x), r0 * cols, r1 * cols);
      const wy = this.rt.window(this.#buf(out), r0 * cols, r1 * cols);
      const p = new Params().u(r1 - r0).u(cols).u(wx.off).u(wy.off).f(eps).u(w ? 1 : 0).u(b ? 1 : 0);
      this.rt.dispatch(
        normKernel(kind),
        p,
        [wx.binding, wy.binding, this.#param(w), this.#param(b)],
        this.rt.grid1d(r1 - r0),
      );
    }
    return out;
  }

  rmsNorm(x: Tensor, w: Tensor | undefined, eps: number): Tensor {
    return this.#norm("rms", x, w, undefined, eps);
  }

  rmsNormGrad(x: Tensor, w: Tensor | undefined, eps: number, gy: Tensor): Tensor {
    this.#f32("rmsNormGrad", x, w, gy);
    check(gy.size === x.size, "rmsNormGrad", () => `gy ${fmtShape(gy.shape)} does not match x ${fmtShape(x.shape)}`);
    const cols = x.shape[x.rank - 1];
    if (w) {
      check(
        w.rank === 1 && w.shape[0] === cols,
        "rmsNormGrad",
        () => `weight ${fmtShape(w.shape)} does not match ${fmtShape(x.shape)}`,
      );
    }
    const rows = cols === 0 ? 0 : x.size / cols;
    const out = this.#new(x.shape, "f32");
    const per = this.#rowsPer("rmsNormGrad", cols);
    for (let r0 = 0; r0 < rows; r0 += per) {
      const r1 = Math.min(rows, r0 + per);
      const wx = this.rt.window(this.#buf(x), r0 * cols, r1 * cols);
      const wg = this.rt.window(this.#buf(gy), r0 * cols, r1 * cols);
      const wo = this.rt.window(this.#buf(out), r0 * cols, r1 * cols);
      const p = new Params().u(r1 - r0).u(cols).u(wx.off).u(wg.off).u(wo.off).f(eps).u(w ? 1 : 0);
      this.rt.dispatch(RMS_NORM_GRAD, p, [wx.binding, wg.binding, wo.binding, this.#param(w)], this.rt.grid1d(r1 - r0));
    }
    return out;
  }

  layerNorm(x: Tensor, w: Tensor | undefined, b: Tensor | undefined, eps: number): Tensor {
    return this.#norm("layer", x, w, b, eps);
  }

  ropeTables(positions: Tensor, invFreq: Tensor, sections: readonly number[]): [Tensor, Tensor] {
    this.#i32("ropeTables", positions);
    this.#f32("ropeTables", invFreq);
    const { t, nf } = checkRopeTables(positions, invFreq, sections);
    const lim = this.rt.bindableElems();
    check(t * nf <= lim && positions.size <= lim, "ropeTables", "tables too large to bind");
    const axes: number[] = [];
    sections.forEach((len, ax) => {
      for (let i = 0; i < len; i++) axes.push(ax);
    });
    const axT = this.tensor(axes, [nf], "u32");
    const cos = this.#new([t, nf], "f32");
    const sin = this.#new([t, nf], "f32");
    this.rt.dispatch(
      ROPE_TABLES,
      new Params().u(t).u(nf),
      [this.#buf(positions), this.#buf(invFreq), this.#buf(axT), this.#buf(cos), this.#buf(sin)],
      this.rt.grid1d(Math.ceil((t * nf) / WG1D)),
    );
    axT.dispose();
    return [cos, sin];
  }

  rotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
    this.#f32("rotary", x, cos, sin);
    check(x.rank === 3, "rotary", () => `x must be [T, H, D], got ${fmtShape(x.shape)}`);
    const [t, h, d] = x.shape;
    const half = d / 2;
    checkRotary(x, cos, sin);
    const out = this.#new(x.shape, "f32");
    const lim = this.rt.bindableElems();
    check(t * half <= lim, "rotary", "cos/sin tables too large to bind");
    const per = Math.max(1, Math.floor(lim / Math.max(h * d, 1)));
    for (let t0 = 0; t0 < t; t0 += per) {
      const t1 = Math.min(t, t0 + per);
      const wx = this.rt.window(this.#buf(x), t0 * h * d, t1 * h * d);
      const wy = this.rt.window(this.#buf(out), t0 * h * d, t1 * h * d);
      const m = (t1 - t0) * h * half;
      this.rt.dispatch(
        ROTARY,
        new Params().u(t1 - t0).u(h).u(half).u(wx.off).u(wy.off).u(t0),
        [wx.binding, this.#buf(cos), this.#buf(sin), wy.binding],
        this.rt.grid1d(Math.ceil(m / WG1D)),
      );
    }
    return out;
  }

  // ---- quantization ----------------------------------------------------------------------------

  #quantParams(spec: QuantSpec, cols: number, gpr: number, round: boolean, shift = 0): QParams {
    const qmax = spec.symmetric ? 2 ** (spec.bits - 1) - 1 : 2 ** spec.bits - 1;
    return (groups: number, offX: number, offY: number, offG: number, wpr = 0, g0 = 0) =>
      new Params().u(groups).u(cols / gpr).u(cols).u(gpr).u(offX).u(offY).u(offG).u(spec.symmetric ? 1 : 0)
        .f(qmax).u(round ? 1 : 0).u(wpr).i(shift).u(g0);
  }

  /** Group parameters of every group (vec4 per group) in a new buffer. */
  #groupParams(op: string, x: Tensor, spec: QuantSpec, mk: QParams) {
    const cols = x.shape[x.rank - 1];
    const gpr = groupsPerRow(op, cols, spec.groupSize);
    const rows = cols === 0 ? 0 : x.size / cols;
    const gp = this.rt.alloc(Math.max(rows * gpr, 1) * 16);
    const per = this.#rowsPer(op, cols);
    for (let r0 = 0; r0 < rows; r0 += per) {
      const r1 = Math.min(rows, r0 + per);
      const wx = this.rt.window(this.#buf(x), r0 * cols, r1 * cols);
      const groups = (r1 - r0) * gpr;
      this.rt.dispatch(QUANT_PARAMS, mk(groups, wx.off, 0, 0, 0, r0 * gpr), [wx.binding, gp], this.rt.grid1d(groups));
    }
    return { gp, rows, gpr, cols, per };
  }

  fakeQuant(x: Tensor, spec: QuantSpec, opts: FakeQuantOptions = {}): Tensor {
    this.#f32("fakeQuant", x);
    validateQuantSpec("fakeQuant", spec);
    check(x.rank >= 1, "fakeQuant", "needs rank >= 1");
    if (spec.bits >= 16) return this.affine(x, 1, 0);
    const cols = x.shape[x.rank - 1];
    const gpr = groupsPerRow("fakeQuant", cols, spec.groupSize);
    const mk = this.#quantParams(spec, cols, gpr, opts.round ?? true);
    const { gp, rows, per } = this.#groupParams("fakeQuant", x, spec, mk);
    const out = this.#new(x.shape, "f32");
    for (let r0 = 0; r0 < rows; r0 += per) {
      const r1 = Math.min(rows, r0 + per);
      const wx = this.rt.window(this.#buf(x), r0 * cols, r1 * cols);
      const wy = this.rt.window(this.#buf(out), r0 * cols, r1 * cols);
      const m = (r1 - r0) * cols;
      this.rt.dispatch(
        FAKE_QUANT,
        mk((r1 - r0) * gpr, wx.off, wy.off, r0 * gpr),
        [wx.binding, gp, wy.binding],
        this.rt.grid1d(Math.ceil(m / WG1D)),
      );
    }
    this.rt.free(gp);
    return out;
  }

  fakeQuantGrad(x: Tensor, gy: Tensor, spec: QuantSpec, opts: FakeQuantOptions = {}): Tensor {
    this.#f32("fakeQuantGrad", x, gy);
    validateQuantSpec("fakeQuantGrad", spec);
    check(x.size === gy.size, "fakeQuantGrad", () => `x ${fmtShape(x.shape)} and gy ${fmtShape(gy.shape)} differ`);
    if (spec.bits >= 16) return this.affine(gy, 1, 0);
    const cols = x.shape[x.rank - 1];
    const gpr = groupsPerRow("fakeQuantGrad", cols, spec.groupSize);
    const rows = cols === 0 ? 0 : x.size / cols;
    const mk = this.#quantParams(spec, cols, gpr, opts.round ?? true);
    const out = this.#new(x.shape, "f32");
    const per = this.#rowsPer("fakeQuantGrad", cols);
    for (let r0 = 0; r0 < rows; r0 += per) {
      const r1 = Math.min(rows, r0 + per);
      const wx = this.rt.window(this.#buf(x), r0 * cols, r1 * cols);
      const wg = this.rt.window(this.#buf(gy), r0 * cols, r1 * cols);
      const wy = this.rt.window(this.#buf(out), r0 * cols, r1 * cols);
      const groups = (r1 - r0) * gpr;
      this.rt.dispatch(
        FAKE_QUANT_GRAD,
        mk(groups, wx.off, wy.off, wg.off),
        [wx.binding, wg.binding, wy.binding],
        this.rt.grid1d(groups),
      );
    }
    return out;
  }

  quantize(x: Tensor, spec: QuantSpec, packInt4 = false): Quantized {
    this.#f32("quantize", x);
    validateQuantSpec("quantize", spec);
    check(spec.bits <= 8, "quantize", `integer codes need bits <= 8, got ${spec.bits}`);
    check(x.rank >= 1, "quantize", "needs rank >= 1");
    const cols = x.shape[x.rank - 1];
    const gpr = groupsPerRow("quantize", cols, spec.groupSize);
    const shift = spec.symmetric ? 0 : -(2 ** (spec.bits - 1));
    const mk = this.#quantParams(spec, cols, gpr, true, shift);
    const { gp, rows } = this.#groupParams("quantize", x, spec, mk);
    const dtype: DType = packInt4 && spec.bits <= 4 ? "int4" : "i8";
    const q = this.#new(x.shape, dtype);
    const lay = layout(dtype, x.shape);
    const lim = this.rt.bindableElems();
    const per = Math.max(1, Math.floor(lim / Math.max(cols, 1)));
    for (let r0 = 0; r0 < rows; r0 += per) {
      const r1 = Math.min(rows, r0 + per);
      const wx = this.rt.window(this.#buf(x), r0 * cols, r1 * cols);
      const wq = this.rt.window(this.#buf(q), r0 * lay.wpr, r1 * lay.wpr);
      const m = (r1 - r0) * lay.wpr;
      this.rt.dispatch(
        quantCodesKernel(dtype === "i8" ? 4 : 8),
        mk((r1 - r0) * gpr, wx.off, wq.off, r0 * gpr, lay.wpr),
        [wx.binding, gp, wq.binding],
        this.rt.grid1d(Math.ceil(m / WG1D)),
      );
    }
    const groups = rows * gpr;
    const scale = this.#new([rows, gpr], "f32");
    const zero = this.#new([rows, gpr], "i32");
    if (groups) {
      check(groups * 4 <= lim, "quantize", "too many groups to bind");
      this.rt.dispatch(
        QUANT_SPLIT,
        mk(groups, 0, 0, 0),
        [gp, this.#buf(scale), this.#buf(zero)],
        this.rt.grid1d(Math.ceil(groups / WG1D)),
      );
    }
    this.rt.free(gp);
    if (spec.symmetric) {
      zero.dispose();
      return { q, scale };
    }
    return { q, scale, zero };
  }

  dequantize(qz: Quantized, groupSize: number): Tensor {
    this.#own("dequantize", qz.q, qz.scale, qz.zero);
    check(packed(qz.q.dtype), "dequantize", () => `codes must be i8 or int4, got ${qz.q.dtype}`);
    const cols = qz.q.shape[qz.q.rank - 1];
    const gpr = groupsPerRow("dequantize", cols, groupSize);
    const rows = cols === 0 ? 0 : qz.q.size / cols;
    checkDequantize(qz.scale, qz.zero, rows, gpr);
    const out = this.#new(qz.q.shape, "f32");
    const lay = layout(qz.q.dtype, qz.q.shape);
    const n = rows * cols;
    const lim = this.rt.bindableElems();
    check(n <= lim && rows * gpr <= lim, "dequantize", "tensor too large to bind; dequantize it in row blocks");
    const p = new Params().u(rows * gpr).u(cols / gpr).u(cols).u(gpr).u(0).u(0).u(0).u(qz.zero ? 0 : 1).f(0).u(0)
      .u(lay.wpr);
    if (n) {
      this.rt.dispatch(
        dequantKernel(qz.q.dtype === "i8" ? 4 : 8),
        p,
        [this.#buf(qz.q), this.#buf(qz.scale), this.#param(qz.zero), this.#buf(out)],
        this.rt.grid1d(Math.ceil(n / WG1D)),
      );
    }
    return out;
  }

  int8Matmul(a: Tensor, aScale: Tensor, b: Tensor, bScale: Tensor, bias?: Tensor): Tensor {
    const op = "int8Matmul";
    this.#own(op, a, aScale, b, bScale, bias);
    checkInt8Matmul(a, aScale, b, bScale, bias);
    const m = a.shape[0];
    const n = b.shape[0];

    const out = this.#new([m, n], "f32");
    if (m * n === 0) return out;
    const la = layout("i8", a.shape);
    const lb = layout(b.dtype, b.shape);
    const lim = this.rt.bindableElems();
    const rowsA = Math.max(1, Math.min(Math.floor(lim / Math.max(la.wpr, 1)), Math.floor(lim / n)));
    const rowsB = Math.max(1, Math.floor(lim / Math.max(lb.wpr, 1)));
    // 16-byte loads when every row is a whole number of vec4 words and windows stay 16-byte aligned.
    const vec4 = la.wpr % 4 === 0 && lb.wpr % 4 === 0 && (b.dtype === "i8" || la.wpr === 2 * lb.wpr);
    const n4 = Math.ceil(n / 4);
    if (
      this.int8Layout !== "rows" && vec4 && b.dtype === "i8" && m * la.wpr <= lim && n4 * 4 * lb.wpr <= lim &&
      m * n <= lim && n * lb.wpr <= lim
    ) {
      this.#int8WordMajor(a, aScale, b, bScale, bias, out, m, n, la.wpr);
      return out;
    }
    const code = int8MatmulKernel(b.dtype as "i8" | "int4", this.#dot4, !!bias, vec4);
    const eb = vec4 ? 16 : 4;
    const unit = vec4 ? 4 : 1;
    for (let r0 = 0; r0 < m; r0 += rowsA) {
      const r1 = Math.min(m, r0 + rowsA);
      const wa = this.rt.window(this.#buf(a), (r0 * la.wpr) / unit, Math.max(r1 * la.wpr, r0 * la.wpr + 1) / unit, eb);
      const wsa = this.rt.window(this.#buf(aScale), r0, r1);
      const wc = this.rt.window(this.#buf(out), r0 * n, r1 * n);
      for (let c0 = 0; c0 < n; c0 += rowsB) {
        const c1 = Math.min(n, c0 + rowsB);
        const wb = this.rt.window(
          this.#buf(b),
          (c0 * lb.wpr) / unit,
          Math.max(c1 * lb.wpr, c0 * lb.wpr + 1) / unit,
          eb,
        );
        const wsb = this.rt.window(this.#buf(bScale), c0, c1);
        const wbias = bias ? this.rt.window(this.#buf(bias), c0, c1) : undefined;
        const p = new Params().u(r1 - r0).u(c1 - c0).u(la.wpr).u(lb.wpr).u(wa.off * unit).u(wb.off * unit).u(wc.off).u(
          wsa.off,
        )
          .u(wsb.off).u(c0).u(n).u(wbias?.off ?? 0);
        const binds = [wa.binding, wb.binding, wsa.binding, wsb.binding, wc.binding];
        if (wbias) binds.push(wbias.binding);
        this.rt.dispatch(code, p, binds, [Math.ceil((c1 - c0) / 32), Math.ceil((r1 - r0) / 32), 1]);
      }
    }
    return out;
  }

  /** int8 product with the weights repacked word-major (neighbouring columns read neighbouring words). */
  #int8WordMajor(
    a: Tensor,
    aScale: Tensor,
    b: Tensor,
    bScale: Tensor,
    bias: Tensor | undefined,
    out: Tensor,
    m: number,
    n: number,
    wpr: number,
  ): void {
    const n4 = Math.ceil(n / 4);
    const packed = this.rt.alloc(n4 * 4 * wpr * 4);
    try {
      const wb = this.rt.window(this.#buf(b), 0, n * wpr);
      this.rt.dispatch(
        PACK_I8_WORD_MAJOR,
        new Params().u(n).u(n4).u(wpr).u(wb.off),
        [wb.binding, packed],
        [Math.ceil((n4 * 4) / 64), Math.ceil(wpr / 4), 1],
      );
      const wa = this.rt.window(this.#buf(a), 0, (m * wpr) / 4, 16);
      const p = new Params().u(m).u(n).u(wpr).u(n4).u(wa.off * 4).u(0).u(0).u(0).u(0).u(0).u(n).u(0);
      const binds: (GPUBufferBinding | GPUBuffer)[] = [
        wa.binding,
        packed,
        this.#param(aScale),
        this.#param(bScale),
        this.rt.window(this.#buf(out), 0, m * n).binding,
      ];
      if (bias) binds.push(this.#param(bias));
      if (this.int8Layout === "f32-fma") {
        const wa1 = this.rt.window(this.#buf(a), 0, m * wpr);
        binds[0] = wa1.binding;
        const p1 = new Params().u(m).u(n).u(wpr).u(n4).u(wa1.off).u(0).u(0).u(0).u(0).u(0).u(n).u(0);
        const rowsPer = this.int8Rows;
        this.rt.dispatch(int8MatmulF32Kernel(!!bias, rowsPer), p1, binds, [
          Math.ceil(n4 / 16),
          Math.ceil(m / (8 * rowsPer)),
          1,
        ]);
      } else {
        this.rt.dispatch(int8MatmulWordMajorKernel(this.#dot4, !!bias), p, binds, [
          Math.ceil(n4 / 8),
          Math.ceil(m / 32),
          1,
        ]);
      }
    } finally {
      this.rt.free(packed);
    }
  }
}

/** Opens the WebGPU backend on the first GPU found, or returns undefined when there is none. */
export async function openWebGPU(
  opts: WebGPUBackendOptions & FindGpuOptions = {},
): Promise<WebGPUBackend | undefined> {
  const ctx = await findGpu(opts);
  if (!ctx) return undefined;
  return new WebGPUBackend(ctx, opts);
}

/** True when `x` is a float dtype this backend computes in. */
export function gpuFloat(d: DType): boolean {
  return isFloat(d) && d === "f32";
}
