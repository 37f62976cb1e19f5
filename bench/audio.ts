/**
 * Audio front-end timings: decoding a 44.1 kHz stereo 16-bit WAV held in memory, downmixing and resampling it to
 * 16 kHz, then the Whisper log-mel features of Qwen2.5-Omni, for 1, 10 and 30 s clips. Prints a table of the
 * median of a few runs.
 *
 *   deno run -A bench/audio.ts
 */
import { decodeWav } from "../core/io/wav.ts";
import { downmixToMono, resampleAudio } from "../core/io/audio_resample.ts";
import { whisperLogMel } from "../core/io/mel.ts";

const SOURCE_RATE = 44100;
const RUNS = 5;

/** A stereo 16-bit PCM WAV of `seconds` of two tones plus a little noise. */
function makeStereoWav(seconds: number): Uint8Array {
  const frames = Math.round(seconds * SOURCE_RATE);
  const bytes = new Uint8Array(44 + frames * 4);
  const view = new DataView(bytes.buffer);
  const text = (at: number, s: string) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + frames * 4, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true);
  view.setUint16(22, 2, true);
  view.setUint32(24, SOURCE_RATE, true);
  view.setUint32(28, SOURCE_RATE * 4, true);
  view.setUint16(32, 4, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, frames * 4, true);
  let seed = 12345;
  for (let i = 0; i < frames; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const noise = (seed / 4294967296 - 0.5) * 0.02;
    const t = i / SOURCE_RATE;
    const l = 0.4 * Math.sin(2 * Math.PI * 220 * t) + noise;
    const r = 0.3 * Math.sin(2 * Math.PI * 3150 * t) + noise;
    view.setInt16(44 + i * 4, Math.round(l * 32767), true);
    view.setInt16(46 + i * 4, Math.round(r * 32767), true);
  }
  return bytes;
}

function medianMs(fn: () => void): number {
  const times: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(RUNS / 2)];
}

const rows: string[][] = [["clip", "decode + mono + resample 44.1k->16k", "log-mel (128 x frames)", "frames"]];
for (const seconds of [1, 10, 30]) {
  const wav = makeStereoWav(seconds);
  let mono16k = new Float32Array(0);
  const loadMs = medianMs(() => {
    const audio = decodeWav(wav, "bench.wav");
    mono16k = resampleAudio(downmixToMono(audio.samples), audio.sampleRate, 16000);
  });
  let frames = 0;
  const melMs = medianMs(() => {
    frames = whisperLogMel(mono16k).frames;
  });
  rows.push([`${seconds} s`, `${loadMs.toFixed(1)} ms`, `${melMs.toFixed(1)} ms`, String(frames)]);
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const [i, row] of rows.entries()) {
  console.log(row.map((cell, c) => cell.padEnd(widths[c])).join(" | "));
  if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("-|-"));
}
console.log(`(median of ${RUNS} runs; Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} logical CPUs)`);
