/**
 * Every op on every backend against float64 references on random inputs, including odd sizes.
 * Tolerances are stated per op (f32 arithmetic; GPU transcendental functions are approximations).
 */
import { assert, assertEquals } from "@std/assert";
import { type Backend, Rng, type Tensor, type UnaryOp } from "@masquant/core";
import { allBackends, gpuTest } from "./backends.ts";
import { WebGPUBackend } from "@masquant/kernels";
import { assertClose, evenRound, REF_UNARY, refDeriv, refErf, refMatmul, refQuantGroup, relFro } from "./ref.ts";

const backends = await allBackends();
const rng = new Rng(20261127);
const ODD = [1, 7, 33, 129];

async function host(t: Tensor): Promise<number[]> {
  const a = await t.read();
  t.dispose();
  return Array.from(a);
}

function each(name: string, fn: (b: Backend) => Promise<void>): void {
  for (const b of backends) Deno.test(`${name} [${b.name}]`, () => fn(b));
}

// ---- matmul ---------------------------------------------------------------------------------------

each("matmul: odd sizes, all transpose combinations, batched and broadcast", async (be) => {
  const cases: [number, number, number, number][] = [];
  for (const m of ODD) for (const n of [1, 7, 33]) for (const k of [1, 7, 129]) cases.push([1, m, n, k]);
  cases.push([3, 17, 9, 20], [2, 64, 64, 64], [1, 130, 70, 257]);
  for (const [batch, m, n, k] of cases) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const a = rng.uniformArray(batch * m * k);
        const b = rng.uniformArray(batch * k * n);
        const sa = batch > 1 ? [batch] : [];
        const ta = be.tensor(a, [...sa, ...(transA ? [k, m] : [m, k])]);
        const tb = be.tensor(b, [...sa, ...(transB ? [n, k] : [k, n])]);
        const got = await host(be.matmul(ta, tb, { transA, transB }));
        const want = refMatmul(a, b, batch, m, n, k, { transA, transB });
        const e = relFro(got, want);
        assert(e < 1e-5, `matmul [${batch}] ${m}x${k}·${k}x${n} tA=${transA} tB=${transB}: relFro ${e}`);
        ta.dispose();
        tb.dispose();
      }
    }
  }
  // Broadcast: a batched, b a single matrix (and the reverse).
  const a = rng.uniformArray(3 * 5 * 6);
  const b = rng.uniformArray(6 * 4);
  const got = await host(be.matmul(be.tensor(a, [3, 5, 6]), be.tensor(b, [6, 4])));
  assert(relFro(got, refMatmul(a, b, 3, 5, 4, 6, { bcastB: true })) < 1e-5, "matmul broadcast B");
  const got2 = await host(be.matmul(be.tensor(b, [4, 6]), be.tensor(a, [3, 6, 5]), { transA: false }));
  assert(relFro(got2, refMatmul(b, a, 3, 4, 5, 6, { bcastA: true })) < 1e-5, "matmul broadcast A");
});

each("matmul: bad shapes name the op and the shapes", (be) => {
  const a = be.tensor(rng.uniformArray(6), [2, 3]);
  const b = be.tensor(rng.uniformArray(8), [4, 2]);
  let msg = "";
  try {
    be.matmul(a, b);
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes("matmul") && msg.includes("[2,3]") && msg.includes("[4,2]"), msg);
  return Promise.resolve();
});

// ---- elementwise ---------------------------------------------------------------------------------

const UNARY_OPS: UnaryOp[] = [
  "neg",
  "abs",
  "sign",
  "exp",
  "log",
  "sqrt",
  "rsqrt",
  "square",
  "recip",
  "tanh",
  "sigmoid",
  "relu",
  "silu",
  "gelu",
  "gelu_tanh",
  "quick_gelu",
];
const POSITIVE = new Set(["log", "sqrt", "rsqrt", "recip"]);

each("unary ops and their derivatives (atol 2e-6, rtol 2e-6; GPU gelu uses a 1.5e-7 erf)", async (be) => {
  assert(Math.abs(refErf(0.7) - 0.6778011938374184) < 1e-12, "reference erf");
  for (const op of UNARY_OPS) {
    for (const n of [1, 7, 129, 1000]) {
      const x = POSITIVE.has(op) ? rng.uniformArray(n, 0.1, 4) : rng.uniformArray(n, -6, 6);
      const t = be.tensor(x, [n]);
      const got = await host(be.unary(op, t));
      assertClose(`unary(${op}) n=${n}`, got, Array.from(x, REF_UNARY[op]), 2e-6, 2e-6);
      const gy = rng.uniformArray(n);
      const gg = await host(be.unaryGrad(op, t, be.tensor(gy, [n])));
      const want = Array.from(x, (v, i) => (op === "sign" ? 0 : gy[i] * refDeriv(op, v)));
      assertClose(`unaryGrad(${op}) n=${n}`, gg, want, 5e-5, 5e-5);
      t.dispose();
    }
  }
});

each("affine, pow, clamp", async (be) => {
  const x = rng.uniformArray(333, -3, 3);
  const t = be.tensor(x, [9, 37]);
  assertClose("affine", await host(be.affine(t, 1.5, -0.25)), Array.from(x, (v) => v * 1.5 - 0.25), 1e-6, 1e-6);
  assertClose(
    "pow",
    await host(be.pow(t, 0.37)),
    Array.from(x, (v) => Math.sign(v) * Math.abs(v) ** 0.37),
    2e-6,
    2e-6,
  );
  assertClose("clamp", await host(be.clamp(t, -1, 0.5)), Array.from(x, (v) => Math.min(Math.max(v, -1), 0.5)), 0, 0);
});

each("binary ops with broadcasting", async (be) => {
  const shapes: [number[], number[]][] = [
    [[7, 33], [7, 33]],
    [[7, 33], [33]],
    [[7, 33], [7, 1]],
    [[1], [5, 3]],
    [[4, 1, 6], [1, 5, 1]],
    [[2, 3, 4, 5], [3, 1, 5]],
    [[129], [1]],
  ];
  const ops = {
    add: (a: number, b: number) => a + b,
    sub: (a: number, b: number) => a - b,
    mul: (a: number, b: number) => a * b,
    div: (a: number, b: number) => a / b,
    maximum: Math.max,
    minimum: Math.min,
  };
  for (const [sa, sb] of shapes) {
    const na = sa.reduce((a, b) => a * b, 1);
    const nb = sb.reduce((a, b) => a * b, 1);
    const a = rng.uniformArray(na, -2, 2);
    const b = rng.uniformArray(nb, 0.5, 2);
    const out = sa.length >= sb.length ? [...sa] : [...sb];
    const rank = Math.max(sa.length, sb.length);
    const pa = [...Array(rank - sa.length).fill(1), ...sa];
    const pb = [...Array(rank - sb.length).fill(1), ...sb];
    for (let i = 0; i < rank; i++) out[i] = Math.max(pa[i], pb[i]);
    const total = out.reduce((x, y) => x * y, 1);
    for (const [op, f] of Object.entries(ops)) {
      const want: number[] = [];
      for (let i = 0; i < total; i++) {
        let rem = i;
        let ia = 0;
        let ib = 0;
        let ma = 1;
        let mb = 1;
        for (let ax = rank - 1; ax >= 0; ax--) {
          const c = rem % out[ax];
          rem = Math.floor(rem / out[ax]);
          ia += (pa[ax] === 1 ? 0 : c) * ma;
          ib += (pb[ax] === 1 ? 0 : c) * mb;
          ma *= pa[ax];
          mb *= pb[ax];
        }
        want.push(f(a[ia], b[ib]));
      }
      const got = await host(be.binary(op as keyof typeof ops, be.tensor(a, sa), be.tensor(b, sb)));
      assertClose(`binary(${op}) ${JSON.stringify(sa)} ${JSON.stringify(sb)}`, got, want, 1e-6, 1e-6);
    }
  }
  let msg = "";
  try {
    be.binary("add", be.tensor([1, 2, 3], [3]), be.tensor([1, 2], [2]));
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes("binary(add)") && msg.includes("[3]") && msg.includes("[2]"), msg);
});

// ---- reductions --------------------------------------------------------------------------------

each("reductions over every axis (sum/mean rtol 1e-5, max/min/maxabs exact)", async (be) => {
  for (const shape of [[1], [7], [3, 129], [4, 5, 6], [2, 1000]]) {
    const n = shape.reduce((a, b) => a * b, 1);
    const x = rng.uniformArray(n, -3, 3);
    for (let axis = 0; axis < shape.length; axis++) {
      const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
      const len = shape[axis];
      const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
      for (const op of ["sum", "mean", "max", "min", "maxabs"] as const) {
        const want: number[] = [];
        for (let o = 0; o < outer; o++) {
          for (let i = 0; i < inner; i++) {
            const vals = [];
            for (let k = 0; k < len; k++) vals.push(x[(o * len + k) * inner + i]);
            if (op === "sum") want.push(vals.reduce((a, b) => a + b, 0));
            if (op === "mean") want.push(vals.reduce((a, b) => a + b, 0) / len);
            if (op === "max") want.push(Math.max(...vals));
            if (op === "min") want.push(Math.min(...vals));
            if (op === "maxabs") want.push(Math.max(...vals.map(Math.abs)));
          }
        }
        const got = await host(be.reduce(op, be.tensor(x, shape), axis));
        const tol = op === "sum" || op === "mean" ? 1e-5 : 0;
        assertClose(`reduce(${op}) ${JSON.stringify(shape)} axis ${axis}`, got, want, tol, tol);
      }
    }
  }
});

each("channelMaxAbs per modality (exact)", async (be) => {
  for (const [rows, cols] of [[1, 1], [7, 33], [129, 7], [300, 64]]) {
    const x = rng.uniformArray(rows * cols, -5, 5);
    const ids = Array.from({ length: rows }, () => rng.int(3));
    const tx = be.tensor(x, [rows, cols]);
    const ti = be.tensor(ids, [rows], "i32");
    for (const id of [0, 1, 2, 7]) {
      const want = new Array(cols).fill(0);
      for (let r = 0; r < rows; r++) {
        if (ids[r] !== id) continue;
        for (let c = 0; c < cols; c++) want[c] = Math.max(want[c], Math.abs(x[r * cols + c]));
      }
      assertClose(`channelMaxAbs ${rows}x${cols} id ${id}`, await host(be.channelMaxAbs(tx, ti, id)), want, 0, 0);
    }
    const all = new Array(cols).fill(0);
    for (let i = 0; i < rows * cols; i++) all[i % cols] = Math.max(all[i % cols], Math.abs(x[i]));
    assertClose(`channelMaxAbs ${rows}x${cols} all`, await host(be.channelMaxAbs(tx)), all, 0, 0);
  }
});

// ---- layout --------------------------------------------------------------------------------------

each("transpose, slice, concat, gatherRows, scatterRows, cast (exact)", async (be) => {
  const shape = [3, 5, 7];
  const x = rng.uniformArray(105);
  const t = be.tensor(x, shape);
  const perm = [2, 0, 1];
  const tr = await host(be.transpose(t, perm));
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 5; j++) {
      for (let k = 0; k < 7; k++) assertEquals(tr[(k * 3 + i) * 5 + j], x[(i * 5 + j) * 7 + k]);
    }
  }
  const sl = await host(be.slice(t, 1, 1, 4));
  assertEquals(sl.length, 3 * 3 * 7);
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) {
      for (let k = 0; k < 7; k++) assertEquals(sl[(i * 3 + j) * 7 + k], x[(i * 5 + j + 1) * 7 + k]);
    }
  }
  const a2 = rng.uniformArray(3 * 2 * 7);
  const cc = await host(be.concat([t, be.tensor(a2, [3, 2, 7])], 1));
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 7; j++) {
      for (let k = 0; k < 7; k++) {
        const want = j < 5 ? x[(i * 5 + j) * 7 + k] : a2[(i * 2 + j - 5) * 7 + k];
        assertEquals(cc[(i * 7 + j) * 7 + k], want);
      }
    }
  }
  const table = rng.uniformArray(10 * 33);
  const tt = be.tensor(table, [10, 33]);
  const idx = [9, 0, 3, 3, 7];
  const g = await host(be.gatherRows(tt, be.tensor(idx, [5], "i32")));
  idx.forEach((r, i) => assertEquals(g.slice(i * 33, i * 33 + 33), Array.from(table.slice(r * 33, r * 33 + 33))));
  const rows = rng.uniformArray(3 * 33);
  const sidx = [8, 1, 4];
  const sc = await host(be.scatterRows(tt, be.tensor(rows, [3, 33]), be.tensor(sidx, [3], "i32")));
  for (let r = 0; r < 10; r++) {
    const k = sidx.indexOf(r);
    const want = k >= 0 ? rows.slice(k * 33, k * 33 + 33) : table.slice(r * 33, r * 33 + 33);
    assertEquals(sc.slice(r * 33, r * 33 + 33), Array.from(want));
  }
  // Casts: f32 → i32 truncates; i8 ↔ int4 ↔ i32 round trips with odd row lengths.
  assertEquals(await host(be.cast(be.tensor([1.7, -2.7, 3], [3]), "i32")), [1, -2, 3]);
  const small = Array.from({ length: 3 * 13 }, () => rng.int(16) - 8);
  const i8 = be.tensor(small, [3, 13], "i8");
  assertEquals(await host(be.cast(i8, "int4")), small);
  assertEquals(await host(be.cast(be.cast(i8, "int4"), "i8")), small);
  assertEquals(await host(be.cast(be.cast(i8, "i32"), "int4")), small);
  assertEquals(await host(be.cast(i8, "f32")), small);
  const reshaped = be.reshape(t, [15, -1]);
  assertEquals(reshaped.shape, [15, 7]);
  assertEquals(await host(reshaped), Array.from(x));
});

each("gatherRows rejects bad index dtype and shapes", (be) => {
  let msg = "";
  try {
    be.gatherRows(be.tensor([1, 2, 3, 4], [2, 2]), be.tensor([0, 1], [2]));
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes("gatherRows") && msg.includes("i32"), msg);
  return Promise.resolve();
});

// ---- transformer ops ------------------------------------------------------------------------------

function refSoftmaxRow(row: number[], allowed: boolean[]): number[] {
  const m = Math.max(...row.filter((_, i) => allowed[i]));
  const e = row.map((v, i) => (allowed[i] ? Math.exp(v - m) : 0));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => (s > 0 ? v / s : 0));
}

each("softmax with causal and block-diagonal masks, and its backward (atol 1e-6)", async (be) => {
  for (const t of [1, 7, 33, 129]) {
    const heads = 3;
    const x = rng.uniformArray(heads * t * t, -4, 4);
    const seg = Array.from({ length: t }, (_, i) => Math.floor(i / 5));
    for (const [causal, useSeg] of [[false, false], [true, false], [false, true], [true, true]]) {
      const tx = be.tensor(x, [heads, t, t]);
      const ts = useSeg ? be.tensor(seg, [t], "i32") : undefined;
      const got = await host(be.softmax(tx, { causal, segments: ts }));
      const want: number[] = [];
      for (let r = 0; r < heads * t; r++) {
        const q = r % t;
        const row = Array.from(x.slice(r * t, r * t + t));
        want.push(...refSoftmaxRow(row, row.map((_, k) => (!causal || k <= q) && (!useSeg || seg[k] === seg[q]))));
      }
      assertClose(`softmax t=${t} causal=${causal} seg=${useSeg}`, got, want, 1e-6, 1e-5);
      const gy = rng.uniformArray(heads * t * t);
      const gg = await host(be.softmaxGrad(be.tensor(want, [heads, t, t]), be.tensor(gy, [heads, t, t])));
      const wantG: number[] = [];
      for (let r = 0; r < heads * t; r++) {
        let dot = 0;
        for (let k = 0; k < t; k++) dot += want[r * t + k] * gy[r * t + k];
        for (let k = 0; k < t; k++) wantG.push(want[r * t + k] * (gy[r * t + k] - dot));
      }
      assertClose(`softmaxGrad t=${t}`, gg, wantG, 1e-6, 1e-5);
    }
  }
});

each("rmsNorm (+ backward) and layerNorm (rtol 1e-5)", async (be) => {
  for (const [rows, cols] of [[1, 1], [7, 33], [5, 129], [3, 1000]]) {
    const x = rng.uniformArray(rows * cols, -2, 2);
    const w = rng.uniformArray(cols, 0.5, 1.5);
    const b = rng.uniformArray(cols);
    const eps = 1e-5;
    const rms: number[] = [];
    const ln: number[] = [];
    const grad: number[] = [];
    const gy = rng.uniformArray(rows * cols);
    for (let r = 0; r < rows; r++) {
      const row = Array.from(x.slice(r * cols, (r + 1) * cols));
      const ms = row.reduce((a, v) => a + v * v, 0) / cols;
      const inv = 1 / Math.sqrt(ms + eps);
      rms.push(...row.map((v, c) => v * inv * w[c]));
      const mean = row.reduce((a, v) => a + v, 0) / cols;
      const varc = row.reduce((a, v) => a + (v - mean) ** 2, 0) / cols;
      ln.push(...row.map((v, c) => ((v - mean) / Math.sqrt(varc + eps)) * w[c] + b[c]));
      // Backward by central differences of the scalar Σ gy·y.
      const f = (xr: number[]) => {
        const m2 = xr.reduce((a, v) => a + v * v, 0) / cols;
        const iv = 1 / Math.sqrt(m2 + eps);
        return xr.reduce((a, v, c) => a + gy[r * cols + c] * v * iv * w[c], 0);
      };
      for (let c = 0; c < cols; c++) {
        const h = 1e-6;
        const p = [...row];
        const m = [...row];
        p[c] += h;
        m[c] -= h;
        grad.push((f(p) - f(m)) / (2 * h));
      }
    }
    const tx = be.tensor(x, [rows, cols]);
    const tw = be.tensor(w, [cols]);
    assertClose(`rmsNorm ${rows}x${cols}`, await host(be.rmsNorm(tx, tw, eps)), rms, 1e-6, 1e-5);
    assertClose(
      `layerNorm ${rows}x${cols}`,
      await host(be.layerNorm(tx, tw, be.tensor(b, [cols]), eps)),
      ln,
      2e-6,
      1e-5,
    );
    assertClose(
      `rmsNormGrad ${rows}x${cols}`,
      await host(be.rmsNormGrad(tx, tw, eps, be.tensor(gy, [rows, cols]))),
      grad,
      1e-4,
      1e-3,
    );
  }
});

each("ropeTables (1-D and M-RoPE sections) and rotary (atol 2e-5)", async (be) => {
  for (const [t, h, d] of [[1, 1, 2], [7, 3, 8], [33, 2, 16]]) {
    const half = d / 2;
    const inv = Array.from({ length: half }, (_, i) => 1 / 10000 ** ((2 * i) / d));
    const pos1 = Array.from({ length: t }, (_, i) => i + 3);
    const [c1, s1] = be.ropeTables(be.tensor(pos1, [1, t], "i32"), be.tensor(inv, [half]), [half]);
    const wantC = [];
    const wantS = [];
    for (let i = 0; i < t; i++) {
      for (let f = 0; f < half; f++) {
        wantC.push(Math.cos(Math.fround(pos1[i] * Math.fround(inv[f]))));
        wantS.push(Math.sin(Math.fround(pos1[i] * Math.fround(inv[f]))));
      }
    }
    assertClose(`ropeTables cos t=${t} d=${d}`, await c1.read(), wantC, 2e-5, 0);
    assertClose(`ropeTables sin t=${t} d=${d}`, await s1.read(), wantS, 2e-5, 0);
    // M-RoPE: three position rows, sections over the frequencies.
    if (half >= 3) {
      const sec = [Math.floor(half / 3), Math.floor(half / 3), half - 2 * Math.floor(half / 3)];
      const pos3 = Array.from({ length: 3 * t }, () => rng.int(50));
      const [c3] = be.ropeTables(be.tensor(pos3, [3, t], "i32"), be.tensor(inv, [half]), sec);
      const want3 = [];
      for (let i = 0; i < t; i++) {
        for (let f = 0; f < half; f++) {
          const ax = f < sec[0] ? 0 : f < sec[0] + sec[1] ? 1 : 2;
          want3.push(Math.cos(pos3[ax * t + i] * inv[f]));
        }
      }
      assertClose(`ropeTables M-RoPE t=${t}`, await c3.read(), want3, 2e-5, 0);
    }
    const x = rng.uniformArray(t * h * d);
    const got = await host(be.rotary(be.tensor(x, [t, h, d]), c1, s1));
    const want: number[] = [];
    for (let i = 0; i < t; i++) {
      for (let hh = 0; hh < h; hh++) {
        const base = (i * h + hh) * d;
        const o = new Array(d);
        for (let f = 0; f < half; f++) {
          const c = wantC[i * half + f];
          const s = wantS[i * half + f];
          o[f] = x[base + f] * c - x[base + half + f] * s;
          o[half + f] = x[base + half + f] * c + x[base + f] * s;
        }
        want.push(...o);
      }
    }
    assertClose(`rotary ${t}x${h}x${d}`, got, want, 2e-5, 0);
  }
});

// ---- quantization ---------------------------------------------------------------------------------

const SPECS = [
  { bits: 8, symmetric: true, groupSize: 0 },
  { bits: 4, symmetric: true, groupSize: 0 },
  { bits: 6, symmetric: true, groupSize: 0 },
  { bits: 4, symmetric: false, groupSize: 0 },
  { bits: 4, symmetric: false, groupSize: 32 },
  { bits: 8, symmetric: false, groupSize: 16 },
];

each("fakeQuant and quantize codes match the §5.1 reference (flips only at rounding ties)", async (be) => {
  for (const spec of SPECS) {
    for (const [rows, cols] of [[1, 32], [7, 64], [33, 96], [5, 160]]) {
      const x = rng.uniformArray(rows * cols, -3, 3);
      if (rows > 1) x.fill(0, 0, cols); // an all-zero row quantizes to exactly 0
      const tx = be.tensor(x, [rows, cols]);
      const fq = await host(be.fakeQuant(tx, spec));
      const qz = be.quantize(tx, spec, spec.bits <= 4);
      const codes = await host(qz.q);
      const scales = await host(qz.scale);
      const zeros = qz.zero ? await host(qz.zero) : undefined;
      const g = spec.groupSize || cols;
      const gpr = cols / g;
      let flips = 0;
      for (let r = 0; r < rows; r++) {
        for (let gi = 0; gi < gpr; gi++) {
          const off = r * cols + gi * g;
          const ref = refQuantGroup(x.slice(off, off + g), spec.bits, spec.symmetric);
          const tag = `${JSON.stringify(spec)} ${rows}x${cols} row ${r} group ${gi}`;
          assertClose(`quantize scale ${tag}`, [scales[r * gpr + gi]], [ref.step], 0, 2e-7);
          const shift = spec.symmetric ? 0 : 2 ** (spec.bits - 1);
          if (zeros) assertEquals(zeros[r * gpr + gi], ref.zero - shift, `zero point ${tag}`);
          for (let i = 0; i < g; i++) {
            const want = ref.levels[i];
            const gotLevel = codes[off + i] + shift;
            const gotVal = fq[off + i];
            const wantVal = (spec.symmetric ? want : want - ref.zero) * ref.step;
            if (gotLevel !== want || Math.abs(gotVal - wantVal) > 1e-6 * Math.max(1, Math.abs(wantVal))) {
              assert(ref.ties[i] && Math.abs(gotLevel - want) === 1, `${tag} elem ${i}: level ${gotLevel} vs ${want}`);
              flips++;
            }
          }
        }
      }
      assert(flips <= 2, `too many tie flips (${flips}) for ${JSON.stringify(spec)}`);
      const back = await host(be.dequantize(be.quantize(tx, spec, spec.bits <= 4), spec.groupSize));
      assertClose(`dequantize ${JSON.stringify(spec)}`, back, fq, 1e-6, 1e-6);
    }
  }
});

each("fakeQuantGrad: straight-through estimator with the step-size term (rtol 1e-5)", async (be) => {
  for (const spec of [SPECS[0], SPECS[1], SPECS[3], SPECS[4]]) {
    const rows = 6;
    const cols = 64;
    const x = rng.uniformArray(rows * cols, -2, 2);
    const gy = rng.uniformArray(rows * cols);
    const got = await host(be.fakeQuantGrad(be.tensor(x, [rows, cols]), be.tensor(gy, [rows, cols]), spec));
    const g = spec.groupSize || cols;
    const want = new Array(rows * cols).fill(0);
    for (let off = 0; off < rows * cols; off += g) {
      const xs = Array.from(x.slice(off, off + g));
      const ref = refQuantGroup(xs, spec.bits, spec.symmetric);
      const qmax = spec.symmetric ? 2 ** (spec.bits - 1) - 1 : 2 ** spec.bits - 1;
      let gStep = 0;
      for (let i = 0; i < g; i++) {
        const t = evenRound(xs[i] / ref.step) + ref.zero;
        const inRange = spec.symmetric ? Math.abs(t) <= qmax : t >= 0 && t <= qmax;
        want[off + i] = inRange ? gy[off + i] : 0;
        gStep += gy[off + i] *
          ((spec.symmetric ? ref.levels[i] : ref.levels[i] - ref.zero) - (inRange ? xs[i] / ref.step : 0));
      }
      const hi = xs.indexOf(Math.max(...xs));
      const lo = xs.indexOf(Math.min(...xs));
      if (spec.symmetric) {
        const a = Math.abs(xs[hi]) >= Math.abs(xs[lo]) ? hi : lo;
        const first = xs.findIndex((v) => Math.abs(v) === Math.abs(xs[a]));
        want[off + first] += Math.sign(xs[first]) * gStep / qmax;
      } else {
        want[off + hi] += gStep / qmax;
        want[off + lo] -= gStep / qmax;
      }
    }
    assertClose(`fakeQuantGrad ${JSON.stringify(spec)}`, got, want, 1e-5, 1e-4);
  }
});

each("int8Matmul is bit-exact (i8 and packed int4 weights, bias, odd sizes)", async (be) => {
  for (const [m, n, k] of [[1, 1, 1], [7, 33, 13], [33, 7, 129], [64, 48, 200], [5, 9, 4096]]) {
    for (const wbits of [8, 4]) {
      const a = Array.from({ length: m * k }, () => rng.int(255) - 127);
      const b = Array.from({ length: n * k }, () => (wbits === 8 ? rng.int(255) - 127 : rng.int(15) - 7));
      const sa = rng.uniformArray(m, 0.001, 0.1);
      const sb = rng.uniformArray(n, 0.001, 0.1);
      const bias = rng.uniformArray(n);
      const f = Math.fround;
      const want: number[] = [];
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let acc = 0;
          for (let t = 0; t < k; t++) acc += a[i * k + t] * b[j * k + t];
          want.push(f(f(f(f(acc) * sa[i]) * sb[j]) + bias[j]));
        }
      }
      const got = await host(
        be.int8Matmul(
          be.tensor(a, [m, k], "i8"),
          be.tensor(sa, [m]),
          be.tensor(b, [n, k], wbits === 8 ? "i8" : "int4"),
          be.tensor(sb, [n]),
          be.tensor(bias, [n]),
        ),
      );
      assertEquals(got, want, `int8Matmul ${m}x${k}·${n}x${k} w${wbits}`);
    }
  }
});

await gpuTest(
  "int8Matmul: every WebGPU kernel variant is bit-exact (rows, word-major, f32-fma; K up to 4096)",
  async (gpu) => {
    for (const layout of ["rows", "word-major", "f32-fma"] as const) {
      const be = new WebGPUBackend(gpu.ctx, { int8Layout: layout });
      for (const [m, n, k] of [[1, 1, 16], [7, 33, 64], [33, 9, 1040], [5, 6, 4096], [64, 48, 208], [3, 5, 13]]) {
        // Extreme values: |a·b| sums near the f32-exact limit within one 1024-run.
        const a = Array.from({ length: m * k }, (_, i) => (i % 3 === 0 ? -127 : rng.int(255) - 127));
        const b = Array.from({ length: n * k }, (_, i) => (i % 3 === 0 ? 127 : rng.int(255) - 127));
        const sa = rng.uniformArray(m, 0.001, 0.1);
        const sb = rng.uniformArray(n, 0.001, 0.1);
        const f = Math.fround;
        const want: number[] = [];
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let acc = 0;
            for (let t = 0; t < k; t++) acc += a[i * k + t] * b[j * k + t];
            want.push(f(f(f(acc) * sa[i]) * sb[j]));
          }
        }
        const got = await host(
          be.int8Matmul(be.tensor(a, [m, k], "i8"), be.tensor(sa, [m]), be.tensor(b, [n, k], "i8"), be.tensor(sb, [n])),
        );
        assertEquals(got, want, `int8Matmul ${layout} ${m}x${k}·${n}x${k}`);
      }
    }
  },
);
