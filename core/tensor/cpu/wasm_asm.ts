/**
 * A small WebAssembly binary assembler: enough of the format (type, import, function, memory, export and
 * code sections) and of the instruction set (integer arithmetic, structured control flow, scalar and
 * 128-bit SIMD float ops) to build compute kernels at load time without shipping binary files.
 */

/** Value types of the WebAssembly binary format. */
export const ValType = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c, v128: 0x7b } as const;

/** One value type byte (see {@link ValType}). */
export type ValTypeCode = typeof ValType[keyof typeof ValType];

/** Raised when the assembler is used inconsistently (unbalanced blocks, out-of-range immediates). */
export class WasmAsmError extends Error {
  /** Creates an error whose message names the assembler module. */
  constructor(detail: string) {
    super(`wasm_asm.ts: ${detail}`);
    this.name = "WasmAsmError";
  }
}

/** Appends the unsigned LEB128 encoding of `value` (a non-negative integer below 2^32) to `out`. */
export function pushU32(out: number[], value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new WasmAsmError(`unsigned LEB128 value ${value} is not an integer in [0, 2^32)`);
  }
  let v = value;
  do {
    let byte = v % 128;
    v = Math.floor(v / 128);
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
}

/** Appends the signed LEB128 encoding of `value` (an integer in [-2^31, 2^31)) to `out`. */
export function pushS32(out: number[], value: number): void {
  if (!Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff) {
    throw new WasmAsmError(`signed LEB128 value ${value} is not a 32-bit integer`);
  }
  let v = value | 0;
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    const done = (v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return;
  }
}

/** Appends a name (length-prefixed UTF-8) to `out`. */
function pushName(out: number[], name: string): void {
  const bytes = new TextEncoder().encode(name);
  pushU32(out, bytes.length);
  for (const b of bytes) out.push(b);
}

/** Appends a section with id `id` whose payload is `payload`. */
function pushSection(out: number[], id: number, payload: number[]): void {
  out.push(id);
  pushU32(out, payload.length);
  for (const b of payload) out.push(b);
}

/** A function type: parameter and result types. */
export interface FuncSig {
  /** Parameter types in order. */
  params: readonly ValTypeCode[];
  /** Result types in order (0 or 1 for the kernels built here). */
  results: readonly ValTypeCode[];
}

/** Limits of a linear memory in 64 KiB pages. */
export interface MemoryLimits {
  /** Initial size in pages. */
  initial: number;
  /** Maximum size in pages (required when `shared`). */
  maximum?: number;
  /** Whether the memory is shared between threads. */
  shared?: boolean;
}

/**
 * Instruction emitter for one function body. Locals are declared with {@link FuncBody.local}; parameters
 * take the first indices. Each method appends one instruction and returns `this` so that code reads as a
 * stack-machine listing.
 */
export class FuncBody {
  readonly #code: number[] = [];
  readonly #locals: ValTypeCode[] = [];
  readonly #paramCount: number;
  #depth = 0;

  /** Starts an empty body for a function with `paramCount` parameters. */
  constructor(paramCount: number) {
    this.#paramCount = paramCount;
  }

  /** Declares a new local of type `type` and returns its index. */
  local(type: ValTypeCode): number {
    this.#locals.push(type);
    return this.#paramCount + this.#locals.length - 1;
  }

  /** Appends raw bytes (an opcode and its immediates). */
  raw(...bytes: number[]): this {
    for (const b of bytes) this.#code.push(b);
    return this;
  }

  #withU32(op: number, imm: number): this {
    this.#code.push(op);
    pushU32(this.#code, imm);
    return this;
  }

  #memarg(alignLog2: number, offset: number): void {
    pushU32(this.#code, alignLog2);
    pushU32(this.#code, offset);
  }

  #simd(op: number): this {
    this.#code.push(0xfd);
    pushU32(this.#code, op);
    return this;
  }

  #simdMem(op: number, alignLog2: number, offset: number): this {
    this.#simd(op);
    this.#memarg(alignLog2, offset);
    return this;
  }

  // ---- control flow ----

  /** `block` with no result. */
  block(): this {
    this.#depth++;
    return this.raw(0x02, 0x40);
  }

  /** `loop` with no result. */
  loop(): this {
    this.#depth++;
    return this.raw(0x03, 0x40);
  }

  /** `if` with no result (pops an i32 condition). */
  if(): this {
    this.#depth++;
    return this.raw(0x04, 0x40);
  }

  /** `else` of the innermost `if`. */
  else(): this {
    return this.raw(0x05);
  }

  /** `end` of the innermost block, loop or if. */
  end(): this {
    if (this.#depth === 0) throw new WasmAsmError("end() without an open block, loop or if");
    this.#depth--;
    return this.raw(0x0b);
  }

  /** `br` to the label `depth` levels out. */
  br(depth: number): this {
    return this.#withU32(0x0c, depth);
  }

  /** `br_if` to the label `depth` levels out (pops an i32 condition). */
  brIf(depth: number): this {
    return this.#withU32(0x0d, depth);
  }

  /** `return`. */
  return(): this {
    return this.raw(0x0f);
  }

  /** `call` of function index `fn`. */
  call(fn: number): this {
    return this.#withU32(0x10, fn);
  }

  /** `select` (pops a, b, cond; pushes cond ? a : b). */
  select(): this {
    return this.raw(0x1b);
  }

  /** `drop`. */
  drop(): this {
    return this.raw(0x1a);
  }

  // ---- locals ----

  /** `local.get`. */
  get(index: number): this {
    return this.#withU32(0x20, index);
  }

  /** `local.set`. */
  set(index: number): this {
    return this.#withU32(0x21, index);
  }

  /** `local.tee`. */
  tee(index: number): this {
    return this.#withU32(0x22, index);
  }

  // ---- i32 ----

  /** `i32.const`. */
  i32Const(value: number): this {
    this.#code.push(0x41);
    pushS32(this.#code, value);
    return this;
  }

  /** `i32.eqz`. */
  i32Eqz(): this {
    return this.raw(0x45);
  }

  /** `i32.eq`. */
  i32Eq(): this {
    return this.raw(0x46);
  }

  /** `i32.ne`. */
  i32Ne(): this {
    return this.raw(0x47);
  }

  /** `i32.lt_s`. */
  i32LtS(): this {
    return this.raw(0x48);
  }

  /** `i32.lt_u`. */
  i32LtU(): this {
    return this.raw(0x49);
  }

  /** `i32.gt_s`. */
  i32GtS(): this {
    return this.raw(0x4a);
  }

  /** `i32.gt_u`. */
  i32GtU(): this {
    return this.raw(0x4b);
  }

  /** `i32.ge_s`. */
  i32GeS(): this {
    return this.raw(0x4e);
  }

  /** `i32.add`. */
  i32Add(): this {
    return this.raw(0x6a);
  }

  /** `i32.sub`. */
  i32Sub(): this {
    return this.raw(0x6b);
  }

  /** `i32.mul`. */
  i32Mul(): this {
    return this.raw(0x6c);
  }

  /** `i32.and`. */
  i32And(): this {
    return this.raw(0x71);
  }

  /** `i32.shl`. */
  i32Shl(): this {
    return this.raw(0x74);
  }

  /** `i32.load` (4-byte aligned) at constant `offset`. */
  i32Load(offset = 0): this {
    this.#code.push(0x28);
    this.#memarg(2, offset);
    return this;
  }

  // ---- f32 scalar ----

  /** `f32.load` (4-byte aligned) at constant `offset`. */
  f32Load(offset = 0): this {
    this.#code.push(0x2a);
    this.#memarg(2, offset);
    return this;
  }

  /** `f32.store` (4-byte aligned) at constant `offset`. */
  f32Store(offset = 0): this {
    this.#code.push(0x38);
    this.#memarg(2, offset);
    return this;
  }

  /** `f32.add`. */
  f32Add(): this {
    return this.raw(0x92);
  }

  /** `f32.mul`. */
  f32Mul(): this {
    return this.raw(0x94);
  }

  // ---- v128 / f32x4 (prefix 0xfd) ----

  /** `v128.load` at constant `offset` (alignment hint: 16 bytes). */
  v128Load(offset = 0): this {
    return this.#simdMem(0x00, 4, offset);
  }

  /** `v128.load32_splat` at constant `offset`: one f32 broadcast to 4 lanes. */
  v128Load32Splat(offset = 0): this {
    return this.#simdMem(0x09, 2, offset);
  }

  /** `v128.store` at constant `offset` (alignment hint: 16 bytes). */
  v128Store(offset = 0): this {
    return this.#simdMem(0x0b, 4, offset);
  }

  /** `v128.const` of four equal f32 lanes. */
  f32x4Const(value: number): this {
    this.#simd(0x0c);
    const bytes = new Uint8Array(new Float32Array([value, value, value, value]).buffer);
    for (const b of bytes) this.#code.push(b);
    return this;
  }

  /** `f32x4.splat` (pops an f32). */
  f32x4Splat(): this {
    return this.#simd(0x13);
  }

  /** `f32x4.extract_lane`. */
  f32x4ExtractLane(lane: number): this {
    if (!Number.isInteger(lane) || lane < 0 || lane > 3) throw new WasmAsmError(`f32x4 lane ${lane} is not in 0..3`);
    this.#simd(0x1f);
    this.#code.push(lane);
    return this;
  }

  /** `f32x4.add`. */
  f32x4Add(): this {
    return this.#simd(0xe4);
  }

  /** `f32x4.mul`. */
  f32x4Mul(): this {
    return this.#simd(0xe6);
  }

  /** `f32x4.relaxed_madd` (relaxed SIMD): a·b + c, fused or not depending on the engine. */
  f32x4RelaxedMadd(): this {
    return this.#simd(0x105);
  }

  /** Encodes the body (local declarations, code, final `end`). */
  encode(): number[] {
    if (this.#depth !== 0) throw new WasmAsmError(`function body has ${this.#depth} unclosed block(s)`);
    const out: number[] = [];
    const groups: [number, ValTypeCode][] = [];
    for (const t of this.#locals) {
      const last = groups[groups.length - 1];
      if (last && last[1] === t) last[0]++;
      else groups.push([1, t]);
    }
    pushU32(out, groups.length);
    for (const [count, t] of groups) {
      pushU32(out, count);
      out.push(t);
    }
    for (const b of this.#code) out.push(b);
    out.push(0x0b);
    return out;
  }
}

/** Throws unless the memory limits are encodable. */
function checkLimits(limits: MemoryLimits, what: string): void {
  if (limits.shared && limits.maximum === undefined) {
    throw new WasmAsmError(`shared memory ${what} needs a maximum size`);
  }
  if (limits.maximum !== undefined && limits.maximum < limits.initial) {
    throw new WasmAsmError(`memory ${what} has maximum ${limits.maximum} below its initial ${limits.initial} pages`);
  }
}

/** Appends the encoding of memory limits (flags, initial, optional maximum). */
function pushLimits(out: number[], limits: MemoryLimits): void {
  out.push((limits.maximum !== undefined ? 1 : 0) | (limits.shared ? 2 : 0));
  pushU32(out, limits.initial);
  if (limits.maximum !== undefined) pushU32(out, limits.maximum);
}

interface FuncEntry {
  typeIndex: number;
  body: FuncBody;
}

/**
 * Builds one module: an optional memory (imported or defined, optionally exported), functions, and function
 * exports. Function indices follow the order of {@link ModuleBuilder.addFunction} (no function imports).
 */
export class ModuleBuilder {
  readonly #types: FuncSig[] = [];
  readonly #funcs: FuncEntry[] = [];
  readonly #exports: { name: string; index: number }[] = [];
  #memImport: { module: string; name: string; limits: MemoryLimits } | undefined;
  #memDefined: MemoryLimits | undefined;
  #memExport: string | undefined;

  /** Imports a linear memory as `module.name` with the given limits. */
  importMemory(module: string, name: string, limits: MemoryLimits): this {
    checkLimits(limits, `${module}.${name}`);
    this.#memImport = { module, name, limits };
    return this;
  }

  /** Defines the module's own linear memory (instead of importing one). */
  defineMemory(limits: MemoryLimits): this {
    checkLimits(limits, "the defined memory");
    this.#memDefined = limits;
    return this;
  }

  /** Exports memory 0 (imported or defined) under `name`. */
  exportMemory(name: string): this {
    this.#memExport = name;
    return this;
  }

  #typeIndex(sig: FuncSig): number {
    const same = (a: readonly ValTypeCode[], b: readonly ValTypeCode[]) =>
      a.length === b.length && a.every((t, i) => t === b[i]);
    const found = this.#types.findIndex((t) => same(t.params, sig.params) && same(t.results, sig.results));
    if (found >= 0) return found;
    this.#types.push(sig);
    return this.#types.length - 1;
  }

  /** Declares a function with signature `sig`; returns its index and a body to fill in. */
  addFunction(sig: FuncSig): { index: number; body: FuncBody } {
    const body = new FuncBody(sig.params.length);
    this.#funcs.push({ typeIndex: this.#typeIndex(sig), body });
    return { index: this.#funcs.length - 1, body };
  }

  /** Exports function `index` under `name`. */
  exportFunction(name: string, index: number): this {
    this.#exports.push({ name, index });
    return this;
  }

  /** Encodes the module as a WebAssembly binary. */
  encode(): Uint8Array<ArrayBuffer> {
    const out: number[] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

    const types: number[] = [];
    pushU32(types, this.#types.length);
    for (const t of this.#types) {
      types.push(0x60);
      pushU32(types, t.params.length);
      for (const p of t.params) types.push(p);
      pushU32(types, t.results.length);
      for (const r of t.results) types.push(r);
    }
    pushSection(out, 1, types);

    if (this.#memImport) {
      const { module, name, limits } = this.#memImport;
      const imports: number[] = [];
      pushU32(imports, 1);
      pushName(imports, module);
      pushName(imports, name);
      imports.push(0x02);
      pushLimits(imports, limits);
      pushSection(out, 2, imports);
    }

    const funcs: number[] = [];
    pushU32(funcs, this.#funcs.length);
    for (const f of this.#funcs) pushU32(funcs, f.typeIndex);
    pushSection(out, 3, funcs);

    if (this.#memDefined) {
      if (this.#memImport) throw new WasmAsmError("a module may either import or define its memory, not both");
      const mem: number[] = [1];
      pushLimits(mem, this.#memDefined);
      pushSection(out, 5, mem);
    }

    const exports: number[] = [];
    const memExported = this.#memExport !== undefined;
    if (memExported && !this.#memImport && !this.#memDefined) {
      throw new WasmAsmError(`cannot export memory "${this.#memExport}": the module has no memory`);
    }
    pushU32(exports, this.#exports.length + (memExported ? 1 : 0));
    for (const e of this.#exports) {
      pushName(exports, e.name);
      exports.push(0x00);
      pushU32(exports, e.index);
    }
    if (memExported) {
      pushName(exports, this.#memExport!);
      exports.push(0x02);
      pushU32(exports, 0);
    }
    pushSection(out, 7, exports);

    const code: number[] = [];
    pushU32(code, this.#funcs.length);
    for (const f of this.#funcs) {
      const body = f.body.encode();
      pushU32(code, body.length);
      for (const b of body) code.push(b);
    }
    pushSection(out, 10, code);

    return new Uint8Array(out);
  }
}
