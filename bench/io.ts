/**
 * Checkpoint I/O benchmark: writes synthetic Llama-layout checkpoints (BF16, hidden 256, intermediate 688)
 * with 4 and 32 decoder layers into a temporary directory, then reports the bytes read and the time to
 * open each model and to load the tensors of one decoder layer. Opening must read no tensor data (only
 * headers, reported apart since they grow with the tensor count), and loading a layer must read exactly
 * that layer's tensor bytes, whatever the depth.
 *
 * Run: deno run -A bench/io.ts
 */
import { Checkpoint, writeCheckpoint } from "../core/io/checkpoint.ts";
import { encodeBf16 } from "../core/io/float16.ts";
import type { TensorToWrite } from "../core/io/safetensors.ts";
import { Rng } from "../core/tensor/random.ts";

const HIDDEN = 256;
const INTERMEDIATE = 688;
const VOCAB = 2048;
const REPEATS = 7;
/** Shard size that splits the 32-layer model into several files (exercising the index). */
const MAX_SHARD_BYTES = 16 * 1024 * 1024;

/** Linear and norm tensors of decoder layer `i` as [name, shape]. */
function layerShapes(i: number): [string, number[]][] {
  const p = `model.layers.${i}`;
  return [
    [`${p}.self_attn.q_proj.weight`, [HIDDEN, HIDDEN]],
    [`${p}.self_attn.k_proj.weight`, [HIDDEN, HIDDEN]],
    [`${p}.self_attn.v_proj.weight`, [HIDDEN, HIDDEN]],
    [`${p}.self_attn.o_proj.weight`, [HIDDEN, HIDDEN]],
    [`${p}.mlp.gate_proj.weight`, [INTERMEDIATE, HIDDEN]],
    [`${p}.mlp.up_proj.weight`, [INTERMEDIATE, HIDDEN]],
    [`${p}.mlp.down_proj.weight`, [HIDDEN, INTERMEDIATE]],
    [`${p}.input_layernorm.weight`, [HIDDEN]],
    [`${p}.post_attention_layernorm.weight`, [HIDDEN]],
  ];
}

/** A synthetic BF16 Llama checkpoint with `layers` decoder layers. */
function syntheticLlama(layers: number, rng: Rng): TensorToWrite[] {
  const shapes: [string, number[]][] = [["model.embed_tokens.weight", [VOCAB, HIDDEN]]];
  for (let i = 0; i < layers; i++) shapes.push(...layerShapes(i));
  shapes.push(["model.norm.weight", [HIDDEN]], ["lm_head.weight", [VOCAB, HIDDEN]]);
  return shapes.map(([name, shape]) => ({
    name,
    dtype: "BF16",
    shape,
    data: encodeBf16(rng.uniformArray(shape.reduce((a, b) => a * b, 1), -0.05, 0.05)),
  }));
}

/** Median of a list. */
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** One row of the report. */
interface Row {
  layers: number;
  files: number;
  headerBytes: number;
  openTensorBytes: number;
  openMs: number;
  layerBytesRead: number;
  layerBytesExpected: number;
  loadMs: number;
}

/** Opens the model `REPEATS` times and loads one layer each time. */
async function measure(dir: string, layers: number): Promise<Row> {
  const layer = layers >> 1;
  const names = layerShapes(layer).map(([n]) => n);
  const openTimes: number[] = [];
  const loadTimes: number[] = [];
  let row: Row | undefined;
  for (let r = 0; r < REPEATS; r++) {
    let t0 = performance.now();
    const ck = await Checkpoint.open(dir);
    openTimes.push(performance.now() - t0);
    const headerBytes = ck.bytesRead;
    const openTensorBytes = ck.tensorBytesRead;
    // BF16: 2 bytes per element of every tensor of the layer.
    const expected = layerShapes(layer).reduce((s, [, shape]) => s + 2 * shape.reduce((a, b) => a * b, 1), 0);
    t0 = performance.now();
    for (const n of names) await ck.readFloat32(n);
    loadTimes.push(performance.now() - t0);
    row = {
      layers,
      files: ck.files.length,
      headerBytes,
      openTensorBytes,
      openMs: 0,
      layerBytesRead: ck.tensorBytesRead - openTensorBytes,
      layerBytesExpected: expected,
      loadMs: 0,
    };
    ck.close();
  }
  return { ...row!, openMs: median(openTimes), loadMs: median(loadTimes) };
}

const root = await Deno.makeTempDir({ prefix: "masquant_bench_io_" });
const rows: Row[] = [];
try {
  for (const layers of [4, 32]) {
    const dir = `${root}/llama-${layers}`;
    const tensors = syntheticLlama(layers, new Rng(layers));
    const t0 = performance.now();
    const written = await writeCheckpoint(dir, tensors, { maxShardBytes: MAX_SHARD_BYTES });
    const writeMs = performance.now() - t0;
    console.log(
      `wrote ${layers}-layer model: ${written.files.length} file(s), ${(written.totalSize / 2 ** 20).toFixed(1)} MiB ` +
        `of tensors in ${writeMs.toFixed(0)} ms`,
    );
    rows.push(await measure(dir, layers));
  }
} finally {
  await Deno.remove(root, { recursive: true });
}

const header = [
  "layers",
  "files",
  "header bytes",
  "tensor bytes on open",
  "open ms",
  "layer bytes read",
  "layer bytes expected",
  "load ms",
];
const lines = rows.map((r) => [
  String(r.layers),
  String(r.files),
  String(r.headerBytes),
  String(r.openTensorBytes),
  r.openMs.toFixed(2),
  String(r.layerBytesRead),
  String(r.layerBytesExpected),
  r.loadMs.toFixed(2),
]);
const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
const fmt = (cells: string[]) => `| ${cells.map((c, i) => c.padStart(widths[i])).join(" | ")} |`;
console.log(`\nBF16 Llama layout, hidden ${HIDDEN}, intermediate ${INTERMEDIATE}; medians of ${REPEATS} runs`);
console.log(fmt(header));
console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
for (const l of lines) console.log(fmt(l));

const sameOpen = rows.every((r) => r.openTensorBytes === rows[0].openTensorBytes && r.openTensorBytes === 0);
const exactLayer = rows.every((r) => r.layerBytesRead === r.layerBytesExpected) &&
  rows.every((r) => r.layerBytesRead === rows[0].layerBytesRead);
console.log(`\nopen reads no tensor data at any depth: ${sameOpen ? "yes" : "NO"}`);
console.log(`one layer reads exactly its own bytes, equal at every depth: ${exactLayer ? "yes" : "NO"}`);
if (!sameOpen || !exactLayer) Deno.exit(1);
