/**
 * The demo of `deno task quantize` without options: a synthetic LLaVA-architecture model (random weights
 * with modality-specific outlier channels, generated deterministically into `.demo/` on first run) is
 * quantized at W4A8 with RTN, SmoothQuant and MASQuant on the bundled calibration set (four public-domain
 * photos × two prompts), each through the full pipeline (export + reload check), then evaluated on
 * held-out samples (mirrored photos, other prompts): per-modality SQNR of the final hidden states.
 */
import {
  compareVariants,
  type MultimodalModel,
  openModel,
  type PreparedInput,
  readImage,
  type RgbImage,
  type Sample,
} from "@masquant/core";
import { fileURLToPath } from "node:url";
import { openBackend } from "./backend.ts";
import { Progress } from "./progress.ts";
import { type QuantizeArgs, quantizeCommand } from "./quantize.ts";
import { RECIPE_DEFAULTS } from "./recipe.ts";
import { registerBuiltinPlugins } from "./plugins.ts";

const HERE = fileURLToPath(new URL(".", import.meta.url));
const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** Where the demo writes its model and outputs. */
export const DEMO_DIR = `${ROOT}.demo`;
const MODEL_DIR = `${DEMO_DIR}/llava-synthetic`;
const MODEL_VERSION = "2";

/** Generates the synthetic demo model unless an up-to-date copy exists. */
export async function ensureDemoModel(): Promise<string> {
  try {
    if ((await Deno.readTextFile(`${MODEL_DIR}/.demo-version`)).trim() === MODEL_VERSION) return MODEL_DIR;
  } catch {
    // not generated yet
  }
  const { writeLlavaFixture } = await import("../tests/fixtures/synthetic.ts");
  await Deno.remove(MODEL_DIR, { recursive: true }).catch(() => {});
  await writeLlavaFixture(MODEL_DIR, {
    seed: 2026,
    text: { hidden: 128, intermediate: 344, layers: 3, heads: 4, kvHeads: 4 },
    vision: { hidden: 64, intermediate: 128, layers: 3, heads: 2, imageSize: 336 },
  });
  await Deno.writeTextFile(`${MODEL_DIR}/.demo-version`, MODEL_VERSION);
  return MODEL_DIR;
}

function mirrored(img: RgbImage): RgbImage {
  const out = new Uint8Array(img.data.length);
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const s = (y * img.width + x) * 3;
      const d = (y * img.width + (img.width - 1 - x)) * 3;
      out[d] = img.data[s];
      out[d + 1] = img.data[s + 1];
      out[d + 2] = img.data[s + 2];
    }
  }
  return { width: img.width, height: img.height, data: out };
}

/** Held-out evaluation samples: mirrored demo photos with prompts not used for calibration. */
export async function demoEvalSamples(): Promise<Sample[]> {
  const prompts = ["Tell me a story about this image.", "What stands out most in this photo?"];
  const out: Sample[] = [];
  for (const [i, p] of ["astronaut", "chelsea", "coffee", "rocket"].entries()) {
    const img = mirrored(await readImage(`${HERE}demo/photos/${p}.jpg`));
    out.push({
      kind: "chat",
      messages: [{ role: "user", content: [{ type: "image" }, { type: "text", text: prompts[i % 2] }] }],
      media: [{ kind: "image", image: img, source: `${p}.jpg (mirrored)` }],
      addGenerationPrompt: true,
      source: `demo evaluation ${i}`,
    });
  }
  return out;
}

/** Runs the demo and prints the table. */
export async function runDemo(): Promise<void> {
  const t0 = performance.now();
  const { backend, description } = await openBackend("auto");
  const progress = new Progress(backend);
  progress.log("masquant demo — a SYNTHETIC LLaVA-architecture model (random weights, not a trained model)");
  progress.log(`backend: ${description}`);
  registerBuiltinPlugins();
  const modelDir = await ensureDemoModel();
  const states = new Map<string, Awaited<ReturnType<typeof quantizeCommand>>>();
  for (const method of ["rtn", "smoothquant", "masquant"] as const) {
    progress.log(`\n== ${method} W4A8 ==`);
    const recipe = { ...structuredClone(RECIPE_DEFAULTS), method, schemeName: "w4a8" as const, numSamples: 8 };
    const args: QuantizeArgs = {
      model: modelDir,
      calib: `${HERE}demo/calib.jsonl`,
      out: `${DEMO_DIR}/out-${method}`,
      resume: false,
      overwrite: true,
      backend: "auto",
      plugins: [],
      recipe,
      help: false,
    };
    states.set(method, await quantizeCommand(args, { progress, backend }));
  }
  progress.log("\n== evaluation on held-out samples ==");
  const model: MultimodalModel = await openModel(modelDir, { backend });
  const evals: PreparedInput[] = [];
  try {
    for (const s of await demoEvalSamples()) evals.push(await model.prepare(s));
    const reps = await compareVariants(model, evals, [
      { label: "RTN", mode: "deploy", states: states.get("rtn")!.states },
      { label: "SmoothQuant", mode: "deploy", states: states.get("smoothquant")!.states },
      { label: "MASQuant (split: one weight per modality)", mode: "split", states: states.get("masquant")!.states },
      { label: "MASQuant (deploy: one weight + CMC)", mode: "deploy", states: states.get("masquant")!.states },
    ]);
    const last = (a: number[]) => a[a.length - 1];
    console.log("\nW4A8, final hidden states vs the float model (SQNR in dB, higher is better):\n");
    console.log("| method | text | vision |");
    console.log("|---|---|---|");
    for (const r of reps) {
      console.log(`| ${r.label} | ${last(r.sqnr.text).toFixed(2)} | ${last(r.sqnr.vision).toFixed(2)} |`);
    }
    console.log(
      `\noutputs in ${DEMO_DIR}/out-{rtn,smoothquant,masquant}; total ${((performance.now() - t0) / 1e3).toFixed(1)} s`,
    );
  } finally {
    for (const p of evals) p.dispose();
    model.close();
  }
}
