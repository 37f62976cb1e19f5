/**
 * The quantized output: a Hugging Face model directory.
 *
 * - Main shards (`model.safetensors` or `model-0000k-of-0000n.safetensors` + index): every tensor outside
 *   the decoder layers copied byte for byte in its original dtype; in each decoder layer the norms (with
 *   SmoothQuant factors folded in where the method folds them) and, for every linear, the unified
 *   quantized weight Q_w(W·diag(s)) in the compressed-tensors layout:
 *   - 8-bit: `<linear>.weight` I8 [out, in] and `<linear>.weight_scale` F32 [out, 1];
 *   - 4-bit (and other widths ≤ 4): `<linear>.weight_packed` I32 [out, ⌈in/8⌉] (value + 8 in nibble i,
 *     low nibble first), `<linear>.weight_scale` F32 [out, groups], `<linear>.weight_shape` I64 [2];
 *   - asymmetric schemes add `<linear>.weight_zero_point` I8 [out, groups] (the zero point minus
 *     2^(b−1), unpacked);
 *   - biases copied.
 * - `masquant.safetensors` (not in the weight map, so other loaders ignore it): the smoothing vectors the
 *   runtime divides activations by — `<linear>.masquant.smooth.{all,text,vision,audio}` F32 [in] — and the
 *   CMC factors `<linear>.masquant.cmc.{vision,audio}.{L,R}` F32 ([in, r] and [r, out]).
 * - `config.json` with a `quantization_config` (compressed-tensors conventions: `int-quantized` for 8-bit
 *   weights, `pack-quantized` for ≤ 4-bit; dynamic per-token int activations; towers, projector and
 *   lm_head ignored), `masquant_config.json` (method, scheme, modalities, token ids, CMC settings), the
 *   tokenizer and processor files, and `run.json` (the run record).
 *
 * While a run is in progress each finished layer is written to `<out>/.partial/layer-NNNNN.safetensors`
 * (atomically); {@link finishExport} assembles the directory from them, so a killed run can resume from
 * the last complete layer. Assembly streams: each tensor is read from its source file while the output is
 * written, so memory does not grow with the number of layers.
 */
import type { Backend, Tensor } from "../tensor/mod.ts";
import { packInt4 } from "../tensor/cpu/int4.ts";
import type { SafetensorsDType } from "../io/safetensors.ts";
import { SafetensorsFile, safetensorsHeader, type TensorToWrite, writeSafetensors } from "../io/safetensors.ts";
import { INDEX_FILE_NAME, shardFileNames, SINGLE_FILE_NAME } from "../io/checkpoint.ts";
import { writeFileAtomic, writeTextAtomic } from "../io/atomic.ts";
import type { MultimodalModel } from "../model/adapter.ts";
import type { DecoderLayerWeights, LinearName } from "../nn/decoder.ts";
import { LINEAR_NAMES } from "../nn/decoder.ts";
import type { QuantScheme } from "../quant/scheme.ts";
import { foldedWeights } from "../methods/smoothquant.ts";
import { type LayerQuantState, type SmoothKey, smoothKeyFor } from "../methods/state.ts";
import { disposeWeights } from "./quantize.ts";

/** Name of the directory holding per-layer checkpoints of an unfinished run. */
export const PARTIAL_DIR = ".partial";

/** Per-layer checkpoint path. */
export function layerFile(out: string, layer: number): string {
  return `${out}/${PARTIAL_DIR}/layer-${String(layer).padStart(5, "0")}.safetensors`;
}

function f32(name: string, shape: number[], data: Float32Array): TensorToWrite {
  return { name, dtype: "F32", shape, data };
}

/** The weight key used for the unified deployed weight of a linear (text, else merged, else none). */
function deployKey(st: LayerQuantState["linears"][LinearName]): SmoothKey | undefined {
  return smoothKeyFor(st, "text");
}

/** Quantizes one weight (already smoothed) into compressed-tensors tensors. */
async function quantizedWeightTensors(
  be: Backend,
  prefix: string,
  ws: Tensor,
  scheme: QuantScheme,
): Promise<TensorToWrite[]> {
  const spec = scheme.weight;
  const [out, inp] = ws.shape;
  if (spec.bits >= 16) return [f32(`${prefix}.weight`, [out, inp], await ws.read() as Float32Array)];
  const qz = be.quantize(ws, spec, false);
  const codes = await qz.q.read() as Int8Array;
  const scale = await qz.scale.read() as Float32Array;
  const zero = qz.zero ? await qz.zero.read() as Int32Array : undefined;
  for (const t of [qz.q, qz.scale, qz.zero]) t?.dispose();
  const groups = scale.length / out;
  const res: TensorToWrite[] = [];
  if (spec.bits === 8) {
    res.push({ name: `${prefix}.weight`, dtype: "I8", shape: [out, inp], data: codes });
  } else if (spec.bits <= 4) {
    const words = packInt4(codes, [out, inp]);
    res.push({
      name: `${prefix}.weight_packed`,
      dtype: "I32",
      shape: [out, words.length / out],
      data: new Int32Array(words.buffer),
    });
    res.push({
      name: `${prefix}.weight_shape`,
      dtype: "I64",
      shape: [2],
      data: BigInt64Array.from([BigInt(out), BigInt(inp)]),
    });
  } else {
    res.push({ name: `${prefix}.weight`, dtype: "I8", shape: [out, inp], data: codes });
  }
  res.push(f32(`${prefix}.weight_scale`, [out, groups], scale));
  if (zero) {
    res.push({ name: `${prefix}.weight_zero_point`, dtype: "I8", shape: [out, groups], data: Int8Array.from(zero) });
  }
  return res;
}

/** All tensors of one finished layer: main-shard tensors and the MASQuant side tensors. */
export async function layerTensors(
  be: Backend,
  model: MultimodalModel,
  layer: number,
  w: DecoderLayerWeights,
  state: LayerQuantState,
): Promise<{ main: TensorToWrite[]; side: TensorToWrite[] }> {
  const names = model.layerTensorNames(layer);
  const main: TensorToWrite[] = [];
  const side: TensorToWrite[] = [];
  const fw = foldedWeights(be, w, state);
  try {
    if (state.fold) {
      const lp = names.inputNorm.replace(/\.input_layernorm\.weight$/, "");
      side.push(f32(`${lp}.masquant.fold.qkv`, [state.fold.qkv.length], state.fold.qkv));
      side.push(f32(`${lp}.masquant.fold.gate_up`, [state.fold.gateUp.length], state.fold.gateUp));
    }
    main.push(f32(names.inputNorm, [fw.inputNorm.size], await fw.inputNorm.read() as Float32Array));
    main.push(f32(names.postNorm, [fw.postNorm.size], await fw.postNorm.read() as Float32Array));
    for (const n of LINEAR_NAMES) {
      const lin = fw.linears[n];
      const st = state.linears[n];
      const prefix = names.linears[n].w.replace(/\.weight$/, "");
      const key = deployKey(st);
      const sv = key ? st!.smooth![key]! : undefined;
      const s = sv ? be.tensor(sv, [sv.length]) : undefined;
      const ws = s ? be.binary("mul", lin.w, s) : lin.w.retain();
      main.push(...await quantizedWeightTensors(be, prefix, ws, state.scheme));
      ws.dispose();
      s?.dispose();
      if (lin.b) main.push(f32(names.linears[n].b!, [lin.b.size], await lin.b.read() as Float32Array));
      for (const [k, v] of Object.entries(st?.smooth ?? {})) {
        if (v) side.push(f32(`${prefix}.masquant.smooth.${k}`, [v.length], v));
      }
      for (const [m, f] of Object.entries(st?.cmc ?? {})) {
        if (!f) continue;
        side.push(f32(`${prefix}.masquant.cmc.${m}.L`, [f.dIn, f.rank], f.L));
        side.push(f32(`${prefix}.masquant.cmc.${m}.R`, [f.rank, f.dOut], f.R));
      }
    }
  } finally {
    disposeWeights(fw);
  }
  return { main, side };
}

/** Writes the per-layer checkpoint of a finished layer (atomically). */
export async function writeLayerCheckpoint(
  be: Backend,
  model: MultimodalModel,
  out: string,
  layer: number,
  w: DecoderLayerWeights,
  state: LayerQuantState,
  record: Record<string, unknown>,
): Promise<void> {
  const { main, side } = await layerTensors(be, model, layer, w, state);
  const tensors = [
    ...main.map((t) => ({ ...t, name: `main/${t.name}` })),
    ...side.map((t) => ({ ...t, name: `side/${t.name}` })),
  ];
  await Deno.mkdir(`${out}/${PARTIAL_DIR}`, { recursive: true });
  await writeSafetensors(layerFile(out, layer), tensors, {
    layer: String(layer),
    state: JSON.stringify(stateMeta(state)),
    record: JSON.stringify(record),
  });
}

/** The JSON-able part of a state (vectors live in tensors). */
function stateMeta(state: LayerQuantState): Record<string, unknown> {
  return { scheme: state.scheme, fold: !!state.fold };
}

/** The run record (`record` metadata) stored in a per-layer checkpoint. */
export async function readLayerRecord(out: string, layer: number): Promise<Record<string, unknown>> {
  const f = await SafetensorsFile.open(layerFile(out, layer));
  try {
    return JSON.parse(f.metadata.record ?? "{}") as Record<string, unknown>;
  } finally {
    f.close();
  }
}

/** Reads back the per-layer checkpoints that exist, in layer order, stopping at the first gap. */
export async function completedLayers(out: string, layers: number): Promise<number> {
  let n = 0;
  for (; n < layers; n++) {
    try {
      await Deno.stat(layerFile(out, n));
    } catch {
      break;
    }
  }
  return n;
}

/**
 * Rebuilds a layer's quantization state from its per-layer checkpoint (smoothing vectors, CMC factors,
 * SmoothQuant fold factors), bit for bit.
 */
export async function readLayerState(
  model: MultimodalModel,
  out: string,
  layer: number,
): Promise<{ state: LayerQuantState; record: Record<string, unknown> }> {
  const f = await SafetensorsFile.open(layerFile(out, layer));
  try {
    const meta = JSON.parse(f.metadata.state ?? "{}") as { scheme: QuantScheme; fold: boolean };
    const record = JSON.parse(f.metadata.record ?? "{}") as Record<string, unknown>;
    const names = model.layerTensorNames(layer);
    const state: LayerQuantState = { scheme: meta.scheme, linears: {} };
    for (const n of LINEAR_NAMES) {
      const prefix = names.linears[n].w.replace(/\.weight$/, "");
      const st: NonNullable<LayerQuantState["linears"][LinearName]> = {};
      for (const k of ["all", "text", "vision", "audio"] as const) {
        const nm = `side/${prefix}.masquant.smooth.${k}`;
        if (f.has(nm)) (st.smooth ??= {})[k] = await f.readFloat32(nm);
      }
      for (const m of ["vision", "audio"] as const) {
        const ln = `side/${prefix}.masquant.cmc.${m}.L`;
        if (!f.has(ln)) continue;
        const [dIn, rank] = f.entry(ln).shape;
        const R = await f.readFloat32(`side/${prefix}.masquant.cmc.${m}.R`);
        (st.cmc ??= {})[m] = { L: await f.readFloat32(ln), R, rank, dIn, dOut: R.length / rank };
      }
      if (st.smooth || st.cmc) state.linears[n] = st;
    }
    if (meta.fold) {
      const lp = names.inputNorm.replace(/\.input_layernorm\.weight$/, "");
      state.fold = {
        qkv: await f.readFloat32(`side/${lp}.masquant.fold.qkv`),
        gateUp: await f.readFloat32(`side/${lp}.masquant.fold.gate_up`),
      };
    }
    return { state, record };
  } finally {
    f.close();
  }
}

/** Settings recorded in masquant_config.json. */
export interface ExportInfo {
  method: string;
  scheme: QuantScheme;
  /** Extra fields (alpha, modalities, CMC options, token ids, …). */
  details: Record<string, unknown>;
}

const TOWER_IGNORES = [
  "re:.*lm_head",
  "re:.*vision_tower.*",
  "re:.*multi_modal_projector.*",
  "re:.*visual.*",
  "re:.*audio_tower.*",
];

/** The compressed-tensors `quantization_config` of a scheme. */
export function quantizationConfig(scheme: QuantScheme): Record<string, unknown> {
  const w = scheme.weight;
  return {
    quant_method: "compressed-tensors",
    format: w.bits <= 4 ? "pack-quantized" : "int-quantized",
    quantization_status: "compressed",
    config_groups: {
      group_0: {
        targets: ["Linear"],
        weights: {
          num_bits: w.bits,
          type: "int",
          symmetric: w.symmetric,
          strategy: w.groupSize ? "group" : "channel",
          group_size: w.groupSize || null,
          dynamic: false,
        },
        input_activations: scheme.act
          ? {
            num_bits: scheme.act.bits,
            type: "int",
            symmetric: true,
            strategy: "token",
            dynamic: true,
            group_size: null,
          }
          : null,
        output_activations: null,
      },
    },
    ignore: TOWER_IGNORES,
    kv_cache_scheme: null,
  };
}

const COPIED_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "chat_template.json",
  "chat_template.jinja",
  "preprocessor_config.json",
  "processor_config.json",
  "generation_config.json",
  "vocab.json",
  "merges.txt",
  "added_tokens.json",
];

/** A tensor to write whose bytes are produced on demand, in pieces. */
interface LazyTensor {
  name: string;
  dtype: SafetensorsDType;
  shape: readonly number[];
  byteLength: number;
  chunks: () => AsyncIterable<Uint8Array>;
}

/** Bytes copied per read when a tensor is streamed from its source file. */
const COPY_BLOCK = 4 * 2 ** 20;

/** The bytes [start, end) of a file, in blocks of at most 4 MiB. */
async function* fileRange(path: string, start: number, end: number): AsyncIterable<Uint8Array> {
  const f = await Deno.open(path, { read: true });
  try {
    await f.seek(start, Deno.SeekMode.Start);
    for (let pos = start; pos < end;) {
      const buf = new Uint8Array(Math.min(COPY_BLOCK, end - pos));
      let filled = 0;
      while (filled < buf.length) {
        const n = await f.read(buf.subarray(filled));
        if (n === null) throw new Error(`${path}: the file ends before byte ${end}`);
        filled += n;
      }
      pos += buf.length;
      yield buf;
    }
  } finally {
    f.close();
  }
}

/**
 * Writes lazily read tensors as one safetensors file, atomically, with the same bytes as
 * `writeSafetensors` on the same tensors; the data is streamed a block at a time, so memory does not
 * depend on the size of the largest tensor.
 */
async function writeLazySafetensors(
  path: string,
  tensors: readonly LazyTensor[],
  metadata: Readonly<Record<string, string>>,
): Promise<void> {
  const { head, order } = safetensorsHeader(tensors, metadata, path);
  async function* chunks(): AsyncIterable<Uint8Array> {
    yield head;
    for (const { spec } of order) {
      const t = spec as LazyTensor;
      let n = 0;
      for await (const c of t.chunks()) {
        n += c.byteLength;
        yield c;
      }
      if (n !== t.byteLength) throw new Error(`${path}: tensor ${t.name} has ${n} bytes, expected ${t.byteLength}`);
    }
  }
  await writeFileAtomic(path, chunks());
}

/**
 * Writes lazily read tensors as the weights of model directory `dir`, in the layout `writeCheckpoint`
 * uses: one `model.safetensors`, or shards of at most `maxShardBytes` plus the index; weight files of an
 * earlier save that this one does not use are removed.
 */
async function writeLazyCheckpoint(
  dir: string,
  tensors: readonly LazyTensor[],
  maxShardBytes: number,
  metadata: Readonly<Record<string, string>>,
): Promise<void> {
  const shards: LazyTensor[][] = [[]];
  let bytes = 0;
  let total = 0;
  for (const t of tensors) {
    if (shards[shards.length - 1].length > 0 && bytes + t.byteLength > maxShardBytes) {
      shards.push([]);
      bytes = 0;
    }
    shards[shards.length - 1].push(t);
    bytes += t.byteLength;
    total += t.byteLength;
  }
  const names = shards.length === 1 ? [SINGLE_FILE_NAME] : shardFileNames(shards.length);
  for (let i = 0; i < shards.length; i++) await writeLazySafetensors(`${dir}/${names[i]}`, shards[i], metadata);
  const keep = new Set(names);
  if (shards.length > 1) {
    const entries: [string, string][] = [];
    shards.forEach((s, i) => s.forEach((t) => entries.push([t.name, names[i]])));
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const map = entries.map(([n, f]) => `    ${JSON.stringify(n)}: ${JSON.stringify(f)}`).join(",\n");
    const index = `{\n  "metadata": {\n    "total_size": ${total}\n  },\n  "weight_map": {\n${map}\n  }\n}\n`;
    await writeTextAtomic(`${dir}/${INDEX_FILE_NAME}`, index);
    keep.add(INDEX_FILE_NAME);
  }
  for await (const e of Deno.readDir(dir)) {
    const weights = e.name === SINGLE_FILE_NAME || e.name === INDEX_FILE_NAME ||
      /^model-\d{5}-of-\d{5}\.safetensors$/.test(e.name);
    if (weights && !keep.has(e.name)) await Deno.remove(`${dir}/${e.name}`);
  }
}

/** Temporary files that an atomic write leaves behind when its process is killed. */
const STALE_TEMPORARY = /^\..+\.tmp-\d+-[0-9a-z]+$/;

/** Removes temporaries of writes that a killed run left in `dir`. */
async function removeStaleTemporaries(dir: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && STALE_TEMPORARY.test(e.name)) await Deno.remove(`${dir}/${e.name}`);
  }
}

/** Removes the per-layer checkpoints of a finished run. */
export async function removePartial(out: string): Promise<void> {
  await Deno.remove(`${out}/${PARTIAL_DIR}`, { recursive: true });
}

/**
 * Assembles the final directory from the per-layer checkpoints and the source model, then removes the
 * partial directory (unless `keepPartial`: the caller removes it with {@link removePartial}). Every file
 * is written atomically; tensors are read one at a time while they are written.
 */
export async function finishExport(
  model: MultimodalModel,
  out: string,
  info: ExportInfo,
  runRecord: Record<string, unknown>,
  opts: { maxShardBytes?: number; keepPartial?: boolean } = {},
): Promise<void> {
  await removeStaleTemporaries(out);
  const main: LazyTensor[] = [];
  const side: LazyTensor[] = [];
  for (const name of model.nonLayerTensorNames()) {
    const e = model.checkpoint.entry(name);
    main.push({
      name,
      dtype: e.dtype as SafetensorsDType,
      shape: e.shape,
      byteLength: e.end - e.start,
      chunks: () => fileRange(e.file, e.start, e.end),
    });
  }
  const layerFiles: SafetensorsFile[] = [];
  try {
    for (let l = 0; l < model.numLayers; l++) {
      const f = await SafetensorsFile.open(layerFile(out, l));
      layerFiles.push(f);
      for (const n of f.names()) {
        const e = f.entry(n);
        const t = {
          name: n.slice(5),
          dtype: e.dtype,
          shape: e.shape,
          byteLength: e.end - e.start,
          chunks: async function* () {
            yield await f.readBytes(n);
          },
        };
        (n.startsWith("main/") ? main : side).push(t);
      }
    }
    await writeLazyCheckpoint(out, main, opts.maxShardBytes ?? 5_000_000_000, { quantized_by: "masquant" });
    await writeLazySafetensors(`${out}/masquant.safetensors`, side, { method: info.method });
  } finally {
    for (const f of layerFiles) f.close();
  }
  const config = { ...model.config, quantization_config: quantizationConfig(info.scheme) };
  await writeTextAtomic(`${out}/config.json`, JSON.stringify(config, null, 2) + "\n");
  await writeTextAtomic(
    `${out}/masquant_config.json`,
    JSON.stringify({ format_version: 1, method: info.method, scheme: info.scheme, ...info.details }, null, 2) + "\n",
  );
  for (const name of COPIED_FILES) {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(`${model.dir}/${name}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue;
      throw e;
    }
    await writeFileAtomic(`${out}/${name}`, bytes);
  }
  await writeTextAtomic(`${out}/run.json`, JSON.stringify(runRecord, null, 2) + "\n");
  if (!opts.keepPartial) await removePartial(out);
}
