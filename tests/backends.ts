/**
 * The backends a test runs on: the CPU backend always, the WebGPU backend when an adapter exists.
 * With MASQUANT_REQUIRE_GPU=1 (set by CI) a missing adapter is a test failure instead of a skip.
 */
import { type Backend, CpuBackend } from "@masquant/core";
import { openWebGPU, type WebGPUBackend } from "@masquant/kernels";

/** True when the environment demands a GPU (CI). */
export const REQUIRE_GPU: boolean = Deno.env.get("MASQUANT_REQUIRE_GPU") === "1";

let gpuPromise: Promise<WebGPUBackend | undefined> | undefined;

/** The shared WebGPU backend of this test process (undefined when no adapter was found). */
export function gpuBackend(): Promise<WebGPUBackend | undefined> {
  gpuPromise ??= openWebGPU();
  return gpuPromise;
}

/** The shared CPU backend. */
export const cpu: CpuBackend = new CpuBackend();

/** CPU plus, when present, WebGPU; throws when a GPU is required but missing. */
export async function allBackends(): Promise<Backend[]> {
  const gpu = await gpuBackend();
  if (!gpu) {
    if (REQUIRE_GPU) throw new Error("MASQUANT_REQUIRE_GPU=1 but no WebGPU adapter was found");
    console.log("skipped: no WebGPU adapter (WebGPU parity tests run on the CPU backend only)");
    return [cpu];
  }
  return [cpu, gpu];
}

/** Registers a test that needs the GPU: fails under MASQUANT_REQUIRE_GPU when absent, else skips visibly. */
export async function gpuTest(name: string, fn: (gpu: WebGPUBackend) => Promise<void> | void): Promise<void> {
  const gpu = await gpuBackend();
  if (!gpu && !REQUIRE_GPU) console.log(`skipped: no WebGPU adapter (${name})`);
  Deno.test({
    name,
    ignore: !gpu && !REQUIRE_GPU,
    fn: async () => {
      if (!gpu) throw new Error("MASQUANT_REQUIRE_GPU=1 but no WebGPU adapter was found");
      await fn(gpu);
    },
  });
}
