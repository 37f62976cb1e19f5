/**
 * End-to-end W4A8 comparison on a synthetic Qwen2.5-Omni thinker (random weights with text, vision and audio
 * outlier channels on different channels) calibrated and evaluated on real speech, photos and text prompts from
 * ../shared/data: RTN, SmoothQuant and MASQuant (default recipe; split mode, and deploy mode with cross-modal
 * compensation at rank ratio 0.2 towards the float weight), final-layer and per-layer SQNR of each modality on
 * held-out conversations, CPU backend. RTN and SmoothQuant are also run at W8A8 for reference.
 * Run: `deno run -A bench/omni_e2e.ts [--hidden 128] [--intermediate 344] [--layers 3] [--seed 7]`.
 */
import { parseArgs } from "node:util";
import { CpuBackend, MAS_DEFAULTS, registerAdapter, SCHEMES } from "@masquant/core";
import { qwen2_5OmniAdapter } from "@masquant/plugin-qwen-omni";
import { SHARED_DIR, sharedPath } from "../tests/shared_data.ts";
import {
  finalSqnrTable,
  omniSampleSets,
  perLayerSqnrTable,
  runOmniExperiment,
} from "../tests/fixtures/omni_samples.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    hidden: { type: "string", default: "128" },
    intermediate: { type: "string", default: "344" },
    layers: { type: "string", default: "3" },
    seed: { type: "string", default: "7" },
  },
});

if (!sharedPath("data/audio/librivox") || !sharedPath("data/images")) {
  console.log(`skipped: ${SHARED_DIR}data (real speech and photos) is not present`);
  Deno.exit(0);
}
registerAdapter(qwen2_5OmniAdapter);
const t0 = performance.now();
const sets = await omniSampleSets(`${SHARED_DIR}data`);
const text = {
  hidden: Number(values.hidden),
  intermediate: Number(values.intermediate),
  layers: Number(values.layers),
};
const seed = Number(values.seed);
const result = await runOmniExperiment(new CpuBackend(), sets, {
  seed,
  text,
  baselineSchemes: [SCHEMES.w8a8],
  onLog: (line) => console.log(`  ${line}`),
});
const mas = MAS_DEFAULTS;
console.log();
console.log(
  `Synthetic Qwen2.5-Omni thinker (seed ${seed}): decoder hidden ${text.hidden}, intermediate ${text.intermediate}, ` +
    `${text.layers} layers; MAS ${mas.epochs} epochs, lr ${mas.lr}, loss weights text ${mas.lossWeights.text} / ` +
    `vision ${mas.lossWeights.vision} / audio ${mas.lossWeights.audio}; CPU backend.`,
);
for (const line of sets.summary) console.log(`- ${line}`);
console.log(`- tokens: ${result.tokenSummary}`);
console.log();
console.log(finalSqnrTable(result.reports, "W4A8, held-out conversations"));
console.log();
console.log(perLayerSqnrTable(result.reports));
console.log();
console.log(finalSqnrTable(result.baselines.w8a8, "W8A8 baselines, held-out conversations"));
console.log();
console.log(`MAS mean loss per layer (epoch 1 → epoch ${mas.epochs}):`);
result.masLoss.forEach((l, i) => console.log(`- layer ${i}: ${l.map((v) => v.toFixed(4)).join(" → ")}`));
console.log();
console.log("Wall time (2 CPU cores):");
for (const [k, v] of Object.entries(result.seconds)) console.log(`- ${k}: ${v.toFixed(1)} s`);
console.log(`- total, including loading the media: ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
