/**
 * MASQuant end to end on a synthetic Qwen2.5-Omni thinker (hidden 128, 2 layers; text, vision and audio outlier
 * channels planted on different channels) with real inputs from ../shared/data: read-speech segments, photos and
 * OmniBench-like prompts, calibrated on one set of recordings and photos and evaluated on another (see
 * fixtures/omni_samples.ts). At W4A8, default MAS recipe, CPU backend, on the held-out conversations:
 * - each modality's final-layer SQNR: MASQuant (split) beats both SmoothQuant and RTN by at least 1 dB (the margin
 *   is 1.9 dB or more over fixture seeds 1–5 and 7, at 2 and at 3 layers);
 * - deploy mode (one text-smoothed quantized weight + CMC at rank ratio 0.2 towards the float weight) is within
 *   0.25 dB of split mode or better, and without CMC it loses more than 3 dB on vision and audio;
 * - SmoothQuant ≥ RTN for each modality at W8A8, where activation quantization limits the error.
 *
 * SmoothQuant is not asserted to beat RTN at W4A8. On this model the 4-bit weights dominate the error: RTN with
 * 16-bit activations scores within 0.15 dB of W4A8, and with 16-bit weights about 18 dB higher. One α = 0.5 factor
 * per channel, set by whichever modality has the largest activations there, moves the vision and audio outlier
 * channels into every weight row and raises the 4-bit step for text tokens too. Which of SmoothQuant and RTN wins
 * then depends on the seed: with 3 layers SmoothQuant loses on text for all six seeds (by 0.2–1.7 dB), with 2
 * layers for three of them, and vision and audio flip as well. The seed used here (7) happens to favour
 * SmoothQuant on all three modalities, so an assertion would pass by chance. The paper also reports SmoothQuant
 * below RTN at W4A8 (Qwen2.5-VL-7B, MiniCPM-V text tasks, Omni-3B OmniBench).
 */
import { assert } from "@std/assert";
import { CpuBackend, registerAdapter, SCHEMES } from "@masquant/core";
import { qwen2_5OmniAdapter } from "@masquant/plugin-qwen-omni";
import { sharedTest } from "./shared_data.ts";
import {
  finalSqnr,
  finalSqnrTable,
  OMNI_VARIANTS,
  type OmniExperimentResult,
  omniSampleSets,
  runOmniExperiment,
} from "./fixtures/omni_samples.ts";

registerAdapter(qwen2_5OmniAdapter);

const MODS = ["text", "vision", "audio"] as const;
let result: OmniExperimentResult | undefined;

function experiment(): OmniExperimentResult {
  assert(result, "the W4A8 experiment did not run (see the first test of this file)");
  return result;
}

function sqnr(label: string, m: (typeof MODS)[number], reports = experiment().reports): number {
  const r = reports.find((x) => x.label === label);
  assert(r, `no report labelled "${label}"`);
  return finalSqnr(r, m);
}

sharedTest("W4A8 on the Omni fixture with real speech, photos and prompts: RTN, SmoothQuant, MASQuant", "data", async (
  data,
) => {
  const sets = await omniSampleSets(data);
  result = await runOmniExperiment(new CpuBackend(), sets, {
    seed: 7,
    text: { hidden: 128, intermediate: 344, layers: 2 },
    baselineSchemes: [SCHEMES.w8a8],
  });
  console.log([...sets.summary, `tokens: ${result.tokenSummary}`].join("\n"));
  console.log(finalSqnrTable(result.reports, "W4A8, final-layer SQNR"));
  console.log(finalSqnrTable(result.baselines.w8a8, "W8A8 baselines"));
});

sharedTest("each modality: MASQuant (split) beats SmoothQuant and RTN by at least 1 dB", "data", () => {
  for (const m of MODS) {
    const [r, s, q] = [sqnr(OMNI_VARIANTS.rtn, m), sqnr(OMNI_VARIANTS.sq, m), sqnr(OMNI_VARIANTS.split, m)];
    assert(q >= s + 1, `${m}: MASQuant ${q.toFixed(2)} dB vs SmoothQuant ${s.toFixed(2)} dB`);
    assert(q >= r + 1, `${m}: MASQuant ${q.toFixed(2)} dB vs RTN ${r.toFixed(2)} dB`);
  }
});

sharedTest("deploy mode with CMC (rank ratio 0.2, float target) matches split mode or beats it", "data", () => {
  for (const m of MODS) {
    const d = sqnr(OMNI_VARIANTS.deploy, m);
    const s = sqnr(OMNI_VARIANTS.split, m);
    assert(d >= s - 0.25, `${m}: deploy with CMC ${d.toFixed(2)} dB vs split ${s.toFixed(2)} dB`);
  }
  for (const m of ["vision", "audio"] as const) {
    const none = sqnr(OMNI_VARIANTS.noCmc, m);
    const s = sqnr(OMNI_VARIANTS.split, m);
    assert(s - none > 3, `${m}: without CMC deploy mode scores ${none.toFixed(2)} dB, split ${s.toFixed(2)} dB`);
  }
});

sharedTest("SmoothQuant ≥ RTN for each modality at W8A8", "data", () => {
  const w8 = experiment().baselines.w8a8;
  for (const m of MODS) {
    const r = sqnr(`${OMNI_VARIANTS.rtn} (w8a8)`, m, w8);
    const s = sqnr(`${OMNI_VARIANTS.sq} (w8a8)`, m, w8);
    assert(s >= r, `${m}: SmoothQuant ${s.toFixed(2)} dB < RTN ${r.toFixed(2)} dB at W8A8`);
  }
});
