/** Linear layers in the PyTorch layout: y = x·Wᵀ + b with W [out, in]. */
import type { Backend, Tensor } from "../tensor/mod.ts";

/** Weight and optional bias of one linear layer. */
export interface Linear {
  /** [out, in] */
  w: Tensor;
  /** [out] */
  b?: Tensor;
}

/** y = x·Wᵀ + b for x [..., in]. */
export function linear(be: Backend, x: Tensor, lin: Linear): Tensor {
  const lead = x.shape.slice(0, -1);
  const x2 = x.rank === 2 ? x : be.reshape(x, [-1, x.shape[x.rank - 1]]);
  const y = be.matmul(x2, lin.w, { transB: true });
  if (x2 !== x) x2.dispose();
  let out = y;
  if (lin.b) {
    out = be.binary("add", y, lin.b);
    y.dispose();
  }
  if (x.rank === 2) return out;
  const r = be.reshape(out, [...lead, lin.w.shape[0]]);
  out.dispose();
  return r;
}

/** Disposes a linear's tensors. */
export function disposeLinear(lin: Linear): void {
  lin.w.dispose();
  lin.b?.dispose();
}
