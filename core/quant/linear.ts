/**
 * Fake-quantized linear layers (simulated quantization in float): y = Q_a(x / s) · Q_w(W · diag(s))ᵀ + b,
 * with optional smoothing vector s [in] (masquant-algorithm §0, §3.3). Without s this is plain
 * round-to-nearest quantization of weights and activations.
 */
import type { Backend, Tensor } from "../tensor/mod.ts";
import type { Linear } from "../nn/linear.ts";
import type { QuantScheme } from "./scheme.ts";

/** Options of the quantized linear. */
export interface QuantLinearOptions {
  /** Replace rounding by the identity (gradient checks). */
  round?: boolean;
}

/** W · diag(s) for W [out, in] and s [in]. */
export function scaleColumns(be: Backend, w: Tensor, s: Tensor): Tensor {
  return be.binary("mul", w, s);
}

/** Q_w(W · diag(s)) (or Q_w(W) without s). */
export function quantWeight(
  be: Backend,
  w: Tensor,
  scheme: QuantScheme,
  s?: Tensor,
  opts: QuantLinearOptions = {},
): Tensor {
  if (!s) return be.fakeQuant(w, scheme.weight, { round: opts.round });
  const ws = scaleColumns(be, w, s);
  const q = be.fakeQuant(ws, scheme.weight, { round: opts.round });
  ws.dispose();
  return q;
}

/** Q_a(x / s) (or x / s when the scheme has no activation quantizer). */
export function quantAct(
  be: Backend,
  x: Tensor,
  scheme: QuantScheme,
  s?: Tensor,
  opts: QuantLinearOptions = {},
): Tensor {
  const xs = s ? be.binary("div", x, s) : x;
  if (!scheme.act) return xs === x ? x.retain() : xs;
  const q = be.fakeQuant(xs, scheme.act, { round: opts.round });
  if (xs !== x) xs.dispose();
  return q;
}

/** Q_a(x / s) · Q_w(W · diag(s))ᵀ + b. */
export function fakeQuantLinear(
  be: Backend,
  x: Tensor,
  lin: Linear,
  scheme: QuantScheme,
  s?: Tensor,
  opts: QuantLinearOptions = {},
): Tensor {
  const xq = quantAct(be, x, scheme, s, opts);
  const wq = quantWeight(be, lin.w, scheme, s, opts);
  const y = be.matmul(xq, wq, { transB: true });
  xq.dispose();
  wq.dispose();
  if (!lin.b) return y;
  const out = be.binary("add", y, lin.b);
  y.dispose();
  return out;
}
