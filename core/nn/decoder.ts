/**
 * The decoder layer shared by Llama, LLaVA's language model, Qwen2.5-VL and the Qwen2.5-Omni thinker:
 * pre-norm attention with rotary embeddings and GQA, then a pre-norm gated MLP, both residual.
 *
 * Its seven linears are reached through a hook, so quantization methods can replace how each linear
 * is computed (fake quantization, per-modality smoothing, integer kernels) without touching the layer.
 * Linears that read the same input form groups: q/k/v (input_layernorm output), o (attention output),
 * gate/up (post_attention_layernorm output) and down (MLP product).
 */
import { type Backend, scope, type SoftmaxMask, type Tensor, type UnaryOp } from "../tensor/mod.ts";
import { attention } from "./attention.ts";
import { type Linear, linear } from "./linear.ts";
import { applyRope, type RopeTables } from "./rope.ts";

/** Names of the seven linears of a decoder layer. */
export type LinearName = "q" | "k" | "v" | "o" | "gate" | "up" | "down";

/** All linear names in execution order. */
export const LINEAR_NAMES: readonly LinearName[] = ["q", "k", "v", "o", "gate", "up", "down"];

/** Name of a group of linears that share one input. */
export type LinearGroup = "qkv" | "o" | "gateUp" | "down";

/** The linears of each group. */
export const LINEAR_GROUPS: Readonly<Record<LinearGroup, readonly LinearName[]>> = {
  qkv: ["q", "k", "v"],
  o: ["o"],
  gateUp: ["gate", "up"],
  down: ["down"],
};

/** The group a linear belongs to. */
export function groupOf(name: LinearName): LinearGroup {
  return name === "q" || name === "k" || name === "v"
    ? "qkv"
    : name === "o"
    ? "o"
    : name === "gate" || name === "up"
    ? "gateUp"
    : "down";
}

/** Hyper-parameters of a decoder layer. */
export interface DecoderLayerShape {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  rmsNormEps: number;
  /** MLP activation (silu for every supported family). */
  act: UnaryOp;
}

/** Weights of one decoder layer. */
export interface DecoderLayerWeights {
  inputNorm: Tensor;
  postNorm: Tensor;
  linears: Record<LinearName, Linear>;
}

/** Computes one linear of a layer: the default is the float product x·Wᵀ + b. */
export type LinearHook = (name: LinearName, x: Tensor, lin: Linear) => Tensor;

/** The float linear hook. */
export function floatLinear(be: Backend): LinearHook {
  return (_name, x, lin) => linear(be, x, lin);
}

/** Per-token context of a forward pass: rotary tables and the attention mask. */
export interface LayerContext {
  rope: RopeTables;
  mask: SoftmaxMask;
}

/** One decoder layer forward for hidden states x [T, hidden]. */
export function decoderLayer(
  be: Backend,
  shape: DecoderLayerShape,
  w: DecoderLayerWeights,
  x: Tensor,
  ctx: LayerContext,
  hook: LinearHook = floatLinear(be),
): Tensor {
  return scope(() => {
    const t = x.shape[0];
    const { heads, kvHeads, headDim } = shape;
    const L = w.linears;
    const h = be.rmsNorm(x, w.inputNorm, shape.rmsNormEps);
    const q = applyRope(be, be.reshape(hook("q", h, L.q), [t, heads, headDim]), ctx.rope);
    const k = applyRope(be, be.reshape(hook("k", h, L.k), [t, kvHeads, headDim]), ctx.rope);
    const v = be.reshape(hook("v", h, L.v), [t, kvHeads, headDim]);
    const a = attention(be, q, k, v, { heads, kvHeads, headDim }, ctx.mask);
    const x1 = be.binary("add", x, hook("o", a, L.o));
    const h2 = be.rmsNorm(x1, w.postNorm, shape.rmsNormEps);
    const g = be.unary(shape.act, hook("gate", h2, L.gate));
    const m = be.binary("mul", g, hook("up", h2, L.up));
    return be.binary("add", x1, hook("down", m, L.down));
  });
}

/** Disposes a layer's weights. */
export function disposeLayer(w: DecoderLayerWeights): void {
  w.inputNorm.dispose();
  w.postNorm.dispose();
  for (const l of Object.values(w.linears)) {
    l.w.dispose();
    l.b?.dispose();
  }
}
