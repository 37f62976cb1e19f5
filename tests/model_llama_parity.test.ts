/**
 * The real trained stories260k Llama (../shared/models/stories260k): logits of every reference sequence
 * must match the float64 reference to a relative Frobenius error < 1e-5 on the CPU backend and < 1e-4
 * on WebGPU.
 */
import { assert } from "@std/assert";
import { type Backend, registerAdapter, SafetensorsFile } from "@masquant/core";
import { openWith } from "@masquant/core";
import { llamaAdapter } from "@masquant/plugin-llama";
import { cpu, gpuBackend, REQUIRE_GPU } from "./backends.ts";
import { sharedTest } from "./shared_data.ts";
import { relFro } from "./ref.ts";

registerAdapter(llamaAdapter);

async function check(be: Backend, dir: string, tol: number) {
  const ref = await SafetensorsFile.open(`${dir}/reference_logits.safetensors`);
  const model = await openWith(dir, be);
  try {
    for (let n = 0; n < 4; n++) {
      const ids = Array.from(await ref.readInt32(`seq${n}.input_ids`));
      const want = await ref.readFloat32(`seq${n}.logits`);
      const logits = await model.logits(ids);
      const got = await logits.read();
      logits.dispose();
      const e = relFro(got, want);
      console.log(`stories260k seq${n} (${ids.length} tokens) on ${be.name}: relFro ${e.toExponential(2)}`);
      assert(e < tol, `seq${n}: relative Frobenius error ${e} >= ${tol} on ${be.name}`);
    }
  } finally {
    model.close();
    ref.close();
  }
}

sharedTest(
  "stories260k logits match the float64 reference on the CPU backend (< 1e-5)",
  "models/stories260k",
  (dir) => check(cpu, dir, 1e-5),
);

sharedTest("stories260k logits match the float64 reference on WebGPU (< 1e-4)", "models/stories260k", async (dir) => {
  const gpu = await gpuBackend();
  if (!gpu) {
    if (REQUIRE_GPU) throw new Error("MASQUANT_REQUIRE_GPU=1 but no WebGPU adapter was found");
    console.log("skipped: no WebGPU adapter (stories260k on WebGPU)");
    return;
  }
  await check(gpu, dir, 1e-4);
});
