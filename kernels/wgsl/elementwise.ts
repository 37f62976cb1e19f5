/** Elementwise kernels: unary functions and their derivatives, broadcast binary ops, fills, affine maps. */
import type { BinaryOp, UnaryOp } from "@masquant/core";
import { LINEAR_ID, MATH, WG1D } from "./common.ts";

/** WGSL expression of f(v) for a unary op (`p.a`, `p.b` are the scalar parameters). */
const UNARY: Record<UnaryOp | "affine" | "pow" | "clamp", string> = {
  neg: "-v",
  abs: "abs(v)",
  sign: "sign(v)",
  exp: "exp(v)",
  log: "log(v)",
  sqrt: "sqrt(v)",
  rsqrt: "inverseSqrt(v)",
  square: "v * v",
  recip: "1.0 / v",
  tanh: "tanh_f(v)",
  sigmoid: "sigmoid_f(v)",
  relu: "max(v, 0.0)",
  silu: "v * sigmoid_f(v)",
  gelu: "0.5 * v * (1.0 + erf_f(v * 0.7071067811865476))",
  gelu_tanh: "0.5 * v * (1.0 + tanh_f(0.7978845608028654 * (v + 0.044715 * v * v * v)))",
  quick_gelu: "v * sigmoid_f(1.702 * v)",
  affine: "v * p.a + p.b",
  pow: "select(0.0, sign(v) * pow(abs(v), p.a), abs(v) > 0.0)",
  clamp: "min(max(v, p.a), p.b)",
};

/** WGSL expression of f′(v) for a unary op. */
const DERIV: Record<UnaryOp, string> = {
  neg: "-1.0",
  abs: "sign(v)",
  sign: "0.0",
  exp: "exp(v)",
  log: "1.0 / v",
  sqrt: "0.5 / sqrt(v)",
  rsqrt: "-0.5 / (v * sqrt(v))",
  square: "2.0 * v",
  recip: "-1.0 / (v * v)",
  tanh: "1.0 - tanh_f(v) * tanh_f(v)",
  sigmoid: "sigmoid_f(v) * (1.0 - sigmoid_f(v))",
  relu: "select(0.0, 1.0, v > 0.0)",
  silu: "sigmoid_f(v) * (1.0 + v * (1.0 - sigmoid_f(v)))",
  gelu: "0.5 * (1.0 + erf_f(v * 0.7071067811865476)) + v * 0.3989422804014327 * exp(-0.5 * v * v)",
  gelu_tanh: `gelu_tanh_grad(v)`,
  quick_gelu: "sigmoid_f(1.702 * v) + 1.702 * v * sigmoid_f(1.702 * v) * (1.0 - sigmoid_f(1.702 * v))",
};

const GELU_TANH_GRAD = /* wgsl */ `
fn gelu_tanh_grad(v: f32) -> f32 {
  let c = 0.7978845608028654;
  let t = tanh_f(c * (v + 0.044715 * v * v * v));
  return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * v * v);
}`;

const PARAMS_1D = `struct P { n: u32, off_x: u32, off_y: u32, off_g: u32, a: f32, b: f32 }`;

/** y = f(x) (or y = gy·f′(x) when `grad`), with element offsets into the bindings. */
export function unaryKernel(op: UnaryOp | "affine" | "pow" | "clamp", grad: boolean): string {
  const expr = grad ? DERIV[op as UnaryOp] : UNARY[op];
  return /* wgsl */ `
${PARAMS_1D}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
${grad ? "@group(0) @binding(3) var<storage, read> g: array<f32>;" : ""}
${MATH}
${GELU_TANH_GRAD}
${LINEAR_ID}
fn f(v: f32) -> f32 { return ${expr}; }
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  if (i >= p.n) { return; }
  ${grad ? "y[p.off_y + i] = g[p.off_g + i] * f(x[p.off_x + i]);" : "y[p.off_y + i] = f(x[p.off_x + i]);"}
}`;
}

const BINARY: Record<BinaryOp, string> = {
  add: "u + v",
  sub: "u - v",
  mul: "u * v",
  div: "u / v",
  maximum: "max(u, v)",
  minimum: "min(u, v)",
};

/**
 * Broadcast binary op. Modes: "same" (both operands have the output's shape), "scalar" (b has one
 * element), "general" (strided indexing, up to 8 axes).
 */
export function binaryKernel(op: BinaryOp, mode: "same" | "scalar" | "general"): string {
  const idx = mode === "general"
    ? /* wgsl */ `
  var rem = i;
  var ia = 0u;
  var ib = 0u;
  for (var ax = i32(p.rank) - 1; ax >= 0; ax--) {
    let d = p.dims[ax / 4][ax % 4];
    let c = rem % d;
    rem = rem / d;
    ia += c * p.sa[ax / 4][ax % 4];
    ib += c * p.sb[ax / 4][ax % 4];
  }`
    : mode === "scalar"
    ? "let ia = i; let ib = 0u;"
    : "let ia = i; let ib = i;";
  return /* wgsl */ `
struct P { n: u32, off_a: u32, off_b: u32, off_y: u32, rank: u32, _p0: u32, _p1: u32, _p2: u32,
  dims: array<vec4<u32>, 2>, sa: array<vec4<u32>, 2>, sb: array<vec4<u32>, 2> }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  if (i >= p.n) { return; }
  ${idx}
  let u = a[p.off_a + ia];
  let v = b[p.off_b + ib];
  y[p.off_y + i] = ${BINARY[op]};
}`;
}

/** Fills 32-bit words with a bit pattern. */
export const FILL = /* wgsl */ `
struct P { n: u32, off: u32, bits: u32, _p: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  if (i >= p.n) { return; }
  y[p.off + i] = p.bits;
}`;
