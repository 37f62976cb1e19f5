import type { Backend } from "./backend.ts";
import type { DType, HostArray } from "./dtype.ts";

/**
 * Backend-owned memory behind one or more tensors. Reshapes share a storage; it is freed when the
 * last tensor that references it is disposed.
 */
export interface Storage {
  /** Number of live tensors referencing this storage. */
  refs: number;
}

let nextTensorId = 1;
let untrackedDepth = 0;

/**
 * An n-dimensional array living on a backend (host memory for the CPU backend, a GPU buffer for
 * WebGPU). Tensors are immutable: every op returns a new tensor. Device memory is released by
 * `dispose()` or by the enclosing {@link scope}.
 */
export class Tensor {
  /** Unique id, for bookkeeping (autodiff tapes, scopes). */
  readonly id: number = nextTensorId++;
  #disposed = false;

  /** Do not call directly: backends create tensors. */
  constructor(
    readonly backend: Backend,
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly storage: Storage,
  ) {
    if (!untrackedDepth) currentScope()?.track(this);
  }

  /** Number of elements. */
  get size(): number {
    return shapeSize(this.shape);
  }

  /** Number of axes. */
  get rank(): number {
    return this.shape.length;
  }

  /** True once the tensor has been disposed. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /** Releases this tensor's reference to its storage. Safe to call more than once. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.storage.refs--;
    if (this.storage.refs === 0) this.backend.release(this.storage);
  }

  /** A second handle on the same storage (released independently with its own dispose()). */
  retain(): Tensor {
    if (this.#disposed) throw new Error(`retain(): ${this} was disposed`);
    this.storage.refs++;
    return new Tensor(this.backend, this.shape, this.dtype, this.storage);
  }

  /** Like {@link retain}, but no enclosing scope will dispose the new handle (its owner must). */
  retainUntracked(): Tensor {
    untrackedDepth++;
    try {
      return this.retain();
    } finally {
      untrackedDepth--;
    }
  }

  /** Copies the data to the host (waits for pending GPU work). */
  read(): Promise<HostArray> {
    return this.backend.read(this);
  }

  /** Human-readable description for messages. */
  toString(): string {
    return `Tensor(${this.dtype}[${this.shape.join(",")}] on ${this.backend.name})`;
  }
}

/** Product of the dimensions. */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** True when two shapes are equal. */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Row-major strides of a shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Scopes: explicit lifetimes for many intermediate tensors.

class Scope {
  readonly tensors: Tensor[] = [];
  track(t: Tensor): void {
    this.tensors.push(t);
  }
}

const scopes: Scope[] = [];

function currentScope(): Scope | undefined {
  return scopes[scopes.length - 1];
}

function collect(value: unknown, into: Set<Tensor>, depth = 0): void {
  if (depth > 4 || value === null || typeof value !== "object") return;
  if (value instanceof Tensor) {
    into.add(value);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collect(v, into, depth + 1);
    return;
  }
  if (value instanceof Map) {
    for (const v of value.values()) collect(v, into, depth + 1);
    return;
  }
  if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collect(v, into, depth + 1);
  }
}

function closeScope(scope: Scope, result: unknown): void {
  const i = scopes.lastIndexOf(scope);
  if (i >= 0) scopes.splice(i, 1);
  const keep = new Set<Tensor>();
  collect(result, keep);
  const parent = currentScope();
  for (const t of scope.tensors) {
    if (keep.has(t) || kept.has(t)) {
      kept.delete(t);
      parent?.track(t);
    } else {
      t.dispose();
    }
  }
}

const kept = new WeakSet<Tensor>();

/**
 * Runs `fn` and disposes every tensor created inside it, except tensors reachable from its return
 * value (plain objects, arrays and Maps are searched) and tensors passed to {@link keep}. Those
 * survive into the enclosing scope.
 */
export function scope<T>(fn: () => T): T {
  const s = new Scope();
  scopes.push(s);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    closeScope(s, undefined);
    throw e;
  }
  if (result instanceof Promise) {
    throw new Error("scope(): the callback returned a Promise; use scopeAsync() for async work");
  }
  closeScope(s, result);
  return result;
}

/**
 * Async variant of {@link scope}. Do not run two async scopes concurrently: tensors created by
 * interleaved work would be attributed to whichever scope is innermost at the time.
 */
export async function scopeAsync<T>(fn: () => Promise<T>): Promise<T> {
  const s = new Scope();
  scopes.push(s);
  let result: T;
  try {
    result = await fn();
  } catch (e) {
    closeScope(s, undefined);
    throw e;
  }
  closeScope(s, result);
  return result;
}

/**
 * Runs `fn` with scope tracking suspended: tensors it creates belong to no scope (for caches that
 * outlive the scope they are filled in; their owner disposes them).
 */
export function untracked<T>(fn: () => T): T {
  untrackedDepth++;
  try {
    return fn();
  } finally {
    untrackedDepth--;
  }
}

/** Marks tensors to survive the innermost scope (they move to the enclosing one). Returns its argument. */
export function keep<T extends Tensor | Tensor[]>(t: T): T {
  if (Array.isArray(t)) { for (const x of t) kept.add(x); }
  else kept.add(t);
  return t;
}

/** Disposes every tensor reachable from `value` (plain objects, arrays, Maps). */
export function disposeAll(value: unknown): void {
  const s = new Set<Tensor>();
  collect(value, s);
  for (const t of s) t.dispose();
}
