/**
 * The whole method on the WebGPU backend: statistics, SmoothQuant factors, MAS learning (forward and
 * backward on the tape), CMC and the deploy forward with integer kernels, against the same run on the CPU
 * backend. Rounding ties can flip a few quantization levels between the backends, so the learned vectors
 * and the SQNRs are compared with tolerances (stated below), not bit for bit.
 */
import { assert } from "@std/assert";
import {
  type Backend,
  CMC_DEFAULTS,
  compareVariants,
  MAS_DEFAULTS,
  openWith,
  registerAdapter,
  runQuantization,
  SCHEMES,
} from "@masquant/core";
import { llavaAdapter } from "@masquant/plugin-llava";
import { cpu, gpuTest } from "./backends.ts";
import { tempDir, writeLlavaFixture } from "./fixtures/synthetic.ts";
import { imageChatSamples } from "./fixtures/samples.ts";
import { relFro } from "./ref.ts";

registerAdapter(llavaAdapter);

async function runOn(be: Backend, dir: string) {
  const model = await openWith(dir, be);
  const calib = [];
  for (const s of imageChatSamples(3, 1)) calib.push(await model.prepare(s));
  const evals = [];
  for (const s of imageChatSamples(2, 2, 5)) evals.push(await model.prepare(s));
  const base = { scheme: SCHEMES.w4a8, alpha: 0.5, mas: { ...MAS_DEFAULTS, epochs: 1 } };
  const sq = await runQuantization(model, calib, { ...base, method: "smoothquant" });
  const mas = await runQuantization(model, calib, {
    ...base,
    method: "masquant",
    cmc: { ...CMC_DEFAULTS, rankRatio: 0.5 },
  });
  const reps = await compareVariants(model, evals, [
    { label: "SmoothQuant", mode: "deploy", states: sq.states },
    { label: "MASQuant split", mode: "split", states: mas.states },
    { label: "MASQuant deploy", mode: "deploy", states: mas.states },
  ]);
  for (const p of [...calib, ...evals]) p.dispose();
  model.close();
  return { sq, mas, reps };
}

await gpuTest("MASQuant on WebGPU agrees with the CPU backend (vectors within 2%, SQNR within 0.3 dB)", async (gpu) => {
  const fx = await tempDir();
  try {
    await writeLlavaFixture(fx.dir, {
      seed: 8,
      text: { hidden: 64, layers: 2, heads: 4, kvHeads: 2 },
      vision: { imageSize: 112 },
    });
    const c = await runOn(cpu, fx.dir);
    const g = await runOn(gpu, fx.dir);
    for (let l = 0; l < 2; l++) {
      const a = c.sq.states[l].fold!.qkv;
      const b = g.sq.states[l].fold!.qkv;
      assert(relFro(b, a) < 1e-5, `layer ${l}: SmoothQuant factors differ (${relFro(b, a)})`);
      for (const n of ["q", "o", "up"] as const) {
        for (const m of ["text", "vision"] as const) {
          const va = c.mas.states[l].linears[n]!.smooth![m]!;
          const vb = g.mas.states[l].linears[n]!.smooth![m]!;
          const e = relFro(vb, va);
          assert(e < 2e-2, `layer ${l} ${n} ${m}: learned smoothing differs by ${e}`);
        }
      }
    }
    for (let v = 0; v < c.reps.length; v++) {
      for (const m of ["text", "vision"] as const) {
        const a = c.reps[v].sqnr[m].at(-1)!;
        const b = g.reps[v].sqnr[m].at(-1)!;
        console.log(`${c.reps[v].label} ${m}: cpu ${a.toFixed(3)} dB, webgpu ${b.toFixed(3)} dB`);
        assert(Math.abs(a - b) < 0.3, `${c.reps[v].label} ${m}: cpu ${a} vs webgpu ${b}`);
      }
    }
  } finally {
    await fx.cleanup();
  }
});
