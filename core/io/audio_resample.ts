/**
 * Mono downmix and band-limited resampling to the 16 kHz the Whisper/Omni audio front end expects.
 *
 * The resampler evaluates y[n] = sum_k x[k] g(n * fIn / fOut - k) with a Kaiser-windowed sinc g (x is zero outside
 * the clip; output length ceil(len * fOut / fIn); output sample 0 sits on input sample 0, so no delay is added).
 * With fLow = min(fIn, fOut) / 2 (the lower Nyquist frequency):
 * - cut-off (-6 dB point) 0.95 fLow (7.6 kHz for a 16 kHz target), passband edge 0.90 fLow (7.2 kHz), stopband edge
 *   fLow (8 kHz): the transition width is 0.10 fLow, so every tone above the new Nyquist frequency is in the stopband;
 * - Kaiser beta 9.62 (designed for 96 dB stopband attenuation, passband ripple about 1e-4 dB) over 64 zero
 *   crossings of the lower rate on each side (kernel half-width 64 / min(1, fOut / fIn) input samples);
 * - DC gain 1 in both directions (the kernel is scaled by the cut-off relative to the input rate).
 * When fOut / fIn reduces to L / M with at most a few thousand phases the kernel is tabulated exactly per phase;
 * otherwise it is read from a table sampled 4096 times per lower-rate period with linear interpolation.
 * Computation is float64; results are float32.
 */
import { readWav } from "./wav.ts";

/** Target rate of {@link loadAudio16k}. */
export const TARGET_SAMPLE_RATE = 16000;
/** Cut-off of the anti-aliasing filter as a fraction of the lower Nyquist frequency. */
export const RESAMPLE_CUTOFF = 0.95;
/** Zero crossings of the lower rate on each side of the kernel. */
export const RESAMPLE_ZERO_CROSSINGS = 64;
/** Kaiser window shape: 0.1102 * (96 - 8.7) for a 96 dB stopband. */
export const RESAMPLE_KAISER_BETA = 0.1102 * (96 - 8.7);

const MAX_EXACT_TABLE = 1 << 21;
const INTERP_DENSITY = 4096;

/** Averages the channels into one (a copy when there is a single channel). */
export function downmixToMono(channels: readonly Float32Array[]): Float32Array<ArrayBuffer> {
  if (channels.length === 0) throw new RangeError("downmixToMono needs at least one channel");
  const n = channels[0].length;
  for (const ch of channels) {
    if (ch.length !== n) throw new RangeError("downmixToMono: channels have different lengths");
  }
  if (channels.length === 1) return new Float32Array(channels[0]);
  const out = new Float32Array(n);
  const inv = 1 / channels.length;
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (const ch of channels) s += ch[i];
    out[i] = s * inv;
  }
  return out;
}

/** Modified Bessel function of the first kind, order 0 (power series; converges for the betas used here). */
export function besselI0(x: number): number {
  const q = (x * x) / 4;
  let term = 1, sum = 1;
  for (let k = 1; k < 200; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return sum;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** The resampling kernel: continuous time in input samples, cut-off `cut` (in input-Nyquist units). */
function makeKernel(cut: number, halfWidth: number): (tau: number) => number {
  const i0Beta = besselI0(RESAMPLE_KAISER_BETA);
  return (tau: number): number => {
    const u = tau / halfWidth;
    if (u <= -1 || u >= 1) return 0;
    const x = Math.PI * cut * tau;
    const sinc = x === 0 ? 1 : Math.sin(x) / x;
    return cut * sinc * besselI0(RESAMPLE_KAISER_BETA * Math.sqrt(1 - u * u)) / i0Beta;
  };
}

/**
 * Resamples `input` from `fromRate` to `toRate` Hz (positive integers) with the windowed-sinc filter of the module
 * comment; returns a copy when the rates are equal.
 */
export function resampleAudio(input: Float32Array, fromRate: number, toRate: number): Float32Array<ArrayBuffer> {
  for (const r of [fromRate, toRate]) {
    if (!Number.isInteger(r) || r <= 0) throw new RangeError(`sample rate ${r} is not a positive integer`);
  }
  if (fromRate === toRate) return new Float32Array(input);
  const g = gcd(fromRate, toRate);
  const up = toRate / g, down = fromRate / g; // output n sits at input time n * down / up
  const ratio = Math.min(1, toRate / fromRate);
  const cut = RESAMPLE_CUTOFF * ratio;
  const halfWidth = RESAMPLE_ZERO_CROSSINGS / ratio;
  const kernel = makeKernel(cut, halfWidth);
  const len = input.length;
  const outLen = Math.ceil((len * up) / down);
  const out = new Float32Array(outLen);
  // Taps for output time t = base + frac (frac in [0, 1)): k = base - reach + 1 .. base + reach.
  const reach = Math.ceil(halfWidth);
  const taps = 2 * reach;

  if (up * taps <= MAX_EXACT_TABLE) {
    const table = new Float64Array(up * taps);
    for (let ph = 0; ph < up; ph++) {
      const frac = ph / up;
      for (let j = 0; j < taps; j++) table[ph * taps + j] = kernel(frac - (j - reach + 1));
    }
    let base = 0, phase = 0;
    for (let n = 0; n < outLen; n++) {
      out[n] = dotTaps(input, base - reach + 1, table, phase * taps, taps);
      phase += down;
      base += Math.floor(phase / up);
      phase %= up;
    }
    return out;
  }

  // Dense kernel table over tau in [0, halfWidth], sampled every 1 / density input samples.
  const density = INTERP_DENSITY * ratio;
  const size = Math.ceil(halfWidth * density) + 2;
  const dense = new Float64Array(size);
  for (let i = 0; i < size; i++) dense[i] = kernel(i / density);
  const weights = new Float64Array(taps);
  let base = 0, phase = 0;
  for (let n = 0; n < outLen; n++) {
    const frac = phase / up;
    for (let j = 0; j < taps; j++) {
      const pos = Math.abs(frac - (j - reach + 1)) * density;
      const i = Math.floor(pos);
      const w = pos - i;
      weights[j] = i + 1 < size ? dense[i] * (1 - w) + dense[i + 1] * w : 0;
    }
    out[n] = dotTaps(input, base - reach + 1, weights, 0, taps);
    phase += down;
    base += Math.floor(phase / up);
    phase %= up;
  }
  return out;
}

/** sum_j x[first + j] * w[off + j] over j < taps, treating x as zero outside its range. */
function dotTaps(x: Float32Array, first: number, w: Float64Array, off: number, taps: number): number {
  let lo = 0, hi = taps;
  if (first < 0) lo = -first;
  if (first + hi > x.length) hi = x.length - first;
  let acc = 0;
  for (let j = lo; j < hi; j++) acc += x[first + j] * w[off + j];
  return acc;
}

/** Reads a WAV file, averages its channels and resamples it to 16 kHz. */
export async function loadAudio16k(path: string): Promise<Float32Array<ArrayBuffer>> {
  const audio = await readWav(path);
  return resampleAudio(downmixToMono(audio.samples), audio.sampleRate, TARGET_SAMPLE_RATE);
}
