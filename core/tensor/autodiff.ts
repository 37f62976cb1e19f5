/**
 * Reverse-mode automatic differentiation over the Backend interface.
 *
 * A {@link Tape} is itself a Backend: code written against the interface (a decoder layer, a loss) runs
 * on it unchanged. Every op whose inputs depend on a parameter is recorded with its backward rule; the
 * rules are written with the inner backend's ops, so gradients run on the CPU and on WebGPU alike.
 * Tensors that do not depend on a parameter are not recorded. Recorded values are retained by the tape
 * (the caller may dispose its own handles freely, scopes included) until {@link Tape.dispose}.
 *
 * The gradient of gatherRows with respect to the table assumes distinct indices (it scatters rows back;
 * repeated indices would need accumulation) — true of the modality row lists it is used with.
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
} from "./backend.ts";
import type { DType, HostArray } from "./dtype.ts";
import { TensorOpError } from "./errors.ts";
import { broadcastShapes } from "./shape.ts";
import { sameShape, type Storage, type Tensor } from "./tensor.ts";

interface Node {
  /** Inputs that require gradients, paired with the functions giving their gradient from the output's. */
  edges: { input: Tensor; grad: (g: Tensor) => Tensor }[];
}

/** A recording Backend for reverse-mode differentiation. */
export class Tape implements Backend {
  readonly name: string;
  readonly supportsF64: boolean;
  readonly #nodes = new Map<number, Node>();
  readonly #order: Tensor[] = [];
  readonly #params = new Set<number>();
  readonly #held: Tensor[] = [];

  /** Wraps the backend that does the arithmetic. */
  constructor(readonly inner: Backend) {
    this.name = `tape(${inner.name})`;
    this.supportsF64 = inner.supportsF64;
  }

  /** Marks a tensor as a parameter (a leaf whose gradient {@link grad} can return). */
  param(t: Tensor): Tensor {
    this.#params.add(t.id);
    return t;
  }

  /** True when `t` is a parameter or was computed from one on this tape. */
  requiresGrad(t: Tensor | undefined): boolean {
    return !!t && (this.#params.has(t.id) || this.#nodes.has(t.id));
  }

  #hold(t: Tensor): Tensor {
    const h = t.retainUntracked();
    this.#held.push(h);
    return h;
  }

  /**
   * Records `out` = op(inputs). `rules[i]` gives the gradient of input i from the output gradient; inputs
   * that do not require gradients are skipped. An input that requires a gradient but has no rule is an
   * error (the op is not differentiable with respect to it).
   */
  #record(
    op: string,
    out: Tensor,
    inputs: (Tensor | undefined)[],
    rules: ((g: Tensor) => Tensor)[] | undefined,
  ): Tensor {
    const edges: Node["edges"] = [];
    inputs.forEach((input, i) => {
      if (!input || !this.requiresGrad(input)) return;
      const rule = rules?.[i];
      if (!rule) throw new TensorOpError(op, `is not differentiable with respect to input ${i}`);
      edges.push({ input, grad: rule });
    });
    if (edges.length) {
      this.#nodes.set(out.id, { edges });
      this.#order.push(out);
    }
    return out;
  }

  /**
   * Gradients of the scalar `loss` (one element) with respect to `params`, in order (zeros for
   * parameters the loss does not depend on). The tape stays usable for another forward afterwards only
   * after {@link dispose}.
   */
  grad(loss: Tensor, params: readonly Tensor[]): Tensor[] {
    const be = this.inner;
    if (loss.size !== 1) throw new TensorOpError("grad", `the loss must have one element, got shape [${loss.shape}]`);
    const grads = new Map<number, Tensor>();
    grads.set(loss.id, be.full(loss.shape, 1, loss.dtype));
    const accumulate = (t: Tensor, g: Tensor) => {
      const prev = grads.get(t.id);
      if (!prev) {
        grads.set(t.id, g);
        return;
      }
      const sum = be.binary("add", prev, g);
      prev.dispose();
      g.dispose();
      grads.set(t.id, sum);
    };
    for (let i = this.#order.length - 1; i >= 0; i--) {
      const out = this.#order[i];
      const g = grads.get(out.id);
      if (!g) continue;
      const node = this.#nodes.get(out.id)!;
      for (const e of node.edges) accumulate(e.input, e.grad(g));
      if (!this.#params.has(out.id)) {
        g.dispose();
        grads.delete(out.id);
      }
    }
    const result = params.map((p) => grads.get(p.id) ?? be.full(p.shape, 0, p.dtype));
    const keep = new Set(result);
    for (const t of grads.values()) if (!keep.has(t)) t.dispose();
    return result;
  }

  /** Releases everything the tape retained and forgets the recording (parameters stay marked). */
  dispose(): void {
    for (const t of this.#held) t.dispose();
    this.#held.length = 0;
    this.#nodes.clear();
    this.#order.length = 0;
  }

  // ---- helpers for rules ------------------------------------------------------------------------

  /** Sums a broadcast gradient back to `shape`. */
  #unbroadcast(g: Tensor, shape: readonly number[]): Tensor {
    const be = this.inner;
    if (sameShape(g.shape, shape)) return g.retain();
    let cur = g.retain();
    while (cur.rank > shape.length) {
      const next = be.reduce("sum", cur, 0);
      cur.dispose();
      cur = next;
    }
    for (let a = 0; a < shape.length; a++) {
      if (shape[a] === 1 && cur.shape[a] !== 1) {
        const next = be.reduce("sum", cur, a, true);
        cur.dispose();
        cur = next;
      }
    }
    return cur;
  }

  // ---- Backend: memory ----------------------------------------------------------------------------

  tensor(data: ArrayLike<number>, shape: readonly number[], dtype?: DType): Tensor {
    return this.inner.tensor(data, shape, dtype);
  }
  full(shape: readonly number[], value: number, dtype?: DType): Tensor {
    return this.inner.full(shape, value, dtype);
  }
  read(t: Tensor): Promise<HostArray> {
    return this.inner.read(t);
  }
  release(s: Storage): void {
    this.inner.release(s);
  }
  sync(): Promise<void> {
    return this.inner.sync();
  }
  memory(): { liveBytes: number; pooledBytes: number } {
    return this.inner.memory();
  }

  // ---- Backend: layout ----------------------------------------------------------------------------

  reshape(x: Tensor, shape: readonly number[]): Tensor {
    const out = this.inner.reshape(x, shape);
    const from = [...x.shape];
    return this.#record("reshape", out, [x], [(g) => this.inner.reshape(g, from)]);
  }

  transpose(x: Tensor, perm: readonly number[]): Tensor {
    const out = this.inner.transpose(x, perm);
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => (inv[p] = i));
    return this.#record("transpose", out, [x], [(g) => this.inner.transpose(g, inv)]);
  }

  slice(x: Tensor, axis: number, start: number, end: number): Tensor {
    const out = this.inner.slice(x, axis, start, end);
    const a = axis < 0 ? axis + x.rank : axis;
    const shape = [...x.shape];
    return this.#record("slice", out, [x], [(g) => {
      const be = this.inner;
      const parts: Tensor[] = [];
      if (start > 0) parts.push(be.full(shape.map((d, i) => (i === a ? start : d)), 0, g.dtype));
      parts.push(g);
      if (end < shape[a]) parts.push(be.full(shape.map((d, i) => (i === a ? shape[a] - end : d)), 0, g.dtype));
      const r = parts.length === 1 ? g.retain() : be.concat(parts, a);
      for (const p of parts) if (p !== g) p.dispose();
      return r;
    }]);
  }

  concat(xs: readonly Tensor[], axis: number): Tensor {
    const out = this.inner.concat(xs, axis);
    const a = axis < 0 ? axis + xs[0].rank : axis;
    let off = 0;
    const rules = xs.map((x) => {
      const s = off;
      off += x.shape[a];
      return (g: Tensor) => this.inner.slice(g, a, s, s + x.shape[a]);
    });
    return this.#record("concat", out, [...xs], rules);
  }

  gatherRows(table: Tensor, idx: Tensor): Tensor {
    const out = this.inner.gatherRows(table, idx);
    if (!this.requiresGrad(table)) return out;
    const shape = [...table.shape];
    const ih = this.#hold(idx);
    return this.#record("gatherRows", out, [table, idx], [(g) => {
      const z = this.inner.full(shape, 0, g.dtype);
      const r = this.inner.scatterRows(z, g, ih);
      z.dispose();
      return r;
    }]);
  }

  scatterRows(base: Tensor, rows: Tensor, idx: Tensor): Tensor {
    const out = this.inner.scatterRows(base, rows, idx);
    if (!this.requiresGrad(base) && !this.requiresGrad(rows)) return out;
    const rshape = [...rows.shape];
    const ih = this.#hold(idx);
    return this.#record("scatterRows", out, [base, rows, idx], [
      (g) => {
        const z = this.inner.full(rshape, 0, g.dtype);
        const r = this.inner.scatterRows(g, z, ih);
        z.dispose();
        return r;
      },
      (g) => this.inner.gatherRows(g, ih),
    ]);
  }

  cast(x: Tensor, dtype: DType): Tensor {
    return this.#record("cast", this.inner.cast(x, dtype), [x], undefined);
  }

  // ---- Backend: elementwise -----------------------------------------------------------------------

  unary(op: UnaryOp, x: Tensor): Tensor {
    const out = this.inner.unary(op, x);
    if (!this.requiresGrad(x)) return out;
    const xs = this.#hold(x);
    return this.#record(`unary(${op})`, out, [x], [(g) => this.inner.unaryGrad(op, xs, g)]);
  }

  unaryGrad(op: UnaryOp, x: Tensor, gy: Tensor): Tensor {
    return this.#record("unaryGrad", this.inner.unaryGrad(op, x, gy), [x, gy], undefined);
  }

  binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
    const be = this.inner;
    const out = be.binary(op, a, b);
    if (!this.requiresGrad(a) && !this.requiresGrad(b)) return out;
    broadcastShapes(`binary(${op})`, a.shape, b.shape);
    const sa = [...a.shape];
    const sb = [...b.shape];
    const ah = op === "mul" || op === "div" ? this.#hold(a) : undefined;
    const bh = op === "mul" || op === "div" ? this.#hold(b) : undefined;
    const un = (g: Tensor, shape: number[]) => this.#unbroadcast(g, shape);
    const withTemp = (t: Tensor, shape: number[]) => {
      const r = un(t, shape);
      t.dispose();
      return r;
    };
    let rules: ((g: Tensor) => Tensor)[];
    switch (op) {
      case "add":
        rules = [(g) => un(g, sa), (g) => un(g, sb)];
        break;
      case "sub":
        rules = [(g) => un(g, sa), (g) => withTemp(be.affine(g, -1, 0), sb)];
        break;
      case "mul":
        rules = [(g) => withTemp(be.binary("mul", g, bh!), sa), (g) => withTemp(be.binary("mul", g, ah!), sb)];
        break;
      case "div":
        rules = [
          (g) => withTemp(be.binary("div", g, bh!), sa),
          (g) => {
            // ∂(a/b)/∂b = −a/b²
            const q = be.binary("div", ah!, bh!);
            const q2 = be.binary("div", q, bh!);
            const t = be.binary("mul", g, q2);
            const n = be.affine(t, -1, 0);
            for (const x of [q, q2, t]) x.dispose();
            return withTemp(n, sb);
          },
        ];
        break;
      default:
        rules = [];
    }
    return this.#record(`binary(${op})`, out, [a, b], rules);
  }

  affine(x: Tensor, mul: number, add: number): Tensor {
    return this.#record("affine", this.inner.affine(x, mul, add), [x], [(g) => this.inner.affine(g, mul, 0)]);
  }

  pow(x: Tensor, p: number): Tensor {
    return this.#record("pow", this.inner.pow(x, p), [x], undefined);
  }

  clamp(x: Tensor, lo: number, hi: number): Tensor {
    return this.#record("clamp", this.inner.clamp(x, lo, hi), [x], undefined);
  }

  // ---- Backend: reductions ------------------------------------------------------------------------

  reduce(op: ReduceOp, x: Tensor, axis: number, keepDims = false): Tensor {
    const be = this.inner;
    const out = be.reduce(op, x, axis, keepDims);
    const a = axis < 0 ? axis + x.rank : axis;
    const shape = [...x.shape];
    const keptShape = shape.map((d, i) => (i === a ? 1 : d));
    const rule = (g: Tensor) => {
      const gk = be.reshape(g, keptShape);
      const zeros = be.full(shape, 0, g.dtype);
      const spread = be.binary("add", zeros, gk);
      const r = op === "mean" ? be.affine(spread, 1 / shape[a], 0) : spread.retain();
      for (const t of [gk, zeros, spread]) t.dispose();
      return r;
    };
    return this.#record(`reduce(${op})`, out, [x], op === "sum" || op === "mean" ? [rule] : undefined);
  }

  channelMaxAbs(x: Tensor, rowIds?: Tensor, id?: number): Tensor {
    return this.#record("channelMaxAbs", this.inner.channelMaxAbs(x, rowIds, id), [x], undefined);
  }

  // ---- Backend: matmul ------------------------------------------------------------------------------

  matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
    const be = this.inner;
    const out = be.matmul(a, b, opts);
    if (!this.requiresGrad(a) && !this.requiresGrad(b)) return out;
    const tA = !!opts.transA;
    const tB = !!opts.transB;
    const ah = this.#hold(a);
    const bh = this.#hold(b);
    const sa = [...a.shape];
    const sb = [...b.shape];
    // Sums over batch axes where an operand was broadcast (rank 2 against a batched product).
    const fold = (g: Tensor, shape: number[]) => {
      let cur = g;
      while (cur.rank > shape.length) {
        const next = be.reduce("sum", cur, 0);
        cur.dispose();
        cur = next;
      }
      return cur;
    };
    return this.#record("matmul", out, [a, b], [
      // C = op(A)·op(B): dA = dC·op(B)ᵀ (or its transpose when A was used transposed).
      (g) => fold(tA ? be.matmul(bh, g, { transA: tB, transB: true }) : be.matmul(g, bh, { transB: !tB }), sa),
      (g) => fold(tB ? be.matmul(g, ah, { transA: true, transB: tA }) : be.matmul(ah, g, { transA: !tA }), sb),
    ]);
  }

  // ---- Backend: transformer ops ----------------------------------------------------------------------

  softmax(x: Tensor, mask?: SoftmaxMask): Tensor {
    const out = this.inner.softmax(x, mask);
    if (!this.requiresGrad(x)) return out;
    const y = this.#hold(out);
    return this.#record("softmax", out, [x], [(g) => this.inner.softmaxGrad(y, g)]);
  }

  softmaxGrad(y: Tensor, gy: Tensor): Tensor {
    return this.#record("softmaxGrad", this.inner.softmaxGrad(y, gy), [y, gy], undefined);
  }

  rmsNorm(x: Tensor, w: Tensor | undefined, eps: number): Tensor {
    const out = this.inner.rmsNorm(x, w, eps);
    if (!this.requiresGrad(x) && !this.requiresGrad(w)) return out;
    const xh = this.#hold(x);
    const wh = w ? this.#hold(w) : undefined;
    return this.#record("rmsNorm", out, [x, w], [(g) => this.inner.rmsNormGrad(xh, wh, eps, g)]);
  }

  rmsNormGrad(x: Tensor, w: Tensor | undefined, eps: number, gy: Tensor): Tensor {
    return this.#record("rmsNormGrad", this.inner.rmsNormGrad(x, w, eps, gy), [x, w, gy], undefined);
  }

  layerNorm(x: Tensor, w: Tensor | undefined, b: Tensor | undefined, eps: number): Tensor {
    return this.#record("layerNorm", this.inner.layerNorm(x, w, b, eps), [x, w, b], undefined);
  }

  ropeTables(positions: Tensor, invFreq: Tensor, sections: readonly number[]): [Tensor, Tensor] {
    if (this.requiresGrad(invFreq)) throw new TensorOpError("ropeTables", "is not differentiable");
    return this.inner.ropeTables(positions, invFreq, sections);
  }

  rotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
    const out = this.inner.rotary(x, cos, sin);
    if (!this.requiresGrad(x)) return out;
    if (this.requiresGrad(cos) || this.requiresGrad(sin)) {
      throw new TensorOpError("rotary", "is not differentiable with respect to the tables");
    }
    const c = this.#hold(cos);
    const neg = this.inner.affine(sin, -1, 0);
    const negSin = this.#hold(neg);
    neg.dispose();
    return this.#record("rotary", out, [x], [(g) => this.inner.rotary(g, c, negSin)]);
  }

  // ---- Backend: quantization ------------------------------------------------------------------------

  fakeQuant(x: Tensor, spec: QuantSpec, opts?: FakeQuantOptions): Tensor {
    const out = this.inner.fakeQuant(x, spec, opts);
    if (!this.requiresGrad(x)) return out;
    const xh = this.#hold(x);
    return this.#record("fakeQuant", out, [x], [(g) => this.inner.fakeQuantGrad(xh, g, spec, opts)]);
  }

  fakeQuantGrad(x: Tensor, gy: Tensor, spec: QuantSpec, opts?: FakeQuantOptions): Tensor {
    return this.#record("fakeQuantGrad", this.inner.fakeQuantGrad(x, gy, spec, opts), [x, gy], undefined);
  }

  quantize(x: Tensor, spec: QuantSpec, packInt4?: boolean): Quantized {
    if (this.requiresGrad(x)) throw new TensorOpError("quantize", "is not differentiable; use fakeQuant");
    return this.inner.quantize(x, spec, packInt4);
  }

  dequantize(qz: Quantized, groupSize: number): Tensor {
    return this.inner.dequantize(qz, groupSize);
  }

  int8Matmul(a: Tensor, aScale: Tensor, b: Tensor, bScale: Tensor, bias?: Tensor): Tensor {
    if ([aScale, bScale, bias].some((t) => this.requiresGrad(t))) {
      throw new TensorOpError("int8Matmul", "is not differentiable");
    }
    return this.inner.int8Matmul(a, aScale, b, bScale, bias);
  }
}
