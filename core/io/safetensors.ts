/**
 * safetensors files (model-formats.md §2.1): a validating header parser, a lazy reader that fetches one
 * tensor at a time by positional reads, and an atomic writer.
 *
 * Layout: bytes 0..8 hold N, the header length (little-endian u64); bytes 8..8+N hold a UTF-8 JSON object
 * mapping tensor names to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data
 * section that starts at 8+N) plus an optional `__metadata__` object of strings; the data section follows.
 * Tensor data is little-endian and C-ordered; this module assumes a little-endian host (every Deno target).
 */
import { writeFileAtomic } from "./atomic.ts";
import { decodeBf16, decodeF16, decodeF8E4M3, decodeF8E5M2 } from "./float16.ts";

/** The element types a safetensors file may hold (the reference's classic set). */
export type SafetensorsDType =
  | "BOOL"
  | "U8"
  | "I8"
  | "I16"
  | "U16"
  | "F16"
  | "BF16"
  | "I32"
  | "U32"
  | "F32"
  | "F64"
  | "I64"
  | "U64"
  | "F8_E4M3"
  | "F8_E5M2";

/** Bytes per element of each dtype. */
export const DTYPE_SIZES: Readonly<Record<SafetensorsDType, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

/** The largest header the reader accepts (the reference's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/** True when `name` is a dtype this module knows. */
export function isSafetensorsDType(name: unknown): name is SafetensorsDType {
  return typeof name === "string" && Object.hasOwn(DTYPE_SIZES, name);
}

/** A bad or unreadable safetensors file, or a request it cannot satisfy; the message is one sentence. */
export class SafetensorsError extends Error {
  /** The file concerned. */
  readonly file: string;
  /** The tensor concerned, if any. */
  readonly tensor?: string;

  /** Creates the error; `message` already names the file (and tensor). */
  constructor(message: string, where: { file: string; tensor?: string }, options?: ErrorOptions) {
    super(message, options);
    this.name = "SafetensorsError";
    this.file = where.file;
    this.tensor = where.tensor;
  }
}

/** Where one tensor lives in a file. */
export interface TensorEntry {
  /** Tensor name. */
  readonly name: string;
  /** Element type. */
  readonly dtype: SafetensorsDType;
  /** Dimensions (`[]` for a scalar). */
  readonly shape: readonly number[];
  /** Absolute file offset of the first byte. */
  readonly start: number;
  /** Absolute file offset one past the last byte. */
  readonly end: number;
}

/** The validated content of a header. */
export interface ParsedHeader {
  /** Tensors in file order (ascending offsets). */
  readonly entries: readonly TensorEntry[];
  /** The `__metadata__` strings (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Absolute offset of the data section (8 + header length). */
  readonly dataStart: number;
}

/** Quotes a tensor name for messages. */
function q(name: string): string {
  return JSON.stringify(name);
}

/** Formats a shape for messages. */
function fmtShape(shape: readonly unknown[]): string {
  return `[${shape.map((d) => JSON.stringify(d)).join(",")}]`;
}

/**
 * Validates the 8-byte length prefix against the file size and returns the header length N.
 * `prefix` holds the first min(8, fileSize) bytes of the file.
 */
export function checkHeaderLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8 || prefix.length < 8) {
    throw new SafetensorsError(
      `${file} is truncated: it has ${fileSize} bytes, fewer than the 8-byte header length that starts a safetensors file`,
      { file },
    );
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      `${file} declares a header of ${n} bytes, more than the 100 MB limit (the file is corrupt or not safetensors)`,
      { file },
    );
  }
  if (n + 8n > BigInt(fileSize)) {
    throw new SafetensorsError(
      `${file} declares a header of ${n} bytes but only ${fileSize - 8} bytes follow the length prefix ` +
        `(the header is longer than the file: truncated or not a safetensors file)`,
      { file },
    );
  }
  return Number(n);
}

/**
 * Finds a key that occurs twice in one JSON object of `text` (which must already be valid JSON).
 * Returns the key and the key of the enclosing member (undefined at the top level), or undefined.
 * Iterative, so deeply nested input cannot overflow the stack.
 */
export function findDuplicateJsonKey(text: string): { key: string; parent?: string } | undefined {
  // One frame per open container: its keys (objects only) and the key it was stored under.
  const frames: { keys: Set<string> | null; parent?: string }[] = [];
  let lastKey: string | undefined;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      for (; j < text.length; j++) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) {
          escaped = true;
          j++;
        } else if (d === 0x22) break;
      }
      const raw = text.slice(i, j + 1);
      i = j;
      const top = frames[frames.length - 1];
      if (expectKey && top?.keys) {
        const key: string = escaped ? JSON.parse(raw) : raw.slice(1, -1);
        if (top.keys.has(key)) return { key, parent: top.parent };
        top.keys.add(key);
        lastKey = key;
        expectKey = false;
      }
    } else if (c === 0x7b /* { */) {
      frames.push({ keys: new Set(), parent: lastKey });
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      frames.push({ keys: null, parent: lastKey });
      expectKey = false;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      frames.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) {
      expectKey = frames[frames.length - 1]?.keys != null;
    }
  }
  return undefined;
}

/** True for a JSON value that is a non-negative integer representable exactly as a number. */
function isIndex(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** Parses and validates the header JSON (bytes 8..8+N) of a file of `fileSize` bytes. */
export function parseSafetensorsHeader(header: Uint8Array, fileSize: number, file: string): ParsedHeader {
  const dataStart = 8 + header.length;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(header);
  } catch {
    throw new SafetensorsError(`${file} has a header that is not valid UTF-8 (not a safetensors file)`, { file });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new SafetensorsError(`${file} has a header that is not valid JSON (${why})`, { file });
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new SafetensorsError(`${file} has a header that is not a JSON object of tensor entries`, { file });
  }
  const dup = findDuplicateJsonKey(text);
  if (dup) {
    if (dup.parent === undefined) {
      throw new SafetensorsError(`${file} has a header that lists the key ${q(dup.key)} twice`, {
        file,
        tensor: dup.key === "__metadata__" ? undefined : dup.key,
      });
    }
    throw new SafetensorsError(`${file} has a header with the key ${q(dup.key)} twice inside ${q(dup.parent)}`, {
      file,
      tensor: dup.parent === "__metadata__" ? undefined : dup.parent,
    });
  }

  const metadata: Record<string, string> = {};
  const parsed: { name: string; dtype: SafetensorsDType; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (value === null) continue;
      if (typeof value !== "object" || Array.isArray(value)) {
        throw new SafetensorsError(`${file} has a __metadata__ entry that is not an object of strings`, { file });
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== "string") {
          throw new SafetensorsError(
            `${file} has __metadata__ value ${q(k)} of type ${v === null ? "null" : typeof v}; values must be strings`,
            { file },
          );
        }
        metadata[k] = v;
      }
      continue;
    }
    const where = { file, tensor: name };
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new SafetensorsError(
        `tensor ${q(name)} in ${file} has an entry that is not an object of dtype, shape and data_offsets`,
        where,
      );
    }
    const e = value as Record<string, unknown>;
    for (const field of ["dtype", "shape", "data_offsets"]) {
      if (!Object.hasOwn(e, field)) {
        throw new SafetensorsError(`tensor ${q(name)} in ${file} has no ${field}`, where);
      }
    }
    if (!isSafetensorsDType(e.dtype)) {
      throw new SafetensorsError(
        `tensor ${q(name)} in ${file} has unknown dtype ${JSON.stringify(e.dtype)} ` +
          `(known: ${Object.keys(DTYPE_SIZES).join(", ")})`,
        where,
      );
    }
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every(isIndex)) {
      const shown = Array.isArray(shape) ? fmtShape(shape) : JSON.stringify(shape);
      throw new SafetensorsError(
        `tensor ${q(name)} in ${file} has shape ${shown}, which is not a list of non-negative integers`,
        where,
      );
    }
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !isIndex(offs[0]) || !isIndex(offs[1]) || offs[1] < offs[0]) {
      throw new SafetensorsError(
        `tensor ${q(name)} in ${file} has data_offsets ${JSON.stringify(offs)}, ` +
          `not two non-negative integers [begin, end] with begin <= end`,
        where,
      );
    }
    // `+ 0` turns a JSON "-0" into 0.
    parsed.push({ name, dtype: e.dtype, shape: shape.map((d) => d + 0), begin: offs[0] + 0, end: offs[1] + 0 });
  }

  parsed.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = 0;
  let previous: string | undefined;
  const entries: TensorEntry[] = [];
  for (const t of parsed) {
    const where = { file, tensor: t.name };
    if (t.begin < expected) {
      throw new SafetensorsError(
        `tensor ${q(t.name)} in ${file} has data_offsets [${t.begin},${t.end}] that overlap tensor ` +
          `${q(previous!)} ending at ${expected}`,
        where,
      );
    }
    if (t.begin > expected) {
      throw new SafetensorsError(
        `tensor ${q(t.name)} in ${file} starts at data offset ${t.begin}, leaving a gap of ${t.begin - expected} ` +
          `bytes after ${previous === undefined ? "the start of the data" : `tensor ${q(previous)}`}`,
        where,
      );
    }
    const elements = t.shape.reduce((p, d) => p * BigInt(d), 1n);
    const need = elements * BigInt(DTYPE_SIZES[t.dtype]);
    if (need !== BigInt(t.end - t.begin)) {
      throw new SafetensorsError(
        `tensor ${q(t.name)} in ${file} has dtype ${t.dtype} and shape ${fmtShape(t.shape)} (${need} bytes) ` +
          `but its data_offsets [${t.begin},${t.end}] span ${t.end - t.begin} bytes`,
        where,
      );
    }
    entries.push({ name: t.name, dtype: t.dtype, shape: t.shape, start: dataStart + t.begin, end: dataStart + t.end });
    expected = t.end;
    previous = t.name;
  }
  const have = fileSize - dataStart;
  if (have < expected) {
    throw new SafetensorsError(
      `${file} is truncated: its header describes ${expected} bytes of tensor data but only ${have} bytes follow it`,
      { file },
    );
  }
  if (have > expected) {
    throw new SafetensorsError(
      `${file} has ${have - expected} bytes after the last tensor's data, so its header and size disagree`,
      { file },
    );
  }
  return { entries, metadata, dataStart };
}

/** Dtypes readFloat32 widens (all of them). */
const FLOAT_READABLE = Object.keys(DTYPE_SIZES) as SafetensorsDType[];
/** Dtypes readInt32 converts (values of U32, I64 and U64 must fit). */
const INT32_READABLE: SafetensorsDType[] = ["BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64"];
/** Dtypes readInt8 returns. */
const INT8_READABLE: SafetensorsDType[] = ["I8"];

/**
 * A safetensors file opened for lazy reading. Opening reads and validates only the header; each read
 * fetches exactly one tensor's bytes with a positional read. Reads on one file are serialised.
 */
export class SafetensorsFile {
  readonly #file: Deno.FsFile;
  readonly #entries: Map<string, TensorEntry>;
  readonly #order: readonly TensorEntry[];
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;
  #tensorBytesRead = 0;

  /** The `__metadata__` strings of the header. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Absolute offset of the data section; also the number of header bytes read on open (8 + N). */
  readonly dataStart: number;

  private constructor(
    /** Path the file was opened from. */
    readonly path: string,
    file: Deno.FsFile,
    header: ParsedHeader,
    /** Size of the file in bytes. */
    readonly size: number,
  ) {
    this.#file = file;
    this.#order = header.entries;
    this.#entries = new Map(header.entries.map((e) => [e.name, e]));
    this.metadata = header.metadata;
    this.dataStart = header.dataStart;
  }

  /** Opens `path`, reading and validating its header only. */
  static async open(path: string): Promise<SafetensorsFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (err) {
      const why = err instanceof Deno.errors.NotFound ? "no such file" : (err as Error).message;
      throw new SafetensorsError(`cannot open safetensors file ${path}: ${why}`, { file: path }, { cause: err });
    }
    try {
      const info = await file.stat();
      if (!info.isFile) throw new SafetensorsError(`${path} is not a regular file`, { file: path });
      const size = info.size;
      const prefix = await readAt(file, 0, Math.min(8, size), path);
      const n = checkHeaderLength(prefix, size, path);
      const header = parseSafetensorsHeader(await readAt(file, 8, n, path), size, path);
      return new SafetensorsFile(path, file, header, size);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  /** Tensor names in file order. */
  names(): string[] {
    return this.#order.map((e) => e.name);
  }

  /** True when the file holds `name`. */
  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /** Where tensor `name` lives (absolute offsets); throws when it is absent. */
  entry(name: string): TensorEntry {
    const e = this.#entries.get(name);
    if (!e) throw new SafetensorsError(`tensor ${q(name)} is not in ${this.path}`, { file: this.path, tensor: name });
    return e;
  }

  /** All entries in file order. */
  entries(): readonly TensorEntry[] {
    return this.#order;
  }

  /** Header bytes read on open (the 8-byte prefix plus the JSON). */
  get headerBytes(): number {
    return this.dataStart;
  }

  /** Tensor data bytes read so far. */
  get tensorBytesRead(): number {
    return this.#tensorBytesRead;
  }

  /** All bytes read from the file so far, header included. */
  get bytesRead(): number {
    return this.dataStart + this.#tensorBytesRead;
  }

  /** True after {@link close}. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The raw little-endian bytes of tensor `name` (a fresh, 8-byte-aligned buffer). */
  readBytes(name: string): Promise<Uint8Array<ArrayBuffer>> {
    let e: TensorEntry;
    try {
      e = this.entry(name);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#closed) {
      return Promise.reject(
        new SafetensorsError(`${this.path} is closed, so tensor ${q(name)} cannot be read`, {
          file: this.path,
          tensor: name,
        }),
      );
    }
    const run = this.#queue.then(async () => {
      const bytes = await readAt(this.#file, e.start, e.end - e.start, this.path, name);
      this.#tensorBytesRead += bytes.length;
      return bytes;
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Index of the first NaN or infinite element of tensor `name`, or -1 (also for integer dtypes). Reads the
   * tensor in chunks of at most `chunkBytes`, so a large embedding never sits in memory whole.
   */
  firstNonFinite(name: string, chunkBytes = 64 << 20): Promise<number> {
    let e: TensorEntry;
    try {
      e = this.entry(name);
    } catch (err) {
      return Promise.reject(err);
    }
    const size = DTYPE_SIZES[e.dtype];
    if (!FLOAT_EXPONENT_MASKS[e.dtype] || e.end === e.start) return Promise.resolve(-1);
    const step = Math.max(8, chunkBytes - (chunkBytes % 8));
    const run = this.#queue.then(async () => {
      for (let at = e.start; at < e.end; at += step) {
        const bytes = await readAt(this.#file, at, Math.min(step, e.end - at), this.path, name);
        this.#tensorBytesRead += bytes.length;
        const i = firstNonFiniteElement(bytes, e.dtype);
        if (i >= 0) return (at - e.start) / size + i;
      }
      return -1;
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Tensor `name` widened to float32 (every dtype; integers above 2^24 round, I64/U64 via number). */
  async readFloat32(name: string): Promise<Float32Array<ArrayBuffer>> {
    const e = this.#checkDType(name, FLOAT_READABLE, "readFloat32");
    const bytes = await this.readBytes(name);
    // The buffer is fresh and ours: view F32 data in place instead of copying it.
    return e.dtype === "F32" ? new Float32Array(bytes.buffer) : bytesToFloat32(bytes, e.dtype);
  }

  /** Tensor `name` as int32 (BOOL, U8, I8, I16, U16, I32, and U32/I64/U64 whose values fit). */
  async readInt32(name: string): Promise<Int32Array<ArrayBuffer>> {
    const e = this.#checkDType(name, INT32_READABLE, "readInt32");
    const bytes = await this.readBytes(name);
    const out = e.dtype === "I32" ? new Int32Array(bytes.buffer) : bytesToInt32(bytes, e.dtype);
    if (typeof out === "number") {
      throw new SafetensorsError(
        `tensor ${q(name)} in ${this.path} has element ${out} outside the int32 range, so readInt32 cannot return it`,
        { file: this.path, tensor: name },
      );
    }
    return out;
  }

  /** Tensor `name` as int8 (I8 only). */
  async readInt8(name: string): Promise<Int8Array<ArrayBuffer>> {
    this.#checkDType(name, INT8_READABLE, "readInt8");
    return new Int8Array((await this.readBytes(name)).buffer);
  }

  /** Closes the file; later reads fail. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#file.close();
  }

  /** Looks up `name` and checks that `read` supports its dtype. */
  #checkDType(name: string, allowed: readonly SafetensorsDType[], read: string): TensorEntry {
    const e = this.entry(name);
    if (!allowed.includes(e.dtype)) {
      throw new SafetensorsError(
        `tensor ${q(name)} in ${this.path} has dtype ${e.dtype}, which ${read} does not support ` +
          `(it reads ${allowed.join(", ")})`,
        { file: this.path, tensor: name },
      );
    }
    return e;
  }
}

/** Reads exactly `length` bytes at absolute `offset` into a fresh buffer. */
async function readAt(
  file: Deno.FsFile,
  offset: number,
  length: number,
  path: string,
  tensor?: string,
): Promise<Uint8Array<ArrayBuffer>> {
  const out = new Uint8Array(length);
  const what = tensor === undefined ? "its header" : `tensor ${q(tensor)}`;
  let done = 0;
  while (done < length) {
    let n: number | null;
    try {
      if (done === 0) await file.seek(offset, Deno.SeekMode.Start);
      n = await file.read(out.subarray(done));
    } catch (err) {
      throw new SafetensorsError(
        `cannot read ${what} from ${path}: ${(err as Error).message}`,
        { file: path, tensor },
        {
          cause: err,
        },
      );
    }
    if (n === null || n === 0) {
      throw new SafetensorsError(`${path} ended early while reading ${what} (the file changed or is truncated)`, {
        file: path,
        tensor,
      });
    }
    done += n;
  }
  return out;
}

/**
 * For each float dtype, the bits of one element (read as a little-endian word of the element's width; the
 * high word for F64) that are all set exactly when it is NaN or infinite.
 */
const FLOAT_EXPONENT_MASKS: Partial<Record<SafetensorsDType, number>> = {
  F64: 0x7ff00000,
  F32: 0x7f800000,
  F16: 0x7c00,
  BF16: 0x7f80,
  F8_E5M2: 0x7c,
  F8_E4M3: 0x7f, // the "fn" variant: no infinities, NaN is S.1111.111
};

/** Index of the first NaN or infinite element in raw little-endian bytes of `dtype`, or -1 (integers: -1). */
export function firstNonFiniteElement(bytes: Uint8Array, dtype: SafetensorsDType): number {
  const mask = FLOAT_EXPONENT_MASKS[dtype];
  if (mask === undefined) return -1;
  const size = DTYPE_SIZES[dtype];
  const n = Math.floor(bytes.byteLength / size);
  if (size === 8 || bytes.byteOffset % size !== 0) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < n; i++) {
      const w = size === 8
        ? view.getUint32(i * 8 + 4, true)
        : size === 4
        ? view.getUint32(i * 4, true)
        : size === 2
        ? view.getUint16(i * 2, true)
        : bytes[i];
      if ((w & mask) === mask) return i;
    }
    return -1;
  }
  // Aligned: typed views over the words (the host is little-endian, as safetensors is).
  const words = size === 4
    ? new Uint32Array(bytes.buffer, bytes.byteOffset, n)
    : size === 2
    ? new Uint16Array(bytes.buffer, bytes.byteOffset, n)
    : bytes;
  for (let i = 0; i < n; i++) if ((words[i] & mask) === mask) return i;
  return -1;
}

/** Widens raw little-endian bytes of `dtype` to float32. */
export function bytesToFloat32(bytes: Uint8Array<ArrayBuffer>, dtype: SafetensorsDType): Float32Array<ArrayBuffer> {
  const view = aligned(bytes);
  const n = bytes.length / DTYPE_SIZES[dtype];
  switch (dtype) {
    case "F32":
      return new Float32Array(view.buffer, view.byteOffset, n).slice();
    case "F16":
      return decodeF16(new Uint16Array(view.buffer, view.byteOffset, n));
    case "BF16":
      return decodeBf16(new Uint16Array(view.buffer, view.byteOffset, n));
    case "F8_E4M3":
      return decodeF8E4M3(view);
    case "F8_E5M2":
      return decodeF8E5M2(view);
    case "F64":
      return Float32Array.from(new Float64Array(view.buffer, view.byteOffset, n));
    case "BOOL":
      return Float32Array.from(view, (b) => (b ? 1 : 0));
    case "U8":
      return Float32Array.from(view);
    case "I8":
      return Float32Array.from(new Int8Array(view.buffer, view.byteOffset, n));
    case "I16":
      return Float32Array.from(new Int16Array(view.buffer, view.byteOffset, n));
    case "U16":
      return Float32Array.from(new Uint16Array(view.buffer, view.byteOffset, n));
    case "I32":
      return Float32Array.from(new Int32Array(view.buffer, view.byteOffset, n));
    case "U32":
      return Float32Array.from(new Uint32Array(view.buffer, view.byteOffset, n));
    case "I64":
      return Float32Array.from(new BigInt64Array(view.buffer, view.byteOffset, n), Number);
    case "U64":
      return Float32Array.from(new BigUint64Array(view.buffer, view.byteOffset, n), Number);
  }
}

/**
 * Converts raw integer bytes of `dtype` to int32; returns the index of the first element outside the
 * int32 range instead when there is one. Throws a TypeError for dtypes that are not integers.
 */
export function bytesToInt32(
  bytes: Uint8Array<ArrayBuffer>,
  dtype: SafetensorsDType,
): Int32Array<ArrayBuffer> | number {
  const view = aligned(bytes);
  const n = bytes.length / DTYPE_SIZES[dtype];
  const out = new Int32Array(n);
  switch (dtype) {
    case "BOOL":
      for (let i = 0; i < n; i++) out[i] = view[i] ? 1 : 0;
      return out;
    case "U8":
      out.set(view);
      return out;
    case "I8":
      out.set(new Int8Array(view.buffer, view.byteOffset, n));
      return out;
    case "I16":
      out.set(new Int16Array(view.buffer, view.byteOffset, n));
      return out;
    case "U16":
      out.set(new Uint16Array(view.buffer, view.byteOffset, n));
      return out;
    case "I32":
      out.set(new Int32Array(view.buffer, view.byteOffset, n));
      return out;
    case "U32": {
      const src = new Uint32Array(view.buffer, view.byteOffset, n);
      for (let i = 0; i < n; i++) {
        if (src[i] > 0x7fffffff) return i;
        out[i] = src[i];
      }
      return out;
    }
    case "I64":
    case "U64": {
      const src = dtype === "I64"
        ? new BigInt64Array(view.buffer, view.byteOffset, n)
        : new BigUint64Array(view.buffer, view.byteOffset, n);
      for (let i = 0; i < n; i++) {
        const v = src[i];
        if (v < -2147483648n || v > 2147483647n) return i;
        out[i] = Number(v);
      }
      return out;
    }
    default:
      throw new TypeError(`bytesToInt32: ${dtype} is not an integer dtype`);
  }
}

/** `bytes` itself when it starts 8-byte aligned in its buffer, else an aligned copy. */
function aligned(bytes: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  return bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
}

/** One tensor to write. `data` holds its little-endian bytes (any typed array of the right byte length). */
export interface TensorToWrite {
  /** Tensor name (unique within a file; not `__metadata__`). */
  name: string;
  /** Element type. */
  dtype: SafetensorsDType;
  /** Dimensions. */
  shape: readonly number[];
  /** The tensor's bytes: `prod(shape) * DTYPE_SIZES[dtype]` of them. */
  data: ArrayBufferView;
}

/** Compares two strings by their UTF-8 bytes (the order the reference writer uses). */
function compareUtf8(a: string, b: string): number {
  if (a === b) return 0;
  const ea = new TextEncoder().encode(a);
  const eb = new TextEncoder().encode(b);
  const n = Math.min(ea.length, eb.length);
  for (let i = 0; i < n; i++) if (ea[i] !== eb[i]) return ea[i] - eb[i];
  return ea.length - eb.length;
}

/** A tensor's place in a file to be written, without its data: name, dtype, shape. */
export interface TensorSpec {
  name: string;
  dtype: SafetensorsDType;
  shape: readonly number[];
}

/**
 * The header of a safetensors file holding `tensors` (validated): the 8-byte length, the JSON padded to a
 * multiple of 8, and the tensors in the order their data follows (dtype alignment descending, then name),
 * each with its byte range.
 */
export function safetensorsHeader(
  tensors: readonly TensorSpec[],
  metadata: Readonly<Record<string, string>> = {},
  file = "safetensors output",
): { head: Uint8Array<ArrayBuffer>; order: { spec: TensorSpec; begin: number; end: number }[]; dataBytes: number } {
  const seen = new Set<string>();
  for (const t of tensors) {
    const where = { file, tensor: t.name };
    if (typeof t.name !== "string" || t.name === "__metadata__") {
      throw new SafetensorsError(`cannot write ${file}: ${q(String(t.name))} is not a valid tensor name`, where);
    }
    if (seen.has(t.name)) {
      throw new SafetensorsError(`cannot write ${file}: tensor ${q(t.name)} is given twice`, where);
    }
    seen.add(t.name);
    if (!isSafetensorsDType(t.dtype)) {
      throw new SafetensorsError(`cannot write ${file}: tensor ${q(t.name)} has unknown dtype ${q(t.dtype)}`, where);
    }
    if (!t.shape.every(isIndex)) {
      throw new SafetensorsError(
        `cannot write ${file}: tensor ${q(t.name)} has shape ${fmtShape(t.shape)}, not non-negative integers`,
        where,
      );
    }
  }
  const meta: Record<string, string> = { format: "pt", ...metadata };
  for (const [k, v] of Object.entries(meta)) {
    if (typeof v !== "string") {
      throw new SafetensorsError(`cannot write ${file}: metadata value ${q(k)} is not a string`, { file });
    }
  }
  const ordered = [...tensors].sort((a, b) =>
    DTYPE_SIZES[b.dtype] - DTYPE_SIZES[a.dtype] || compareUtf8(a.name, b.name)
  );
  const parts = [`"__metadata__":${JSON.stringify(meta)}`];
  const order: { spec: TensorSpec; begin: number; end: number }[] = [];
  let offset = 0;
  for (const t of ordered) {
    const end = offset + t.shape.reduce((p, d) => p * d, 1) * DTYPE_SIZES[t.dtype];
    parts.push(
      `${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":[${
        t.shape.join(",")
      }],"data_offsets":[${offset},${end}]}`,
    );
    order.push({ spec: t, begin: offset, end });
    offset = end;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const padded = Math.ceil(json.length / 8) * 8;
  const head = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  return { head, order, dataBytes: offset };
}

/**
 * The bytes of a safetensors file holding `tensors` (validated), as a header and the tensors' data in
 * file order, without copying the data.
 */
export function layoutSafetensors(
  tensors: readonly TensorToWrite[],
  metadata: Readonly<Record<string, string>> = {},
  file = "safetensors output",
): { head: Uint8Array<ArrayBuffer>; chunks: Uint8Array[]; dataBytes: number } {
  for (const t of tensors) {
    const need = (t.shape?.every?.(isIndex) ? t.shape.reduce((p, d) => p * d, 1) : NaN) *
      (DTYPE_SIZES[t.dtype] ?? NaN);
    if (Number.isFinite(need) && (!ArrayBuffer.isView(t.data) || t.data.byteLength !== need)) {
      const got = ArrayBuffer.isView(t.data) ? `${t.data.byteLength} bytes` : "no byte data";
      throw new SafetensorsError(
        `cannot write ${file}: tensor ${q(t.name)} (${t.dtype} ${
          fmtShape(t.shape)
        }) needs ${need} bytes but has ${got}`,
        { file, tensor: t.name },
      );
    }
  }
  const { head, order, dataBytes } = safetensorsHeader(tensors, metadata, file);
  const chunks = order.map(({ spec }) => {
    const d = (spec as TensorToWrite).data;
    return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  });
  return { head, chunks, dataBytes };
}

/** The complete bytes of a safetensors file holding `tensors` (for small files and tests). */
export function encodeSafetensors(
  tensors: readonly TensorToWrite[],
  metadata: Readonly<Record<string, string>> = {},
): Uint8Array<ArrayBuffer> {
  const { head, chunks, dataBytes } = layoutSafetensors(tensors, metadata);
  const out = new Uint8Array(head.length + dataBytes);
  out.set(head, 0);
  let at = head.length;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * Writes `tensors` to `path` as a safetensors file with `__metadata__` `{format: "pt", ...metadata}`,
 * atomically (temporary file in the same directory, then rename). Returns the file size.
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata: Readonly<Record<string, string>> = {},
): Promise<number> {
  const { head, chunks, dataBytes } = layoutSafetensors(tensors, metadata, path);
  await writeFileAtomic(path, [head, ...chunks]);
  return head.length + dataBytes;
}
