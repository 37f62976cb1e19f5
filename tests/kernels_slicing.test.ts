/**
 * Storage bindings are limited (128 MiB on our adapters), so kernels bind large tensors in slices. A
 * second WebGPU backend on the same device with a 32 KiB binding limit exercises every slicing path on
 * small shapes; two tests cross the real 128 MiB limit. Results are compared with the CPU backend
 * (itself checked against float64 references in kernels_parity.test.ts).
 */
import { assert, assertEquals } from "@std/assert";
import { type Backend, Rng, type Tensor } from "@masquant/core";
import { WebGPUBackend } from "@masquant/kernels";
import { cpu, gpuTest } from "./backends.ts";
import { assertClose, relFro } from "./ref.ts";

const rng = new Rng(7);

async function pair(
  small: Backend,
  build: (be: Backend) => Tensor | Tensor[],
): Promise<[number[][], number[][]]> {
  const run = async (be: Backend) => {
    const r = build(be);
    const list = Array.isArray(r) ? r : [r];
    const out = [];
    for (const t of list) out.push(Array.from(await t.read()));
    return out;
  };
  return [await run(small), await run(cpu)];
}

await gpuTest("every sliced kernel path matches the CPU backend (32 KiB binding limit)", async (gpu) => {
  const small = new WebGPUBackend(gpu.ctx, { maxBindingBytes: 32 * 1024, matmul: gpu.matmulKind });
  const big = rng.uniformArray(50_000, -2, 2);
  const mat = rng.uniformArray(300 * 170, -1, 1); // 51k floats > 8k-float limit
  const w = rng.uniformArray(900 * 170, -1, 1); // [900, 170] weight
  const cases: [string, (be: Backend) => Tensor | Tensor[], number][] = [
    ["affine", (be) => be.affine(be.tensor(big, [50_000]), 2, 1), 0],
    ["unary silu", (be) => be.unary("silu", be.tensor(big, [50_000])), 1e-6],
    ["binary same", (be) => be.binary("mul", be.tensor(big, [50_000]), be.tensor(big, [50_000])), 1e-6],
    ["binary scalar", (be) => be.binary("add", be.tensor(big, [50_000]), be.tensor([3], [1])), 1e-6],
    ["reduce rows", (be) => be.reduce("sum", be.tensor(mat, [300, 170]), 1), 1e-5],
    ["reduce axis0", (be) => be.reduce("max", be.tensor(mat, [300, 170]), 0), 0],
    ["channelMaxAbs", (be) => be.channelMaxAbs(be.tensor(mat, [300, 170])), 0],
    ["softmax causal", (be) => be.softmax(be.tensor(mat.slice(0, 170 * 170), [170, 170]), { causal: true }), 1e-6],
    ["rmsNorm", (be) => be.rmsNorm(be.tensor(mat, [300, 170]), undefined, 1e-6), 1e-5],
    ["layerNorm", (be) => be.layerNorm(be.tensor(mat, [300, 170]), undefined, undefined, 1e-6), 1e-5],
    ["transpose", (be) => be.transpose(be.tensor(mat, [300, 170]), [1, 0]), 0],
    ["slice", (be) => be.slice(be.tensor(mat, [300, 170]), 0, 10, 290), 0],
    ["concat", (be) => be.concat([be.tensor(mat, [300, 170]), be.tensor(mat, [300, 170])], 0), 0],
    [
      "gatherRows",
      (be) => be.gatherRows(be.tensor(w, [900, 170]), be.tensor([899, 0, 450, 3, 700], [5], "i32")),
      0,
    ],
    [
      "scatterRows",
      (be) =>
        be.scatterRows(
          be.tensor(w, [900, 170]),
          be.tensor(mat.slice(0, 340), [2, 170]),
          be.tensor([898, 5], [2], "i32"),
        ),
      0,
    ],
    [
      "matmul A·Bᵀ (panels)",
      (be) => be.matmul(be.tensor(mat, [300, 170]), be.tensor(w, [900, 170]), { transB: true }),
      1e-5,
    ],
    ["matmul A·B (k-split pack)", (be) => be.matmul(be.tensor(mat, [300, 170]), be.tensor(w, [170, 900])), 1e-5],
    [
      "matmul Aᵀ·B",
      (be) => be.matmul(be.tensor(mat.slice(0, 170 * 40), [170, 40]), be.tensor(w, [170, 900]), { transA: true }),
      1e-5,
    ],
    ["fakeQuant", (be) => be.fakeQuant(be.tensor(w, [900, 170]), { bits: 4, symmetric: true, groupSize: 0 }), 1e-6],
    [
      "fakeQuant group",
      (be) => be.fakeQuant(be.tensor(mat, [300, 170]), { bits: 4, symmetric: false, groupSize: 34 }),
      1e-6,
    ],
    [
      "fakeQuantGrad",
      (be) =>
        be.fakeQuantGrad(be.tensor(w, [900, 170]), be.tensor(w, [900, 170]), {
          bits: 8,
          symmetric: true,
          groupSize: 0,
        }),
      1e-5,
    ],
    ["cast i32", (be) => be.cast(be.affine(be.tensor(big, [50_000]), 100, 0), "i32"), 0],
  ];
  for (const [name, build, tol] of cases) {
    const [g, c] = await pair(small, build);
    for (let i = 0; i < c.length; i++) {
      if (tol === 0) assertEquals(g[i], c[i], `${name}: sliced GPU result differs from CPU`);
      else assertClose(`${name} (sliced)`, g[i], c[i], tol, tol);
    }
  }
  // Quantize + int8 matmul with many row and column slices.
  const [gq, cq] = await pair(small, (be) => {
    const qa = be.quantize(be.tensor(mat, [300, 170]), { bits: 8, symmetric: true, groupSize: 0 });
    const qb = be.quantize(be.tensor(w, [900, 170]), { bits: 4, symmetric: true, groupSize: 0 }, true);
    return [qa.q, qb.q, be.int8Matmul(qa.q, qa.scale, qb.q, qb.scale)];
  });
  // Codes can differ only at exact rounding ties; the products must agree closely.
  assert(gq[0].filter((v, i) => v !== cq[0][i]).length <= 2, "activation codes");
  assert(gq[1].filter((v, i) => v !== cq[1][i]).length <= 2, "weight codes");
  assert(relFro(gq[2], cq[2]) < 1e-3, "int8Matmul sliced");
});

await gpuTest("a 160 MB elementwise op and a 147 MB matmul weight cross the real 128 MiB limit", async (gpu) => {
  const n = 40_000_000;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (i % 1000) - 500;
  const t = gpu.tensor(x, [n]);
  const y = await gpu.affine(t, 0.5, 1).read();
  t.dispose();
  for (const i of [0, 1, 12_345_678, 33_554_431, 33_554_432, 33_554_433, n - 1]) {
    assertEquals(y[i], x[i] * 0.5 + 1, `element ${i}`);
  }
  const m = 4;
  const k = 4096;
  const nOut = 9000; // 9000 × 4096 × 4 bytes = 147 MB
  const a = rng.uniformArray(m * k);
  const b = rng.uniformArray(nOut * k);
  const got = await gpu.matmul(gpu.tensor(a, [m, k]), gpu.tensor(b, [nOut, k]), { transB: true }).read();
  const want = await cpu.matmul(cpu.tensor(a, [m, k]), cpu.tensor(b, [nOut, k]), { transB: true }).read();
  const e = relFro(got, want);
  assert(e < 1e-5, `matmul across panels: relFro ${e}`);
  const rows = gpu.gatherRows(gpu.tensor(b, [nOut, k]), gpu.tensor([8999, 0, 4500], [3], "i32"));
  const r = await rows.read();
  assertEquals(Array.from(r.slice(0, k)), Array.from(b.slice(8999 * k, 9000 * k)));
  await gpu.sync();
});
