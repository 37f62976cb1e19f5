/** Reductions over one axis and the per-modality channel max-abs calibration statistic. */
import type { ReduceOp } from "@masquant/core";
import { LINEAR_ID, ROW_ID, WG1D } from "./common.ts";

const INIT: Record<ReduceOp, string> = {
  sum: "0.0",
  mean: "0.0",
  max: "-3.4028234663852886e38",
  min: "3.4028234663852886e38",
  maxabs: "0.0",
};

const STEP: Record<ReduceOp, string> = {
  sum: "acc + v",
  mean: "acc + v",
  max: "max(acc, v)",
  min: "min(acc, v)",
  maxabs: "max(acc, abs(v))",
};

const COMBINE: Record<ReduceOp, string> = {
  sum: "a + b",
  mean: "a + b",
  max: "max(a, b)",
  min: "min(a, b)",
  maxabs: "max(a, b)",
};

/** Contiguous rows (inner = 1): one workgroup of 256 threads per row with a shared-memory tree. */
export function rowReduceKernel(op: ReduceOp): string {
  return /* wgsl */ `
struct P { rows: u32, n: u32, off_x: u32, off_y: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
var<workgroup> part: array<f32, 256>;
${ROW_ID}
fn comb(a: f32, b: f32) -> f32 { return ${COMBINE[op]}; }
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let r = row_id(wid, nwg);
  let live = r < p.rows;
  var acc = ${INIT[op]};
  if (live) {
    let base = p.off_x + r * p.n;
    for (var k = lid.x; k < p.n; k += 256u) {
      let v = x[base + k];
      acc = ${STEP[op]};
    }
  }
  part[lid.x] = acc;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid.x < s) { part[lid.x] = comb(part[lid.x], part[lid.x + s]); }
    workgroupBarrier();
  }
  if (live && lid.x == 0u) {
    ${op === "mean" ? "y[p.off_y + r] = part[0] / f32(p.n);" : "y[p.off_y + r] = part[0];"}
  }
}`;
}

/** Strided axis (inner > 1): one thread per output element loops over the reduced axis. */
export function axisReduceKernel(op: ReduceOp): string {
  return /* wgsl */ `
struct P { outer: u32, n: u32, inner: u32, off_x: u32, off_y: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  if (i >= p.outer * p.inner) { return; }
  let o = i / p.inner;
  let j = i % p.inner;
  var acc = ${INIT[op]};
  var off = p.off_x + o * p.n * p.inner + j;
  for (var k = 0u; k < p.n; k++) {
    let v = x[off];
    acc = ${STEP[op]};
    off += p.inner;
  }
  ${op === "mean" ? "y[p.off_y + i] = acc / f32(p.n);" : "y[p.off_y + i] = acc;"}
}`;
}

/**
 * Per-channel max |x| over the rows whose id equals p.id (all rows when p.use_ids == 0), combined with
 * the running maximum already in y (so row chunks can be processed one after another).
 */
export const CHANNEL_MAXABS = /* wgsl */ `
struct P { rows: u32, cols: u32, off_x: u32, off_i: u32, use_ids: u32, id: i32, row0: u32, _p: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
${LINEAR_ID}
@compute @workgroup_size(${WG1D})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let c = linear_id(gid, nwg);
  if (c >= p.cols) { return; }
  var acc = y[c];
  for (var r = 0u; r < p.rows; r++) {
    if (p.use_ids == 0u || ids[p.off_i + p.row0 + r] == p.id) {
      acc = max(acc, abs(x[p.off_x + r * p.cols + c]));
    }
  }
  y[c] = acc;
}`;
