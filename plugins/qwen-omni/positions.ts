/**
 * TMRoPE position ids of the Qwen2.5-Omni thinker (transformers `get_rope_index` of Qwen2.5-Omni and the placeholder
 * layout of `Qwen2_5OmniProcessor`, spec model-formats.md §1.3). Ids are [3, T] rows (temporal, height, width).
 *
 * - Text, `<|audio_bos|>`/`<|audio_eos|>`/`<|vision_bos|>`/`<|vision_eos|>` and audio placeholders get the running
 *   index on all rows (an audio clip is one id per 40 ms token, 25 per second).
 * - An image block starts at the next running index s: merged token (k, r, c) gets (s + 25·k·1, s + r, s + c); a
 *   video block the same with temporal ids trunc(k · second_per_grid · 25) (second_per_grid = temporal_patch_size /
 *   fps, in float32 as transformers computes it). The next token continues at the block's largest id + 1.
 * - Video with its audio (`use_audio_in_video`): the prompt holds `<|vision_bos|><|audio_bos|>`, then the video and
 *   audio placeholders interleaved in chunks of `position_id_per_seconds · seconds_per_chunk` (50) temporal ids —
 *   video chunk 0, audio chunk 0, video chunk 1, … — then `<|audio_eos|><|vision_eos|>`. Both opening tokens share
 *   one id p; video tokens get (s + t, s + r, s + c) and audio token j gets s + j with s = p + 1; both closing tokens
 *   share the largest id of the last interleaved chunk + 1 (the last chunk, as transformers takes it, which need not
 *   hold the block's largest id).
 * - Chunking follows transformers' `get_chunked_index`: walking the ids in order, a new chunk starts at the first id
 *   ≥ c · 50 for c = 1, 2, … (one boundary per id, so a jump over several boundaries opens one chunk at a time).
 *
 * Without images and videos transformers falls back to 0..T−1 on all rows, which these rules give as well.
 */
import {
  type GridThw,
  mergedTokenCount,
  PositionLayoutError,
  ropeDeltaOf,
  type RopePositions,
  runLength,
  writeVisionBlockPositions,
} from "@masquant/plugin-qwen-vl";

/** Token ids and settings of the TMRoPE rules (from the thinker config). */
export interface TmropeConfig {
  imageTokenId: number;
  videoTokenId: number;
  audioTokenId: number;
  visionStartTokenId: number;
  visionEndTokenId: number;
  audioStartTokenId: number;
  audioEndTokenId: number;
  spatialMergeSize: number;
  /** Temporal ids per second (25). */
  positionIdPerSeconds: number;
  /** Seconds per interleaving chunk (2). */
  secondsPerChunk: number;
}

/** One medium of an Omni prompt, in the order its placeholders appear. */
export type OmniBlockSpec =
  | { kind: "image"; grid: GridThw }
  | {
    kind: "video";
    grid: GridThw;
    /** temporal_patch_size / fps. */
    secondsPerGrid: number;
    /** Audio tokens of the video's soundtrack when it is interleaved with the video (`use_audio_in_video`). */
    audioTokens?: number;
  }
  | { kind: "audio"; tokens: number };

/** Half-open index ranges [start, end) of `values` split as transformers' `get_chunked_index` does. */
export function chunkRanges(values: ArrayLike<number>, perChunk: number): [number, number][] {
  const out: [number, number][] = [];
  let start = 0, chunk = 1;
  for (let i = 0; i < values.length; i++) {
    if (values[i] >= chunk * perChunk) {
      out.push([start, i]);
      start = i;
      chunk++;
    }
  }
  out.push([start, values.length]);
  return out;
}

/** Temporal ids of an Omni image (25·k) or video (trunc(k · float32(second_per_grid) · 25)) block. */
export function omniTemporalIds(
  kind: "image" | "video",
  gridT: number,
  secondsPerGrid: number,
  positionIdPerSeconds: number,
): number[] {
  const f = Math.fround;
  const spg = kind === "image" ? 1 : f(secondsPerGrid);
  return Array.from({ length: gridT }, (_, k) => Math.trunc(f(f(k * spg) * positionIdPerSeconds)));
}

/** One run of an interleaved video-with-audio block: `count` placeholders of `kind`, from item index `from`. */
export interface InterleavedRun {
  kind: "video" | "audio";
  /** First video token (or audio token) of the run within its medium. */
  from: number;
  count: number;
}

/**
 * The placeholder runs of a video with its soundtrack: video chunk 0, audio chunk 0, video chunk 1, … (empty runs
 * dropped). Video token j has temporal id `temporalIds[⌊j / (h'w')⌋]`, audio token j has id j.
 */
export function interleaveVideoAudio(
  grid: GridThw,
  temporalIds: readonly number[],
  audioTokens: number,
  cfg: Pick<TmropeConfig, "spatialMergeSize" | "positionIdPerSeconds" | "secondsPerChunk">,
): InterleavedRun[] {
  const perGroup = (grid[1] / cfg.spatialMergeSize) * (grid[2] / cfg.spatialMergeSize);
  const videoT = new Int32Array(grid[0] * perGroup);
  for (let j = 0; j < videoT.length; j++) videoT[j] = temporalIds[Math.floor(j / perGroup)];
  const audioT = Int32Array.from({ length: audioTokens }, (_, j) => j);
  const perChunk = Math.trunc(cfg.positionIdPerSeconds * cfg.secondsPerChunk);
  const vc = chunkRanges(videoT, perChunk), ac = chunkRanges(audioT, perChunk);
  const runs: InterleavedRun[] = [];
  for (let j = 0; j < Math.max(vc.length, ac.length); j++) {
    if (j < vc.length && vc[j][1] > vc[j][0]) runs.push({ kind: "video", from: vc[j][0], count: vc[j][1] - vc[j][0] });
    if (j < ac.length && ac[j][1] > ac[j][0]) runs.push({ kind: "audio", from: ac[j][0], count: ac[j][1] - ac[j][0] });
  }
  return runs;
}

/** Merged video tokens per frame group of a grid. */
function tokensPerGroup(grid: GridThw, m: number): number {
  return (grid[1] / m) * (grid[2] / m);
}

/**
 * TMRoPE ids of an expanded Omni prompt. `blocks` lists the images, videos (with or without soundtrack) and audio
 * clips in prompt order; every placeholder run must have exactly the length its medium implies.
 */
export function tmropePositionIds(
  ids: ArrayLike<number>,
  blocks: readonly OmniBlockSpec[],
  cfg: TmropeConfig,
): RopePositions {
  const t = ids.length;
  const m = cfg.spatialMergeSize;
  const pos = new Int32Array(3 * t);
  const set = (i: number, a: number, b = a, c = a) => {
    pos[i] = a;
    pos[t + i] = b;
    pos[2 * t + i] = c;
  };
  const expectRun = (i: number, id: number, n: number, what: string) => {
    const run = runLength(ids, i, id);
    if (run !== n) {
      throw new PositionLayoutError(`the ${what} placeholder run at token ${i} has ${run} tokens, expected ${n}`);
    }
  };
  let next = 0, b = 0;
  for (let i = 0; i < t;) {
    const id = ids[i];
    const block = blocks[b];
    const interleaved = block?.kind === "video" && block.audioTokens !== undefined;
    if (interleaved && id === cfg.visionStartTokenId && ids[i + 1] === cfg.audioStartTokenId) {
      // <|vision_bos|><|audio_bos|> share one id; runs follow; <|audio_eos|><|vision_eos|> share one id.
      b++;
      set(i, next);
      set(i + 1, next);
      const s = next + 1;
      const tIds = omniTemporalIds("video", block.grid[0], block.secondsPerGrid, cfg.positionIdPerSeconds);
      const runs = interleaveVideoAudio(block.grid, tIds, block.audioTokens!, cfg);
      const perGroup = tokensPerGroup(block.grid, m);
      const wm = block.grid[2] / m;
      let j = i + 2, lastMax = s - 1;
      for (const run of runs) {
        const tokenId = run.kind === "video" ? cfg.videoTokenId : cfg.audioTokenId;
        // Two runs of one kind can touch when a chunk of the other kind is empty, so only a minimum is checked.
        if (runLength(ids, j, tokenId) < run.count) {
          throw new PositionLayoutError(
            `the interleaved ${run.kind} run at token ${j} should have ${run.count} tokens`,
          );
        }
        lastMax = -Infinity;
        for (let q = 0; q < run.count; q++, j++) {
          const k = run.from + q;
          if (run.kind === "audio") {
            set(j, s + k);
            lastMax = Math.max(lastMax, s + k);
          } else {
            const within = k % perGroup;
            const a = s + tIds[Math.floor(k / perGroup)], r = s + Math.floor(within / wm), c = s + (within % wm);
            set(j, a, r, c);
            lastMax = Math.max(lastMax, a, r, c);
          }
        }
      }
      if (ids[j] !== cfg.audioEndTokenId || ids[j + 1] !== cfg.visionEndTokenId) {
        throw new PositionLayoutError(
          `the video-with-audio block at token ${i} does not end with <|audio_eos|><|vision_eos|> at token ${j}`,
        );
      }
      set(j, lastMax + 1);
      set(j + 1, lastMax + 1);
      next = lastMax + 2;
      i = j + 2;
      continue;
    }
    const kind = id === cfg.imageTokenId
      ? "image"
      : id === cfg.videoTokenId
      ? "video"
      : id === cfg.audioTokenId
      ? "audio"
      : undefined;
    if (!kind) {
      set(i, next++);
      i++;
      continue;
    }
    if (!block || block.kind !== kind || interleaved) {
      throw new PositionLayoutError(
        `token ${i} starts a ${kind} placeholder run where the next medium is ${
          block ? (interleaved ? "a video with audio" : `a ${block.kind}`) : "missing"
        }`,
      );
    }
    b++;
    if (block.kind === "audio") {
      expectRun(i, id, block.tokens, "audio");
      for (let q = 0; q < block.tokens; q++) set(i + q, next++);
      i += block.tokens;
      continue;
    }
    const n = mergedTokenCount(block.grid, m);
    expectRun(i, id, n, block.kind);
    const tIds = block.kind === "image"
      ? omniTemporalIds("image", block.grid[0], 0, cfg.positionIdPerSeconds)
      : omniTemporalIds("video", block.grid[0], block.secondsPerGrid, cfg.positionIdPerSeconds);
    next = writeVisionBlockPositions(pos, t, i, next, block.grid, tIds, m) + 1;
    i += n;
  }
  if (b !== blocks.length) {
    throw new PositionLayoutError(`${blocks.length - b} medium/media have no placeholders in the prompt`);
  }
  return { positions: pos, ropeDelta: ropeDeltaOf(pos, t) };
}
