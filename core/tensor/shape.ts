import { check, fmtShape } from "./errors.ts";
import { shapeSize } from "./tensor.ts";

/** NumPy broadcast of two shapes; throws naming the op when incompatible. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    check(
      da === db || da === 1 || db === 1,
      op,
      () => `shapes ${fmtShape(a)} and ${fmtShape(b)} do not broadcast (axis ${i}: ${da} vs ${db})`,
    );
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Strides of `shape` aligned to an output of rank `rank`, with 0 on broadcast axes. */
export function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const rank = outShape.length;
  const s = new Array<number>(rank).fill(0);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const oi = rank - shape.length + i;
    s[oi] = shape[i] === 1 && outShape[oi] !== 1 ? 0 : acc;
    acc *= shape[i];
  }
  return s;
}

/** Normalizes a possibly negative axis; throws when out of range. */
export function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  check(Number.isInteger(a) && a >= 0 && a < rank, op, `axis ${axis} is out of range for rank ${rank}`);
  return a;
}

/** Resolves a reshape target (one −1 allowed) against a size. */
export function resolveReshape(op: string, from: readonly number[], to: readonly number[]): number[] {
  const n = shapeSize(from);
  let unknown = -1;
  let known = 1;
  for (let i = 0; i < to.length; i++) {
    const d = to[i];
    if (d === -1) {
      check(unknown < 0, op, `more than one -1 in target shape ${fmtShape(to)}`);
      unknown = i;
    } else {
      check(Number.isInteger(d) && d >= 0, op, `bad dimension ${d} in target shape ${fmtShape(to)}`);
      known *= d;
    }
  }
  const out = [...to];
  if (unknown >= 0) {
    check(known > 0 && n % known === 0, op, `cannot reshape ${fmtShape(from)} to ${fmtShape(to)}`);
    out[unknown] = n / known;
  }
  check(shapeSize(out) === n, op, `cannot reshape ${fmtShape(from)} (${n} elements) to ${fmtShape(to)}`);
  return out;
}

/** Output shape and batch bookkeeping of a (batched, possibly transposed) matmul. */
export interface MatmulGeometry {
  batch: number;
  m: number;
  n: number;
  k: number;
  /** Elements between consecutive batch matrices of a / b (0 when broadcast). */
  strideA: number;
  strideB: number;
  outShape: number[];
}

/** Validates matmul operands and derives M, N, K and batch strides. */
export function matmulGeometry(
  a: readonly number[],
  b: readonly number[],
  transA: boolean,
  transB: boolean,
): MatmulGeometry {
  const op = "matmul";
  check(a.length >= 2 && b.length >= 2, op, () => `operands need rank >= 2, got ${fmtShape(a)} and ${fmtShape(b)}`);
  const m = transA ? a[a.length - 1] : a[a.length - 2];
  const ka = transA ? a[a.length - 2] : a[a.length - 1];
  const kb = transB ? b[b.length - 1] : b[b.length - 2];
  const n = transB ? b[b.length - 2] : b[b.length - 1];
  check(
    ka === kb,
    op,
    () => `inner dimensions differ: a ${fmtShape(a)} (transA=${transA}) b ${fmtShape(b)} (transB=${transB})`,
  );
  const ba = a.slice(0, -2);
  const bb = b.slice(0, -2);
  const sa = shapeSize(ba);
  const sb = shapeSize(bb);
  let batchShape: number[];
  if (ba.length === 0 || sa === 1 && bb.length > 0) batchShape = [...bb];
  else if (bb.length === 0 || sb === 1) batchShape = [...ba];
  else {
    check(
      ba.length === bb.length && ba.every((d, i) => d === bb[i]),
      op,
      () => `batch dimensions differ: a ${fmtShape(a)} b ${fmtShape(b)}`,
    );
    batchShape = [...ba];
  }
  const batch = shapeSize(batchShape);
  return {
    batch,
    m,
    n,
    k: ka,
    strideA: sa === 1 && batch > 1 ? 0 : m * ka,
    strideB: sb === 1 && batch > 1 ? 0 : n * ka,
    outShape: [...batchShape, m, n],
  };
}

/** Number of groups along a row of length `cols` for a quantizer group size (0 = whole row). */
export function groupsPerRow(op: string, cols: number, groupSize: number): number {
  if (groupSize === 0 || groupSize >= cols) return 1;
  check(cols % groupSize === 0, op, `row length ${cols} is not a multiple of the group size ${groupSize}`);
  return cols / groupSize;
}
