/**
 * Hand-computed values of the method's building blocks, and the bad inputs it must refuse before work:
 * SmoothQuant factors, the quantizer grids (round half to even, symmetric and asymmetric), SmoothQuant
 * folding (an exact equivalent transform in float), the MAS truncation rule, CMC error falling with rank,
 * and clear errors for calibration sets lacking a modality, impossible settings and NaN weights.
 */
import { assert, assertAlmostEquals, assertEquals, assertRejects, assertThrows } from "@std/assert";
import {
  computeCmc,
  CpuBackend,
  decoderLayer,
  type DecoderLayerShape,
  type DecoderLayerWeights,
  floatLinear,
  foldedWeights,
  initSmoothing,
  LayerStats,
  LINEAR_NAMES,
  type LinearName,
  MAS_DEFAULTS,
  NonFiniteError,
  openWith,
  registerAdapter,
  Rng,
  ropeTables1d,
  RunConfigError,
  runQuantization,
  sampleRows,
  SCHEMES,
  smoothingFactors,
  smoothQuantLayer,
  splitState,
  truncateSmoothing,
} from "@masquant/core";
import { llavaAdapter } from "@masquant/plugin-llava";
import { tempDir, writeLlavaFixture } from "./fixtures/synthetic.ts";
import { imageChatSamples } from "./fixtures/samples.ts";
import { relFro } from "./ref.ts";

registerAdapter(llavaAdapter);
const be = new CpuBackend();

Deno.test("SmoothQuant factors: s = max|X|^α / max|W|^(1−α) with the 1e-5 clamps", () => {
  const s = smoothingFactors([4, 1, 0, 9], [1, 4, 2, 0], 0.5);
  assertAlmostEquals(s[0], 2, 1e-6); // √4 / √1
  assertAlmostEquals(s[1], 0.5, 1e-6); // √1 / √4
  assertAlmostEquals(s[2], Math.sqrt(1e-5) / Math.sqrt(2), 1e-9); // activation clamped to 1e-5
  assertAlmostEquals(s[3], 3 / Math.sqrt(1e-5), 1e-2); // weight clamped to 1e-5
  const a = smoothingFactors([8], [2], 0.75);
  assertAlmostEquals(a[0], 8 ** 0.75 / 2 ** 0.25, 1e-5);
  assertThrows(() => smoothingFactors([1], [1], 1.5), RangeError, "alpha");
});

Deno.test("quantizer grids by hand: symmetric and asymmetric, round half to even", async () => {
  // Symmetric 4-bit: Δ = max|x| / 7 = 1/7; x/Δ = [2.1, −7, 3.85, 0.7] → [2, −7, 4, 1].
  const sym = await be.fakeQuant(be.tensor([0.3, -1, 0.55, 0.1], [1, 4]), { bits: 4, symmetric: true, groupSize: 0 })
    .read();
  [2, -7, 4, 1].forEach((l, i) => assertAlmostEquals(sym[i], Math.fround(l * Math.fround(1 / 7)), 1e-7));
  // Asymmetric 4-bit: Δ = 1.55/15, z = round(1/Δ) = 10, u = round(x/Δ) + 10 = [13, 0, 15, 11].
  const asym = be.quantize(be.tensor([0.3, -1, 0.55, 0.1], [1, 4]), { bits: 4, symmetric: false, groupSize: 0 });
  assertEquals(Array.from(await asym.q.read()), [13 - 8, 0 - 8, 15 - 8, 11 - 8]);
  assertEquals(Array.from(await asym.zero!.read()), [10 - 8]);
  assertAlmostEquals((await asym.scale.read())[0], 1.55 / 15, 1e-7);
  // Ties go to the even level: with Δ = 1 (max 127 at 8 bits), 2.5 → 2, 3.5 → 4, −2.5 → −2.
  const q = be.quantize(be.tensor([2.5, 3.5, -2.5, 127], [1, 4]), { bits: 8, symmetric: true, groupSize: 0 });
  assertEquals(Array.from(await q.q.read()), [2, 4, -2, 127]);
  // An all-zero row quantizes to exactly zero (the step clamps at 1e-5).
  assertEquals(Array.from(await be.fakeQuant(be.full([1, 5], 0), { bits: 4, symmetric: true, groupSize: 0 }).read()), [
    0,
    0,
    0,
    0,
    0,
  ]);
  // Groups of 2 along the row.
  const g = await be.quantize(be.tensor([1, -1, 10, 5], [1, 4]), { bits: 8, symmetric: true, groupSize: 2 }).scale
    .read();
  assertEquals(Array.from(g), [Math.fround(1 / 127), Math.fround(10 / 127)]);
});

Deno.test("MAS truncation: |s| < 1e-2 becomes sign(s)·1e-2, zero stays zero", () => {
  const s = Float32Array.from([0.5, 0.001, -0.004, 0, -2]);
  truncateSmoothing(s, 1e-2);
  assertEquals(Array.from(s), [0.5, 0.01, -0.01, 0, -2].map(Math.fround));
});

function layer(rng: Rng): { shape: DecoderLayerShape; w: DecoderLayerWeights } {
  const shape: DecoderLayerShape = {
    hidden: 32,
    heads: 4,
    kvHeads: 2,
    headDim: 8,
    intermediate: 48,
    rmsNormEps: 1e-6,
    act: "silu",
  };
  const dims: Record<LinearName, [number, number]> = {
    q: [32, 32],
    k: [16, 32],
    v: [16, 32],
    o: [32, 32],
    gate: [48, 32],
    up: [48, 32],
    down: [32, 48],
  };
  const w: DecoderLayerWeights = {
    inputNorm: be.tensor(rng.uniformArray(32, 0.5, 1.5), [32]),
    postNorm: be.tensor(rng.uniformArray(32, 0.5, 1.5), [32]),
    linears: Object.fromEntries(LINEAR_NAMES.map((n) => {
      const [o, i] = dims[n];
      return [n, {
        w: be.tensor(rng.normalArray(o * i, 0.2), [o, i]),
        b: n === "q" ? be.tensor(rng.normalArray(o, 0.1), [o]) : undefined,
      }];
    })) as DecoderLayerWeights["linears"],
  };
  return { shape, w };
}

Deno.test("SmoothQuant folding is an exact equivalent transform in float (relative error < 1e-5)", async () => {
  const rng = new Rng(4);
  const { shape, w } = layer(rng);
  const T = 9;
  const modality = Uint8Array.from([0, 0, 1, 1, 1, 1, 0, 0, 0]);
  const rows = sampleRows(be, modality);
  const xs = rng.normalArray(T * 32, 1);
  for (let t = 0; t < T; t++) xs[t * 32 + 5] *= 40;
  const x = be.tensor(xs, [T, 32]);
  const ctx = { rope: ropeTables1d(be, 8, 10000, Array.from({ length: T }, (_, i) => i)), mask: { causal: true } };
  const stats = new LayerStats(0);
  const y = decoderLayer(be, shape, w, x, ctx, stats.hook(be, rows.ids, rows.rows, floatLinear(be)));
  await stats.collect();
  const state = await smoothQuantLayer(be, w, stats, SCHEMES.w8a8, 0.5);
  assert(state.fold && state.linears.o?.smooth?.all, "SmoothQuant folds q/k/v and gate/up, divides o explicitly");
  // The o factor divides the activation and multiplies the weight: in float the product is unchanged.
  const folded = foldedWeights(be, w, state);
  const sO = be.tensor(state.linears.o!.smooth!.all!, [32]);
  const y2 = decoderLayer(be, shape, folded, x, ctx, (name, xin, lin) => {
    if (name !== "o") return floatLinear(be)(name, xin, lin);
    const xd = be.binary("div", xin, sO);
    const wm = be.binary("mul", lin.w, sO);
    return be.matmul(xd, wm, { transB: true });
  });
  const e = relFro(await y2.read(), await y.read());
  assert(e < 1e-5, `folded forward differs: ${e}`);
  // The factors follow the formula with the group's weight maximum (q, k and v together).
  const qkvMax = new Float32Array(32);
  for (const n of ["q", "k", "v"] as const) {
    const wv = await w.linears[n].w.read();
    const rowsN = wv.length / 32;
    for (let r = 0; r < rowsN; r++) {
      for (let c = 0; c < 32; c++) qkvMax[c] = Math.max(qkvMax[c], Math.abs(wv[r * 32 + c]));
    }
  }
  const want = smoothingFactors(stats.stat("qkv", "all", 32), qkvMax, 0.5);
  assert(relFro(state.fold!.qkv, want) < 1e-6, "qkv factors use the q/k/v column maximum");
});

Deno.test("CMC: the whitened residual falls as the rank grows and vanishes at full rank", async () => {
  // A 128-wide layer so that ranks above the floor of 32 stay below full rank.
  const rng = new Rng(5);
  const H = 128;
  const shape: DecoderLayerShape = {
    hidden: H,
    heads: 4,
    kvHeads: 2,
    headDim: 32,
    intermediate: 192,
    rmsNormEps: 1e-6,
    act: "silu",
  };
  const dims: Record<LinearName, [number, number]> = {
    q: [H, H],
    k: [64, H],
    v: [64, H],
    o: [H, H],
    gate: [192, H],
    up: [192, H],
    down: [H, 192],
  };
  const w: DecoderLayerWeights = {
    inputNorm: be.full([H], 1),
    postNorm: be.full([H], 1),
    linears: Object.fromEntries(LINEAR_NAMES.map((n) => {
      const [o, i] = dims[n];
      return [n, { w: be.tensor(rng.normalArray(o * i, 0.1), [o, i]) }];
    })) as DecoderLayerWeights["linears"],
  };
  const T = 300;
  const modality = Uint8Array.from({ length: T }, (_, i) => (i % 3 === 0 ? 0 : 1));
  const rows = sampleRows(be, modality);
  const xs = rng.normalArray(T * H, 1);
  for (let t = 0; t < T; t++) xs[t * H + (modality[t] ? 7 : 50)] *= 20;
  const x = be.tensor(xs, [T, H]);
  const stats = new LayerStats(0, ["vision"]);
  const ctx = { rope: ropeTables1d(be, 32, 10000, Array.from({ length: T }, (_, i) => i)), mask: { causal: true } };
  decoderLayer(be, shape, w, x, ctx, stats.hook(be, rows.ids, rows.rows, floatLinear(be)));
  await stats.collect();
  const init = await initSmoothing(be, w, stats, ["text", "vision"], 0.5);
  const residual = async (rankRatio: number) => {
    const state = splitState(SCHEMES.w4a8, init);
    const fits = await computeCmc(be, w, state, stats, { enabled: true, rankRatio, whiten: true, target: "float" });
    return fits.find((f) => f.linear === "q" && f.modality === "vision")!.residualFraction;
  };
  const byRank: number[] = [];
  for (const rank of [32, 48, 64, 96]) byRank.push(await residual(rank));
  for (let i = 1; i < byRank.length; i++) assert(byRank[i] < byRank[i - 1], `residual must fall with rank: ${byRank}`);
  assert(byRank[0] > 1e-3, `rank 32 of 128 should leave a visible residual, got ${byRank[0]}`);
  assert((await residual(1)) < 1e-9, "full rank (ratio 1) reconstructs the difference");
  assert((await residual(0.05)) === byRank[0], "ratio 0.05 of 128 is raised to the floor of 32");
});

Deno.test("bad input is refused before work: missing modality, impossible settings, NaN weights", async () => {
  const fx = await tempDir();
  try {
    await writeLlavaFixture(fx.dir, { seed: 3, vision: { imageSize: 112 } });
    const model = await openWith(fx.dir, be);
    const textOnly = [await model.prepareTokens([1, 450, 4799, 338, 263, 1243])];
    const base = { scheme: SCHEMES.w4a8, alpha: 0.5, mas: MAS_DEFAULTS };
    let e = await assertRejects(
      () => runQuantization(model, textOnly, { ...base, method: "masquant", modalities: ["text", "vision"] }),
      RunConfigError,
    );
    assert(e.message.includes("vision tokens") && e.message.includes("calibration set has none"), e.message);
    e = await assertRejects(
      () => runQuantization(model, textOnly, { ...base, method: "smoothquant", alpha: 2 }),
      RunConfigError,
    );
    assert(e.message.includes("alpha"), e.message);
    e = await assertRejects(
      () => runQuantization(model, textOnly, { ...base, method: "masquant", mas: { ...MAS_DEFAULTS, lr: -1 } }),
      RunConfigError,
    );
    assert(e.message.includes("learning rate"), e.message);
    e = await assertRejects(
      () =>
        runQuantization(model, textOnly, {
          ...base,
          method: "rtn",
          scheme: { ...SCHEMES.w4a16, weight: { ...SCHEMES.w4a16.weight, groupSize: 48 } },
        }),
      RunConfigError,
    );
    assert(e.message.includes("group size 48"), e.message);
    e = await assertRejects(() => runQuantization(model, [], { ...base, method: "rtn" }), RunConfigError);
    assert(e.message.includes("empty"), e.message);
    e = await assertRejects(
      () => runQuantization(model, textOnly, { ...base, method: "masquant", modalities: ["audio"] }),
      RunConfigError,
    );
    assert(e.message.includes("no audio input"), e.message);
    for (const p of textOnly) p.dispose();
    model.close();
    // NaN in a weight: the layer is refused with the tensor named, nothing quantized is produced.
    const f = JSON.parse(await Deno.readTextFile(`${fx.dir}/config.json`));
    const { SafetensorsFile, writeSafetensors } = await import("@masquant/core");
    const sf = await SafetensorsFile.open(`${fx.dir}/model.safetensors`);
    const tensors = [];
    for (const n of sf.names()) {
      const ent = sf.entry(n);
      const data = await sf.readBytes(n);
      if (n === "language_model.model.layers.1.mlp.up_proj.weight") {
        new Float32Array(data.buffer, data.byteOffset, 4)[2] = NaN;
      }
      tensors.push({ name: n, dtype: ent.dtype, shape: ent.shape, data });
    }
    sf.close();
    await writeSafetensors(`${fx.dir}/model.safetensors`, tensors);
    void f;
    const m2 = await openWith(fx.dir, be);
    const calib = [await m2.prepare(imageChatSamples(1, 1)[0])];
    let layersDone = 0;
    e = await assertRejects(
      () => runQuantization(m2, calib, { ...base, method: "rtn", onLayer: () => Promise.resolve(void layersDone++) }),
      NonFiniteError,
    );
    assert(e.message.includes("layer 1") && e.message.includes("up_proj"), e.message);
    assertEquals(layersDone, 1, "layer 0 finished, layer 1 refused before it was handed over");
    calib[0].dispose();
    m2.close();
  } finally {
    await fx.cleanup();
  }
});
