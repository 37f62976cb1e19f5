/**
 * The WebGPU execution layer: buffer pool, pipeline cache, command batching, uniform parameters and
 * binding windows (storage bindings are limited to maxStorageBufferBindingSize, so large tensors are
 * bound in slices at aligned offsets).
 */
import type { GpuContext } from "./device.ts";

/** Usage flags of every tensor buffer. */
const TENSOR_USAGE = 0x80 /* STORAGE */ | 0x04 /* COPY_SRC */ | 0x08; /* COPY_DST */
const UNIFORM_USAGE = 0x40; /* UNIFORM */
const MAP_READ_USAGE = 0x01 /* MAP_READ */ | 0x08; /* COPY_DST */

/** Builds a uniform block of 4-byte fields in declaration order (padded to 16 bytes). */
export class Params {
  readonly #words: number[] = [];
  readonly #kinds: ("u" | "i" | "f")[] = [];

  /** Appends a u32 field. */
  u(v: number): this {
    if (!(v >= 0 && v <= 0xffffffff) || !Number.isInteger(v)) throw new RangeError(`u32 parameter out of range: ${v}`);
    this.#words.push(v);
    this.#kinds.push("u");
    return this;
  }

  /** Appends an i32 field. */
  i(v: number): this {
    this.#words.push(v | 0);
    this.#kinds.push("i");
    return this;
  }

  /** Appends an f32 field. */
  f(v: number): this {
    this.#words.push(v);
    this.#kinds.push("f");
    return this;
  }

  /** Pads with u32 zeros up to a multiple of `n` fields (to start a vec4 array at 16 bytes). */
  align(n = 4): this {
    while (this.#words.length % n) this.u(0);
    return this;
  }

  /** Appends `len` u32 slots (an array<vec4<u32>, len/4>) holding `vals` then zeros. */
  uvec(vals: readonly number[], len: number): this {
    this.align();
    for (let i = 0; i < len; i++) this.u(vals[i] ?? 0);
    return this;
  }

  /**
   * The bytes, zero padded to at least 256 bytes: a uniform binding must be as large as the WGSL
   * struct, and every kernel's struct is smaller than that.
   */
  bytes(): ArrayBuffer {
    const n = Math.max(64, Math.ceil(this.#words.length / 4) * 4);
    const buf = new ArrayBuffer(n * 4);
    const u = new Uint32Array(buf);
    const i = new Int32Array(buf);
    const f = new Float32Array(buf);
    this.#words.forEach((w, k) => {
      const kind = this.#kinds[k];
      if (kind === "u") u[k] = w;
      else if (kind === "i") i[k] = w;
      else f[k] = w;
    });
    return buf;
  }
}

/** A slice of a buffer bound to one binding, and the element offset of the wanted start inside it. */
export interface Window {
  binding: GPUBufferBinding;
  /** Element offset (in units of the element size) of the requested start within the binding. */
  off: number;
}

/** Size classes: powers of two up to 1 MiB, then multiples of 1 MiB. */
function sizeClass(bytes: number): number {
  const b = Math.max(256, bytes);
  if (b <= 1 << 20) return 2 ** Math.ceil(Math.log2(b));
  return Math.ceil(b / (1 << 20)) * (1 << 20);
}

/** Options of the runtime. */
export interface RuntimeOptions {
  /** Largest storage binding in bytes (default: the device limit). Small values exercise slicing in tests. */
  maxBindingBytes?: number;
  /** Dispatches recorded before a submit (default 64). */
  batch?: number;
  /** Bytes kept in the free pool before buffers are destroyed (default 1 GiB). */
  poolBytes?: number;
}

/** Owns the device-side machinery shared by all kernels. */
export class GpuRuntime {
  readonly device: GPUDevice;
  readonly maxBinding: number;
  readonly align: number;
  readonly maxGroups: number;
  readonly maxBuffer: number;
  readonly #batch: number;
  readonly #poolCap: number;
  readonly #pool = new Map<number, GPUBuffer[]>();
  #pooledBytes = 0;
  readonly #pipelines = new Map<string, GPUComputePipeline>();
  #encoder: GPUCommandEncoder | undefined;
  #pass: GPUComputePassEncoder | undefined;
  #recorded = 0;
  #transient: GPUBuffer[] = [];
  #error: string | undefined;
  /** Dispatches issued since creation (for tests and benchmarks). */
  dispatches = 0;

  constructor(readonly ctx: GpuContext, opts: RuntimeOptions = {}) {
    this.device = ctx.device;
    const lim = this.device.limits;
    this.maxBinding = Math.min(opts.maxBindingBytes ?? Infinity, lim.maxStorageBufferBindingSize);
    this.align = lim.minStorageBufferOffsetAlignment;
    this.maxGroups = lim.maxComputeWorkgroupsPerDimension;
    this.maxBuffer = lim.maxBufferSize;
    this.#batch = opts.batch ?? 64;
    this.#poolCap = opts.poolBytes ?? 1 << 30;
    this.device.addEventListener?.("uncapturederror", (ev: Event) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      this.#error ??= e?.message ?? String(e);
    });
  }

  /** Throws if the device reported an error since the last check. */
  checkError(): void {
    if (this.#error) {
      const e = this.#error;
      this.#error = undefined;
      throw new Error(`webgpu: device error: ${e}`);
    }
  }

  // ---- buffers -------------------------------------------------------------------------------

  /** A tensor buffer of at least `bytes` bytes (pooled). */
  alloc(bytes: number): GPUBuffer {
    const size = sizeClass(bytes);
    if (size > this.maxBuffer) {
      throw new RangeError(
        `webgpu: a ${bytes}-byte tensor exceeds the device's largest buffer (${this.maxBuffer} bytes)`,
      );
    }
    const free = this.#pool.get(size);
    const b = free?.pop();
    if (b) {
      this.#pooledBytes -= size;
      return b;
    }
    return this.device.createBuffer({ size, usage: TENSOR_USAGE });
  }

  /** A new buffer initialised with `data` (mapped at creation: no ordering hazards with pending work). */
  upload(data: ArrayBufferView): GPUBuffer {
    const size = sizeClass(data.byteLength);
    const b = this.device.createBuffer({ size, usage: TENSOR_USAGE, mappedAtCreation: true });
    new Uint8Array(b.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    b.unmap();
    return b;
  }

  /** Returns a buffer to the pool (or destroys it when the pool is full). */
  free(b: GPUBuffer): void {
    const size = b.size;
    if (this.#pooledBytes + size > this.#poolCap) {
      this.#transient.push(b);
      return;
    }
    let list = this.#pool.get(size);
    if (!list) this.#pool.set(size, list = []);
    list.push(b);
    this.#pooledBytes += size;
  }

  /** Bytes held in the free pool. */
  get pooledBytes(): number {
    return this.#pooledBytes;
  }

  /** Destroys every pooled buffer. */
  trimPool(): void {
    this.flush();
    for (const list of this.#pool.values()) for (const b of list) this.#transient.push(b);
    this.#pool.clear();
    this.#pooledBytes = 0;
  }

  /**
   * A binding window over elements [start, end) of `buffer` (element size `eb` bytes): the offset is
   * rounded down to the device alignment and the element offset inside the window returned.
   */
  window(buffer: GPUBuffer, start: number, end: number, eb = 4): Window {
    const startB = start * eb;
    const offB = Math.floor(startB / this.align) * this.align;
    let size = Math.max(end * eb - offB, 4);
    size = Math.ceil(size / 4) * 4;
    if (offB + size > buffer.size) size = buffer.size - offB;
    if (size > this.maxBinding) {
      throw new RangeError(`webgpu: internal error: a ${size}-byte binding exceeds the ${this.maxBinding}-byte limit`);
    }
    return { binding: { buffer, offset: offB, size }, off: (startB - offB) / eb };
  }

  /** Largest element count whose window is guaranteed to fit one binding. */
  bindableElems(eb = 4): number {
    return Math.floor((this.maxBinding - this.align - 16) / eb);
  }

  // ---- dispatch ------------------------------------------------------------------------------

  /** Compute pipeline for a WGSL source (entry point `main`), cached by source text. */
  pipeline(code: string): GPUComputePipeline {
    let p = this.#pipelines.get(code);
    if (!p) {
      const module = this.device.createShaderModule({ code });
      p = this.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
      this.#pipelines.set(code, p);
    }
    return p;
  }

  /** Number of distinct pipelines compiled so far. */
  get pipelineCount(): number {
    return this.#pipelines.size;
  }

  /**
   * Records one dispatch: binding 0 is the uniform block built from `params`, bindings 1… are the
   * given windows/buffers in order.
   */
  dispatch(
    code: string,
    params: Params,
    bindings: (GPUBufferBinding | GPUBuffer)[],
    groups: [number, number, number],
  ): void {
    if (groups[0] === 0 || groups[1] === 0 || groups[2] === 0) return;
    for (const g of groups) {
      if (g > this.maxGroups) {
        throw new RangeError(`webgpu: internal error: ${g} workgroups exceed the per-dimension limit`);
      }
    }
    const pipe = this.pipeline(code);
    const bytes = params.bytes();
    const ub = this.device.createBuffer({ size: bytes.byteLength, usage: UNIFORM_USAGE, mappedAtCreation: true });
    new Uint8Array(ub.getMappedRange()).set(new Uint8Array(bytes));
    ub.unmap();
    this.#transient.push(ub);
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: ub } }];
    bindings.forEach((b, i) => {
      const res = "buffer" in b ? b as GPUBufferBinding : { buffer: b as GPUBuffer };
      entries.push({ binding: i + 1, resource: res });
    });
    const group = this.device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries });
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder();
    if (!this.#pass) this.#pass = this.#encoder.beginComputePass();
    this.#pass.setPipeline(pipe);
    this.#pass.setBindGroup(0, group);
    this.#pass.dispatchWorkgroups(groups[0], groups[1], groups[2]);
    this.dispatches++;
    if (++this.#recorded >= this.#batch) this.flush();
  }

  /** Workgroup grid for `n` workgroups of a 1-D kernel (split over y beyond the per-dimension limit). */
  grid1d(n: number): [number, number, number] {
    if (n <= this.maxGroups) return [n, 1, 1];
    return [this.maxGroups, Math.ceil(n / this.maxGroups), 1];
  }

  /** Records a buffer copy (ends the open compute pass). */
  copy(src: GPUBuffer, srcOff: number, dst: GPUBuffer, dstOff: number, bytes: number): void {
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder();
    if (this.#pass) {
      this.#pass.end();
      this.#pass = undefined;
    }
    this.#encoder.copyBufferToBuffer(src, srcOff, dst, dstOff, bytes);
    this.#recorded++;
  }

  /** Submits recorded work. */
  flush(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = undefined;
    }
    if (this.#encoder) {
      this.device.queue.submit([this.#encoder.finish()]);
      this.#encoder = undefined;
    }
    this.#recorded = 0;
    for (const b of this.#transient) b.destroy();
    this.#transient = [];
  }

  /** Waits for all submitted work. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.checkError();
  }

  /** Copies `bytes` bytes at `offset` of a buffer back to the host. */
  async readBytes(src: GPUBuffer, offset: number, bytes: number): Promise<Uint8Array> {
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    const staging = this.device.createBuffer({ size, usage: MAP_READ_USAGE });
    this.copy(src, offset, staging, 0, size);
    this.flush();
    await staging.mapAsync(1 /* GPUMapMode.READ */);
    const out = new Uint8Array(staging.getMappedRange().slice(0, bytes));
    staging.unmap();
    staging.destroy();
    this.checkError();
    return out;
  }
}
