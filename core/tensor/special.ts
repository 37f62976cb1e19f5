/** Special functions the elementwise ops need (JS has no Math.erf). Accurate to ~1e-14 absolute. */

const TWO_OVER_SQRT_PI = 1.1283791670955126;
const INV_SQRT_PI = 0.5641895835477563;

/** The error function. Power series for |x| < 3, continued fraction of erfc beyond. */
export function erf(x: number): number {
  if (x !== x) return NaN;
  const a = Math.abs(x);
  if (a < 3) {
    // erf(x) = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
    const x2 = x * x;
    let term = x;
    let sum = x;
    for (let n = 1; n < 100; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return TWO_OVER_SQRT_PI * sum;
  }
  return x > 0 ? 1 - erfcLarge(a) : erfcLarge(a) - 1;
}

/** erfc(x) for x ≥ 3 by the Laplace continued fraction, evaluated backwards. */
function erfcLarge(x: number): number {
  if (x > 27) return 0;
  let k = x;
  for (let n = 80; n >= 1; n--) k = x + (n / 2) / k;
  return Math.exp(-x * x) * INV_SQRT_PI / k;
}

/** Standard normal CDF Φ(x). */
export function normalCdf(x: number): number {
  return 0.5 * (1 + erf(x / Math.SQRT2));
}

/** Standard normal density φ(x). */
export function normalPdf(x: number): number {
  return Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
}

/** Logistic sigmoid, stable for large |x|. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}
