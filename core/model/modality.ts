/**
 * Token modalities. Every token of a prepared input belongs to exactly one: text (including special,
 * template and system tokens), vision (image and video placeholders) or audio.
 */

/** Modality names. */
export type Modality = "text" | "vision" | "audio";

/** All modalities in id order. */
export const MODALITIES: readonly Modality[] = ["text", "vision", "audio"];

/** Numeric id of each modality (the per-token arrays hold these). */
export const MODALITY_ID: Readonly<Record<Modality, number>> = { text: 0, vision: 1, audio: 2 };

/** Number of tokens of each modality in a per-token id array. */
export function countModalities(ids: ArrayLike<number>): Record<Modality, number> {
  const c = { text: 0, vision: 0, audio: 0 };
  for (let i = 0; i < ids.length; i++) c[MODALITIES[ids[i]]]++;
  return c;
}

/** Row indices of the tokens of one modality. */
export function rowsOf(ids: ArrayLike<number>, m: Modality): Int32Array {
  const id = MODALITY_ID[m];
  let n = 0;
  for (let i = 0; i < ids.length; i++) if (ids[i] === id) n++;
  const out = new Int32Array(n);
  for (let i = 0, j = 0; i < ids.length; i++) if (ids[i] === id) out[j++] = i;
  return out;
}
