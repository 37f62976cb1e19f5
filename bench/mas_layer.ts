/**
 * Time and memory of one MAS layer step: learning the per-modality smoothing vectors of one decoder layer
 * (hidden 512, intermediate 1376, 8 heads, 32 calibration samples × 256 tokens — 192 text + 64 vision —
 * 2 epochs = 64 AdamW steps, W4A8), on the CPU backend and on WebGPU when an adapter exists.
 * Run: `deno run -A bench/mas_layer.ts [--samples 32] [--tokens 256] [--backend cpu|webgpu|both]`.
 */
import { parseArgs } from "node:util";
import {
  type Backend,
  CpuBackend,
  decoderLayer,
  type DecoderLayerShape,
  type DecoderLayerWeights,
  floatLinear,
  initSmoothing,
  LayerStats,
  learnSmoothing,
  LINEAR_NAMES,
  type LinearName,
  MAS_DEFAULTS,
  type MasSample,
  Rng,
  ropeTables1d,
  sampleRows,
  SCHEMES,
} from "@masquant/core";
import { openWebGPU } from "@masquant/kernels";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    samples: { type: "string", default: "32" },
    tokens: { type: "string", default: "256" },
    backend: { type: "string", default: "both" },
  },
});
const N = Number(values.samples);
const T = Number(values.tokens);
const shape: DecoderLayerShape = {
  hidden: 512,
  heads: 8,
  kvHeads: 8,
  headDim: 64,
  intermediate: 1376,
  rmsNormEps: 1e-6,
  act: "silu",
};

async function run(
  be: Backend,
): Promise<{ seconds: number; steps: number; peakRss: number; peakBackend: number; loss: number[] }> {
  const rng = new Rng(3);
  const dims: Record<LinearName, [number, number]> = {
    q: [512, 512],
    k: [512, 512],
    v: [512, 512],
    o: [512, 512],
    gate: [1376, 512],
    up: [1376, 512],
    down: [512, 1376],
  };
  const w: DecoderLayerWeights = {
    inputNorm: be.full([512], 1),
    postNorm: be.full([512], 1),
    linears: Object.fromEntries(LINEAR_NAMES.map((n) => {
      const [o, i] = dims[n];
      return [n, { w: be.tensor(rng.normalArray(o * i, 1 / Math.sqrt(i)), [o, i]) }];
    })) as DecoderLayerWeights["linears"],
  };
  const modality = Uint8Array.from({ length: T }, (_, i) => (i >= 16 && i < 16 + T / 4 ? 1 : 0));
  const rows = sampleRows(be, modality);
  const ctx = { rope: ropeTables1d(be, 64, 10000, Array.from({ length: T }, (_, i) => i)), mask: { causal: true } };
  const stats = new LayerStats(0);
  const samples: MasSample[] = [];
  for (let j = 0; j < N; j++) {
    const xs = rng.normalArray(T * 512, 1);
    for (let t = 0; t < T; t++) {
      const c = modality[t] ? 9 : 3; // modality-specific outlier channels
      xs[t * 512 + c] *= 30;
    }
    const x = be.tensor(xs, [T, 512]);
    const y = decoderLayer(be, shape, w, x, ctx, stats.hook(be, rows.ids, rows.rows, floatLinear(be)));
    await stats.collect();
    samples.push({ input: xs, target: Float32Array.from(await y.read()), modality, ctx, rows: rows.rows });
    x.dispose();
    y.dispose();
  }
  const init = await initSmoothing(be, w, stats, ["text", "vision"], 0.5);
  let peakRss = Deno.memoryUsage().rss;
  let peakBackend = 0;
  const t0 = performance.now();
  const r = await learnSmoothing(
    be,
    (b, x, c, hook) => decoderLayer(b, shape, w, x, c, hook),
    SCHEMES.w4a8,
    init,
    samples,
    MAS_DEFAULTS,
    () => {
      peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
      const m = be.memory();
      peakBackend = Math.max(peakBackend, m.liveBytes + m.pooledBytes);
    },
  );
  await be.sync();
  return {
    seconds: (performance.now() - t0) / 1e3,
    steps: N * MAS_DEFAULTS.epochs,
    peakRss,
    peakBackend,
    loss: r.epochLoss,
  };
}

const rowsOut: string[] = [];
if (values.backend !== "webgpu") {
  const r = await run(new CpuBackend());
  rowsOut.push(
    `| cpu | ${r.seconds.toFixed(1)} | ${(1000 * r.seconds / r.steps).toFixed(0)} | ${
      (r.peakRss / 2 ** 20).toFixed(0)
    } | ${(r.peakBackend / 2 ** 20).toFixed(0)} | ${r.loss.map((l) => l.toExponential(3)).join(" → ")} |`,
  );
}
if (values.backend !== "cpu") {
  const gpu = await openWebGPU();
  if (gpu) {
    const r = await run(gpu);
    rowsOut.push(
      `| webgpu (${gpu.description}) | ${r.seconds.toFixed(1)} | ${(1000 * r.seconds / r.steps).toFixed(0)} | ${
        (r.peakRss / 2 ** 20).toFixed(0)
      } | ${(r.peakBackend / 2 ** 20).toFixed(0)} | ${r.loss.map((l) => l.toExponential(3)).join(" → ")} |`,
    );
  } else rowsOut.push("| webgpu | no adapter | | | | |");
}
console.log(
  `MAS layer step: hidden 512, intermediate 1376, ${N} samples × ${T} tokens, ${MAS_DEFAULTS.epochs} epochs, W4A8`,
);
console.log("| backend | total (s) | per step (ms) | peak RSS (MiB) | peak backend memory (MiB) | epoch loss |");
console.log("|---|---|---|---|---|---|");
for (const r of rowsOut) console.log(r);
