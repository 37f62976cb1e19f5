/**
 * Atomic file writes: data goes to a temporary file in the target's directory, is flushed, and is then
 * renamed over the target, so readers see either the old file or the complete new one. On any failure
 * the temporary file is removed and the target is left untouched.
 */

/** Bytes to write: one buffer, or a (possibly asynchronous) sequence of chunks written in order. */
export type WriteSource = Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/** Options of {@link writeFileAtomic}. */
export interface AtomicWriteOptions {
  /** Flush the data to disk before the rename (default true). */
  sync?: boolean;
}

/** A failed atomic write; the message names the target file and the cause. */
export class AtomicWriteError extends Error {
  /** Creates the error for `path`. */
  constructor(readonly path: string, detail: string, options?: ErrorOptions) {
    super(`could not write ${path}: ${detail}`, options);
    this.name = "AtomicWriteError";
  }
}

/** Splits a path into its directory (with a trailing slash, or "" for the working directory) and base name. */
function splitPath(path: string): { dir: string; base: string } {
  const cut = path.lastIndexOf("/");
  return cut < 0 ? { dir: "", base: path } : { dir: path.slice(0, cut + 1), base: path.slice(cut + 1) };
}

/** A temporary file name beside `path` that no other writer picks. */
export function temporaryPathFor(path: string): string {
  const { dir, base } = splitPath(path);
  const tag = crypto.getRandomValues(new Uint32Array(2));
  return `${dir}.${base}.tmp-${Deno.pid}-${tag[0].toString(36)}${tag[1].toString(36)}`;
}

/** Writes every byte of `bytes` to `file`. */
async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}

/** Iterates the chunks of a write source. */
async function* chunksOf(data: WriteSource): AsyncIterable<Uint8Array> {
  if (data instanceof Uint8Array) yield data;
  else yield* data;
}

/** Writes `data` to `path` atomically (temporary file in the same directory, then rename). */
export async function writeFileAtomic(
  path: string,
  data: WriteSource,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const tmp = temporaryPathFor(path);
  let file: Deno.FsFile | undefined;
  let fromSource = false;
  try {
    file = await Deno.open(tmp, { write: true, createNew: true });
    const chunks = chunksOf(data)[Symbol.asyncIterator]();
    for (;;) {
      fromSource = true;
      const next = await chunks.next();
      fromSource = false;
      if (next.done) break;
      await writeAll(file, next.value);
    }
    if (options.sync ?? true) await file.syncData();
    file.close();
    file = undefined;
    await Deno.rename(tmp, path);
  } catch (err) {
    try {
      file?.close();
    } catch { /* already closed */ }
    await Deno.remove(tmp).catch(() => {});
    // Errors raised by the data source are the caller's own and pass through unchanged.
    if (fromSource) throw err;
    const detail = err instanceof Error ? err.message : String(err);
    throw new AtomicWriteError(path, detail, { cause: err });
  }
}

/** Writes `text` as UTF-8 to `path` atomically. */
export function writeTextAtomic(path: string, text: string, options: AtomicWriteOptions = {}): Promise<void> {
  return writeFileAtomic(path, new TextEncoder().encode(text), options);
}
