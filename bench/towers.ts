/**
 * Encoder-tower timings of the Qwen adapters: the Omni audio front end (Whisper log-mel, host code), the Omni audio
 * tower per clip, and the Qwen2.5 vision tower per image (preprocessing excluded), on the CPU backend and on WebGPU
 * when an adapter is found. The towers are the synthetic test fixtures' (vision width 32 × 3 blocks, audio width
 * 32 × 2 layers, real patch/window/mel geometry), so the numbers measure the per-token machinery (convolutions as
 * matmuls, window permutation, block-diagonal attention, pooling) rather than a 7B tower's arithmetic. Each cell is
 * the median of a few runs after one warm-up, including the read-back of the result.
 *
 *   deno run -A bench/towers.ts
 */
import { type Backend, CpuBackend, openWith, registerAdapter, rgbImageFromPixels, Rng } from "@masquant/core";
import { openWebGPU } from "@masquant/kernels";
import { preprocessQwenImage } from "@masquant/plugin-qwen-vl";
import { qwen2_5OmniAdapter, type Qwen2_5OmniModel } from "@masquant/plugin-qwen-omni";
import { writeQwen2_5OmniFixture } from "../tests/fixtures/synthetic_qwen.ts";

const RUNS = 3;
registerAdapter(qwen2_5OmniAdapter);

async function medianMs(fn: () => Promise<unknown> | unknown): Promise<number> {
  await fn();
  const times: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(RUNS / 2)];
}

const rng = new Rng(1);
function clip(seconds: number): Float32Array {
  const n = Math.round(seconds * 16000);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = 0.3 * Math.sin((2 * Math.PI * 220 * i) / 16000) + 0.02 * (rng.next() - 0.5);
  return out;
}

const dir = await Deno.makeTempDir({ prefix: "masquant-bench-towers-" });
try {
  await writeQwen2_5OmniFixture(dir, { seed: 1 });
  const backends: Backend[] = [new CpuBackend()];
  const gpu = await openWebGPU();
  if (gpu) backends.push(gpu);
  const clips = [5, 30].map((s) => ({ seconds: s, samples: clip(s) }));
  const images = [[448, 448], [896, 672]].map(([w, h]) => {
    const px = new Uint8Array(w * h * 3);
    for (let i = 0; i < px.length; i++) px[i] = (i * 7 + (i >> 9)) & 255;
    return { w, h, img: rgbImageFromPixels(w, h, px) };
  });

  const rows: string[][] = [["stage", "input", "output", ...backends.map((b) => `${b.name} ms`)]];
  const models = await Promise.all(backends.map((be) => openWith(dir, be) as Promise<Qwen2_5OmniModel>));
  for (const c of clips) {
    const mel = models[0].audioMel(c.samples, `${c.seconds} s clip`);
    const ms = await medianMs(() => models[0].audioMel(c.samples, "clip"));
    rows.push([
      "audio front end (log-mel, host)",
      `${c.seconds} s`,
      `128 x ${mel.frames}`,
      ms.toFixed(1),
      ...backends.slice(1).map(() => "-"),
    ]);
    const cells: string[] = [];
    let tokens = 0;
    for (const m of models) {
      cells.push(
        (await medianMs(async () => {
          const t = await m.audioTower(mel);
          tokens = t.shape[0];
          await t.read();
          t.dispose();
        })).toFixed(1),
      );
    }
    rows.push(["audio tower (fixture size)", `${mel.frames} frames`, `${tokens} tokens`, ...cells]);
  }
  for (const im of images) {
    const px = preprocessQwenImage(im.img, models[0].imageProcessor);
    const cells: string[] = [];
    let tokens = 0;
    for (const m of models) {
      cells.push(
        (await medianMs(async () => {
          const t = await m.visionTower(px);
          tokens = t.shape[0];
          await t.read();
          t.dispose();
        })).toFixed(1),
      );
    }
    rows.push(["vision tower (fixture size)", `${im.w}x${im.h} (${px.rows} patches)`, `${tokens} tokens`, ...cells]);
  }
  for (const m of models) m.close();

  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const [k, r] of rows.entries()) {
    console.log(r.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  "));
    if (k === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
  if (!gpu) console.log("(no WebGPU adapter found: CPU only)");
} finally {
  await Deno.remove(dir, { recursive: true });
}
