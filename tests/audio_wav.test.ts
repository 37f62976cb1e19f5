/**
 * WAV decoding (every PCM/float variant, extensible headers, odd chunks, bad input), mono downmix and the 16 kHz
 * band-limited resampler (passband gain and phase on sines, stopband attenuation above the new Nyquist frequency,
 * a round trip of a band-limited signal). Expected samples are computed here from the integers written into each
 * generated file (int / 2^(bits-1), (u8 - 128) / 128), and resampled sines are compared with the same sine
 * evaluated analytically at the output rate.
 */
import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { decodeWav, readWav, WavFormatError } from "../core/io/wav.ts";
import { downmixToMono, loadAudio16k, resampleAudio } from "../core/io/audio_resample.ts";
import { sharedTest } from "./shared_data.ts";

type Encoding = "u8" | "s16" | "s24" | "s32" | "f32" | "f64";

interface WavSpec {
  encoding: Encoding;
  rate: number;
  /** Per-channel values: integers for PCM encodings (u8 raw bytes), floats for f32/f64. */
  channels: number[][];
  extensible?: boolean;
  /** Extra chunks written before (and after) the data chunk. */
  before?: { id: string; body: Uint8Array }[];
  after?: { id: string; body: Uint8Array }[];
  formatTag?: number;
}

const BITS: Record<Encoding, number> = { u8: 8, s16: 16, s24: 24, s32: 32, f32: 32, f64: 64 };

function ascii(s: string): number[] {
  return [...s].map((c) => c.charCodeAt(0));
}

/** A test-only RIFF/WAVE writer covering every encoding the decoder reads. */
function makeWav(spec: WavSpec): Uint8Array<ArrayBuffer> {
  const bits = BITS[spec.encoding];
  const isFloat = spec.encoding === "f32" || spec.encoding === "f64";
  const nCh = spec.channels.length;
  const frames = nCh ? spec.channels[0].length : 0;
  const blockAlign = nCh * (bits / 8);
  const data = new Uint8Array(frames * blockAlign);
  const dv = new DataView(data.buffer);
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < nCh; c++) {
      const at = i * blockAlign + c * (bits / 8);
      const v = spec.channels[c][i];
      switch (spec.encoding) {
        case "u8":
          dv.setUint8(at, v);
          break;
        case "s16":
          dv.setInt16(at, v, true);
          break;
        case "s24":
          dv.setUint8(at, v & 0xff);
          dv.setUint8(at + 1, (v >> 8) & 0xff);
          dv.setUint8(at + 2, (v >> 16) & 0xff);
          break;
        case "s32":
          dv.setInt32(at, v, true);
          break;
        case "f32":
          dv.setFloat32(at, v, true);
          break;
        case "f64":
          dv.setFloat64(at, v, true);
      }
    }
  }
  const tag = spec.formatTag ?? (isFloat ? 3 : 1);
  const fmt = new Uint8Array(spec.extensible ? 40 : 16);
  const fv = new DataView(fmt.buffer);
  fv.setUint16(0, spec.extensible ? 0xfffe : tag, true);
  fv.setUint16(2, nCh, true);
  fv.setUint32(4, spec.rate, true);
  fv.setUint32(8, spec.rate * blockAlign, true);
  fv.setUint16(12, blockAlign, true);
  fv.setUint16(14, bits, true);
  if (spec.extensible) {
    fv.setUint16(16, 22, true);
    fv.setUint16(18, bits, true);
    fv.setUint32(20, nCh === 2 ? 3 : 4, true);
    fv.setUint32(24, tag, true);
    fmt.set([0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71], 28);
  }
  const chunks = [
    ...(spec.before ?? []),
    { id: "fmt ", body: fmt },
    { id: "data", body: data },
    ...(spec.after ?? []),
  ];
  const parts: number[] = [];
  for (const ch of chunks) {
    parts.push(...ascii(ch.id));
    const n = ch.body.length;
    parts.push(n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff);
    for (const b of ch.body) parts.push(b);
    if (n & 1) parts.push(0);
  }
  const riffSize = 4 + parts.length;
  return new Uint8Array([
    ...ascii("RIFF"),
    riffSize & 0xff,
    (riffSize >> 8) & 0xff,
    (riffSize >> 16) & 0xff,
    (riffSize >>> 24) & 0xff,
    ...ascii("WAVE"),
    ...parts,
  ]);
}

function assertSamples(actual: Float32Array, expected: number[], label: string): void {
  assertEquals(actual.length, expected.length, `${label}: length`);
  for (let i = 0; i < expected.length; i++) {
    assertEquals(actual[i], Math.fround(expected[i]), `${label}: sample ${i}`);
  }
}

function expectWavError(bytes: Uint8Array, name: string, pattern: RegExp): void {
  const e = assertThrows(() => decodeWav(bytes, name), WavFormatError);
  assert(e.message.includes(name), `message names the file: ${e.message}`);
  assert(pattern.test(e.message), `message ${JSON.stringify(e.message)} does not match ${pattern}`);
}

/** Asserts that `fn` throws an error whose message matches `pattern`. */
function throwsMatching(fn: () => unknown, pattern: RegExp): void {
  const e = assertThrows(fn);
  assert(pattern.test(e.message), `message ${JSON.stringify(e.message)} does not match ${pattern}`);
}

Deno.test("wav: unsigned 8-bit PCM is (b - 128) / 128", () => {
  const raw = [0, 1, 64, 127, 128, 129, 255];
  const a = decodeWav(makeWav({ encoding: "u8", rate: 8000, channels: [raw] }), "u8.wav");
  assertEquals(a.sampleRate, 8000);
  assertEquals(a.channels, 1);
  assertSamples(a.samples[0], raw.map((b) => (b - 128) / 128), "u8");
});

Deno.test("wav: signed 16/24/32-bit PCM are scaled by 2^(bits-1)", () => {
  const s16 = [-32768, -1, 0, 1, 1234, 32767];
  const a = decodeWav(makeWav({ encoding: "s16", rate: 16000, channels: [s16] }), "s16.wav");
  assertSamples(a.samples[0], s16.map((v) => v / 32768), "s16");
  const s24 = [-8388608, -65536, -1, 0, 1, 255, 256, 4660, 8388607];
  const b = decodeWav(makeWav({ encoding: "s24", rate: 22050, channels: [s24] }), "s24.wav");
  assertSamples(b.samples[0], s24.map((v) => v / 8388608), "s24");
  const s32 = [-2147483648, -123456789, -1, 0, 1, 123456789, 2147483647];
  const c = decodeWav(makeWav({ encoding: "s32", rate: 48000, channels: [s32] }), "s32.wav");
  assertSamples(c.samples[0], s32.map((v) => v / 2147483648), "s32");
  assert(c.samples[0][6] <= 1 && c.samples[0][0] === -1);
});

Deno.test("wav: IEEE float 32 and 64-bit", () => {
  const vals = [-1.5, -1, -0.25, 0, 1e-7, 0.3333333333, 1, 2.75];
  const a = decodeWav(makeWav({ encoding: "f32", rate: 16000, channels: [vals] }), "f32.wav");
  assertSamples(a.samples[0], vals, "f32");
  const b = decodeWav(makeWav({ encoding: "f64", rate: 16000, channels: [vals] }), "f64.wav");
  assertSamples(b.samples[0], vals, "f64");
});

Deno.test("wav: stereo is de-interleaved and extensible headers decode like plain ones", () => {
  const left = [100, -200, 300, -32768], right = [-5, 6, 32767, 0];
  const plain = decodeWav(makeWav({ encoding: "s16", rate: 44100, channels: [left, right] }), "st.wav");
  assertEquals(plain.channels, 2);
  assertEquals(plain.sampleRate, 44100);
  assertSamples(plain.samples[0], left.map((v) => v / 32768), "left");
  assertSamples(plain.samples[1], right.map((v) => v / 32768), "right");
  const ext = decodeWav(
    makeWav({ encoding: "s16", rate: 44100, channels: [left, right], extensible: true }),
    "st_ext.wav",
  );
  assertEquals(ext, plain);
  const l24 = [8388607, -8388608, 77], r24 = [1, -1, 0];
  const e24 = decodeWav(makeWav({ encoding: "s24", rate: 96000, channels: [l24, r24], extensible: true }), "x.wav");
  assertSamples(e24.samples[1], r24.map((v) => v / 8388608), "ext s24");
  const fl = [0.5, -0.125];
  const ef = decodeWav(makeWav({ encoding: "f32", rate: 8000, channels: [fl], extensible: true }), "xf.wav");
  assertSamples(ef.samples[0], fl, "ext f32");
});

Deno.test("wav: unknown chunks are skipped, odd sizes include their pad byte", () => {
  const vals = [1, 2, 3, -4, 5];
  const bytes = makeWav({
    encoding: "s16",
    rate: 16000,
    channels: [vals],
    before: [
      { id: "LIST", body: new Uint8Array([1, 2, 3, 4, 5]) },
      { id: "junk", body: new Uint8Array(7) },
    ],
    after: [{ id: "id3 ", body: new Uint8Array([9, 9, 9]) }],
  });
  const a = decodeWav(bytes, "chunks.wav");
  assertSamples(a.samples[0], vals.map((v) => v / 32768), "chunks");
  // An odd-sized 8-bit data chunk followed by another chunk.
  const odd = makeWav({
    encoding: "u8",
    rate: 8000,
    channels: [[10, 20, 30]],
    after: [{ id: "cue ", body: new Uint8Array(4) }],
  });
  assertSamples(decodeWav(odd, "odd.wav").samples[0], [10, 20, 30].map((b) => (b - 128) / 128), "odd");
  // A subarray view with a non-zero byte offset decodes the same.
  const padded = new Uint8Array(bytes.length + 3);
  padded.set(bytes, 3);
  assertEquals(decodeWav(padded.subarray(3), "view.wav"), a);
});

Deno.test("wav: bad input gives one clear error naming the file", () => {
  expectWavError(new Uint8Array(0), "empty.wav", /is not a WAV file/);
  expectWavError(new TextEncoder().encode("ID3\u0004 this is an mp3 file"), "song.mp3", /is not a WAV file/);
  const good = makeWav({ encoding: "s16", rate: 16000, channels: [[1, 2, 3, 4]] });
  const rf64 = good.slice();
  rf64.set(ascii("RF64"), 0);
  expectWavError(rf64, "big.wav", /RF64/);
  expectWavError(makeWav({ encoding: "s16", rate: 16000, channels: [[1, 2]], formatTag: 0x55 }), "a.wav", /0x0055/);
  expectWavError(makeWav({ encoding: "u8", rate: 8000, channels: [[1, 2]], formatTag: 7 }), "mulaw.wav", /0x0007/);
  const extMp3 = makeWav({ encoding: "s16", rate: 16000, channels: [[1, 2]], extensible: true, formatTag: 0x55 });
  expectWavError(extMp3, "ext.wav", /0x0055/);
  const badGuid = makeWav({ encoding: "s16", rate: 16000, channels: [[1, 2]], extensible: true });
  badGuid[20 + 8 + 30] ^= 0xff; // a byte of the sub-format GUID tail
  expectWavError(badGuid, "guid.wav", /GUID/);
  expectWavError(good.subarray(0, good.length - 3), "cut.wav", /truncated/);
  const partial = good.slice();
  new DataView(partial.buffer).setUint32(40, 7, true); // data size 7 with 2-byte frames
  expectWavError(partial, "partial.wav", /truncated.*sample frame/);
  expectWavError(makeWav({ encoding: "s16", rate: 16000, channels: [] }), "nochan.wav", /0 channels/);
  expectWavError(makeWav({ encoding: "s16", rate: 0, channels: [[1]] }), "norate.wav", /sample rate of 0/);
  const twelve = good.slice();
  new DataView(twelve.buffer).setUint16(34, 12, true);
  expectWavError(twelve, "twelve.wav", /12-bit/);
  expectWavError(good.subarray(0, 36), "nodata.wav", /no data chunk/);
  const noFmt = new Uint8Array([...ascii("RIFF"), 4, 0, 0, 0, ...ascii("WAVE")]);
  expectWavError(noFmt, "nofmt.wav", /no fmt chunk/);
});

Deno.test("wav: readWav reads a file from disk", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/tone.wav`;
    await Deno.writeFile(path, makeWav({ encoding: "s16", rate: 16000, channels: [[0, 16384, -16384]] }));
    const a = await readWav(path);
    assertSamples(a.samples[0], [0, 0.5, -0.5], "readWav");
    await Deno.writeFile(`${dir}/bad.wav`, new Uint8Array([1, 2, 3]));
    const e = await assertRejects(() => readWav(`${dir}/bad.wav`), WavFormatError);
    assert(/bad\.wav is not a WAV file/.test(e.message), e.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------- resampling

/** amp * sin(2 pi f n / rate) for n < length, in float32. */
function sine(freq: number, rate: number, length: number, amp = 0.5, phase = 0): Float32Array {
  const out = new Float32Array(length);
  for (let n = 0; n < length; n++) out[n] = amp * Math.sin((2 * Math.PI * freq * n) / rate + phase);
  return out;
}

/** Largest |y[n] - amp sin(2 pi f n / 16000 + phase)| over the interior (edges skipped). */
function sineError(y: Float32Array, freq: number, rate: number, amp: number, edge: number, phase = 0): number {
  let worst = 0;
  for (let n = edge; n < y.length - edge; n++) {
    worst = Math.max(worst, Math.abs(y[n] - amp * Math.sin((2 * Math.PI * freq * n) / rate + phase)));
  }
  return worst;
}

function rms(y: Float32Array, edge: number): number {
  let s = 0;
  for (let n = edge; n < y.length - edge; n++) s += y[n] * y[n];
  return Math.sqrt(s / (y.length - 2 * edge));
}

Deno.test("resample: 16 kHz passes through exactly; downmix is the channel mean", () => {
  const x = sine(440, 16000, 1000);
  const y = resampleAudio(x, 16000, 16000);
  assertEquals(y, x);
  assert(y !== x, "a copy, not the input array");
  const mono = downmixToMono([new Float32Array([1, 0.5, -1]), new Float32Array([0, 0.25, 1])]);
  assertEquals([...mono], [0.5, 0.375, 0]);
  assertEquals(downmixToMono([x]), x);
  throwsMatching(() => resampleAudio(x, 0, 16000), /not a positive integer/);
});

Deno.test("resample: passband sines keep gain 1 and phase (44.1k, 48k, 22.05k, 8k, odd rate -> 16k)", () => {
  const cases: [number, number[]][] = [
    [44100, [100, 1000, 4000, 7000]],
    [48000, [440, 6500, 7100]],
    [22050, [300, 5000]],
    [8000, [200, 1000, 3000, 3500]],
    [22051, [1000, 6000]], // 16000 / gcd = 16000 phases: the interpolated-kernel path
  ];
  for (const [rate, freqs] of cases) {
    for (const f of freqs) {
      const x = sine(f, rate, Math.round(rate * 0.5), 0.5, 0.3);
      const y = resampleAudio(x, rate, 16000);
      assertEquals(y.length, Math.ceil((x.length * 16000) / rate));
      const err = sineError(y, f, 16000, 0.5, 600, 0.3);
      assert(err < 5e-5, `${rate} Hz -> 16 kHz, ${f} Hz tone: max error ${err}`);
    }
  }
});

Deno.test("resample: tones above the new Nyquist frequency are attenuated by more than 100 dB", () => {
  for (const [rate, f] of [[44100, 8000], [44100, 9000], [44100, 15000], [44100, 21000], [48000, 8300]]) {
    const x = sine(f, rate, Math.round(rate * 0.5), 1);
    const y = resampleAudio(x, rate, 16000);
    const gainDb = 20 * Math.log10(rms(y, 600) / Math.SQRT1_2);
    assert(gainDb < -100, `${rate} Hz, ${f} Hz tone: gain ${gainDb.toFixed(1)} dB`);
  }
  // Around the cut-off (0.95 * 8 kHz = 7.6 kHz) the gain is about -6 dB.
  const y = resampleAudio(sine(7600, 44100, 22050, 1), 44100, 16000);
  const cutDb = 20 * Math.log10(rms(y, 600) / Math.SQRT1_2);
  assert(cutDb > -7.5 && cutDb < -4.5, `gain at 7.6 kHz ${cutDb.toFixed(2)} dB`);
});

Deno.test("resample: a band-limited signal survives 16k -> 44.1k -> 16k and 16k -> 8k keeps its low band", () => {
  // Sum of tones below 6 kHz with fixed pseudo-random phases.
  const n = 16000;
  const x = new Float32Array(n);
  const tones = [[120, 0.2, 0.1], [950, 0.15, 1.3], [2300, 0.1, 2.1], [4100, 0.1, 0.7], [5900, 0.05, 2.9]];
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (const [f, a, p] of tones) s += a * Math.sin((2 * Math.PI * f * i) / 16000 + p);
    x[i] = s;
  }
  const up = resampleAudio(x, 16000, 44100);
  assertEquals(up.length, 44100);
  const back = resampleAudio(up, 44100, 16000);
  assertEquals(back.length, n);
  let worst = 0;
  for (let i = 600; i < n - 600; i++) worst = Math.max(worst, Math.abs(back[i] - x[i]));
  assert(worst < 1e-5, `round-trip max error ${worst}`);
  // Down to 8 kHz: the 120/950/2300 Hz tones stay, 4100/5900 Hz are removed.
  const low = resampleAudio(x, 16000, 8000);
  let lowWorst = 0;
  for (let i = 300; i < low.length - 300; i++) {
    let s = 0;
    for (const [f, a, p] of tones.slice(0, 3)) s += a * Math.sin((2 * Math.PI * f * i) / 8000 + p);
    lowWorst = Math.max(lowWorst, Math.abs(low[i] - s));
  }
  assert(lowWorst < 1e-4, `16k -> 8k max error ${lowWorst}`);
});

Deno.test("resample: loadAudio16k decodes, downmixes and resamples a stereo 44.1 kHz file", async () => {
  const rate = 44100, len = 44100;
  const left: number[] = [], right: number[] = [];
  for (let i = 0; i < len; i++) {
    left.push(Math.round(16000 * Math.sin((2 * Math.PI * 500 * i) / rate)));
    right.push(Math.round(8000 * Math.sin((2 * Math.PI * 500 * i) / rate)));
  }
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/stereo.wav`;
    await Deno.writeFile(path, makeWav({ encoding: "s16", rate, channels: [left, right] }));
    const y = await loadAudio16k(path);
    assertEquals(y.length, 16000);
    const amp = (16000 + 8000) / 2 / 32768;
    const err = sineError(y, 500, 16000, amp, 600);
    assert(err < 1e-4, `loadAudio16k max error ${err}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

interface RefClip {
  name: string;
  kind: string;
  samples: number;
  sampleSum: number;
}

sharedTest("wav: LibriVox clips decode as 16 kHz mono int16 / 32768", "data/audio/librivox", async (dir) => {
  const ref = JSON.parse(await Deno.readTextFile(new URL("./reference/whisper_logmel_ref.json", import.meta.url)));
  const clips = (ref.clips as RefClip[]).filter((c) => c.kind === "librivox");
  assert(clips.length >= 5);
  for (const clip of clips) {
    const a = await readWav(`${dir}/${clip.name}`);
    assertEquals(a.sampleRate, 16000);
    assertEquals(a.channels, 1);
    assertEquals(a.samples[0].length, clip.samples, clip.name);
    let sum = 0;
    for (const v of a.samples[0]) sum += v;
    // Python's wave module + numpy wrote the reference sum of the same samples.
    assert(Math.abs(sum - clip.sampleSum) < 1e-9 * clip.samples, `${clip.name}: ${sum} vs ${clip.sampleSum}`);
    assertEquals(await loadAudio16k(`${dir}/${clip.name}`), a.samples[0]);
  }
});
