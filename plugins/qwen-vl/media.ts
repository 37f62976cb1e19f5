/**
 * Turning a sample's decoded images and videos into vision-tower inputs (patch rows, patch grid and the seconds one
 * temporal patch spans), and reading the processor settings of a checkpoint directory. Errors name the medium's
 * `source` (or the settings file).
 */
import type { QwenVisionConfig, SampleMedia } from "@masquant/core";
import {
  parseQwenVisionProcessorConfig,
  preprocessQwenImage,
  preprocessQwenVideo,
  QWEN_VL_DEFAULTS,
  type QwenVisionPatches,
  type QwenVisionProcessorConfig,
  QwenVisionProcessorError,
} from "./image_processor.ts";
import { checkImage, QwenMediaError } from "./prompt.ts";

/** An image or video medium of a sample. */
export type VisionMedium = Extract<SampleMedia, { kind: "image" | "video" }>;

/** The tower input of one image or video. */
export interface VisionInput {
  kind: "image" | "video";
  patches: QwenVisionPatches;
  /** temporal_patch_size / fps for videos (what transformers calls second_per_grid_t); 0 for images. */
  secondsPerGrid: number;
  /** Where the medium came from. */
  source: string;
}

/** Preprocesses one image or video with the given processor settings; problems are reported with its source. */
export function visionInputOf(
  m: VisionMedium,
  imageProcessor: Readonly<QwenVisionProcessorConfig>,
  videoProcessor: Readonly<QwenVisionProcessorConfig>,
): VisionInput {
  try {
    if (m.kind === "image") {
      checkImage(m.image, m.source);
      return {
        kind: "image",
        patches: preprocessQwenImage(m.image, imageProcessor),
        secondsPerGrid: 0,
        source: m.source,
      };
    }
    if (!m.frames.length) throw new QwenMediaError(`${m.source}: the video has no frames`);
    if (!(Number.isFinite(m.fps) && m.fps > 0)) {
      throw new QwenMediaError(`${m.source}: the video's frame rate must be a positive number, got ${m.fps}`);
    }
    for (const f of m.frames) checkImage(f, m.source);
    return {
      kind: "video",
      patches: preprocessQwenVideo(m.frames, videoProcessor),
      secondsPerGrid: videoProcessor.temporalPatchSize / m.fps,
      source: m.source,
    };
  } catch (e) {
    if (e instanceof QwenVisionProcessorError) throw new QwenMediaError(`${m.source}: ${e.message}`);
    throw e;
  }
}

/** Reads and parses an optional JSON file; undefined when it does not exist. */
async function readOptionalJson(path: string): Promise<unknown | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new QwenVisionProcessorError(`${path} cannot be read: ${(e as Error).message}.`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new QwenVisionProcessorError(`${path} is not valid JSON (${(e as Error).message}).`);
  }
}

/** Checks that a processor's patch settings agree with the tower config. */
export function checkProcessorFitsTower(
  p: Readonly<QwenVisionProcessorConfig>,
  v: QwenVisionConfig,
  source: string,
): void {
  const pairs: [string, number, number][] = [
    ["patch_size", p.patchSize, v.patchSize],
    ["merge_size", p.mergeSize, v.spatialMergeSize],
    ["temporal_patch_size", p.temporalPatchSize, v.temporalPatchSize],
  ];
  for (const [field, got, want] of pairs) {
    if (got !== want) {
      throw new QwenVisionProcessorError(
        `${source}: field "${field}" is ${got} but the vision tower in config.json expects ${want}.`,
      );
    }
  }
}

/**
 * The image settings of `dir/preprocessor_config.json` and the video settings of `dir/video_preprocessor_config.json`
 * (falling back to the image settings). Without preprocessor_config.json the Qwen2.5-VL defaults are used with the
 * tower's patch, merge and temporal sizes. Both are checked against the tower.
 */
export async function readVisionProcessors(
  dir: string,
  vision: QwenVisionConfig,
): Promise<{ image: QwenVisionProcessorConfig; video: QwenVisionProcessorConfig }> {
  const imagePath = `${dir}/preprocessor_config.json`;
  const videoPath = `${dir}/video_preprocessor_config.json`;
  const imageJson = await readOptionalJson(imagePath);
  const image = imageJson === undefined
    ? {
      ...QWEN_VL_DEFAULTS,
      patchSize: vision.patchSize,
      mergeSize: vision.spatialMergeSize,
      temporalPatchSize: vision.temporalPatchSize,
    }
    : parseQwenVisionProcessorConfig(imageJson, imagePath);
  checkProcessorFitsTower(image, vision, imagePath);
  const videoJson = await readOptionalJson(videoPath);
  const video = videoJson === undefined ? { ...image } : parseQwenVisionProcessorConfig(videoJson, videoPath);
  checkProcessorFitsTower(video, vision, videoJson === undefined ? imagePath : videoPath);
  return { image, video };
}
