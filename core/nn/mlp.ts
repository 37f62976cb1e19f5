/** Feed-forward blocks: the gated (SwiGLU) MLP of Llama/Qwen decoders and the two-layer MLP of ViTs. */
import type { Backend, Tensor, UnaryOp } from "../tensor/mod.ts";
import { type Linear, linear } from "./linear.ts";

/** down(act(gate(x)) ⊙ up(x)). */
export function gatedMlp(
  be: Backend,
  x: Tensor,
  gate: Linear,
  up: Linear,
  down: Linear,
  act: UnaryOp = "silu",
): Tensor {
  const g = linear(be, x, gate);
  const a = be.unary(act, g);
  const u = linear(be, x, up);
  const m = be.binary("mul", a, u);
  const y = linear(be, m, down);
  for (const t of [g, a, u, m]) t.dispose();
  return y;
}

/** fc2(act(fc1(x))) — CLIP uses quick_gelu, the Whisper-style audio tower gelu. */
export function mlp(be: Backend, x: Tensor, fc1: Linear, fc2: Linear, act: UnaryOp): Tensor {
  const h = linear(be, x, fc1);
  const a = be.unary(act, h);
  const y = linear(be, a, fc2);
  h.dispose();
  a.dispose();
  return y;
}
