/**
 * `quantize` survives being killed: on a 4-layer LLaVA fixture, a run killed with SIGKILL (after its second
 * layer checkpoint, before its first, or while it assembles the output) and continued with `--resume` writes
 * an output whose every file except run.json (timings) is byte-identical to an uninterrupted run's. `--resume`
 * without an interrupted run, or with another recipe, stops with one clear sentence and changes nothing.
 * Every run is a real subprocess of `deno run cli/main.ts quantize`.
 */
import { assert, assertEquals } from "@std/assert";
import {
  type CliOutcome,
  listFiles,
  pathExists,
  quantizeCommandLine,
  REPO_ROOT,
  runQuantizeCli,
  writeCliCalibration,
  writeCliModel,
} from "./fixtures/cli_setup.ts";
import { tempDir } from "./fixtures/synthetic.ts";

const LAYERS = 4;
const fx = await tempDir("masquant-cli-resume-");
const MODEL = `${fx.dir}/llava`;
await writeCliModel(MODEL, { hidden: 64, intermediate: 172, layers: LAYERS });
const CALIB = await writeCliCalibration(fx.dir, 4);
const COMMON = ["--model", MODEL, "--calib", CALIB, "--backend", "cpu", "--samples", "4", "--epochs", "1"];
const REFERENCE = `${fx.dir}/A`;

let reference: Promise<CliOutcome> | undefined;

/** The uninterrupted run into A (run once, shared by the tests). */
function referenceRun(): Promise<CliOutcome> {
  reference ??= runQuantizeCli([...COMMON, "--out", REFERENCE]);
  return reference;
}

/** Layer checkpoints present in an output's partial directory. */
async function layerFiles(out: string): Promise<string[]> {
  if (!(await pathExists(`${out}/.partial`))) return [];
  return (await listFiles(`${out}/.partial`)).filter((f) => /^layer-\d{5}\.safetensors$/.test(f));
}

/** Starts a run into `out` and kills it with SIGKILL as soon as `ready` holds. */
async function runAndKill(out: string, ready: () => Promise<boolean>): Promise<Deno.CommandStatus> {
  const child = new Deno.Command(Deno.execPath(), {
    args: quantizeCommandLine([...COMMON, "--out", out]),
    cwd: REPO_ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let exited = false;
  const status = child.status.finally(() => exited = true);
  while (!exited && !(await ready())) await new Promise((r) => setTimeout(r, 2));
  if (!exited) child.kill("SIGKILL");
  return await status;
}

/** The error of a failed run: exactly one line on stderr, starting with "error:". */
function singleErrorLine(r: CliOutcome): string {
  assert(r.code !== 0, `expected a failure, got exit code 0:\n${r.stderr}`);
  const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
  assertEquals(lines.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
  assert(lines[0].startsWith("error: "), lines[0]);
  return lines[0];
}

/** Resumes `out` and checks that it ends byte-identical to the reference run (run.json aside). */
async function resumeAndCompare(out: string, finishedLayers: number): Promise<void> {
  const r = await runQuantizeCli([...COMMON, "--out", out, "--resume"]);
  assertEquals(r.code, 0, r.stderr);
  assert(
    r.stderr.includes(`resuming at layer ${finishedLayers + 1}/${LAYERS} (replaying ${finishedLayers} finished`),
    r.stderr,
  );
  const want = await listFiles(REFERENCE);
  assertEquals(await listFiles(out), want, "the resumed output holds other files than the reference");
  for (const f of want) {
    if (f === "run.json") continue;
    const [a, b] = [await Deno.readFile(`${REFERENCE}/${f}`), await Deno.readFile(`${out}/${f}`)];
    assertEquals(b.length, a.length, `${f}: size differs`);
    assert(a.every((v, i) => v === b[i]), `${f}: bytes differ from the uninterrupted run`);
  }
  const run = JSON.parse(await Deno.readTextFile(`${out}/run.json`));
  const layers = run.timings.layers.map((l: { layer: number }) => l.layer);
  assertEquals(layers, Array.from({ length: LAYERS }, (_, i) => i), "run.json lists every layer once, in order");
}

Deno.test("quantize: an uninterrupted run completes and leaves no partial state", async () => {
  const r = await referenceRun();
  assertEquals(r.code, 0, r.stderr);
  assert(r.stderr.includes(`wrote ${REFERENCE}`), r.stderr);
  assert(!(await pathExists(`${REFERENCE}/.partial`)), "the partial directory is removed");
  const files = await listFiles(REFERENCE);
  for (const f of ["config.json", "model.safetensors", "masquant.safetensors", "masquant_config.json", "run.json"]) {
    assert(files.includes(f), `${f} is missing from ${files.join(", ")}`);
  }
});

Deno.test("quantize: SIGKILL after the second layer checkpoint, then --resume, gives the same bytes", async () => {
  assertEquals((await referenceRun()).code, 0);
  const out = `${fx.dir}/B`;
  const status = await runAndKill(out, () => pathExists(`${out}/.partial/layer-00001.safetensors`));
  assertEquals(status.signal, "SIGKILL", "the run finished before it could be killed");
  assert(!(await pathExists(`${out}/config.json`)), "a killed run has no finished output");
  const done = await layerFiles(out);
  assert(done.length >= 2 && done.length < LAYERS, `layer checkpoints after the kill: ${done.join(", ")}`);
  const before = await listFiles(out);

  // Another recipe cannot continue this run; the refusal changes nothing.
  const other = await runQuantizeCli([...COMMON, "--epochs", "2", "--out", out, "--resume"]);
  const line = singleErrorLine(other);
  assert(line.includes("recipe differs") && line.includes(out), line);
  assertEquals(await listFiles(out), before);

  await resumeAndCompare(out, done.length);
});

Deno.test("quantize: SIGKILL before the first layer checkpoint, then --resume, gives the same bytes", async () => {
  assertEquals((await referenceRun()).code, 0);
  const out = `${fx.dir}/C`;
  const status = await runAndKill(out, () => pathExists(`${out}/.partial/recipe.json`));
  assertEquals(status.signal, "SIGKILL", "the run finished before it could be killed");
  // Layer 0 (statistics, MAS epoch, CMC) takes far longer than the poll interval.
  assertEquals(await layerFiles(out), [], "the kill landed before any layer was finished");
  await resumeAndCompare(out, 0);
});

Deno.test("quantize: SIGKILL while the output is assembled, then --resume, gives the same bytes", async () => {
  assertEquals((await referenceRun()).code, 0);
  const out = `${fx.dir}/D`;
  // model.safetensors appears once every layer is done; the side file, configs, copies and the reload check
  // follow before the per-layer checkpoints are removed.
  const status = await runAndKill(out, () => pathExists(`${out}/model.safetensors`));
  assertEquals(status.signal, "SIGKILL", "the run finished before it could be killed");
  assertEquals((await layerFiles(out)).length, LAYERS, "every layer checkpoint is still there");
  // A write cut short by a kill leaves its temporary file behind; the resumed run must clear it.
  await Deno.writeTextFile(`${out}/.masquant.safetensors.tmp-4242-k1ll3d`, "half a file");
  await resumeAndCompare(out, LAYERS);
});

Deno.test("quantize: --resume of a run killed before it recorded its recipe starts from layer 1", async () => {
  assertEquals((await referenceRun()).code, 0);
  const out = `${fx.dir}/E`;
  // The state a kill leaves between creating the partial directory and writing recipe.json into it.
  await Deno.mkdir(`${out}/.partial`, { recursive: true });
  await resumeAndCompare(out, 0);
});

Deno.test("quantize: --resume of a finished output is refused with one sentence and changes nothing", async () => {
  assertEquals((await referenceRun()).code, 0);
  const before = await listFiles(REFERENCE);
  const stamp = (await Deno.stat(`${REFERENCE}/model.safetensors`)).mtime?.getTime();
  const line = singleErrorLine(await runQuantizeCli([...COMMON, "--out", REFERENCE, "--resume"]));
  assert(line.includes(REFERENCE) && line.includes("finished output") && line.includes("--overwrite"), line);
  assertEquals(await listFiles(REFERENCE), before);
  assertEquals((await Deno.stat(`${REFERENCE}/model.safetensors`)).mtime?.getTime(), stamp);
});

Deno.test("quantize: --resume of an output that was never started is refused with one sentence", async () => {
  const missing = `${fx.dir}/never-started`;
  const line = singleErrorLine(await runQuantizeCli([...COMMON, "--out", missing, "--resume"]));
  assert(line.includes(missing) && line.includes("does not exist") && line.includes("without --resume"), line);
  assert(!(await pathExists(missing)), "the refused run created its output directory");

  const empty = `${fx.dir}/empty`;
  await Deno.mkdir(empty);
  const line2 = singleErrorLine(await runQuantizeCli([...COMMON, "--out", empty, "--resume"]));
  assert(line2.includes(empty) && line2.includes("no interrupted run"), line2);
  assertEquals(await listFiles(empty), []);
});

Deno.test("cleanup", async () => {
  await fx.cleanup();
});
