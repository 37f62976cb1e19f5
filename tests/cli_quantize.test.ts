/**
 * `quantize` on bad input: every mistake stops the command with a non-zero exit code and exactly one line on
 * stderr that names the file, key or flag at fault and says what to do, before any work is done and without
 * leaving anything behind (no output directory, no partial files). A NaN weight is refused the same way after
 * the checkpoint scan (its progress lines come first); activations that overflow stop the run at their layer,
 * which then removes its output. Also: `--help` lists every option, and `--overwrite` replaces an existing
 * output. Each case runs `deno run cli/main.ts quantize` as a subprocess.
 */
import { assert, assertEquals } from "@std/assert";
import { USER_ERRORS } from "../cli/main.ts";
import { parseQuantizeArgs } from "../cli/quantize.ts";
import {
  type CliOutcome,
  listFiles,
  pathExists,
  REPO_ROOT,
  runQuantizeCli,
  writeCliCalibration,
  writeCliModel,
} from "./fixtures/cli_setup.ts";
import { tempDir } from "./fixtures/synthetic.ts";

const fx = await tempDir("masquant-cli-quantize-");
const ROOT = fx.dir;
const MODEL = `${ROOT}/llava`;
await writeCliModel(MODEL, { hidden: 64, intermediate: 172, layers: 2 });
const CALIB = await writeCliCalibration(ROOT, 2);
const TEXT_CALIB = await writeCliCalibration(ROOT, 2, { textOnly: true });
const OUT = `${ROOT}/out`;
const FAST = ["--backend", "cpu", "--samples", "2", "--epochs", "1"];

/** Writes a file under the temporary directory; returns its path. */
async function put(name: string, text: string): Promise<string> {
  const path = `${ROOT}/${name}`;
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  await Deno.writeTextFile(path, text);
  return path;
}

/** A JSONL calibration line with one image part. */
function imageLine(image: string, text = "Describe the picture."): string {
  return JSON.stringify({
    messages: [{ role: "user", content: [{ type: "image", image }, { type: "text", text }] }],
  });
}

/**
 * Runs quantize with `args` and checks the refusal: exit code ≠ 0, nothing on stdout, one line on stderr
 * ("error: …") mentioning every string of `mentions`, and no file created or removed anywhere under the
 * temporary directory (so no output directory and no partial files). Returns the error line.
 */
async function expectRefusal(args: string[], mentions: string[]): Promise<string> {
  const before = await listFiles(ROOT);
  const r: CliOutcome = await runQuantizeCli(args);
  assert(r.code !== 0, `expected a refusal, got exit code 0:\n${r.stderr}`);
  assertEquals(r.stdout, "", "nothing is printed on stdout");
  const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
  assertEquals(lines.length, 1, `expected one line on stderr (no progress, no stack trace), got:\n${r.stderr}`);
  const line = lines[0];
  assert(line.startsWith("error: "), line);
  assert(!/\n\s+at /.test(r.stderr), `a stack trace was printed:\n${r.stderr}`);
  for (const m of mentions) assert(line.includes(m), `the error should mention ${JSON.stringify(m)}: ${line}`);
  assertEquals(await listFiles(ROOT), before, "the refused run changed files");
  return line;
}

const base = (extra: string[] = []) => ["--model", MODEL, "--calib", CALIB, "--out", OUT, ...FAST, ...extra];

Deno.test("quantize refuses an unknown recipe key, naming the file and the key path", async () => {
  const recipe = await put(
    "recipes/unknown-key.yaml",
    "quant_stage:\n  quant_modifiers:\n    MASQuantModifier:\n      scheme: W4A8\n      epochz: 2\n",
  );
  const line = await expectRefusal(base(["--recipe", recipe]), [
    recipe,
    "quant_stage.quant_modifiers.MASQuantModifier.epochz",
    "allowed",
    "epochs",
  ]);
  assert(!(await pathExists(OUT)), line);
});

Deno.test("quantize refuses a recipe value of the wrong type, naming the key and the expected type", async () => {
  const recipe = await put(
    "recipes/wrong-type.yaml",
    "quant_stage:\n  quant_modifiers:\n    MASQuantModifier:\n      epochs: two\n",
  );
  await expectRefusal(base(["--recipe", recipe]), [
    recipe,
    "quant_stage.quant_modifiers.MASQuantModifier.epochs",
    "non-negative integer",
    '"two"',
  ]);
  const cmc = await put(
    "recipes/wrong-type-cmc.yaml",
    "quant_stage:\n  quant_modifiers:\n    MASQuantModifier:\n      cmc: {whiten: maybe}\n",
  );
  await expectRefusal(base(["--recipe", cmc]), [cmc, "cmc.whiten", "true or false"]);
});

Deno.test("quantize refuses invalid YAML, naming the file", async () => {
  const recipe = await put("recipes/broken.yaml", "quant_stage:\n  quant_modifiers: [MASQuantModifier\n");
  await expectRefusal(base(["--recipe", recipe]), [recipe, "not valid YAML"]);
  await expectRefusal(base(["--recipe", `${ROOT}/recipes/absent.yaml`]), [`${ROOT}/recipes/absent.yaml`, "not found"]);
});

Deno.test("quantize refuses an existing output directory unless --overwrite or --resume is given", async () => {
  const out = `${ROOT}/existing`;
  await put("existing/notes.txt", "someone's file");
  await expectRefusal(["--model", MODEL, "--calib", CALIB, "--out", out, ...FAST], [out, "--overwrite", "--resume"]);
  assertEquals(await Deno.readTextFile(`${out}/notes.txt`), "someone's file");
  const file = await put("a-file", "not a directory");
  await expectRefusal(["--model", MODEL, "--calib", CALIB, "--out", file, ...FAST], [file, "not a directory"]);
  // Replacing the output must never delete the model (or the calibration set) it is made from.
  await expectRefusal(["--model", MODEL, "--calib", CALIB, "--out", MODEL, "--overwrite", ...FAST], [
    MODEL,
    "model directory",
  ]);
  await expectRefusal(["--model", MODEL, "--calib", CALIB, "--out", ROOT, "--overwrite", ...FAST], [ROOT]);
});

Deno.test("quantize refuses a model directory without weights, a missing one and an unknown architecture", async () => {
  const config = await Deno.readTextFile(`${MODEL}/config.json`);
  const bare = `${ROOT}/config-only`;
  await put("config-only/config.json", config);
  await expectRefusal(["--model", bare, "--calib", CALIB, "--out", OUT, ...FAST], [bare, "no weights", "safetensors"]);

  const missing = `${ROOT}/no-such-model`;
  await expectRefusal(["--model", missing, "--calib", CALIB, "--out", OUT, ...FAST], [missing, "does not exist"]);

  const foreign = JSON.parse(config);
  foreign.architectures = ["MysteryForCausalLM"];
  foreign.model_type = "mystery";
  const cfg = await put("mystery/config.json", JSON.stringify(foreign));
  await expectRefusal(["--model", `${ROOT}/mystery`, "--calib", CALIB, "--out", OUT, ...FAST], [
    cfg,
    "MysteryForCausalLM",
    "--plugin",
  ]);
});

Deno.test("quantize refuses a calibration set that lacks a modality the recipe needs", async () => {
  const recipe = await put(
    "recipes/vision.yaml",
    "quant_stage:\n  quant_modifiers:\n    MASQuantModifier:\n      modalities: [text, vision]\n",
  );
  await expectRefusal(["--model", MODEL, "--calib", TEXT_CALIB, "--out", OUT, "--recipe", recipe, ...FAST], [
    TEXT_CALIB,
    recipe,
    "vision",
    "add vision samples",
  ]);
  const audio = await put(
    "recipes/audio.yaml",
    "quant_stage:\n  quant_modifiers:\n    MASQuantModifier:\n      modalities: [text, audio]\n",
  );
  await expectRefusal(["--model", MODEL, "--calib", CALIB, "--out", OUT, "--recipe", audio, ...FAST], [
    audio,
    "audio",
    "llava",
  ]);
});

Deno.test("quantize refuses a malformed JSONL line and a missing image, naming file and line", async () => {
  const good = imageLine("images/photo-0.png");
  const bad = await put("bad-line.jsonl", `${good}\n{"messages": [{"role": "user", "content": "unterminated}\n`);
  await expectRefusal(["--model", MODEL, "--calib", bad, "--out", OUT, ...FAST], [`${bad}:2:`, "not valid JSON"]);

  const shape = await put("bad-shape.jsonl", `${good}\n{"prompt": "no messages here"}\n`);
  await expectRefusal(["--model", MODEL, "--calib", shape, "--out", OUT, ...FAST], [`${shape}:2:`, '"prompt"']);

  const gone = await put("missing-image.jsonl", `${good}\n\n${imageLine("images/not-there.png")}\n`);
  await expectRefusal(["--model", MODEL, "--calib", gone, "--out", OUT, ...FAST], [
    `${gone}:3:`,
    `${ROOT}/images/not-there.png`,
    "does not exist",
  ]);

  await expectRefusal(["--model", MODEL, "--calib", `${ROOT}/nope.jsonl`, "--out", OUT, ...FAST], [
    `${ROOT}/nope.jsonl`,
    "not found",
  ]);
});

Deno.test("quantize refuses unknown flags and out-of-range flag values, naming the flag", async () => {
  await expectRefusal(base(["--bogus"]), ["--bogus", "--help"]);
  await expectRefusal(base(["--alpha", "1.5"]), ["--alpha", "[0, 1]", '"1.5"']);
  await expectRefusal(base(["--samples", "0"]), ["--samples", "positive integer", '"0"']);
  await expectRefusal(base(["--epochs=-1"]), ["--epochs", "non-negative integer", '"-1"']);
  // A value starting with "-" after a space reads as a flag: the message says how to pass it.
  await expectRefusal(base(["--epochs", "-1"]), ["--epochs", "--epochs=VALUE"]);
  await expectRefusal(base(["--bits", "w3a3"]), ["--bits", "w4a8", '"w3a3"']);
  await expectRefusal(base(["--backend", "tpu"]), ["--backend", "cpu", '"tpu"']);
  await expectRefusal(base(["--cmc-rank", "1.5"]), ["--cmc-rank", '"1.5"']);
  await expectRefusal(base(["--loss-weights", "text=1,smell=2"]), ["--loss-weights", "text=1,vision=0.5"]);
  await expectRefusal(base(["--resume", "--overwrite"]), ["--resume", "--overwrite"]);
  await expectRefusal(["--calib", CALIB, "--out", OUT, ...FAST], ["--model"]);
});

/** Every option of the command, as documented in README.md and the recipes. */
const OPTIONS = [
  "--model",
  "--recipe",
  "--calib",
  "--out",
  "--resume",
  "--overwrite",
  "--backend",
  "--plugin",
  "--method",
  "--bits",
  "--group-size",
  "--alpha",
  "--epochs",
  "--lr",
  "--loss-weights",
  "--chain",
  "--cmc-rank",
  "--whiten",
  "--no-whiten",
  "--cmc-target",
  "--samples",
  "--seed",
  "--max-seq-len",
  "--help",
];

Deno.test("quantize --help prints every option, and every option it prints is accepted", async () => {
  const r = await runQuantizeCli(["--help"]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(r.stderr, "");
  for (const o of OPTIONS) {
    assert(new RegExp(`(^|[\\s,])${o}(?![\\w-])`, "m").test(r.stdout), `--help does not mention ${o}`);
  }
  const printed = new Set([...r.stdout.matchAll(/(?<![\w-])--[a-z][a-z-]*/g)].map((m) => m[0]));
  for (const o of printed) {
    for (const argv of [[o], [o, "1"]]) {
      try {
        await parseQuantizeArgs(argv);
      } catch (e) {
        assert(!/unknown option/i.test((e as Error).message), `--help mentions ${o}, which the parser rejects`);
      }
    }
  }
  assert(printed.size >= OPTIONS.length, `only ${[...printed].join(" ")}`);
});

Deno.test("quantize --overwrite replaces an existing output", async () => {
  const out = `${ROOT}/replaced`;
  await put("replaced/stale.txt", "from an earlier run");
  await put("replaced/model-00001-of-00002.safetensors", "an old shard");
  await put("replaced/.partial/layer-00000.safetensors", "an old checkpoint");
  const r = await runQuantizeCli(["--model", MODEL, "--calib", CALIB, "--out", out, "--overwrite", ...FAST]);
  assertEquals(r.code, 0, r.stderr);
  const files = await listFiles(out);
  for (const stale of ["stale.txt", "model-00001-of-00002.safetensors", ".partial/layer-00000.safetensors"]) {
    assert(!files.includes(stale), `${stale} survived --overwrite`);
  }
  for (const f of ["config.json", "model.safetensors", "masquant.safetensors", "masquant_config.json", "run.json"]) {
    assert(files.includes(f), `${f} is missing from ${files.join(", ")}`);
  }
  const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
  assertEquals(config.quantization_config.quant_method, "compressed-tensors");
  const run = JSON.parse(await Deno.readTextFile(`${out}/run.json`));
  assertEquals(run.timings.layers.length, 2);
});

/** The header of a safetensors file and where its data starts. */
function safetensorsHeader(
  bytes: Uint8Array,
): { header: Record<string, { dtype: string; data_offsets: [number, number] }>; dataStart: number } {
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  return { header, dataStart: 8 + headerLength };
}

/** Sets the first element, or all, of an F32 tensor of a safetensors file to `value`, in place; returns its name. */
async function overwrite(file: string, tensor: RegExp, value: number, all: boolean): Promise<string> {
  const bytes = await Deno.readFile(file);
  const { header, dataStart } = safetensorsHeader(bytes);
  const name = Object.keys(header).find((k) => tensor.test(k));
  assert(name, `no tensor matching ${tensor} in ${file}`);
  const { dtype, data_offsets: [from, to] } = header[name];
  assertEquals(dtype, "F32", "the fixture writes float32");
  const view = new DataView(bytes.buffer, dataStart + from, all ? to - from : 4);
  for (let at = 0; at < view.byteLength; at += 4) view.setFloat32(at, value, true);
  await Deno.writeFile(file, bytes);
  return name;
}

/**
 * Runs quantize on a fresh model whose tensor matching `tensor` is overwritten with `value`; checks the run
 * fails with one error line mentioning each of `mentions(tensor name, file)` and leaves no file behind.
 * Returns the error line.
 */
async function expectNonFiniteStop(
  what: string,
  tensor: RegExp,
  value: number,
  all: boolean,
  mentions: (name: string, file: string) => string[],
): Promise<string> {
  const model = `${ROOT}/${what}-model`;
  await writeCliModel(model, { hidden: 64, intermediate: 172, layers: 2 });
  const file = (await listFiles(model)).find((f) => f.endsWith(".safetensors"));
  assert(file);
  const name = await overwrite(`${model}/${file}`, tensor, value, all);
  const before = await listFiles(ROOT);
  const out = `${ROOT}/${what}-out`;
  const r = await runQuantizeCli(["--model", model, "--calib", CALIB, "--out", out, ...FAST]);
  assertEquals(r.code, 1, r.stderr);
  assert(!/\n\s+at /.test(r.stderr), `a stack trace was printed:\n${r.stderr}`);
  const errors = r.stderr.split("\n").filter((l) => l.startsWith("error: "));
  assertEquals(errors.length, 1, r.stderr);
  for (const m of mentions(name, `${model}/${file}`)) {
    assert(errors[0].includes(m), `the error should mention ${m}: ${errors[0]}`);
  }
  assert(!(await pathExists(out)), "the output directory was left behind");
  assertEquals(await listFiles(ROOT), before, "the failed run left files behind");
  await Deno.remove(model, { recursive: true });
  return errors[0];
}

Deno.test("quantize refuses a checkpoint with a NaN weight before any work, naming the file and the tensor", async () => {
  const line = await expectNonFiniteStop(
    "nan",
    /layers\.1\.mlp\.down_proj\.weight$/,
    NaN,
    false,
    (name, file) => [file, name, "NaN"],
  );
  assert(line.includes("download or convert it again"), line);
  assert(!line.includes("nothing was left"), "the refusal comes before the run creates its output");
});

Deno.test("quantize stops when finite weights overflow the activations, and removes the output it started", async () => {
  // Every element of layer 1's input norm at 3e38: the normed activations overflow float32 to infinity,
  // which only the statistics of layer 1 can see, after layer 0 was written.
  await expectNonFiniteStop(
    "overflow",
    /layers\.1\.input_layernorm\.weight$/,
    3e38,
    true,
    () => ["layer 1", "NaN or infinite", "nothing was left in"],
  );
});

/** Errors that only a bug can raise: the command line keeps their stack trace. */
const INTERNAL_ERRORS = new Set([
  "TensorOpError",
  "LinalgError",
  "NotPositiveDefiniteError",
  "WasmAsmError",
  "FftSizeError",
]);

Deno.test("every error class of the tool is either reported as one line or deliberately kept as a bug", async () => {
  const names = new Set<string>();
  for (const dir of ["core", "kernels", "plugins", "cli"]) {
    for (const f of await listFiles(`${REPO_ROOT}${dir}`)) {
      if (!f.endsWith(".ts")) continue;
      const text = await Deno.readTextFile(`${REPO_ROOT}${dir}/${f}`);
      for (const m of text.matchAll(/this\.name = "(\w+)"/g)) names.add(m[1]);
    }
  }
  assert(names.size > 20, `found only ${[...names].join(", ")}`);
  const unclassified = [...names].filter((n) => !USER_ERRORS.has(n) && !INTERNAL_ERRORS.has(n));
  assertEquals(unclassified, [], "error classes the command line would report with a stack trace");
  for (const n of INTERNAL_ERRORS) assert(!USER_ERRORS.has(n), n);
});

Deno.test("cleanup", async () => {
  await fx.cleanup();
});
