/**
 * MASQuant on a tiny LLaVA-layout fixture whose text and vision tokens carry large outlier channels in
 * different places (tests/fixtures/synthetic.ts explains how the fixture plants them), at W4A8:
 * - each modality's final-layer SQNR: MASQuant (split) ≥ SmoothQuant ≥ RTN;
 * - deploy mode (one text-smoothed quantized weight + CMC) at full rank, compensating towards the
 *   quantized modality weight, equals split mode within 0.1 dB;
 * - at rank ratio 0.05 CMC closes most of the gap between deploy-without-CMC and split mode.
 * Held-out evaluation samples; CPU backend (the kernels are checked against WebGPU elsewhere).
 */
import { assert } from "@std/assert";
import {
  CMC_DEFAULTS,
  compareVariants,
  CpuBackend,
  type LayerQuantState,
  MAS_DEFAULTS,
  type MultimodalModel,
  openWith,
  type PreparedInput,
  registerAdapter,
  runQuantization,
  SCHEMES,
  type VariantReport,
} from "@masquant/core";
import { llavaAdapter } from "@masquant/plugin-llava";
import { tempDir, writeLlavaFixture } from "./fixtures/synthetic.ts";
import { imageChatSamples } from "./fixtures/samples.ts";

registerAdapter(llavaAdapter);

const be = new CpuBackend();
const fx = await tempDir();
await writeLlavaFixture(fx.dir, {
  seed: 5,
  text: { hidden: 128, intermediate: 344, layers: 2, heads: 4, kvHeads: 2 },
  vision: { imageSize: 112 },
});

let model: MultimodalModel;
let calib: PreparedInput[];
let evals: PreparedInput[];
const reports = new Map<string, VariantReport>();

function final(label: string, m: "text" | "vision"): number {
  const r = reports.get(label)!;
  return r.sqnr[m][r.sqnr[m].length - 1];
}

/** Drops the CMC factors of a run: deploy mode then has only the unified text-smoothed weight. */
function withoutCmc(states: LayerQuantState[]): LayerQuantState[] {
  return states.map((s) => ({
    ...s,
    linears: Object.fromEntries(Object.entries(s.linears).map(([k, v]) => [k, { smooth: v!.smooth }])),
  }));
}

Deno.test("W4A8 on the LLaVA fixture: quantize with RTN, SmoothQuant and MASQuant (+CMC)", async () => {
  model = await openWith(fx.dir, be);
  calib = [];
  for (const s of imageChatSamples(8, 1)) calib.push(await model.prepare(s));
  evals = [];
  for (const s of imageChatSamples(4, 2, 5)) evals.push(await model.prepare(s));
  const scheme = SCHEMES.w4a8;
  const base = { scheme, alpha: 0.5, mas: MAS_DEFAULTS };
  const rtn = await runQuantization(model, calib, { ...base, method: "rtn" });
  const sq = await runQuantization(model, calib, { ...base, method: "smoothquant" });
  const full = await runQuantization(model, calib, {
    ...base,
    method: "masquant",
    cmc: { ...CMC_DEFAULTS, rankRatio: 1, target: "quantized" },
  });
  const low = await runQuantization(model, calib, {
    ...base,
    method: "masquant",
    cmc: { ...CMC_DEFAULTS, rankRatio: 0.05, target: "quantized" },
  });
  const lowFloat = await runQuantization(model, calib, {
    ...base,
    method: "masquant",
    cmc: { ...CMC_DEFAULTS, rankRatio: 0.05, target: "float" },
  });
  const out = await compareVariants(model, evals, [
    { label: "RTN", mode: "merged", states: rtn.states },
    { label: "SmoothQuant", mode: "merged", states: sq.states },
    { label: "MASQuant split", mode: "split", states: full.states },
    { label: "MASQuant deploy, CMC full rank", mode: "deploy", states: full.states },
    { label: "MASQuant deploy, no CMC", mode: "deploy", states: withoutCmc(full.states) },
    { label: "MASQuant deploy, CMC 0.05", mode: "deploy", states: low.states },
    { label: "MASQuant deploy, CMC 0.05 float target", mode: "deploy", states: lowFloat.states },
  ]);
  for (const r of out) reports.set(r.label, r);
  console.log("final-layer SQNR (dB)          text    vision");
  for (const r of out) {
    console.log(`${r.label.padEnd(40)} ${final(r.label, "text").toFixed(2)}   ${final(r.label, "vision").toFixed(2)}`);
  }
});

Deno.test("each modality: MASQuant (split) ≥ SmoothQuant ≥ RTN", () => {
  for (const m of ["text", "vision"] as const) {
    const [r, s, q] = [final("RTN", m), final("SmoothQuant", m), final("MASQuant split", m)];
    assert(s >= r, `${m}: SmoothQuant ${s} < RTN ${r}`);
    assert(q >= s, `${m}: MASQuant ${q} < SmoothQuant ${s}`);
  }
});

Deno.test("deploy mode with full-rank CMC equals split mode within 0.1 dB", () => {
  for (const m of ["text", "vision"] as const) {
    const d = final("MASQuant deploy, CMC full rank", m);
    const s = final("MASQuant split", m);
    assert(Math.abs(d - s) < 0.1, `${m}: deploy ${d} vs split ${s}`);
  }
});

Deno.test("CMC at rank ratio 0.05 closes most of the gap left without compensation", () => {
  const none = final("MASQuant deploy, no CMC", "vision");
  const split = final("MASQuant split", "vision");
  const low = final("MASQuant deploy, CMC 0.05", "vision");
  const closed = (low - none) / (split - none);
  console.log(
    `vision: no CMC ${none.toFixed(2)} dB, CMC 0.05 ${low.toFixed(2)} dB, split ${split.toFixed(2)} dB: ${
      (100 * closed).toFixed(1)
    }% of the gap closed`,
  );
  assert(split > none + 1, "without CMC deploy mode should lose against split mode on this fixture");
  assert(closed > 0.5, `CMC 0.05 closed only ${(100 * closed).toFixed(1)}% of the gap`);
});

Deno.test("cleanup", async () => {
  for (const p of [...calib, ...evals]) p.dispose();
  model.close();
  await fx.cleanup();
});
