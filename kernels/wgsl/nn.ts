/** Row-wise transformer kernels: masked softmax (+ backward), RMSNorm (+ backward), LayerNorm, rotary. */
import { LINEAR_ID, ROW_ID, WG1D } from "./common.ts";

const ROW_PRELUDE = /* wgsl */ `
var<workgroup> red: array<f32, 64>;
${ROW_ID}
fn wg_sum(v: f32, l: u32) -> f32 {
  red[l] = v;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s = s >> 1u) {
    if (l < s) { red[l] = red[l] + red[l + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
fn wg_max(v: f32, l: u32) -> f32 {
  red[l] = v;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s = s >> 1u) {
    if (l < s) { red[l] = max(red[l], red[l + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}`;

/**
 * Softmax over rows of length `cols`; row r is query r mod cols. Causal: keys k ≤ q. Segments: keys
 * with seg[k] == seg[q]. Masked entries and fully masked rows are 0.
 */
export const SOFTMAX = /* wgsl */ `
struct P { rows: u32, cols: u32, off_x: u32, off_y: u32, causal: u32, use_seg: u32, off_s: u32, row0: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> seg: array<i32>;
${ROW_PRELUDE}
fn allowed(k: u32, q: u32) -> bool {
  if (p.causal != 0u && k > q) { return false; }
  if (p.use_seg != 0u && seg[p.off_s + k] != seg[p.off_s + q]) { return false; }
  return true;
}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let r = row_id(wid, nwg);
  let live = r < p.rows;
  let l = lid.x;
  let q = (p.row0 + r) % p.cols;
  let bx = p.off_x + r * p.cols;
  let by = p.off_y + r * p.cols;
  var m = -3.4028234663852886e38;
  if (live) {
    for (var k = l; k < p.cols; k += 64u) {
      if (allowed(k, q)) { m = max(m, x[bx + k]); }
    }
  }
  let mx = wg_max(m, l);
  var s = 0.0;
  if (live) {
    for (var k = l; k < p.cols; k += 64u) {
      if (allowed(k, q)) { s += exp(x[bx + k] - mx); }
    }
  }
  let tot = wg_sum(s, l);
  if (live) {
    for (var k = l; k < p.cols; k += 64u) {
      var v = 0.0;
      if (allowed(k, q) && tot > 0.0) { v = exp(x[bx + k] - mx) / tot; }
      y[by + k] = v;
    }
  }
}`;

/** Softmax backward: gx = y ⊙ (gy − Σ gy⊙y) per row. */
export const SOFTMAX_GRAD = /* wgsl */ `
struct P { rows: u32, cols: u32, off_y: u32, off_g: u32, off_o: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
${ROW_PRELUDE}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let r = row_id(wid, nwg);
  let live = r < p.rows;
  let l = lid.x;
  var d = 0.0;
  if (live) {
    for (var k = l; k < p.cols; k += 64u) { d += y[p.off_y + r * p.cols + k] * g[p.off_g + r * p.cols + k]; }
  }
  let dot = wg_sum(d, l);
  if (live) {
    for (var k = l; k < p.cols; k += 64u) {
      let i = r * p.cols + k;
      o[p.off_o + i] = y[p.off_y + i] * (g[p.off_g + i] - dot);
    }
  }
}`;

/** RMSNorm and LayerNorm forward (mode chosen at build time), optional weight and bias. */
export function normKernel(kind: "rms" | "layer"): string {
  return /* wgsl */ `
struct P { rows: u32, cols: u32, off_x: u32, off_y: u32, eps: f32, use_w: u32, use_b: u32, _p: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
${ROW_PRELUDE}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let r = row_id(wid, nwg);
  let live = r < p.rows;
  let l = lid.x;
  let bx = p.off_x + r * p.cols;
  var mean = 0.0;
  ${
    kind === "layer"
      ? `var s0 = 0.0;
  if (live) { for (var k = l; k < p.cols; k += 64u) { s0 += x[bx + k]; } }
  mean = wg_sum(s0, l) / f32(p.cols);`
      : ""
  }
  var s = 0.0;
  if (live) {
    for (var k = l; k < p.cols; k += 64u) { let v = x[bx + k] - mean; s += v * v; }
  }
  let inv = inverseSqrt(wg_sum(s, l) / f32(p.cols) + p.eps);
  if (live) {
    for (var k = l; k < p.cols; k += 64u) {
      var v = (x[bx + k] - mean) * inv;
      if (p.use_w != 0u) { v = v * w[k]; }
      if (p.use_b != 0u) { v = v + bias[k]; }
      y[p.off_y + r * p.cols + k] = v;
    }
  }
}`;
}

/** RMSNorm backward with respect to x: gx = r·(gy⊙w) − r³·x·mean(gy⊙w⊙x). */
export const RMS_NORM_GRAD = /* wgsl */ `
struct P { rows: u32, cols: u32, off_x: u32, off_g: u32, off_o: u32, eps: f32, use_w: u32, _p: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;
${ROW_PRELUDE}
fn wt(k: u32) -> f32 { if (p.use_w != 0u) { return w[k]; } return 1.0; }
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let r = row_id(wid, nwg);
  let live = r < p.rows;
  let l = lid.x;
  var ss = 0.0;
  var dt = 0.0;
  if (live) {
    for (var k = l; k < p.cols; k += 64u) {
      let xv = x[p.off_x + r * p.cols + k];
      ss += xv * xv;
      dt += g[p.off_g + r * p.cols + k] * wt(k) * xv;
    }
  }
  let sum_sq = wg_sum(ss, l);
  let dot = wg_sum(dt, l);
  let inv = inverseSqrt(sum_sq / f32(p.cols) + p.eps);
  let kk = inv * inv * inv * dot / f32(p.cols);
  if (live) {
    for (var k = l; k < p.cols; k += 64u) {
      let i = r * p.cols + k;
      o[p.off_o + i] = inv * g[p.off_g + i] * wt(k) - kk * x[p.off_x + i];
    }
  }
}`;

/** cos/sin tables: angle(t, i) = pos[axis(i), t] · inv_freq[i] with the section → axis map in `axes`. */
export const ROPE_TABLES = /* wgsl */ `
struct P { t: u32, nf: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> pos: array<i32>;
@group(0) @binding(2) var<storage, read> inv: array<f32>;
@group(0) @binding(3) var<storage, read> axes: array<u32>;
@group(0) @binding(4) var<storage, read_write> cs: array<f32>;
@group(0) @binding(5) var<storage, read_write> sn: array<f32>;
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  if (i >= p.t * p.nf) { return; }
  let tok = i / p.nf;
  let f = i % p.nf;
  let ang = f32(pos[axes[f] * p.t + tok]) * inv[f];
  cs[i] = cos(ang);
  sn[i] = sin(ang);
}`;

/** Rotate-half rotary embedding of x [T, H, D]: one invocation per (t, h, i < D/2). */
export const ROTARY = /* wgsl */ `
struct P { t: u32, h: u32, half: u32, off_x: u32, off_y: u32, t0: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cs: array<f32>;
@group(0) @binding(3) var<storage, read> sn: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  if (i >= p.t * p.h * p.half) { return; }
  let f = i % p.half;
  let th = i / p.half;
  let tok = th / p.h;
  let base = th * 2u * p.half;
  let c = cs[(p.t0 + tok) * p.half + f];
  let s = sn[(p.t0 + tok) * p.half + f];
  let x1 = x[p.off_x + base + f];
  let x2 = x[p.off_x + base + p.half + f];
  y[p.off_y + base + f] = x1 * c - x2 * s;
  y[p.off_y + base + p.half + f] = x2 * c + x1 * s;
}`;
