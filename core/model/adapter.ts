/**
 * The plugin interface of a model family (DESIGN §4). An adapter recognises its checkpoints from
 * config.json and opens them as a {@link MultimodalModel}: a decoder-only language model whose layers
 * can be loaded and run one at a time, plus the processors and encoder towers that turn a sample into
 * layer-0 hidden states.
 */
import type { Backend, Tensor } from "../tensor/mod.ts";
import type { Checkpoint } from "../io/checkpoint.ts";
import type { TextTokenizer } from "../io/tokenizer.ts";
import type { DecoderLayerShape, DecoderLayerWeights, LayerContext, LinearHook, LinearName } from "../nn/decoder.ts";
import type { Modality } from "./modality.ts";
import type { Sample } from "./sample.ts";

/** The inputs of decoder layer 0 for one sample. */
export interface PreparedInput {
  /** Hidden states entering layer 0, [T, hidden]. */
  hidden: Tensor;
  /** Token ids [T] (placeholders included). */
  tokenIds: Int32Array;
  /** Modality id per token (0 text, 1 vision, 2 audio). */
  modality: Uint8Array;
  /** Rotary tables and attention mask of the decoder. */
  ctx: LayerContext;
  /** Frees the tensors. */
  dispose(): void;
}

/** Checkpoint tensor names of one decoder layer. */
export interface LayerTensorNames {
  inputNorm: string;
  postNorm: string;
  linears: Record<LinearName, { w: string; b?: string }>;
}

/** Options of {@link ModelAdapter.open}. */
export interface OpenOptions {
  /** Load the tokenizer and processors (default true; tests of pure numerics may skip it). */
  tokenizer?: boolean;
}

/** An opened model. */
export interface MultimodalModel {
  /** Checkpoint directory. */
  readonly dir: string;
  /** Adapter id (e.g. "llava"). */
  readonly family: string;
  /** The raw config.json. */
  readonly config: Record<string, unknown>;
  /** Backend the model runs on. */
  readonly backend: Backend;
  /** The checkpoint (lazy tensor reads). */
  readonly checkpoint: Checkpoint;
  /** Tokenizer, when loaded. */
  readonly tokenizer?: TextTokenizer;
  /** Decoder layer hyper-parameters. */
  readonly shape: DecoderLayerShape;
  /** Decoder layer count. */
  readonly numLayers: number;
  /** Vocabulary size (rows of lm_head). */
  readonly vocabSize: number;
  /** Modalities this model accepts. */
  readonly modalities: readonly Modality[];

  /** Builds layer-0 inputs of a sample (tokenize, preprocess media, run towers, merge embeddings). */
  prepare(sample: Sample): Promise<PreparedInput>;
  /** Layer-0 inputs of a plain token sequence (text only). */
  prepareTokens(ids: ArrayLike<number>): Promise<PreparedInput>;
  /** Checkpoint names of layer i's tensors. */
  layerTensorNames(i: number): LayerTensorNames;
  /** Reads layer i's weights from the checkpoint onto the backend. */
  loadLayer(i: number): Promise<DecoderLayerWeights>;
  /**
   * Runs a decoder layer (weights from loadLayer) on x [T, hidden]. `be` overrides the backend the ops run
   * on (an autodiff tape wrapping the model's backend, for learning smoothing vectors).
   */
  forwardLayer(w: DecoderLayerWeights, x: Tensor, ctx: LayerContext, hook?: LinearHook, be?: Backend): Tensor;
  /** Final norm + lm_head: logits [T, vocab] of hidden states after the last layer. */
  head(x: Tensor): Promise<Tensor>;
  /** Final norm only: the normalised output hidden states. */
  finalNorm(x: Tensor): Promise<Tensor>;
  /** Text-only forward of token ids: logits at every position [T, vocab]. */
  logits(ids: ArrayLike<number>): Promise<Tensor>;
  /** Names of the checkpoint tensors outside the decoder layers (embeddings, towers, final norm, head). */
  nonLayerTensorNames(): string[];
  /** Releases cached tensors and closes files. */
  close(): void;
}

/** A model-family plugin. */
export interface ModelAdapter {
  /** Short id, e.g. "llama", "llava", "qwen2_5_vl", "qwen2_5_omni". */
  readonly id: string;
  /** True when this adapter handles a checkpoint with this config.json. */
  matches(config: Record<string, unknown>): boolean;
  /** Opens a checkpoint directory. */
  open(dir: string, backend: Backend, options?: OpenOptions): Promise<MultimodalModel>;
}
