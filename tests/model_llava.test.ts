/**
 * LLaVA-1.5 adapter on tiny synthetic checkpoints in the real layouts: the CLIP tower against a float64
 * reference written here with plain loops, the full multimodal forward on both backends, both tensor
 * naming schemes, modality per token, and prompts whose placeholders do not match the images.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { countModalities, openWith, registerAdapter, rgbImageFromPixels, Rng, type Sample } from "@masquant/core";
import {
  imageToPatches,
  llavaAdapter,
  type LlavaModel,
  preprocessClipImage,
  PromptMediaError,
} from "@masquant/plugin-llava";
import { allBackends } from "./backends.ts";
import { tempDir, writeLlavaFixture } from "./fixtures/synthetic.ts";
import { relFro } from "./ref.ts";

registerAdapter(llavaAdapter);

const rng = new Rng(3);
function randomImage(w: number, h: number) {
  const px = new Uint8Array(w * h * 3);
  for (let i = 0; i < px.length; i++) px[i] = rng.int(256);
  return rgbImageFromPixels(w, h, px);
}

function chat(images: number, text = "What is shown here?"): Sample {
  const content = [...Array.from({ length: images }, () => ({ type: "image" as const })), {
    type: "text" as const,
    text,
  }];
  return {
    kind: "chat",
    messages: [{ role: "user", content }],
    media: Array.from(
      { length: images },
      (_, i) => ({ kind: "image" as const, image: randomImage(400 + 7 * i, 300), source: `img${i}` }),
    ),
    addGenerationPrompt: true,
    source: "test sample",
  };
}

// ---- float64 reference of the CLIP tower -----------------------------------------------------------

type Mat = Float64Array<ArrayBuffer>;
function mm(a: Mat, b: Mat, n: number, k: number, m: number, bias?: Mat): Mat {
  // a [n,k] · bᵀ with b [m,k]
  const o = new Float64Array(n * m);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      let s = bias ? bias[j] : 0;
      for (let t = 0; t < k; t++) s += a[i * k + t] * b[j * k + t];
      o[i * m + j] = s;
    }
  }
  return o;
}
function ln(x: Mat, n: number, d: number, w: Mat, b: Mat, eps: number): Mat {
  const o = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    let mu = 0;
    for (let j = 0; j < d; j++) mu += x[i * d + j];
    mu /= d;
    let v = 0;
    for (let j = 0; j < d; j++) v += (x[i * d + j] - mu) ** 2;
    const inv = 1 / Math.sqrt(v / d + eps);
    for (let j = 0; j < d; j++) o[i * d + j] = (x[i * d + j] - mu) * inv * w[j] + b[j];
  }
  return o;
}

async function refTower(model: LlavaModel, img: ReturnType<typeof randomImage>): Promise<Float64Array> {
  const ck = model.checkpoint;
  const get = async (n: string) => Float64Array.from(await ck.readFloat32(n));
  const v = model.llava.vision;
  const d = v.hiddenSize;
  const p = v.patchSize;
  const vp = `${model.visionPrefix}.vision_model`;
  const px = preprocessClipImage(img, model.processor);
  const g = v.imageSize / p;
  const conv = await get(`${vp}.embeddings.patch_embedding.weight`);
  const n = g * g + 1;
  let x: Mat = new Float64Array(n * d);
  const cls = await get(`${vp}.embeddings.class_embedding`);
  const pos = await get(`${vp}.embeddings.position_embedding.weight`);
  for (let j = 0; j < d; j++) x[j] = cls[j] + pos[j];
  for (let py = 0; py < g; py++) {
    for (let pxi = 0; pxi < g; pxi++) {
      const tok = 1 + py * g + pxi;
      for (let o = 0; o < d; o++) {
        let s = 0;
        for (let c = 0; c < 3; c++) {
          for (let kh = 0; kh < p; kh++) {
            for (let kw = 0; kw < p; kw++) {
              s += conv[((o * 3 + c) * p + kh) * p + kw] *
                px.data[(c * v.imageSize + py * p + kh) * v.imageSize + pxi * p + kw];
            }
          }
        }
        x[tok * d + o] = s + pos[tok * d + o];
      }
    }
  }
  x = ln(x, n, d, await get(`${vp}.pre_layrnorm.weight`), await get(`${vp}.pre_layrnorm.bias`), v.layerNormEps);
  const heads = v.numHeads;
  const hd = d / heads;
  for (let l = 0; l < v.numLayers - 1; l++) {
    const lp = `${vp}.encoder.layers.${l}`;
    const h = ln(x, n, d, await get(`${lp}.layer_norm1.weight`), await get(`${lp}.layer_norm1.bias`), v.layerNormEps);
    const proj = async (nm: string) =>
      mm(h, await get(`${lp}.self_attn.${nm}.weight`), n, d, d, await get(`${lp}.self_attn.${nm}.bias`));
    const q = await proj("q_proj");
    const k = await proj("k_proj");
    const vv = await proj("v_proj");
    const att = new Float64Array(n * d);
    for (let hh = 0; hh < heads; hh++) {
      for (let i = 0; i < n; i++) {
        const sc = new Float64Array(n);
        let mx = -Infinity;
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let t = 0; t < hd; t++) s += q[i * d + hh * hd + t] * k[j * d + hh * hd + t];
          sc[j] = s / Math.sqrt(hd);
          mx = Math.max(mx, sc[j]);
        }
        let z = 0;
        for (let j = 0; j < n; j++) z += sc[j] = Math.exp(sc[j] - mx);
        for (let t = 0; t < hd; t++) {
          let s = 0;
          for (let j = 0; j < n; j++) s += (sc[j] / z) * vv[j * d + hh * hd + t];
          att[i * d + hh * hd + t] = s;
        }
      }
    }
    const o = mm(
      att,
      await get(`${lp}.self_attn.out_proj.weight`),
      n,
      d,
      d,
      await get(`${lp}.self_attn.out_proj.bias`),
    );
    for (let i = 0; i < n * d; i++) x[i] += o[i];
    const h2 = ln(x, n, d, await get(`${lp}.layer_norm2.weight`), await get(`${lp}.layer_norm2.bias`), v.layerNormEps);
    const f1 = mm(h2, await get(`${lp}.mlp.fc1.weight`), n, d, v.intermediateSize, await get(`${lp}.mlp.fc1.bias`));
    for (let i = 0; i < f1.length; i++) f1[i] = f1[i] / (1 + Math.exp(-1.702 * f1[i]));
    const f2 = mm(f1, await get(`${lp}.mlp.fc2.weight`), n, v.intermediateSize, d, await get(`${lp}.mlp.fc2.bias`));
    for (let i = 0; i < n * d; i++) x[i] += f2[i];
  }
  // Drop CLS, project with GELU (exact erf, by integration for independence).
  const feats = x.slice(d);
  const th = model.shape.hidden;
  const pp = model.projectorPrefix;
  const a = mm(feats, await get(`${pp}.linear_1.weight`), n - 1, d, th, await get(`${pp}.linear_1.bias`));
  const erf = (z: number) => {
    const steps = 400;
    const hstep = z / steps;
    let s = 1 + Math.exp(-z * z);
    for (let i = 1; i < steps; i++) s += (i % 2 ? 4 : 2) * Math.exp(-((i * hstep) ** 2));
    return (2 / Math.sqrt(Math.PI)) * (hstep / 3) * s;
  };
  for (let i = 0; i < a.length; i++) a[i] = 0.5 * a[i] * (1 + erf(a[i] / Math.SQRT2));
  return mm(a, await get(`${pp}.linear_2.weight`), n - 1, th, th, await get(`${pp}.linear_2.bias`));
}

const fx = await tempDir();
await writeLlavaFixture(`${fx.dir}/hub`, { seed: 11, vision: { imageSize: 112 } });
await writeLlavaFixture(`${fx.dir}/new`, {
  seed: 11,
  naming: "v4.52",
  vision: { imageSize: 112 },
  maxShardBytes: 3_000_000,
});
await writeLlavaFixture(`${fx.dir}/full`, { seed: 12 });
const backends = await allBackends();

Deno.test("patches are cut in (channel, row, column) order of the conv weight", () => {
  const chw = Float32Array.from({ length: 3 * 4 * 6 }, (_, i) => i);
  const { data, rows } = imageToPatches(chw, 3, 4, 6, 2);
  assertEquals(rows, 6);
  // Patch 4 is row 1, column 1: pixels (2..3, 2..3) of each channel.
  const want = [];
  for (let c = 0; c < 3; c++) {
    for (let kh = 0; kh < 2; kh++) for (let kw = 0; kw < 2; kw++) want.push(c * 24 + (2 + kh) * 6 + 2 + kw);
  }
  assertEquals(Array.from(data.slice(4 * 12, 5 * 12)), want);
});

for (const be of backends) {
  Deno.test(`CLIP tower + projector match a float64 reference [${be.name}]`, async () => {
    const model = await openWith(`${fx.dir}/hub`, be) as LlavaModel;
    try {
      const img = randomImage(150, 120);
      const got = await (await model.imageFeatures(img)).read();
      const want = await refTower(model, img);
      const e = relFro(got, want);
      assert(e < (be.name === "cpu" ? 1e-5 : 1e-4), `image features relFro ${e}`);
    } finally {
      model.close();
    }
  });
}

Deno.test("LLaVA forward: both naming schemes give the same logits; CPU and WebGPU agree", async () => {
  const sample = chat(1);
  const results: Float32Array[] = [];
  for (const be of backends) {
    for (const name of ["hub", "new"]) {
      const model = await openWith(`${fx.dir}/${name}`, be);
      try {
        const inp = await model.prepare(sample);
        const c = countModalities(inp.modality);
        assertEquals(c.vision, 64, "112-pixel images give 8×8 = 64 image tokens");
        assert(c.text > 10);
        let x = inp.hidden.retain();
        for (let i = 0; i < model.numLayers; i++) {
          const w = await model.loadLayer(i);
          const y = model.forwardLayer(w, x, inp.ctx);
          x.dispose();
          x = y;
        }
        const logits = await model.head(x);
        assertEquals(logits.shape, [inp.tokenIds.length, 32064]);
        results.push(await logits.read() as Float32Array);
        inp.dispose();
      } finally {
        model.close();
      }
    }
  }
  for (let i = 1; i < results.length; i++) {
    const e = relFro(results[i], results[0]);
    assert(e < 1e-4, `run ${i} differs from run 0: relFro ${e}`);
  }
});

Deno.test("a real-size LLaVA fixture expands <image> to 576 placeholders and marks them vision", async () => {
  const model = await openWith(`${fx.dir}/full`, backends[0]) as LlavaModel;
  try {
    assertEquals(model.imageTokens, 576);
    const inp = await model.prepare(chat(2));
    const c = countModalities(inp.modality);
    assertEquals(c.vision, 1152);
    for (let i = 0; i < inp.tokenIds.length; i++) {
      assertEquals(inp.modality[i] === 1, inp.tokenIds[i] === 32000);
    }
    // The text around the images follows the llava-1.5 template.
    const text = model.tokenizer!.decode(Array.from(inp.tokenIds).filter((t) => t !== 32000));
    assert(text.includes("USER:") && text.includes("ASSISTANT:"), text);
    inp.dispose();
  } finally {
    model.close();
  }
});

Deno.test("a plain-string text turn is accepted (the llava template expects content parts)", async () => {
  const model = await openWith(`${fx.dir}/hub`, backends[0]);
  try {
    const inp = await model.prepare({
      kind: "chat",
      messages: [{ role: "user", content: "Tell me a story." }],
      media: [],
      addGenerationPrompt: true,
      source: "plain text turn",
    });
    const text = model.tokenizer!.decode(Array.from(inp.tokenIds));
    assert(text.includes("USER: Tell me a story. ASSISTANT:"), text);
    inp.dispose();
  } finally {
    model.close();
  }
});

Deno.test("a prompt whose image placeholders do not match the images is refused", async () => {
  const model = await openWith(`${fx.dir}/hub`, backends[0]);
  try {
    const bad = chat(1);
    if (bad.kind === "chat") bad.media.push({ ...bad.media[0], source: "extra.png" });
    const e = await assertRejects(() => model.prepare(bad), PromptMediaError);
    assert(e.message.includes("1 <image> placeholder") && e.message.includes("2 image"), e.message);
  } finally {
    model.close();
  }
});

Deno.test("cleanup", async () => {
  await fx.cleanup();
});
