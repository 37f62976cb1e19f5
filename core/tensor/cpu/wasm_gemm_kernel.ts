/**
 * The WebAssembly SIMD kernels behind the f32 gemm (see wasm_gemm.ts), assembled at load time, and the job
 * protocol that lets one or two threads share a product. Two kernels live in one module:
 *
 * - `gemm`: operands packed into panels (A in MR-row panels, Bt in NR-row panels, k-major, zero-padded); an
 *   MR×NR register block of f32x4 accumulators runs over k-blocks (BLIS-style loop nest).
 * - `dot`: operands unpacked (row-major, k padded to a multiple of 4); a 2×4 block of f32x4 dot products
 *   along k, for products with few rows of A where packing Bt would cost more than it saves.
 *
 * A job splits the columns of C into chunks; threads claim chunks through an atomic counter in a control
 * block at the start of the (shared) memory, so a slow thread never holds the others back.
 */
import { type FuncBody, ModuleBuilder, ValType } from "./wasm_asm.ts";

const { i32, v128 } = ValType;

/** Register block and code options of the generated gemm kernel. */
export interface GemmKernelConfig {
  /** Rows of A per micro-tile. */
  mr: number;
  /** Columns of C per micro-tile (a multiple of 4). */
  nr: number;
  /** Unroll factor of the k loop (a power of two). */
  unroll: number;
  /** Use `f32x4.relaxed_madd` instead of separate multiply and add. */
  fma: boolean;
  /** Whether the imported memory is shared (for use from several threads). */
  shared: boolean;
}

/** Block sizes of the gemm loop nest. */
export interface GemmBlocking {
  /** Depth of one k-block. */
  kc: number;
  /** Rows of A per row block (a multiple of MR). */
  mc: number;
}

/** Largest memory, in 64 KiB pages, that the generated module accepts (4 GiB). */
export const WASM_MAX_PAGES = 65536;

/** Bytes at the start of memory reserved for the job control block; operands start here. */
export const CONTROL_BYTES = 128;

/** Emits `for (i = start; i < end; i += step) body()`; the callbacks push start, end and step. */
function forLoop(
  f: FuncBody,
  i: number,
  start: () => void,
  end: () => void,
  step: () => void,
  body: () => void,
): void {
  start();
  f.set(i);
  f.block();
  f.get(i);
  end();
  f.i32GeS().brIf(0);
  f.loop();
  body();
  f.get(i);
  step();
  f.i32Add().tee(i);
  end();
  f.i32LtS().brIf(0);
  f.end();
  f.end();
}

/** Emits `acc = acc + x·y` for v128 locals, fused when `fma`. */
function emitMadd(f: FuncBody, fma: boolean, acc: number, x: number, y: number): void {
  if (fma) f.get(x).get(y).get(acc).f32x4RelaxedMadd();
  else f.get(acc).get(x).get(y).f32x4Mul().f32x4Add();
  f.set(acc);
}

/** Emits `micro(a, b, c, kc, ldc, accumulate)`: C tile (+)= A panel · B panel; ldc in bytes; kc ≥ 1. */
function emitMicroKernel(f: FuncBody, cfg: GemmKernelConfig): void {
  const { mr, nr, unroll, fma } = cfg;
  const nq = nr / 4;
  const [a, b, c, kc, ldc, accumulate] = [0, 1, 2, 3, 4, 5];
  const acc: number[][] = [];
  for (let r = 0; r < mr; r++) {
    acc.push([]);
    for (let q = 0; q < nq; q++) acc[r].push(f.local(v128));
  }
  const bv: number[] = [];
  for (let q = 0; q < nq; q++) bv.push(f.local(v128));
  const av = f.local(v128);
  const aEnd = f.local(i32);
  const aEndMain = f.local(i32);
  const row: number[] = [];
  for (let r = 0; r < mr; r++) row.push(f.local(i32));

  f.get(c).set(row[0]);
  for (let r = 1; r < mr; r++) f.get(row[r - 1]).get(ldc).i32Add().set(row[r]);

  f.get(accumulate).if();
  for (let r = 0; r < mr; r++) for (let q = 0; q < nq; q++) f.get(row[r]).v128Load(q * 16).set(acc[r][q]);
  f.else();
  for (let r = 0; r < mr; r++) for (let q = 0; q < nq; q++) f.f32x4Const(0).set(acc[r][q]);
  f.end();

  // aEnd = a + kc·mr·4; aEndMain = a + (kc rounded down to the unroll)·mr·4.
  f.get(a).get(kc).i32Const(mr * 4).i32Mul().i32Add().set(aEnd);
  f.get(a).get(kc).i32Const(-unroll).i32And().i32Const(mr * 4).i32Mul().i32Add().set(aEndMain);

  const step = (u: number) => {
    for (let q = 0; q < nq; q++) f.get(b).v128Load((u * nr + q * 4) * 4).set(bv[q]);
    for (let r = 0; r < mr; r++) {
      f.get(a).v128Load32Splat((u * mr + r) * 4).set(av);
      for (let q = 0; q < nq; q++) emitMadd(f, fma, acc[r][q], av, bv[q]);
    }
  };
  const advance = (steps: number) => {
    f.get(a).i32Const(steps * mr * 4).i32Add().set(a);
    f.get(b).i32Const(steps * nr * 4).i32Add().set(b);
  };

  f.get(a).get(aEndMain).i32Ne().if();
  f.loop();
  for (let u = 0; u < unroll; u++) step(u);
  advance(unroll);
  f.get(a).get(aEndMain).i32Ne().brIf(0);
  f.end();
  f.end();
  if (unroll > 1) {
    f.get(a).get(aEnd).i32Ne().if();
    f.loop();
    step(0);
    advance(1);
    f.get(a).get(aEnd).i32Ne().brIf(0);
    f.end();
    f.end();
  }

  for (let r = 0; r < mr; r++) for (let q = 0; q < nq; q++) f.get(row[r]).get(acc[r][q]).v128Store(q * 16);
}

/**
 * Emits `gemm(ap, bp, c, mp, np, k, kcBlock, mcBlock, ldc)`: packed A [mp rows] times packed B [np columns]
 * into C (row stride ldc bytes). `mp`/`np` are multiples of MR/NR and `k` ≥ 1. Loop nest: k-blocks, row
 * blocks, B panels, A panels; the B micro-panel stays in L1 while the A block streams from L2.
 */
function emitDriver(f: FuncBody, cfg: GemmKernelConfig, micro: number): void {
  const { mr, nr } = cfg;
  const [ap, bp, c, mp, np, k, kcBlock, mcBlock, ldc] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const pc = f.local(i32);
  const kc = f.local(i32);
  const ic = f.local(i32);
  const icEnd = f.local(i32);
  const jr = f.local(i32);
  const ir = f.local(i32);
  const bPtr = f.local(i32);
  const cCol = f.local(i32);

  forLoop(f, pc, () => f.i32Const(0), () => f.get(k), () => f.get(kcBlock), () => {
    // kc = min(kcBlock, k - pc)
    f.get(kcBlock).get(k).get(pc).i32Sub().tee(kc).get(kcBlock).get(kc).i32LtS().select().set(kc);
    forLoop(f, ic, () => f.i32Const(0), () => f.get(mp), () => f.get(mcBlock), () => {
      // icEnd = min(ic + mcBlock, mp)
      f.get(ic).get(mcBlock).i32Add().get(mp).get(ic).get(mcBlock).i32Add().get(mp).i32LtS().select().set(icEnd);
      forLoop(f, jr, () => f.i32Const(0), () => f.get(np), () => f.i32Const(nr), () => {
        // bPtr = bp + (jr·k + pc·nr)·4; cCol = c + jr·4
        f.get(bp).get(jr).get(k).i32Mul().get(pc).i32Const(nr).i32Mul().i32Add().i32Const(4).i32Mul().i32Add()
          .set(bPtr);
        f.get(c).get(jr).i32Const(4).i32Mul().i32Add().set(cCol);
        forLoop(f, ir, () => f.get(ic), () => f.get(icEnd), () => f.i32Const(mr), () => {
          // micro(ap + (ir·k + pc·mr)·4, bPtr, cCol + ir·ldc, kc, ldc, pc != 0)
          f.get(ap).get(ir).get(k).i32Mul().get(pc).i32Const(mr).i32Mul().i32Add().i32Const(4).i32Mul().i32Add();
          f.get(bPtr);
          f.get(cCol).get(ir).get(ldc).i32Mul().i32Add();
          f.get(kc).get(ldc).get(pc).i32Const(0).i32Ne();
          f.call(micro);
        });
      });
    });
  });
}

/**
 * Emits `dot(a, bt, c, mp, np, kp, ldc)`: C[i, j] = A[i, :]·Bt[j, :] with A [mp×kp] and Bt [np×kp] row-major
 * (kp a multiple of 4, mp of 2, np of 4, zero-padded) and C row stride ldc bytes. Bt row quads are the outer
 * loop and A row pairs the inner one, so each Bt row is read from memory once while A stays in cache.
 */
function emitDotKernel(f: FuncBody, fma: boolean): void {
  const [a, bt, c, mp, np, kp, ldc] = [0, 1, 2, 3, 4, 5, 6];
  const acc: number[][] = [[], []];
  for (let r = 0; r < 2; r++) for (let q = 0; q < 4; q++) acc[r].push(f.local(v128));
  const av = [f.local(v128), f.local(v128)];
  const bv = [f.local(v128), f.local(v128), f.local(v128), f.local(v128)];
  const i = f.local(i32);
  const j = f.local(i32);
  const rowBytes = f.local(i32);
  const pa = [f.local(i32), f.local(i32)];
  const pb = [f.local(i32), f.local(i32), f.local(i32), f.local(i32)];
  const paEnd = f.local(i32);
  const bRow = f.local(i32);
  const cRow = f.local(i32);

  f.get(kp).i32Const(4).i32Mul().set(rowBytes);
  forLoop(f, j, () => f.i32Const(0), () => f.get(np), () => f.i32Const(4), () => {
    f.get(bt).get(j).get(rowBytes).i32Mul().i32Add().set(bRow);
    forLoop(f, i, () => f.i32Const(0), () => f.get(mp), () => f.i32Const(2), () => {
      f.get(a).get(i).get(rowBytes).i32Mul().i32Add().tee(pa[0]).get(rowBytes).i32Add().set(pa[1]);
      f.get(pa[0]).get(rowBytes).i32Add().set(paEnd);
      f.get(bRow).set(pb[0]);
      for (let q = 1; q < 4; q++) f.get(pb[q - 1]).get(rowBytes).i32Add().set(pb[q]);
      for (let r = 0; r < 2; r++) for (let q = 0; q < 4; q++) f.f32x4Const(0).set(acc[r][q]);
      f.loop();
      for (let r = 0; r < 2; r++) f.get(pa[r]).v128Load(0).set(av[r]);
      for (let q = 0; q < 4; q++) f.get(pb[q]).v128Load(0).set(bv[q]);
      for (let r = 0; r < 2; r++) for (let q = 0; q < 4; q++) emitMadd(f, fma, acc[r][q], av[r], bv[q]);
      for (const p of [...pa, ...pb]) f.get(p).i32Const(16).i32Add().set(p);
      f.get(pa[0]).get(paEnd).i32LtU().brIf(0);
      f.end();
      // Sum the lanes of each accumulator into C[i + r, j + q].
      f.get(c).get(i).get(ldc).i32Mul().i32Add().get(j).i32Const(4).i32Mul().i32Add().set(cRow);
      for (let r = 0; r < 2; r++) {
        for (let q = 0; q < 4; q++) {
          f.get(cRow);
          if (r === 1) f.get(ldc).i32Add();
          f.get(acc[r][q]).f32x4ExtractLane(0).get(acc[r][q]).f32x4ExtractLane(1).f32Add();
          f.get(acc[r][q]).f32x4ExtractLane(2).get(acc[r][q]).f32x4ExtractLane(3).f32Add().f32Add();
          f.f32Store(q * 4);
        }
      }
    });
  });
}

/** Assembles the module for `cfg`: imports memory `env.mem`; exports `gemm`, `micro` and `dot`. */
export function buildGemmModule(cfg: GemmKernelConfig): Uint8Array<ArrayBuffer> {
  if (cfg.nr % 4 !== 0 || cfg.nr < 4) {
    throw new RangeError(`wasm_gemm_kernel.ts: nr=${cfg.nr} must be a multiple of 4.`);
  }
  if (!Number.isInteger(cfg.mr) || cfg.mr < 1) throw new RangeError(`wasm_gemm_kernel.ts: mr=${cfg.mr} must be ≥ 1.`);
  if (cfg.unroll < 1 || (cfg.unroll & (cfg.unroll - 1)) !== 0) {
    throw new RangeError(`wasm_gemm_kernel.ts: unroll=${cfg.unroll} must be a power of two.`);
  }
  const mod = new ModuleBuilder();
  mod.importMemory("env", "mem", { initial: 1, maximum: WASM_MAX_PAGES, shared: cfg.shared });
  const micro = mod.addFunction({ params: [i32, i32, i32, i32, i32, i32], results: [] });
  emitMicroKernel(micro.body, cfg);
  const gemm = mod.addFunction({ params: [i32, i32, i32, i32, i32, i32, i32, i32, i32], results: [] });
  emitDriver(gemm.body, cfg, micro.index);
  const dot = mod.addFunction({ params: [i32, i32, i32, i32, i32, i32, i32], results: [] });
  emitDotKernel(dot.body, cfg.fma);
  mod.exportFunction("micro", micro.index);
  mod.exportFunction("gemm", gemm.index);
  mod.exportFunction("dot", dot.index);
  return mod.encode();
}

type GemmExport = (
  ap: number,
  bp: number,
  c: number,
  mp: number,
  np: number,
  k: number,
  kc: number,
  mc: number,
  ldc: number,
) => void;
type DotExport = (a: number, bt: number, c: number, mp: number, np: number, kp: number, ldc: number) => void;

/** Job kind: packed panels, `gemm` kernel. */
export const JOB_PACKED = 0;
/** Job kind: unpacked rows, `dot` kernel. */
export const JOB_DOT = 1;
/** Which kernel a job runs. */
export type JobKind = typeof JOB_PACKED | typeof JOB_DOT;

/**
 * One product laid out in wasm memory: byte addresses of A, B (packed or padded rows) and C; padded sizes;
 * k (packed) or kp (dot); C row stride in bytes; how the work is cut into chunks.
 */
export interface GemmJob {
  /** Kernel to run. */
  kind: JobKind;
  /** Byte address of A. */
  ap: number;
  /** Byte address of B. */
  bp: number;
  /** Byte address of C. */
  cp: number;
  /** Padded rows of A. */
  mp: number;
  /** Padded columns of C. */
  np: number;
  /** Depth (k for packed jobs, padded kp for dot jobs). */
  k: number;
  /** Row stride of C in bytes. */
  ldc: number;
  /** Whether chunks are row ranges (packed jobs only) rather than column ranges. */
  byRows: boolean;
  /** Rows or columns of C per chunk (a multiple of the kernel's block in that direction). */
  chunkSize: number;
  /** Number of chunks (at most 65535). */
  chunks: number;
}

/** A compiled kernel instantiated on one memory (one per thread). */
export class WasmGemmKernel {
  /** Register block and code options. */
  readonly config: GemmKernelConfig;
  /** Blocking of the gemm loop nest. */
  readonly blocking: GemmBlocking;
  /** The compiled module (can be sent to a worker). */
  readonly module: WebAssembly.Module;
  /** The linear memory the kernel reads and writes. */
  readonly memory: WebAssembly.Memory;
  readonly #gemm: GemmExport;
  readonly #dot: DotExport;
  #f32: Float32Array;

  /** Instantiates `module` (built from `config`) on `memory`. */
  constructor(
    config: GemmKernelConfig,
    blocking: GemmBlocking,
    module: WebAssembly.Module,
    memory: WebAssembly.Memory,
  ) {
    if (!(blocking.kc >= 1) || !(blocking.mc >= config.mr) || blocking.mc % config.mr !== 0) {
      throw new RangeError(
        `wasm_gemm_kernel.ts: blocking kc=${blocking.kc}, mc=${blocking.mc} is invalid; kc must be ≥ 1 and mc a ` +
          `positive multiple of mr=${config.mr}.`,
      );
    }
    this.config = config;
    this.blocking = blocking;
    this.module = module;
    this.memory = memory;
    const instance = new WebAssembly.Instance(module, { env: { mem: memory } });
    this.#gemm = instance.exports.gemm as GemmExport;
    this.#dot = instance.exports.dot as DotExport;
    this.#f32 = new Float32Array(memory.buffer);
  }

  /** Compiles the kernel for `config` and binds it to a new memory (shared when `config.shared`). */
  static create(config: GemmKernelConfig, blocking: GemmBlocking): WasmGemmKernel {
    const module = new WebAssembly.Module(buildGemmModule(config));
    const memory = new WebAssembly.Memory(
      { initial: 16, maximum: WASM_MAX_PAGES, shared: config.shared } as WebAssembly.MemoryDescriptor,
    );
    return new WasmGemmKernel(config, blocking, module, memory);
  }

  /** A Float32Array view of the whole memory (refreshed after growth). */
  get f32(): Float32Array {
    const buf = this.memory.buffer;
    if (this.#f32.buffer !== buf || this.#f32.byteLength !== buf.byteLength) this.#f32 = new Float32Array(buf);
    return this.#f32;
  }

  /** Grows the memory so that it holds at least `bytes` bytes. */
  ensureBytes(bytes: number): void {
    const have = this.memory.buffer.byteLength;
    if (bytes <= have) return;
    try {
      this.memory.grow(Math.ceil((bytes - have) / 65536));
    } catch (e) {
      throw new RangeError(
        `wasm_gemm_kernel.ts: cannot grow the WebAssembly memory from ${have} to ${bytes} bytes ` +
          `(${(e as Error).message}); use a smaller working-set cap.`,
      );
    }
  }

  /** Runs the packed kernel (see {@link emitDriver}); addresses and `ldc` in bytes. */
  gemm(ap: number, bp: number, c: number, mp: number, np: number, k: number, ldc: number): void {
    this.#gemm(ap, bp, c, mp, np, k, this.blocking.kc, this.blocking.mc, ldc);
  }

  /** Runs the unpacked few-rows kernel (see {@link emitDotKernel}); addresses and `ldc` in bytes. */
  dot(a: number, bt: number, c: number, mp: number, np: number, kp: number, ldc: number): void {
    this.#dot(a, bt, c, mp, np, kp, ldc);
  }

  /** Runs chunk `index` of `job`: a range of rows or columns of C. */
  runChunk(job: GemmJob, index: number): void {
    if (job.byRows) {
      const i0 = index * job.chunkSize;
      const rows = Math.min(job.chunkSize, job.mp - i0);
      this.gemm(job.ap + i0 * job.k * 4, job.bp, job.cp + i0 * job.ldc, rows, job.np, job.k, job.ldc);
      return;
    }
    const j0 = index * job.chunkSize;
    const cols = Math.min(job.chunkSize, job.np - j0);
    if (job.kind === JOB_PACKED) {
      this.gemm(job.ap, job.bp + j0 * job.k * 4, job.cp + j0 * 4, job.mp, cols, job.k, job.ldc);
    } else {
      this.dot(job.ap, job.bp + j0 * job.k * 4, job.cp + j0 * 4, job.mp, cols, job.k, job.ldc);
    }
  }
}

// ---- control block (Int32 slots at byte 0 of the shared memory) ----

/** Job sequence number; bumped (and notified) to publish a job. */
export const SLOT_SEQ = 0;
/** Next chunk to claim: (sequence tag << 16) | chunk index. */
export const SLOT_NEXT = 1;
/** Chunks finished in the current job. */
export const SLOT_DONE = 2;
/** Set to 1 by the helper thread once its kernel is instantiated. */
export const SLOT_READY = 3;
/** Set to 1 when a chunk threw on the helper thread. */
export const SLOT_ERROR = 4;
/** First of the 11 argument slots (slots 5 to 15). */
const SLOT_ARGS = 5;
/** Chunks run by the helper thread since it started (statistics). */
export const SLOT_HELPER_CHUNKS = 16;

/** Tag of sequence number `seq` as stored in {@link SLOT_NEXT}. */
export function seqTag(seq: number): number {
  return seq & 0x7fff;
}

/** Writes the job's arguments into the control block (plain stores, published by the SEQ store after). */
export function writeJob(ctl: Int32Array, job: GemmJob): void {
  const o = SLOT_ARGS;
  ctl[o] = job.kind;
  ctl[o + 1] = job.ap;
  ctl[o + 2] = job.bp;
  ctl[o + 3] = job.cp;
  ctl[o + 4] = job.mp;
  ctl[o + 5] = job.np;
  ctl[o + 6] = job.k;
  ctl[o + 7] = job.ldc;
  ctl[o + 8] = job.byRows ? 1 : 0;
  ctl[o + 9] = job.chunkSize;
  ctl[o + 10] = job.chunks;
}

/** Reads the job last written by {@link writeJob}. */
export function readJob(ctl: Int32Array): GemmJob {
  const o = SLOT_ARGS;
  return {
    kind: ctl[o] as JobKind,
    ap: ctl[o + 1],
    bp: ctl[o + 2],
    cp: ctl[o + 3],
    mp: ctl[o + 4],
    np: ctl[o + 5],
    k: ctl[o + 6],
    ldc: ctl[o + 7],
    byRows: ctl[o + 8] === 1,
    chunkSize: ctl[o + 9],
    chunks: ctl[o + 10],
  };
}

/**
 * Claims the next chunk of the job tagged `tag`; returns its index, or -1 when the job is finished or has
 * been replaced. A successful claim also proves that the job's arguments read before it are current: a new
 * job is only written after every chunk of the previous one has been claimed and finished.
 */
export function claimChunk(ctl: Int32Array, tag: number, chunks: number): number {
  for (;;) {
    const v = Atomics.load(ctl, SLOT_NEXT);
    if (v >>> 16 !== tag) return -1;
    const index = v & 0xffff;
    if (index >= chunks) return -1;
    if (Atomics.compareExchange(ctl, SLOT_NEXT, v, v + 1) === v) return index;
  }
}

/**
 * Claims and runs chunks of the job tagged `tag` until none are left; counts each in {@link SLOT_DONE}.
 * Returns the number of chunks this thread ran.
 */
export function workOnJob(
  kernel: WasmGemmKernel,
  ctl: Int32Array,
  job: GemmJob,
  tag: number,
  onError: (error: unknown) => void,
): number {
  let ran = 0;
  for (;;) {
    const index = claimChunk(ctl, tag, job.chunks);
    if (index < 0) return ran;
    ran++;
    try {
      kernel.runChunk(job, index);
    } catch (error) {
      onError(error);
    }
    Atomics.add(ctl, SLOT_DONE, 1);
    Atomics.notify(ctl, SLOT_DONE);
  }
}
