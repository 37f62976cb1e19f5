/**
 * @module
 * Adapter for the thinker of Qwen2.5-Omni (`Qwen2_5OmniModel` / `Qwen2_5OmniThinkerForConditionalGeneration`, spec
 * model-formats.md §1.3): the Qwen2.5-VL vision tower with separate q/k/v, the Whisper-style audio tower on the
 * 128-bin log-mel features, `<|IMAGE|>`, `<|VIDEO|>` and `<|AUDIO|>` expanded as `Qwen2_5OmniProcessor` does (videos
 * with their soundtrack interleaved in 2-second chunks), TMRoPE positions, and the Qwen2 decoder. Weights are read
 * under `thinker.` (full checkpoints) or without a prefix (thinker-only checkpoints); talker and token2wav tensors
 * are ignored. Image and video placeholders are vision tokens, audio placeholders audio tokens, the rest text.
 *
 * A video whose soundtrack should be interleaved with it (transformers' `use_audio_in_video`) carries the track as
 * `audio16k` on its media item (see {@link videoWithAudio}); in one sample either every video has a soundtrack or
 * none has, because the position rules are switched per prompt.
 */
import {
  type Backend,
  Checkpoint,
  type DecoderLMInit,
  MODALITY_ID,
  type ModelAdapter,
  ModelFormatError,
  type MultimodalModel,
  omniAudioTokenCount,
  type OpenOptions,
  parseQwen2_5OmniConfig,
  QWEN2_5_OMNI_CHAT_TEMPLATE,
  type Qwen2_5OmniThinkerConfig,
  readConfigJson,
  resolveNaming,
  type RgbImage,
  type Sample,
  type SampleMedia,
  type Tensor,
  TextTokenizer,
  whisperLogMel,
} from "@masquant/core";
import {
  chatPromptIds,
  expandPlaceholders,
  findPlaceholders,
  matchPlaceholders,
  mergedTokenCount,
  QwenMediaError,
  qwenPrepared,
  type QwenPreparedInput,
  QwenVisionLM,
  type QwenVisionProcessorConfig,
  readVisionProcessors,
  repeatId,
  scatterFeatures,
  textPositions,
  type VisionInput,
  visionInputOf,
  type VisionMedium,
} from "@masquant/plugin-qwen-vl";
import { disposeOmniAudioTower, loadOmniAudioTower, omniAudioForward, type OmniAudioWeights } from "./audio.ts";
import {
  interleaveVideoAudio,
  type OmniBlockSpec,
  omniTemporalIds,
  type TmropeConfig,
  tmropePositionIds,
} from "./positions.ts";

export * from "./audio.ts";
export * from "./positions.ts";

/** Smallest video frame area of `Qwen2_5OmniProcessor` (its default videos_kwargs size.shortest_edge: 128·28·28). */
export const OMNI_VIDEO_MIN_PIXELS = 128 * 28 * 28;
/** Largest video frame area of `Qwen2_5OmniProcessor` (size.longest_edge: 768·28·28). */
export const OMNI_VIDEO_MAX_PIXELS = 768 * 28 * 28;

/** A video medium, optionally with its 16 kHz soundtrack for `use_audio_in_video`. */
export type OmniVideoMedium = Extract<SampleMedia, { kind: "video" }> & { audio16k?: Float32Array };

/** A video media item whose soundtrack is interleaved with it (`use_audio_in_video`). */
export function videoWithAudio(
  frames: RgbImage[],
  fps: number,
  audio16k: Float32Array,
  source: string,
): OmniVideoMedium {
  return { kind: "video", frames, fps, source, audio16k };
}

/** An audio clip's log-mel features, checked: throws a {@link QwenMediaError} naming `source` for bad samples. */
function checkedAudio(samples: Float32Array, source: string): Float32Array {
  if (!(samples instanceof Float32Array)) {
    throw new QwenMediaError(`${source}: the audio is not decoded 16 kHz samples; load it with loadAudio16k()`);
  }
  for (let i = 0; i < samples.length; i++) {
    if (!Number.isFinite(samples[i])) {
      throw new QwenMediaError(`${source}: sample ${i} of the audio is not a finite number; the clip is not audio`);
    }
  }
  return samples;
}

/** Checks the Whisper feature-extractor fields of an Omni preprocessor_config.json against what the tower needs. */
export function checkOmniFeatureExtractor(json: unknown, source: string, numMelBins: number): void {
  if (typeof json !== "object" || json === null) return;
  const o = json as Record<string, unknown>;
  const want: [string, number][] = [["feature_size", numMelBins], ["sampling_rate", 16000], ["hop_length", 160], [
    "n_fft",
    400,
  ]];
  for (const [field, value] of want) {
    if (o[field] !== undefined && o[field] !== value) {
      throw new ModelFormatError(
        `${source}: field "${field}" is ${JSON.stringify(o[field])}, but the Whisper front end here uses ${value}`,
      );
    }
  }
}

/** A medium of an Omni prompt after preprocessing. */
type PreparedMedium =
  | { kind: "vision"; input: VisionInput; audio?: { mel: ReturnType<typeof whisperLogMel>; tokens: number } }
  | { kind: "audio"; mel: ReturnType<typeof whisperLogMel>; tokens: number; source: string };

/** A Qwen2.5-Omni thinker. */
export class Qwen2_5OmniModel extends QwenVisionLM {
  /** The parsed thinker config. */
  readonly omni: Qwen2_5OmniThinkerConfig;
  /** "thinker." or "" (thinker-only checkpoints). */
  readonly prefix: string;
  #audio: OmniAudioWeights | undefined;

  /**
   * Creates the model (use {@link qwen2_5OmniAdapter}.open). The video settings are the image settings with
   * the Omni processor's video pixel bounds.
   */
  constructor(
    init: DecoderLMInit,
    omni: Qwen2_5OmniThinkerConfig,
    processors: { image: QwenVisionProcessorConfig; video: QwenVisionProcessorConfig },
    prefix: string,
  ) {
    super(init, omni.vision, processors, `${prefix}visual`);
    this.omni = omni;
    this.prefix = prefix;
  }

  /** The token ids and settings of the TMRoPE rules. */
  get tmropeConfig(): TmropeConfig {
    const o = this.omni;
    return {
      imageTokenId: o.imageTokenIndex,
      videoTokenId: o.videoTokenIndex,
      audioTokenId: o.audioTokenIndex,
      visionStartTokenId: o.visionStartTokenId,
      visionEndTokenId: o.visionEndTokenId,
      audioStartTokenId: o.audioStartTokenId,
      audioEndTokenId: o.audioEndTokenId,
      spatialMergeSize: o.vision.spatialMergeSize,
      positionIdPerSeconds: o.positionIdPerSeconds,
      secondsPerChunk: o.secondsPerChunk,
    };
  }

  /** Loads (once) the audio tower. */
  async audioTowerWeights(): Promise<OmniAudioWeights> {
    this.#audio ??= await loadOmniAudioTower(
      this.backend,
      (n, s) => this.readTensor(n, s),
      `${this.prefix}audio_tower`,
      this.omni.audio,
    );
    return this.#audio;
  }

  /** Log-mel features of a 16 kHz clip (the clip is checked; errors name `source`). */
  audioMel(samples16k: Float32Array, source: string): ReturnType<typeof whisperLogMel> {
    return whisperLogMel(checkedAudio(samples16k, source), { nMels: this.omni.audio.numMelBins, name: source });
  }

  /** Runs the audio tower on log-mel features: [omniAudioTokenCount(frames), hidden]. */
  async audioTower(mel: ReturnType<typeof whisperLogMel>, source = "audio clip"): Promise<Tensor> {
    return omniAudioForward(this.backend, this.omni.audio, await this.audioTowerWeights(), mel, source);
  }

  /** Audio features of a 16 kHz clip (log-mel, then the tower). */
  async audioFeatures(samples16k: Float32Array, source: string): Promise<Tensor> {
    return await this.audioTower(this.audioMel(samples16k, source), source);
  }

  /** Log-mel features and token count of a clip; a clip too short for one token is refused. */
  #audioInput(samples: Float32Array, source: string) {
    const mel = this.audioMel(samples, source);
    const tokens = omniAudioTokenCount(mel.frames);
    if (tokens < 1) {
      throw new QwenMediaError(
        `${source} lasts ${samples.length} samples (${mel.frames} mel frames), too short for one audio token; ` +
          `give at least 321 samples at 16 kHz`,
      );
    }
    return { mel, tokens };
  }

  async prepare(sample: Sample): Promise<QwenPreparedInput> {
    if (sample.kind === "tokens") {
      const base = await this.prepareTokens(sample.ids);
      return { ...base, positions: textPositions(sample.ids.length), ropeDelta: 0 };
    }
    if (!this.tokenizer) {
      throw new ModelFormatError(`${this.dir}: no tokenizer was loaded; chat samples need tokenizer.json`);
    }
    const o = this.omni;
    const videos = sample.media.filter((m) => m.kind === "video") as OmniVideoMedium[];
    const withTrack = videos.filter((v) => v.audio16k !== undefined).length;
    if (withTrack !== 0 && withTrack !== videos.length) {
      throw new QwenMediaError(
        `${sample.source}: ${withTrack} of ${videos.length} videos carry a soundtrack; interleaving video and ` +
          `audio (use_audio_in_video) applies to every video of a prompt, so give all or none of them audio16k`,
      );
    }
    const ids0 = chatPromptIds(this.tokenizer, sample);
    const found = findPlaceholders(ids0, {
      image: o.imageTokenIndex,
      video: o.videoTokenIndex,
      audio: o.audioTokenIndex,
    });
    matchPlaceholders(found, sample.media, {
      image: this.tokenizer.idToToken(o.imageTokenIndex),
      video: this.tokenizer.idToToken(o.videoTokenIndex),
      audio: this.tokenizer.idToToken(o.audioTokenIndex),
    }, sample.source);

    const media: PreparedMedium[] = sample.media.map((m) => {
      if (m.kind === "audio") return { kind: "audio", source: m.source, ...this.#audioInput(m.samples16k, m.source) };
      const input = visionInputOf(m as VisionMedium, this.imageProcessor, this.videoProcessor);
      const track = (m as OmniVideoMedium).audio16k;
      return { kind: "vision", input, audio: track ? this.#audioInput(track, m.source) : undefined };
    });
    const tm = this.tmropeConfig;
    const merge = o.vision.spatialMergeSize;
    const blocks: OmniBlockSpec[] = media.map((m) => {
      if (m.kind === "audio") return { kind: "audio", tokens: m.tokens };
      const grid = m.input.patches.gridThw;
      if (m.input.kind === "image") return { kind: "image", grid };
      return { kind: "video", grid, secondsPerGrid: m.input.secondsPerGrid, audioTokens: m.audio?.tokens };
    });
    const ids = expandPlaceholders(ids0, found, (i) => {
      const b = blocks[i];
      if (b.kind === "audio") return repeatId(o.audioTokenIndex, b.tokens);
      const n = mergedTokenCount(b.grid, merge);
      if (b.kind === "image") return repeatId(o.imageTokenIndex, n);
      if (b.audioTokens === undefined) return repeatId(o.videoTokenIndex, n);
      const at = found[i].index;
      if (ids0[at - 1] !== o.visionStartTokenId || ids0[at + 1] !== o.visionEndTokenId) {
        throw new QwenMediaError(
          `${sample.source}: a video with a soundtrack must appear as <|vision_bos|><|VIDEO|><|vision_eos|> in the prompt`,
        );
      }
      const tIds = omniTemporalIds("video", b.grid[0], b.secondsPerGrid, o.positionIdPerSeconds);
      const out = [o.audioStartTokenId];
      for (const run of interleaveVideoAudio(b.grid, tIds, b.audioTokens, tm)) {
        for (let q = 0; q < run.count; q++) out.push(run.kind === "video" ? o.videoTokenIndex : o.audioTokenIndex);
      }
      out.push(o.audioEndTokenId);
      return out;
    });
    const pos = tmropePositionIds(ids, blocks, tm);

    const visionFeatures: Tensor[] = [];
    const audioFeatures: Tensor[] = [];
    try {
      for (const m of media) {
        if (m.kind === "audio") {
          audioFeatures.push(await this.audioTower(m.mel, m.source));
          continue;
        }
        visionFeatures.push(await this.visionTower(m.input.patches));
        if (m.audio) audioFeatures.push(await this.audioTower(m.audio.mel, m.input.source));
      }
      const embedded = await this.embed(ids);
      const visionIds = new Set([o.imageTokenIndex, o.videoTokenIndex]);
      const audioIds = new Set([o.audioTokenIndex]);
      const withVision = scatterFeatures(this.backend, embedded, ids, visionIds, visionFeatures, sample.source);
      embedded.dispose();
      const hidden = scatterFeatures(this.backend, withVision, ids, audioIds, audioFeatures, sample.source);
      withVision.dispose();
      const modality = new Uint8Array(ids.length);
      ids.forEach((id, i) => {
        if (visionIds.has(id)) modality[i] = MODALITY_ID.vision;
        else if (audioIds.has(id)) modality[i] = MODALITY_ID.audio;
      });
      return qwenPrepared(hidden, ids, modality, this.positionContext(pos.positions), pos);
    } finally {
      for (const f of [...visionFeatures, ...audioFeatures]) f.dispose();
    }
  }

  override close(): void {
    if (this.#audio) disposeOmniAudioTower(this.#audio);
    this.#audio = undefined;
    super.close();
  }
}

/** Reads preprocessor_config.json (if present) for the feature-extractor check. */
async function readJsonIfPresent(path: string): Promise<unknown> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    if (e instanceof SyntaxError) throw new ModelFormatError(`${path} is not valid JSON (${e.message})`);
    throw e;
  }
}

/** The Qwen2.5-Omni thinker adapter. */
export const qwen2_5OmniAdapter: ModelAdapter = {
  id: "qwen2_5_omni",
  matches(config) {
    const arch = config.architectures;
    const archs = [
      "Qwen2_5OmniModel",
      "Qwen2_5OmniForConditionalGeneration",
      "Qwen2_5OmniThinkerForConditionalGeneration",
    ];
    return config.model_type === "qwen2_5_omni" || config.model_type === "qwen2_5_omni_thinker" ||
      (Array.isArray(arch) && arch.some((a) => archs.includes(a)));
  },
  async open(dir: string, backend: Backend, options: OpenOptions = {}): Promise<MultimodalModel> {
    const config = await readConfigJson(dir);
    const cfg = parseQwen2_5OmniConfig(config, `${dir}/config.json`);
    const checkpoint = await Checkpoint.open(dir);
    try {
      const candidate = (p: string) => ({
        layers: `${p}model.layers`,
        embed: `${p}model.embed_tokens.weight`,
        norm: `${p}model.norm.weight`,
        lmHead: `${p}lm_head.weight`,
      });
      const naming = resolveNaming(checkpoint, [candidate("thinker."), candidate("")], dir, cfg.text.tieWordEmbeddings);
      const prefix = naming.layers.startsWith("thinker.") ? "thinker." : "";
      let tokenizer: TextTokenizer | undefined;
      if (options.tokenizer !== false) {
        tokenizer = await TextTokenizer.fromDir(dir, { fallbackChatTemplate: QWEN2_5_OMNI_CHAT_TEMPLATE });
      }
      const pre = `${dir}/preprocessor_config.json`;
      checkOmniFeatureExtractor(await readJsonIfPresent(pre), pre, cfg.audio.numMelBins);
      const { image, video } = await readVisionProcessors(dir, cfg.vision);
      return new Qwen2_5OmniModel(
        {
          dir,
          family: "qwen2_5_omni",
          config,
          backend,
          checkpoint,
          tokenizer,
          text: cfg.text,
          naming,
          modalities: ["text", "vision", "audio"],
        },
        cfg,
        { image, video: { ...video, minPixels: OMNI_VIDEO_MIN_PIXELS, maxPixels: OMNI_VIDEO_MAX_PIXELS } },
        prefix,
      );
    } catch (e) {
      checkpoint.close();
      throw e;
    }
  },
};
