/**
 * @module
 * Adapter for Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`, spec model-formats.md §1.2): the windowed vision
 * transformer with 2-D rotary and the 2 × 2 patch merger, the Qwen2-VL image/video processor, `<|image_pad|>` and
 * `<|video_pad|>` expanded to one placeholder per merged token, M-RoPE positions fed to the decoder as three-section
 * rotary tables, and the Qwen2 decoder (q/k/v biases, GQA). Accepts the flat hub config and the nested
 * `text_config` schema, the hub tensor names (`model.*`, `visual.*`, `lm_head.weight`) and the names newer
 * transformers versions write (`model.language_model.*`, `model.visual.*`), and tied embeddings (no lm_head).
 * Image and video placeholders are both vision tokens; everything else is text.
 */
import {
  type Backend,
  Checkpoint,
  DecoderLM,
  type DecoderLMInit,
  type LayerContext,
  MODALITY_ID,
  type ModelAdapter,
  ModelFormatError,
  type MultimodalModel,
  type OpenOptions,
  parseQwen2_5VLConfig,
  type PreparedInput,
  QWEN2_5_VL_CHAT_TEMPLATE,
  type Qwen2_5VLConfig,
  type QwenVisionConfig,
  readConfigJson,
  resolveNaming,
  ropeTablesMulti,
  type Sample,
  type Tensor,
  TextTokenizer,
} from "@masquant/core";
import type { QwenVisionPatches, QwenVisionProcessorConfig } from "./image_processor.ts";
import { readVisionProcessors, type VisionInput, visionInputOf, type VisionMedium } from "./media.ts";
import {
  mergedTokenCount,
  mropePositionIds,
  qwen2_5VlTemporalIds,
  type RopePositions,
  textPositions,
  type VisionBlockSpec,
} from "./positions.ts";
import {
  chatPromptIds,
  expandPlaceholders,
  findPlaceholders,
  matchPlaceholders,
  QwenMediaError,
  repeatId,
} from "./prompt.ts";
import { disposeQwenVisionTower, loadQwenVisionTower, qwenVisionForward, type QwenVisionWeights } from "./vision.ts";

export * from "./image_processor.ts";
export * from "./positions.ts";
export * from "./vision.ts";
export * from "./prompt.ts";
export * from "./media.ts";

/** Layer-0 inputs of a Qwen sample, with the rotary position ids behind `ctx`. */
export interface QwenPreparedInput extends PreparedInput {
  /** Position ids [3, T] row-major (temporal, height, width). */
  positions: Int32Array;
  /** Largest position + 1 − T (where decoding would continue). */
  ropeDelta: number;
}

/** Decoder context of M-RoPE positions [3, T]: three-section rotary tables and the causal mask. */
export function mropeContext(
  be: Backend,
  headDim: number,
  theta: number,
  sections: readonly number[],
  positions: Int32Array,
): LayerContext {
  return { rope: ropeTablesMulti(be, headDim, theta, positions, sections), mask: { causal: true } };
}

/** Checks the decoder config parts the Qwen adapters rely on. */
export function checkQwenDecoder(text: DecoderLMInit["text"], source: string): number[] {
  if (text.ropeType !== "default") {
    throw new ModelFormatError(`${source}: RoPE type "${text.ropeType}" is not supported (M-RoPE "default" only)`);
  }
  if (!text.mropeSection) throw new ModelFormatError(`${source}: the decoder has no mrope_section`);
  return text.mropeSection;
}

/** Wraps already-built layer-0 inputs with position ids and a dispose that frees everything. */
export function qwenPrepared(
  hidden: Tensor,
  ids: readonly number[],
  modality: Uint8Array,
  ctx: LayerContext,
  pos: RopePositions,
): QwenPreparedInput {
  return {
    hidden,
    tokenIds: Int32Array.from(ids),
    modality,
    ctx,
    positions: pos.positions,
    ropeDelta: pos.ropeDelta,
    dispose() {
      hidden.dispose();
      ctx.rope.cos.dispose();
      ctx.rope.sin.dispose();
      ctx.mask.segments?.dispose();
    },
  };
}

/**
 * Replaces the embedding rows of the placeholder tokens (those whose id is in `ids`) by `features`, concatenated
 * in prompt order; the row count must match.
 */
export function scatterFeatures(
  be: Backend,
  embeddings: Tensor,
  tokenIds: readonly number[],
  placeholderIds: ReadonlySet<number>,
  features: readonly Tensor[],
  source: string,
): Tensor {
  const rows: number[] = [];
  tokenIds.forEach((id, i) => {
    if (placeholderIds.has(id)) rows.push(i);
  });
  const featureRows = features.reduce((s, f) => s + f.shape[0], 0);
  if (rows.length !== featureRows) {
    throw new QwenMediaError(
      `${source}: the prompt has ${rows.length} placeholder tokens but the towers produced ${featureRows} feature rows`,
    );
  }
  if (!rows.length) return embeddings.retain();
  const all = features.length === 1 ? features[0].retain() : be.concat(features, 0);
  const idx = be.tensor(rows, [rows.length], "i32");
  const out = be.scatterRows(embeddings, all, idx);
  all.dispose();
  idx.dispose();
  return out;
}

/**
 * What the Qwen2.5-VL and Qwen2.5-Omni thinker models share: the Qwen2 decoder driven by multi-section rotary
 * positions, the Qwen vision tower (loaded once, on first use) and the image/video processor settings.
 */
export abstract class QwenVisionLM extends DecoderLM {
  /** Image processor settings (preprocessor_config.json). */
  readonly imageProcessor: Readonly<QwenVisionProcessorConfig>;
  /** Video processor settings. */
  readonly videoProcessor: Readonly<QwenVisionProcessorConfig>;
  /** Checkpoint prefix of the vision tower ("visual", "model.visual" or "thinker.visual"). */
  readonly visualPrefix: string;
  readonly #vision: QwenVisionConfig;
  readonly #sections: number[];
  #tower: QwenVisionWeights | undefined;

  /** Checks the decoder's rotary sections against the head size (errors name the model's config.json). */
  constructor(
    init: DecoderLMInit,
    vision: QwenVisionConfig,
    processors: { image: QwenVisionProcessorConfig; video: QwenVisionProcessorConfig },
    visualPrefix: string,
  ) {
    super(init);
    this.#vision = vision;
    this.imageProcessor = processors.image;
    this.videoProcessor = processors.video;
    this.visualPrefix = visualPrefix;
    this.#sections = checkQwenDecoder(init.text, `${init.dir}/config.json`);
  }

  /** Rotary context of a text-only sequence (t = h = w = 0..T−1, identical to 1-D RoPE). */
  override textContext(t: number): LayerContext {
    return this.positionContext(textPositions(t));
  }

  /** Decoder context of position ids [3, T]. */
  positionContext(positions: Int32Array): LayerContext {
    return mropeContext(this.backend, this.shape.headDim, this.text.ropeTheta, this.#sections, positions);
  }

  /** Loads (once) and returns the vision tower weights. */
  async visionTowerWeights(): Promise<QwenVisionWeights> {
    this.#tower ??= await loadQwenVisionTower(
      this.backend,
      (n, s) => this.readTensor(n, s),
      (n) => this.checkpoint.has(n),
      this.visualPrefix,
      this.#vision,
    );
    return this.#tower;
  }

  /** Runs the vision tower on preprocessed patches: merged features [tokens, hidden] in processor order. */
  async visionTower(patches: QwenVisionPatches): Promise<Tensor> {
    return qwenVisionForward(this.backend, this.#vision, await this.visionTowerWeights(), patches);
  }

  override close(): void {
    if (this.#tower) disposeQwenVisionTower(this.#tower);
    this.#tower = undefined;
    super.close();
  }
}

/** A Qwen2.5-VL model. */
export class Qwen2_5VLModel extends QwenVisionLM {
  /** The parsed config. */
  readonly qwen: Qwen2_5VLConfig;

  /** Creates the model (use {@link qwen2_5VlAdapter}.open). */
  constructor(
    init: DecoderLMInit,
    qwen: Qwen2_5VLConfig,
    processors: { image: QwenVisionProcessorConfig; video: QwenVisionProcessorConfig },
    visualPrefix: string,
  ) {
    super(init, qwen.vision, processors, visualPrefix);
    this.qwen = qwen;
  }

  /** Preprocesses an image or video of a sample with this model's processor settings. */
  visionInput(m: VisionMedium): VisionInput {
    return visionInputOf(m, this.imageProcessor, this.videoProcessor);
  }

  /** The vision block spec (grid and temporal ids) of a preprocessed medium. */
  visionBlock(v: VisionInput): VisionBlockSpec {
    const grid = v.patches.gridThw;
    return {
      kind: v.kind,
      grid,
      temporalIds: qwen2_5VlTemporalIds(v.kind, grid[0], v.secondsPerGrid, this.qwen.vision.tokensPerSecond),
    };
  }

  async prepare(sample: Sample): Promise<QwenPreparedInput> {
    if (sample.kind === "tokens") {
      const base = await this.prepareTokens(sample.ids);
      return { ...base, positions: textPositions(sample.ids.length), ropeDelta: 0 };
    }
    if (!this.tokenizer) {
      throw new ModelFormatError(`${this.dir}: no tokenizer was loaded; chat samples need tokenizer.json`);
    }
    for (const m of sample.media) {
      if (m.kind === "audio") throw new QwenMediaError(`${m.source}: Qwen2.5-VL takes images and videos, not audio`);
    }
    const q = this.qwen;
    const ids0 = chatPromptIds(this.tokenizer, sample);
    const found = findPlaceholders(ids0, { image: q.imageTokenId, video: q.videoTokenId });
    matchPlaceholders(found, sample.media, {
      image: this.tokenizer.idToToken(q.imageTokenId),
      video: this.tokenizer.idToToken(q.videoTokenId),
    }, sample.source);
    const inputs = (sample.media as VisionMedium[]).map((m) => this.visionInput(m));
    const blocks = inputs.map((v) => this.visionBlock(v));
    const m = q.vision.spatialMergeSize;
    const ids = expandPlaceholders(
      ids0,
      found,
      (i) => repeatId(found[i].kind === "image" ? q.imageTokenId : q.videoTokenId, mergedTokenCount(blocks[i].grid, m)),
    );
    const pos = mropePositionIds(ids, blocks, { imageTokenId: q.imageTokenId, videoTokenId: q.videoTokenId }, m);
    const features: Tensor[] = [];
    try {
      for (const v of inputs) features.push(await this.visionTower(v.patches));
      const embedded = await this.embed(ids);
      const placeholders = new Set([q.imageTokenId, q.videoTokenId]);
      const hidden = scatterFeatures(this.backend, embedded, ids, placeholders, features, sample.source);
      embedded.dispose();
      const modality = new Uint8Array(ids.length);
      ids.forEach((id, i) => {
        if (placeholders.has(id)) modality[i] = MODALITY_ID.vision;
      });
      return qwenPrepared(hidden, ids, modality, this.positionContext(pos.positions), pos);
    } finally {
      for (const f of features) f.dispose();
    }
  }
}

/** The Qwen2.5-VL adapter. */
export const qwen2_5VlAdapter: ModelAdapter = {
  id: "qwen2_5_vl",
  matches(config) {
    const arch = config.architectures;
    return config.model_type === "qwen2_5_vl" ||
      (Array.isArray(arch) && arch.includes("Qwen2_5_VLForConditionalGeneration"));
  },
  async open(dir: string, backend: Backend, options: OpenOptions = {}): Promise<MultimodalModel> {
    const config = await readConfigJson(dir);
    const cfg = parseQwen2_5VLConfig(config, `${dir}/config.json`);
    const checkpoint = await Checkpoint.open(dir);
    try {
      const naming = resolveNaming(
        checkpoint,
        [
          {
            layers: "model.layers",
            embed: "model.embed_tokens.weight",
            norm: "model.norm.weight",
            lmHead: "lm_head.weight",
          },
          {
            layers: "model.language_model.layers",
            embed: "model.language_model.embed_tokens.weight",
            norm: "model.language_model.norm.weight",
            lmHead: "lm_head.weight",
          },
        ],
        dir,
        cfg.text.tieWordEmbeddings,
      );
      const visualPrefix = naming.layers === "model.layers" ? "visual" : "model.visual";
      let tokenizer: TextTokenizer | undefined;
      if (options.tokenizer !== false) {
        tokenizer = await TextTokenizer.fromDir(dir, { fallbackChatTemplate: QWEN2_5_VL_CHAT_TEMPLATE });
      }
      const processors = await readVisionProcessors(dir, cfg.vision);
      return new Qwen2_5VLModel(
        {
          dir,
          family: "qwen2_5_vl",
          config,
          backend,
          checkpoint,
          tokenizer,
          text: cfg.text,
          naming,
          modalities: ["text", "vision"],
        },
        cfg,
        processors,
        visualPrefix,
      );
    } catch (e) {
      checkpoint.close();
      throw e;
    }
  },
};
