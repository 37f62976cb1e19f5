/**
 * Rotary position embeddings: inverse frequencies and cos/sin tables for 1-D RoPE (Llama), M-RoPE
 * (Qwen2-VL/2.5: three position rows split by `mrope_section`) and the 2-D rotary of the Qwen vision
 * tower (row and column positions). The rotation itself is `Backend.rotary` (rotate-half convention).
 */
import type { Backend, Tensor } from "../tensor/mod.ts";

/** inv_freq[i] = 1 / theta^(2i / dim) for i < dim/2. */
export function inverseFrequencies(dim: number, theta: number): Float32Array {
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = 1 / Math.pow(theta, (2 * i) / dim);
  return out;
}

/** cos/sin [T, D/2] tables for rotary embeddings. */
export interface RopeTables {
  cos: Tensor;
  sin: Tensor;
}

/** Tables of 1-D RoPE at positions `pos` (default 0..T−1). */
export function ropeTables1d(be: Backend, headDim: number, theta: number, pos: ArrayLike<number>): RopeTables {
  const p = be.tensor(pos, [1, pos.length], "i32");
  const inv = be.tensor(inverseFrequencies(headDim, theta), [headDim / 2]);
  const [cos, sin] = be.ropeTables(p, inv, [headDim / 2]);
  p.dispose();
  inv.dispose();
  return { cos, sin };
}

/**
 * M-RoPE tables: positions [3, T] (temporal, height, width); frequency i uses the position row of the
 * section it falls in (`sections` = mrope_section, summing to headDim/2).
 */
export function ropeTablesMulti(
  be: Backend,
  headDim: number,
  theta: number,
  positions: Int32Array,
  sections: readonly number[],
): RopeTables {
  const t = positions.length / sections.length;
  const p = be.tensor(positions, [sections.length, t], "i32");
  const inv = be.tensor(inverseFrequencies(headDim, theta), [headDim / 2]);
  const [cos, sin] = be.ropeTables(p, inv, sections);
  p.dispose();
  inv.dispose();
  return { cos, sin };
}

/** Applies rotary embeddings to x [T, H, D]. */
export function applyRope(be: Backend, x: Tensor, rope: RopeTables): Tensor {
  return be.rotary(x, rope.cos, rope.sin);
}

/** Disposes rope tables. */
export function disposeRope(r: RopeTables): void {
  r.cos.dispose();
  r.sin.dispose();
}
