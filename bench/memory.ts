/**
 * Peak memory of `quantize` against model depth: synthetic LLaVA checkpoints of the same width (text hidden
 * 128, intermediate 344, 4 heads; CLIP tower on 112-pixel images; the real 32064-token vocabulary) with 4
 * and with 32 decoder layers are quantized with MASQuant W4A8 (1 epoch, 4 calibration images, CPU backend),
 * each in its own subprocess. The parent samples the child's resident high-water mark (VmHWM in
 * /proc/<pid>/status) every few milliseconds until it exits; the run's own record (run.json
 * memory.peak_rss_bytes, sampled by the progress display up to the start of the export) is shown beside
 * it. Peak memory should not grow with depth: the table ends with the ratio deep / shallow.
 *
 * Each depth runs `--repeats` times and the median peak is reported (garbage-collector timing moves a
 * single peak by a few percent). `--cli` measures another checkout's `cli/main.ts` (e.g. an older
 * version) on the same inputs; `--hidden`/`--intermediate` change the width. `--malloc-arena-max N` sets
 * glibc's MALLOC_ARENA_MAX for the child: with the default (8 arenas per core) the memory that the
 * worker and I/O threads free stays in their arenas, so the resident size climbs for the first few layers
 * before it levels off, whatever the depth.
 *
 * Run: `deno run -A bench/memory.ts [--layers 4,8,32] [--repeats 3] [--hidden 128] [--intermediate 344]
 * [--malloc-arena-max N] [--cli PATH/cli/main.ts] [--keep DIR]`.
 */
import { parseArgs } from "node:util";
import { CLI_MAIN, REPO_ROOT, writeCliCalibration, writeCliModel } from "../tests/fixtures/cli_setup.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    layers: { type: "string", default: "4,8,32" },
    repeats: { type: "string", default: "3" },
    hidden: { type: "string", default: "128" },
    intermediate: { type: "string", default: "344" },
    cli: { type: "string", default: CLI_MAIN },
    "malloc-arena-max": { type: "string" },
    keep: { type: "string" },
  },
});
const DEPTHS = values.layers.split(",").map(Number);
const REPEATS = Number(values.repeats);
const WIDTH = { hidden: Number(values.hidden), intermediate: Number(values.intermediate) };
const CLI = values.cli;
const ARENAS = values["malloc-arena-max"];

/** Resident high-water mark of a process in bytes, or undefined once it has exited. */
async function highWaterMark(pid: number): Promise<number | undefined> {
  try {
    const text = await Deno.readTextFile(`/proc/${pid}/status`);
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

interface Measurement {
  layers: number;
  hwmBytes: number;
  runRecordBytes: number;
  seconds: number;
}

/** Quantizes one model in a subprocess while sampling its VmHWM. */
async function measure(modelDir: string, calib: string, out: string, layers: number): Promise<Measurement> {
  const t0 = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      // The V8 flags of `deno task quantize`: collect after every layer, and a small young generation so the
      // heap reaches its steady size within the first layer.
      "--v8-flags=--expose-gc,--max-semi-space-size=2",
      CLI,
      "quantize",
      ...["--model", modelDir, "--calib", calib, "--out", out, "--overwrite"],
      ...["--backend", "cpu", "--method", "masquant", "--bits", "w4a8", "--epochs", "1", "--samples", "4"],
    ],
    cwd: CLI === CLI_MAIN ? REPO_ROOT : `${CLI.replace(/\/[^/]*$/, "")}/..`,
    env: ARENAS ? { MALLOC_ARENA_MAX: ARENAS } : {},
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let hwm = 0;
  let running = true;
  const status = child.status.finally(() => running = false);
  const stderr = new Response(child.stderr).text();
  while (running) {
    const v = await highWaterMark(child.pid);
    if (v !== undefined) hwm = Math.max(hwm, v);
    await new Promise((r) => setTimeout(r, 5));
  }
  const { code } = await status;
  if (code !== 0) throw new Error(`quantize of the ${layers}-layer model failed (exit ${code}):\n${await stderr}`);
  const record = JSON.parse(await Deno.readTextFile(`${out}/run.json`));
  return {
    layers,
    hwmBytes: hwm,
    runRecordBytes: record.memory.peak_rss_bytes,
    seconds: (performance.now() - t0) / 1e3,
  };
}

const MiB = 2 ** 20;
const root = values.keep ?? await Deno.makeTempDir({ prefix: "masquant-bench-memory-" });
try {
  const calib = await writeCliCalibration(root, 4);
  const results: Measurement[] = [];
  for (const layers of DEPTHS) {
    const modelDir = `${root}/llava-${layers}`;
    await writeCliModel(modelDir, { ...WIDTH, layers });
    const runs: Measurement[] = [];
    for (let r = 0; r < REPEATS; r++) {
      const m = await measure(modelDir, calib, `${root}/out-${layers}`, layers);
      console.error(
        `${layers} layers, run ${r + 1}: VmHWM ${(m.hwmBytes / MiB).toFixed(1)} MiB, run.json ${
          (m.runRecordBytes / MiB).toFixed(1)
        } MiB, ${m.seconds.toFixed(1)} s`,
      );
      runs.push(m);
    }
    await Deno.remove(modelDir, { recursive: true });
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    results.push({
      layers,
      hwmBytes: median(runs.map((m) => m.hwmBytes)),
      runRecordBytes: median(runs.map((m) => m.runRecordBytes)),
      seconds: median(runs.map((m) => m.seconds)),
    });
  }
  console.log(
    `\nquantize (${CLI}), MASQuant W4A8, 1 epoch, 4 samples, --backend cpu; text hidden ${WIDTH.hidden}, ` +
      `intermediate ${WIDTH.intermediate}; median of ${REPEATS} run(s)${
        ARENAS ? `; MALLOC_ARENA_MAX=${ARENAS}` : ""
      }\n`,
  );
  console.log("| layers | peak RSS, VmHWM (MiB) | run.json peak_rss (MiB) | wall (s) |");
  console.log("| ------ | --------------------- | ----------------------- | -------- |");
  for (const m of results) {
    console.log(
      `| ${m.layers} | ${(m.hwmBytes / MiB).toFixed(1)} | ${(m.runRecordBytes / MiB).toFixed(1)} | ${
        m.seconds.toFixed(1)
      } |`,
    );
  }
  const last = results[results.length - 1];
  for (const first of results.slice(0, -1)) {
    console.log(
      `ratio ${last.layers}/${first.layers} layers: VmHWM ${(last.hwmBytes / first.hwmBytes).toFixed(3)}, ` +
        `run.json ${(last.runRecordBytes / first.runRecordBytes).toFixed(3)}`,
    );
  }
} finally {
  if (!values.keep) await Deno.remove(root, { recursive: true }).catch(() => {});
}
