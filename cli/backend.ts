/**
 * Choosing a backend. "auto" takes WebGPU on a hardware adapter and the CPU backend otherwise: a software
 * adapter (lavapipe, SwiftShader) runs on the same CPU cores, slower than the CPU backend's WebAssembly
 * kernels for small layers, so it is used only when asked for with "webgpu".
 */
import { type Backend, CpuBackend } from "@masquant/core";
import { openWebGPU } from "@masquant/kernels";

/** Backend choice of the command line. */
export type BackendChoice = "auto" | "webgpu" | "cpu";

/** Opens a backend; "webgpu" fails with a clear sentence when no adapter exists. */
export async function openBackend(choice: BackendChoice = "auto"): Promise<{ backend: Backend; description: string }> {
  if (choice !== "cpu") {
    const gpu = await openWebGPU();
    if (gpu && (choice === "webgpu" || !gpu.ctx.software)) {
      return { backend: gpu, description: `webgpu (${gpu.description})` };
    }
    if (choice === "webgpu") {
      throw new Error(
        "--backend webgpu: no WebGPU adapter was found (dawn-node and Deno's navigator.gpu both failed); " +
          "install a Vulkan driver (e.g. mesa-vulkan-drivers) or use --backend cpu",
      );
    }
  }
  return { backend: new CpuBackend(), description: "cpu (TypeScript + WebAssembly SIMD)" };
}
