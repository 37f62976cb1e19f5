/**
 * `deno task eval` end to end on a tiny LLaVA fixture (hidden 64, 2 layers, 112-pixel images → 64 image
 * tokens) quantized here with MASQuant (1 epoch), SmoothQuant (folded into the norms) and RTN at W4A8 from a
 * JSONL set of generated PNG photos:
 *
 * - report.json: one SQNR array of layers + 1 finite values per modality present, for each output;
 * - the deploy-mode SQNR, KL and final error measured through the reloaded outputs (stored integer codes)
 *   equal `compareVariants` run on the in-memory states the quantization returned (1e-6 relative);
 * - perplexity equals a float64 recomputation from each model's logits (1e-9 relative);
 * - the activation profile equals per-channel max |x| taken directly from the captured layer inputs, and
 *   shows the fixture's planted outlier channels (text 3, 17; vision 9, 41);
 * - report.html: one <svg> per plot, self-contained; every bad input stops with one sentence.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import type { Buffer } from "node:buffer";
import { PNG } from "pngjs";
import {
  CalibrationSetError,
  compareVariants,
  CpuBackend,
  keep,
  loadCalibrationSet,
  MODALITIES,
  type Modality,
  type MultimodalModel,
  openModel,
  type PreparedInput,
  QuantizedModel,
  Rng,
  type Tensor,
} from "@masquant/core";
import { evalCommand, type EvalResult, parseEvalArgs, tokenizePrefix } from "../cli/eval.ts";
import { markdownReport } from "../cli/report.ts";
import type { EvalReport } from "../cli/report.ts";
import { quantizeCommand, type QuantizeResult, UsageError } from "../cli/quantize.ts";
import { RECIPE_DEFAULTS } from "../cli/recipe.ts";
import { Progress } from "../cli/progress.ts";
import { registerBuiltinPlugins } from "../cli/plugins.ts";
import { runCli } from "../cli/main.ts";
import { tempDir, writeLlavaFixture } from "./fixtures/synthetic.ts";
import { syntheticImage } from "./fixtures/samples.ts";
import { sharedTest } from "./shared_data.ts";

const be = new CpuBackend();
const progress = new Progress(be, { tty: false });
const fx = await tempDir("masquant-eval-");
const MODEL = `${fx.dir}/model`;
const LAYERS = 2;
registerBuiltinPlugins();
await writeLlavaFixture(MODEL, {
  seed: 3,
  text: { hidden: 64, intermediate: 172, layers: LAYERS, heads: 4, kvHeads: 4 },
  vision: { imageSize: 112 },
});

/** Writes an RGB image as an 8-bit RGBA PNG with pngjs. */
async function writePng(path: string, w: number, h: number, rng: Rng): Promise<void> {
  const img = syntheticImage(rng, w, h);
  const png = new PNG({ width: w, height: h });
  const rgba = png.data!;
  for (let p = 0; p < w * h; p++) {
    for (let c = 0; c < 3; c++) rgba[p * 4 + c] = img.data[p * 3 + c];
    rgba[p * 4 + 3] = 255;
  }
  const bytes = (PNG as unknown as { sync: { write(p: unknown): Buffer } }).sync.write(png);
  await Deno.writeFile(path, new Uint8Array(bytes));
}

function chatLine(image: string | undefined, text: string): string {
  const content = image ? [{ type: "image", image }, { type: "text", text }] : [{ type: "text", text }];
  return JSON.stringify({ messages: [{ role: "user", content }] });
}

const rng = new Rng(17);
await Deno.mkdir(`${fx.dir}/photos`);
for (let i = 0; i < 5; i++) await writePng(`${fx.dir}/photos/p${i}.png`, 120 + 17 * i, 96 + 9 * i, rng);
const CALIB = `${fx.dir}/calib.jsonl`;
await Deno.writeTextFile(
  CALIB,
  [
    chatLine("photos/p0.png", "Describe the picture."),
    chatLine("photos/p1.png", "What colours dominate this image?"),
    chatLine("photos/p2.png", "Give the scene a short title."),
  ].join("\n") + "\n",
);
const EVAL_SET = `${fx.dir}/eval.jsonl`;
await Deno.writeTextFile(
  EVAL_SET,
  [
    chatLine("photos/p3.png", "What stands out in this photo?"),
    chatLine(undefined, "Tell me a short story about a lighthouse keeper and a storm."),
    chatLine("photos/p4.png", "Where could this have been taken?"),
  ].join("\n") + "\n",
);
const TEXT = `${fx.dir}/story.txt`;
const STORY = [
  "Once upon a time a small robot lived in a lighthouse by the sea.",
  "Every night it counted the ships that passed, and every morning it wrote their names in a book.",
  "One winter the storms grew so strong that no ship came for a month.",
  "The robot began to write stories instead, about the ships it had seen and the ones it imagined.",
];
// Long enough (about 1 000 tokens, many lines) that only a prefix of it is tokenized for 3 × 24 tokens.
await Deno.writeTextFile(TEXT, Array.from({ length: 40 }, (_, i) => ` ${STORY[i % 4]} (${i})`).join("\n") + "\n");

async function quantizeFixture(method: "masquant" | "smoothquant" | "rtn"): Promise<QuantizeResult> {
  return await quantizeCommand({
    model: MODEL,
    calib: CALIB,
    out: `${fx.dir}/out-${method}`,
    resume: false,
    overwrite: false,
    backend: "cpu",
    plugins: [],
    recipe: { ...structuredClone(RECIPE_DEFAULTS), method, schemeName: "w4a8", epochs: 1 },
    help: false,
  }, { backend: be, progress });
}

const quantized = {
  masquant: await quantizeFixture("masquant"),
  smoothquant: await quantizeFixture("smoothquant"),
  rtn: await quantizeFixture("rtn"),
};
const OUTPUTS = [quantized.masquant, quantized.smoothquant, quantized.rtn];
const SEQ = 24;
const CHUNKS = 3;
const run: EvalResult = await evalCommand(
  parseEvalArgs([
    "--model",
    MODEL,
    "--quantized",
    quantized.masquant.out,
    "--quantized",
    quantized.smoothquant.out,
    "--quantized",
    quantized.rtn.out,
    "--calib",
    EVAL_SET,
    "--text",
    TEXT,
    "--max-seq-len",
    String(SEQ),
    "--samples",
    String(CHUNKS),
    "--report",
    `${fx.dir}/report`,
  ]),
  { backend: be, progress },
);
const report: EvalReport = JSON.parse(await Deno.readTextFile(`${fx.dir}/report/report.json`));

/** Prepared samples of the evaluation set, opened with the float model (caller disposes). */
async function prepareEvalSet(model: MultimodalModel): Promise<PreparedInput[]> {
  const out: PreparedInput[] = [];
  for (const s of await loadCalibrationSet(EVAL_SET, { tokenizer: model.tokenizer })) out.push(await model.prepare(s));
  return out;
}

function relClose(a: number, b: number, rel: number): boolean {
  return Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b), 1e-30);
}

Deno.test("report.json: labels from masquant_config.json; one finite SQNR per layer and per modality present", () => {
  assertEquals(report.quantized.map((q) => q.label), ["masquant w4a8", "smoothquant w4a8", "rtn w4a8"]);
  assertEquals(report.mode, "deploy");
  const c = report.calibration!;
  assertEquals(c.samples, 3);
  assertEquals(c.layers, LAYERS);
  assertEquals(c.modalities, ["text", "vision"]);
  assertEquals(c.tokens.vision, 2 * 64);
  assertEquals(c.tokens.audio, 0);
  assertEquals(c.variants.length, 3);
  for (const v of c.variants) {
    assertEquals(Object.keys(v.sqnr).sort(), ["text", "vision"]);
    for (const m of ["text", "vision"] as const) {
      assertEquals(v.sqnr[m]!.length, LAYERS + 1);
      for (const x of v.sqnr[m]!) assert(typeof x === "number" && Number.isFinite(x) && x > 5, `${v.label} ${m}: ${x}`);
    }
    assert(Number.isFinite(v.mean_kl) && v.mean_kl > 0, `KL ${v.mean_kl}`);
    assert(v.final_rel_error > 0 && v.final_rel_error < 1, `final error ${v.final_rel_error}`);
    assert(v.text_nll !== null && Number.isFinite(v.text_nll));
  }
  // MASQuant with CMC against RTN on a fixture built with modality-specific outliers.
  const last = (label: string, m: Modality) => c.variants.find((v) => v.label === label)!.sqnr[m]![LAYERS]!;
  assert(last("masquant w4a8", "vision") > last("rtn w4a8", "vision"));
  assert(last("masquant w4a8", "text") > last("rtn w4a8", "text"));
  assertEquals(run.report.calibration!.variants[0].sqnr.text, c.variants[0].sqnr.text);
});

Deno.test("deploy SQNR, KL and final error through the reloaded outputs equal compareVariants on in-memory states", async () => {
  const model = await openModel(MODEL, { backend: be });
  const samples = await prepareEvalSet(model);
  try {
    const ref = await compareVariants(model, samples, [
      { label: "masquant", mode: "deploy", states: quantized.masquant.states },
      { label: "smoothquant (folded)", mode: "deploy", states: quantized.smoothquant.states },
      { label: "rtn", mode: "deploy", states: quantized.rtn.states },
    ], { logits: true });
    const c = report.calibration!;
    for (let v = 0; v < 3; v++) {
      for (const m of ["text", "vision"] as const) {
        for (let l = 0; l <= LAYERS; l++) {
          const got = c.variants[v].sqnr[m]![l]!;
          const want = ref[v].sqnr[m][l];
          assert(relClose(got, want, 1e-6), `${ref[v].label} ${m} layer ${l}: ${got} vs ${want}`);
        }
      }
      assert(relClose(c.variants[v].mean_kl, ref[v].meanKl!, 1e-6), `KL ${c.variants[v].mean_kl} vs ${ref[v].meanKl}`);
      assert(relClose(c.variants[v].final_rel_error, ref[v].finalRelError, 1e-6));
      assert(
        relClose(c.variants[v].text_nll!, ref[v].meanNll!, 1e-6),
        `NLL ${c.variants[v].text_nll} vs ${ref[v].meanNll}`,
      );
      assert(Number.isNaN(ref[v].sqnr.audio[0]) && c.variants[v].sqnr.audio === undefined);
    }
  } finally {
    for (const s of samples) s.dispose();
    model.close();
  }
});

/** Mean next-token NLL of token chunks from a model's logits, with a float64 log-sum-exp. */
async function referenceNll(model: MultimodalModel, chunks: number[][]): Promise<number> {
  let sum = 0;
  let n = 0;
  for (const ids of chunks) {
    const t = await model.logits(ids);
    const a = await t.read() as Float32Array;
    t.dispose();
    const V = a.length / ids.length;
    for (let i = 0; i + 1 < ids.length; i++) {
      let max = -Infinity;
      for (let k = 0; k < V; k++) max = Math.max(max, a[i * V + k]);
      let s = 0;
      for (let k = 0; k < V; k++) s += Math.exp(a[i * V + k] - max);
      sum += max + Math.log(s) - a[i * V + ids[i + 1]];
      n++;
    }
  }
  return sum / n;
}

Deno.test("perplexity: exp of the mean NLL over non-overlapping chunks, recomputed in float64", async () => {
  const model = await openModel(MODEL, { backend: be });
  try {
    const text = await Deno.readTextFile(TEXT);
    const ids = model.tokenizer!.encode(text);
    assert(ids.length >= CHUNKS * SEQ, "the text must fill the chunks");
    // Tokenizing a prefix gives the first tokens of the whole text.
    for (const n of [5, CHUNKS * SEQ, 400, ids.length + 10]) {
      assertEquals(tokenizePrefix(model.tokenizer!, text, n), ids.slice(0, n), `first ${n} tokens`);
    }
    const chunks = Array.from({ length: CHUNKS }, (_, k) => ids.slice(k * SEQ, (k + 1) * SEQ));
    const p = report.perplexity!;
    assertEquals([p.chunks, p.seq_len, p.tokens], [CHUNKS, SEQ, CHUNKS * (SEQ - 1)]);
    const f = await referenceNll(model, chunks);
    assert(relClose(p.float.mean_nll, f, 1e-9), `float NLL ${p.float.mean_nll} vs ${f}`);
    assert(relClose(p.float.perplexity, Math.exp(f), 1e-9));
    for (const [k, { out }] of OUTPUTS.entries()) {
      const q = await QuantizedModel.open(out, be);
      try {
        const want = await referenceNll(q, chunks);
        assert(relClose(p.variants[k].mean_nll, want, 1e-9), `${out}: ${p.variants[k].mean_nll} vs ${want}`);
        assert(relClose(p.variants[k].perplexity, Math.exp(want), 1e-9));
      } finally {
        q.close();
      }
    }
  } finally {
    model.close();
  }
});

Deno.test("activation profile: per-channel max |x| by modality equals the captured inputs; planted outliers show", async () => {
  const a = report.activations!;
  assertEquals(a.layer, Math.floor(LAYERS / 2));
  const model = await openModel(MODEL, { backend: be });
  const samples = await prepareEvalSet(model);
  const H = model.shape.hidden;
  const want = {
    q: { text: new Float64Array(H), vision: new Float64Array(H) },
    gate: {} as Record<string, Float64Array>,
  };
  want.gate = { text: new Float64Array(H), vision: new Float64Array(H) };
  try {
    for (const s of samples) {
      let x = s.hidden.retain();
      for (let l = 0; l <= a.layer; l++) {
        const w = await model.loadLayer(l);
        const captured = new Map<string, Tensor>();
        const y = model.forwardLayer(w, x, s.ctx, (name, input, lin) => {
          if (l === a.layer && (name === "q" || name === "gate")) captured.set(name, keep(input));
          return be.matmul(input, lin.w, { transB: true });
        });
        for (const t of [w.inputNorm, w.postNorm, ...Object.values(w.linears).flatMap((li) => [li.w, li.b])]) {
          t?.dispose();
        }
        x.dispose();
        x = y;
        for (const [name, t] of captured) {
          const v = await t.read() as Float32Array;
          t.dispose();
          const acc = want[name as "q" | "gate"] as Record<string, Float64Array>;
          for (let tok = 0; tok < s.modality.length; tok++) {
            const row = acc[MODALITIES[s.modality[tok]]];
            for (let c = 0; c < H; c++) row[c] = Math.max(row[c], Math.abs(v[tok * H + c]));
          }
        }
      }
      x.dispose();
    }
  } finally {
    for (const s of samples) s.dispose();
    model.close();
  }
  for (const [group, name] of [["qkv", "q"], ["gate_up", "gate"]] as const) {
    for (const m of ["text", "vision"] as const) {
      const got = a[group][m]!;
      assertEquals(got.length, H);
      const ref = (want[name] as Record<string, Float64Array>)[m];
      for (let c = 0; c < H; c++) {
        assert(relClose(got[c], ref[c], 1e-6), `${group} ${m} channel ${c}: ${got[c]} vs ${ref[c]}`);
      }
    }
    const top2 = (v: number[]) =>
      v.map((x, i) => [x, i]).sort((p, q) => q[0] - p[0]).slice(0, 2).map((p) => p[1]).sort();
    // writeLlavaFixture plants text outliers on channels 3 and 17 and vision outliers on 9 and 41.
    assertEquals(top2(a[group].text!), [17, 3].sort());
    assertEquals(top2(a[group].vision!), [41, 9].sort());
  }
});

Deno.test("report.html: self-contained, one <svg> per plot with its title; markdown tables list every output", async () => {
  const html = await Deno.readTextFile(`${fx.dir}/report/report.html`);
  assert(html.startsWith("<!DOCTYPE html>"));
  const svgs = html.match(/<svg\b/g) ?? [];
  assertEquals(svgs.length, 2 + 2, "two SQNR panels (text, vision) and two activation panels (q/k/v, gate/up)");
  for (
    const title of [
      "Text tokens: SQNR per decoder layer",
      "Vision tokens: SQNR per decoder layer",
      "Layer 1, q/k/v input: per-channel max |x| by modality",
      "Layer 1, gate/up input: per-channel max |x| by modality",
    ]
  ) assert(html.includes(title), `missing plot title: ${title}`);
  assert(!/https?:\/\//i.test(html), "no URL may appear in the page");
  assert(!/\b(src|href)\s*=|<script|<link|@import|url\(/i.test(html), "no external resource or script");
  assert((html.match(/<polyline/g) ?? []).length >= 2 * 3 + 2 * 2, "a line per method and per modality");
  const md = markdownReport(report);
  for (const s of ["| masquant w4a8 |", "| smoothquant w4a8 |", "| rtn w4a8 |", "| float |", "## SQNR per layer"]) {
    assert(md.includes(s), `markdown lacks ${s}`);
  }
});

Deno.test("bad input: one clear sentence each", async () => {
  const q = quantized.rtn.out;
  const ev = (argv: string[]) => evalCommand(parseEvalArgs(argv), { backend: be, progress });
  await assertRejects(() => ev(["--quantized", q, "--calib", EVAL_SET]), UsageError, "--model DIR is required");
  await assertRejects(() => ev(["--model", MODEL, "--calib", EVAL_SET]), UsageError, "--quantized DIR is required");
  await assertRejects(() => ev(["--model", MODEL, "--quantized", q]), UsageError, "nothing to evaluate on");
  await assertRejects(
    () => ev(["--model", `${fx.dir}/nope`, "--quantized", q, "--calib", EVAL_SET]),
    UsageError,
    `--model ${fx.dir}/nope: directory not found`,
  );
  await assertRejects(
    () => ev(["--model", MODEL, "--quantized", `${fx.dir}/photos`, "--calib", EVAL_SET]),
    UsageError,
    "config.json is missing",
  );
  await assertRejects(
    () => ev(["--model", MODEL, "--quantized", MODEL, "--calib", EVAL_SET]),
    UsageError,
    "not a masquant output",
  );
  await assertRejects(
    () => ev(["--model", q, "--quantized", q, "--calib", EVAL_SET]),
    UsageError,
    "is a quantized masquant output; pass the float checkpoint",
  );
  // A quantized output of another architecture.
  const other = `${fx.dir}/other-arch`;
  await Deno.mkdir(other);
  await Deno.copyFile(`${q}/masquant_config.json`, `${other}/masquant_config.json`);
  await Deno.writeTextFile(
    `${other}/config.json`,
    JSON.stringify({ architectures: ["Qwen2_5_VLForConditionalGeneration"], model_type: "qwen2_5_vl" }),
  );
  const e = await assertRejects(
    () => ev(["--model", MODEL, "--quantized", other, "--calib", EVAL_SET]),
    UsageError,
    "describes Qwen2_5_VLForConditionalGeneration (qwen2_5_vl), but the float model",
  );
  assert(e.message.includes("pass the checkpoint it was quantized from") && !e.message.includes("\n"));
  // Same architecture, other decoder depth.
  const deeper = `${fx.dir}/deeper`;
  await Deno.mkdir(deeper);
  for await (const f of Deno.readDir(q)) if (f.isFile) await Deno.copyFile(`${q}/${f.name}`, `${deeper}/${f.name}`);
  const cfg = JSON.parse(await Deno.readTextFile(`${deeper}/config.json`));
  cfg.text_config.num_hidden_layers = LAYERS + 1;
  await Deno.writeTextFile(`${deeper}/config.json`, JSON.stringify(cfg));
  await assertRejects(
    () => ev(["--model", MODEL, "--quantized", deeper, "--calib", EVAL_SET]),
    UsageError,
    `has ${LAYERS + 1} decoder layers of width 64`,
  );
  await assertRejects(
    () => ev(["--model", MODEL, "--quantized", q, "--calib", EVAL_SET, "--layer", "2"]),
    UsageError,
    "--layer 2 is out of range",
  );
  await assertRejects(
    () => ev(["--model", MODEL, "--quantized", q, "--calib", `${fx.dir}/missing.jsonl`]),
    CalibrationSetError,
    "file not found",
  );
  await assertRejects(
    () => ev(["--model", MODEL, "--quantized", q, "--text", `${fx.dir}/missing.txt`]),
    UsageError,
    "file not found",
  );
  await assertRejects(() => ev(["--samples", "0"]), UsageError, "--samples must be an integer ≥ 1");
  await assertRejects(() => ev(["--backend", "tpu"]), UsageError, "--backend must be auto, webgpu or cpu");
  await assertRejects(() => ev(["--bogus"]), UsageError, "see --help");
  // Through the command-line entry point: exit code 2 for usage errors, 0 for --help.
  const log = console.log;
  const err = console.error;
  const lines: string[] = [];
  console.log = (s: string) => lines.push(s);
  console.error = (s: string) => lines.push(s);
  try {
    assertEquals(await runCli("eval", ["--model", MODEL, "--quantized", q]), 2);
    assert(lines.some((l) => l.startsWith("error: nothing to evaluate on")), lines.join("\n"));
    assertEquals(await runCli("eval", ["--help"]), 0);
    assert(lines.some((l) => l.includes("--quantized DIR")));
  } finally {
    console.log = log;
    console.error = err;
  }
});

sharedTest(
  "eval --text wikitext2 reads the WikiText-2 test split",
  "data/text/wikitext-2-raw/wiki.test.raw",
  async () => {
    const res = await evalCommand(
      parseEvalArgs([
        "--model",
        MODEL,
        "--quantized",
        quantized.rtn.out,
        "--text",
        "wikitext2",
        "--samples",
        "2",
        "--max-seq-len",
        "16",
        "--report",
        `${fx.dir}/report-wikitext`,
      ]),
      { backend: be, progress },
    );
    const p = res.report.perplexity!;
    assert(p.file.endsWith("wikitext-2-raw/wiki.test.raw"));
    assertEquals([p.chunks, p.tokens], [2, 30]);
    assert(Number.isFinite(p.float.perplexity) && Number.isFinite(p.variants[0].perplexity));
    assertEquals(res.report.calibration, null);
    assertEquals(res.report.activations, null);
  },
);

Deno.test("cleanup", async () => {
  await fx.cleanup();
});
