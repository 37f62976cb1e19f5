/**
 * CPU f32 matmul benchmark: the scalar TypeScript `gemmABt` (matmul.ts) against the WebAssembly SIMD
 * `gemmF32Wasm` (wasm_gemm.ts) on one thread and with the helper thread, C[n×n] = A[n×n]·Btᵀ.
 *
 *   deno run -A bench/cpu_gemm.ts [--sizes 256,512,1024,2048] [--quick]
 *
 * Every kernel is warmed up first; then, for each size, the variants run interleaved (to share the
 * machine's load phases) and the table reports the median time over the runs. The error column is the
 * relative Frobenius error of each kernel against a float64 product on a sample of rows.
 */
import { gemmABt } from "../core/tensor/cpu/matmul.ts";
import {
  configureWasmGemm,
  gemmF32Wasm,
  wasmGemmAvailable,
  wasmGemmHelperChunks,
  wasmGemmHelperReady,
} from "../core/tensor/cpu/wasm_gemm.ts";
import { Rng } from "../core/tensor/random.ts";

type Gemm = (A: Float32Array, Bt: Float32Array, C: Float32Array, n: number) => void;

const arg = (name: string): string | undefined => {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
};
const quick = Deno.args.includes("--quick");
const sizes = (arg("--sizes") ?? "256,512,1024,2048").split(",").map(Number);
/** Runs per size: scalar (slow at 2048) and wasm. */
const scalarRuns = (n: number) => quick ? 1 : n <= 256 ? 7 : n <= 512 ? 5 : 3;
const wasmRuns = (n: number) => quick ? 3 : n <= 512 ? 11 : n <= 1024 ? 7 : 5;

const scalar: Gemm = (A, Bt, C, n) => gemmABt(A, 0, Bt, 0, C, 0, n, n, n);
const wasm1: Gemm = (A, Bt, C, n) => {
  configureWasmGemm({ threads: 1 });
  gemmF32Wasm(A, 0, Bt, 0, C, 0, n, n, n);
};
const wasm2: Gemm = (A, Bt, C, n) => {
  configureWasmGemm({ threads: 2 });
  gemmF32Wasm(A, 0, Bt, 0, C, 0, n, n, n);
};

function randomArray(rng: Rng, size: number): Float32Array {
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) out[i] = rng.uniform(-1, 1);
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** Relative Frobenius error of C against float64 on `rows` evenly spaced rows. */
function sampledRelErr(A: Float32Array, Bt: Float32Array, C: Float32Array, n: number, rows: number): number {
  let e2 = 0;
  let r2 = 0;
  const step = Math.max(1, Math.floor(n / rows));
  for (let i = 0; i < n; i += step) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < n; t++) s += A[i * n + t] * Bt[j * n + t];
      e2 += (C[i * n + j] - s) ** 2;
      r2 += s * s;
    }
  }
  return Math.sqrt(e2 / r2);
}

if (!wasmGemmAvailable()) {
  console.log("WebAssembly SIMD is not available: gemmF32Wasm falls back to the scalar kernel; nothing to compare.");
  Deno.exit(0);
}

// Warm-up: JIT tiers of the scalar kernel and the packing code, wasm tier-up, helper thread start.
const rng = new Rng(2024);
{
  const W = randomArray(rng, 128 * 128);
  const out = new Float32Array(128 * 128);
  for (let i = 0; i < 200; i++) gemmABt(W, 0, W, 0, out, 0, 64, 64, 64);
  for (let i = 0; i < 50; i++) wasm1(W, W, out, 128);
}
configureWasmGemm({ threads: 2 });
const helper = await wasmGemmHelperReady(10000);
{
  const W = randomArray(rng, 256 * 256);
  const out = new Float32Array(256 * 256);
  for (let i = 0; i < 20; i++) wasm2(W, W, out, 256);
}

const variants: { name: string; fn: Gemm; runs: (n: number) => number }[] = [
  { name: "scalar TS", fn: scalar, runs: scalarRuns },
  { name: "wasm 1T", fn: wasm1, runs: wasmRuns },
];
if (helper) variants.push({ name: "wasm 2T", fn: wasm2, runs: wasmRuns });

console.log(
  `CPU f32 gemm, C[n×n] = A·Btᵀ; ${navigator.hardwareConcurrency} CPUs; median of runs (scalar ` +
    `${sizes.map(scalarRuns).join("/")}, wasm ${
      sizes.map(wasmRuns).join("/")
    }); error: relative Frobenius vs float64 ` +
    `on ~64 sampled rows${helper ? "" : "; helper thread unavailable"}`,
);
const header = ["n", ...variants.flatMap((v) => [`${v.name} ms`, `${v.name} GFLOP/s`]), "wasm 1T / scalar"];
if (helper) header.push("wasm 2T / scalar");
header.push(...variants.map((v) => `err ${v.name}`));
console.log(`| ${header.join(" | ")} |`);
console.log(`|${header.map(() => "---").join("|")}|`);

for (const n of sizes) {
  const A = randomArray(rng, n * n);
  const Bt = randomArray(rng, n * n);
  const outs = variants.map(() => new Float32Array(n * n));
  const times: number[][] = variants.map(() => []);
  const maxRuns = Math.max(...variants.map((v) => v.runs(n)));
  for (let r = 0; r < maxRuns; r++) {
    variants.forEach((v, i) => {
      if (r >= v.runs(n)) return;
      const t0 = performance.now();
      v.fn(A, Bt, outs[i], n);
      times[i].push(performance.now() - t0);
    });
  }
  const ms = times.map(median);
  const gflops = ms.map((t) => 2 * n ** 3 / t / 1e6);
  const errs = outs.map((C) => sampledRelErr(A, Bt, C, n, 64));
  const row = [String(n), ...ms.flatMap((t, i) => [t.toFixed(t < 10 ? 2 : 1), gflops[i].toFixed(2)])];
  row.push(`${(ms[0] / ms[1]).toFixed(1)}x`);
  if (helper) row.push(`${(ms[0] / ms[2]).toFixed(1)}x`);
  row.push(...errs.map((e) => e.toExponential(1)));
  console.log(`| ${row.join(" | ")} |`);
}
if (helper) console.log(`helper thread computed ${wasmGemmHelperChunks()} chunks`);
