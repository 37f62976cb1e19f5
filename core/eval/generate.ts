/** Token sequences sampled from a model (for text-only calibration when no corpus or tokenizer exists). */
import type { MultimodalModel } from "../model/adapter.ts";
import { Rng } from "../tensor/random.ts";

/**
 * n sequences of `length` tokens drawn from the model's own next-token distribution (temperature 1),
 * each starting from `prefix`; deterministic for a seed.
 */
export async function sampleSequences(
  model: MultimodalModel,
  n: number,
  length: number,
  seed: number,
  prefix: readonly number[],
): Promise<number[][]> {
  const rng = new Rng(seed);
  const out: number[][] = [];
  for (let s = 0; s < n; s++) {
    const ids = [...prefix];
    while (ids.length < length) {
      const logits = await model.logits(ids);
      const all = await logits.read();
      logits.dispose();
      const v = all.length / ids.length;
      const off = (ids.length - 1) * v;
      let m = -Infinity;
      for (let i = 0; i < v; i++) m = Math.max(m, all[off + i]);
      let z = 0;
      for (let i = 0; i < v; i++) z += Math.exp(all[off + i] - m);
      let u = rng.next() * z;
      let pick = v - 1;
      for (let i = 0; i < v; i++) {
        u -= Math.exp(all[off + i] - m);
        if (u <= 0) {
          pick = i;
          break;
        }
      }
      ids.push(pick);
    }
    out.push(ids);
  }
  return out;
}
