/**
 * Pre-LayerNorm transformer encoder layer with biases (CLIP's vision tower, the Whisper-style audio
 * tower of Qwen2.5-Omni): x + out(attn(ln1(x))), then x + fc2(act(fc1(ln2(x)))). Full attention, or
 * block-diagonal through segment ids.
 */
import { type Backend, scope, type SoftmaxMask, type Tensor, type UnaryOp } from "../tensor/mod.ts";
import { attention } from "./attention.ts";
import { type Linear, linear } from "./linear.ts";
import { mlp } from "./mlp.ts";

/** A LayerNorm's parameters. */
export interface Norm {
  w: Tensor;
  b?: Tensor;
}

/** Weights of one encoder layer. */
export interface EncoderLayerWeights {
  ln1: Norm;
  ln2: Norm;
  q: Linear;
  k: Linear;
  v: Linear;
  out: Linear;
  fc1: Linear;
  fc2: Linear;
}

/** Hyper-parameters of an encoder layer. */
export interface EncoderLayerShape {
  heads: number;
  headDim: number;
  eps: number;
  act: UnaryOp;
}

/** One encoder layer on x [T, hidden]. */
export function encoderLayer(
  be: Backend,
  shape: EncoderLayerShape,
  w: EncoderLayerWeights,
  x: Tensor,
  mask: SoftmaxMask = {},
): Tensor {
  return scope(() => {
    const t = x.shape[0];
    const { heads, headDim } = shape;
    const h = be.layerNorm(x, w.ln1.w, w.ln1.b, shape.eps);
    const q = be.reshape(linear(be, h, w.q), [t, heads, headDim]);
    const k = be.reshape(linear(be, h, w.k), [t, heads, headDim]);
    const v = be.reshape(linear(be, h, w.v), [t, heads, headDim]);
    const a = attention(be, q, k, v, { heads, kvHeads: heads, headDim }, mask);
    const x1 = be.binary("add", x, linear(be, a, w.out));
    const h2 = be.layerNorm(x1, w.ln2.w, w.ln2.b, shape.eps);
    return be.binary("add", x1, mlp(be, h2, w.fc1, w.fc2, shape.act));
  });
}

/** Disposes an encoder layer's tensors. */
export function disposeEncoderLayer(w: EncoderLayerWeights): void {
  for (const n of [w.ln1, w.ln2]) {
    n.w.dispose();
    n.b?.dispose();
  }
  for (const l of [w.q, w.k, w.v, w.out, w.fc1, w.fc2]) {
    l.w.dispose();
    l.b?.dispose();
  }
}
