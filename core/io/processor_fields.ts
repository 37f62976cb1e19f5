/**
 * Typed reads of the fields of a processor's JSON settings (`preprocessor_config.json`): each absent or null
 * field takes its default, and a field of the wrong type raises one error naming the file, the field, what it
 * must be and what it was.
 */
import { type ResampleFilter, resampleFilterFromPilCode } from "./resample.ts";

/** A processor settings object. */
export type ProcessorSettings = Record<string, unknown>;

/** Reads fields of one settings file; `makeError` builds the plugin's own error class from a sentence. */
export class ProcessorFieldReader {
  /** `source` names the file in messages. */
  constructor(readonly source: string, readonly makeError: (message: string) => Error) {}

  /** Throws the error for `field`: it must be `want`, and was `got`. */
  fail(field: string, want: string, got: unknown): never {
    throw this.makeError(`${this.source}: field "${field}" must be ${want}, got ${JSON.stringify(got)}.`);
  }

  /** A boolean field. */
  bool(o: ProcessorSettings, field: string, dflt: boolean): boolean {
    const v = o[field];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "boolean") this.fail(field, "true or false", v);
    return v;
  }

  /** A positive integer value (named `field` in messages); absent takes `dflt`, or is an error without one. */
  positiveInt(v: unknown, field: string, dflt?: number): number {
    if ((v === undefined || v === null) && dflt !== undefined) return dflt;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) this.fail(field, "a positive integer", v);
    return v;
  }

  /** A finite number field. */
  finite(o: ProcessorSettings, field: string, dflt: number): number {
    const v = o[field];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "number" || !Number.isFinite(v)) this.fail(field, "a finite number", v);
    return v;
  }

  /** A per-channel (R, G, B) field: one number for all three, or a list of three. */
  channelTriple(o: ProcessorSettings, field: string, dflt: readonly number[]): number[] {
    const v = o[field];
    if (v === undefined || v === null) return [...dflt];
    if (typeof v === "number" && Number.isFinite(v)) return [v, v, v];
    if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === "number" && Number.isFinite(x))) {
      this.fail(field, "a number or a list of 3 numbers", v);
    }
    return v as number[];
  }

  /** A resampling filter given by its PIL code (`resample`). */
  resample(o: ProcessorSettings, field: string, dflt: ResampleFilter): ResampleFilter {
    const v = o[field];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "number" || !Number.isInteger(v)) this.fail(field, "an integer", v);
    return resampleFilterFromPilCode(v, `${this.source}: field "${field}"`);
  }
}
