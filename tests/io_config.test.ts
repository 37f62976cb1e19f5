/**
 * Tests of core/io/config.ts: hand-written configs mirroring the hub configs of llava-1.5-7b-hf,
 * Qwen2.5-VL-7B-Instruct (flat and nested schemas) and Qwen2.5-Omni-7B (model-formats.md §1), with the
 * defaults transformers fills in for omitted fields; error sentences; the real stories260k config.
 * Expected values are written out from model-formats.md and transformers' configuration classes.
 */
import assert from "node:assert/strict";
import {
  ConfigError,
  type JsonObject,
  parseLlamaConfig,
  parseLlavaConfig,
  parseQwen2_5OmniConfig,
  parseQwen2_5VLConfig,
  readConfigJson,
} from "../core/io/config.ts";
import { sharedTest } from "./shared_data.ts";

/** A deep copy of a JSON value. */
function clone<T>(x: T): T {
  return JSON.parse(JSON.stringify(x));
}

/** Asserts that `fn` throws a ConfigError naming config.json and `field`, with a message matching `pattern`. */
function expectConfigError(fn: () => unknown, field: string, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    assert.equal(err.field, field);
    assert.ok(err.message.startsWith("config.json: "), err.message);
    assert.ok(err.message.includes(`"${field}"`), err.message);
    assert.match(err.message, pattern);
    return true;
  });
}

// llava-hf/llava-1.5-7b-hf config.json (model-formats.md §1.1: the text config sets only these four fields).
const LLAVA_15_7B: JsonObject = {
  architectures: ["LlavaForConditionalGeneration"],
  ignore_index: -100,
  image_token_index: 32000,
  model_type: "llava",
  pad_token_id: 32001,
  projector_hidden_act: "gelu",
  text_config: {
    _name_or_path: "lmsys/vicuna-7b-v1.5",
    architectures: ["LlamaForCausalLM"],
    max_position_embeddings: 4096,
    model_type: "llama",
    rms_norm_eps: 1e-5,
    torch_dtype: "float16",
    vocab_size: 32064,
  },
  tie_word_embeddings: false,
  torch_dtype: "float16",
  vision_config: {
    hidden_size: 1024,
    image_size: 336,
    intermediate_size: 4096,
    model_type: "clip_vision_model",
    num_attention_heads: 16,
    num_hidden_layers: 24,
    patch_size: 14,
    projection_dim: 768,
    vocab_size: 32000,
  },
  vision_feature_layer: -2,
  vision_feature_select_strategy: "default",
  vocab_size: 32064,
};

Deno.test("LLaVA-1.5-7B config: LlamaConfig and CLIPVisionConfig defaults are filled", () => {
  const c = parseLlavaConfig(LLAVA_15_7B);
  assert.equal(c.modelType, "llava");
  assert.deepEqual(c.architectures, ["LlavaForConditionalGeneration"]);
  assert.deepEqual(c.text, {
    modelType: "llama",
    hiddenSize: 4096,
    intermediateSize: 11008,
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 32,
    headDim: 128,
    vocabSize: 32064,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeType: "default",
    hiddenAct: "silu",
    tieWordEmbeddings: false,
    qkvBias: false,
    oProjBias: false,
    mlpBias: false,
    maxPositionEmbeddings: 4096,
    bosTokenId: 1,
    eosTokenIds: [2],
    padTokenId: undefined,
  });
  assert.deepEqual(c.vision, {
    hiddenSize: 1024,
    intermediateSize: 4096,
    numLayers: 24,
    numHeads: 16,
    numChannels: 3,
    patchSize: 14,
    imageSize: 336,
    layerNormEps: 1e-5,
    hiddenAct: "quick_gelu",
    projectionDim: 768,
  });
  assert.equal(c.imageTokenIndex, 32000);
  assert.equal(c.projectorHiddenAct, "gelu");
  assert.equal(c.visionFeatureLayer, -2);
  assert.equal(c.visionFeatureSelectStrategy, "default");
  assert.equal(c.multimodalProjectorBias, true);
  assert.equal(c.imageSeqLength, 576);
  assert.equal(c.padTokenId, 32001);
  assert.equal(c.tieWordEmbeddings, false);
});

Deno.test("LLaVA config: aliases, absent sub-configs and the CLIP class defaults", () => {
  // No vision_config: LlavaConfig builds its own 336px ViT-L/14 tower; no text_config: LlamaConfig().
  const bare = parseLlavaConfig({ model_type: "llava", image_token_id: 32010, vision_feature_layer: [-2, -5] });
  assert.equal(bare.imageTokenIndex, 32010);
  assert.deepEqual(bare.visionFeatureLayer, [-2, -5]);
  assert.equal(bare.text.vocabSize, 32000);
  assert.equal(bare.text.maxPositionEmbeddings, 2048);
  assert.equal(bare.text.rmsNormEps, 1e-6);
  assert.deepEqual(
    [bare.vision.hiddenSize, bare.vision.numLayers, bare.vision.patchSize, bare.vision.imageSize],
    [1024, 24, 14, 336],
  );
  // A vision_config that sets nothing gets CLIPVisionConfig's ViT-B/32 defaults.
  const clip = parseLlavaConfig({ model_type: "llava", vision_config: {} }).vision;
  assert.deepEqual(clip, {
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
  });
  // tie_word_embeddings set in the text config carries to the top (LlavaConfig's forward-pass of the flag).
  const tied = parseLlavaConfig({ model_type: "llava", text_config: { tie_word_embeddings: true } });
  assert.equal(tied.tieWordEmbeddings, true);
  assert.equal(tied.text.tieWordEmbeddings, true);
});

Deno.test("LLaVA config: wrong types and values name config.json and the field", () => {
  const withText = (patch: JsonObject) => {
    const j = clone(LLAVA_15_7B);
    Object.assign(j.text_config as JsonObject, patch);
    return j;
  };
  expectConfigError(
    () => parseLlavaConfig(withText({ hidden_size: "4096" })),
    "text_config.hidden_size",
    /must be a positive integer, but it is "4096"/,
  );
  expectConfigError(
    () => parseLlavaConfig(withText({ rms_norm_eps: -1 })),
    "text_config.rms_norm_eps",
    /must be a positive number/,
  );
  expectConfigError(
    () => parseLlavaConfig(withText({ num_key_value_heads: 5 })),
    "text_config.num_key_value_heads",
    /\(32\) is not a multiple of "text_config.num_key_value_heads" \(5\)/,
  );
  expectConfigError(
    () => parseLlavaConfig(withText({ model_type: "mistral" })),
    "text_config.model_type",
    /is "mistral", but this parser reads "llama" configs/,
  );
  expectConfigError(
    () => parseLlavaConfig({ ...clone(LLAVA_15_7B), vision_feature_select_strategy: "cls" }),
    "vision_feature_select_strategy",
    /must be "default" or "full"/,
  );
  expectConfigError(
    () => parseLlavaConfig({ ...clone(LLAVA_15_7B), vision_config: [1] }),
    "vision_config",
    /must be an object/,
  );
  expectConfigError(
    () => parseLlavaConfig({ ...clone(LLAVA_15_7B), model_type: "qwen2_5_vl" }),
    "model_type",
    /is "qwen2_5_vl", but this parser reads "llava" configs/,
  );
  expectConfigError(() => parseLlavaConfig({}), "model_type", /is missing; expected "llava"/);
});

// Qwen/Qwen2.5-VL-7B-Instruct config.json, flat hub schema (model-formats.md §1.2).
const QWEN25_VL_7B: JsonObject = {
  architectures: ["Qwen2_5_VLForConditionalGeneration"],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  vision_start_token_id: 151652,
  vision_end_token_id: 151653,
  vision_token_id: 151654,
  image_token_id: 151655,
  video_token_id: 151656,
  hidden_act: "silu",
  hidden_size: 3584,
  initializer_range: 0.02,
  intermediate_size: 18944,
  max_position_embeddings: 128000,
  max_window_layers: 28,
  model_type: "qwen2_5_vl",
  num_attention_heads: 28,
  num_hidden_layers: 28,
  num_key_value_heads: 4,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  use_cache: true,
  use_sliding_window: false,
  vision_config: {
    depth: 32,
    hidden_act: "silu",
    hidden_size: 1280,
    intermediate_size: 3420,
    num_heads: 16,
    in_chans: 3,
    out_hidden_size: 3584,
    patch_size: 14,
    spatial_merge_size: 2,
    spatial_patch_size: 14,
    window_size: 112,
    fullatt_block_indexes: [7, 15, 23, 31],
    tokens_per_second: 2,
    temporal_patch_size: 2,
  },
  rope_scaling: { type: "mrope", mrope_section: [16, 24, 24] },
  vocab_size: 152064,
};

/** The decoder every Qwen2.5-VL-7B / Omni-7B variant must produce (except the noted fields). */
const QWEN_7B_TEXT = {
  hiddenSize: 3584,
  intermediateSize: 18944,
  numLayers: 28,
  numHeads: 28,
  numKvHeads: 4,
  headDim: 128,
  vocabSize: 152064,
  rmsNormEps: 1e-6,
  ropeTheta: 1e6,
  ropeType: "default",
  mropeSection: [16, 24, 24],
  hiddenAct: "silu",
  tieWordEmbeddings: false,
  qkvBias: true,
  oProjBias: false,
  mlpBias: false,
};

/** Checks the fields of QWEN_7B_TEXT on a parsed decoder. */
function assertQwen7BText(text: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(QWEN_7B_TEXT)) assert.deepEqual(text[k], v, k);
}

Deno.test("Qwen2.5-VL-7B config, flat hub schema", () => {
  const c = parseQwen2_5VLConfig(QWEN25_VL_7B);
  assert.equal(c.schema, "flat");
  assertQwen7BText(c.text as unknown as Record<string, unknown>);
  assert.equal(c.text.maxPositionEmbeddings, 128000);
  assert.equal(c.text.bosTokenId, 151643);
  assert.deepEqual(c.text.eosTokenIds, [151645]);
  assert.deepEqual(c.vision, {
    depth: 32,
    hiddenSize: 1280,
    intermediateSize: 3420,
    numHeads: 16,
    inChannels: 3,
    patchSize: 14,
    spatialMergeSize: 2,
    temporalPatchSize: 2,
    windowSize: 112,
    fullattBlockIndexes: [7, 15, 23, 31],
    outHiddenSize: 3584,
    tokensPerSecond: 2,
    hiddenAct: "silu",
  });
  assert.deepEqual(
    [c.imageTokenId, c.videoTokenId, c.visionStartTokenId, c.visionEndTokenId, c.visionTokenId],
    [151655, 151656, 151652, 151653, 151654],
  );
});

Deno.test("Qwen2.5-VL config, nested text_config schema with rope_parameters", () => {
  const textKeys = [
    "hidden_act",
    "hidden_size",
    "intermediate_size",
    "max_position_embeddings",
    "num_attention_heads",
    "num_hidden_layers",
    "num_key_value_heads",
    "rms_norm_eps",
    "vocab_size",
    "bos_token_id",
    "eos_token_id",
  ];
  const text: JsonObject = { model_type: "qwen2_5_vl_text" };
  for (const k of textKeys) text[k] = QWEN25_VL_7B[k];
  text.rope_parameters = { rope_type: "default", mrope_section: [16, 24, 24], rope_theta: 1000000.0 };
  const nested: JsonObject = {
    architectures: ["Qwen2_5_VLForConditionalGeneration"],
    model_type: "qwen2_5_vl",
    image_token_id: 151655,
    video_token_id: 151656,
    vision_start_token_id: 151652,
    vision_end_token_id: 151653,
    tie_word_embeddings: false,
    text_config: text,
    vision_config: { ...(QWEN25_VL_7B.vision_config as JsonObject), model_type: "qwen2_5_vl" },
  };
  const c = parseQwen2_5VLConfig(nested);
  const flat = parseQwen2_5VLConfig(QWEN25_VL_7B);
  assert.equal(c.schema, "nested");
  assertQwen7BText(c.text as unknown as Record<string, unknown>);
  const { ropeScaling: _a, ...nestedText } = c.text;
  const { ropeScaling: _b, ...flatText } = flat.text;
  assert.deepEqual(nestedText, flatText, "both schemas describe the same decoder");
  assert.deepEqual(c.vision, flat.vision);
  assert.equal(c.visionTokenId, undefined, "no class default for vision_token_id");

  // Omitted fields take Qwen2_5_VLTextConfig / Qwen2_5_VLVisionConfig defaults.
  const sparse = parseQwen2_5VLConfig({
    model_type: "qwen2_5_vl",
    text_config: { rope_scaling: { type: "mrope", mrope_section: [16, 24, 24] } },
    vision_config: { out_hidden_size: 8192 },
  });
  assert.deepEqual(
    [sparse.text.hiddenSize, sparse.text.intermediateSize, sparse.text.numLayers, sparse.text.numHeads],
    [8192, 29568, 80, 64],
  );
  assert.deepEqual([sparse.text.numKvHeads, sparse.text.headDim, sparse.text.rmsNormEps], [8, 128, 1e-5]);
  assert.deepEqual([sparse.text.ropeTheta, sparse.text.maxPositionEmbeddings, sparse.text.tieWordEmbeddings], [
    1e6,
    32768,
    false,
  ]);
  assert.deepEqual(sparse.text.eosTokenIds, []);
  assert.deepEqual([sparse.vision.hiddenSize, sparse.vision.tokensPerSecond, sparse.vision.depth], [3584, 4, 32]);
  assert.deepEqual([sparse.imageTokenId, sparse.videoTokenId, sparse.visionStartTokenId, sparse.visionEndTokenId], [
    151655,
    151656,
    151652,
    151653,
  ]);
});

Deno.test("Qwen2.5-VL config errors name the field", () => {
  const noRope = clone(QWEN25_VL_7B);
  delete noRope.rope_scaling;
  expectConfigError(() => parseQwen2_5VLConfig(noRope), "rope_scaling.mrope_section", /is missing; Qwen2.5-VL needs/);
  const badSum = clone(QWEN25_VL_7B);
  badSum.rope_scaling = { type: "mrope", mrope_section: [16, 24, 16] };
  expectConfigError(
    () => parseQwen2_5VLConfig(badSum),
    "rope_scaling.mrope_section",
    /\[16,24,16\] sums to 56, but it must sum to head_dim \/ 2 = 64/,
  );
  const badVision = clone(QWEN25_VL_7B);
  (badVision.vision_config as JsonObject).fullatt_block_indexes = [7, 40];
  expectConfigError(
    () => parseQwen2_5VLConfig(badVision),
    "vision_config.fullatt_block_indexes",
    /must be block indexes below depth \(32\)/,
  );
  const badOut = clone(QWEN25_VL_7B);
  (badOut.vision_config as JsonObject).out_hidden_size = 2048;
  expectConfigError(() => parseQwen2_5VLConfig(badOut), "vision_config.out_hidden_size", /must equal the decoder/);
  const badEos = clone(QWEN25_VL_7B);
  badEos.eos_token_id = "151645";
  expectConfigError(() => parseQwen2_5VLConfig(badEos), "eos_token_id", /a token id or a list of token ids/);
});

// Qwen/Qwen2.5-Omni-7B config.json, thinker part (model-formats.md §1.3).
const OMNI_7B: JsonObject = {
  architectures: ["Qwen2_5OmniModel"],
  enable_audio_output: true,
  model_type: "qwen2_5_omni",
  talker_config: { model_type: "qwen2_5_omni_talker", hidden_size: 896 },
  token2wav_config: { model_type: "qwen2_5_omni_token2wav" },
  thinker_config: {
    architectures: ["Qwen2_5OmniThinkerForConditionalGeneration"],
    audio_config: {
      activation_function: "gelu",
      d_model: 1280,
      encoder_attention_heads: 20,
      encoder_ffn_dim: 5120,
      encoder_layers: 32,
      max_source_positions: 1500,
      model_type: "qwen2_5_omni_audio_encoder",
      n_window: 100,
      num_hidden_layers: 32,
      num_mel_bins: 128,
      output_dim: 3584,
      scale_embedding: false,
    },
    audio_end_token_id: 151648,
    audio_start_token_id: 151647,
    audio_token_index: 151646,
    bos_token_id: 151644,
    eos_token_id: 151645,
    image_token_index: 151655,
    model_type: "qwen2_5_omni_thinker",
    pad_token_id: 151643,
    position_id_per_seconds: 25,
    seconds_per_chunk: 2,
    text_config: {
      hidden_act: "silu",
      hidden_size: 3584,
      intermediate_size: 18944,
      max_position_embeddings: 32768,
      model_type: "qwen2_5_omni_text",
      num_attention_heads: 28,
      num_hidden_layers: 28,
      num_key_value_heads: 4,
      rms_norm_eps: 1e-6,
      rope_scaling: { mrope_section: [16, 24, 24], rope_type: "default", type: "default" },
      rope_theta: 1000000.0,
      sliding_window: 32768,
      tie_word_embeddings: false,
      use_sliding_window: false,
      vocab_size: 152064,
    },
    user_token_id: 872,
    video_token_index: 151656,
    vision_config: {
      depth: 32,
      fullatt_block_indexes: [7, 15, 23, 31],
      hidden_act: "silu",
      hidden_size: 1280,
      in_channels: 3,
      intermediate_size: 3420,
      model_type: "qwen2_5_omni_vision_encoder",
      num_heads: 16,
      out_hidden_size: 3584,
      patch_size: 14,
      spatial_merge_size: 2,
      temporal_patch_size: 2,
      tokens_per_second: 25,
      window_size: 112,
    },
    vision_end_token_id: 151653,
    vision_start_token_id: 151652,
  },
};

/** The thinker-level fields every Omni-7B variant must produce. */
function assertOmniIds(c: ReturnType<typeof parseQwen2_5OmniConfig>): void {
  assert.deepEqual(
    [c.audioTokenIndex, c.imageTokenIndex, c.videoTokenIndex, c.audioStartTokenId, c.audioEndTokenId],
    [151646, 151655, 151656, 151647, 151648],
  );
  assert.deepEqual([c.visionStartTokenId, c.visionEndTokenId, c.userTokenId], [151652, 151653, 872]);
  assert.deepEqual([c.positionIdPerSeconds, c.secondsPerChunk], [25, 2]);
}

Deno.test("Qwen2.5-Omni-7B config: the thinker's text, vision and audio configs", () => {
  const c = parseQwen2_5OmniConfig(OMNI_7B);
  assert.equal(c.modelType, "qwen2_5_omni");
  assertQwen7BText(c.text as unknown as Record<string, unknown>);
  assert.equal(c.text.maxPositionEmbeddings, 32768);
  assert.equal(c.text.bosTokenId, 151644, "thinker-level bos_token_id reaches the decoder");
  assert.deepEqual(c.text.eosTokenIds, [151645]);
  assert.equal(c.text.padTokenId, 151643);
  assert.equal(c.vision.tokensPerSecond, 25);
  assert.deepEqual(
    [c.vision.depth, c.vision.hiddenSize, c.vision.numHeads, c.vision.intermediateSize, c.vision.outHiddenSize],
    [32, 1280, 16, 3420, 3584],
  );
  assert.deepEqual(c.audio, {
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
  });
  assertOmniIds(c);
});

Deno.test("Qwen2.5-Omni config: class defaults when the thinker omits fields", () => {
  const c = parseQwen2_5OmniConfig({
    model_type: "qwen2_5_omni",
    thinker_config: { vision_config: { hidden_size: 1280 } },
  });
  // Qwen2_5OmniTextConfig / AudioEncoderConfig / ThinkerConfig defaults are the 7B's values.
  assertQwen7BText(c.text as unknown as Record<string, unknown>);
  assert.equal(c.vision.tokensPerSecond, 25, "vision tokens_per_second falls back to position_id_per_seconds");
  assert.deepEqual([c.audio.numLayers, c.audio.dModel, c.audio.nWindow, c.audio.outputDim], [32, 1280, 100, 3584]);
  assertOmniIds(c);
  // A thinker-only config is read from the top level.
  const thinker = parseQwen2_5OmniConfig(clone(OMNI_7B.thinker_config) as JsonObject);
  assert.equal(thinker.modelType, "qwen2_5_omni_thinker");
  assertQwen7BText(thinker.text as unknown as Record<string, unknown>);
  // Aliases of the placeholder ids (the class's attribute_map).
  const alias = parseQwen2_5OmniConfig({ model_type: "qwen2_5_omni", thinker_config: { audio_token_id: 5 } });
  assert.equal(alias.audioTokenIndex, 5);
});

Deno.test("Qwen2.5-Omni config errors name the field", () => {
  expectConfigError(
    () => parseQwen2_5OmniConfig({ model_type: "qwen2_5_omni" }),
    "thinker_config",
    /is missing; a Qwen2.5-Omni config.json keeps the thinker there/,
  );
  const bad = clone(OMNI_7B);
  ((bad.thinker_config as JsonObject).audio_config as JsonObject).encoder_layers = 0;
  expectConfigError(
    () => parseQwen2_5OmniConfig(bad),
    "thinker_config.audio_config.encoder_layers",
    /must be a positive integer, but it is 0/,
  );
  const badText = clone(OMNI_7B);
  ((badText.thinker_config as JsonObject).text_config as JsonObject).tie_word_embeddings = "no";
  expectConfigError(
    () => parseQwen2_5OmniConfig(badText),
    "thinker_config.text_config.tie_word_embeddings",
    /must be true or false/,
  );
});

Deno.test("Llama config: LlamaConfig defaults and the rope_parameters schema", () => {
  const c = parseLlamaConfig({ model_type: "llama", hidden_size: 2048, num_attention_heads: 16 });
  assert.deepEqual(c.architectures, []);
  assert.deepEqual(
    [c.text.headDim, c.text.numKvHeads, c.text.rmsNormEps, c.text.ropeTheta, c.text.maxPositionEmbeddings],
    [128, 16, 1e-6, 10000, 2048],
  );
  assert.deepEqual([c.text.vocabSize, c.text.intermediateSize, c.text.numLayers], [32000, 11008, 32]);
  assert.deepEqual([c.text.bosTokenId, c.text.eosTokenIds, c.text.padTokenId], [1, [2], undefined]);
  assert.equal(c.text.mropeSection, undefined);
  const newer = parseLlamaConfig({
    model_type: "llama",
    attention_bias: true,
    eos_token_id: [128001, 128009],
    rope_parameters: { rope_type: "llama3", rope_theta: 500000.0, factor: 8.0 },
  });
  assert.equal(newer.text.ropeTheta, 500000);
  assert.equal(newer.text.ropeType, "llama3");
  assert.deepEqual(newer.text.eosTokenIds, [128001, 128009]);
  assert.deepEqual([newer.text.qkvBias, newer.text.oProjBias, newer.text.mlpBias], [true, true, false]);
  expectConfigError(
    () => parseLlamaConfig({ model_type: "llama", hidden_size: 100, num_attention_heads: 3 }),
    "hidden_size",
    /\(100\) is not a multiple of "num_attention_heads" \(3\), so head_dim must be given/,
  );
});

Deno.test("readConfigJson: missing, invalid and non-object files give one sentence naming the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "io_config_" });
  try {
    await assert.rejects(() => readConfigJson(dir), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(
        err.message,
        `${dir}/config.json does not exist; a model directory needs its Hugging Face config.json`,
      );
      return true;
    });
    await Deno.writeTextFile(`${dir}/config.json`, `{"model_type": "llama",}`);
    await assert.rejects(
      () => readConfigJson(dir),
      new RegExp(`^ConfigError: ${dir}/config.json is not valid JSON \\(`),
    );
    await Deno.writeTextFile(`${dir}/config.json`, `[1, 2]`);
    await assert.rejects(() => readConfigJson(`${dir}/`), /config.json does not hold a JSON object$/);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(LLAVA_15_7B));
    assert.deepEqual(await readConfigJson(dir), LLAVA_15_7B);
    assert.deepEqual(await readConfigJson(`${dir}/config.json`), LLAVA_15_7B);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest("stories260k config.json parses as a Llama config", "models/stories260k/config.json", async (path) => {
  const c = parseLlamaConfig(await readConfigJson(path), path);
  // Values from the model's README: hidden 64, intermediate 172, 5 layers, 8 heads, 4 kv heads, head_dim 8,
  // vocab 512, theta 10000, eps 1e-5, tied embeddings.
  assert.deepEqual(c.architectures, ["LlamaForCausalLM"]);
  assert.deepEqual(c.text, {
    modelType: "llama",
    hiddenSize: 64,
    intermediateSize: 172,
    numLayers: 5,
    numHeads: 8,
    numKvHeads: 4,
    headDim: 8,
    vocabSize: 512,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeType: "default",
    hiddenAct: "silu",
    tieWordEmbeddings: true,
    qkvBias: false,
    oProjBias: false,
    mlpBias: false,
    maxPositionEmbeddings: 512,
    bosTokenId: 1,
    eosTokenIds: [2],
    padTokenId: undefined,
  });
});
