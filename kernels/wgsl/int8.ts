/**
 * Integer matrix multiply y[m, n] = f32(Σ_k a[m,k]·b[n,k]) · sa[m] · sb[n] (+ bias[n]) with exact i32
 * accumulation. a: i8 [M, K] packed four per word; b: i8 [N, K] (four per word) or int4 [N, K] (eight
 * per word, nibble = value + 8), rows padded to whole words with zeros. Each invocation computes a 4×4
 * block with `dot4I8Packed` (or a shift-based fallback where the language feature is missing).
 */

/** Builds the int8 × int8 (or int8 × int4) kernel. */
export function int8MatmulKernel(bKind: "i8" | "int4", dot4: boolean, withBias: boolean, vec4: boolean): string {
  const dotFn = dot4 ? "fn d4(x: u32, y: u32) -> i32 { return dot4I8Packed(x, y); }" : /* wgsl */ `
fn s8(x: u32, j: u32) -> i32 { return bitcast<i32>(x << (24u - 8u * j)) >> 24u; }
fn d4(x: u32, y: u32) -> i32 { return s8(x, 0u) * s8(y, 0u) + s8(x, 1u) * s8(y, 1u) + s8(x, 2u) * s8(y, 2u) + s8(x, 3u) * s8(y, 3u); }`;
  // With rows of whole vec4 words (K a multiple of 16 for i8, 32 for int4) loads are 16 bytes wide.
  const d44 = (x: string, y: string) =>
    `d4(${x}.x, ${y}.x) + d4(${x}.y, ${y}.y) + d4(${x}.z, ${y}.z) + d4(${x}.w, ${y}.w)`;
  const row4 = (i: number) =>
    `acc${i} += vec4<i32>(${d44(`x${i}`, "y0")}, ${d44(`x${i}`, "y1")}, ${d44(`x${i}`, "y2")}, ${d44(`x${i}`, "y3")});`;
  const vecInner = bKind === "i8"
    ? /* wgsl */ `
  for (var k = 0u; k < p.wpr_a / 4u; k++) {
    let x0 = a[ra0 / 4u + k]; let x1 = a[ra1 / 4u + k]; let x2 = a[ra2 / 4u + k]; let x3 = a[ra3 / 4u + k];
    let y0 = b[rb0 / 4u + k]; let y1 = b[rb1 / 4u + k]; let y2 = b[rb2 / 4u + k]; let y3 = b[rb3 / 4u + k];
    ${row4(0)}
    ${row4(1)}
    ${row4(2)}
    ${row4(3)}
  }`
    : /* wgsl */ `
  for (var w = 0u; w < p.wpr_b / 4u; w++) {
    let zb0 = b[rb0 / 4u + w]; let zb1 = b[rb1 / 4u + w]; let zb2 = b[rb2 / 4u + w]; let zb3 = b[rb3 / 4u + w];
    for (var half = 0u; half < 2u; half++) {
      let y0 = expand4(zb0, half); let y1 = expand4(zb1, half); let y2 = expand4(zb2, half); let y3 = expand4(zb3, half);
      let k = 2u * w + half;
      let x0 = a[ra0 / 4u + k]; let x1 = a[ra1 / 4u + k]; let x2 = a[ra2 / 4u + k]; let x3 = a[ra3 / 4u + k];
      ${row4(0)}
      ${row4(1)}
      ${row4(2)}
      ${row4(3)}
    }
  }`;
  // For int4 weights, word w of a row holds columns 8w..8w+7; expand to two i8 words.
  const scalarInner = bKind === "i8"
    ? /* wgsl */ `
  for (var k = 0u; k < p.wpr_a; k++) {
    let x0 = a[ra0 + k]; let x1 = a[ra1 + k]; let x2 = a[ra2 + k]; let x3 = a[ra3 + k];
    let y0 = b[rb0 + k]; let y1 = b[rb1 + k]; let y2 = b[rb2 + k]; let y3 = b[rb3 + k];
    acc0 += vec4<i32>(d4(x0, y0), d4(x0, y1), d4(x0, y2), d4(x0, y3));
    acc1 += vec4<i32>(d4(x1, y0), d4(x1, y1), d4(x1, y2), d4(x1, y3));
    acc2 += vec4<i32>(d4(x2, y0), d4(x2, y1), d4(x2, y2), d4(x2, y3));
    acc3 += vec4<i32>(d4(x3, y0), d4(x3, y1), d4(x3, y2), d4(x3, y3));
  }`
    : /* wgsl */ `
  for (var w = 0u; w < p.wpr_b; w++) {
    let klo = 2u * w;
    let khi = min(2u * w + 1u, p.wpr_a - 1u);
    let live_hi = 2u * w + 1u < p.wpr_a;
    let z0 = expand(b[rb0 + w]); let z1 = expand(b[rb1 + w]); let z2 = expand(b[rb2 + w]); let z3 = expand(b[rb3 + w]);
    let x0 = a[ra0 + klo]; let x1 = a[ra1 + klo]; let x2 = a[ra2 + klo]; let x3 = a[ra3 + klo];
    acc0 += vec4<i32>(d4(x0, z0.x), d4(x0, z1.x), d4(x0, z2.x), d4(x0, z3.x));
    acc1 += vec4<i32>(d4(x1, z0.x), d4(x1, z1.x), d4(x1, z2.x), d4(x1, z3.x));
    acc2 += vec4<i32>(d4(x2, z0.x), d4(x2, z1.x), d4(x2, z2.x), d4(x2, z3.x));
    acc3 += vec4<i32>(d4(x3, z0.x), d4(x3, z1.x), d4(x3, z2.x), d4(x3, z3.x));
    if (live_hi) {
      let h0 = a[ra0 + khi]; let h1 = a[ra1 + khi]; let h2 = a[ra2 + khi]; let h3 = a[ra3 + khi];
      acc0 += vec4<i32>(d4(h0, z0.y), d4(h0, z1.y), d4(h0, z2.y), d4(h0, z3.y));
      acc1 += vec4<i32>(d4(h1, z0.y), d4(h1, z1.y), d4(h1, z2.y), d4(h1, z3.y));
      acc2 += vec4<i32>(d4(h2, z0.y), d4(h2, z1.y), d4(h2, z2.y), d4(h2, z3.y));
      acc3 += vec4<i32>(d4(h3, z0.y), d4(h3, z1.y), d4(h3, z2.y), d4(h3, z3.y));
    }
  }`;
  const inner = vec4 ? vecInner : scalarInner;
  const word = vec4 ? "vec4<u32>" : "u32";
  return /* wgsl */ `
struct P { m: u32, n: u32, wpr_a: u32, wpr_b: u32, off_a: u32, off_b: u32, off_c: u32, off_sa: u32,
  off_sb: u32, n0: u32, ldc: u32, off_bias: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<${word}>;
@group(0) @binding(2) var<storage, read> b: array<${word}>;
@group(0) @binding(3) var<storage, read> sa: array<f32>;
@group(0) @binding(4) var<storage, read> sb: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
${withBias ? "@group(0) @binding(6) var<storage, read> bias: array<f32>;" : ""}
${dotFn}
// Two packed i8 words (columns 0–3 and 4–7) from one int4 word.
fn expand(w: u32) -> vec2<u32> {
  var lo = 0u;
  var hi = 0u;
  for (var j = 0u; j < 4u; j++) {
    lo |= (u32(i32((w >> (4u * j)) & 15u) - 8) & 255u) << (8u * j);
    hi |= (u32(i32((w >> (4u * j + 16u)) & 15u) - 8) & 255u) << (8u * j);
  }
  return vec2<u32>(lo, hi);
}
// Two 16-column halves of a vec4 of int4 words as vec4s of i8 words.
fn expand4(v: vec4<u32>, half: u32) -> vec4<u32> {
  let e0 = expand(v[2u * half]);
  let e1 = expand(v[2u * half + 1u]);
  return vec4<u32>(e0.x, e0.y, e1.x, e1.y);
}
fn put(row: u32, col: u32, acc: i32) {
  if (row >= p.m || col >= p.n) { return; }
  var v = f32(acc) * sa[p.off_sa + row] * sb[p.off_sb + col];
  ${withBias ? "v = v + bias[p.off_bias + col];" : ""}
  c[p.off_c + row * p.ldc + p.n0 + col] = v;
}
@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c0 = gid.x * 4u;
  let r0 = gid.y * 4u;
  if (r0 >= p.m || c0 >= p.n) { return; }
  let ra0 = p.off_a + r0 * p.wpr_a;
  let ra1 = p.off_a + min(r0 + 1u, p.m - 1u) * p.wpr_a;
  let ra2 = p.off_a + min(r0 + 2u, p.m - 1u) * p.wpr_a;
  let ra3 = p.off_a + min(r0 + 3u, p.m - 1u) * p.wpr_a;
  let rb0 = p.off_b + c0 * p.wpr_b;
  let rb1 = p.off_b + min(c0 + 1u, p.n - 1u) * p.wpr_b;
  let rb2 = p.off_b + min(c0 + 2u, p.n - 1u) * p.wpr_b;
  let rb3 = p.off_b + min(c0 + 3u, p.n - 1u) * p.wpr_b;
  var acc0 = vec4<i32>(0); var acc1 = vec4<i32>(0); var acc2 = vec4<i32>(0); var acc3 = vec4<i32>(0);
  ${inner}
  put(r0, c0, acc0.x); put(r0, c0 + 1u, acc0.y); put(r0, c0 + 2u, acc0.z); put(r0, c0 + 3u, acc0.w);
  put(r0 + 1u, c0, acc1.x); put(r0 + 1u, c0 + 1u, acc1.y); put(r0 + 1u, c0 + 2u, acc1.z); put(r0 + 1u, c0 + 3u, acc1.w);
  put(r0 + 2u, c0, acc2.x); put(r0 + 2u, c0 + 1u, acc2.y); put(r0 + 2u, c0 + 2u, acc2.z); put(r0 + 2u, c0 + 3u, acc2.w);
  put(r0 + 3u, c0, acc3.x); put(r0 + 3u, c0 + 1u, acc3.y); put(r0 + 3u, c0 + 2u, acc3.z); put(r0 + 3u, c0 + 3u, acc3.w);
}`;
}
