/**
 * Bit settings (masquant-algorithm §5.2, paper Tables 1–3): weights per output channel (or per group of
 * input columns), activations per token, dynamic ranges, round half to even.
 */
import type { QuantSpec } from "../tensor/backend.ts";

/** Weight and activation quantizers of a setting. */
export interface QuantScheme {
  /** Short name, e.g. "w4a8". */
  name: string;
  /** Weight quantizer (per output channel when groupSize is 0). */
  weight: QuantSpec;
  /** Activation quantizer (per token); undefined for weight-only settings. */
  act?: QuantSpec;
}

/** The settings of the paper. */
export const SCHEMES: Readonly<Record<"w4a16" | "w8a8" | "w4a8" | "w4a6", QuantScheme>> = {
  /** Weight-only: 4-bit asymmetric, groups of 128 input columns. */
  w4a16: { name: "w4a16", weight: { bits: 4, symmetric: false, groupSize: 128 } },
  w8a8: {
    name: "w8a8",
    weight: { bits: 8, symmetric: true, groupSize: 0 },
    act: { bits: 8, symmetric: true, groupSize: 0 },
  },
  w4a8: {
    name: "w4a8",
    weight: { bits: 4, symmetric: true, groupSize: 0 },
    act: { bits: 8, symmetric: true, groupSize: 0 },
  },
  w4a6: {
    name: "w4a6",
    weight: { bits: 4, symmetric: true, groupSize: 0 },
    act: { bits: 6, symmetric: true, groupSize: 0 },
  },
};

/** Names of the built-in settings. */
export type SchemeName = keyof typeof SCHEMES;

/** True for a built-in setting name. */
export function isSchemeName(s: string): s is SchemeName {
  return s in SCHEMES;
}

/**
 * A scheme from a name plus overrides (weight bits, group size, symmetry). The group size applies to
 * weights only; activations are always per token.
 */
export function makeScheme(
  name: SchemeName,
  over: { weightBits?: number; actBits?: number; groupSize?: number; symmetric?: boolean } = {},
): QuantScheme {
  const base = SCHEMES[name];
  const weight: QuantSpec = {
    bits: over.weightBits ?? base.weight.bits,
    symmetric: over.symmetric ?? base.weight.symmetric,
    groupSize: over.groupSize ?? base.weight.groupSize,
  };
  const act = over.actBits === 16
    ? undefined
    : base.act || over.actBits
    ? { bits: over.actBits ?? base.act!.bits, symmetric: true, groupSize: 0 }
    : undefined;
  const name2 = `w${weight.bits}a${act ? act.bits : 16}`;
  return { name: name2, weight, act };
}
