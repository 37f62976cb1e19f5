/**
 * Quantization kernels (masquant-algorithm §5.1): group parameters, fake quantization and its
 * straight-through backward, integer codes (i8 / packed int4), dequantization.
 *
 * Group g of a tensor with `cols` columns and `gpr` groups per row covers row g / gpr, columns
 * [(g % gpr)·len, (g % gpr + 1)·len) with len = cols / gpr.
 */
import { LINEAR_ID, ROW_ID, WG1D } from "./common.ts";

const SPEC = /* wgsl */ `
const STEP_MIN: f32 = 1e-5;
const STEP_MAX: f32 = 1e4;
// Group parameters: x = step, y = zero point (unsigned grid; 0 when symmetric), z = 1 when the step was not clamped.
fn params_of(lo: f32, hi: f32) -> vec4<f32> {
  if (p.sym != 0u) {
    let m = max(abs(lo), abs(hi));
    let raw = m / p.qmax;
    return vec4<f32>(clamp(raw, STEP_MIN, STEP_MAX), 0.0, select(0.0, 1.0, raw >= STEP_MIN && raw <= STEP_MAX), 0.0);
  }
  let raw = (hi - lo) / p.qmax;
  let step = clamp(raw, STEP_MIN, STEP_MAX);
  let z = round(clamp(-lo / step, -1e4, 1e4));
  return vec4<f32>(step, z, select(0.0, 1.0, raw >= STEP_MIN && raw <= STEP_MAX), 0.0);
}
// Clamped level of v and whether clamping was inactive (w = 1).
fn level_of(v: f32, gp: vec4<f32>) -> vec2<f32> {
  var t = v / gp.x;
  if (p.do_round != 0u) { t = round(t); }
  if (p.sym != 0u) {
    if (t > p.qmax) { return vec2<f32>(p.qmax, 0.0); }
    if (t < -p.qmax) { return vec2<f32>(-p.qmax, 0.0); }
    return vec2<f32>(t, 1.0);
  }
  let u = t + gp.y;
  if (u > p.qmax) { return vec2<f32>(p.qmax, 0.0); }
  if (u < 0.0) { return vec2<f32>(0.0, 0.0); }
  return vec2<f32>(u, 1.0);
}
fn dequant(level: f32, gp: vec4<f32>) -> f32 {
  if (p.sym != 0u) { return level * gp.x; }
  return (level - gp.y) * gp.x;
}`;

/** Common uniform block: qmax = 2^(b−1)−1 (symmetric) or 2^b−1 (asymmetric). */
const PARAMS = /* wgsl */ `
struct P { groups: u32, len: u32, cols: u32, gpr: u32, off_x: u32, off_y: u32, off_g: u32, sym: u32,
  qmax: f32, do_round: u32, wpr: u32, shift: i32, g0: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: P;`;

const RED = /* wgsl */ `
var<workgroup> rlo: array<f32, 64>;
var<workgroup> rhi: array<f32, 64>;
${ROW_ID}
fn elem(g: u32, j: u32) -> u32 { return p.off_x + (g / p.gpr) * p.cols + (g % p.gpr) * p.len + j; }
fn min_max(g: u32, live: bool, l: u32) -> vec2<f32> {
  var lo = 3.4028234663852886e38;
  var hi = -3.4028234663852886e38;
  if (live) {
    for (var j = l; j < p.len; j += 64u) { let v = x[elem(g, j)]; lo = min(lo, v); hi = max(hi, v); }
  }
  rlo[l] = lo;
  rhi[l] = hi;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s = s >> 1u) {
    if (l < s) { rlo[l] = min(rlo[l], rlo[l + s]); rhi[l] = max(rhi[l], rhi[l + s]); }
    workgroupBarrier();
  }
  let r = vec2<f32>(rlo[0], rhi[0]);
  workgroupBarrier();
  return r;
}`;

/** Per-group parameters (one workgroup per group) into gp[g] = (step, zero, stepFree, 0). */
export const QUANT_PARAMS = /* wgsl */ `
${PARAMS}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> gpo: array<vec4<f32>>;
${SPEC}
${RED}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let g = row_id(wid, nwg);
  let live = g < p.groups;
  let mm = min_max(g, live, lid.x);
  if (live && lid.x == 0u) { gpo[p.g0 + g] = params_of(mm.x, mm.y); }
}`;

/** Fake quantization of every element given the group parameters. */
export const FAKE_QUANT = /* wgsl */ `
${PARAMS}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gp: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
${SPEC}
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  let row = i / p.cols;
  if (row >= p.groups / p.gpr) { return; }
  let g = row * p.gpr + (i % p.cols) / p.len;
  let q = gp[p.off_g + g];
  y[p.off_y + i] = dequant(level_of(x[p.off_x + i], q).x, q);
}`;

/**
 * Straight-through backward, one workgroup per group: gx = gy·[in range], plus the step-size term
 * Σ gy·(level − z − [in range]·x/Δ) / qmax routed to the argmax|x| (symmetric) or to argmax / −argmin
 * (asymmetric) element when the step was not clamped. Ties go to the first index.
 */
export const FAKE_QUANT_GRAD = /* wgsl */ `
${PARAMS}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> gx: array<f32>;
${SPEC}
${RED}
var<workgroup> rsum: array<f32, 64>;
var<workgroup> ridx: array<vec3<u32>, 64>;
fn better_max(a: f32, ia: u32, b: f32, ib: u32) -> bool { return b > a || (b == a && ib < ia); }
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let g = row_id(wid, nwg);
  let live = g < p.groups;
  let l = lid.x;
  let mm = min_max(g, live, l);
  let q = params_of(mm.x, mm.y);
  var s = 0.0;
  var iabs = 0xffffffffu;
  var imax = 0xffffffffu;
  var imin = 0xffffffffu;
  if (live) {
    for (var j = l; j < p.len; j += 64u) {
      let e = elem(g, j);
      let v = x[e];
      let lv = level_of(v, q);
      let gv = gy[e - p.off_x + p.off_g];
      gx[e - p.off_x + p.off_y] = gv * lv.y;
      s += gv * (lv.x - q.y - lv.y * v / q.x);
      if (imax == 0xffffffffu && v == mm.y) { imax = j; }
      if (imin == 0xffffffffu && v == mm.x) { imin = j; }
      if (iabs == 0xffffffffu && abs(v) == max(abs(mm.x), abs(mm.y))) { iabs = j; }
    }
  }
  rsum[l] = s;
  ridx[l] = vec3<u32>(iabs, imax, imin);
  workgroupBarrier();
  for (var st = 32u; st > 0u; st = st >> 1u) {
    if (l < st) {
      rsum[l] = rsum[l] + rsum[l + st];
      ridx[l] = min(ridx[l], ridx[l + st]);
    }
    workgroupBarrier();
  }
  if (live && l == 0u && q.z > 0.0 && p.len > 0u) {
    let gr = rsum[0] / p.qmax;
    let ix = ridx[0];
    if (p.sym != 0u) {
      let e = elem(g, ix.x);
      gx[e - p.off_x + p.off_y] += sign(x[e]) * gr;
    } else {
      let ea = elem(g, ix.y);
      gx[ea - p.off_x + p.off_y] += gr;
      let eb = elem(g, ix.z);
      gx[eb - p.off_x + p.off_y] -= gr;
    }
  }
}`;

/**
 * Integer codes, one invocation per output word of `per` codes (4 for i8, 8 for int4), rows padded to
 * whole words. Codes are levels shifted by p.shift (−2^(b−1) for asymmetric grids, 0 for symmetric).
 */
export function quantCodesKernel(per: 4 | 8): string {
  const put = per === 4 ? "word |= (u32(c) & 255u) << (8u * j);" : "word |= (u32(c + 8) & 15u) << (4u * j);";
  return /* wgsl */ `
${PARAMS}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gp: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;
${SPEC}
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  let row = i / p.wpr;
  if (row >= p.groups / p.gpr) { return; }
  let w = i % p.wpr;
  var word = 0u;
  for (var j = 0u; j < ${per}u; j++) {
    let col = w * ${per}u + j;
    if (col < p.cols) {
      let q = gp[p.off_g + row * p.gpr + col / p.len];
      let c = i32(level_of(x[p.off_x + row * p.cols + col], q).x) + p.shift;
      ${put}
    }
  }
  y[p.off_y + i] = word;
}`;
}

/** Splits group parameters into the f32 scale [groups] and i32 zero [groups] tensors (shifted). */
export const QUANT_SPLIT = /* wgsl */ `
${PARAMS}
@group(0) @binding(1) var<storage, read> gp: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> scale: array<f32>;
@group(0) @binding(3) var<storage, read_write> zero: array<i32>;
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let g = linear_id(gid, nwg);
  if (g >= p.groups) { return; }
  scale[g] = gp[g].x;
  zero[g] = i32(gp[g].y) + p.shift;
}`;

/** (q − zero)·scale from packed codes (i8: per = 4, int4: per = 8); one invocation per element. */
export function dequantKernel(per: 4 | 8): string {
  const read = per === 4
    ? "(bitcast<i32>(q[p.off_x + row * p.wpr + col / 4u] << (24u - 8u * (col % 4u))) >> 24u)"
    : "(i32((q[p.off_x + row * p.wpr + col / 8u] >> (4u * (col % 8u))) & 15u) - 8)";
  return /* wgsl */ `
${PARAMS}
@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> zero: array<i32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  let row = i / p.cols;
  if (row >= p.groups / p.gpr) { return; }
  let col = i % p.cols;
  let g = row * p.gpr + col / p.len;
  let c = ${read};
  // p.sym = 1: symmetric codes, no zero point (the zero binding is then a dummy).
  y[p.off_y + i] = f32(c - zero[g] * i32(1u - p.sym)) * scale[g];
}`;
}
