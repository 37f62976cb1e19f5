/**
 * Discrete Fourier transforms of any length in float64: a mixed-radix decimation-in-time FFT (radix 4, 2, 3, 5
 * butterflies and a generic butterfly for other prime factors) and a real-input transform that packs an even-length
 * real signal into a half-length complex one. The Whisper front end needs n = 400 = 2^4 * 5^2, which power-of-two
 * FFTs cannot do directly.
 *
 * Convention: X[k] = sum_j x[j] * exp(-2 pi i j k / n) (no scaling).
 */

/** A transform length that the planners reject (not a positive integer, or odd for the real transform). */
export class FftSizeError extends Error {
  /** Creates the error for length `n`. */
  constructor(n: number, why: string) {
    super(`FFT length ${n} is not usable: ${why}.`);
    this.name = "FftSizeError";
  }
}

/** Splits n into the radices the butterflies use: 4s first, then 2, 3, 5 and any remaining primes. */
export function fftFactors(n: number): number[] {
  const factors: number[] = [];
  let rest = n;
  while (rest % 4 === 0) {
    factors.push(4);
    rest /= 4;
  }
  for (const p of [2, 3, 5]) {
    while (rest % p === 0) {
      factors.push(p);
      rest /= p;
    }
  }
  for (let p = 7; p * p <= rest; p += 2) {
    while (rest % p === 0) {
      factors.push(p);
      rest /= p;
    }
  }
  if (rest > 1) factors.push(rest);
  return factors;
}

const SIN_60 = Math.sqrt(3) / 2;
const COS_72 = Math.cos((2 * Math.PI) / 5);
const SIN_72 = Math.sin((2 * Math.PI) / 5);
const COS_144 = Math.cos((4 * Math.PI) / 5);
const SIN_144 = Math.sin((4 * Math.PI) / 5);

/**
 * A reusable plan for the complex forward DFT of one length. Cost O(n * sum of prime factors); lengths with a
 * large prime factor p cost O(n * p) (no Bluestein step).
 */
export class ComplexFft {
  /** Transform length. */
  readonly n: number;
  private readonly factors: number[];
  /** cos and -sin of 2 pi j / n for j < n (the forward twiddles). */
  private readonly cosTable: Float64Array;
  private readonly sinTable: Float64Array;
  /** Scratch for the generic butterfly. */
  private readonly scratchRe: Float64Array;
  private readonly scratchIm: Float64Array;

  /** Plans a transform of length `n` (a positive integer). */
  constructor(n: number) {
    if (!Number.isInteger(n) || n < 1) throw new FftSizeError(n, "it must be a positive integer");
    this.n = n;
    this.factors = fftFactors(n);
    this.cosTable = new Float64Array(n);
    this.sinTable = new Float64Array(n);
    for (let j = 0; j < n; j++) {
      const angle = (2 * Math.PI * j) / n;
      this.cosTable[j] = Math.cos(angle);
      this.sinTable[j] = -Math.sin(angle);
    }
    const largest = Math.max(1, ...this.factors);
    this.scratchRe = new Float64Array(2 * largest);
    this.scratchIm = new Float64Array(2 * largest);
  }

  /**
   * Forward transform of (inRe, inIm) into (outRe, outIm); all arrays hold at least n values and the outputs
   * must not alias the inputs.
   */
  forward(inRe: Float64Array, inIm: Float64Array, outRe: Float64Array, outIm: Float64Array): void {
    if (inRe === outRe || inIm === outIm) {
      throw new RangeError("ComplexFft.forward: output arrays must differ from inputs.");
    }
    this.transform(inRe, inIm, 0, 1, this.n, outRe, outIm, 0, 0);
  }

  /** Recursive step: DFT of length n of in[inOff + j*stride] written contiguously at out[outOff..]. */
  private transform(
    inRe: Float64Array,
    inIm: Float64Array,
    inOff: number,
    stride: number,
    n: number,
    outRe: Float64Array,
    outIm: Float64Array,
    outOff: number,
    level: number,
  ): void {
    if (n === 1) {
      outRe[outOff] = inRe[inOff];
      outIm[outOff] = inIm[inOff];
      return;
    }
    const p = this.factors[level];
    const m = n / p;
    for (let r = 0; r < p; r++) {
      this.transform(inRe, inIm, inOff + r * stride, stride * p, m, outRe, outIm, outOff + r * m, level + 1);
    }
    // Twiddle step: W_n^(r k) = table[r * k * (N / n)].
    const step = this.n / n;
    switch (p) {
      case 2:
        this.butterfly2(outRe, outIm, outOff, m, step);
        break;
      case 3:
        this.butterfly3(outRe, outIm, outOff, m, step);
        break;
      case 4:
        this.butterfly4(outRe, outIm, outOff, m, step);
        break;
      case 5:
        this.butterfly5(outRe, outIm, outOff, m, step);
        break;
      default:
        this.butterflyGeneric(outRe, outIm, outOff, m, step, p);
    }
  }

  private butterfly2(re: Float64Array, im: Float64Array, off: number, m: number, step: number): void {
    const c = this.cosTable, s = this.sinTable;
    for (let k = 0; k < m; k++) {
      const i0 = off + k, i1 = i0 + m;
      const t = k * step;
      const br = re[i1] * c[t] - im[i1] * s[t];
      const bi = re[i1] * s[t] + im[i1] * c[t];
      const ar = re[i0], ai = im[i0];
      re[i0] = ar + br;
      im[i0] = ai + bi;
      re[i1] = ar - br;
      im[i1] = ai - bi;
    }
  }

  private butterfly3(re: Float64Array, im: Float64Array, off: number, m: number, step: number): void {
    const c = this.cosTable, s = this.sinTable;
    for (let k = 0; k < m; k++) {
      const i0 = off + k, i1 = i0 + m, i2 = i1 + m;
      const t1 = k * step, t2 = 2 * k * step;
      const x1r = re[i1] * c[t1] - im[i1] * s[t1], x1i = re[i1] * s[t1] + im[i1] * c[t1];
      const x2r = re[i2] * c[t2] - im[i2] * s[t2], x2i = re[i2] * s[t2] + im[i2] * c[t2];
      const sr = x1r + x2r, si = x1i + x2i;
      const dr = x1r - x2r, di = x1i - x2i;
      const x0r = re[i0], x0i = im[i0];
      const mr = x0r - 0.5 * sr, mi = x0i - 0.5 * si;
      // W_3 = -1/2 - i sqrt(3)/2: the difference term rotates by -i * sqrt(3)/2.
      re[i0] = x0r + sr;
      im[i0] = x0i + si;
      re[i1] = mr + SIN_60 * di;
      im[i1] = mi - SIN_60 * dr;
      re[i2] = mr - SIN_60 * di;
      im[i2] = mi + SIN_60 * dr;
    }
  }

  private butterfly4(re: Float64Array, im: Float64Array, off: number, m: number, step: number): void {
    const c = this.cosTable, s = this.sinTable;
    for (let k = 0; k < m; k++) {
      const i0 = off + k, i1 = i0 + m, i2 = i1 + m, i3 = i2 + m;
      const t1 = k * step, t2 = 2 * t1, t3 = 3 * t1;
      const x0r = re[i0], x0i = im[i0];
      const x1r = re[i1] * c[t1] - im[i1] * s[t1], x1i = re[i1] * s[t1] + im[i1] * c[t1];
      const x2r = re[i2] * c[t2] - im[i2] * s[t2], x2i = re[i2] * s[t2] + im[i2] * c[t2];
      const x3r = re[i3] * c[t3] - im[i3] * s[t3], x3i = re[i3] * s[t3] + im[i3] * c[t3];
      const ar = x0r + x2r, ai = x0i + x2i;
      const br = x0r - x2r, bi = x0i - x2i;
      const cr = x1r + x3r, ci = x1i + x3i;
      const dr = x1r - x3r, di = x1i - x3i;
      // Outputs q = 0..3 with W_4 = -i: X1 = b - i d, X3 = b + i d.
      re[i0] = ar + cr;
      im[i0] = ai + ci;
      re[i1] = br + di;
      im[i1] = bi - dr;
      re[i2] = ar - cr;
      im[i2] = ai - ci;
      re[i3] = br - di;
      im[i3] = bi + dr;
    }
  }

  private butterfly5(re: Float64Array, im: Float64Array, off: number, m: number, step: number): void {
    const c = this.cosTable, s = this.sinTable;
    for (let k = 0; k < m; k++) {
      const i0 = off + k, i1 = i0 + m, i2 = i1 + m, i3 = i2 + m, i4 = i3 + m;
      const t1 = k * step, t2 = 2 * t1, t3 = 3 * t1, t4 = 4 * t1;
      const x0r = re[i0], x0i = im[i0];
      const x1r = re[i1] * c[t1] - im[i1] * s[t1], x1i = re[i1] * s[t1] + im[i1] * c[t1];
      const x2r = re[i2] * c[t2] - im[i2] * s[t2], x2i = re[i2] * s[t2] + im[i2] * c[t2];
      const x3r = re[i3] * c[t3] - im[i3] * s[t3], x3i = re[i3] * s[t3] + im[i3] * c[t3];
      const x4r = re[i4] * c[t4] - im[i4] * s[t4], x4i = re[i4] * s[t4] + im[i4] * c[t4];
      const s14r = x1r + x4r, s14i = x1i + x4i, d14r = x1r - x4r, d14i = x1i - x4i;
      const s23r = x2r + x3r, s23i = x2i + x3i, d23r = x2r - x3r, d23i = x2i - x3i;
      const ar = x0r + COS_72 * s14r + COS_144 * s23r, ai = x0i + COS_72 * s14i + COS_144 * s23i;
      const br = x0r + COS_144 * s14r + COS_72 * s23r, bi = x0i + COS_144 * s14i + COS_72 * s23i;
      // Imaginary parts of W_5^q multiply the differences: -i (sin72 d14 + sin144 d23) for q = 1, etc.
      const er = SIN_72 * d14i + SIN_144 * d23i, ei = -(SIN_72 * d14r + SIN_144 * d23r);
      const fr = SIN_144 * d14i - SIN_72 * d23i, fi = -(SIN_144 * d14r - SIN_72 * d23r);
      re[i0] = x0r + s14r + s23r;
      im[i0] = x0i + s14i + s23i;
      re[i1] = ar + er;
      im[i1] = ai + ei;
      re[i4] = ar - er;
      im[i4] = ai - ei;
      re[i2] = br + fr;
      im[i2] = bi + fi;
      re[i3] = br - fr;
      im[i3] = bi - fi;
    }
  }

  private butterflyGeneric(re: Float64Array, im: Float64Array, off: number, m: number, step: number, p: number) {
    const c = this.cosTable, s = this.sinTable, n = this.n;
    const tr = this.scratchRe, ti = this.scratchIm;
    const rootStep = n / p; // table index of W_p
    for (let k = 0; k < m; k++) {
      for (let r = 0; r < p; r++) {
        const i = off + r * m + k;
        const t = r * k * step;
        tr[r] = re[i] * c[t] - im[i] * s[t];
        ti[r] = re[i] * s[t] + im[i] * c[t];
      }
      for (let q = 0; q < p; q++) {
        let accR = 0, accI = 0;
        for (let r = 0; r < p; r++) {
          const t = ((r * q) % p) * rootStep;
          accR += tr[r] * c[t] - ti[r] * s[t];
          accI += tr[r] * s[t] + ti[r] * c[t];
        }
        tr[p + q] = accR;
        ti[p + q] = accI;
      }
      for (let q = 0; q < p; q++) {
        re[off + q * m + k] = tr[p + q];
        im[off + q * m + k] = ti[p + q];
      }
    }
  }
}

/**
 * A reusable plan for the forward DFT of a real signal of even length n, returning the n/2 + 1 non-negative
 * frequency bins. The signal is packed as z[j] = x[2j] + i x[2j+1], transformed with a length n/2 complex FFT and
 * split with X[k] = E[k] + W_n^k O[k], E = (Z[k] + conj Z[n/2-k]) / 2, O = (Z[k] - conj Z[n/2-k]) / 2i.
 */
export class RealFft {
  /** Transform length (even). */
  readonly n: number;
  /** Number of output bins, n/2 + 1. */
  readonly bins: number;
  private readonly half: ComplexFft;
  private readonly packRe: Float64Array;
  private readonly packIm: Float64Array;
  private readonly zRe: Float64Array;
  private readonly zIm: Float64Array;
  private readonly twCos: Float64Array;
  private readonly twSin: Float64Array;

  /** Plans a real transform of even length `n`. */
  constructor(n: number) {
    if (!Number.isInteger(n) || n < 2 || n % 2 !== 0) {
      throw new FftSizeError(n, "the real transform needs an even length of at least 2");
    }
    this.n = n;
    const h = n / 2;
    this.bins = h + 1;
    this.half = new ComplexFft(h);
    this.packRe = new Float64Array(h);
    this.packIm = new Float64Array(h);
    this.zRe = new Float64Array(h);
    this.zIm = new Float64Array(h);
    this.twCos = new Float64Array(h + 1);
    this.twSin = new Float64Array(h + 1);
    for (let k = 0; k <= h; k++) {
      const angle = (2 * Math.PI * k) / n;
      this.twCos[k] = Math.cos(angle);
      this.twSin[k] = -Math.sin(angle);
    }
  }

  /** Transforms the first n values of `input` into outRe/outIm (n/2 + 1 values each). */
  forward(input: ArrayLike<number>, outRe: Float64Array, outIm: Float64Array): void {
    const h = this.n / 2;
    const pr = this.packRe, pi = this.packIm, zr = this.zRe, zi = this.zIm;
    for (let j = 0; j < h; j++) {
      pr[j] = input[2 * j];
      pi[j] = input[2 * j + 1];
    }
    this.half.forward(pr, pi, zr, zi);
    for (let k = 0; k <= h; k++) {
      const a = k === h ? 0 : k;
      const b = k === 0 ? 0 : h - k;
      const ar = zr[a], ai = zi[a];
      const br = zr[b], bi = -zi[b]; // conj Z[h - k]
      const er = 0.5 * (ar + br), ei = 0.5 * (ai + bi);
      // O = (Z[k] - conj Z[h-k]) / 2i = (d) * (-i/2)
      const dr = ar - br, di = ai - bi;
      const or = 0.5 * di, oi = -0.5 * dr;
      const c = this.twCos[k], s = this.twSin[k];
      outRe[k] = er + or * c - oi * s;
      outIm[k] = ei + or * s + oi * c;
    }
  }
}
