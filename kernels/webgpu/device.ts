/**
 * GPU discovery. dawn-node (npm `webgpu`) first, Deno's built-in `navigator.gpu` second; if neither
 * yields an adapter the caller falls back to the CPU backend.
 *
 * Measured dawn-node gotchas handled here:
 * - dawn-node polls its event loop through `setImmediate` while a GPU promise is pending, which keeps
 *   one core busy; routing `setImmediate` through `setTimeout(…, 0)` stops that.
 * - the object returned by `create()` must stay reachable, or the next device call aborts after a GC;
 *   it is pinned on `globalThis` for the life of the process.
 * - the default device caps buffers at 256 MiB: the adapter's limits are requested explicitly.
 */

/** Where a device came from. */
export type GpuProvider = "dawn" | "deno";

/** An opened GPU device and facts about its adapter. */
export interface GpuContext {
  /** The device all kernels run on. */
  device: GPUDevice;
  /** Adapter facts (vendor, architecture, description). */
  info: { vendor: string; architecture: string; device: string; description: string };
  /** Which WebGPU implementation provided it. */
  provider: GpuProvider;
  /** True for software rasterisers (lavapipe/llvmpipe, SwiftShader, WARP): CPU-like kernels run best. */
  software: boolean;
  /** WGSL language features available (e.g. packed_4x8_integer_dot_product). */
  wgslFeatures: Set<string>;
}

/** Options of {@link findGpu}. */
export interface FindGpuOptions {
  /** Restrict to one provider. */
  provider?: GpuProvider;
  /** Ask for a low-power or high-performance adapter. */
  powerPreference?: GPUPowerPreference;
}

const LIMIT_NAMES = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
] as const;

let dawnCache: Promise<{ gpu: GPU; features: Set<string> } | undefined> | undefined;

async function loadDawn(): Promise<{ gpu: GPU; features: Set<string> } | undefined> {
  try {
    const g = globalThis as unknown as Record<string, unknown>;
    if (!g.__masquantSetImmediateThrottled) {
      g.setImmediate = (fn: (...a: unknown[]) => void, ...a: unknown[]) => setTimeout(fn, 0, ...a);
      g.__masquantSetImmediateThrottled = true;
    }
    const mod = await import("webgpu");
    const create = (mod as unknown as { create: (flags: string[]) => GPU }).create;
    const globals = (mod as unknown as { globals?: Record<string, unknown> }).globals;
    if (globals) {
      for (const [k, v] of Object.entries(globals)) if (!(k in g)) g[k] = v;
    }
    const gpu = create([]);
    const pins = (g.__masquantDawnPins ??= []) as unknown[];
    pins.push(gpu);
    const features = new Set<string>(
      [...((gpu as unknown as { wgslLanguageFeatures?: Iterable<string> }).wgslLanguageFeatures ?? [])],
    );
    return { gpu, features };
  } catch {
    return undefined;
  }
}

async function openFrom(
  gpu: GPU,
  provider: GpuProvider,
  wgsl: Set<string>,
  opts: FindGpuOptions,
): Promise<GpuContext | undefined> {
  const adapter = await gpu.requestAdapter({ powerPreference: opts.powerPreference });
  if (!adapter) return undefined;
  const requiredLimits: Record<string, number> = {};
  const limits = adapter.limits as unknown as Record<string, number>;
  for (const name of LIMIT_NAMES) if (typeof limits[name] === "number") requiredLimits[name] = limits[name];
  const device = await adapter.requestDevice({ requiredLimits });
  const raw = adapter.info ?? ({} as GPUAdapterInfo);
  const info = {
    vendor: raw.vendor ?? "",
    architecture: raw.architecture ?? "",
    device: raw.device ?? "",
    description: raw.description ?? "",
  };
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`.toLowerCase();
  const software = /llvmpipe|lavapipe|swiftshader|warp|software|cpu/.test(text) ||
    (adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  return { device, info, provider, software, wgslFeatures: wgsl };
}

/**
 * Finds a GPU: dawn-node first, then Deno's `navigator.gpu`. Resolves to undefined when none is
 * found (no exception), so callers can fall back to the CPU backend.
 */
export async function findGpu(opts: FindGpuOptions = {}): Promise<GpuContext | undefined> {
  if (opts.provider !== "deno") {
    dawnCache ??= loadDawn();
    const dawn = await dawnCache;
    if (dawn) {
      try {
        const ctx = await openFrom(dawn.gpu, "dawn", dawn.features, opts);
        if (ctx) return ctx;
      } catch {
        // fall through to the next provider
      }
    }
  }
  if (opts.provider !== "dawn") {
    const nav = (globalThis as unknown as { navigator?: { gpu?: GPU } }).navigator;
    if (nav?.gpu) {
      try {
        const feats = new Set<string>([
          ...((nav.gpu as unknown as { wgslLanguageFeatures?: Iterable<string> })
            .wgslLanguageFeatures ?? []),
        ]);
        return await openFrom(nav.gpu, "deno", feats, opts);
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}
