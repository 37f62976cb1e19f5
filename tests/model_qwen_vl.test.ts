/**
 * Qwen2.5-VL adapter on tiny synthetic checkpoints in the real layouts: the vision tower (window order, 2-D rotary,
 * merger) against a float64 reference with plain loops, full multimodal forwards on both backends and both tensor
 * naming schemes / config schemas, tied embeddings, modality per token, the chat template, real images from
 * ../shared through prepare(), and every bad-input case.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import {
  attention,
  type Backend,
  countModalities,
  ImageDecodeError,
  openWith,
  readImage,
  registerAdapter,
  rgbImageFromPixels,
  Rng,
  type Sample,
  type SampleMedia,
  type Tensor,
} from "@masquant/core";
import {
  blockDiagonalAttention,
  preprocessQwenImage,
  qwen2_5VlAdapter,
  type Qwen2_5VLModel,
  qwenImageGrid,
  QwenMediaError,
  type QwenPreparedInput,
  segmentGroups,
  visionPatchPositions,
  visionWindowLayout,
} from "@masquant/plugin-qwen-vl";
import { allBackends } from "./backends.ts";
import { tempDir } from "./fixtures/synthetic.ts";
import { refQwenVisionTower, writeQwen2_5VlFixture } from "./fixtures/synthetic_qwen.ts";
import { relFro } from "./ref.ts";
import { sharedTest } from "./shared_data.ts";

registerAdapter(qwen2_5VlAdapter);

const IMAGE_PAD = 151655, VIDEO_PAD = 151656;
const rng = new Rng(5);
function randomImage(w: number, h: number) {
  const px = new Uint8Array(w * h * 3);
  for (let i = 0; i < px.length; i++) px[i] = rng.int(256);
  return rgbImageFromPixels(w, h, px);
}

type Part = { type: "image" } | { type: "video" } | { type: "text"; text: string };

function chat(media: SampleMedia[], text = "What is shown here?"): Extract<Sample, { kind: "chat" }> {
  const content: Part[] = media.map((m) => ({ type: m.kind as "image" | "video" }));
  content.push({ type: "text", text });
  return {
    kind: "chat",
    messages: [{ role: "user", content }],
    media,
    addGenerationPrompt: true,
    source: "sample.jsonl:1",
  };
}

const image = (w: number, h: number, source = "img.png"): SampleMedia => ({
  kind: "image",
  image: randomImage(w, h),
  source,
});
const video = (frames: number, w: number, h: number, fps = 2): SampleMedia => ({
  kind: "video",
  frames: Array.from({ length: frames }, () => randomImage(w, h)),
  fps,
  source: "clip.mp4",
});

async function forward(model: Awaited<ReturnType<typeof openWith>>, inp: QwenPreparedInput): Promise<Tensor> {
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

const fx = await tempDir("masquant-qwenvl-");
await writeQwen2_5VlFixture(`${fx.dir}/hub`, { seed: 21 });
await writeQwen2_5VlFixture(`${fx.dir}/new`, {
  seed: 21,
  naming: "v4.52",
  schema: "nested",
  maxShardBytes: 20_000_000,
  chatTemplateIn: "chat_template.jinja",
});
await writeQwen2_5VlFixture(`${fx.dir}/tied`, { seed: 22, tieEmbeddings: true, schema: "nested" });
const backends = await allBackends();

Deno.test("window order of merged tokens follows get_window_index", () => {
  // Grid [2, 6, 10] patches -> merged 3 x 5 per frame, windows of 2 x 2 merged tokens. Frame 0 row-major windows:
  // w0 rows 0-1 cols 0-1 -> 0,1,5,6; w1 cols 2-3 -> 2,3,7,8; w2 col 4 -> 4,9; w3 row 2 cols 0-1 -> 10,11;
  // w4 -> 12,13; w5 -> 14. Frame 1 repeats with indices + 15 and windows 6..11.
  const l = visionWindowLayout([2, 6, 10], 2, 2);
  const frame0 = [0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 12, 13, 14];
  assertEquals(Array.from(l.order), [...frame0, ...frame0.map((i) => i + 15)]);
  const win0 = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5];
  assertEquals(Array.from(l.window), [...win0, ...win0.map((w) => w + 6)]);
  assertEquals(Array.from(l.frame), [...new Array(15).fill(0), ...new Array(15).fill(1)]);
  // Patch rows come in 2 x 2 merge groups: for a 2 x 4 grid, rows (0,0) (0,1) (1,0) (1,1) (0,2) (0,3) (1,2) (1,3).
  const p = visionPatchPositions([1, 2, 4], 2);
  assertEquals(Array.from(p), [0, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0, 1, 2, 3, 2, 3]);
});

for (const be of backends) {
  Deno.test(`grouped block-diagonal attention equals one masked call [${be.name}]`, async () => {
    // Segments 0 (5 rows), 1 (3), 2 (9), 3 (2): with at most 8 rows per call the groups are [0,8) [8,17) [17,19).
    const segs = Int32Array.from([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3]);
    assertEquals(segmentGroups(segs, 8), [[0, 8], [8, 17], [17, 19]]);
    const t = segs.length, shape = { heads: 2, kvHeads: 2, headDim: 4 };
    const [q, k, v] = [0, 1, 2].map(() => be.tensor(rng.normalArray(t * 8), [t, 2, 4]));
    const grouped = await blockDiagonalAttention(be, q, k, v, shape, segs, 8).read();
    const seg = be.tensor(segs, [t], "i32");
    const whole = await attention(be, q, k, v, shape, { segments: seg }).read();
    assert(relFro(grouped, whole) < 1e-6, `relFro ${relFro(grouped, whole)}`);
  });

  Deno.test(`vision tower (window order, 2-D rotary, merger) matches a float64 reference [${be.name}]`, async () => {
    const model = await openWith(`${fx.dir}/hub`, be) as Qwen2_5VLModel;
    try {
      // 392 x 280 is a multiple of 28, so the processor does not resize: 20 x 28 = 560 patches, 10 x 14 merged
      // tokens, windows of 4 x 4 merged tokens with partial windows on the right and bottom; 560 rows also make the
      // windowed blocks split their attention into two calls.
      const W = 392, H = 280;
      const img = randomImage(W, H);
      const px = preprocessQwenImage(img, model.imageProcessor);
      assertEquals(px.gridThw, [1, 20, 28]);
      const got = await (await model.visionTower(px)).read();
      const mean = model.imageProcessor.imageMean, std = model.imageProcessor.imageStd;
      const pixels = new Float64Array(3 * H * W);
      for (let c = 0; c < 3; c++) {
        for (let i = 0; i < H * W; i++) pixels[c * H * W + i] = (img.data[i * 3 + c] / 255 - mean[c]) / std[c];
      }
      const want = await refQwenVisionTower(model.checkpoint, "visual", model.qwen.vision, pixels, H, W);
      assertEquals(got.length, 140 * 64);
      const e = relFro(got, want);
      assert(e < (be.name === "cpu" ? 1e-5 : 1e-4), `vision features relFro ${e}`);
    } finally {
      model.close();
    }
  });
}

Deno.test("Qwen2.5-VL forward: both naming schemes and config schemas agree; CPU and WebGPU agree", async () => {
  const sample = chat([image(112, 84), video(4, 84, 56)]);
  const runs: { hidden: Float32Array; logits: Float32Array }[] = [];
  for (const be of backends) {
    for (const name of ["hub", "new"]) {
      const model = await openWith(`${fx.dir}/${name}`, be) as Qwen2_5VLModel;
      try {
        const inp = await model.prepare(sample);
        // 112 x 84 -> grid [1, 6, 8] -> 12 tokens; 4 frames of 84 x 56 -> grid [2, 4, 6] -> 12 tokens.
        const c = countModalities(inp.modality);
        assertEquals(c.vision, 24);
        for (let i = 0; i < inp.tokenIds.length; i++) {
          const id = inp.tokenIds[i];
          assertEquals(inp.modality[i] === 1, id === IMAGE_PAD || id === VIDEO_PAD);
        }
        const x = await forward(model, inp);
        const normed = await model.finalNorm(x);
        const last = model.backend.slice(x, 0, x.shape[0] - 3, x.shape[0]);
        const logits = await model.head(last);
        assertEquals(logits.shape, [3, 151936]);
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

Deno.test("prepare(): placeholders per merged token, M-RoPE positions, chat template", async () => {
  const model = await openWith(`${fx.dir}/hub`, backends[0]) as Qwen2_5VLModel;
  try {
    const inp = await model.prepare(chat([image(112, 84)]));
    const ids = Array.from(inp.tokenIds);
    const first = ids.indexOf(IMAGE_PAD);
    assertEquals(ids.filter((t) => t === IMAGE_PAD).length, 12);
    assertEquals(ids[first - 1], 151652, "<|vision_start|> precedes the block");
    assertEquals(ids[first + 12], 151653, "<|vision_end|> follows it");
    // Merged grid 3 x 4 from start s = first: h = s + row, w = s + col, t = s; the next token is s + 4.
    const t = ids.length, p = inp.positions;
    for (let j = 0; j < 12; j++) {
      assertEquals([p[first + j], p[t + first + j], p[2 * t + first + j]], [
        first,
        first + Math.floor(j / 4),
        first + (j % 4),
      ]);
    }
    assertEquals(p[first + 12], first + 4);
    assertEquals(inp.ropeDelta, first + 4 + (t - first - 12) - t);
    const text = model.tokenizer!.decode(ids.filter((x) => x !== IMAGE_PAD));
    assert(
      text.startsWith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n") &&
        text.endsWith("What is shown here?<|im_end|>\n<|im_start|>assistant\n"),
      text,
    );
    inp.dispose();
    // Text-only samples get 0..T-1 on all rows.
    const plain = await model.prepare(chat([], "Hello"));
    const n = plain.tokenIds.length;
    assertEquals(Array.from(plain.positions.slice(2 * n)), Array.from({ length: n }, (_, i) => i));
    assertEquals(countModalities(plain.modality).vision, 0);
    plain.dispose();
  } finally {
    model.close();
  }
});

Deno.test("tied embeddings: no lm_head tensor, the head reuses the embedding", async () => {
  const model = await openWith(`${fx.dir}/tied`, backends[0]) as Qwen2_5VLModel;
  try {
    assertEquals(model.naming.lmHead, undefined);
    assert(!model.checkpoint.has("lm_head.weight"));
    const inp = await model.prepareTokens([9707, 11, 1879]);
    const x = await forward(model, inp as QwenPreparedInput);
    const normed = await (await model.finalNorm(x)).read();
    const logits = await (await model.head(x)).read();
    const emb = await model.checkpoint.readFloat32("model.embed_tokens.weight");
    // Logit of token 42 at the last position = <normed row, embedding row 42>.
    let s = 0;
    for (let j = 0; j < 64; j++) s += normed[2 * 64 + j] * emb[42 * 64 + j];
    assert(
      Math.abs(logits[2 * 151936 + 42] - s) < 1e-4 * Math.max(1, Math.abs(s)),
      `${logits[2 * 151936 + 42]} vs ${s}`,
    );
    inp.dispose();
  } finally {
    model.close();
  }
});

Deno.test("bad inputs give one clear error naming the sample or file", async () => {
  const model = await openWith(`${fx.dir}/hub`, backends[0]);
  try {
    // More media than placeholders, fewer media than placeholders, and the wrong order.
    const extra = chat([image(56, 56)]);
    extra.media.push({ ...extra.media[0], source: "extra.png" });
    let e = await assertRejects(() => model.prepare(extra), QwenMediaError);
    assert(e.message.includes("sample.jsonl:1") && e.message.includes("1 <|image_pad|> placeholder"), e.message);
    const missing = chat([image(56, 56), image(56, 56)]);
    missing.media.pop();
    e = await assertRejects(() => model.prepare(missing), QwenMediaError);
    assert(e.message.includes("2 <|image_pad|> placeholder(s) but 1 image(s)"), e.message);
    const swapped = chat([image(56, 56), video(2, 56, 56)]);
    swapped.media.reverse();
    e = await assertRejects(() => model.prepare(swapped), QwenMediaError);
    assert(e.message.includes("order"), e.message);
    // Audio is not a Qwen2.5-VL input.
    const audio = chat([]);
    audio.media.push({ kind: "audio", samples16k: new Float32Array(1600), source: "speech.wav" });
    e = await assertRejects(() => model.prepare(audio), QwenMediaError);
    assert(e.message.startsWith("speech.wav:"), e.message);
    // An image the processor cannot take (aspect ratio above 200) names the image.
    e = await assertRejects(() => model.prepare(chat([image(600, 2, "strip.png")])), QwenMediaError);
    assert(e.message.startsWith("strip.png:") && e.message.includes("aspect ratio"), e.message);
    // An image that is not a decoded RGB image.
    const broken = chat([{ kind: "image", image: { width: 4, height: 4, data: new Uint8Array(5) }, source: "b.png" }]);
    e = await assertRejects(() => model.prepare(broken), QwenMediaError);
    assert(e.message.startsWith("b.png:"), e.message);
  } finally {
    model.close();
  }
  // A file that does not decode as an image fails when the sample is built, naming the file.
  const bad = `${fx.dir}/not_an_image.jpg`;
  await Deno.writeTextFile(bad, "this is text, not a JPEG");
  const err = await assertRejects(() => readImage(bad), ImageDecodeError);
  assert(err.message.includes(bad), err.message);
});

sharedTest("real images from ../shared go through prepare()", "data/images/skimage/chelsea.png", async (path) => {
  const model = await openWith(`${fx.dir}/hub`, backends[0]) as Qwen2_5VLModel;
  try {
    const img = await readImage(path);
    const rocket = await readImage(path.replace("chelsea.png", "rocket.jpg"));
    const sample = chat([
      { kind: "image", image: img, source: path },
      { kind: "image", image: rocket, source: "rocket.jpg" },
    ]);
    const inp = await model.prepare(sample);
    const tokens = [img, rocket].map((m) => {
      const [t, h, w] = qwenImageGrid(m.height, m.width, model.imageProcessor);
      return (t * h * w) / 4;
    });
    assertEquals(countModalities(inp.modality).vision, tokens[0] + tokens[1]);
    const h = await inp.hidden.read();
    assert(h.every(Number.isFinite), "hidden states are finite");
    inp.dispose();
  } finally {
    model.close();
  }
});

Deno.test("cleanup", async () => {
  for (const be of backends) if (be.name !== "cpu") await (be as Backend).sync();
  await fx.cleanup();
});
