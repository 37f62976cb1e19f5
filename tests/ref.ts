/**
 * Float64 reference implementations used by the kernel tests. Written independently of the CPU
 * backend (plain loops, different formulations where possible) so that both backends are checked
 * against the same third implementation.
 */

/** Row-major matmul of [b, m, k] × [b, k, n] (batch broadcast when one side has batch 1). */
export function refMatmul(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  batch: number,
  m: number,
  n: number,
  k: number,
  opts: { transA?: boolean; transB?: boolean; bcastA?: boolean; bcastB?: boolean } = {},
): Float64Array {
  const out = new Float64Array(batch * m * n);
  for (let bt = 0; bt < batch; bt++) {
    const ao = opts.bcastA ? 0 : bt * m * k;
    const bo = opts.bcastB ? 0 : bt * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let t = 0; t < k; t++) {
          const av = opts.transA ? a[ao + t * m + i] : a[ao + i * k + t];
          const bv = opts.transB ? b[bo + j * k + t] : b[bo + t * n + j];
          s += av * bv;
        }
        out[(bt * m + i) * n + j] = s;
      }
    }
  }
  return out;
}

/** erf by composite Simpson integration of 2/√π·exp(−t²) (independent of the series used in core). */
export function refErf(x: number): number {
  const steps = 2000;
  const h = x / steps;
  let s = 1 + Math.exp(-x * x);
  for (let i = 1; i < steps; i++) {
    const t = i * h;
    s += (i % 2 ? 4 : 2) * Math.exp(-t * t);
  }
  return (2 / Math.sqrt(Math.PI)) * (h / 3) * s;
}

const sig = (v: number) => 1 / (1 + Math.exp(-v));

/** Reference unary functions. */
export const REF_UNARY: Record<string, (v: number) => number> = {
  neg: (v) => -v,
  abs: (v) => Math.abs(v),
  sign: (v) => Math.sign(v),
  exp: (v) => Math.exp(v),
  log: (v) => Math.log(v),
  sqrt: (v) => Math.sqrt(v),
  rsqrt: (v) => 1 / Math.sqrt(v),
  square: (v) => v * v,
  recip: (v) => 1 / v,
  tanh: (v) => (Math.exp(v) - Math.exp(-v)) / (Math.exp(v) + Math.exp(-v)),
  sigmoid: sig,
  relu: (v) => Math.max(v, 0),
  silu: (v) => v * sig(v),
  gelu: (v) => 0.5 * v * (1 + refErf(v / Math.SQRT2)),
  gelu_tanh: (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))),
  quick_gelu: (v) => v * sig(1.702 * v),
};

/** Central-difference derivative of a reference unary function. */
export function refDeriv(op: string, v: number): number {
  const f = REF_UNARY[op];
  const h = 1e-5 * Math.max(1, Math.abs(v));
  return (f(v + h) - f(v - h)) / (2 * h);
}

/** Relative Frobenius error ‖x − r‖ / ‖r‖ (absolute when ‖r‖ = 0). */
export function relFro(x: ArrayLike<number>, r: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < r.length; i++) {
    num += (x[i] - r[i]) ** 2;
    den += r[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Largest |x − r| / (atol + rtol·|r|) over all elements, and where it happened. */
export function worst(x: ArrayLike<number>, r: ArrayLike<number>, atol: number, rtol: number): {
  ratio: number;
  index: number;
  got: number;
  want: number;
} {
  let ratio = 0;
  let index = -1;
  for (let i = 0; i < r.length; i++) {
    const diff = Math.abs(x[i] - r[i]);
    const e = diff === 0 ? 0 : diff / (atol + rtol * Math.abs(r[i]));
    if (!(e <= ratio)) {
      ratio = e;
      index = i;
    }
  }
  return { ratio, index, got: x[index], want: r[index] };
}

/** Asserts elementwise closeness with a message naming the op, shape and error. */
export function assertClose(
  what: string,
  x: ArrayLike<number>,
  r: ArrayLike<number>,
  atol: number,
  rtol: number,
): void {
  if (x.length !== r.length) throw new Error(`${what}: length ${x.length} != ${r.length}`);
  const w = worst(x, r, atol, rtol);
  if (w.ratio > 1 || Number.isNaN(w.ratio)) {
    throw new Error(
      `${what}: element ${w.index} is ${w.got}, expected ${w.want} (|err| = ${
        Math.abs(w.got - w.want)
      } > atol ${atol} + rtol ${rtol}·|ref|)`,
    );
  }
}

/** Reference quantizer in float64 with explicit f32 rounding of the step (mirrors §5.1). */
export function refQuantGroup(
  xs: ArrayLike<number>,
  bits: number,
  symmetric: boolean,
): { step: number; zero: number; levels: number[]; ties: boolean[] } {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < xs.length; i++) {
    lo = Math.min(lo, xs[i]);
    hi = Math.max(hi, xs[i]);
  }
  const f = Math.fround;
  const clampStep = (v: number) => Math.min(Math.max(v, 1e-5), 1e4);
  let step: number;
  let zero = 0;
  let qlo: number;
  let qhi: number;
  if (symmetric) {
    const qmax = 2 ** (bits - 1) - 1;
    step = f(clampStep(f(Math.max(Math.abs(lo), Math.abs(hi)) / qmax)));
    qlo = -qmax;
    qhi = qmax;
  } else {
    const qmax = 2 ** bits - 1;
    step = f(clampStep(f((hi - lo) / qmax)));
    const zr = Math.min(Math.max(f(-lo / step), -1e4), 1e4);
    zero = evenRound(zr);
    qlo = 0;
    qhi = qmax;
  }
  const levels: number[] = [];
  const ties: boolean[] = [];
  for (let i = 0; i < xs.length; i++) {
    const t = xs[i] / step;
    const frac = Math.abs(t - Math.floor(t) - 0.5);
    ties.push(frac < 1e-4);
    const u = Math.min(Math.max(evenRound(t) + zero, qlo), qhi);
    levels.push(u);
  }
  return { step, zero, levels, ties };
}

/** Round half to even, written independently of core's helper. */
export function evenRound(v: number): number {
  const fl = Math.floor(v);
  const d = v - fl;
  if (d < 0.5) return fl;
  if (d > 0.5) return fl + 1;
  return fl % 2 === 0 ? fl : fl + 1;
}
