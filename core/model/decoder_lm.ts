/**
 * The language-model half every supported family shares: token embeddings, a stack of Llama-style
 * decoder layers read one at a time from the checkpoint, the final RMSNorm and lm_head (or tied
 * embeddings). Family adapters extend it with their processors, towers and position rules.
 */
import { type Backend, scope, type Tensor } from "../tensor/mod.ts";
import type { Checkpoint } from "../io/checkpoint.ts";
import type { DecoderConfig } from "../io/config.ts";
import { bytesToFloat32, type SafetensorsDType } from "../io/safetensors.ts";
import type { TextTokenizer } from "../io/tokenizer.ts";
import {
  decoderLayer,
  type DecoderLayerShape,
  type DecoderLayerWeights,
  type LayerContext,
  LINEAR_NAMES,
  type LinearHook,
  type LinearName,
} from "../nn/decoder.ts";
import type { Linear } from "../nn/linear.ts";
import { ropeTables1d } from "../nn/rope.ts";
import type { LayerTensorNames, MultimodalModel, PreparedInput } from "./adapter.ts";
import type { Modality } from "./modality.ts";
import type { Sample } from "./sample.ts";

/** Where a decoder's tensors live in a checkpoint. */
export interface DecoderNaming {
  /** Prefix of the layers, e.g. "model.layers" → "model.layers.3.self_attn.q_proj.weight". */
  layers: string;
  /** Token embedding matrix. */
  embed: string;
  /** Final RMSNorm weight. */
  norm: string;
  /** lm_head weight; undefined when the embedding is tied. */
  lmHead?: string;
}

/** Thrown when a checkpoint lacks a tensor or has one of the wrong shape. */
export class ModelFormatError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "ModelFormatError";
  }
}

const LINEAR_SUFFIX: Record<LinearName, string> = {
  q: "self_attn.q_proj",
  k: "self_attn.k_proj",
  v: "self_attn.v_proj",
  o: "self_attn.o_proj",
  gate: "mlp.gate_proj",
  up: "mlp.up_proj",
  down: "mlp.down_proj",
};

/**
 * Picks the first naming scheme whose embedding and layer-0 q_proj exist in the checkpoint (the hub
 * names and the names newer transformers versions write differ).
 */
export function resolveNaming(
  ckpt: Checkpoint,
  candidates: DecoderNaming[],
  dir: string,
  tied: boolean,
): DecoderNaming {
  for (const c of candidates) {
    const q = `${c.layers}.0.${LINEAR_SUFFIX.q}`;
    if (ckpt.has(c.embed) && (ckpt.has(`${q}.weight`) || ckpt.has(`${q}.weight_packed`))) {
      const lmHead = c.lmHead && ckpt.has(c.lmHead) ? c.lmHead : undefined;
      if (!lmHead && !tied) {
        throw new ModelFormatError(
          `${dir}: the config says lm_head is not tied to the embeddings, but tensor ${c.lmHead} is missing`,
        );
      }
      return { ...c, lmHead };
    }
  }
  throw new ModelFormatError(
    `${dir}: none of the expected decoder tensors were found (looked for ${
      candidates.map((c) => c.embed).join(" or ")
    }); is this a checkpoint of the right family?`,
  );
}

/** Everything a DecoderLM needs at construction. */
export interface DecoderLMInit {
  dir: string;
  family: string;
  config: Record<string, unknown>;
  backend: Backend;
  checkpoint: Checkpoint;
  tokenizer?: TextTokenizer;
  text: DecoderConfig;
  naming: DecoderNaming;
  modalities: readonly Modality[];
}

/** Base class of the family adapters' models. */
export abstract class DecoderLM implements MultimodalModel {
  readonly dir: string;
  readonly family: string;
  readonly config: Record<string, unknown>;
  readonly backend: Backend;
  readonly checkpoint: Checkpoint;
  readonly tokenizer?: TextTokenizer;
  readonly text: DecoderConfig;
  readonly naming: DecoderNaming;
  readonly shape: DecoderLayerShape;
  readonly modalities: readonly Modality[];
  #embedBytes: Uint8Array<ArrayBuffer> | undefined;
  #embedDtype: SafetensorsDType | undefined;
  #norm: Tensor | undefined;
  #lmHead: Tensor | undefined;

  constructor(init: DecoderLMInit) {
    this.dir = init.dir;
    this.family = init.family;
    this.config = init.config;
    this.backend = init.backend;
    this.checkpoint = init.checkpoint;
    this.tokenizer = init.tokenizer;
    this.text = init.text;
    this.naming = init.naming;
    this.modalities = init.modalities;
    const t = init.text;
    if (t.hiddenAct !== "silu") {
      throw new ModelFormatError(`${init.dir}/config.json: decoder activation ${t.hiddenAct} is not supported (silu)`);
    }
    this.shape = {
      hidden: t.hiddenSize,
      heads: t.numHeads,
      kvHeads: t.numKvHeads,
      headDim: t.headDim,
      intermediate: t.intermediateSize,
      rmsNormEps: t.rmsNormEps,
      act: "silu",
    };
  }

  /** Decoder layer count. */
  get numLayers(): number {
    return this.text.numLayers;
  }

  /** Rows of the embedding / lm_head. */
  get vocabSize(): number {
    return this.checkpoint.entry(this.naming.embed).shape[0];
  }

  abstract prepare(sample: Sample): Promise<PreparedInput>;

  layerTensorNames(i: number): LayerTensorNames {
    const p = `${this.naming.layers}.${i}`;
    const linears = {} as Record<LinearName, { w: string; b?: string }>;
    for (const n of LINEAR_NAMES) {
      const base = `${p}.${LINEAR_SUFFIX[n]}`;
      const b = `${base}.bias`;
      linears[n] = { w: `${base}.weight`, b: this.checkpoint.has(b) ? b : undefined };
    }
    return { inputNorm: `${p}.input_layernorm.weight`, postNorm: `${p}.post_attention_layernorm.weight`, linears };
  }

  /** Reads a float tensor, checking its shape. */
  async readTensor(name: string, shape: readonly number[]): Promise<Tensor> {
    if (!this.checkpoint.has(name)) {
      throw new ModelFormatError(`${this.dir}: tensor ${name} is missing from the checkpoint`);
    }
    const e = this.checkpoint.entry(name);
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
      throw new ModelFormatError(
        `${e.file}: tensor ${name} has shape [${e.shape}], but the config implies [${shape}]`,
      );
    }
    const data = await this.checkpoint.readFloat32(name);
    return this.backend.tensor(data, shape);
  }

  async loadLayer(i: number): Promise<DecoderLayerWeights> {
    if (!(i >= 0 && i < this.numLayers)) throw new RangeError(`layer ${i} is outside 0..${this.numLayers - 1}`);
    const names = this.layerTensorNames(i);
    const s = this.shape;
    const outDims: Record<LinearName, [number, number]> = {
      q: [s.heads * s.headDim, s.hidden],
      k: [s.kvHeads * s.headDim, s.hidden],
      v: [s.kvHeads * s.headDim, s.hidden],
      o: [s.hidden, s.heads * s.headDim],
      gate: [s.intermediate, s.hidden],
      up: [s.intermediate, s.hidden],
      down: [s.hidden, s.intermediate],
    };
    const linears = {} as Record<LinearName, Linear>;
    for (const n of LINEAR_NAMES) {
      const w = await this.readTensor(names.linears[n].w, outDims[n]);
      const bn = names.linears[n].b;
      linears[n] = { w, b: bn ? await this.readTensor(bn, [outDims[n][0]]) : undefined };
    }
    return {
      inputNorm: await this.readTensor(names.inputNorm, [s.hidden]),
      postNorm: await this.readTensor(names.postNorm, [s.hidden]),
      linears,
    };
  }

  forwardLayer(w: DecoderLayerWeights, x: Tensor, ctx: LayerContext, hook?: LinearHook, be?: Backend): Tensor {
    return decoderLayer(be ?? this.backend, this.shape, w, x, ctx, hook);
  }

  /** Embedding rows of token ids [T] → [T, hidden] (widened on the host, one row at a time). */
  async embed(ids: ArrayLike<number>): Promise<Tensor> {
    if (!this.#embedBytes) {
      this.#embedBytes = await this.checkpoint.readBytes(this.naming.embed);
      this.#embedDtype = this.checkpoint.entry(this.naming.embed).dtype;
    }
    const [vocab, hidden] = this.checkpoint.entry(this.naming.embed).shape;
    if (hidden !== this.shape.hidden) {
      throw new ModelFormatError(
        `${this.dir}: ${this.naming.embed} has width ${hidden}, expected ${this.shape.hidden}`,
      );
    }
    const rowBytes = this.#embedBytes.length / vocab;
    const out = new Float32Array(ids.length * hidden);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!(Number.isInteger(id) && id >= 0 && id < vocab)) {
        throw new RangeError(`token id ${id} at position ${i} is outside the vocabulary of ${vocab} (${this.dir})`);
      }
      const row = this.#embedBytes.slice(id * rowBytes, (id + 1) * rowBytes);
      out.set(bytesToFloat32(row, this.#embedDtype!), i * hidden);
    }
    return this.backend.tensor(out, [ids.length, hidden]);
  }

  /** Rotary tables and mask of a text-only sequence of length T (1-D positions 0..T−1, causal). */
  textContext(t: number): LayerContext {
    const pos = Int32Array.from({ length: t }, (_, i) => i);
    return { rope: ropeTables1d(this.backend, this.shape.headDim, this.text.ropeTheta, pos), mask: { causal: true } };
  }

  async prepareTokens(ids: ArrayLike<number>): Promise<PreparedInput> {
    const hidden = await this.embed(ids);
    const ctx = this.textContext(ids.length);
    return {
      hidden,
      tokenIds: Int32Array.from(ids),
      modality: new Uint8Array(ids.length),
      ctx,
      dispose() {
        hidden.dispose();
        ctx.rope.cos.dispose();
        ctx.rope.sin.dispose();
        ctx.mask.segments?.dispose();
      },
    };
  }

  async #headTensors(): Promise<{ norm: Tensor; lmHead: Tensor }> {
    if (!this.#norm) this.#norm = await this.readTensor(this.naming.norm, [this.shape.hidden]);
    if (!this.#lmHead) {
      const name = this.naming.lmHead ?? this.naming.embed;
      const vocab = this.checkpoint.entry(name).shape[0];
      this.#lmHead = await this.readTensor(name, [vocab, this.shape.hidden]);
    }
    return { norm: this.#norm, lmHead: this.#lmHead };
  }

  async finalNorm(x: Tensor): Promise<Tensor> {
    const { norm } = await this.#headTensors();
    return this.backend.rmsNorm(x, norm, this.shape.rmsNormEps);
  }

  async head(x: Tensor): Promise<Tensor> {
    const { norm, lmHead } = await this.#headTensors();
    return scope(() =>
      this.backend.matmul(this.backend.rmsNorm(x, norm, this.shape.rmsNormEps), lmHead, { transB: true })
    );
  }

  async logits(ids: ArrayLike<number>): Promise<Tensor> {
    const inp = await this.prepareTokens(ids);
    let x = inp.hidden.retain();
    try {
      for (let i = 0; i < this.numLayers; i++) {
        const w = await this.loadLayer(i);
        const y = this.forwardLayer(w, x, inp.ctx);
        x.dispose();
        x = y;
        for (const t of [w.inputNorm, w.postNorm, ...Object.values(w.linears).flatMap((l) => [l.w, l.b])]) t?.dispose();
      }
      return await this.head(x);
    } finally {
      x.dispose();
      inp.dispose();
    }
  }

  nonLayerTensorNames(): string[] {
    const prefix = `${this.naming.layers}.`;
    return this.checkpoint.names().filter((n) => !n.startsWith(prefix));
  }

  close(): void {
    this.#norm?.dispose();
    this.#lmHead?.dispose();
    this.#norm = this.#lmHead = undefined;
    this.#embedBytes = undefined;
    this.checkpoint.close();
  }
}
