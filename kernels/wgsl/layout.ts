/** Data-movement kernels on 32-bit elements: strided copies (transpose, slice, concat), row gather/scatter. */
import { LINEAR_ID, ROW_ID, WG1D } from "./common.ts";

/**
 * dst[dstOff + Σ c_k·ds_k] = src[srcOff + Σ c_k·ss_k] over an iteration shape of up to 8 axes
 * (c = multi-index of the linear invocation id). Covers transposes, slices and concat pieces.
 */
export const STRIDED_COPY = /* wgsl */ `
struct P { n: u32, off_s: u32, off_d: u32, rank: u32,
  dims: array<vec4<u32>, 2>, ss: array<vec4<u32>, 2>, ds: array<vec4<u32>, 2> }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  if (i >= p.n) { return; }
  var rem = i;
  var is = 0u;
  var id = 0u;
  for (var ax = i32(p.rank) - 1; ax >= 0; ax--) {
    let d = p.dims[ax / 4][ax % 4];
    let c = rem % d;
    rem = rem / d;
    is += c * p.ss[ax / 4][ax % 4];
    id += c * p.ds[ax / 4][ax % 4];
  }
  dst[p.off_d + id] = src[p.off_s + is];
}`;

/**
 * Row gather/scatter, one workgroup per listed row: for list entry r with table row t = idx[r] inside
 * [row0, row1): gather copies table row t to out row r; scatter copies rows row r to out row t.
 */
export function rowMoveKernel(kind: "gather" | "scatter"): string {
  const body = kind === "gather"
    ? "dst[p.off_d + r * p.cols + c] = src[p.off_s + (t - p.row0) * p.cols + c];"
    : "dst[p.off_d + (t - p.row0) * p.cols + c] = src[p.off_s + r * p.cols + c];";
  return /* wgsl */ `
struct P { nidx: u32, cols: u32, row0: u32, row1: u32, off_s: u32, off_d: u32, off_i: u32, _p: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@group(0) @binding(3) var<storage, read> idx: array<i32>;
${ROW_ID}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let r = row_id(wid, nwg);
  if (r >= p.nidx) { return; }
  let ti = idx[p.off_i + r];
  if (ti < i32(p.row0) || ti >= i32(p.row1)) { return; }
  let t = u32(ti);
  for (var c = lid.x; c < p.cols; c += 64u) {
    ${body}
  }
}`;
}

/** Flags of out-of-range indices: out[0] = 1 + first bad position when any index is outside [0, rows). */
export const CHECK_INDEX = /* wgsl */ `
struct P { n: u32, rows: u32, off_i: u32, _p: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> idx: array<i32>;
@group(0) @binding(2) var<storage, read_write> bad: array<atomic<u32>>;
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  if (i >= p.n) { return; }
  let v = idx[p.off_i + i];
  if (v < 0 || v >= i32(p.rows)) { atomicMin(&bad[0], i + 1u); }
}`;

/**
 * Element conversions. Packed types store rows padded to whole 32-bit words: i8 four per word,
 * int4 eight per word (nibble = value + 8). Modes name source→destination.
 */
export type CastMode = "f32_i32" | "i32_f32" | "f32_u32" | "u32_f32" | "i32_u32" | "u32_i32" | "packed";

/** Scalar 32-bit conversions. */
export function castScalarKernel(mode: Exclude<CastMode, "packed">): string {
  const [from, to] = mode.split("_");
  const tIn = from === "f32" ? "f32" : from === "i32" ? "i32" : "u32";
  const tOut = to === "f32" ? "f32" : to === "i32" ? "i32" : "u32";
  return /* wgsl */ `
struct P { n: u32, off_s: u32, off_d: u32, _p: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<${tIn}>;
@group(0) @binding(2) var<storage, read_write> dst: array<${tOut}>;
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  if (i >= p.n) { return; }
  dst[p.off_d + i] = ${tOut}(${tIn === "f32" && tOut !== "f32" ? "trunc(src[p.off_s + i])" : "src[p.off_s + i]"});
}`;
}

/**
 * Conversions touching packed integers. `from`/`to` are f32, i32, i8 or int4; one invocation writes one
 * destination element (for packed destinations, one word). Values are assumed to be in range (checked
 * by the caller when needed).
 */
export function castPackedKernel(from: "f32" | "i32" | "i8" | "int4", to: "f32" | "i32" | "i8" | "int4"): string {
  const read = (t: string) => {
    if (t === "f32") return "i32(trunc(bitcast<f32>(src[p.off_s + r * p.wpr_s + c])))";
    if (t === "i32") return "bitcast<i32>(src[p.off_s + r * p.wpr_s + c])";
    if (t === "i8") return "(bitcast<i32>(src[p.off_s + r * p.wpr_s + c / 4u] << (24u - 8u * (c % 4u))) >> 24u)";
    return "(i32((src[p.off_s + r * p.wpr_s + c / 8u] >> (4u * (c % 8u))) & 15u) - 8)";
  };
  const packedOut = to === "i8" || to === "int4";
  const per = to === "i8" ? 4 : 8;
  const body = packedOut
    ? /* wgsl */ `
  let r = i / p.wpr_d;
  let w = i % p.wpr_d;
  var word = 0u;
  for (var j = 0u; j < ${per}u; j++) {
    let c = w * ${per}u + j;
    if (c < p.cols) {
      let v = ${read(from)};
      ${to === "i8" ? "word |= (u32(v) & 255u) << (8u * j);" : "word |= (u32(v + 8) & 15u) << (4u * j);"}
    }
  }
  dst[p.off_d + i] = word;`
    : /* wgsl */ `
  let r = i / p.cols;
  let c = i % p.cols;
  let v = ${read(from)};
  dst[p.off_d + r * p.wpr_d + c] = ${to === "f32" ? "bitcast<u32>(f32(v))" : "bitcast<u32>(v)"};`;
  return /* wgsl */ `
struct P { n: u32, cols: u32, wpr_s: u32, wpr_d: u32, off_s: u32, off_d: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  if (i >= p.n) { return; }
  ${body}
}`;
}
