/**
 * Argument checks shared by the backends, so that every backend rejects the same bad calls with the
 * same message (naming the op and the shapes).
 */
import type { SoftmaxMask } from "./backend.ts";
import { check, fmtShape } from "./errors.ts";
import { normAxis } from "./shape.ts";
import type { Tensor } from "./tensor.ts";

/** A permutation of x's axes → the output shape. */
export function checkTranspose(x: Tensor, perm: readonly number[]): number[] {
  const r = x.rank;
  check(
    perm.length === r && [...perm].sort((a, b) => a - b).every((p, i) => p === i),
    "transpose",
    () => `perm [${perm}] is not a permutation of ${r} axes (shape ${fmtShape(x.shape)})`,
  );
  return perm.map((p) => x.shape[p]);
}

/** A slice [start, end) of one axis → the normalised axis and the output shape. */
export function checkSlice(x: Tensor, axis: number, start: number, end: number): { axis: number; shape: number[] } {
  const a = normAxis("slice", axis, x.rank);
  check(
    Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= x.shape[a],
    "slice",
    () => `range [${start}, ${end}) is outside axis ${a} of ${fmtShape(x.shape)}`,
  );
  const shape = [...x.shape];
  shape[a] = end - start;
  return { axis: a, shape };
}

/** Tensors joined along one axis → the normalised axis and the output shape. */
export function checkConcat(xs: readonly Tensor[], axis: number): { axis: number; shape: number[] } {
  check(xs.length > 0, "concat", "needs at least one tensor");
  const r = xs[0].rank;
  const a = normAxis("concat", axis, r);
  for (const t of xs) {
    check(
      t.rank === r && t.dtype === xs[0].dtype && t.shape.every((d, i) => i === a || d === xs[0].shape[i]),
      "concat",
      () => `shapes ${xs.map((u) => `${u.dtype}${fmtShape(u.shape)}`).join(", ")} do not match off axis ${a}`,
    );
  }
  const shape = [...xs[0].shape];
  shape[a] = xs.reduce((s, t) => s + t.shape[a], 0);
  return { axis: a, shape };
}

/** gatherRows(table [R, C], idx [n]). */
export function checkGatherRows(table: Tensor, idx: Tensor): void {
  check(
    table.rank === 2 && idx.rank === 1,
    "gatherRows",
    () => `expects table [R,C] and idx [n], got ${fmtShape(table.shape)} and ${fmtShape(idx.shape)}`,
  );
}

/** scatterRows(base [R, C], rows [n, C], idx [n]). */
export function checkScatterRows(base: Tensor, rows: Tensor, idx: Tensor): void {
  check(
    base.rank === 2 && rows.rank === 2 && idx.rank === 1 && rows.shape[0] === idx.size &&
      rows.shape[1] === base.shape[1] && rows.dtype === base.dtype,
    "scatterRows",
    () => `base ${fmtShape(base.shape)}, rows ${fmtShape(rows.shape)}, idx ${fmtShape(idx.shape)} do not match`,
  );
}

/** channelMaxAbs(x [rows, cols], rowIds [rows]). */
export function checkChannelMaxAbs(x: Tensor, rowIds?: Tensor): void {
  check(x.rank === 2, "channelMaxAbs", () => `expects [rows, channels], got ${fmtShape(x.shape)}`);
  if (rowIds) {
    check(
      rowIds.rank === 1 && rowIds.size === x.shape[0],
      "channelMaxAbs",
      () => `rowIds ${fmtShape(rowIds.shape)} does not match ${x.shape[0]} rows of ${fmtShape(x.shape)}`,
    );
  }
}

/** The segments of a softmax mask have one entry per key. */
export function checkSoftmaxMask(x: Tensor, mask: SoftmaxMask): void {
  check(x.rank >= 1, "softmax", "needs rank >= 1");
  const cols = x.shape[x.rank - 1];
  if (mask.segments) {
    check(
      mask.segments.size === cols,
      "softmax",
      () => `segments ${fmtShape(mask.segments!.shape)} must have one entry per key (${cols})`,
    );
  }
}

/** Norm parameters are vectors as wide as x's last axis. */
export function checkNormParams(op: string, x: Tensor, ...params: (Tensor | undefined)[]): void {
  const c = x.shape[x.rank - 1];
  for (const p of params) {
    if (p) {
      check(
        p.rank === 1 && p.shape[0] === c,
        op,
        () => `parameter ${fmtShape(p.shape)} does not match ${fmtShape(x.shape)}`,
      );
    }
  }
}

/** ropeTables(positions [P, T], invFreq [F], sections) → T and F. */
export function checkRopeTables(
  positions: Tensor,
  invFreq: Tensor,
  sections: readonly number[],
): { t: number; nf: number } {
  check(positions.rank === 2, "ropeTables", () => `positions must be [P, T], got ${fmtShape(positions.shape)}`);
  const [p, t] = positions.shape;
  const nf = invFreq.size;
  check(
    sections.length >= 1 && sections.length <= p && sections.reduce((a, b) => a + b, 0) === nf,
    "ropeTables",
    () => `sections [${sections}] must sum to ${nf} frequencies and use at most ${p} position rows`,
  );
  return { t, nf };
}

/** rotary(x [T, H, D], cos/sin [T, D/2]) → T, H, D. */
export function checkRotary(x: Tensor, cos: Tensor, sin: Tensor): { t: number; h: number; d: number } {
  check(x.rank === 3, "rotary", () => `x must be [T, H, D], got ${fmtShape(x.shape)}`);
  const [t, h, d] = x.shape;
  const half = d / 2;
  check(
    d % 2 === 0 && cos.size === t * half && sin.size === t * half,
    "rotary",
    () => `x ${fmtShape(x.shape)} needs cos/sin [${t},${half}], got ${fmtShape(cos.shape)} / ${fmtShape(sin.shape)}`,
  );
  return { t, h, d };
}

/** Scales (and zero points) of a dequantization match the codes' rows × groups. */
export function checkDequantize(scale: Tensor, zero: Tensor | undefined, rows: number, groups: number): void {
  check(
    scale.size === rows * groups && (!zero || zero.size === rows * groups),
    "dequantize",
    () => `scale ${fmtShape(scale.shape)} does not match ${rows} rows x ${groups} groups`,
  );
}

/** int8Matmul(a i8 [M,K], aScale [M], b i8/int4 [N,K], bScale [N], bias [N]) → M, N, K. */
export function checkInt8Matmul(
  a: Tensor,
  aScale: Tensor,
  b: Tensor,
  bScale: Tensor,
  bias?: Tensor,
): { m: number; n: number; k: number } {
  const op = "int8Matmul";
  check(
    a.dtype === "i8" && (b.dtype === "i8" || b.dtype === "int4") && a.rank === 2 && b.rank === 2 &&
      a.shape[1] === b.shape[1],
    op,
    () =>
      `expects a i8 [M,K] and b i8/int4 [N,K], got ${a.dtype}${fmtShape(a.shape)} and ${b.dtype}${fmtShape(b.shape)}`,
  );
  const [m, k] = a.shape;
  const n = b.shape[0];
  check(
    aScale.dtype === "f32" && bScale.dtype === "f32" && aScale.size === m && bScale.size === n &&
      (!bias || (bias.dtype === "f32" && bias.size === n)),
    op,
    () =>
      `scales/bias must be f32 with ${m} and ${n} entries, got aScale ${fmtShape(aScale.shape)}, bScale ${
        fmtShape(bScale.shape)
      }${bias ? `, bias ${fmtShape(bias.shape)}` : ""}`,
  );
  return { m, n, k };
}
