/**
 * f32 matrix multiply C = A·B. A is read with scalar loads through strides (so a transposed A needs no
 * copy); B is first packed into column panels of vec4 ([K, panelWidth] row-major per panel, zero padded
 * to a multiple of 4 columns) so the inner loop reads four output columns per load.
 *
 * Two variants of the product kernel:
 * - "blocked": no shared memory; each invocation keeps a 4×8 block of C in registers. Fast on
 *   software GPUs (lavapipe), where barriers and workgroup memory cost more than they save.
 * - "tiled": 64×64 output tiles staged through workgroup memory with 16-deep K slices, each invocation
 *   computing 4×4 outputs; the classic layout for discrete GPUs.
 */

/**
 * Packs rows [k0, k0 + k) of B (any strides) into a vec4 column panel for columns [n0, n0 + 4·width4):
 * dst[k0 + kk][c4] = B[kk, n0 + 4·c4 + j] read at src[off_s + kk·sk + (4·c4 + j)·sn] (window starts at
 * row k0, column n0); columns ≥ n are zero.
 */
export const PACK_B = /* wgsl */ `
struct P { k: u32, n: u32, n0: u32, width4: u32, off_s: u32, sk: u32, sn: u32, off_d: u32, _p0: u32,
  _p1: u32, k0: u32, kmajor: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(64, 4, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  // kmajor: consecutive invocations walk k (contiguous reads when B is stored transposed).
  let c4 = select(gid.x, gid.y, p.kmajor != 0u);
  let kk = select(gid.y, gid.x, p.kmajor != 0u);
  if (c4 >= p.width4 || kk >= p.k) { return; }
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) {
    let local = c4 * 4u + j;
    if (p.n0 + local < p.n) { v[j] = src[p.off_s + kk * p.sk + local * p.sn]; }
  }
  dst[p.off_d + (p.k0 + kk) * p.width4 + c4] = v;
}`;

const PARAMS = /* wgsl */ `
struct P { m: u32, n: u32, k: u32, width4: u32,
  off_a: u32, sam: u32, sak: u32, batch_a: u32,
  off_b: u32, batch_b: u32, off_c: u32, ldc: u32,
  batch_c: u32, n0: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;`;

/** Register-blocked product: 4 rows × 8 columns per invocation, workgroup 16×4. */
export const MATMUL_BLOCKED = /* wgsl */ `
${PARAMS}
fn store4(row: u32, col4: u32, v: vec4<f32>, base: u32) {
  if (row >= p.m) { return; }
  let col = p.n0 + col4 * 4u;
  let o = base + row * p.ldc + col;
  if (col + 3u < p.n) { c[o] = v.x; c[o + 1u] = v.y; c[o + 2u] = v.z; c[o + 3u] = v.w; return; }
  for (var j = 0u; j < 4u; j++) { if (col + j < p.n) { c[o + j] = v[j]; } }
}
@compute @workgroup_size(16, 4, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c4 = gid.x * 2u;
  let r0 = gid.y * 4u;
  let bt = gid.z;
  if (r0 >= p.m || c4 >= p.width4) { return; }
  let r1 = min(r0 + 1u, p.m - 1u);
  let r2 = min(r0 + 2u, p.m - 1u);
  let r3 = min(r0 + 3u, p.m - 1u);
  let c4b = min(c4 + 1u, p.width4 - 1u);
  let abase = p.off_a + bt * p.batch_a;
  let a0 = abase + r0 * p.sam;
  let a1 = abase + r1 * p.sam;
  let a2 = abase + r2 * p.sam;
  let a3 = abase + r3 * p.sam;
  var bo = p.off_b + bt * p.batch_b;
  var acc00 = vec4<f32>(0.0); var acc01 = vec4<f32>(0.0);
  var acc10 = vec4<f32>(0.0); var acc11 = vec4<f32>(0.0);
  var acc20 = vec4<f32>(0.0); var acc21 = vec4<f32>(0.0);
  var acc30 = vec4<f32>(0.0); var acc31 = vec4<f32>(0.0);
  var ka = 0u;
  for (var k = 0u; k < p.k; k++) {
    let b0 = b[bo + c4];
    let b1 = b[bo + c4b];
    let x0 = a[a0 + ka]; let x1 = a[a1 + ka]; let x2 = a[a2 + ka]; let x3 = a[a3 + ka];
    acc00 += x0 * b0; acc01 += x0 * b1;
    acc10 += x1 * b0; acc11 += x1 * b1;
    acc20 += x2 * b0; acc21 += x2 * b1;
    acc30 += x3 * b0; acc31 += x3 * b1;
    bo += p.width4;
    ka += p.sak;
  }
  let cb = p.off_c + bt * p.batch_c;
  store4(r0, c4, acc00, cb); store4(r0 + 1u, c4, acc10, cb); store4(r0 + 2u, c4, acc20, cb); store4(r0 + 3u, c4, acc30, cb);
  if (c4 + 1u < p.width4) {
    store4(r0, c4 + 1u, acc01, cb); store4(r0 + 1u, c4 + 1u, acc11, cb);
    store4(r0 + 2u, c4 + 1u, acc21, cb); store4(r0 + 3u, c4 + 1u, acc31, cb);
  }
}`;

/** Shared-memory tiled product: 64×64 tile per 16×16 workgroup, K slices of 16. */
export const MATMUL_TILED = /* wgsl */ `
${PARAMS}
var<workgroup> ta: array<array<f32, 64>, 16>;
var<workgroup> tb: array<array<vec4<f32>, 16>, 16>;
@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let bt = wid.z;
  let rowBase = wid.y * 64u;
  let col4Base = wid.x * 16u;
  let abase = p.off_a + bt * p.batch_a;
  let bbase = p.off_b + bt * p.batch_b;
  let t = lid.y * 16u + lid.x;
  var acc: array<vec4<f32>, 4>;
  for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
  for (var k0 = 0u; k0 < p.k; k0 += 16u) {
    // A tile: 64 rows × 16 k, 4 loads per invocation.
    for (var j = 0u; j < 4u; j++) {
      let e = t + j * 256u;
      let rr = e / 16u;
      let kk = e % 16u;
      let row = rowBase + rr;
      let kg = k0 + kk;
      var v = 0.0;
      if (row < p.m && kg < p.k) { v = a[abase + row * p.sam + kg * p.sak]; }
      ta[kk][rr] = v;
    }
    // B tile: 16 k × 16 vec4 columns, 1 load per invocation.
    {
      let kk = t / 16u;
      let cc = t % 16u;
      let kg = k0 + kk;
      let c4 = col4Base + cc;
      var v = vec4<f32>(0.0);
      if (kg < p.k && c4 < p.width4) { v = b[bbase + kg * p.width4 + c4]; }
      tb[kk][cc] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) {
      let bv = tb[kk][lid.x];
      for (var i = 0u; i < 4u; i++) { acc[i] += ta[kk][lid.y * 4u + i] * bv; }
    }
    workgroupBarrier();
  }
  let c4 = col4Base + lid.x;
  if (c4 >= p.width4) { return; }
  let col = p.n0 + c4 * 4u;
  let cb = p.off_c + bt * p.batch_c;
  for (var i = 0u; i < 4u; i++) {
    let row = rowBase + lid.y * 4u + i;
    if (row < p.m) {
      let o = cb + row * p.ldc + col;
      for (var j = 0u; j < 4u; j++) { if (col + j < p.n) { c[o + j] = acc[i][j]; } }
    }
  }
}`;
