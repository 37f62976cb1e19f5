/**
 * The Whisper log-mel spectrogram as Qwen2.5-Omni's processor computes it (model-formats.md section 1.3):
 * 16 kHz mono, the clip zero-padded on the right to 300 s, STFT with n_fft 400 and hop 160 on a periodic Hann
 * window with center reflect padding of 200, power spectrum (201 bins), the last frame dropped, 128 slaney mel
 * filters (slaney scale and area normalisation over 0-8000 Hz), log10(max(mel, 1e-10)), max(x, x.max() - 8),
 * (x + 4) / 4. Only the frames the thinker keeps are returned (ceil(samples / 160), the attention mask), but the
 * global maximum is taken over every frame of the padded buffer, as the feature extractor does; frames that see
 * only padding are exactly log10(1e-10) = -10 and never raise it, so only frames overlapping the clip are computed.
 * Everything is computed in float64 and returned as float32.
 */
import { RealFft } from "./fft.ts";

/** Sample rate the Omni feature extractor expects. */
export const WHISPER_SAMPLE_RATE = 16000;
/** FFT length (and Hann window length) of the Whisper STFT. */
export const WHISPER_N_FFT = 400;
/** Hop between STFT frames in samples (10 ms). */
export const WHISPER_HOP = 160;
/** Mel filters of Qwen2.5-Omni's audio encoder (preprocessor_config feature_size). */
export const OMNI_N_MELS = 128;
/** Longest clip the Omni feature extractor takes: chunk_length 300 s * 16 kHz (n_samples). */
export const OMNI_MAX_SAMPLES = 4800000;
/** Floor applied to mel energies before log10. */
export const MEL_FLOOR = 1e-10;

/** A clip the Omni audio front end cannot take (too long or empty); the message names the file. */
export class AudioClipError extends Error {
  /** Creates the error with a complete message. */
  constructor(message: string) {
    super(message);
    this.name = "AudioClipError";
  }
}

/**
 * Checks that a 16 kHz clip of `samples` samples fits Qwen2.5-Omni's feature extractor, which would silently cut
 * anything past 300 s; throws an {@link AudioClipError} naming `file` when it is empty or too long.
 */
export function checkOmniClipLength(samples: number, file: string, maxSamples = OMNI_MAX_SAMPLES): void {
  if (samples <= 0) throw new AudioClipError(`${file} contains no audio samples; give a non-empty clip.`);
  if (samples > maxSamples) {
    const secs = (samples / WHISPER_SAMPLE_RATE).toFixed(3);
    const maxSecs = maxSamples / WHISPER_SAMPLE_RATE;
    throw new AudioClipError(
      `${file} lasts ${secs} s (${samples} samples at 16 kHz) but the Qwen2.5-Omni feature extractor takes at ` +
        `most ${maxSecs} s (${maxSamples} samples); cut it into shorter clips.`,
    );
  }
}

/** Number of mel frames the Omni thinker uses for a clip of `samples` samples: ceil(samples / 160). */
export function omniValidFrames(samples: number): number {
  return Math.ceil(samples / WHISPER_HOP);
}

/**
 * Audio tokens the Omni thinker spends on `frames` mel frames (section 1.3): a = (L-1)//2 + 1 after the stride-2
 * convolution, n = (a-2)//2 + 1 after the stride-2 average pooling, with Python floor division (25 tokens/s; clips
 * of 1 or 2 frames give 0 tokens).
 */
export function omniAudioTokenCount(frames: number): number {
  if (!Number.isInteger(frames) || frames < 0) throw new RangeError(`frame count ${frames} is not a whole number`);
  const afterConv = Math.floor((frames - 1) / 2) + 1;
  return Math.floor((afterConv - 2) / 2) + 1;
}

/** Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 mels per factor 6.4). */
export function hzToMelSlaney(hz: number): number {
  if (hz < 1000) return (3 * hz) / 200;
  return 15 + (Math.log(hz / 1000) * 27) / Math.log(6.4);
}

/** Inverse of {@link hzToMelSlaney}. */
export function melToHzSlaney(mel: number): number {
  if (mel < 15) return (200 * mel) / 3;
  return 1000 * Math.exp((Math.log(6.4) / 27) * (mel - 15));
}

/** A mel filter bank stored densely ([nMels, nFreqs] row-major) with each filter's non-zero bin range. */
export interface MelFilterBank {
  /** Number of filters (rows). */
  nMels: number;
  /** Number of FFT bins (columns). */
  nFreqs: number;
  /** Weights, row-major [nMels, nFreqs]. */
  weights: Float64Array;
  /** First non-zero bin of each filter. */
  start: Int32Array;
  /** One past the last non-zero bin of each filter. */
  end: Int32Array;
}

/**
 * Triangular mel filters on the slaney scale with slaney (area) normalisation: centres equally spaced in mel
 * between fMin and fMax, FFT bin k at k * (sampleRate // 2) / (nFreqs - 1) Hz, each triangle scaled by
 * 2 / (upper edge - lower edge) in Hz.
 */
export function melFilterBankSlaney(
  nFreqs: number,
  nMels: number,
  fMin: number,
  fMax: number,
  sampleRate: number,
): MelFilterBank {
  const melMin = hzToMelSlaney(fMin), melMax = hzToMelSlaney(fMax);
  const edges = new Float64Array(nMels + 2);
  for (let i = 0; i < nMels + 2; i++) edges[i] = melToHzSlaney(melMin + ((melMax - melMin) * i) / (nMels + 1));
  const nyquist = Math.floor(sampleRate / 2);
  const weights = new Float64Array(nMels * nFreqs);
  const start = new Int32Array(nMels), end = new Int32Array(nMels);
  for (let m = 0; m < nMels; m++) {
    const lo = edges[m], mid = edges[m + 1], hi = edges[m + 2];
    const norm = 2 / (hi - lo);
    let first = -1, last = -1;
    for (let k = 0; k < nFreqs; k++) {
      const f = (nyquist * k) / (nFreqs - 1);
      const rising = (f - lo) / (mid - lo);
      const falling = (hi - f) / (hi - mid);
      const w = Math.max(0, Math.min(rising, falling));
      if (w > 0) {
        weights[m * nFreqs + k] = w * norm;
        if (first < 0) first = k;
        last = k;
      }
    }
    start[m] = first < 0 ? 0 : first;
    end[m] = first < 0 ? 0 : last + 1;
  }
  return { nMels, nFreqs, weights, start, end };
}

/** Periodic Hann window of length n: 0.5 - 0.5 cos(2 pi j / n). */
export function periodicHann(n: number): Float64Array {
  const w = new Float64Array(n);
  for (let j = 0; j < n; j++) w[j] = 0.5 - 0.5 * Math.cos((2 * Math.PI * j) / n);
  return w;
}

/** Options of {@link whisperLogMel}. */
export interface WhisperLogMelOptions {
  /** Number of mel filters (default 128, Qwen2.5-Omni). */
  nMels?: number;
  /** Length the clip is zero-padded to before the STFT (default 4800000 = 300 s); longer clips are rejected. */
  paddedLength?: number;
  /** Name used in error messages (default "audio clip"). */
  name?: string;
}

/** A log-mel spectrogram: `data` is [nMels, frames] row-major. */
export interface LogMel {
  /** Values, row-major [nMels, frames]. */
  data: Float32Array<ArrayBuffer>;
  /** Number of mel bins (rows). */
  nMels: number;
  /** Number of frames (columns): the frames the Omni thinker keeps, ceil(samples / 160). */
  frames: number;
}

const bankCache = new Map<number, MelFilterBank>();

/** The Whisper mel bank for `nMels` filters at 16 kHz, n_fft 400 (cached). */
export function whisperMelFilters(nMels = OMNI_N_MELS): MelFilterBank {
  let bank = bankCache.get(nMels);
  if (!bank) {
    bank = melFilterBankSlaney(WHISPER_N_FFT / 2 + 1, nMels, 0, WHISPER_SAMPLE_RATE / 2, WHISPER_SAMPLE_RATE);
    bankCache.set(nMels, bank);
  }
  return bank;
}

/**
 * Log-mel features of a 16 kHz mono clip exactly as Qwen2.5-Omni's processor feeds them to the audio tower:
 * returns the ceil(samples / 160) valid frames of the padded-to-300 s spectrogram (see the module comment).
 * Throws an {@link AudioClipError} for an empty clip or one longer than `paddedLength`.
 */
export function whisperLogMel(samples16k: Float32Array, opts: WhisperLogMelOptions = {}): LogMel {
  const nMels = opts.nMels ?? OMNI_N_MELS;
  const padded = opts.paddedLength ?? OMNI_MAX_SAMPLES;
  const n = samples16k.length;
  checkOmniClipLength(n, opts.name ?? "audio clip", padded);
  const nFft = WHISPER_N_FFT, hop = WHISPER_HOP, half = nFft / 2;
  if (!Number.isInteger(padded) || padded <= half || padded % hop !== 0) {
    throw new RangeError(`padded length ${padded} must be a multiple of ${hop} longer than ${half} samples`);
  }

  // Frames of the padded buffer: 1 + padded // hop, minus the dropped last one. Frames starting at or past the
  // end of the clip (t * hop - half >= n) hold only zeros, unless the clip reaches the reflected buffer end.
  const totalFrames = Math.floor(padded / hop);
  const computed = Math.min(totalFrames, Math.ceil((n + half) / hop));
  const valid = omniValidFrames(n);

  const bank = whisperMelFilters(nMels);
  const window = periodicHann(nFft);
  const fft = new RealFft(nFft);
  const frame = new Float64Array(nFft);
  const specRe = new Float64Array(fft.bins), specIm = new Float64Array(fft.bins);
  const power = new Float64Array(fft.bins);
  const logMel = new Float64Array(nMels * computed);

  // Sample j of the reflect-padded, zero-padded buffer (j in [-half, padded + half)).
  const sampleAt = (j: number): number => {
    if (j < 0) j = -j;
    else if (j >= padded) j = 2 * (padded - 1) - j;
    return j < n ? samples16k[j] : 0;
  };

  let globalMax = -Infinity;
  for (let t = 0; t < computed; t++) {
    const first = t * hop - half;
    if (first >= 0 && first + nFft <= n) {
      for (let j = 0; j < nFft; j++) frame[j] = samples16k[first + j] * window[j];
    } else {
      for (let j = 0; j < nFft; j++) frame[j] = sampleAt(first + j) * window[j];
    }
    fft.forward(frame, specRe, specIm);
    for (let k = 0; k < fft.bins; k++) power[k] = specRe[k] * specRe[k] + specIm[k] * specIm[k];
    for (let m = 0; m < nMels; m++) {
      const row = m * bank.nFreqs;
      let acc = 0;
      for (let k = bank.start[m]; k < bank.end[m]; k++) acc += bank.weights[row + k] * power[k];
      const v = Math.log10(Math.max(acc, MEL_FLOOR));
      logMel[m * computed + t] = v;
      if (v > globalMax) globalMax = v;
    }
  }
  // Frames past `computed` are all log10(MEL_FLOOR).
  if (computed < totalFrames) globalMax = Math.max(globalMax, Math.log10(MEL_FLOOR));

  const floor = globalMax - 8;
  const data = new Float32Array(nMels * valid);
  for (let m = 0; m < nMels; m++) {
    for (let t = 0; t < valid; t++) {
      const v = logMel[m * computed + t];
      data[m * valid + t] = (Math.max(v, floor) + 4) / 4;
    }
  }
  return { data, nMels, frames: valid };
}
