/**
 * M-RoPE position ids of Qwen2.5-VL (transformers `Qwen2_5_VLModel.get_rope_index`, spec model-formats.md §1.2).
 *
 * Every token gets three ids (temporal, height, width), stored as rows of a [3, T] array. Text tokens get the same
 * running index on all three rows. A block of image or video placeholders starts at the next running index `s`:
 * its merged tokens, in (frame, row, column) order over the merged grid (grid_t × grid_h/m × grid_w/m), get
 * `(s + t_k, s + row, s + col)` where `t_k` is the temporal id of frame group k; the token after the block continues
 * at the block's largest id + 1. Images use `t_k = 0`. For videos transformers computes
 * `t_k = long(k · int(second_per_grid_t) · tokens_per_second)`: it casts `second_per_grid_t` (= temporal_patch_size /
 * fps) to the integer dtype of `arange` first, so 1.0 s per grid (fps 2) gives 0, tps, 2·tps, … and a fractional
 * value such as 0.5 s gives 0 for every group. `rope_delta = max id + 1 − T` is what decoding continues from.
 */

/** A patch grid: temporal groups, patch rows, patch columns. */
export type GridThw = readonly [number, number, number];

/** Thrown when placeholder tokens do not form the blocks the media imply. */
export class PositionLayoutError extends Error {
  /** Creates the error with a complete sentence. */
  constructor(message: string) {
    super(message);
    this.name = "PositionLayoutError";
  }
}

/** Position ids [3, T] (row-major: all temporal ids, then height, then width) and the decoding offset. */
export interface RopePositions {
  /** Row-major [3, T]. */
  positions: Int32Array;
  /** Largest id + 1 − T. */
  ropeDelta: number;
}

/** One image or video of a prompt, in the order its placeholder block appears. */
export interface VisionBlockSpec {
  /** "image" or "video" (which placeholder id the block consists of). */
  kind: "image" | "video";
  /** Patch grid of the tower input (before merging). */
  grid: GridThw;
  /** Temporal id of each of the grid_t frame groups (relative to the block start). */
  temporalIds: readonly number[];
}

/** Token ids the position rules look at. */
export interface MropeTokenIds {
  imageTokenId: number;
  videoTokenId: number;
}

/** Positions 0..T−1 on all three rows (text-only prompts). */
export function textPositions(t: number): Int32Array {
  const out = new Int32Array(3 * t);
  for (let r = 0; r < 3; r++) for (let i = 0; i < t; i++) out[r * t + i] = i;
  return out;
}

/** Number of merged tokens of a grid: t · h · w / m². */
export function mergedTokenCount(grid: GridThw, mergeSize: number): number {
  return (grid[0] * grid[1] * grid[2]) / (mergeSize * mergeSize);
}

/**
 * Temporal ids of a Qwen2.5-VL block: 0 for every group of an image; for a video
 * `trunc(k · trunc(secondsPerGrid) · tokensPerSecond)` (see the module comment for the integer cast).
 */
export function qwen2_5VlTemporalIds(
  kind: "image" | "video",
  gridT: number,
  secondsPerGrid: number,
  tokensPerSecond: number,
): number[] {
  const spg = kind === "image" ? 0 : Math.trunc(secondsPerGrid);
  return Array.from({ length: gridT }, (_, k) => Math.trunc(Math.fround(k * spg * tokensPerSecond)));
}

/**
 * Writes the ids of one vision block into `pos` ([3, T] row-major) at token offsets `at..at+n−1`, starting at id
 * `start`; returns the largest id written. Token j of the block is frame group ⌊j / (h'w')⌋, row, column of the
 * merged grid h' × w'.
 */
export function writeVisionBlockPositions(
  pos: Int32Array,
  total: number,
  at: number,
  start: number,
  grid: GridThw,
  temporalIds: readonly number[],
  mergeSize: number,
): number {
  const hm = grid[1] / mergeSize, wm = grid[2] / mergeSize;
  let max = -Infinity;
  let j = at;
  for (let k = 0; k < grid[0]; k++) {
    for (let r = 0; r < hm; r++) {
      for (let c = 0; c < wm; c++, j++) {
        const t = start + temporalIds[k], h = start + r, w = start + c;
        pos[j] = t;
        pos[total + j] = h;
        pos[2 * total + j] = w;
        max = Math.max(max, t, h, w);
      }
    }
  }
  return max;
}

/** Length of the run of `id` starting at `i`. */
export function runLength(ids: ArrayLike<number>, i: number, id: number): number {
  let n = 0;
  while (i + n < ids.length && ids[i + n] === id) n++;
  return n;
}

/** Largest id + 1 − T over a [3, T] array. */
export function ropeDeltaOf(pos: Int32Array, t: number): number {
  let max = -1;
  for (let i = 0; i < pos.length; i++) if (pos[i] > max) max = pos[i];
  return t === 0 ? 0 : max + 1 - t;
}

/**
 * M-RoPE ids of an expanded prompt (placeholders already repeated once per merged token). `blocks` lists the images
 * and videos in prompt order; each block's placeholder run must be exactly its merged token count.
 */
export function mropePositionIds(
  ids: ArrayLike<number>,
  blocks: readonly VisionBlockSpec[],
  tokens: MropeTokenIds,
  mergeSize: number,
): RopePositions {
  const t = ids.length;
  const pos = new Int32Array(3 * t);
  let next = 0;
  let b = 0;
  for (let i = 0; i < t;) {
    const id = ids[i];
    const kind = id === tokens.imageTokenId ? "image" : id === tokens.videoTokenId ? "video" : undefined;
    if (!kind) {
      pos[i] = pos[t + i] = pos[2 * t + i] = next++;
      i++;
      continue;
    }
    const block = blocks[b++];
    if (!block) {
      throw new PositionLayoutError(`token ${i} starts a ${kind} placeholder block, but no ${kind} is left for it`);
    }
    if (block.kind !== kind) {
      throw new PositionLayoutError(
        `token ${i} starts a ${kind} placeholder block where the next medium is a ${block.kind}`,
      );
    }
    const n = mergedTokenCount(block.grid, mergeSize);
    const run = runLength(ids, i, id);
    if (run !== n) {
      throw new PositionLayoutError(
        `the ${kind} placeholder block at token ${i} has ${run} tokens, but its grid [${block.grid}] needs ${n}`,
      );
    }
    next = writeVisionBlockPositions(pos, t, i, next, block.grid, block.temporalIds, mergeSize) + 1;
    i += n;
  }
  if (b !== blocks.length) {
    throw new PositionLayoutError(`${blocks.length - b} image/video block(s) have no placeholders in the prompt`);
  }
  return { positions: pos, ropeDelta: ropeDeltaOf(pos, t) };
}
