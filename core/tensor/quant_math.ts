/**
 * Scalar formulas of the uniform quantizer (masquant-algorithm §5.1), shared by the CPU backend
 * and the reference implementations in tests. The GPU kernels implement the same formulas in WGSL.
 */
import type { QuantSpec } from "./backend.ts";

/** Smallest and largest step sizes: Δ is clamped to [STEP_MIN, STEP_MAX]. */
export const STEP_MIN = 1e-5;
export const STEP_MAX = 1e4;

/** Round half to even (PyTorch's `torch.round`, WGSL's `round`). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  if (r - v === 0.5 && r % 2 !== 0) return r - 1;
  return r;
}

/** Largest signed level of a symmetric b-bit grid: 2^(b−1) − 1. */
export function symMax(bits: number): number {
  return 2 ** (bits - 1) - 1;
}

/** Largest unsigned level of an asymmetric b-bit grid: 2^b − 1. */
export function asymMax(bits: number): number {
  return 2 ** bits - 1;
}

/** Parameters of one quantization group. */
export interface GroupParams {
  /** Step size after clamping. */
  step: number;
  /** Whether the unclamped step lay inside [STEP_MIN, STEP_MAX] (gradient flows through it). */
  stepFree: boolean;
  /** Zero point on the unsigned grid (asymmetric) or 0 (symmetric). */
  zero: number;
}

/**
 * Step and zero point of a group with minimum `lo` and maximum `hi`.
 * `f` rounds intermediate results to the storage precision (Math.fround for f32).
 */
export function groupParams(spec: QuantSpec, lo: number, hi: number, f: (x: number) => number): GroupParams {
  if (spec.symmetric) {
    const m = Math.max(Math.abs(lo), Math.abs(hi));
    const raw = f(m / symMax(spec.bits));
    const step = Math.min(Math.max(raw, STEP_MIN), STEP_MAX);
    return { step: f(step), stepFree: raw >= STEP_MIN && raw <= STEP_MAX, zero: 0 };
  }
  const raw = f((hi - lo) / asymMax(spec.bits));
  const step = f(Math.min(Math.max(raw, STEP_MIN), STEP_MAX));
  const zero = roundHalfEven(Math.min(Math.max(f(-lo / step), -1e4), 1e4));
  return { step, stepFree: raw >= STEP_MIN && raw <= STEP_MAX, zero };
}

/**
 * The clamped integer level of x: symmetric → signed level in [−qmax, qmax];
 * asymmetric → unsigned level in [0, 2^b−1]. `inRange` tells whether clamping was inactive.
 */
export function quantLevel(
  spec: QuantSpec,
  x: number,
  p: GroupParams,
  round: boolean,
  f: (x: number) => number,
): { level: number; inRange: boolean } {
  const t = f(x / p.step);
  const r = round ? roundHalfEven(t) : t;
  if (spec.symmetric) {
    const qmax = symMax(spec.bits);
    if (r > qmax) return { level: qmax, inRange: false };
    if (r < -qmax) return { level: -qmax, inRange: false };
    return { level: r, inRange: true };
  }
  const u = r + p.zero;
  const qmax = asymMax(spec.bits);
  if (u > qmax) return { level: qmax, inRange: false };
  if (u < 0) return { level: 0, inRange: false };
  return { level: u, inRange: true };
}

/** Dequantized value of a level. */
export function dequantLevel(spec: QuantSpec, level: number, p: GroupParams, f: (x: number) => number): number {
  return f((spec.symmetric ? level : level - p.zero) * p.step);
}

/** Validates a QuantSpec, throwing a RangeError naming the bad field. */
export function validateQuantSpec(op: string, spec: QuantSpec): void {
  if (!Number.isInteger(spec.bits) || spec.bits < 2 || spec.bits > 16) {
    throw new RangeError(`${op}: bits must be an integer in 2..16, got ${spec.bits}`);
  }
  if (!Number.isInteger(spec.groupSize) || spec.groupSize < 0) {
    throw new RangeError(`${op}: groupSize must be a non-negative integer, got ${spec.groupSize}`);
  }
}
