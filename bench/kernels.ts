/**
 * Matmul throughput of every backend, measured in one process: GFLOP/s of the f32 matmul (2n³ flops)
 * and GOP/s of the int8 × int8 → int32 matmul with its dequantizing epilogue, at n = 256 … 2048, with the
 * ratio to the CPU backend's f32 matmul in the same run. Run: `deno task bench` (add `--quick` for
 * n ≤ 1024, `--sizes 256,512` to choose sizes).
 */
import { type Backend, CpuBackend, Rng, type Tensor } from "@masquant/core";
import { openWebGPU, WebGPUBackend } from "@masquant/kernels";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: { quick: { type: "boolean", default: false }, sizes: { type: "string" } },
});
const sizes = values.sizes
  ? values.sizes.split(",").map(Number)
  : values.quick
  ? [256, 512, 1024]
  : [256, 512, 1024, 2048];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function time(be: Backend, reps: number, fn: () => Tensor): Promise<number> {
  (fn()).dispose(); // warm-up (pipeline compile, JIT)
  await be.sync();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    const out = fn();
    await be.sync();
    ts.push(performance.now() - t0);
    out.dispose();
  }
  return median(ts) / 1e3;
}

const cpu = new CpuBackend();
const gpu = await openWebGPU();
const rows: string[][] = [];
const header = ["n", "backend", "kernel", "time (ms)", "GFLOP/s or GOP/s", "× CPU f32"];
const rng = new Rng(1);

for (const n of sizes) {
  const a = rng.uniformArray(n * n);
  const b = rng.uniformArray(n * n);
  const reps = n <= 512 ? 7 : n <= 1024 ? 3 : 1;
  const ops = 2 * n ** 3;
  const ca = cpu.tensor(a, [n, n]);
  const cb = cpu.tensor(b, [n, n]);
  const tCpu = await time(cpu, n >= 2048 ? 1 : reps, () => cpu.matmul(ca, cb, { transB: true }));
  const cpuRate = ops / tCpu / 1e9;
  rows.push([`${n}`, "cpu", "f32 A·Bᵀ", (tCpu * 1e3).toFixed(1), cpuRate.toFixed(2), "1.00"]);
  if (gpu) {
    for (const kind of ["blocked", "tiled"] as const) {
      const be = new WebGPUBackend(gpu.ctx, { matmul: kind });
      const ga = be.tensor(a, [n, n]);
      const gb = be.tensor(b, [n, n]);
      for (const transB of [false, true]) {
        const t = await time(be, reps, () => be.matmul(ga, gb, { transB }));
        const rate = ops / t / 1e9;
        rows.push([
          `${n}`,
          "webgpu",
          `f32 ${kind} ${transB ? "A·Bᵀ" : "A·B"}`,
          (t * 1e3).toFixed(1),
          rate.toFixed(2),
          (rate / cpuRate).toFixed(2),
        ]);
      }
      ga.dispose();
      gb.dispose();
    }
    const qa = gpu.quantize(gpu.tensor(a, [n, n]), { bits: 8, symmetric: true, groupSize: 0 });
    const qb = gpu.quantize(gpu.tensor(b, [n, n]), { bits: 8, symmetric: true, groupSize: 0 });
    if (gpu.int8Layout !== "rows") {
      const dot4 = new WebGPUBackend(gpu.ctx, { int8Layout: "rows" });
      const td = await time(dot4, reps, () => dot4.int8Matmul(qa.q, qa.scale, qb.q, qb.scale));
      rows.push([
        `${n}`,
        "webgpu",
        "int8 dot4I8Packed",
        (td * 1e3).toFixed(1),
        (ops / td / 1e9).toFixed(2),
        (ops / td / 1e9 / cpuRate).toFixed(2),
      ]);
    }
    const t8 = await time(gpu, reps, () => gpu.int8Matmul(qa.q, qa.scale, qb.q, qb.scale));
    rows.push([
      `${n}`,
      "webgpu",
      `int8 ${gpu.int8Layout === "rows" ? "dot4I8Packed" : gpu.int8Layout} (default)`,
      (t8 * 1e3).toFixed(1),
      (ops / t8 / 1e9).toFixed(2),
      (ops / t8 / 1e9 / cpuRate).toFixed(2),
    ]);
    const qb4 = gpu.quantize(gpu.tensor(b, [n, n]), { bits: 4, symmetric: true, groupSize: 0 }, true);
    const t4 = await time(gpu, reps, () => gpu.int8Matmul(qa.q, qa.scale, qb4.q, qb4.scale));
    rows.push([
      `${n}`,
      "webgpu",
      "int8 × int4 weights",
      (t4 * 1e3).toFixed(1),
      (ops / t4 / 1e9).toFixed(2),
      (ops / t4 / 1e9 / cpuRate).toFixed(2),
    ]);
    for (const t of [qa.q, qa.scale, qb.q, qb.scale, qb4.q, qb4.scale]) t.dispose();
  }
  const qa = cpu.quantize(ca, { bits: 8, symmetric: true, groupSize: 0 });
  const qb = cpu.quantize(cb, { bits: 8, symmetric: true, groupSize: 0 });
  if (n <= 1024) {
    const t8 = await time(cpu, 1, () => cpu.int8Matmul(qa.q, qa.scale, qb.q, qb.scale));
    rows.push([
      `${n}`,
      "cpu",
      "int8",
      (t8 * 1e3).toFixed(1),
      (ops / t8 / 1e9).toFixed(2),
      (ops / t8 / 1e9 / cpuRate).toFixed(2),
    ]);
  }
  ca.dispose();
  cb.dispose();
}

console.log(`GPU: ${gpu ? gpu.description : "none found"}`);
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
console.log(line(header));
console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
for (const r of rows) console.log(line(r));
