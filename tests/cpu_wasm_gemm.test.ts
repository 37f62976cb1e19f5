/**
 * Tests of the WebAssembly assembler (wasm_asm.ts) and of the WebAssembly SIMD f32 gemm (wasm_gemm.ts)
 * against a float64 reference.
 *
 * Tolerance: every kernel sums k products in f32 (some of them fused), in whatever order, so each entry obeys
 * the classical bound |C − R| ≤ γ(k+1) · Σₜ |A[i,t]·Bt[j,t]| with γ(p) = p·u / (1 − p·u), u = 2⁻²⁴
 * (Higham, Accuracy and Stability of Numerical Algorithms, §3.1). The tests check that bound entrywise, and
 * the relative Frobenius error on a 512³ product (measured about 4e-7) against 1e-6.
 */
import { assert, assertEquals, assertThrows } from "@std/assert";
import { Rng } from "../core/tensor/random.ts";
import { ModuleBuilder, pushS32, pushU32, ValType } from "../core/tensor/cpu/wasm_asm.ts";
import {
  configureWasmGemm,
  gemmF32Wasm,
  packPanels,
  wasmGemmAvailable,
  wasmGemmHelperChunks,
  wasmGemmHelperReady,
} from "../core/tensor/cpu/wasm_gemm.ts";
import { CONTROL_BYTES, type GemmKernelConfig, WasmGemmKernel } from "../core/tensor/cpu/wasm_gemm_kernel.ts";

const { i32, f32 } = ValType;

// ---------------------------------------------------------------------------------------------------------
// Assembler

Deno.test("wasm_asm: LEB128 encodings match hand-worked values", () => {
  const u = (v: number) => {
    const out: number[] = [];
    pushU32(out, v);
    return out;
  };
  const s = (v: number) => {
    const out: number[] = [];
    pushS32(out, v);
    return out;
  };
  assertEquals(u(0), [0x00]);
  assertEquals(u(127), [0x7f]);
  assertEquals(u(128), [0x80, 0x01]);
  assertEquals(u(624485), [0xe5, 0x8e, 0x26]);
  assertEquals(u(0xffffffff), [0xff, 0xff, 0xff, 0xff, 0x0f]);
  assertEquals(s(0), [0x00]);
  assertEquals(s(-1), [0x7f]);
  assertEquals(s(63), [0x3f]);
  assertEquals(s(64), [0xc0, 0x00]);
  assertEquals(s(-64), [0x40]);
  assertEquals(s(-65), [0xbf, 0x7f]);
  assertEquals(s(-123456), [0xc0, 0xbb, 0x78]);
  assertEquals(s(-0x80000000), [0x80, 0x80, 0x80, 0x80, 0x78]);
  assertThrows(() => u(-1), Error, "wasm_asm.ts");
  assertThrows(() => s(0x80000000), Error, "wasm_asm.ts");
});

Deno.test("wasm_asm: assembled integer, control-flow, memory and SIMD code runs", () => {
  const mod = new ModuleBuilder().defineMemory({ initial: 1 }).exportMemory("mem");
  // sum(n) = 1 + 2 + … + n with a block/loop/br_if loop.
  const sum = mod.addFunction({ params: [i32], results: [i32] });
  {
    const f = sum.body;
    const acc = f.local(i32);
    f.i32Const(0).set(acc);
    f.block().get(0).i32Eqz().brIf(0).loop();
    f.get(acc).get(0).i32Add().set(acc);
    f.get(0).i32Const(-1).i32Add().tee(0).brIf(0);
    f.end().end();
    f.get(acc);
  }
  // dot4(p, q): Σ of the four lanes of f32x4 p · f32x4 q.
  const dot4 = mod.addFunction({ params: [i32, i32], results: [f32] });
  {
    const f = dot4.body;
    const v = f.local(ValType.v128);
    f.get(0).v128Load().get(1).v128Load().f32x4Mul().set(v);
    f.get(v).f32x4ExtractLane(0).get(v).f32x4ExtractLane(1).f32Add();
    f.get(v).f32x4ExtractLane(2).get(v).f32x4ExtractLane(3).f32Add().f32Add();
  }
  // splatAdd(p, x, out): out = f32x4 p + splat(x), via v128.store; and the load32_splat form at out + 16.
  const splatAdd = mod.addFunction({ params: [i32, f32, i32], results: [] });
  {
    const f = splatAdd.body;
    f.get(2).get(0).v128Load().get(1).f32x4Splat().f32x4Add().v128Store();
    f.get(2).get(0).v128Load32Splat(4).v128Store(16);
  }
  mod.exportFunction("sum", sum.index).exportFunction("dot4", dot4.index).exportFunction("splatAdd", splatAdd.index);
  const bytes = mod.encode();
  assert(WebAssembly.validate(bytes), "the assembled module must validate");
  const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes));
  const ex = inst.exports as {
    mem: WebAssembly.Memory;
    sum: (n: number) => number;
    dot4: (p: number, q: number) => number;
    splatAdd: (p: number, x: number, out: number) => void;
  };
  assertEquals(ex.sum(0), 0);
  assertEquals(ex.sum(100), 5050);
  const mem = new Float32Array(ex.mem.buffer);
  mem.set([1, 2, 3, 4], 0);
  mem.set([5, -6, 7, 0.5], 4);
  assertEquals(ex.dot4(0, 16), 5 - 12 + 21 + 2);
  ex.splatAdd(0, 10, 64);
  assertEquals(Array.from(mem.subarray(16, 24)), [11, 12, 13, 14, 2, 2, 2, 2]);
});

Deno.test("wasm_asm: relaxed_madd computes a·b + c where the engine supports relaxed SIMD", () => {
  const mod = new ModuleBuilder().defineMemory({ initial: 1 }).exportMemory("mem");
  const fn = mod.addFunction({ params: [], results: [] });
  fn.body.i32Const(48).i32Const(0).v128Load().i32Const(16).v128Load().i32Const(32).v128Load().f32x4RelaxedMadd()
    .v128Store();
  mod.exportFunction("madd", fn.index);
  const bytes = mod.encode();
  if (!WebAssembly.validate(bytes)) {
    console.log("relaxed SIMD is not supported here; the gemm uses separate multiply and add");
    return;
  }
  const ex = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as {
    mem: WebAssembly.Memory;
    madd: () => void;
  };
  const mem = new Float32Array(ex.mem.buffer);
  mem.set([1, 2, 3, 4, 10, 20, 30, 40, 0.5, -1, 100, 0]);
  ex.madd();
  assertEquals(Array.from(mem.subarray(12, 16)), [10.5, 39, 190, 160]);
});

Deno.test("wasm_asm: inconsistent use is rejected with a clear error", () => {
  const mod = new ModuleBuilder();
  const fn = mod.addFunction({ params: [], results: [] });
  fn.body.block();
  assertThrows(() => mod.encode(), Error, "unclosed");
  assertThrows(() => fn.body.end().end(), Error, "without an open block");
  assertThrows(() => new ModuleBuilder().importMemory("env", "m", { initial: 1, shared: true }), Error, "maximum");
  assertThrows(() => fn.body.f32x4ExtractLane(4), Error, "lane");
});

// ---------------------------------------------------------------------------------------------------------
// Gemm

/** Float64 reference C = A·Btᵀ and the entrywise bound Σₜ |A·Bt|. */
function reference(A: Float32Array, aOff: number, Bt: Float32Array, bOff: number, m: number, n: number, k: number) {
  const R = new Float64Array(m * n);
  const S = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      let a = 0;
      for (let t = 0; t < k; t++) {
        const p = A[aOff + i * k + t] * Bt[bOff + j * k + t];
        s += p;
        a += Math.abs(p);
      }
      R[i * n + j] = s;
      S[i * n + j] = a;
    }
  }
  return { R, S };
}

function randomArray(rng: Rng, size: number): Float32Array {
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) out[i] = rng.uniform(-1, 1);
  return out;
}

const U = 2 ** -24;
const gamma = (p: number) => p * U / (1 - p * U);
const SENTINEL = 12345.5;

/** Runs one product with offsets and sentinels around C; checks the entrywise bound and that nothing else moved. */
function checkProduct(rng: Rng, m: number, n: number, k: number, offsets: [number, number, number]): void {
  const [aOff, bOff, cOff] = offsets;
  const A = randomArray(rng, aOff + m * k + 3);
  const Bt = randomArray(rng, bOff + n * k + 5);
  const C = new Float32Array(cOff + m * n + 7).fill(SENTINEL);
  gemmF32Wasm(A, aOff, Bt, bOff, C, cOff, m, n, k);
  const { R, S } = reference(A, aOff, Bt, bOff, m, n, k);
  const g = gamma(k + 1);
  for (let i = 0; i < m * n; i++) {
    const err = Math.abs(C[cOff + i] - R[i]);
    if (!(err <= g * S[i] + 1e-30)) {
      throw new Error(
        `m=${m} n=${n} k=${k} offsets=${offsets}: C[${Math.floor(i / n)},${i % n}] = ${C[cOff + i]}, ` +
          `float64 ${R[i]}, error ${err} above the bound ${g * S[i]}`,
      );
    }
  }
  for (let i = 0; i < cOff; i++) assertEquals(C[i], SENTINEL, `C[${i}] before cOff was written`);
  for (let i = cOff + m * n; i < C.length; i++) assertEquals(C[i], SENTINEL, `C[${i}] after the product was written`);
}

const SIZES = [1, 7, 33, 129, 256];

Deno.test("wasm gemm: WebAssembly SIMD is available in this runtime", () => {
  assert(wasmGemmAvailable(), "Deno 2.x supports WebAssembly SIMD; the scalar fallback should not be in use");
});

Deno.test("wasm gemm: all shapes from {1, 7, 33, 129, 256}³ match float64 within γ(k+1)·Σ|a·b|", () => {
  const previous = configureWasmGemm({ threads: 1 });
  try {
    const rng = new Rng(11);
    // Largest products first, so that later small ones run on memory holding stale data.
    for (const m of [...SIZES].reverse()) {
      for (const n of [...SIZES].reverse()) {
        for (const k of [...SIZES].reverse()) checkProduct(rng, m, n, k, [0, 0, 0]);
      }
    }
  } finally {
    configureWasmGemm(previous);
  }
});

Deno.test("wasm gemm: block edges, both kernels (m ≤ 32 and m > 32) and non-zero offsets", () => {
  const previous = configureWasmGemm({ threads: 1 });
  try {
    const rng = new Rng(12);
    const shapes: [number, number, number][] = [
      [2, 3, 5],
      [5, 8, 4],
      [6, 9, 3],
      [10, 16, 257],
      [11, 17, 255],
      [31, 4, 6],
      [32, 5, 9],
      [33, 12, 10],
      [34, 1, 1],
      [120, 40, 512],
      [121, 41, 513],
      [241, 23, 300],
    ];
    for (const [m, n, k] of shapes) {
      checkProduct(rng, m, n, k, [0, 0, 0]);
      checkProduct(rng, m, n, k, [3, 17, 5]);
    }
  } finally {
    configureWasmGemm(previous);
  }
});

Deno.test("wasm gemm: products split to fit a small working-set cap", () => {
  const previous = configureWasmGemm({ threads: 1, maxWorkingBytes: 65536 });
  try {
    const rng = new Rng(13);
    for (const [m, n, k] of [[70, 90, 100], [20, 300, 64], [200, 13, 40], [9, 500, 31]] as const) {
      checkProduct(rng, m, n, k, [1, 2, 3]);
    }
  } finally {
    configureWasmGemm(previous);
  }
});

Deno.test("wasm gemm kernels: other register blocks, plain multiply-add, and the dot kernel", () => {
  const rng = new Rng(16);
  const configs: GemmKernelConfig[] = [
    { mr: 5, nr: 8, unroll: 4, fma: false, shared: false },
    { mr: 4, nr: 8, unroll: 1, fma: false, shared: false },
    { mr: 3, nr: 12, unroll: 2, fma: false, shared: false },
    { mr: 6, nr: 4, unroll: 8, fma: false, shared: false },
  ];
  for (const config of configs) {
    const K = WasmGemmKernel.create(config, { kc: 64, mc: 4 * config.mr });
    for (const [m, n, k] of [[1, 1, 1], [13, 29, 67], [40, 16, 200]] as const) {
      const A = randomArray(rng, m * k);
      const Bt = randomArray(rng, n * k);
      const { R, S } = reference(A, 0, Bt, 0, m, n, k);
      const check = (C: Float32Array, ldc: number, what: string) => {
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            const err = Math.abs(C[i * ldc + j] - R[i * n + j]);
            assert(
              err <= gamma(k + 1) * S[i * n + j] + 1e-30,
              `${what} ${JSON.stringify(config)} m=${m} n=${n} k=${k}`,
            );
          }
        }
      };
      // Packed kernel.
      const mp = Math.ceil(m / config.mr) * config.mr;
      const np = Math.ceil(n / config.nr) * config.nr;
      const ap = CONTROL_BYTES, bp = ap + mp * k * 4, cp = bp + np * k * 4;
      K.ensureBytes(cp + mp * np * 4);
      packPanels(A, 0, m, k, config.mr, K.f32, ap >> 2);
      packPanels(Bt, 0, n, k, config.nr, K.f32, bp >> 2);
      K.gemm(ap, bp, cp, mp, np, k, np * 4);
      check(K.f32.slice(cp >> 2, (cp >> 2) + mp * np), np, "gemm");
      // Dot kernel on padded rows.
      const m2 = Math.ceil(m / 2) * 2, n4 = Math.ceil(n / 4) * 4, kp = Math.ceil(k / 4) * 4;
      const bq = ap + m2 * kp * 4, cq = bq + n4 * kp * 4;
      K.ensureBytes(cq + m2 * n4 * 4);
      const mem = K.f32;
      mem.fill(0, ap >> 2, cq >> 2);
      for (let i = 0; i < m; i++) mem.set(A.subarray(i * k, i * k + k), (ap >> 2) + i * kp);
      for (let j = 0; j < n; j++) mem.set(Bt.subarray(j * k, j * k + k), (bq >> 2) + j * kp);
      K.dot(ap, bq, cq, m2, n4, kp, n4 * 4);
      check(K.f32.slice(cq >> 2, (cq >> 2) + m2 * n4), n4, "dot");
    }
  }
});

Deno.test("wasm gemm: zero sizes write nothing, or zeros when k = 0", () => {
  const A = new Float32Array(20).fill(1);
  const Bt = new Float32Array(20).fill(1);
  const C = new Float32Array(12).fill(SENTINEL);
  gemmF32Wasm(A, 0, Bt, 0, C, 2, 0, 5, 4);
  gemmF32Wasm(A, 0, Bt, 0, C, 2, 5, 0, 4);
  gemmF32Wasm(A, 0, Bt, 0, C, 2, 0, 0, 0);
  assert(C.every((v) => v === SENTINEL), "empty products must not write C");
  gemmF32Wasm(A, 0, Bt, 0, C, 2, 2, 3, 0);
  assertEquals(Array.from(C), [SENTINEL, SENTINEL, 0, 0, 0, 0, 0, 0, SENTINEL, SENTINEL, SENTINEL, SENTINEL]);
});

Deno.test("wasm gemm: bad sizes and short arrays are rejected with a clear error", () => {
  const A = new Float32Array(12);
  const Bt = new Float32Array(12);
  const C = new Float32Array(9);
  assertThrows(() => gemmF32Wasm(A, 0, Bt, 0, C, 0, -1, 3, 4), RangeError, "m=-1");
  assertThrows(() => gemmF32Wasm(A, 0.5, Bt, 0, C, 0, 3, 3, 4), RangeError, "aOff=0.5");
  assertThrows(() => gemmF32Wasm(A, 1, Bt, 0, C, 0, 3, 3, 4), RangeError, "A to hold aOff + m·k = 13");
  assertThrows(() => gemmF32Wasm(A, 0, Bt, 0, C, 1, 3, 3, 4), RangeError, "C to hold cOff + m·n = 10");
  assertThrows(() => configureWasmGemm({ threads: 3 }), RangeError, "threads=3");
});

Deno.test("wasm gemm: relative Frobenius error of a 512³ product is below 1e-6", () => {
  const rng = new Rng(14);
  const n = 512;
  const A = randomArray(rng, n * n);
  const Bt = randomArray(rng, n * n);
  const C = new Float32Array(n * n);
  gemmF32Wasm(A, 0, Bt, 0, C, 0, n, n, n);
  const { R } = reference(A, 0, Bt, 0, n, n, n);
  let e2 = 0;
  let r2 = 0;
  for (let i = 0; i < n * n; i++) {
    e2 += (C[i] - R[i]) ** 2;
    r2 += R[i] ** 2;
  }
  const rel = Math.sqrt(e2 / r2);
  console.log(`relative Frobenius error at n=512: ${rel.toExponential(2)}`);
  assert(rel < 1e-6, `relative Frobenius error ${rel} is not below 1e-6`);
});

Deno.test("wasm gemm: products shared with the helper thread match float64", async () => {
  const previous = configureWasmGemm({ threads: 2, threadMinWork: 0 });
  try {
    const ready = await wasmGemmHelperReady(20000);
    if (!ready && navigator.hardwareConcurrency < 2) {
      console.log("skipped: one CPU, no helper thread");
      return;
    }
    assert(ready, "the helper thread did not start within 20 s");
    const rng = new Rng(15);
    for (const m of [1, 7, 33, 129]) {
      for (const n of [1, 7, 33, 129, 300]) {
        for (const k of [1, 33, 129]) checkProduct(rng, m, n, k, [1, 0, 2]);
      }
    }
    // Row-split jobs (many more rows than columns) and column-split dot jobs.
    checkProduct(rng, 700, 9, 64, [0, 0, 0]);
    checkProduct(rng, 3, 2000, 20, [0, 0, 0]);
    // The helper must take part: run 256³ products (about 1 ms each) until it has computed a chunk.
    const before = wasmGemmHelperChunks();
    const deadline = performance.now() + 5000;
    while (wasmGemmHelperChunks() === before && performance.now() < deadline) {
      checkProduct(rng, 256, 256, 256, [0, 0, 0]);
    }
    assert(wasmGemmHelperChunks() > before, "the helper thread never computed a chunk");
  } finally {
    configureWasmGemm(previous);
  }
});
