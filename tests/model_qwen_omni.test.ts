/**
 * Qwen2.5-Omni thinker adapter on tiny synthetic checkpoints in the real layouts: the audio tower (chunking, conv
 * front end, block-diagonal attention, pooling) and the vision tower with separate q/k/v against float64 references
 * with plain loops, the audio token count over many clip lengths, full multimodal forwards on both backends and both
 * weight prefixes, video with its soundtrack interleaved, real audio and images from ../shared through prepare(),
 * and every bad-input case.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import {
  AudioClipError,
  countModalities,
  ImageDecodeError,
  loadAudio16k,
  omniAudioTokenCount,
  openWith,
  readImage,
  registerAdapter,
  rgbImageFromPixels,
  Rng,
  type Sample,
  type SampleMedia,
  type Tensor,
  WavFormatError,
} from "@masquant/core";
import { preprocessQwenImage, QwenMediaError, type QwenPreparedInput } from "@masquant/plugin-qwen-vl";
import { qwen2_5OmniAdapter, type Qwen2_5OmniModel, videoWithAudio } from "@masquant/plugin-qwen-omni";
import { allBackends } from "./backends.ts";
import { DEFAULT_OUTLIERS, tempDir } from "./fixtures/synthetic.ts";
import { refOmniAudioTower, refQwenVisionTower, writeQwen2_5OmniFixture } from "./fixtures/synthetic_qwen.ts";
import { relFro } from "./ref.ts";
import { sharedTest } from "./shared_data.ts";

registerAdapter(qwen2_5OmniAdapter);

const AUDIO = 151646, AUDIO_BOS = 151647, AUDIO_EOS = 151648, VISION_BOS = 151652, VISION_EOS = 151653;
const IMAGE = 151655, VIDEO = 151656;
const rng = new Rng(9);

function randomImage(w: number, h: number) {
  const px = new Uint8Array(w * h * 3);
  for (let i = 0; i < px.length; i++) px[i] = rng.int(256);
  return rgbImageFromPixels(w, h, px);
}

/** A synthetic 16 kHz clip: two tones and a little noise. */
function tone(samples: number): Float32Array {
  const out = new Float32Array(samples);
  for (let i = 0; i < samples; i++) {
    out[i] = 0.3 * Math.sin((2 * Math.PI * 220 * i) / 16000) + 0.2 * Math.sin((2 * Math.PI * 1830 * i) / 16000) +
      0.02 * (rng.next() - 0.5);
  }
  return out;
}

function chat(media: SampleMedia[], text = "What do you see and hear?"): Extract<Sample, { kind: "chat" }> {
  const content: ({ type: "image" | "video" | "audio" } | { type: "text"; text: string })[] = media.map((m) => ({
    type: m.kind,
  }));
  content.push({ type: "text", text });
  return {
    kind: "chat",
    messages: [{ role: "user", content }],
    media,
    addGenerationPrompt: true,
    source: "omni.jsonl:3",
  };
}

const image = (w: number, h: number): SampleMedia => ({ kind: "image", image: randomImage(w, h), source: "photo.jpg" });
const audio = (samples: number, source = "speech.wav"): SampleMedia => ({
  kind: "audio",
  samples16k: tone(samples),
  source,
});

async function forward(model: Qwen2_5OmniModel, inp: QwenPreparedInput): Promise<Tensor> {
  let x = inp.hidden.retain();
  for (let i = 0; i < model.numLayers; i++) {
    const w = await model.loadLayer(i);
    const y = model.forwardLayer(w, x, inp.ctx);
    x.dispose();
    x = y;
    for (const t of [w.inputNorm, w.postNorm, ...Object.values(w.linears).flatMap((l) => [l.w, l.b])]) t?.dispose();
  }
  return x;
}

const fx = await tempDir("masquant-qwenomni-");
await writeQwen2_5OmniFixture(`${fx.dir}/thinker`, { seed: 31 });
await writeQwen2_5OmniFixture(`${fx.dir}/bare`, { seed: 31, prefix: "none", maxShardBytes: 20_000_000 });
const backends = await allBackends();

for (const be of backends) {
  Deno.test(`audio tower (chunks, conv, block-diagonal attention, pooling) matches float64 [${be.name}]`, async () => {
    const model = await openWith(`${fx.dir}/thinker`, be) as Qwen2_5OmniModel;
    try {
      // 437 frames -> chunks of 200, 200, 37 -> 100 + 100 + 19 = 219 frames after conv2 -> 109 tokens (last dropped);
      // 1100 frames -> 5 x 200 + 100 -> 550 frames, which the tower runs as two groups of whole chunks.
      for (const samples of [436 * 160 + 1, 1100 * 160]) {
        const mel = model.audioMel(tone(samples), "tone");
        const got = await (await model.audioTower(mel)).read();
        const want = await refOmniAudioTower(model.checkpoint, "thinker.audio_tower", model.omni.audio, mel);
        assertEquals(got.length, omniAudioTokenCount(mel.frames) * 64);
        const e = relFro(got, want);
        assert(e < (be.name === "cpu" ? 1e-5 : 1e-4), `${mel.frames} frames: audio features relFro ${e}`);
      }
    } finally {
      model.close();
    }
  });

  Deno.test(`vision tower with separate q/k/v matches float64 [${be.name}]`, async () => {
    const model = await openWith(`${fx.dir}/thinker`, be) as Qwen2_5OmniModel;
    try {
      const img = randomImage(168, 140); // multiples of 28: grid [1, 10, 12], merged 5 x 6, partial windows
      const px = preprocessQwenImage(img, model.imageProcessor);
      const got = await (await model.visionTower(px)).read();
      const mean = model.imageProcessor.imageMean, std = model.imageProcessor.imageStd;
      const pixels = new Float64Array(3 * 140 * 168);
      for (let c = 0; c < 3; c++) {
        for (let i = 0; i < 140 * 168; i++) pixels[c * 140 * 168 + i] = (img.data[i * 3 + c] / 255 - mean[c]) / std[c];
      }
      const want = await refQwenVisionTower(model.checkpoint, "thinker.visual", model.omni.vision, pixels, 140, 168);
      const e = relFro(got, want);
      assert(e < (be.name === "cpu" ? 1e-5 : 1e-4), `vision features relFro ${e}`);
    } finally {
      model.close();
    }
  });
}

Deno.test("audio token count: tower rows == omniAudioTokenCount == placeholders, over many clip lengths", async () => {
  const model = await openWith(`${fx.dir}/thinker`, backends[0]) as Qwen2_5OmniModel;
  try {
    // Lengths around every rounding step: 3 frames (the shortest with a token), odd/even frame counts, chunk edges
    // at 200 and 400 frames, 1 s, 7.7 s and 30 s.
    const lengths = [
      321,
      480,
      481,
      640,
      800,
      961,
      1600,
      31840,
      31841,
      32000,
      32001,
      63999,
      64001,
      16000,
      123456,
      480000,
    ];
    for (const n of lengths) {
      const mel = model.audioMel(tone(n), `clip of ${n} samples`);
      assertEquals(mel.frames, Math.ceil(n / 160));
      const rows = (await model.audioTower(mel)).shape[0];
      const a = Math.floor((mel.frames - 1) / 2) + 1;
      assertEquals(rows, Math.floor((a - 2) / 2) + 1, `${n} samples`);
      assertEquals(rows, omniAudioTokenCount(mel.frames));
    }
    for (const n of [321, 16000, 40161]) {
      const inp = await model.prepare(chat([audio(n)]));
      const ids = Array.from(inp.tokenIds);
      const count = ids.filter((t) => t === AUDIO).length;
      assertEquals(count, omniAudioTokenCount(Math.ceil(n / 160)));
      assertEquals(countModalities(inp.modality).audio, count);
      assertEquals(ids[ids.indexOf(AUDIO) - 1], AUDIO_BOS);
      assertEquals(ids[ids.indexOf(AUDIO) + count], AUDIO_EOS);
      // Audio only: 1-D positions 0..T-1 on every row.
      const t = ids.length;
      assertEquals(Array.from(inp.positions.slice(t, 2 * t)), Array.from({ length: t }, (_, i) => i));
      inp.dispose();
    }
  } finally {
    model.close();
  }
});

Deno.test("Qwen2.5-Omni forward: both weight prefixes agree; CPU and WebGPU agree", async () => {
  const sample = chat([image(112, 84), audio(16000 * 2 + 321)]);
  const runs: { hidden: Float32Array; logits: Float32Array }[] = [];
  for (const be of backends) {
    for (const name of ["thinker", "bare"]) {
      const model = await openWith(`${fx.dir}/${name}`, be) as Qwen2_5OmniModel;
      try {
        assertEquals(model.prefix, name === "thinker" ? "thinker." : "");
        const inp = await model.prepare(sample);
        const c = countModalities(inp.modality);
        assertEquals(c.vision, 12);
        assertEquals(Array.from(inp.tokenIds).filter((t) => t === IMAGE).length, 12);
        assertEquals(c.audio, omniAudioTokenCount(Math.ceil((16000 * 2 + 321) / 160)));
        const x = await forward(model, inp);
        const normed = await model.finalNorm(x);
        const last = model.backend.slice(x, 0, x.shape[0] - 3, x.shape[0]);
        const logits = await model.head(last);
        runs.push({ hidden: await normed.read() as Float32Array, logits: await logits.read() as Float32Array });
        for (const t of [x, normed, last, logits]) t.dispose();
        inp.dispose();
      } finally {
        model.close();
      }
    }
  }
  for (let i = 1; i < runs.length; i++) {
    const eh = relFro(runs[i].hidden, runs[0].hidden), el = relFro(runs[i].logits, runs[0].logits);
    assert(eh < 1e-4 && el < 1e-4, `run ${i} differs from run 0: hidden relFro ${eh}, logits relFro ${el}`);
  }
});

Deno.test("fixture outliers: text, vision and audio rows peak on their own channels", async () => {
  const model = await openWith(`${fx.dir}/thinker`, backends[0]) as Qwen2_5OmniModel;
  try {
    const inp = await model.prepare(chat([image(112, 84), audio(16000)]));
    const h = await inp.hidden.read();
    const top2 = (m: number) => {
      const mx = new Float64Array(64);
      for (let r = 0; r < inp.modality.length; r++) {
        if (inp.modality[r] !== m) continue;
        for (let c = 0; c < 64; c++) mx[c] = Math.max(mx[c], Math.abs(h[r * 64 + c]));
      }
      return Array.from(mx.keys()).sort((a, b) => mx[b] - mx[a]).slice(0, 2).sort((a, b) => a - b);
    };
    assertEquals(top2(0), DEFAULT_OUTLIERS.textOutlierChannels);
    assertEquals(top2(1), DEFAULT_OUTLIERS.visionOutlierChannels);
    assertEquals(top2(2), DEFAULT_OUTLIERS.audioOutlierChannels);
    inp.dispose();
  } finally {
    model.close();
  }
});

Deno.test("video with its soundtrack: interleaved placeholders, modality and TMRoPE ids", async () => {
  const model = await openWith(`${fx.dir}/thinker`, backends[0]) as Qwen2_5OmniModel;
  try {
    // 6 frames at 2 fps -> grid_t 3 (1 s per group, temporal ids 0, 25, 50); 3 s of sound -> 75 audio tokens.
    const frames = Array.from({ length: 6 }, () => randomImage(84, 56));
    const sample = chat([videoWithAudio(frames, 2, tone(48000), "movie.mp4")]);
    const inp = await model.prepare(sample);
    const ids = Array.from(inp.tokenIds);
    const vb = ids.indexOf(VISION_BOS);
    assertEquals(ids[vb + 1], AUDIO_BOS);
    const video = ids.filter((t) => t === VIDEO).length, sound = ids.filter((t) => t === AUDIO).length;
    assertEquals(sound, 75);
    const perGroup = video / 3;
    // Runs: video group 0 and 1 (t < 50), audio 0..49, video group 2, audio 50..74, then the two closing tokens.
    const body = ids.slice(vb + 2, vb + 2 + video + sound);
    const runs: [number, number][] = [];
    for (const id of body) {
      if (runs.length && runs[runs.length - 1][0] === id) runs[runs.length - 1][1]++;
      else runs.push([id, 1]);
    }
    assertEquals(runs, [[VIDEO, 2 * perGroup], [AUDIO, 50], [VIDEO, perGroup], [AUDIO, 25]]);
    assertEquals(ids.slice(vb + 2 + video + sound, vb + 4 + video + sound), [AUDIO_EOS, VISION_EOS]);
    const t = ids.length, p = inp.positions;
    assertEquals(p[vb], p[vb + 1], "both opening tokens share an id");
    const s = p[vb] + 1;
    const firstAudio = vb + 2 + 2 * perGroup;
    assertEquals(p[firstAudio], s);
    assertEquals(p[vb + 2 + perGroup], s + 25, "video group 1 has temporal id 25");
    const closing = vb + 2 + video + sound;
    assertEquals([p[closing], p[closing + 1], p[2 * t + closing]], [s + 75, s + 75, s + 75]);
    for (let i = 0; i < t; i++) {
      const want = ids[i] === VIDEO ? 1 : ids[i] === AUDIO ? 2 : 0;
      assertEquals(inp.modality[i], want);
    }
    inp.dispose();
  } finally {
    model.close();
  }
});

Deno.test("bad inputs give one clear error naming the sample or file", async () => {
  const model = await openWith(`${fx.dir}/thinker`, backends[0]) as Qwen2_5OmniModel;
  try {
    // More audio clips than <|AUDIO|> placeholders, and fewer.
    const extra = chat([audio(4000)]);
    extra.media.push(audio(4000, "second.wav"));
    let e = await assertRejects(() => model.prepare(extra), QwenMediaError);
    assert(e.message.includes("omni.jsonl:3") && e.message.includes("1 <|AUDIO|> placeholder(s) but 2"), e.message);
    const fewer = chat([image(56, 56), audio(4000)]);
    fewer.media.pop();
    e = await assertRejects(() => model.prepare(fewer), QwenMediaError);
    assert(e.message.includes("omni.jsonl:3") && e.message.includes("<|AUDIO|>"), e.message);
    // A clip longer than the feature extractor takes (300 s).
    const long = chat([{ kind: "audio", samples16k: new Float32Array(4_800_001), source: "lecture.wav" }]);
    e = await assertRejects(() => model.prepare(long), AudioClipError);
    assert(e.message.startsWith("lecture.wav") && e.message.includes("300 s"), e.message);
    // A clip too short for one audio token, and samples that are not audio.
    e = await assertRejects(() => model.prepare(chat([audio(200, "click.wav")])), QwenMediaError);
    assert(e.message.startsWith("click.wav") && e.message.includes("321 samples"), e.message);
    const nan = tone(8000);
    nan[17] = NaN;
    e = await assertRejects(
      () => model.prepare(chat([{ kind: "audio", samples16k: nan, source: "noise.wav" }])),
      QwenMediaError,
    );
    assert(e.message.startsWith("noise.wav") && e.message.includes("not audio"), e.message);
    // Soundtracks on some videos but not others.
    const frames = [randomImage(56, 56), randomImage(56, 56)];
    const mixed = chat([
      videoWithAudio(frames, 2, tone(16000), "a.mp4"),
      { kind: "video", frames, fps: 2, source: "b.mp4" },
    ]);
    e = await assertRejects(() => model.prepare(mixed), QwenMediaError);
    assert(e.message.includes("omni.jsonl:3") && e.message.includes("use_audio_in_video"), e.message);
  } finally {
    model.close();
  }
  // Files that are not audio or do not decode as images fail when the sample is built, naming the file.
  const notAudio = `${fx.dir}/speech.wav`;
  await Deno.writeFile(notAudio, new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3, 4]));
  const wavErr = await assertRejects(() => loadAudio16k(notAudio), WavFormatError);
  assert(wavErr.message.includes(notAudio) && wavErr.message.includes("not a WAV file"), wavErr.message);
  const notImage = `${fx.dir}/photo.png`;
  await Deno.writeFile(notImage, new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0]));
  const imgErr = await assertRejects(() => readImage(notImage), ImageDecodeError);
  assert(imgErr.message.includes(notImage), imgErr.message);
});

sharedTest(
  "real speech and a real photo from ../shared go through prepare()",
  "data/audio/librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
  async (path) => {
    const model = await openWith(`${fx.dir}/thinker`, backends[0]) as Qwen2_5OmniModel;
    try {
      const speech = await loadAudio16k(path);
      const photo = await readImage(path.replace(/audio\/librivox\/.*$/, "images/skimage/coffee.png"));
      const inp = await model.prepare(
        chat([{ kind: "image", image: photo, source: "coffee.png" }, {
          kind: "audio",
          samples16k: speech,
          source: path,
        }]),
      );
      const c = countModalities(inp.modality);
      assertEquals(c.audio, omniAudioTokenCount(Math.ceil(speech.length / 160)));
      assert(c.vision > 0 && c.text > 10);
      assert((await inp.hidden.read()).every(Number.isFinite));
      inp.dispose();
    } finally {
      model.close();
    }
  },
);

Deno.test("cleanup", async () => {
  await fx.cleanup();
});
