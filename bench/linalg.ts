/**
 * Time of the CMC linear algebra at d_in = n = 256, 512, 1024: the float64 host routines
 * (symmetricEigen with vectors, dampedCholesky) and the whole whitenedLowRank for the MLP shape
 * d_out = 2.7·n at rank ratio 0.2, on the CPU backend (f64 and f32 tensors) and on WebGPU (f32) when an
 * adapter is found. Run: `deno run -A bench/linalg.ts` (`--sizes 256,512` to choose sizes, `--reps 3`).
 */
import { type Backend, CpuBackend, Rng } from "@masquant/core";
import { openWebGPU } from "@masquant/kernels";
import { dampedCholesky, symmetricEigen, whitenedLowRank } from "../core/linalg/mod.ts";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: { sizes: { type: "string" }, reps: { type: "string" } },
});
const sizes = values.sizes ? values.sizes.split(",").map(Number) : [256, 512, 1024];
const reps = values.reps ? Number(values.reps) : 1;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function time(fn: () => unknown): Promise<number> {
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

const cpu = new CpuBackend();
const gpu = await openWebGPU();
const rng = new Rng(7);
const header = ["n", "d_out", "routine", "backend", "time (ms)"];
const rows: string[][] = [];

for (const n of sizes) {
  const dOut = Math.round(2.7 * n);
  // Activation-like calibration data: 2n tokens with a few outlier channels.
  const tokens = 2 * n;
  const x = rng.normalArray(tokens * n);
  for (let t = 0; t < tokens; t++) for (let j = 0; j < n; j += 37) x[t * n + j] *= 20;
  const xt = cpu.tensor(x, [tokens, n], "f64");
  const ct = cpu.matmul(xt, xt, { transA: true });
  const c = (await ct.read()) as Float64Array;
  xt.dispose();
  ct.dispose();
  const dw = rng.normalArray(dOut * n, 0.01);
  const tEig = await time(() => symmetricEigen(c, n));
  rows.push([`${n}`, "", "symmetricEigen (values + vectors)", "host f64", tEig.toFixed(0)]);
  const tChol = await time(() => dampedCholesky(c, n));
  rows.push([`${n}`, "", "dampedCholesky", "host f64", tChol.toFixed(0)]);
  const runs: [Backend, "f32" | "f64"][] = [[cpu, "f64"], [cpu, "f32"]];
  if (gpu) runs.push([gpu, "f32"]);
  for (const [be, dtype] of runs) {
    const t = await time(() =>
      whitenedLowRank(be, {
        deltaW: dw,
        inFeatures: n,
        outFeatures: dOut,
        whitening: { secondMoment: c },
        rank: { ratio: 0.2 },
        dtype,
      })
    );
    rows.push([`${n}`, `${dOut}`, "whitenedLowRank (ratio 0.2)", `${be.name} ${dtype}`, t.toFixed(0)]);
  }
}

console.log(`GPU: ${gpu ? gpu.description : "none found"}; median of ${reps} run(s)`);
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
console.log(line(header));
console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
for (const r of rows) console.log(line(r));
