/**
 * f32 matrix multiply C[m×n] = A[m×k] · Btᵀ (Bt is [n×k]) with WebAssembly SIMD: a drop-in for `gemmABt`
 * (matmul.ts) on Float32Arrays. Operands are copied into wasm memory (packed into panels, or as padded rows
 * when A has few rows), the kernels of wasm_gemm_kernel.ts run on them, and the result is copied out.
 * Large products are shared with one helper thread (wasm_gemm_worker.ts) through a shared memory; the call
 * stays synchronous. Accumulation is in f32.
 */
import { Worker } from "node:worker_threads";
import { gemmABt } from "./matmul.ts";
import { type FuncBody, ModuleBuilder } from "./wasm_asm.ts";
import {
  CONTROL_BYTES,
  type GemmBlocking,
  type GemmJob,
  type GemmKernelConfig,
  JOB_DOT,
  JOB_PACKED,
  seqTag,
  SLOT_DONE,
  SLOT_ERROR,
  SLOT_HELPER_CHUNKS,
  SLOT_NEXT,
  SLOT_READY,
  SLOT_SEQ,
  WasmGemmKernel,
  workOnJob,
  writeJob,
} from "./wasm_gemm_kernel.ts";
import type { HelperStart } from "./wasm_gemm_worker.ts";

/** Register block with fused multiply-add (relaxed SIMD): 5×8 measured fastest. */
const FMA_CONFIG: Omit<GemmKernelConfig, "shared"> = { mr: 5, nr: 8, unroll: 4, fma: true };
/** Register block with plain SIMD (separate multiply and add). */
const PLAIN_CONFIG: Omit<GemmKernelConfig, "shared"> = { mr: 5, nr: 8, unroll: 4, fma: false };
/** k-blocks of 256 and row blocks of 120 rows keep a B micro-panel in L1 and an A block in L2. */
const BLOCKING: GemmBlocking = { kc: 256, mc: 120 };
/**
 * Products with at most this many rows of A use the unpacked dot-product kernel: packing Bt costs more than
 * it saves when few rows of A reuse it (measured crossover between 32 and 64 rows at n = k = 1024 and 4096).
 */
const DOT_MAX_ROWS = 32;
/** Target number of chunks per job when two threads share it (dynamic balancing). */
const CHUNKS_PER_JOB = 16;

/** Tunable settings of {@link gemmF32Wasm}. */
export interface WasmGemmSettings {
  /** Threads used for large products: 1 (main only) or 2 (main + one helper). */
  threads: number;
  /** Products with m·n·k below this run on the main thread only. */
  threadMinWork: number;
  /** Cap on packed A + packed B + padded C per kernel run, in bytes; larger products are split. */
  maxWorkingBytes: number;
}

const settings: WasmGemmSettings = {
  threads: Math.min(2, Math.max(1, (globalThis.navigator?.hardwareConcurrency ?? 1) | 0)),
  threadMinWork: 1 << 22,
  maxWorkingBytes: 512 * 1024 * 1024,
};

/** Changes settings (for benchmarks and tests); returns the previous ones. */
export function configureWasmGemm(update: Partial<WasmGemmSettings>): WasmGemmSettings {
  const previous = { ...settings };
  if (update.threads !== undefined) {
    if (update.threads !== 1 && update.threads !== 2) {
      throw new RangeError(`wasm_gemm.ts: threads=${update.threads} is not supported; use 1 or 2.`);
    }
    settings.threads = update.threads;
  }
  if (update.threadMinWork !== undefined) settings.threadMinWork = Math.max(0, update.threadMinWork);
  if (update.maxWorkingBytes !== undefined) {
    if (!(update.maxWorkingBytes >= 65536 && update.maxWorkingBytes <= 2 ** 31)) {
      throw new RangeError(
        `wasm_gemm.ts: maxWorkingBytes=${update.maxWorkingBytes} must be between 65536 and 2^31 bytes.`,
      );
    }
    settings.maxWorkingBytes = update.maxWorkingBytes;
  }
  return previous;
}

// ---- engine support and the process-wide kernel ----

/** Whether the engine validates a module that uses `emit` inside a `() -> ()` function. */
function validates(emit: (f: FuncBody) => void): boolean {
  try {
    const mod = new ModuleBuilder();
    emit(mod.addFunction({ params: [], results: [] }).body);
    return WebAssembly.validate(mod.encode());
  } catch {
    return false;
  }
}

/** Whether shared wasm memories can be created (needed for the helper thread). */
function sharedMemorySupported(): boolean {
  try {
    new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true } as WebAssembly.MemoryDescriptor);
    return typeof SharedArrayBuffer === "function";
  } catch {
    return false;
  }
}

let kernel: WasmGemmKernel | null | undefined;

/** The main-thread kernel, created on first use; null when WebAssembly SIMD is unavailable. */
function mainKernel(): WasmGemmKernel | null {
  if (kernel !== undefined) return kernel;
  kernel = null;
  if (typeof WebAssembly !== "object" || !validates((f) => f.f32x4Const(1).f32x4Const(2).f32x4Mul().drop())) {
    return kernel;
  }
  const fma = validates((f) => f.f32x4Const(1).f32x4Const(2).f32x4Const(3).f32x4RelaxedMadd().drop());
  const config = { ...(fma ? FMA_CONFIG : PLAIN_CONFIG), shared: sharedMemorySupported() };
  try {
    kernel = WasmGemmKernel.create(config, BLOCKING);
  } catch {
    kernel = null;
  }
  return kernel;
}

/** Whether the WebAssembly SIMD kernel runs here (when false, {@link gemmF32Wasm} uses the scalar `gemmABt`). */
export function wasmGemmAvailable(): boolean {
  return mainKernel() !== null;
}

// ---- helper thread ----

interface Helper {
  ctl: Int32Array;
  seq: number;
  failed: boolean;
}

let helper: Helper | undefined;

/** The helper thread once it is ready; starts it (without waiting) on first request. */
function readyHelper(K: WasmGemmKernel): Helper | undefined {
  if (!K.config.shared) return undefined;
  if (!helper) {
    const ctl = new Int32Array(K.memory.buffer, 0, CONTROL_BYTES / 4);
    const h: Helper = { ctl, seq: Atomics.load(ctl, SLOT_SEQ), failed: false };
    helper = h;
    try {
      const worker = new Worker(new URL("./wasm_gemm_worker.ts", import.meta.url));
      worker.unref();
      worker.on("error", () => h.failed = true);
      worker.on("exit", () => h.failed = true);
      const start: HelperStart = { config: K.config, blocking: K.blocking, module: K.module, memory: K.memory };
      worker.postMessage(start);
    } catch {
      h.failed = true;
    }
  }
  return !helper.failed && Atomics.load(helper.ctl, SLOT_READY) === 1 ? helper : undefined;
}

/**
 * Starts the helper thread (when settings allow two threads) and resolves true once it is ready, or false
 * when it cannot run here or is not ready within `timeoutMs`. Products never wait for the helper: until it
 * is ready they run on the main thread alone; this is for benchmarks and tests that need it up front.
 */
export async function wasmGemmHelperReady(timeoutMs = 5000): Promise<boolean> {
  const K = mainKernel();
  if (!K || !K.config.shared || settings.threads < 2) return false;
  const deadline = performance.now() + timeoutMs;
  while (!readyHelper(K)) {
    if (helper?.failed || performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return true;
}

/** Chunks of products computed by the helper thread so far (0 while it is not running). */
export function wasmGemmHelperChunks(): number {
  return helper && !helper.failed ? Atomics.load(helper.ctl, SLOT_HELPER_CHUNKS) : 0;
}

/** Runs all chunks of `job`, sharing them with the helper thread when it is ready. */
function execute(K: WasmGemmKernel, job: GemmJob, threaded: boolean): void {
  const h = threaded && job.chunks > 1 ? readyHelper(K) : undefined;
  if (!h) {
    for (let c = 0; c < job.chunks; c++) K.runChunk(job, c);
    return;
  }
  const ctl = h.ctl;
  h.seq = (h.seq + 1) | 0;
  const tag = seqTag(h.seq);
  writeJob(ctl, job);
  Atomics.store(ctl, SLOT_DONE, 0);
  Atomics.store(ctl, SLOT_ERROR, 0);
  Atomics.store(ctl, SLOT_NEXT, tag << 16);
  Atomics.store(ctl, SLOT_SEQ, h.seq);
  Atomics.notify(ctl, SLOT_SEQ);
  let failure: unknown;
  workOnJob(K, ctl, job, tag, (e) => failure ??= e);
  for (;;) {
    const done = Atomics.load(ctl, SLOT_DONE);
    if (done >= job.chunks) break;
    Atomics.wait(ctl, SLOT_DONE, done, 1000);
  }
  if (failure !== undefined) throw failure;
  if (Atomics.load(ctl, SLOT_ERROR) !== 0) {
    throw new Error("wasm_gemm.ts: the helper thread failed while computing a chunk of the product.");
  }
}

/** Chunking of a job: by columns of C, or by rows when there are many more rows than columns. */
function chunking(
  mp: number,
  np: number,
  colBlock: number,
  rowBlock: number,
  byRowsAllowed: boolean,
  threaded: boolean,
): Pick<GemmJob, "byRows" | "chunkSize" | "chunks"> {
  const byRows = byRowsAllowed && mp > 2 * np;
  const extent = byRows ? mp : np;
  const block = byRows ? rowBlock : colBlock;
  if (!threaded) return { byRows: false, chunkSize: np, chunks: 1 };
  const chunkSize = Math.max(block, Math.ceil(extent / CHUNKS_PER_JOB / block) * block);
  return { byRows, chunkSize, chunks: Math.ceil(extent / chunkSize) };
}

// ---- operand copies ----

/** Packs one full panel of 8 rows starting at `s0` (row length k) into `dst` at `d`, k-major. */
function packPanel8(src: Float32Array, s0: number, k: number, dst: Float32Array, d: number): void {
  const s1 = s0 + k, s2 = s1 + k, s3 = s2 + k, s4 = s3 + k, s5 = s4 + k, s6 = s5 + k, s7 = s6 + k;
  for (let t = 0; t < k; t++) {
    dst[d] = src[s0 + t];
    dst[d + 1] = src[s1 + t];
    dst[d + 2] = src[s2 + t];
    dst[d + 3] = src[s3 + t];
    dst[d + 4] = src[s4 + t];
    dst[d + 5] = src[s5 + t];
    dst[d + 6] = src[s6 + t];
    dst[d + 7] = src[s7 + t];
    d += 8;
  }
}

/** Packs one full panel of 5 rows starting at `s0` (row length k) into `dst` at `d`, k-major. */
function packPanel5(src: Float32Array, s0: number, k: number, dst: Float32Array, d: number): void {
  const s1 = s0 + k, s2 = s1 + k, s3 = s2 + k, s4 = s3 + k;
  for (let t = 0; t < k; t++) {
    dst[d] = src[s0 + t];
    dst[d + 1] = src[s1 + t];
    dst[d + 2] = src[s2 + t];
    dst[d + 3] = src[s3 + t];
    dst[d + 4] = src[s4 + t];
    d += 5;
  }
}

/** Packs `have` ≤ `rows` rows starting at `s0` into a panel of `rows` rows at `d`; missing rows are zero. */
function packPanelGeneric(
  src: Float32Array,
  s0: number,
  have: number,
  k: number,
  rows: number,
  dst: Float32Array,
  d: number,
): void {
  for (let r = 0; r < rows; r++) {
    let o = d + r;
    if (r < have) {
      let s = s0 + r * k;
      for (let t = 0; t < k; t++) {
        dst[o] = src[s];
        s++;
        o += rows;
      }
    } else {
      for (let t = 0; t < k; t++) {
        dst[o] = 0;
        o += rows;
      }
    }
  }
}

/**
 * Packs rows [0, m) of the row-major matrix `src` (offset `off`, row length k) into `dst` at float index
 * `at` as panels of `rows` rows, k-major inside a panel; missing rows of the last panel are zero.
 */
export function packPanels(
  src: Float32Array,
  off: number,
  m: number,
  k: number,
  rows: number,
  dst: Float32Array,
  at: number,
): void {
  for (let p = 0; p < m; p += rows) {
    const have = Math.min(rows, m - p);
    const s0 = off + p * k;
    const d = at + p * k;
    if (have === 8 && rows === 8) packPanel8(src, s0, k, dst, d);
    else if (have === 5 && rows === 5) packPanel5(src, s0, k, dst, d);
    else packPanelGeneric(src, s0, have, k, rows, dst, d);
  }
}

/**
 * Copies `rows` rows of length k (from `src` at `off`) into `dst` at `at` with row stride kp ≥ k, then
 * zero-fills the pad columns and `padRows` extra rows.
 */
function copyRowsPadded(
  src: Float32Array,
  off: number,
  rows: number,
  k: number,
  kp: number,
  padRows: number,
  dst: Float32Array,
  at: number,
): void {
  if (k === kp) {
    dst.set(src.subarray(off, off + rows * k), at);
  } else {
    for (let r = 0; r < rows; r++) {
      dst.set(src.subarray(off + r * k, off + r * k + k), at + r * kp);
      dst.fill(0, at + r * kp + k, at + r * kp + kp);
    }
  }
  dst.fill(0, at + rows * kp, at + (rows + padRows) * kp);
}

/** Copies the m×n result (float index `c0`, row stride `np`) into C at `cOff` (row stride `ldc`). */
function copyOut(
  out: Float32Array,
  c0: number,
  np: number,
  C: Float32Array,
  cOff: number,
  ldc: number,
  m: number,
  n: number,
): void {
  if (n >= 32) {
    for (let i = 0; i < m; i++) C.set(out.subarray(c0 + i * np, c0 + i * np + n), cOff + i * ldc);
    return;
  }
  for (let i = 0; i < m; i++) {
    const s = c0 + i * np;
    const d = cOff + i * ldc;
    for (let j = 0; j < n; j++) C[d + j] = out[s + j];
  }
}

// ---- one block of the product ----

/** Operands of one block: A rows at `aOff`, Bt rows at `bOff`, C at `cOff` with row stride `ldc`. */
interface Block {
  A: Float32Array;
  aOff: number;
  Bt: Float32Array;
  bOff: number;
  C: Float32Array;
  cOff: number;
  ldc: number;
  m: number;
  n: number;
  k: number;
}

/** Computes one block with the packed kernel. */
function runPacked(K: WasmGemmKernel, b: Block, threaded: boolean): void {
  const { mr, nr } = K.config;
  const mp = Math.ceil(b.m / mr) * mr;
  const np = Math.ceil(b.n / nr) * nr;
  const ap = CONTROL_BYTES;
  const bp = ap + mp * b.k * 4;
  const cp = bp + np * b.k * 4;
  K.ensureBytes(cp + mp * np * 4);
  const mem = K.f32;
  packPanels(b.A, b.aOff, b.m, b.k, mr, mem, ap >> 2);
  packPanels(b.Bt, b.bOff, b.n, b.k, nr, mem, bp >> 2);
  const split = chunking(mp, np, nr, Math.max(mr, Math.floor(BLOCKING.mc / mr) * mr), true, threaded);
  execute(K, { kind: JOB_PACKED, ap, bp, cp, mp, np, k: b.k, ldc: np * 4, ...split }, threaded);
  copyOut(K.f32, cp >> 2, np, b.C, b.cOff, b.ldc, b.m, b.n);
}

/** Computes one block with the unpacked few-rows kernel. */
function runDot(K: WasmGemmKernel, b: Block, threaded: boolean): void {
  const mp = Math.ceil(b.m / 2) * 2;
  const np = Math.ceil(b.n / 4) * 4;
  const kp = Math.ceil(b.k / 4) * 4;
  const ap = CONTROL_BYTES;
  const bp = ap + mp * kp * 4;
  const cp = bp + np * kp * 4;
  K.ensureBytes(cp + mp * np * 4);
  const mem = K.f32;
  copyRowsPadded(b.A, b.aOff, b.m, b.k, kp, mp - b.m, mem, ap >> 2);
  copyRowsPadded(b.Bt, b.bOff, b.n, b.k, kp, np - b.n, mem, bp >> 2);
  const split = chunking(mp, np, 4, 2, false, threaded);
  execute(K, { kind: JOB_DOT, ap, bp, cp, mp, np, k: kp, ldc: np * 4, ...split }, threaded);
  copyOut(K.f32, cp >> 2, np, b.C, b.cOff, b.ldc, b.m, b.n);
}

// ---- public entry point ----

/** Throws a RangeError unless `value` is a non-negative integer. */
function checkCount(value: number, name: string): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(`wasm_gemm.ts: gemmF32Wasm got ${name}=${value}; it must be a non-negative integer.`);
  }
}

/** Throws a RangeError unless `arr` holds elements [off, off + count). */
function checkSpan(arr: Float32Array, off: number, count: number, name: string, offName: string, dims: string): void {
  if (!(arr instanceof Float32Array)) {
    throw new TypeError(`wasm_gemm.ts: gemmF32Wasm needs ${name} to be a Float32Array.`);
  }
  if (off + count > arr.length) {
    throw new RangeError(
      `wasm_gemm.ts: gemmF32Wasm needs ${name} to hold ${offName} + ${dims} = ${off + count} elements but it ` +
        `has ${arr.length}; pass a larger array or smaller sizes.`,
    );
  }
}

/**
 * C[m×n] = A[m×k] · Btᵀ for row-major Float32Arrays: A at element offset `aOff` (row length k), Bt [n×k] at
 * `bOff`, C at `cOff` (row length n); only C[cOff, cOff + m·n) is written. Same contract as `gemmABt` in
 * matmul.ts, computed by WebAssembly SIMD kernels that accumulate in f32 (relative Frobenius error against
 * float64 about 6e-7 at n = 1024 for uniform inputs, versus about 4e-8 for `gemmABt`, which accumulates in
 * doubles). Falls back to `gemmABt` when {@link wasmGemmAvailable} is false.
 */
export function gemmF32Wasm(
  A: Float32Array,
  aOff: number,
  Bt: Float32Array,
  bOff: number,
  C: Float32Array,
  cOff: number,
  m: number,
  n: number,
  k: number,
): void {
  checkCount(aOff, "aOff");
  checkCount(bOff, "bOff");
  checkCount(cOff, "cOff");
  checkCount(m, "m");
  checkCount(n, "n");
  checkCount(k, "k");
  checkSpan(A, aOff, m * k, "A", "aOff", "m·k");
  checkSpan(Bt, bOff, n * k, "Bt", "bOff", "n·k");
  checkSpan(C, cOff, m * n, "C", "cOff", "m·n");
  if (m === 0 || n === 0) return;
  if (k === 0) {
    C.fill(0, cOff, cOff + m * n);
    return;
  }
  const K = mainKernel();
  const cap = settings.maxWorkingBytes;
  const { mr, nr } = K?.config ?? PLAIN_CONFIG;
  // The smallest block (one panel of each operand) must fit the cap with room to spare.
  if (!K || ((mr + nr) * k + mr * nr) * 4 * 4 > cap) {
    gemmABt(A, aOff, Bt, bOff, C, cOff, m, n, k);
    return;
  }
  const threaded = settings.threads > 1 && m * n * k >= settings.threadMinWork;
  const run = m <= DOT_MAX_ROWS ? runDot : runPacked;
  // Split into column blocks (rows of Bt) and row blocks (of A) that fit the working-set cap.
  const kp = Math.ceil(k / 4) * 4;
  const nBlock = Math.min(n, Math.max(nr, Math.floor(cap / 2 / (kp * 4) / nr) * nr));
  const npBlock = Math.ceil(nBlock / nr) * nr;
  const mFit = Math.floor((cap - npBlock * kp * 4) / ((kp + npBlock) * 4) / mr) * mr;
  const mBlock = Math.min(m, Math.max(mr, mFit));
  for (let j = 0; j < n; j += nBlock) {
    const nb = Math.min(nBlock, n - j);
    for (let i = 0; i < m; i += mBlock) {
      const mb = Math.min(mBlock, m - i);
      const block: Block = {
        A,
        aOff: aOff + i * k,
        Bt,
        bOff: bOff + j * k,
        C,
        cOff: cOff + i * n + j,
        ldc: n,
        m: mb,
        n: nb,
        k,
      };
      run(K, block, threaded);
    }
  }
}
