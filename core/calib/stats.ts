/**
 * Calibration statistics of one decoder layer (masquant-algorithm §1.1, §6.2), accumulated sample by
 * sample so that no more than one sample's activations are ever held:
 *
 * - per input channel of each linear group (q/k/v, o, gate/up, down): max |x| over all tokens and over the
 *   tokens of each modality (running element-wise maximum across samples);
 * - optionally, for CMC, the second-moment matrix Xᵀ·X of each non-text modality's tokens at the inputs of
 *   the smoothed groups (q/k/v, o, gate/up), summed in float64 on the host. Smoothing by s only rescales
 *   it (diag(s)⁻¹·C·diag(s)⁻¹), so one matrix per group serves every linear and every smoothing vector.
 *
 * Statistics come from the float chain's inputs (the reference collects them on the full-precision model).
 */
import { type Backend, keep, type Tensor } from "../tensor/mod.ts";
import { groupOf, type LinearGroup, type LinearHook } from "../nn/decoder.ts";
import { MODALITIES, type Modality, MODALITY_ID } from "../model/modality.ts";

/** Key of a max-abs statistic: all tokens or one modality. */
export type StatKey = "all" | Modality;

/** Thrown when activations contain NaN or infinity. */
export class NonFiniteError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "NonFiniteError";
  }
}

interface Pending {
  group: LinearGroup;
  key: StatKey | "gram";
  modality?: Modality;
  tensor: Tensor;
  tokens?: number;
}

/** Accumulated statistics of one layer. */
export class LayerStats {
  /** Per group and key: per-channel max |x| (zeros where no token was seen). */
  readonly maxAbs: Map<LinearGroup, Map<StatKey, Float32Array>> = new Map();
  /** Per smoothed group and non-text modality: Σ xᵀx over that modality's tokens [d_in·d_in] (float64). */
  readonly gram: Map<LinearGroup, Map<Modality, Float64Array>> = new Map();
  /** Tokens of each modality seen. */
  readonly tokens: Record<Modality, number> = { text: 0, vision: 0, audio: 0 };
  #pending: Pending[] = [];

  /**
   * @param layer layer index (for messages)
   * @param gramModalities modalities whose second moments are collected (CMC: the non-text ones present)
   */
  constructor(readonly layer: number, readonly gramModalities: readonly Modality[] = []) {}

  /**
   * Wraps a linear hook so that the first linear of each group records statistics of its input.
   * `rows` holds the token rows of each modality present in the sample (i32 index tensors), `ids` the
   * per-token modality ids (i32 [T]).
   */
  hook(
    be: Backend,
    ids: Tensor,
    rows: Partial<Record<Modality, Tensor>>,
    inner: LinearHook,
  ): LinearHook {
    const seen = new Set<LinearGroup>();
    return (name, x, lin) => {
      const g = groupOf(name);
      if (!seen.has(g)) {
        seen.add(g);
        // Statistics outlive the layer's scope: keep() hands them to the caller.
        this.#pending.push({ group: g, key: "all", tensor: keep(be.channelMaxAbs(x)) });
        for (const m of MODALITIES) {
          const r = rows[m];
          if (!r || r.size === 0) continue;
          this.#pending.push({ group: g, key: m, tensor: keep(be.channelMaxAbs(x, ids, MODALITY_ID[m])) });
          if (g !== "down" && this.gramModalities.includes(m)) {
            const xm = be.gatherRows(x, r);
            this.#pending.push({
              group: g,
              key: "gram",
              modality: m,
              tensor: keep(be.matmul(xm, xm, { transA: true })),
            });
            xm.dispose();
          }
        }
      }
      return inner(name, x, lin);
    };
  }

  /** Records token counts of a sample (call once per sample). */
  countTokens(modality: ArrayLike<number>): void {
    for (let i = 0; i < modality.length; i++) this.tokens[MODALITIES[modality[i]]]++;
  }

  /** Reads back and merges the statistics recorded since the last call; checks they are finite. */
  async collect(): Promise<void> {
    const pending = this.#pending;
    this.#pending = [];
    for (const p of pending) {
      const v = await p.tensor.read();
      p.tensor.dispose();
      for (let i = 0; i < v.length; i++) {
        if (!Number.isFinite(v[i])) {
          throw new NonFiniteError(
            `layer ${this.layer}: the input of the ${p.group} linears contains NaN or infinite values; ` +
              `check the checkpoint's weights and the calibration inputs`,
          );
        }
      }
      if (p.key === "gram") {
        let byM = this.gram.get(p.group);
        if (!byM) this.gram.set(p.group, byM = new Map());
        const acc = byM.get(p.modality!);
        if (!acc) byM.set(p.modality!, Float64Array.from(v));
        else for (let i = 0; i < v.length; i++) acc[i] += v[i];
        continue;
      }
      let byKey = this.maxAbs.get(p.group);
      if (!byKey) this.maxAbs.set(p.group, byKey = new Map());
      const acc = byKey.get(p.key);
      if (!acc) byKey.set(p.key, Float32Array.from(v));
      else for (let i = 0; i < v.length; i++) if (v[i] > acc[i]) acc[i] = v[i];
    }
  }

  /** The max-abs statistic of a group (zeros of width `width` when no token of that key was seen). */
  stat(group: LinearGroup, key: StatKey, width: number): Float32Array {
    return this.maxAbs.get(group)?.get(key) ?? new Float32Array(width);
  }
}

/** Modality row index tensors of a sample, plus the per-token id tensor. */
export interface SampleRows {
  ids: Tensor;
  rows: Partial<Record<Modality, Tensor>>;
  /** Host copies of the rows. */
  hostRows: Partial<Record<Modality, Int32Array>>;
  dispose(): void;
}

/** Uploads a sample's modality ids and the row indices of each modality present. */
export function sampleRows(be: Backend, modality: Uint8Array): SampleRows {
  const ids = be.tensor(Int32Array.from(modality), [modality.length], "i32");
  const rows: Partial<Record<Modality, Tensor>> = {};
  const hostRows: Partial<Record<Modality, Int32Array>> = {};
  for (const m of MODALITIES) {
    const id = MODALITY_ID[m];
    const r: number[] = [];
    for (let i = 0; i < modality.length; i++) if (modality[i] === id) r.push(i);
    if (r.length) {
      hostRows[m] = Int32Array.from(r);
      rows[m] = be.tensor(hostRows[m]!, [r.length], "i32");
    }
  }
  return {
    ids,
    rows,
    hostRows,
    dispose() {
      ids.dispose();
      for (const t of Object.values(rows)) t?.dispose();
    },
  };
}
