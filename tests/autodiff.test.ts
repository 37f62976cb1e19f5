/**
 * Reverse-mode gradients against central finite differences in float64 on the CPU backend: every
 * differentiable op on its own, then the MASQuant block loss of a whole decoder layer with respect to the
 * per-modality smoothing vectors of q, k, v, o, gate and up.
 *
 * The layer check disables rounding in the fake quantizers (so the function is differentiable and the
 * straight-through gradient is the true one) and uses asymmetric quantizers: their zero point is still
 * rounded, so the extreme element of each group is clipped by up to half a step — the forward is then not
 * invariant under smoothing and the gradient through the step size is exercised. Tolerance: relative
 * error < 1e-6 per parameter vector.
 */
import { assert } from "@std/assert";
import { type Backend, CpuBackend, Rng, Tape, type Tensor } from "@masquant/core";
import {
  decoderLayer,
  type DecoderLayerShape,
  type DecoderLayerWeights,
  LINEAR_NAMES,
  type LinearName,
  modalityL1,
  type QuantScheme,
  ropeTables1d,
  sampleRows,
  splitTrainHook,
} from "@masquant/core";

const cpu = new CpuBackend();
const rng = new Rng(99);

function t64(data: ArrayLike<number>, shape: number[]): Tensor {
  return cpu.tensor(data, shape, "f64");
}

async function val(t: Tensor): Promise<number> {
  return (await t.read())[0];
}

/** Gradient of f at the parameter values by autodiff and by central differences. */
async function compare(
  name: string,
  shapes: number[][],
  f: (be: Backend, ps: Tensor[]) => Tensor,
  tol = 1e-6,
  init?: (i: number) => Float64Array,
) {
  const values = shapes.map((s, i) =>
    init?.(i) ?? Float64Array.from({ length: s.reduce((a, b) => a * b, 1) }, () => rng.uniform(-1, 1))
  );
  const tape = new Tape(cpu);
  const ps = values.map((v, i) => tape.param(t64(v, shapes[i])));
  const loss = f(tape, ps);
  const grads = tape.grad(loss, ps);
  tape.dispose();
  for (let i = 0; i < ps.length; i++) {
    const g = Array.from(await grads[i].read());
    const fd = new Float64Array(values[i].length);
    for (let e = 0; e < values[i].length; e++) {
      const h = 1e-6 * Math.max(1, Math.abs(values[i][e]));
      const at = async (delta: number) => {
        const vs = values.map((v) => Float64Array.from(v));
        vs[i][e] += delta;
        const r = f(cpu, vs.map((v, k) => t64(v, shapes[k])));
        return await val(r);
      };
      fd[e] = ((await at(h)) - (await at(-h))) / (2 * h);
    }
    let num = 0;
    let den = 0;
    for (let e = 0; e < fd.length; e++) {
      num += (g[e] - fd[e]) ** 2;
      den += fd[e] ** 2;
    }
    const rel = Math.sqrt(num / Math.max(den, 1e-300));
    assert(den > 0, `${name}: gradient of input ${i} is identically zero; the check would be vacuous`);
    assert(rel < tol, `${name}: input ${i} relative gradient error ${rel} >= ${tol}`);
  }
}

/** Σ w ⊙ f(...) with fixed random weights, to make a scalar. */
function weightedSum(be: Backend, y: Tensor): Tensor {
  const w = be.tensor(Float64Array.from({ length: y.size }, (_, i) => Math.sin(i * 1.7) + 0.3), [...y.shape], "f64");
  const p = be.binary("mul", y, w);
  const flat = be.reshape(p, [p.size]);
  return be.reduce("sum", flat, 0);
}

Deno.test("per-op gradients match central differences (float64)", async () => {
  await compare("matmul", [[3, 4], [4, 5]], (be, [a, b]) => weightedSum(be, be.matmul(a, b)));
  await compare(
    "matmul tA tB",
    [[4, 3], [5, 4]],
    (be, [a, b]) => weightedSum(be, be.matmul(a, b, { transA: true, transB: true })),
  );
  await compare("matmul batched, B broadcast", [[2, 3, 4], [4, 2]], (be, [a, b]) => weightedSum(be, be.matmul(a, b)));
  await compare("binary add/sub/mul/div with broadcast", [[3, 4], [4], [3, 1]], (be, [a, b, c]) => {
    const x = be.binary("add", a, b);
    const y = be.binary("mul", x, c);
    const z = be.binary("sub", y, b);
    const d = be.binary("div", z, be.affine(c, 1, 3));
    return weightedSum(be, d);
  });
  for (const op of ["exp", "tanh", "sigmoid", "silu", "gelu", "gelu_tanh", "quick_gelu", "square", "abs"] as const) {
    await compare(`unary ${op}`, [[7]], (be, [a]) => weightedSum(be, be.unary(op, a)));
  }
  await compare("reduce sum/mean", [[3, 5]], (be, [a]) => {
    const s = be.reduce("sum", a, 1, true);
    const m = be.reduce("mean", a, 0);
    return be.binary("add", weightedSum(be, s), weightedSum(be, m));
  });
  await compare("reshape/transpose/slice/concat", [[2, 3, 4]], (be, [a]) => {
    const t = be.transpose(a, [2, 0, 1]);
    const r = be.reshape(t, [4, 6]);
    const s = be.slice(r, 1, 1, 5);
    return weightedSum(be, be.concat([s, r], 1));
  });
  await compare("gather/scatter rows", [[5, 3], [2, 3]], (be, [a, b]) => {
    const idx = be.tensor([4, 0, 2], [3], "i32");
    const g = be.gatherRows(a, idx);
    const sc = be.scatterRows(a, b, be.tensor([1, 3], [2], "i32"));
    return be.binary("add", weightedSum(be, g), weightedSum(be, sc));
  });
  await compare("softmax (causal, segments)", [[2, 4, 4]], (be, [a]) => {
    const seg = be.tensor([0, 0, 1, 1], [4], "i32");
    return weightedSum(be, be.softmax(a, { causal: true, segments: seg }));
  });
  const nw = t64([0.5, 1, 1.5, 2, 0.7, 1.2], [6]);
  await compare("rmsNorm", [[3, 6]], (be, [x]) => weightedSum(be, be.rmsNorm(x, nw, 1e-5)), 1e-6);
  await compare("rotary", [[3, 2, 4]], (be, [x]) => {
    const c = be.tensor(Float64Array.from({ length: 6 }, (_, i) => Math.cos(i)), [3, 2], "f64");
    const s = be.tensor(Float64Array.from({ length: 6 }, (_, i) => Math.sin(i)), [3, 2], "f64");
    return weightedSum(be, be.rotary(x, c, s));
  });
  await compare(
    "fakeQuant, asymmetric, rounding disabled",
    [[3, 8]],
    (be, [x]) => weightedSum(be, be.fakeQuant(x, { bits: 4, symmetric: false, groupSize: 4 }, { round: false })),
  );
});

Deno.test("MASQuant block loss: autodiff gradients w.r.t. per-modality smoothing match finite differences", async () => {
  const shape: DecoderLayerShape = {
    hidden: 16,
    heads: 4,
    kvHeads: 2,
    headDim: 4,
    intermediate: 24,
    rmsNormEps: 1e-6,
    act: "silu",
  };
  const T = 12;
  const modality = Uint8Array.from([0, 0, 1, 1, 1, 0, 2, 2, 0, 1, 2, 0]);
  const dims: Record<LinearName, [number, number]> = {
    q: [16, 16],
    k: [8, 16],
    v: [8, 16],
    o: [16, 16],
    gate: [24, 16],
    up: [24, 16],
    down: [16, 24],
  };
  const rnd = (n: number, s = 0.4) => Float64Array.from({ length: n }, () => rng.normal() * s);
  const weights: DecoderLayerWeights = {
    inputNorm: t64(Float64Array.from({ length: 16 }, () => 1 + 0.1 * rng.normal()), [16]),
    postNorm: t64(Float64Array.from({ length: 16 }, () => 1 + 0.1 * rng.normal()), [16]),
    linears: Object.fromEntries(LINEAR_NAMES.map((n) => {
      const [o, i] = dims[n];
      return [n, { w: t64(rnd(o * i), [o, i]), b: n === "q" || n === "v" ? t64(rnd(o, 0.1), [o]) : undefined }];
    })) as DecoderLayerWeights["linears"],
  };
  const x = t64(rnd(T * 16, 1), [T, 16]);
  const target = t64(rnd(T * 16, 1), [T, 16]);
  const wrow = t64(Float64Array.from(modality, (m) => [1, 0.5, 1][m]), [T]);
  const rows = sampleRows(cpu, modality);
  const ctx = { rope: ropeTables1d(cpu, 4, 10000, Array.from({ length: T }, (_, i) => i)), mask: { causal: true } };
  // f64 rope tables
  ctx.rope = { cos: cpu.cast(ctx.rope.cos, "f64"), sin: cpu.cast(ctx.rope.sin, "f64") };
  const scheme: QuantScheme = {
    name: "w4a8-asym",
    weight: { bits: 4, symmetric: false, groupSize: 0 },
    act: { bits: 8, symmetric: false, groupSize: 0 },
  };
  const keys: string[] = [];
  for (const n of ["q", "k", "v", "o", "gate", "up"]) {
    for (const m of ["text", "vision", "audio"]) keys.push(`${n}:${m}`);
  }
  await compare(
    "decoder layer block loss",
    keys.map((k) => [k.startsWith("o") ? 16 : 16]),
    (be, ps) => {
      const params = new Map(keys.map((k, i) => [k, ps[i]]));
      const y = decoderLayer(be, shape, weights, x, ctx, splitTrainHook(be, scheme, params, rows.rows, false));
      return modalityL1(be, y, target, wrow);
    },
    1e-6,
    () => Float64Array.from({ length: 16 }, () => 0.5 + rng.next()),
  );
});
