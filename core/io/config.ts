/**
 * Hugging Face `config.json` loading and normalisation into typed configs per model family.
 *
 * A hub config.json omits every field whose value equals the transformers class default
 * (model-formats.md §0.1), so each parser fills the defaults of the class that transformers would build
 * for that `model_type`. The classes are cited beside each default table; the values were read from
 * transformers' `configuration_*.py` files. Wrong types, impossible values and missing required fields
 * raise a {@link ConfigError} naming the file and the field.
 */

/** A config.json that is missing, unreadable or has a bad field; the message is one sentence. */
export class ConfigError extends Error {
  /** Creates the error; `message` names the file (and field). */
  constructor(message: string, readonly source: string, readonly field?: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConfigError";
  }
}

/** A parsed JSON object. */
export type JsonObject = Record<string, unknown>;

/** True for a plain JSON object. */
function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Reads and parses `config.json` of model directory `dir` (or the file itself when `dir` names a .json
 * file). Throws a ConfigError when it is missing, not JSON, or not a JSON object.
 */
export async function readConfigJson(dir: string): Promise<JsonObject> {
  const path = dir.endsWith(".json") ? dir : dir.endsWith("/") ? `${dir}config.json` : `${dir}/config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new ConfigError(
        `${path} does not exist; a model directory needs its Hugging Face config.json`,
        path,
        undefined,
        {
          cause: err,
        },
      );
    }
    throw new ConfigError(`cannot read ${path}: ${(err as Error).message}`, path, undefined, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${path} is not valid JSON (${(err as Error).message})`, path, undefined, { cause: err });
  }
  if (!isObject(json)) throw new ConfigError(`${path} does not hold a JSON object`, path);
  return json;
}

/** Typed, checked access to the fields of one (possibly nested) config object. */
class Fields {
  constructor(
    /** The object. */
    readonly obj: JsonObject,
    /** Its dotted path inside config.json ("" at the top). */
    readonly prefix: string,
    /** The file name used in messages. */
    readonly source: string,
  ) {}

  /** The dotted name of `key`. */
  name(key: string): string {
    return this.prefix ? `${this.prefix}.${key}` : key;
  }

  /** True when `key` is present and not null. */
  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  /** The raw value of the first present key, or undefined. */
  raw(...keys: string[]): unknown {
    for (const k of keys) if (this.has(k)) return this.obj[k];
    return undefined;
  }

  /** Throws the error for a field of the wrong kind. */
  bad(key: string, what: string): never {
    const name = this.name(key);
    throw new ConfigError(
      `${this.source}: "${name}" must be ${what}, but it is ${JSON.stringify(this.obj[key])}`,
      this.source,
      name,
    );
  }

  /** Throws the error for a missing required field. */
  missing(key: string, why: string): never {
    const name = this.name(key);
    throw new ConfigError(`${this.source}: "${name}" is missing; ${why}`, this.source, name);
  }

  /** The first present key of `keys` (for aliases), or the first key. */
  pick(keys: string | string[]): string {
    const list = typeof keys === "string" ? [keys] : keys;
    return list.find((k) => this.has(k)) ?? list[0];
  }

  /** An integer field (`min` inclusive, default 1); `def` when absent. */
  int(keys: string | string[], def: number, min = 1): number {
    const key = this.pick(keys);
    if (!this.has(key)) return def;
    const v = this.obj[key];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
      this.bad(key, min === 1 ? "a positive integer" : min === 0 ? "a non-negative integer" : `an integer >= ${min}`);
    }
    return v;
  }

  /** An integer field that may be absent (undefined then). */
  optInt(keys: string | string[], min = 0): number | undefined {
    const key = this.pick(keys);
    return this.has(key) ? this.int(key, 0, min) : undefined;
  }

  /** A finite positive number field; `def` when absent. */
  positive(key: string, def: number): number {
    if (!this.has(key)) return def;
    const v = this.obj[key];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) this.bad(key, "a positive number");
    return v;
  }

  /** A string field; `def` when absent. */
  str(key: string, def: string): string {
    if (!this.has(key)) return def;
    const v = this.obj[key];
    if (typeof v !== "string" || v === "") this.bad(key, "a non-empty string");
    return v;
  }

  /** A boolean field; `def` when absent. */
  bool(key: string, def: boolean): boolean {
    if (!this.has(key)) return def;
    const v = this.obj[key];
    if (typeof v !== "boolean") this.bad(key, "true or false");
    return v;
  }

  /** A list of integers (each >= `min`); `def` when absent. */
  intList(key: string, def: readonly number[], min = 0): number[] {
    if (!this.has(key)) return [...def];
    const v = this.obj[key];
    if (!Array.isArray(v) || !v.every((x) => typeof x === "number" && Number.isSafeInteger(x) && x >= min)) {
      this.bad(key, `a list of integers >= ${min}`);
    }
    return [...v] as number[];
  }

  /** A nested object field, or undefined when absent. */
  sub(key: string): Fields | undefined {
    if (!this.has(key)) return undefined;
    const v = this.obj[key];
    if (!isObject(v)) this.bad(key, "an object");
    return new Fields(v, this.name(key), this.source);
  }

  /** Checks `model_type` against the accepted values (absent is allowed when `def` is given). */
  modelType(accepted: readonly string[], def?: string): string {
    if (!this.has("model_type")) {
      if (def !== undefined) return def;
      this.missing("model_type", `expected ${accepted.map((a) => JSON.stringify(a)).join(" or ")}`);
    }
    const v = this.obj.model_type;
    if (typeof v !== "string" || !accepted.includes(v)) {
      const name = this.name("model_type");
      throw new ConfigError(
        `${this.source}: "${name}" is ${JSON.stringify(v)}, but this parser reads ` +
          `${accepted.map((a) => JSON.stringify(a)).join(" or ")} configs`,
        this.source,
        name,
      );
    }
    return v;
  }
}

// ------------------------------------------------------------------------------------------------
// Decoder (language model) configs

/** A normalised decoder-only language model config (Llama / Qwen2 style). */
export interface DecoderConfig {
  /** The `model_type` of the text config. */
  modelType: string;
  /** Width of the residual stream. */
  hiddenSize: number;
  /** Width of the MLP. */
  intermediateSize: number;
  /** Decoder layer count. */
  numLayers: number;
  /** Query heads. */
  numHeads: number;
  /** Key/value heads (GQA when fewer than the query heads). */
  numKvHeads: number;
  /** Width of one head. */
  headDim: number;
  /** Rows of the embedding (and of lm_head). */
  vocabSize: number;
  /** RMSNorm epsilon. */
  rmsNormEps: number;
  /** RoPE base. */
  ropeTheta: number;
  /** RoPE variant ("default" for plain and multimodal RoPE; e.g. "llama3", "linear", "yarn" otherwise). */
  ropeType: string;
  /** The raw RoPE scaling object when the config has one. */
  ropeScaling?: Readonly<JsonObject>;
  /** M-RoPE split of the rotary frequencies over (t, h, w); sums to headDim / 2. */
  mropeSection?: number[];
  /** MLP activation (e.g. "silu"). */
  hiddenAct: string;
  /** True when lm_head shares the embedding matrix. */
  tieWordEmbeddings: boolean;
  /** True when q/k/v projections have biases. */
  qkvBias: boolean;
  /** True when the attention output projection has a bias. */
  oProjBias: boolean;
  /** True when the MLP projections have biases. */
  mlpBias: boolean;
  /** Longest supported sequence. */
  maxPositionEmbeddings: number;
  /** Beginning-of-sequence token id, if set. */
  bosTokenId?: number;
  /** End-of-sequence token ids (empty if unset). */
  eosTokenIds: number[];
  /** Padding token id, if set. */
  padTokenId?: number;
}

/** The defaults of one decoder config class. */
interface DecoderDefaults {
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  /** Undefined: equal to the head count. */
  numKvHeads?: number;
  hiddenAct: string;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
  bosTokenId?: number;
  eosTokenIds: number[];
  mropeSection?: number[];
  /** Biases fixed by the architecture (Qwen2: q/k/v always biased, o and MLP never). */
  fixedBias?: { qkv: boolean; o: boolean; mlp: boolean };
}

/** transformers `LlamaConfig` defaults (configuration_llama.py). head_dim = hidden / heads; kv heads = heads. */
const LLAMA_DEFAULTS: DecoderDefaults = {
  modelType: "llama",
  vocabSize: 32000,
  hiddenSize: 4096,
  intermediateSize: 11008,
  numLayers: 32,
  numHeads: 32,
  hiddenAct: "silu",
  maxPositionEmbeddings: 2048,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  tieWordEmbeddings: false,
  bosTokenId: 1,
  eosTokenIds: [2],
};

/**
 * transformers `Qwen2_5_VLTextConfig` defaults (configuration_qwen2_5_vl.py; also the flat
 * `Qwen2_5_VLConfig` of earlier releases): rope_theta 1e6, rms_norm_eps 1e-5, no bos/eos. Qwen2 attention
 * always has q/k/v biases and no o_proj/MLP bias (modeling_qwen2_5_vl.py).
 */
const QWEN2_5_VL_TEXT_DEFAULTS: DecoderDefaults = {
  modelType: "qwen2_5_vl_text",
  vocabSize: 152064,
  hiddenSize: 8192,
  intermediateSize: 29568,
  numLayers: 80,
  numHeads: 64,
  numKvHeads: 8,
  hiddenAct: "silu",
  maxPositionEmbeddings: 32768,
  rmsNormEps: 1e-5,
  ropeTheta: 1_000_000,
  tieWordEmbeddings: false,
  eosTokenIds: [],
  fixedBias: { qkv: true, o: false, mlp: false },
};

/**
 * transformers `Qwen2_5OmniTextConfig` defaults (configuration_qwen2_5_omni.py): the 7B thinker's sizes,
 * rms_norm_eps 1e-6, rope_theta 1e6, and (when rope_scaling is absent) mrope_section [16, 24, 24].
 * tie_word_embeddings follows the released class (false) and the thinker's own default (false).
 */
const QWEN2_5_OMNI_TEXT_DEFAULTS: DecoderDefaults = {
  modelType: "qwen2_5_omni_text",
  vocabSize: 152064,
  hiddenSize: 3584,
  intermediateSize: 18944,
  numLayers: 28,
  numHeads: 28,
  numKvHeads: 4,
  hiddenAct: "silu",
  maxPositionEmbeddings: 32768,
  rmsNormEps: 1e-6,
  ropeTheta: 1_000_000,
  tieWordEmbeddings: false,
  eosTokenIds: [],
  mropeSection: [16, 24, 24],
  fixedBias: { qkv: true, o: false, mlp: false },
};

/** Token-id list field: an integer, a list of integers, or absent/null. */
function tokenIds(f: Fields, key: string): number[] | undefined {
  if (!f.has(key)) return undefined;
  const v = f.obj[key];
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return [v];
  if (Array.isArray(v) && v.every((x) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0)) {
    return [...v] as number[];
  }
  return f.bad(key, "a token id or a list of token ids");
}

/**
 * Builds a DecoderConfig from the text fields `f`, filling `d`. `outer` holds fields that flat or
 * wrapped schemas keep one level up (token ids, tie_word_embeddings); the text object wins.
 */
function parseDecoder(f: Fields, d: DecoderDefaults, outer?: Fields): DecoderConfig {
  const hiddenSize = f.int("hidden_size", d.hiddenSize);
  const numHeads = f.int("num_attention_heads", d.numHeads);
  const numKvHeads = f.int("num_key_value_heads", d.numKvHeads ?? numHeads);
  if (!f.has("head_dim") && hiddenSize % numHeads !== 0) {
    throw new ConfigError(
      `${f.source}: "${f.name("hidden_size")}" (${hiddenSize}) is not a multiple of ` +
        `"${f.name("num_attention_heads")}" (${numHeads}), so head_dim must be given`,
      f.source,
      f.name("hidden_size"),
    );
  }
  const headDim = f.int("head_dim", Math.floor(hiddenSize / numHeads));
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(
      `${f.source}: "${f.name("num_attention_heads")}" (${numHeads}) is not a multiple of ` +
        `"${f.name("num_key_value_heads")}" (${numKvHeads})`,
      f.source,
      f.name("num_key_value_heads"),
    );
  }

  // RoPE: older configs use rope_theta + rope_scaling, newer ones rope_parameters (with rope_theta inside).
  const ropeKey = f.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  const rope = f.sub(ropeKey);
  let ropeTheta = f.positive("rope_theta", d.ropeTheta);
  if (rope?.has("rope_theta")) ropeTheta = rope.positive("rope_theta", ropeTheta);
  const rawType = rope ? rope.str("rope_type", rope.str("type", "default")) : "default";
  const ropeType = rawType === "mrope" ? "default" : rawType;
  let mropeSection = rope?.has("mrope_section") ? rope.intList("mrope_section", [], 1) : d.mropeSection;
  if (mropeSection) {
    mropeSection = [...mropeSection];
    const sum = mropeSection.reduce((a, b) => a + b, 0);
    if (sum * 2 !== headDim) {
      const name = rope ? rope.name("mrope_section") : f.name(ropeKey);
      throw new ConfigError(
        `${f.source}: "${name}" [${mropeSection.join(",")}] sums to ${sum}, but it must sum to head_dim / 2 = ${
          headDim / 2
        }`,
        f.source,
        name,
      );
    }
  }

  const pickTokens = (key: string): number[] | undefined =>
    tokenIds(f, key) ?? (outer ? tokenIds(outer, key) : undefined);
  const bos = pickTokens("bos_token_id");
  const pad = pickTokens("pad_token_id");
  const tie = f.has("tie_word_embeddings")
    ? f.bool("tie_word_embeddings", d.tieWordEmbeddings)
    : outer?.bool("tie_word_embeddings", d.tieWordEmbeddings) ?? d.tieWordEmbeddings;
  const attentionBias = f.bool("attention_bias", false);
  const mlpBias = f.bool("mlp_bias", false);
  return {
    modelType: f.str("model_type", d.modelType),
    hiddenSize,
    intermediateSize: f.int("intermediate_size", d.intermediateSize),
    numLayers: f.int("num_hidden_layers", d.numLayers),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: f.int("vocab_size", d.vocabSize),
    rmsNormEps: f.positive("rms_norm_eps", d.rmsNormEps),
    ropeTheta,
    ropeType,
    ...(rope ? { ropeScaling: rope.obj } : {}),
    ...(mropeSection ? { mropeSection } : {}),
    hiddenAct: f.str("hidden_act", d.hiddenAct),
    tieWordEmbeddings: tie,
    qkvBias: d.fixedBias?.qkv ?? attentionBias,
    oProjBias: d.fixedBias?.o ?? attentionBias,
    mlpBias: d.fixedBias?.mlp ?? mlpBias,
    maxPositionEmbeddings: f.int("max_position_embeddings", d.maxPositionEmbeddings),
    bosTokenId: bos ? bos[0] : d.bosTokenId,
    eosTokenIds: pickTokens("eos_token_id") ?? [...d.eosTokenIds],
    padTokenId: pad ? pad[0] : undefined,
  };
}

/** A `LlamaForCausalLM` checkpoint's config. */
export interface LlamaConfig {
  /** Always "llama". */
  modelType: "llama";
  /** The `architectures` list (e.g. ["LlamaForCausalLM"]). */
  architectures: string[];
  /** The decoder. */
  text: DecoderConfig;
}

/** The `architectures` list of a config (empty when absent). */
function architectures(f: Fields): string[] {
  if (!f.has("architectures")) return [];
  const v = f.obj.architectures;
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) f.bad("architectures", "a list of class names");
  return [...v] as string[];
}

/** Parses a Llama config.json (model_type "llama"), filling `LlamaConfig` defaults. */
export function parseLlamaConfig(json: JsonObject, source = "config.json"): LlamaConfig {
  const f = new Fields(json, "", source);
  f.modelType(["llama"]);
  return { modelType: "llama", architectures: architectures(f), text: parseDecoder(f, LLAMA_DEFAULTS) };
}

// ------------------------------------------------------------------------------------------------
// LLaVA-1.5

/** LLaVA's CLIP vision tower config. */
export interface ClipVisionConfig {
  /** Width of the encoder. */
  hiddenSize: number;
  /** Width of the MLP. */
  intermediateSize: number;
  /** Encoder layer count. */
  numLayers: number;
  /** Attention heads. */
  numHeads: number;
  /** Image channels. */
  numChannels: number;
  /** Patch side in pixels. */
  patchSize: number;
  /** Image side in pixels. */
  imageSize: number;
  /** LayerNorm epsilon. */
  layerNormEps: number;
  /** MLP activation ("quick_gelu" = x * sigmoid(1.702 x)). */
  hiddenAct: string;
  /** Width of CLIP's projection (unused by LLaVA, kept for completeness). */
  projectionDim: number;
}

/** transformers `CLIPVisionConfig` defaults (configuration_clip.py): the ViT-B/32 tower. */
const CLIP_VISION_DEFAULTS: ClipVisionConfig = {
  hiddenSize: 768,
  intermediateSize: 3072,
  numLayers: 12,
  numHeads: 12,
  numChannels: 3,
  patchSize: 32,
  imageSize: 224,
  layerNormEps: 1e-5,
  hiddenAct: "quick_gelu",
  projectionDim: 512,
};

/** The tower `LlavaConfig` builds when config.json has no vision_config (configuration_llava.py). */
const LLAVA_DEFAULT_VISION: ClipVisionConfig = {
  ...CLIP_VISION_DEFAULTS,
  hiddenSize: 1024,
  intermediateSize: 4096,
  numLayers: 24,
  numHeads: 16,
  patchSize: 14,
  imageSize: 336,
  projectionDim: 768,
};

/** Reads a CLIP vision config object, filling `CLIPVisionConfig` defaults. */
function parseClipVision(f: Fields): ClipVisionConfig {
  f.modelType(["clip_vision_model"], "clip_vision_model");
  const d = CLIP_VISION_DEFAULTS;
  const c: ClipVisionConfig = {
    hiddenSize: f.int("hidden_size", d.hiddenSize),
    intermediateSize: f.int("intermediate_size", d.intermediateSize),
    numLayers: f.int("num_hidden_layers", d.numLayers),
    numHeads: f.int("num_attention_heads", d.numHeads),
    numChannels: f.int("num_channels", d.numChannels),
    patchSize: f.int("patch_size", d.patchSize),
    imageSize: f.int("image_size", d.imageSize),
    layerNormEps: f.positive("layer_norm_eps", d.layerNormEps),
    hiddenAct: f.str("hidden_act", d.hiddenAct),
    projectionDim: f.int("projection_dim", d.projectionDim),
  };
  if (c.hiddenSize % c.numHeads !== 0) f.bad("num_attention_heads", `a divisor of hidden_size (${c.hiddenSize})`);
  if (c.imageSize % c.patchSize !== 0) f.bad("patch_size", `a divisor of image_size (${c.imageSize})`);
  return c;
}

/** A `LlavaForConditionalGeneration` config (model_type "llava"). */
export interface LlavaConfig {
  /** Always "llava". */
  modelType: "llava";
  /** The `architectures` list. */
  architectures: string[];
  /** The Llama decoder (`text_config`). */
  text: DecoderConfig;
  /** The CLIP tower (`vision_config`). */
  vision: ClipVisionConfig;
  /** Placeholder token id of image features (`image_token_index`, alias `image_token_id`). */
  imageTokenIndex: number;
  /** Activation between the projector's two linears. */
  projectorHiddenAct: string;
  /** Encoder hidden state(s) fed to the projector (negative counts from the end; a list is concatenated). */
  visionFeatureLayer: number | number[];
  /** "default" drops the CLS token, "full" keeps it. */
  visionFeatureSelectStrategy: "default" | "full";
  /** True when the projector's linears have biases. */
  multimodalProjectorBias: boolean;
  /** Placeholder tokens per image. */
  imageSeqLength: number;
  /** Padding token id of the processor (top-level `pad_token_id`), if set. */
  padTokenId?: number;
  /** True when lm_head shares the embedding (top level or text config). */
  tieWordEmbeddings: boolean;
}

/**
 * Parses a LLaVA config.json, filling `LlavaConfig` defaults (configuration_llava.py: image_token_index
 * 32000, projector_hidden_act "gelu", vision_feature_layer -2, vision_feature_select_strategy "default",
 * image_seq_length 576, multimodal_projector_bias true), `LlamaConfig` defaults in `text_config` and
 * `CLIPVisionConfig` defaults in `vision_config`.
 */
export function parseLlavaConfig(json: JsonObject, source = "config.json"): LlavaConfig {
  const f = new Fields(json, "", source);
  f.modelType(["llava"]);
  const textFields = f.sub("text_config") ?? new Fields({}, "text_config", source);
  textFields.modelType(["llama"], "llama");
  const text = parseDecoder(textFields, LLAMA_DEFAULTS);
  const visionFields = f.sub("vision_config");
  const vision = visionFields ? parseClipVision(visionFields) : { ...LLAVA_DEFAULT_VISION };

  const strategy = f.str("vision_feature_select_strategy", "default");
  if (strategy !== "default" && strategy !== "full") {
    return f.bad("vision_feature_select_strategy", `"default" or "full"`);
  }
  let visionFeatureLayer: number | number[] = -2;
  if (f.has("vision_feature_layer")) {
    const v = f.obj.vision_feature_layer;
    const ok = (x: unknown) => typeof x === "number" && Number.isSafeInteger(x);
    if (ok(v)) visionFeatureLayer = v as number;
    else if (Array.isArray(v) && v.length > 0 && v.every(ok)) visionFeatureLayer = [...v] as number[];
    else f.bad("vision_feature_layer", "an integer or a list of integers");
  }
  const tie = f.bool("tie_word_embeddings", false) || text.tieWordEmbeddings;
  text.tieWordEmbeddings = tie;
  const pad = tokenIds(f, "pad_token_id");
  return {
    modelType: "llava",
    architectures: architectures(f),
    text,
    vision,
    imageTokenIndex: f.int(["image_token_index", "image_token_id"], 32000, 0),
    projectorHiddenAct: f.str("projector_hidden_act", "gelu"),
    visionFeatureLayer,
    visionFeatureSelectStrategy: strategy,
    multimodalProjectorBias: f.bool("multimodal_projector_bias", true),
    imageSeqLength: f.int("image_seq_length", 576),
    padTokenId: pad ? pad[0] : text.padTokenId,
    tieWordEmbeddings: tie,
  };
}

// ------------------------------------------------------------------------------------------------
// Qwen2.5-VL and the Qwen2.5-Omni vision tower

/** The Qwen2.5-VL / Qwen2.5-Omni vision transformer config. */
export interface QwenVisionConfig {
  /** Block count. */
  depth: number;
  /** Width of the ViT. */
  hiddenSize: number;
  /** Width of the gated MLP. */
  intermediateSize: number;
  /** Attention heads. */
  numHeads: number;
  /** Image channels. */
  inChannels: number;
  /** Patch side in pixels. */
  patchSize: number;
  /** Side of the square of patches merged into one token. */
  spatialMergeSize: number;
  /** Frames per temporal patch. */
  temporalPatchSize: number;
  /** Attention window side in pixels. */
  windowSize: number;
  /** Blocks with full (not windowed) attention. */
  fullattBlockIndexes: number[];
  /** Width of the merger output (the decoder's hidden size). */
  outHiddenSize: number;
  /** Temporal position ids per second of video. */
  tokensPerSecond: number;
  /** MLP activation. */
  hiddenAct: string;
}

/** transformers `Qwen2_5_VLVisionConfig` defaults (configuration_qwen2_5_vl.py). */
const QWEN2_5_VL_VISION_DEFAULTS: QwenVisionConfig = {
  depth: 32,
  hiddenSize: 3584,
  intermediateSize: 3420,
  numHeads: 16,
  inChannels: 3,
  patchSize: 14,
  spatialMergeSize: 2,
  temporalPatchSize: 2,
  windowSize: 112,
  fullattBlockIndexes: [7, 15, 23, 31],
  outHiddenSize: 3584,
  tokensPerSecond: 4,
  hiddenAct: "silu",
};

/** Reads a Qwen vision config object, filling `d`. */
function parseQwenVision(f: Fields, d: QwenVisionConfig): QwenVisionConfig {
  const c: QwenVisionConfig = {
    depth: f.int("depth", d.depth),
    hiddenSize: f.int("hidden_size", d.hiddenSize),
    intermediateSize: f.int("intermediate_size", d.intermediateSize),
    numHeads: f.int("num_heads", d.numHeads),
    // The hub's 7B config spells it "in_chans" (which transformers ignores; both mean 3 there).
    inChannels: f.int(["in_channels", "in_chans"], d.inChannels),
    patchSize: f.int("patch_size", d.patchSize),
    spatialMergeSize: f.int("spatial_merge_size", d.spatialMergeSize),
    temporalPatchSize: f.int("temporal_patch_size", d.temporalPatchSize),
    windowSize: f.int("window_size", d.windowSize),
    fullattBlockIndexes: f.intList("fullatt_block_indexes", d.fullattBlockIndexes),
    outHiddenSize: f.int("out_hidden_size", d.outHiddenSize),
    tokensPerSecond: f.positive("tokens_per_second", d.tokensPerSecond),
    hiddenAct: f.str("hidden_act", d.hiddenAct),
  };
  if (c.hiddenSize % c.numHeads !== 0) f.bad("num_heads", `a divisor of hidden_size (${c.hiddenSize})`);
  const outside = c.fullattBlockIndexes.find((i) => i >= c.depth);
  if (outside !== undefined) f.bad("fullatt_block_indexes", `block indexes below depth (${c.depth})`);
  return c;
}

/** A `Qwen2_5_VLForConditionalGeneration` config (model_type "qwen2_5_vl"). */
export interface Qwen2_5VLConfig {
  /** Always "qwen2_5_vl". */
  modelType: "qwen2_5_vl";
  /** The `architectures` list. */
  architectures: string[];
  /** "flat": hub schema (text fields at the top); "nested": `text_config` with `rope_parameters`. */
  schema: "flat" | "nested";
  /** The decoder (always has mropeSection). */
  text: DecoderConfig;
  /** The vision tower. */
  vision: QwenVisionConfig;
  /** `<|image_pad|>` placeholder id. */
  imageTokenId: number;
  /** `<|video_pad|>` placeholder id. */
  videoTokenId: number;
  /** `<|vision_start|>` id. */
  visionStartTokenId: number;
  /** `<|vision_end|>` id. */
  visionEndTokenId: number;
  /** `<|vision_pad|>` id when the config lists it (no class default). */
  visionTokenId?: number;
}

/**
 * Parses a Qwen2.5-VL config.json in either schema, filling `Qwen2_5_VLConfig` defaults (token ids 151655,
 * 151656, 151652, 151653), `Qwen2_5_VLTextConfig` defaults for the decoder and `Qwen2_5_VLVisionConfig`
 * defaults for the tower. `rope_scaling.mrope_section` (or `rope_parameters.mrope_section`) is required.
 */
export function parseQwen2_5VLConfig(json: JsonObject, source = "config.json"): Qwen2_5VLConfig {
  const f = new Fields(json, "", source);
  f.modelType(["qwen2_5_vl"]);
  const nested = f.sub("text_config");
  const textFields = nested ?? f;
  if (nested) nested.modelType(["qwen2_5_vl_text", "qwen2_5_vl"], "qwen2_5_vl_text");
  const text = parseDecoder(textFields, QWEN2_5_VL_TEXT_DEFAULTS, nested ? f : undefined);
  text.modelType = "qwen2_5_vl_text";
  if (!text.mropeSection) {
    textFields.missing(
      textFields.has("rope_parameters") ? "rope_parameters.mrope_section" : "rope_scaling.mrope_section",
      "Qwen2.5-VL needs the M-RoPE split (e.g. [16, 24, 24])",
    );
  }
  const visionFields = f.sub("vision_config");
  const vision = visionFields
    ? parseQwenVision(visionFields, QWEN2_5_VL_VISION_DEFAULTS)
    : { ...QWEN2_5_VL_VISION_DEFAULTS, fullattBlockIndexes: [...QWEN2_5_VL_VISION_DEFAULTS.fullattBlockIndexes] };
  if (vision.outHiddenSize !== text.hiddenSize) {
    const field = visionFields ? visionFields.name("out_hidden_size") : "vision_config.out_hidden_size";
    throw new ConfigError(
      `${source}: "${field}" (${vision.outHiddenSize}) must equal the decoder hidden_size (${text.hiddenSize})`,
      source,
      field,
    );
  }
  return {
    modelType: "qwen2_5_vl",
    architectures: architectures(f),
    schema: nested ? "nested" : "flat",
    text,
    vision,
    imageTokenId: f.int("image_token_id", 151655, 0),
    videoTokenId: f.int("video_token_id", 151656, 0),
    visionStartTokenId: f.int("vision_start_token_id", 151652, 0),
    visionEndTokenId: f.int("vision_end_token_id", 151653, 0),
    visionTokenId: f.optInt("vision_token_id"),
  };
}

// ------------------------------------------------------------------------------------------------
// Qwen2.5-Omni thinker

/** The Qwen2.5-Omni audio encoder config (Whisper-style). */
export interface OmniAudioConfig {
  /** Mel bins of the input features. */
  numMelBins: number;
  /** Width of the encoder. */
  dModel: number;
  /** Encoder layer count. */
  numLayers: number;
  /** Attention heads. */
  numHeads: number;
  /** Width of the MLP. */
  ffnDim: number;
  /** Longest input in post-conv frames. */
  maxSourcePositions: number;
  /** Half the attention chunk in mel frames (chunks of 2 * nWindow). */
  nWindow: number;
  /** Width of the output projection (the decoder's hidden size). */
  outputDim: number;
  /** MLP activation. */
  activation: string;
  /** True when embeddings are scaled by sqrt(dModel). */
  scaleEmbedding: boolean;
}

/** transformers `Qwen2_5OmniAudioEncoderConfig` defaults (configuration_qwen2_5_omni.py). */
const OMNI_AUDIO_DEFAULTS: OmniAudioConfig = {
  numMelBins: 128,
  dModel: 1280,
  numLayers: 32,
  numHeads: 20,
  ffnDim: 5120,
  maxSourcePositions: 1500,
  nWindow: 100,
  outputDim: 3584,
  activation: "gelu",
  scaleEmbedding: false,
};

/** Reads an Omni audio encoder config object (aliases from the class's attribute_map accepted). */
function parseOmniAudio(f: Fields): OmniAudioConfig {
  const d = OMNI_AUDIO_DEFAULTS;
  const c: OmniAudioConfig = {
    numMelBins: f.int("num_mel_bins", d.numMelBins),
    dModel: f.int(["d_model", "hidden_size"], d.dModel),
    numLayers: f.int(["encoder_layers", "num_hidden_layers"], d.numLayers),
    numHeads: f.int(["encoder_attention_heads", "num_attention_heads"], d.numHeads),
    ffnDim: f.int(["encoder_ffn_dim", "intermediate_size"], d.ffnDim),
    maxSourcePositions: f.int("max_source_positions", d.maxSourcePositions),
    nWindow: f.int("n_window", d.nWindow),
    outputDim: f.int("output_dim", d.outputDim),
    activation: f.str("activation_function", d.activation),
    scaleEmbedding: f.bool("scale_embedding", d.scaleEmbedding),
  };
  if (c.dModel % c.numHeads !== 0) f.bad("encoder_attention_heads", `a divisor of d_model (${c.dModel})`);
  return c;
}

/** The thinker of a Qwen2.5-Omni checkpoint (`thinker_config`). */
export interface Qwen2_5OmniThinkerConfig {
  /** "qwen2_5_omni" (full model) or "qwen2_5_omni_thinker" (thinker-only config). */
  modelType: "qwen2_5_omni" | "qwen2_5_omni_thinker";
  /** The `architectures` list. */
  architectures: string[];
  /** The decoder (always has mropeSection). */
  text: DecoderConfig;
  /** The vision tower. */
  vision: QwenVisionConfig;
  /** The audio encoder. */
  audio: OmniAudioConfig;
  /** `<|AUDIO|>` placeholder id. */
  audioTokenIndex: number;
  /** `<|IMAGE|>` placeholder id. */
  imageTokenIndex: number;
  /** `<|VIDEO|>` placeholder id. */
  videoTokenIndex: number;
  /** `<|audio_bos|>` id. */
  audioStartTokenId: number;
  /** `<|audio_eos|>` id. */
  audioEndTokenId: number;
  /** `<|vision_bos|>` id. */
  visionStartTokenId: number;
  /** `<|vision_eos|>` id. */
  visionEndTokenId: number;
  /** The "user" role token id. */
  userTokenId: number;
  /** Temporal position ids per second (TMRoPE). */
  positionIdPerSeconds: number;
  /** Seconds per interleaved audio/video chunk. */
  secondsPerChunk: number;
}

/**
 * Parses a Qwen2.5-Omni config.json: the thinker from `thinker_config` (required for model_type
 * "qwen2_5_omni"; a thinker-only config with model_type "qwen2_5_omni_thinker" is read from the top).
 * Defaults are those of `Qwen2_5OmniThinkerConfig` (token ids 151646/151655/151656, audio start/end
 * 151647/151648, user 872, position_id_per_seconds 25, seconds_per_chunk 2), `Qwen2_5OmniTextConfig`,
 * `Qwen2_5OmniVisionEncoderConfig` (as Qwen2.5-VL's vision config; its tokens_per_second, absent from the
 * class, defaults to position_id_per_seconds) and `Qwen2_5OmniAudioEncoderConfig`. The vision start/end
 * ids default to 151652/151653 (the Qwen2.5-VL and Omni talker defaults; the hub thinker config sets them).
 * The talker and token2wav sections are ignored.
 */
export function parseQwen2_5OmniConfig(json: JsonObject, source = "config.json"): Qwen2_5OmniThinkerConfig {
  const top = new Fields(json, "", source);
  const modelType = top.modelType(["qwen2_5_omni", "qwen2_5_omni_thinker"]) as Qwen2_5OmniThinkerConfig["modelType"];
  let t: Fields;
  if (modelType === "qwen2_5_omni") {
    t = top.sub("thinker_config") ??
      top.missing("thinker_config", "a Qwen2.5-Omni config.json keeps the thinker there");
    t.modelType(["qwen2_5_omni_thinker"], "qwen2_5_omni_thinker");
  } else {
    t = top;
  }
  const textFields = t.sub("text_config") ?? new Fields({}, t.name("text_config"), source);
  textFields.modelType(["qwen2_5_omni_text"], "qwen2_5_omni_text");
  const text = parseDecoder(textFields, QWEN2_5_OMNI_TEXT_DEFAULTS, t);
  const positionIdPerSeconds = t.int("position_id_per_seconds", 25);
  const visionDefaults: QwenVisionConfig = {
    ...QWEN2_5_VL_VISION_DEFAULTS,
    fullattBlockIndexes: [...QWEN2_5_VL_VISION_DEFAULTS.fullattBlockIndexes],
    tokensPerSecond: positionIdPerSeconds,
  };
  const visionFields = t.sub("vision_config");
  if (visionFields) visionFields.modelType(["qwen2_5_omni_vision_encoder"], "qwen2_5_omni_vision_encoder");
  const vision = visionFields ? parseQwenVision(visionFields, visionDefaults) : visionDefaults;
  const audioFields = t.sub("audio_config");
  if (audioFields) audioFields.modelType(["qwen2_5_omni_audio_encoder"], "qwen2_5_omni_audio_encoder");
  const audio = audioFields ? parseOmniAudio(audioFields) : { ...OMNI_AUDIO_DEFAULTS };
  for (
    const [what, width, field] of [
      ["vision_config.out_hidden_size", vision.outHiddenSize, "vision_config"],
      ["audio_config.output_dim", audio.outputDim, "audio_config"],
    ] as const
  ) {
    if (width !== text.hiddenSize) {
      const name = t.name(what);
      throw new ConfigError(
        `${source}: "${name}" (${width}) must equal the decoder hidden_size (${text.hiddenSize})`,
        source,
        t.name(field),
      );
    }
  }
  return {
    modelType,
    architectures: architectures(top),
    text,
    vision,
    audio,
    audioTokenIndex: t.int(["audio_token_index", "audio_token_id"], 151646, 0),
    imageTokenIndex: t.int(["image_token_index", "image_token_id"], 151655, 0),
    videoTokenIndex: t.int(["video_token_index", "video_token_id"], 151656, 0),
    audioStartTokenId: t.int("audio_start_token_id", 151647, 0),
    audioEndTokenId: t.int("audio_end_token_id", 151648, 0),
    visionStartTokenId: t.int("vision_start_token_id", 151652, 0),
    visionEndTokenId: t.int("vision_end_token_id", 151653, 0),
    userTokenId: t.int("user_token_id", 872, 0),
    positionIdPerSeconds,
    secondsPerChunk: t.positive("seconds_per_chunk", 2),
  };
}
