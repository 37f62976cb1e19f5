/**
 * M-RoPE (Qwen2.5-VL) and TMRoPE (Qwen2.5-Omni) position ids against worked examples. Every expected array below
 * was written by hand from the rules of spec model-formats.md §1.2 / §1.3 (and transformers' get_rope_index), not
 * produced by the code under test; the comment above each case walks through the derivation.
 */
import { assertEquals, assertThrows } from "@std/assert";
import { mropePositionIds, PositionLayoutError, qwen2_5VlTemporalIds, textPositions } from "@masquant/plugin-qwen-vl";
import {
  chunkRanges,
  interleaveVideoAudio,
  type OmniBlockSpec,
  omniTemporalIds,
  type TmropeConfig,
  tmropePositionIds,
} from "@masquant/plugin-qwen-omni";

// Qwen2.5-VL token ids.
const VS = 151652, VE = 151653, IMG = 151655, VID = 151656;
const VL = { imageTokenId: IMG, videoTokenId: VID };
// Qwen2.5-Omni token ids (same ids, Omni names).
const AUD = 151646, AB = 151647, AE = 151648, VB = 151652, VEO = 151653, OIMG = 151655, OVID = 151656;
const OMNI: TmropeConfig = {
  imageTokenId: OIMG,
  videoTokenId: OVID,
  audioTokenId: AUD,
  visionStartTokenId: VB,
  visionEndTokenId: VEO,
  audioStartTokenId: AB,
  audioEndTokenId: AE,
  spatialMergeSize: 2,
  positionIdPerSeconds: 25,
  secondsPerChunk: 2,
};

const rep = (id: number, n: number) => new Array<number>(n).fill(id);
const range = (a: number, n: number) => Array.from({ length: n }, (_, i) => a + i);

/** Splits a [3, T] array into its three rows. */
function rows(p: Int32Array): [number[], number[], number[]] {
  const t = p.length / 3;
  return [Array.from(p.slice(0, t)), Array.from(p.slice(t, 2 * t)), Array.from(p.slice(2 * t))];
}

Deno.test("text only: t = h = w = 0..T-1 and no rope delta (VL and Omni)", () => {
  // Five text tokens, no media: every row is the running index 0..4.
  const ids = [100, 101, 102, 103, 104];
  const want = [0, 1, 2, 3, 4];
  const vl = mropePositionIds(ids, [], VL, 2);
  assertEquals(rows(vl.positions), [want, want, want]);
  assertEquals(vl.ropeDelta, 0);
  const omni = tmropePositionIds(ids, [], OMNI);
  assertEquals(rows(omni.positions), [want, want, want]);
  assertEquals(Array.from(textPositions(5)), [...want, ...want, ...want]);
});

Deno.test("Qwen2.5-VL, one image: the block starts after the text and the text resumes at max + 1", () => {
  // [text, text, <|vision_start|>, 6 x <|image_pad|>, <|vision_end|>, text], image grid [1, 4, 6] -> merged 2 x 3.
  // Text 0, 1, vision_start 2; the block starts at s = 3: temporal id 0 -> t = 3 for all six tokens; tokens in
  // (row, col) order (0,0) (0,1) (0,2) (1,0) (1,1) (1,2) -> h = 3,3,3,4,4,4 and w = 3,4,5,3,4,5. Largest id 5,
  // so vision_end = 6 and the last text token = 7. rope delta = 7 + 1 - 11 = -3.
  const ids = [100, 101, VS, ...rep(IMG, 6), VE, 102];
  const got = mropePositionIds(ids, [{ kind: "image", grid: [1, 4, 6], temporalIds: [0] }], VL, 2);
  assertEquals(rows(got.positions), [
    [0, 1, 2, 3, 3, 3, 3, 3, 3, 6, 7],
    [0, 1, 2, 3, 3, 3, 4, 4, 4, 6, 7],
    [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7],
  ]);
  assertEquals(got.ropeDelta, -3);
});

Deno.test("Qwen2.5-VL, video: temporal ids k * int(second_per_grid) * tokens_per_second", () => {
  // fps 2, temporal patch 2 -> second_per_grid 1 s; tokens_per_second 2 -> temporal ids 0, 2 (and 0, 2, 4 for three
  // groups). transformers casts second_per_grid to an integer first: 0.5 s (fps 4) gives 0 for every group, 2 s
  // (fps 1) gives 0, 4, 8.
  assertEquals(qwen2_5VlTemporalIds("video", 3, 1.0, 2), [0, 2, 4]);
  assertEquals(qwen2_5VlTemporalIds("video", 3, 0.5, 2), [0, 0, 0]);
  assertEquals(qwen2_5VlTemporalIds("video", 3, 2.0, 2), [0, 4, 8]);
  assertEquals(qwen2_5VlTemporalIds("image", 1, 0, 2), [0]);
  // [text, vision_start, 8 x <|video_pad|>, vision_end], grid [2, 4, 4] -> 2 groups of merged 2 x 2.
  // text 0, vision_start 1, block at s = 2: group 0 -> t = 2, (r, c) = (0,0) (0,1) (1,0) (1,1) -> h 2,2,3,3,
  // w 2,3,2,3; group 1 -> t = 2 + 2 = 4, same h and w. Largest id 4 -> vision_end 5.
  const ids = [100, VS, ...rep(VID, 8), VE];
  const got = mropePositionIds(ids, [{ kind: "video", grid: [2, 4, 4], temporalIds: [0, 2] }], VL, 2);
  assertEquals(rows(got.positions), [
    [0, 1, 2, 2, 2, 2, 4, 4, 4, 4, 5],
    [0, 1, 2, 2, 3, 3, 2, 2, 3, 3, 5],
    [0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 5],
  ]);
  assertEquals(got.ropeDelta, 6 - 11);
});

Deno.test("Qwen2.5-Omni, one image plus audio: bos/eos take their own ids, audio counts on like text", () => {
  // [text, <|vision_bos|>, 6 x <|IMAGE|> (grid [1, 4, 6]), <|vision_eos|>, <|audio_bos|>, 4 x <|AUDIO|>,
  //  <|audio_eos|>, text]. text 0, vision_bos 1; image block at s = 2 with temporal id 25 * 0 = 0: t = 2 for all,
  // h = 2,2,2,3,3,3, w = 2,3,4,2,3,4; largest 4 -> vision_eos 5, audio_bos 6, audio 7..10, audio_eos 11, text 12.
  // rope delta = 12 + 1 - 16 = -3.
  const ids = [100, VB, ...rep(OIMG, 6), VEO, AB, ...rep(AUD, 4), AE, 101];
  const blocks: OmniBlockSpec[] = [{ kind: "image", grid: [1, 4, 6] }, { kind: "audio", tokens: 4 }];
  const got = tmropePositionIds(ids, blocks, OMNI);
  assertEquals(rows(got.positions), [
    [0, 1, 2, 2, 2, 2, 2, 2, 5, 6, 7, 8, 9, 10, 11, 12],
    [0, 1, 2, 2, 2, 3, 3, 3, 5, 6, 7, 8, 9, 10, 11, 12],
    [0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
  ]);
  assertEquals(got.ropeDelta, -3);
  // Audio alone (no image/video grid) is the 1-D fallback 0..T-1.
  const audioOnly = tmropePositionIds([100, AB, ...rep(AUD, 3), AE], [{ kind: "audio", tokens: 3 }], OMNI);
  assertEquals(rows(audioOnly.positions)[0], range(0, 6));
});

Deno.test("chunking follows get_chunked_index: one boundary per id", () => {
  // Ids below 50 form chunk 0; the first id >= 50 opens chunk 1, the first later id >= 100 chunk 2, ...
  assertEquals(chunkRanges([0, 0, 25, 25, 50, 50], 50), [[0, 4], [4, 6]]);
  assertEquals(chunkRanges(range(0, 60), 50), [[0, 50], [50, 60]]);
  // A jump over two boundaries (0 -> 150) opens chunk 1 at the jump and chunk 2 at the next id.
  assertEquals(chunkRanges([0, 0, 150, 150], 50), [[0, 2], [2, 3], [3, 4]]);
  assertEquals(chunkRanges([], 50), [[0, 0]]);
  // Omni temporal ids: 25 per second; images 25 * k.
  assertEquals(omniTemporalIds("video", 3, 1, 25), [0, 25, 50]);
  assertEquals(omniTemporalIds("video", 3, 2 / 3, 25), [0, 16, 33]);
  assertEquals(omniTemporalIds("image", 1, 0, 25), [0]);
});

Deno.test("Qwen2.5-Omni, video with audio (use_audio_in_video): 2-second interleaving", () => {
  // Video grid [3, 2, 4] -> 3 groups of merged 1 x 2 = 6 tokens, fps 2 -> 1 s per group -> temporal ids 0, 25, 50.
  // Video token t-values 0,0,25,25,50,50 -> chunks [0,4) and [4,6); 60 audio tokens 0..59 -> [0,50) and [50,60).
  // Layout: <|vision_bos|><|audio_bos|> V x 4, A x 50, V x 2, A x 10 <|audio_eos|><|vision_eos|>.
  // Positions: text 0, 1; both bos tokens 2; s = 3. Video chunk 0: t = 3,3,28,28, h = 3, w = 3,4,3,4.
  // Audio chunk 0: 3..52. Video chunk 1: t = 53, h = 3, w = 3,4. Audio chunk 1: 53..62. The last chunk's largest
  // id is 62, so both eos tokens get 63 and the final text 64. 73 tokens, rope delta = 65 - 73 = -8.
  const runs = interleaveVideoAudio([3, 2, 4], [0, 25, 50], 60, OMNI);
  assertEquals(runs.map((r) => [r.kind, r.from, r.count]), [
    ["video", 0, 4],
    ["audio", 0, 50],
    ["video", 4, 2],
    ["audio", 50, 10],
  ]);
  const ids = [100, 101, VB, AB, ...rep(OVID, 4), ...rep(AUD, 50), ...rep(OVID, 2), ...rep(AUD, 10), AE, VEO, 102];
  const got = tmropePositionIds(ids, [{ kind: "video", grid: [3, 2, 4], secondsPerGrid: 1, audioTokens: 60 }], OMNI);
  const head = [0, 1, 2, 2];
  const tail = [63, 63, 64];
  assertEquals(rows(got.positions), [
    [...head, 3, 3, 28, 28, ...range(3, 50), 53, 53, ...range(53, 10), ...tail],
    [...head, 3, 3, 3, 3, ...range(3, 50), 3, 3, ...range(53, 10), ...tail],
    [...head, 3, 4, 3, 4, ...range(3, 50), 3, 4, ...range(53, 10), ...tail],
  ]);
  assertEquals(got.ropeDelta, -8);
});

Deno.test("Qwen2.5-Omni, video with audio: the closing ids follow the last chunk, not the block maximum", () => {
  // Video grid [2, 2, 4] at 6 s per group (fps 1/3): temporal ids 0, 150; t-values 0,0,150,150 -> chunks [0,2),
  // [2,3), [3,4) (one boundary per id). 110 audio tokens -> [0,50), [50,100), [100,110). Layout: V2 A50 V1 A50 V1 A10.
  // Both bos 0, s = 1: V: t 1,1 h 1,1 w 1,2; A: 1..50; V: t 151, h 1, w 1; A: 51..100; V: t 151, h 1, w 2;
  // A: 101..110. The last chunk (audio) ends at 110, so both eos get 111 and the text 112, although the block
  // reached 151. 119 tokens, rope delta = 152 - 119 = 33.
  const ids = [VB, AB, ...rep(OVID, 2), ...rep(AUD, 50), OVID, ...rep(AUD, 50), OVID, ...rep(AUD, 10), AE, VEO, 100];
  const got = tmropePositionIds(ids, [{ kind: "video", grid: [2, 2, 4], secondsPerGrid: 6, audioTokens: 110 }], OMNI);
  const [t, h, w] = rows(got.positions);
  assertEquals(t, [0, 0, 1, 1, ...range(1, 50), 151, ...range(51, 50), 151, ...range(101, 10), 111, 111, 112]);
  assertEquals(h, [0, 0, 1, 1, ...range(1, 50), 1, ...range(51, 50), 1, ...range(101, 10), 111, 111, 112]);
  assertEquals(w, [0, 0, 1, 2, ...range(1, 50), 1, ...range(51, 50), 2, ...range(101, 10), 111, 111, 112]);
  assertEquals(got.ropeDelta, 33);
});

Deno.test("placeholder runs that do not match the media are refused", () => {
  const img = { kind: "image" as const, grid: [1, 4, 6] as const, temporalIds: [0] };
  // Five placeholders for a six-token image.
  assertThrows(() => mropePositionIds([VS, ...rep(IMG, 5), VE], [img], VL, 2), PositionLayoutError, "needs 6");
  // A placeholder block with no medium left, and a medium without placeholders.
  assertThrows(() => mropePositionIds([VS, ...rep(IMG, 6), VE], [], VL, 2), PositionLayoutError, "no image");
  assertThrows(() => mropePositionIds([100], [img], VL, 2), PositionLayoutError, "no placeholders");
  assertThrows(
    () => tmropePositionIds([AB, ...rep(AUD, 3), AE], [{ kind: "audio", tokens: 4 }], OMNI),
    PositionLayoutError,
    "expected 4",
  );
});
