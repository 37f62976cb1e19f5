/**
 * Helper thread of the WebAssembly gemm (started by wasm_gemm.ts through `node:worker_threads`). It receives
 * the compiled module and the shared memory, instantiates the kernel, raises the READY slot, then sleeps in
 * `Atomics.wait` until a job is published and claims chunks of it alongside the main thread.
 */
import { parentPort } from "node:worker_threads";
import {
  CONTROL_BYTES,
  type GemmBlocking,
  type GemmKernelConfig,
  readJob,
  seqTag,
  SLOT_ERROR,
  SLOT_HELPER_CHUNKS,
  SLOT_READY,
  SLOT_SEQ,
  WasmGemmKernel,
  workOnJob,
} from "./wasm_gemm_kernel.ts";

/** The start message sent by the main thread. */
export interface HelperStart {
  /** Kernel options the module was built with. */
  config: GemmKernelConfig;
  /** Loop-nest blocking. */
  blocking: GemmBlocking;
  /** The compiled module. */
  module: WebAssembly.Module;
  /** The shared memory holding the control block and operands. */
  memory: WebAssembly.Memory;
}

/** Serves jobs forever (the thread is unref'd, so it never keeps the process alive). */
function serve(start: HelperStart): void {
  const kernel = new WasmGemmKernel(start.config, start.blocking, start.module, start.memory);
  const ctl = new Int32Array(start.memory.buffer, 0, CONTROL_BYTES / 4);
  let seen = Atomics.load(ctl, SLOT_SEQ);
  Atomics.store(ctl, SLOT_READY, 1);
  for (;;) {
    Atomics.wait(ctl, SLOT_SEQ, seen);
    seen = Atomics.load(ctl, SLOT_SEQ);
    const ran = workOnJob(kernel, ctl, readJob(ctl), seqTag(seen), () => Atomics.store(ctl, SLOT_ERROR, 1));
    if (ran > 0) Atomics.add(ctl, SLOT_HELPER_CHUNKS, ran);
  }
}

parentPort?.once("message", (start: HelperStart) => serve(start));
