/**
 * Loading a quantized output directory (see export.ts) back as a runnable model. The family adapter
 * opens the directory as usual (embeddings, towers, processors and head are unchanged); decoder layers
 * are read from their integer codes and scales plus the MASQuant side file, and run in deploy mode:
 * integer kernels on Q_w(W·diag(s_text)) for every token, x/s_m per modality, and the CMC branch for
 * vision and audio tokens.
 */
import type { Backend, Tensor } from "../tensor/mod.ts";
import { unpackInt4 } from "../tensor/cpu/int4.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
import { readConfigJson } from "../io/config.ts";
import type { DecoderLayerShape, LayerContext, LinearHook } from "../nn/decoder.ts";
import type { Checkpoint } from "../io/checkpoint.ts";
import type { TextTokenizer } from "../io/tokenizer.ts";
import type { Modality } from "../model/modality.ts";
import { type DecoderLayerWeights, LINEAR_NAMES, type LinearName } from "../nn/decoder.ts";
import type { Linear } from "../nn/linear.ts";
import type { MultimodalModel, OpenOptions } from "../model/adapter.ts";
import { findAdapter } from "../model/registry.ts";
import { MODALITIES } from "../model/modality.ts";
import { type LayerQuantState, LayerRuntime, quantHook } from "../methods/state.ts";
import type { QuantScheme } from "../quant/scheme.ts";
import { sampleRows } from "../calib/stats.ts";

/** masquant_config.json as written by the exporter. */
export interface MasquantConfig {
  format_version: number;
  method: string;
  scheme: QuantScheme;
  [key: string]: unknown;
}

/** Thrown when a quantized directory is incomplete or inconsistent. */
export class QuantizedFormatError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "QuantizedFormatError";
  }
}

/** True when a directory holds a masquant output (masquant_config.json beside config.json). */
export async function isQuantizedDir(dir: string): Promise<boolean> {
  try {
    return (await Deno.stat(`${dir}/masquant_config.json`)).isFile;
  } catch {
    return false;
  }
}

/** A quantized layer: packed weights per linear and the state (smoothing, CMC). */
export interface QuantizedLayer {
  norms: { input: Tensor; post: Tensor };
  packed: Record<LinearName, { q?: Tensor; scale?: Tensor; w?: Tensor; b?: Tensor; shape: [number, number] }>;
  state: LayerQuantState;
}

/**
 * A model opened from a quantized directory. It delegates everything but the decoder layers to the
 * family's model; `loadLayer` gives dequantized float weights (for inspection), while the forward of a
 * layer loaded with {@link loadQuantizedLayer} uses the integer codes.
 */
export class QuantizedModel implements MultimodalModel {
  readonly #side: SafetensorsFile;
  readonly #cache = new Map<number, { layer: QuantizedLayer; rt: LayerRuntime }>();

  private constructor(
    readonly base: MultimodalModel,
    readonly qconfig: MasquantConfig,
    side: SafetensorsFile,
    readonly cacheLayers: boolean,
  ) {
    this.#side = side;
  }

  /**
   * Opens a quantized directory with the adapter its config.json selects. With `cacheLayers: false`
   * every layer is read again when needed and freed after use (memory of one layer).
   */
  static async open(
    dir: string,
    backend: Backend,
    options?: OpenOptions & { cacheLayers?: boolean },
  ): Promise<QuantizedModel> {
    const config = await readConfigJson(dir);
    let qconfig: MasquantConfig;
    try {
      qconfig = JSON.parse(await Deno.readTextFile(`${dir}/masquant_config.json`));
    } catch (e) {
      throw new QuantizedFormatError(`${dir}/masquant_config.json cannot be read: ${(e as Error).message}`);
    }
    const base = await findAdapter(config, `${dir}/config.json`).open(dir, backend, options);
    let side: SafetensorsFile;
    try {
      side = await SafetensorsFile.open(`${dir}/masquant.safetensors`);
    } catch (e) {
      base.close();
      throw new QuantizedFormatError(`${dir}/masquant.safetensors is missing or invalid: ${(e as Error).message}`);
    }
    return new QuantizedModel(base, qconfig, side, options?.cacheLayers ?? true);
  }

  get dir(): string {
    return this.base.dir;
  }
  get family(): string {
    return this.base.family;
  }
  get config(): Record<string, unknown> {
    return this.base.config;
  }
  get backend(): Backend {
    return this.base.backend;
  }
  get checkpoint(): Checkpoint {
    return this.base.checkpoint;
  }
  get tokenizer(): TextTokenizer | undefined {
    return this.base.tokenizer;
  }
  get shape(): DecoderLayerShape {
    return this.base.shape;
  }
  get numLayers(): number {
    return this.base.numLayers;
  }
  get vocabSize(): number {
    return this.base.vocabSize;
  }
  get modalities(): readonly Modality[] {
    return this.base.modalities;
  }

  /** The quantization scheme of the checkpoint. */
  get scheme(): QuantScheme {
    return this.qconfig.scheme;
  }

  prepare: MultimodalModel["prepare"] = (s) => this.base.prepare(s);
  prepareTokens: MultimodalModel["prepareTokens"] = (ids) => this.base.prepareTokens(ids);
  layerTensorNames: MultimodalModel["layerTensorNames"] = (i) => this.base.layerTensorNames(i);
  head: MultimodalModel["head"] = (x) => this.base.head(x);
  finalNorm: MultimodalModel["finalNorm"] = (x) => this.base.finalNorm(x);
  nonLayerTensorNames: MultimodalModel["nonLayerTensorNames"] = () => this.base.nonLayerTensorNames();

  /** Reads layer i's codes, scales and MASQuant tensors (cached until close). */
  async loadQuantizedLayer(i: number): Promise<{ layer: QuantizedLayer; rt: LayerRuntime }> {
    const hit = this.#cache.get(i);
    if (hit) return hit;
    const be = this.backend;
    const ck = this.checkpoint;
    const names = this.layerTensorNames(i);
    const scheme = this.scheme;
    const need = (n: string) => {
      if (!ck.has(n)) {
        throw new QuantizedFormatError(`${this.dir}: tensor ${n} is missing from the quantized checkpoint`);
      }
      return n;
    };
    const vec = async (n: string) => {
      const v = await ck.readFloat32(need(n));
      return be.tensor(v, [v.length]);
    };
    const packed = {} as QuantizedLayer["packed"];
    const state: LayerQuantState = { scheme, linears: {} };
    for (const n of LINEAR_NAMES) {
      const prefix = names.linears[n].w.replace(/\.weight$/, "");
      const scale = await ck.readFloat32(need(`${prefix}.weight_scale`));
      let codes: Int8Array;
      let shape: [number, number];
      if (ck.has(`${prefix}.weight_packed`)) {
        const shp = await ck.readFloat32(need(`${prefix}.weight_shape`));
        shape = [shp[0], shp[1]];
        const bytes = await ck.readBytes(`${prefix}.weight_packed`);
        codes = unpackInt4(new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4), shape);
      } else {
        const e = ck.entry(need(`${prefix}.weight`));
        if (e.dtype !== "I8") {
          throw new QuantizedFormatError(`${this.dir}: ${prefix}.weight should be I8, found ${e.dtype}`);
        }
        shape = [e.shape[0], e.shape[1]];
        codes = await ck.readInt8(`${prefix}.weight`);
      }
      const groups = scale.length / shape[0];
      const zp = ck.has(`${prefix}.weight_zero_point`) ? await ck.readInt32(`${prefix}.weight_zero_point`) : undefined;
      const q = be.tensor(codes, shape, scheme.weight.bits <= 4 ? "int4" : "i8");
      const sc = be.tensor(scale, [shape[0], groups]);
      const b = names.linears[n].b ? await vec(names.linears[n].b!) : undefined;
      if (scheme.weight.symmetric && scheme.weight.groupSize === 0 && scheme.act) {
        const s1 = be.reshape(sc, [shape[0]]);
        sc.dispose();
        packed[n] = { q, scale: s1, b, shape };
      } else {
        const zt = zp ? be.tensor(zp, [shape[0], groups], "i32") : undefined;
        const w = be.dequantize({ q, scale: sc, zero: zt }, scheme.weight.groupSize);
        for (const t of [q, sc, zt]) t?.dispose();
        packed[n] = { w, b, shape };
      }
      const st: NonNullable<LayerQuantState["linears"][LinearName]> = {};
      for (const k of ["all", ...MODALITIES] as const) {
        const nm = `${prefix}.masquant.smooth.${k}`;
        if (this.#side.has(nm)) (st.smooth ??= {})[k] = await this.#side.readFloat32(nm);
      }
      for (const m of ["vision", "audio"] as const) {
        const ln = `${prefix}.masquant.cmc.${m}.L`;
        if (!this.#side.has(ln)) continue;
        const [dIn, rank] = this.#side.entry(ln).shape;
        const R = await this.#side.readFloat32(`${prefix}.masquant.cmc.${m}.R`);
        (st.cmc ??= {})[m] = { L: await this.#side.readFloat32(ln), R, rank, dIn, dOut: R.length / rank };
      }
      if (st.smooth || st.cmc) state.linears[n] = st;
    }
    const layer: QuantizedLayer = {
      norms: { input: await vec(names.inputNorm), post: await vec(names.postNorm) },
      packed,
      state,
    };
    const rt = new LayerRuntime(be, state);
    for (const n of LINEAR_NAMES) {
      const p = packed[n];
      rt.setDeployed(n, p.q ? { q: p.q, scale: p.scale } : { w: p.w });
    }
    const entry = { layer, rt };
    if (this.cacheLayers) this.#cache.set(i, entry);
    return entry;
  }

  /** Weights of layer i in float (dequantized codes; norms as stored, i.e. with folds applied). */
  async loadLayer(i: number): Promise<DecoderLayerWeights> {
    const { layer, rt } = await this.loadQuantizedLayer(i);
    const be = this.backend;
    const linears = {} as Record<LinearName, Linear>;
    for (const n of LINEAR_NAMES) {
      const p = layer.packed[n];
      let w: Tensor;
      if (p.w) w = p.w.retain();
      else {
        const deq = be.dequantize({ q: p.q!, scale: be.reshape(p.scale!, [p.shape[0], 1]) }, 0);
        w = deq;
      }
      linears[n] = { w, b: p.b?.retain() };
    }
    const out = { inputNorm: layer.norms.input.retain(), postNorm: layer.norms.post.retain(), linears };
    if (!this.cacheLayers) disposeQuantizedLayer(layer, rt);
    return out;
  }

  /** Runs a layer given float weights (e.g. from loadLayer) through the family's forward. */
  forwardLayer(w: DecoderLayerWeights, x: Tensor, ctx: LayerContext, hook?: LinearHook, be?: Backend): Tensor {
    return this.base.forwardLayer(w, x, ctx, hook, be);
  }

  /** Deploy-mode forward of a prepared input through all layers; returns the last hidden states. */
  async forwardAll(inp: { hidden: Tensor; modality: Uint8Array; ctx: LayerContext }): Promise<Tensor> {
    const rows = sampleRows(this.backend, inp.modality);
    let x = inp.hidden.retain();
    try {
      for (let i = 0; i < this.numLayers; i++) {
        const { layer, rt } = await this.loadQuantizedLayer(i);
        const w: DecoderLayerWeights = {
          inputNorm: layer.norms.input,
          postNorm: layer.norms.post,
          linears: Object.fromEntries(
            LINEAR_NAMES.map((n) => [n, { w: layer.packed[n].w ?? layer.packed[n].q!, b: layer.packed[n].b }]),
          ) as Record<LinearName, Linear>,
        };
        const y = this.base.forwardLayer(w, x, inp.ctx, quantHook(rt, "deploy", rows.rows));
        x.dispose();
        x = y;
        if (!this.cacheLayers) disposeQuantizedLayer(layer, rt);
      }
      return x;
    } finally {
      rows.dispose();
    }
  }

  async logits(ids: ArrayLike<number>): Promise<Tensor> {
    const inp = await this.prepareTokens(ids);
    try {
      const x = await this.forwardAll(inp);
      const out = await this.head(x);
      x.dispose();
      return out;
    } finally {
      inp.dispose();
    }
  }

  close(): void {
    for (const { layer, rt } of this.#cache.values()) disposeQuantizedLayer(layer, rt);
    this.#cache.clear();
    this.#side.close();
    this.base.close();
  }
}

/** Frees a loaded quantized layer. */
function disposeQuantizedLayer(layer: QuantizedLayer, rt: LayerRuntime): void {
  rt.dispose();
  layer.norms.input.dispose();
  layer.norms.post.dispose();
  for (const p of Object.values(layer.packed)) for (const t of [p.q, p.scale, p.w, p.b]) t?.dispose();
}
