/**
 * The assertion helpers the tests use, with the names of Deno's @std/assert (JSR is not reachable from
 * our machines), built on Node's built-in `node:assert`.
 */
import nodeAssert from "node:assert/strict";

/** Asserts that `cond` is truthy. */
export function assert(cond: unknown, msg?: string): asserts cond {
  nodeAssert.ok(cond, msg);
}

/** Deep strict equality (typed arrays compare equal to plain arrays of the same numbers). */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  const norm = (
    v: unknown,
  ): unknown => (ArrayBuffer.isView(v) && !(v instanceof DataView) ? Array.from(v as unknown as ArrayLike<number>) : v);
  nodeAssert.deepStrictEqual(norm(actual), norm(expected), msg);
}

/** Asserts |actual − expected| ≤ tolerance. */
export function assertAlmostEquals(actual: number, expected: number, tolerance = 1e-7, msg?: string): void {
  nodeAssert.ok(
    Math.abs(actual - expected) <= tolerance,
    msg ?? `expected ${actual} to be within ${tolerance} of ${expected}`,
  );
}

/** Asserts that `fn` throws; optionally that the error is an instance of `cls` whose message includes `includes`. */
export function assertThrows(
  fn: () => unknown,
  cls?: abstract new (...args: never[]) => Error,
  includes?: string,
): Error {
  try {
    fn();
  } catch (e) {
    if (cls && !(e instanceof cls)) {
      throw new Error(`expected ${cls.name}, got ${(e as Error)?.constructor?.name}: ${e}`);
    }
    if (includes && !String((e as Error)?.message).includes(includes)) {
      throw new Error(`expected the message to include "${includes}", got "${(e as Error)?.message}"`);
    }
    return e as Error;
  }
  throw new Error("expected the function to throw");
}

/** Async variant of {@link assertThrows}. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  cls?: abstract new (...args: never[]) => Error,
  includes?: string,
): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    if (cls && !(e instanceof cls)) {
      throw new Error(`expected ${cls.name}, got ${(e as Error)?.constructor?.name}: ${e}`);
    }
    if (includes && !String((e as Error)?.message).includes(includes)) {
      throw new Error(`expected the message to include "${includes}", got "${(e as Error)?.message}"`);
    }
    return e as Error;
  }
  throw new Error("expected the promise to reject");
}
