/** Errors raised by tensor operations: they name the op and the shapes involved. */
export class TensorOpError extends Error {
  /** Creates an error whose message starts with the op name. */
  constructor(readonly op: string, detail: string) {
    super(`${op}: ${detail}`);
    this.name = "TensorOpError";
  }
}

/** Formats a shape as `[2,3,4]` for messages. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(",")}]`;
}

/** Throws a TensorOpError unless `cond` holds. */
export function check(cond: unknown, op: string, detail: string | (() => string)): asserts cond {
  if (!cond) throw new TensorOpError(op, typeof detail === "string" ? detail : detail());
}
