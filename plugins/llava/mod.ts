/**
 * @module
 * Adapter for LLaVA-1.5 (`LlavaForConditionalGeneration`): the CLIP ViT-L/336 vision tower (hidden state
 * `vision_feature_layer`, CLS dropped by the "default" strategy), the two-layer GELU projector, the HF
 * CLIP image processor, `<image>` expanded to one placeholder per patch feature, and the Llama decoder.
 * Accepts the hub tensor names (`language_model.model.*`, `vision_tower.*`) and the names newer
 * transformers versions write (`model.language_model.*`, `model.vision_tower.*`, `lm_head.*`).
 */
import {
  type Backend,
  Checkpoint,
  type ClipVisionConfig,
  DecoderLM,
  type DecoderLMInit,
  disposeEncoderLayer,
  encoderLayer,
  type EncoderLayerWeights,
  LLAVA_1_5_CHAT_TEMPLATE,
  type LlavaConfig,
  MODALITY_ID,
  type ModelAdapter,
  ModelFormatError,
  type MultimodalModel,
  type OpenOptions,
  parseLlavaConfig,
  type PreparedInput,
  readConfigJson,
  resolveNaming,
  type RgbImage,
  type Sample,
  type Tensor,
  TextTokenizer,
} from "@masquant/core";
import {
  type ClipImageProcessorConfig,
  LLAVA_CLIP_DEFAULTS,
  parseClipImageProcessorConfig,
  preprocessClipImage,
} from "./image_processor.ts";

export * from "./image_processor.ts";

/** Thrown when a prompt's placeholders do not match its images. */
export class PromptMediaError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "PromptMediaError";
  }
}

/** Cuts a CHW image into row-major patches [N, C·p·p] in the (c, kh, kw) order of a conv weight. */
export function imageToPatches(chw: Float32Array, channels: number, height: number, width: number, p: number): {
  data: Float32Array;
  rows: number;
} {
  const gh = Math.floor(height / p);
  const gw = Math.floor(width / p);
  const cols = channels * p * p;
  const data = new Float32Array(gh * gw * cols);
  for (let py = 0; py < gh; py++) {
    for (let px = 0; px < gw; px++) {
      const o = (py * gw + px) * cols;
      for (let c = 0; c < channels; c++) {
        for (let kh = 0; kh < p; kh++) {
          const src = (c * height + py * p + kh) * width + px * p;
          data.set(chw.subarray(src, src + p), o + (c * p + kh) * p);
        }
      }
    }
  }
  return { data, rows: gh * gw };
}

interface ClipTower {
  patch: Tensor; // [hidden, C·p·p]
  cls: Tensor; // [1, hidden]
  pos: Tensor; // [positions, hidden]
  preLn: { w: Tensor; b: Tensor };
  layers: EncoderLayerWeights[];
  proj1: { w: Tensor; b?: Tensor };
  proj2: { w: Tensor; b?: Tensor };
}

/** A LLaVA-1.5 model. */
export class LlavaModel extends DecoderLM {
  readonly llava: LlavaConfig;
  readonly processor: Readonly<ClipImageProcessorConfig>;
  readonly visionPrefix: string;
  readonly projectorPrefix: string;
  #tower: ClipTower | undefined;

  constructor(init: DecoderLMInit, llava: LlavaConfig, processor: Readonly<ClipImageProcessorConfig>, prefixes: {
    vision: string;
    projector: string;
  }) {
    super(init);
    this.llava = llava;
    this.processor = processor;
    this.visionPrefix = prefixes.vision;
    this.projectorPrefix = prefixes.projector;
  }

  /** Placeholder tokens per image (patches of the tower's grid, minus CLS for the "default" strategy). */
  get imageTokens(): number {
    const v = this.llava.vision;
    const n = (v.imageSize / v.patchSize) ** 2;
    return this.llava.visionFeatureSelectStrategy === "default" ? n : n + 1;
  }

  /** Encoder layers needed to produce the selected hidden state(s). */
  #layersNeeded(): number {
    const v = this.llava.vision;
    const sel = Array.isArray(this.llava.visionFeatureLayer)
      ? this.llava.visionFeatureLayer
      : [this.llava.visionFeatureLayer];
    // hidden_states has numLayers + 1 entries (index 0 = embeddings after pre_layrnorm).
    return Math.max(...sel.map((l) => (l < 0 ? v.numLayers + 1 + l : l)));
  }

  async #loadTower(): Promise<ClipTower> {
    if (this.#tower) return this.#tower;
    const v: ClipVisionConfig = this.llava.vision;
    const vp = `${this.visionPrefix}.vision_model`;
    const h = v.hiddenSize;
    const p = v.patchSize;
    const patchW = await this.readTensor(`${vp}.embeddings.patch_embedding.weight`, [h, v.numChannels, p, p]);
    const patch = this.backend.reshape(patchW, [h, v.numChannels * p * p]);
    patchW.dispose();
    const clsV = await this.readTensor(`${vp}.embeddings.class_embedding`, [h]);
    const cls = this.backend.reshape(clsV, [1, h]);
    clsV.dispose();
    const npos = (v.imageSize / p) ** 2 + 1;
    const pos = await this.readTensor(`${vp}.embeddings.position_embedding.weight`, [npos, h]);
    const preLn = {
      w: await this.readTensor(`${vp}.pre_layrnorm.weight`, [h]),
      b: await this.readTensor(`${vp}.pre_layrnorm.bias`, [h]),
    };
    const layers: EncoderLayerWeights[] = [];
    const lin = async (name: string, out: number, inp: number) => ({
      w: await this.readTensor(`${name}.weight`, [out, inp]),
      b: await this.readTensor(`${name}.bias`, [out]),
    });
    for (let i = 0; i < this.#layersNeeded(); i++) {
      const lp = `${vp}.encoder.layers.${i}`;
      layers.push({
        ln1: {
          w: await this.readTensor(`${lp}.layer_norm1.weight`, [h]),
          b: await this.readTensor(`${lp}.layer_norm1.bias`, [h]),
        },
        ln2: {
          w: await this.readTensor(`${lp}.layer_norm2.weight`, [h]),
          b: await this.readTensor(`${lp}.layer_norm2.bias`, [h]),
        },
        q: await lin(`${lp}.self_attn.q_proj`, h, h),
        k: await lin(`${lp}.self_attn.k_proj`, h, h),
        v: await lin(`${lp}.self_attn.v_proj`, h, h),
        out: await lin(`${lp}.self_attn.out_proj`, h, h),
        fc1: await lin(`${lp}.mlp.fc1`, v.intermediateSize, h),
        fc2: await lin(`${lp}.mlp.fc2`, h, v.intermediateSize),
      });
    }
    const sel = Array.isArray(this.llava.visionFeatureLayer) ? this.llava.visionFeatureLayer.length : 1;
    const projIn = h * sel;
    const th = this.shape.hidden;
    const pp = this.projectorPrefix;
    const bias = this.llava.multimodalProjectorBias;
    const proj1 = {
      w: await this.readTensor(`${pp}.linear_1.weight`, [th, projIn]),
      b: bias ? await this.readTensor(`${pp}.linear_1.bias`, [th]) : undefined,
    };
    const proj2 = {
      w: await this.readTensor(`${pp}.linear_2.weight`, [th, th]),
      b: bias ? await this.readTensor(`${pp}.linear_2.bias`, [th]) : undefined,
    };
    this.#tower = { patch, cls, pos, preLn, layers, proj1, proj2 };
    return this.#tower;
  }

  /** Projected image features [imageTokens, text hidden] of one preprocessed image. */
  async imageFeatures(img: RgbImage): Promise<Tensor> {
    const tower = await this.#loadTower();
    const be = this.backend;
    const v = this.llava.vision;
    const px = preprocessClipImage(img, this.processor);
    if (px.height !== v.imageSize || px.width !== v.imageSize) {
      throw new ModelFormatError(
        `${this.dir}: the image processor yields ${px.width}x${px.height} pixels but the tower expects ${v.imageSize}x${v.imageSize}`,
      );
    }
    const patches = imageToPatches(px.data, 3, px.height, px.width, v.patchSize);
    const act = v.hiddenAct as "quick_gelu" | "gelu";
    const sel = Array.isArray(this.llava.visionFeatureLayer)
      ? this.llava.visionFeatureLayer
      : [this.llava.visionFeatureLayer];
    const want = sel.map((l) => (l < 0 ? v.numLayers + 1 + l : l));
    const pt = be.tensor(patches.data, [patches.rows, 3 * v.patchSize * v.patchSize]);
    const emb = be.matmul(pt, tower.patch, { transB: true });
    pt.dispose();
    const withCls = be.concat([tower.cls, emb], 0);
    emb.dispose();
    const withPos = be.binary("add", withCls, tower.pos);
    withCls.dispose();
    let x = be.layerNorm(withPos, tower.preLn.w, tower.preLn.b, v.layerNormEps);
    withPos.dispose();
    const picked: Tensor[] = [];
    if (want.includes(0)) picked.push(x.retain());
    const shape = { heads: v.numHeads, headDim: v.hiddenSize / v.numHeads, eps: v.layerNormEps, act };
    for (let i = 0; i < tower.layers.length; i++) {
      const y = encoderLayer(be, shape, tower.layers[i], x);
      x.dispose();
      x = y;
      if (want.includes(i + 1)) picked.push(x.retain());
    }
    x.dispose();
    const ordered = want.map((w) => picked[[...new Set(want)].sort((a, b) => a - b).indexOf(w)]);
    const feats = ordered.length === 1 ? ordered[0].retain() : be.concat(ordered, 1);
    for (const t of picked) t.dispose();
    const selected = this.llava.visionFeatureSelectStrategy === "default"
      ? be.slice(feats, 0, 1, feats.shape[0])
      : feats.retain();
    feats.dispose();
    const h1 = be.matmul(selected, tower.proj1.w, { transB: true });
    selected.dispose();
    const h1b = tower.proj1.b ? be.binary("add", h1, tower.proj1.b) : h1.retain();
    h1.dispose();
    const g = be.unary(
      this.llava.projectorHiddenAct === "gelu" ? "gelu" : this.llava.projectorHiddenAct as "gelu",
      h1b,
    );
    h1b.dispose();
    const h2 = be.matmul(g, tower.proj2.w, { transB: true });
    g.dispose();
    if (!tower.proj2.b) return h2;
    const out = be.binary("add", h2, tower.proj2.b);
    h2.dispose();
    return out;
  }

  /** Renders and tokenizes a chat sample, expanding each `<image>` to one placeholder per feature. */
  promptIds(sample: Extract<Sample, { kind: "chat" }>): number[] {
    if (!this.tokenizer) throw new Error(`${this.dir}: no tokenizer files; LLaVA samples need tokenizer.json`);
    // The llava-1.5 template iterates over content parts: plain-string turns become one text part.
    const messages = sample.messages.map((m) =>
      typeof m.content === "string" ? { ...m, content: [{ type: "text" as const, text: m.content }] } : m
    );
    const text = this.tokenizer.applyChatTemplate(messages, {
      addGenerationPrompt: sample.addGenerationPrompt ?? true,
    });
    const imageToken = this.tokenizer.idToToken(this.llava.imageTokenIndex) ?? "<image>";
    const parts = text.split(imageToken);
    const images = sample.media.filter((m) => m.kind === "image").length;
    if (parts.length - 1 !== images) {
      throw new PromptMediaError(
        `${sample.source}: the prompt has ${
          parts.length - 1
        } ${imageToken} placeholder(s) but ${images} image(s) were given`,
      );
    }
    const expanded = parts.join(imageToken.repeat(this.imageTokens));
    return this.tokenizer.encode(expanded, { addSpecialTokens: true });
  }

  async prepare(sample: Sample): Promise<PreparedInput> {
    if (sample.kind === "tokens") return await this.prepareTokens(sample.ids);
    for (const m of sample.media) {
      if (m.kind !== "image") throw new PromptMediaError(`${m.source}: LLaVA accepts images only, not ${m.kind}`);
    }
    const ids = this.promptIds(sample);
    const imgRows: number[] = [];
    ids.forEach((id, i) => {
      if (id === this.llava.imageTokenIndex) imgRows.push(i);
    });
    const expected = this.imageTokens * sample.media.length;
    if (imgRows.length !== expected) {
      throw new PromptMediaError(
        `${sample.source}: the tokenized prompt has ${imgRows.length} image tokens, expected ${expected} (${this.imageTokens} per image)`,
      );
    }
    const base = await this.prepareTokens(ids);
    const modality = new Uint8Array(ids.length);
    for (const r of imgRows) modality[r] = MODALITY_ID.vision;
    if (!imgRows.length) return { ...base, modality };
    const feats: Tensor[] = [];
    for (const m of sample.media) feats.push(await this.imageFeatures((m as { image: RgbImage }).image));
    const be = this.backend;
    const all = feats.length === 1 ? feats[0] : be.concat(feats, 0);
    const idx = be.tensor(imgRows, [imgRows.length], "i32");
    const hidden = be.scatterRows(base.hidden, all, idx);
    for (const t of [...feats, idx]) t.dispose();
    if (feats.length > 1) all.dispose();
    base.hidden.dispose();
    return {
      hidden,
      tokenIds: base.tokenIds,
      modality,
      ctx: base.ctx,
      dispose() {
        hidden.dispose();
        base.ctx.rope.cos.dispose();
        base.ctx.rope.sin.dispose();
      },
    };
  }

  override close(): void {
    const t = this.#tower;
    if (t) {
      for (const x of [t.patch, t.cls, t.pos, t.preLn.w, t.preLn.b, t.proj1.w, t.proj1.b, t.proj2.w, t.proj2.b]) {
        x?.dispose();
      }
      t.layers.forEach(disposeEncoderLayer);
      this.#tower = undefined;
    }
    super.close();
  }
}

/** The LLaVA-1.5 adapter. */
export const llavaAdapter: ModelAdapter = {
  id: "llava",
  matches(config) {
    const arch = config.architectures;
    return config.model_type === "llava" ||
      (Array.isArray(arch) && arch.includes("LlavaForConditionalGeneration"));
  },
  async open(dir: string, backend: Backend, options: OpenOptions = {}): Promise<MultimodalModel> {
    const config = await readConfigJson(dir);
    const cfg = parseLlavaConfig(config, `${dir}/config.json`);
    const checkpoint = await Checkpoint.open(dir);
    const hub = checkpoint.has("language_model.model.embed_tokens.weight");
    const naming = resolveNaming(
      checkpoint,
      [
        {
          layers: "language_model.model.layers",
          embed: "language_model.model.embed_tokens.weight",
          norm: "language_model.model.norm.weight",
          lmHead: "language_model.lm_head.weight",
        },
        {
          layers: "model.language_model.layers",
          embed: "model.language_model.embed_tokens.weight",
          norm: "model.language_model.norm.weight",
          lmHead: "lm_head.weight",
        },
      ],
      dir,
      cfg.tieWordEmbeddings,
    );
    let tokenizer: TextTokenizer | undefined;
    let processor: Readonly<ClipImageProcessorConfig> = LLAVA_CLIP_DEFAULTS;
    if (options.tokenizer !== false) {
      tokenizer = await TextTokenizer.fromDir(dir, { fallbackChatTemplate: LLAVA_1_5_CHAT_TEMPLATE });
      try {
        const pre = JSON.parse(await Deno.readTextFile(`${dir}/preprocessor_config.json`));
        processor = parseClipImageProcessorConfig(pre, `${dir}/preprocessor_config.json`);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    return new LlavaModel(
      {
        dir,
        family: "llava",
        config,
        backend,
        checkpoint,
        tokenizer,
        text: cfg.text,
        naming,
        modalities: ["text", "vision"],
      },
      cfg,
      processor,
      hub
        ? { vision: "vision_tower", projector: "multi_modal_projector" }
        : { vision: "model.vision_tower", projector: "model.multi_modal_projector" },
    );
  },
};
