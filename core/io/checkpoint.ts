/**
 * Model directories in the Hugging Face layout (model-formats.md §2.1): a single `model.safetensors`, a
 * sharded set described by `model.safetensors.index.json`, or (fallback) every `*.safetensors` file in the
 * directory. {@link Checkpoint} reads tensors lazily across shards; {@link writeCheckpoint} writes shards
 * and the index, each file atomically.
 */
import { writeTextAtomic } from "./atomic.ts";
import { SafetensorsFile, type TensorEntry, type TensorToWrite, writeSafetensors } from "./safetensors.ts";

/** File name of an unsharded checkpoint. */
export const SINGLE_FILE_NAME = "model.safetensors";
/** File name of the shard index. */
export const INDEX_FILE_NAME = "model.safetensors.index.json";

/** A model directory that cannot be opened or written; the message is one sentence naming the path. */
export class CheckpointError extends Error {
  /** Creates the error for `path` (a directory or file). */
  constructor(message: string, readonly path: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CheckpointError";
  }
}

/** How the weights of a directory are stored. */
export type CheckpointLayout = "single" | "sharded" | "directory";

/** A tensor entry together with the file that holds it. */
export interface CheckpointEntry extends TensorEntry {
  /** Path of the safetensors file holding the tensor. */
  readonly file: string;
}

/** Joins a directory and a file name. */
function join(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

/** True when `path` is an existing regular file. */
async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Shard file names of `n` shards, `model-00001-of-0000N.safetensors` style. */
export function shardFileNames(n: number): string[] {
  const total = String(n).padStart(5, "0");
  return Array.from({ length: n }, (_, i) => `model-${String(i + 1).padStart(5, "0")}-of-${total}.safetensors`);
}

/** Matches shard names written by {@link writeCheckpoint} (and transformers). */
const SHARD_NAME = /^model-\d{5}-of-\d{5}\.safetensors$/;

/**
 * The weights of a model directory, opened for lazy reading. Opening reads every shard's header only;
 * each read fetches one tensor from its shard.
 */
export class Checkpoint {
  readonly #files: SafetensorsFile[];
  readonly #where: Map<string, SafetensorsFile>;
  readonly #names: readonly string[];

  private constructor(
    /** The model directory. */
    readonly dir: string,
    /** How the weights are stored. */
    readonly layout: CheckpointLayout,
    files: SafetensorsFile[],
    where: Map<string, SafetensorsFile>,
    names: readonly string[],
    /** The index's `metadata` (sharded) or the file's `__metadata__` (single); empty otherwise. */
    readonly metadata: Readonly<Record<string, unknown>>,
  ) {
    this.#files = files;
    this.#where = where;
    this.#names = names;
  }

  /** Opens the weights of model directory `dir` (reads headers only). */
  static async open(dir: string): Promise<Checkpoint> {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(dir);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new CheckpointError(`model directory ${dir} does not exist`, dir, { cause: err });
      }
      throw new CheckpointError(`cannot read model directory ${dir}: ${(err as Error).message}`, dir, { cause: err });
    }
    if (!info.isDirectory) throw new CheckpointError(`${dir} is not a directory; pass the model directory`, dir);

    const single = join(dir, SINGLE_FILE_NAME);
    if (await isFile(single)) {
      const f = await SafetensorsFile.open(single);
      const names = f.names();
      return new Checkpoint(dir, "single", [f], new Map(names.map((n) => [n, f])), names, f.metadata);
    }
    const index = join(dir, INDEX_FILE_NAME);
    if (await isFile(index)) {
      const s = await openSharded(dir, index);
      return new Checkpoint(dir, "sharded", s.files, s.where, s.names, s.metadata);
    }

    const found: string[] = [];
    for await (const e of Deno.readDir(dir)) {
      if ((e.isFile || e.isSymlink) && e.name.endsWith(".safetensors")) found.push(e.name);
    }
    if (found.length === 0) {
      throw new CheckpointError(
        `model directory ${dir} holds no weights: expected ${SINGLE_FILE_NAME}, ${INDEX_FILE_NAME} or *.safetensors files`,
        dir,
      );
    }
    found.sort();
    const files: SafetensorsFile[] = [];
    try {
      const where = new Map<string, SafetensorsFile>();
      const names: string[] = [];
      for (const name of found) {
        const f = await SafetensorsFile.open(join(dir, name));
        files.push(f);
        for (const t of f.names()) {
          const other = where.get(t);
          if (other) {
            throw new CheckpointError(
              `tensor ${JSON.stringify(t)} appears in both ${other.path} and ${f.path}; ` +
                `add a ${INDEX_FILE_NAME} that says which to use`,
              dir,
            );
          }
          where.set(t, f);
          names.push(t);
        }
      }
      return new Checkpoint(dir, "directory", files, where, names, {});
    } catch (err) {
      for (const f of files) f.close();
      throw err;
    }
  }

  /** Tensor names (index order for sharded checkpoints, file order otherwise). */
  names(): string[] {
    return [...this.#names];
  }

  /** True when the checkpoint holds `name`. */
  has(name: string): boolean {
    return this.#where.has(name);
  }

  /** Paths of the safetensors files in use. */
  get files(): string[] {
    return this.#files.map((f) => f.path);
  }

  /** Path of the file holding `name`. */
  fileOf(name: string): string {
    return this.#file(name).path;
  }

  /** Where `name` lives (file and absolute offsets). */
  entry(name: string): CheckpointEntry {
    const f = this.#file(name);
    return { ...f.entry(name), file: f.path };
  }

  /** Raw bytes of `name`. */
  async readBytes(name: string): Promise<Uint8Array<ArrayBuffer>> {
    return await this.#file(name).readBytes(name);
  }

  /** `name` widened to float32. */
  async readFloat32(name: string): Promise<Float32Array<ArrayBuffer>> {
    return await this.#file(name).readFloat32(name);
  }

  /** `name` as int32 (integer dtypes whose values fit). */
  async readInt32(name: string): Promise<Int32Array<ArrayBuffer>> {
    return await this.#file(name).readInt32(name);
  }

  /** `name` as int8 (I8 only). */
  async readInt8(name: string): Promise<Int8Array<ArrayBuffer>> {
    return await this.#file(name).readInt8(name);
  }

  /**
   * The first tensor (in file order, over all shards) holding a NaN or infinite value, with the element's
   * index, or undefined when every float tensor is finite. Reads every float tensor once, in chunks;
   * `onProgress` gets the bytes checked so far and the total.
   */
  async findNonFinite(
    onProgress?: (done: number, total: number) => void,
  ): Promise<{ tensor: string; file: string; index: number } | undefined> {
    const entries = this.#files.flatMap((f) => f.entries().map((e) => ({ f, e })));
    const total = entries.reduce((s, { e }) => s + e.end - e.start, 0);
    let done = 0;
    for (const { f, e } of entries) {
      const index = await f.firstNonFinite(e.name);
      if (index >= 0) return { tensor: e.name, file: f.path, index };
      done += e.end - e.start;
      onProgress?.(done, total);
    }
    return undefined;
  }

  /** Header bytes read on open, summed over files. */
  get headerBytes(): number {
    return this.#files.reduce((s, f) => s + f.headerBytes, 0);
  }

  /** Tensor data bytes read so far, summed over files. */
  get tensorBytesRead(): number {
    return this.#files.reduce((s, f) => s + f.tensorBytesRead, 0);
  }

  /** All bytes read so far, summed over files. */
  get bytesRead(): number {
    return this.#files.reduce((s, f) => s + f.bytesRead, 0);
  }

  /** Closes every file. */
  close(): void {
    for (const f of this.#files) f.close();
  }

  /** The open file holding `name`. */
  #file(name: string): SafetensorsFile {
    const f = this.#where.get(name);
    if (!f) {
      throw new CheckpointError(`tensor ${JSON.stringify(name)} is not in checkpoint ${this.dir}`, this.dir);
    }
    return f;
  }
}

/** The parts of a sharded checkpoint opened through its index. */
interface OpenedShards {
  files: SafetensorsFile[];
  where: Map<string, SafetensorsFile>;
  names: string[];
  metadata: Record<string, unknown>;
}

/** Opens the shards named by an index, validating that every mapped tensor is in its shard. */
async function openSharded(dir: string, index: string): Promise<OpenedShards> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(index));
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new CheckpointError(`${index} is not valid JSON (${why})`, index, { cause: err });
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw new CheckpointError(`${index} has no "weight_map" object mapping tensor names to shard files`, index);
  }
  const metadata = (json as { metadata?: unknown }).metadata;
  const shardOf = new Map<string, string>();
  for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== "string" || shard === "" || shard.startsWith("/") || shard.split("/").includes("..")) {
      throw new CheckpointError(
        `${index} maps tensor ${JSON.stringify(name)} to ${JSON.stringify(shard)}, which is not a file name in ${dir}`,
        index,
      );
    }
    shardOf.set(name, shard);
  }
  if (shardOf.size === 0) throw new CheckpointError(`${index} has an empty weight_map`, index);

  const opened = new Map<string, SafetensorsFile>();
  try {
    for (const shard of new Set(shardOf.values())) {
      const path = join(dir, shard);
      if (!(await isFile(path))) {
        const first = [...shardOf].find(([, s]) => s === shard)![0];
        throw new CheckpointError(
          `${index} maps tensor ${JSON.stringify(first)} to ${shard}, which does not exist in ${dir}`,
          index,
        );
      }
      opened.set(shard, await SafetensorsFile.open(path));
    }
    const where = new Map<string, SafetensorsFile>();
    for (const [name, shard] of shardOf) {
      const f = opened.get(shard)!;
      if (!f.has(name)) {
        throw new CheckpointError(
          `${index} maps tensor ${JSON.stringify(name)} to ${shard}, but ${shard} does not contain it`,
          index,
        );
      }
      where.set(name, f);
    }
    const meta = typeof metadata === "object" && metadata !== null && !Array.isArray(metadata)
      ? metadata as Record<string, unknown>
      : {};
    return { files: [...opened.values()], where, names: [...shardOf.keys()], metadata: meta };
  } catch (err) {
    for (const f of opened.values()) f.close();
    throw err;
  }
}

/** Options of {@link writeCheckpoint}. */
export interface WriteCheckpointOptions {
  /** Largest shard in tensor bytes (default 5 GB, the transformers default); a larger tensor gets its own shard. */
  maxShardBytes?: number;
  /** Extra `__metadata__` strings for every shard (`format: "pt"` is always set). */
  metadata?: Readonly<Record<string, string>>;
}

/** What {@link writeCheckpoint} wrote. */
export interface WrittenCheckpoint {
  /** Safetensors files written, in shard order (file names relative to the directory). */
  files: string[];
  /** The index file name, when the checkpoint is sharded. */
  index?: string;
  /** Sum of the tensors' data bytes (the index's `metadata.total_size`). */
  totalSize: number;
}

/**
 * Writes `tensors` into model directory `dir` (created if missing). Tensors are packed in the given order
 * into shards of at most `maxShardBytes`; one shard is written as `model.safetensors`, several as
 * `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json`, as transformers does. Every file
 * is written atomically, the index last; weight files of an earlier save that the new one does not use
 * are then removed.
 */
export async function writeCheckpoint(
  dir: string,
  tensors: readonly TensorToWrite[],
  options: WriteCheckpointOptions = {},
): Promise<WrittenCheckpoint> {
  const max = options.maxShardBytes ?? 5_000_000_000;
  if (!(max > 0)) throw new CheckpointError(`cannot write ${dir}: maxShardBytes must be positive, got ${max}`, dir);
  const shards: TensorToWrite[][] = [];
  let current: TensorToWrite[] = [];
  let currentBytes = 0;
  let totalSize = 0;
  for (const t of tensors) {
    const bytes = t.data.byteLength;
    if (current.length > 0 && currentBytes + bytes > max) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(t);
    currentBytes += bytes;
    totalSize += bytes;
  }
  if (current.length > 0 || shards.length === 0) shards.push(current);

  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (err) {
    throw new CheckpointError(`cannot create model directory ${dir}: ${(err as Error).message}`, dir, { cause: err });
  }
  const names = shards.length === 1 ? [SINGLE_FILE_NAME] : shardFileNames(shards.length);
  for (let i = 0; i < shards.length; i++) {
    await writeSafetensors(join(dir, names[i]), shards[i], options.metadata);
  }
  let index: string | undefined;
  if (shards.length > 1) {
    index = INDEX_FILE_NAME;
    const entries: [string, string][] = [];
    shards.forEach((s, i) => s.forEach((t) => entries.push([t.name, names[i]])));
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const lines = entries.map(([n, f]) => `    ${JSON.stringify(n)}: ${JSON.stringify(f)}`);
    const text = `{\n  "metadata": {\n    "total_size": ${totalSize}\n  },\n  "weight_map": {\n${
      lines.join(",\n")
    }\n  }\n}\n`;
    await writeTextAtomic(join(dir, index), text);
  }
  const keep = new Set([...names, ...(index ? [index] : [])]);
  const stale: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const weights = e.name === SINGLE_FILE_NAME || e.name === INDEX_FILE_NAME || SHARD_NAME.test(e.name);
    if (weights && !keep.has(e.name)) stale.push(e.name);
  }
  for (const name of stale) await Deno.remove(join(dir, name));
  return { files: names, index, totalSize };
}
