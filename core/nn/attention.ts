/**
 * Multi-head attention with grouped key/value heads (GQA), causal or block-diagonal masks, written on
 * backend ops so it runs on every backend and under the autodiff tape.
 *
 * Query head h uses key/value head ⌊h / G⌋ with G = heads / kvHeads (transformers' repeat_kv order),
 * so [H, T, D] queries reshape to [Hkv, G·T, D] and every group shares one batched matmul.
 */
import { type Backend, check, fmtShape, type SoftmaxMask, type Tensor } from "../tensor/mod.ts";

/** Shape of an attention call. */
export interface AttentionShape {
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Multiplier of the scores (default 1/√headDim). */
  scale?: number;
}

/**
 * softmax(q·kᵀ·scale + mask)·v for q [T, H, D], k and v [T, Hkv, D] → [T, H·D].
 */
export function attention(
  be: Backend,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  shape: AttentionShape,
  mask: SoftmaxMask,
): Tensor {
  const { heads, kvHeads, headDim } = shape;
  const t = q.shape[0];
  check(
    q.rank === 3 && q.shape[1] === heads && q.shape[2] === headDim && k.rank === 3 && k.shape[0] === t &&
      k.shape[1] === kvHeads && k.shape[2] === headDim && v.shape.join() === k.shape.join() && heads % kvHeads === 0,
    "attention",
    () =>
      `q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${
        fmtShape(v.shape)
      } do not fit ${heads}/${kvHeads} heads of ${headDim}`,
  );
  const g = heads / kvHeads;
  const qh = be.transpose(q, [1, 0, 2]); // [H, T, D]
  const qg = be.reshape(qh, [kvHeads, g * t, headDim]);
  const kh = be.transpose(k, [1, 0, 2]); // [Hkv, T, D]
  const vh = be.transpose(v, [1, 0, 2]);
  const scores = be.matmul(qg, kh, { transB: true }); // [Hkv, G·T, T]
  const scaled = be.affine(scores, shape.scale ?? 1 / Math.sqrt(headDim), 0);
  const probs = be.softmax(scaled, mask);
  const ctx = be.matmul(probs, vh); // [Hkv, G·T, D]
  const ch = be.reshape(ctx, [heads, t, headDim]);
  const out = be.transpose(ch, [1, 0, 2]);
  const flat = be.reshape(out, [t, heads * headDim]);
  for (const x of [qh, qg, kh, vh, scores, scaled, probs, ctx, ch, out]) x.dispose();
  return flat;
}
