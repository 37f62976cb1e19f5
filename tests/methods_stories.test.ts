/**
 * Text-only quantization of the real trained stories260k Llama (../shared/models/stories260k) at W8A8,
 * W4A8 and W4A6: mean next-token NLL over its reference sequences for the float model, RTN, SmoothQuant and
 * MASQuant, and MASQuant's final-layer output error below SmoothQuant's. Calibration uses 16 sequences
 * sampled from the float model itself (the checkpoint has no tokenizer or corpus), disjoint from the
 * reference sequences used for evaluation.
 */
import { assert, assertAlmostEquals } from "@std/assert";
import {
  compareVariants,
  CpuBackend,
  MAS_DEFAULTS,
  openWith,
  registerAdapter,
  runQuantization,
  SafetensorsFile,
  sampleSequences,
  SCHEMES,
} from "@masquant/core";
import { llamaAdapter } from "@masquant/plugin-llama";
import { sharedTest } from "./shared_data.ts";

registerAdapter(llamaAdapter);

sharedTest(
  "stories260k at W8A8 / W4A8 / W4A6: NLL table; MASQuant's final error < SmoothQuant's",
  "models/stories260k",
  async (dir) => {
    const be = new CpuBackend();
    const model = await openWith(dir, be);
    const ref = await SafetensorsFile.open(`${dir}/reference_logits.safetensors`);
    try {
      const evalIds: number[][] = [];
      let refNll = 0;
      let refTok = 0;
      for (let n = 0; n < 4; n++) {
        const ids = Array.from(await ref.readInt32(`seq${n}.input_ids`));
        evalIds.push(ids);
        refNll += (await ref.readFloat32(`seq${n}.mean_nll`))[0] * (ids.length - 1);
        refTok += ids.length - 1;
      }
      const calibIds = await sampleSequences(model, 16, 64, 7, [1]);
      const calib = [];
      for (const ids of calibIds) calib.push(await model.prepareTokens(ids));
      const evals = [];
      for (const ids of evalIds) evals.push(await model.prepareTokens(ids));
      const rows: string[] = [];
      let floatNll = NaN;
      for (const name of ["w8a8", "w4a8", "w4a6"] as const) {
        const scheme = SCHEMES[name];
        const base = { scheme, alpha: 0.5, mas: MAS_DEFAULTS };
        const rtn = await runQuantization(model, calib, { ...base, method: "rtn" });
        const sq = await runQuantization(model, calib, { ...base, method: "smoothquant" });
        const mas = await runQuantization(model, calib, { ...base, method: "masquant" });
        const [f, r, s, m] = await compareVariants(model, evals, [
          { label: "float", mode: "float", states: [] },
          { label: "RTN", mode: "merged", states: rtn.states },
          { label: "SmoothQuant", mode: "merged", states: sq.states },
          { label: "MASQuant", mode: "split", states: mas.states },
        ], { logits: true });
        floatNll = f.meanNll!;
        rows.push(
          `| ${name.toUpperCase()} | ${f.meanNll!.toFixed(4)} | ${r.meanNll!.toFixed(4)} | ${s.meanNll!.toFixed(4)} | ${
            m.meanNll!.toFixed(4)
          } | ` +
            `${s.finalRelError.toExponential(2)} | ${m.finalRelError.toExponential(2)} |`,
        );
        assert(
          m.finalRelError < s.finalRelError,
          `${name}: MASQuant final error ${m.finalRelError} >= SmoothQuant ${s.finalRelError}`,
        );
      }
      console.log("| bits | float NLL | RTN | SmoothQuant | MASQuant | SQ final rel. err | MASQuant final rel. err |");
      console.log("|---|---|---|---|---|---|---|");
      for (const r of rows) console.log(r);
      assertAlmostEquals(floatNll, refNll / refTok, 1e-4, "the float model's NLL equals the reference mean NLL");
      for (const p of [...calib, ...evals]) p.dispose();
    } finally {
      ref.close();
      model.close();
    }
  },
);
