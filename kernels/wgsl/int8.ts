/**
 * Integer matrix multiply y[m, n] = f32(Σ_k a[m,k]·b[n,k]) · sa[m] · sb[n] (+ bias[n]) with exact i32
 * accumulation. a: i8 [M, K] packed four per word; b: i8 [N, K] (four per word) or int4 [N, K] (eight
 * per word, nibble = value + 8), rows padded to whole words with zeros. Each invocation computes a 4×4
 * block with `dot4I8Packed` (or a shift-based fallback where the language feature is missing).
 */

/** The dequantizing epilogue: c[row, col] = f32(acc) · sa[row] · sb[col] (+ bias[col]), bounds-checked. */
function epilogue(withBias: boolean): string {
  return /* wgsl */ `
fn put(row: u32, col: u32, acc: i32) {
  if (row >= p.m || col >= p.n) { return; }
  var v = f32(acc) * sa[p.off_sa + row] * sb[p.off_sb + col];
  ${withBias ? "v = v + bias[p.off_bias + col];" : ""}
  c[p.off_c + row * p.ldc + p.n0 + col] = v;
}`;
}

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
${epilogue(withBias)}
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

/**
 * Repacks i8 weights [N, K] (rows of `wpr` words) word-major: dst[w][n] = b[n][w], columns padded to a
 * multiple of 4 with zeros, so that four neighbouring output columns read one 16-byte vector per word.
 */
export const PACK_I8_WORD_MAJOR = /* wgsl */ `
struct P { n: u32, n4: u32, wpr: u32, off_s: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(64, 4, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = gid.x;
  let w = gid.y;
  if (n >= p.n4 * 4u || w >= p.wpr) { return; }
  var v = 0u;
  if (n < p.n) { v = src[p.off_s + n * p.wpr + w]; }
  dst[w * p.n4 * 4u + n] = v;
}`;

/**
 * int8 × int8 with word-major weights (see PACK_I8_WORD_MAJOR): each invocation computes 4 rows × 4
 * columns; per step it loads 4 words of each row of a (one vec4 per row) and, for each of those words,
 * one vec4 holding it for the 4 columns — so neighbouring invocations read neighbouring memory.
 */
export function int8MatmulWordMajorKernel(dot4: boolean, withBias: boolean): string {
  const dotFn = dot4 ? "fn d4(x: u32, y: u32) -> i32 { return dot4I8Packed(x, y); }" : /* wgsl */ `
fn s8(x: u32, j: u32) -> i32 { return bitcast<i32>(x << (24u - 8u * j)) >> 24u; }
fn d4(x: u32, y: u32) -> i32 { return s8(x, 0u) * s8(y, 0u) + s8(x, 1u) * s8(y, 1u) + s8(x, 2u) * s8(y, 2u) + s8(x, 3u) * s8(y, 3u); }`;
  const col = (x: string, c: string) =>
    `d4(${x}.x, y0.${c}) + d4(${x}.y, y1.${c}) + d4(${x}.z, y2.${c}) + d4(${x}.w, y3.${c})`;
  const row = (i: number) =>
    `acc${i} += vec4<i32>(${col(`x${i}`, "x")}, ${col(`x${i}`, "y")}, ${col(`x${i}`, "z")}, ${col(`x${i}`, "w")});`;
  return /* wgsl */ `
struct P { m: u32, n: u32, wpr_a: u32, n4: u32, off_a: u32, off_b: u32, off_c: u32, off_sa: u32,
  off_sb: u32, n0: u32, ldc: u32, off_bias: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> sa: array<f32>;
@group(0) @binding(4) var<storage, read> sb: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
${withBias ? "@group(0) @binding(6) var<storage, read> bias: array<f32>;" : ""}
${dotFn}
${epilogue(withBias)}
@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c4 = gid.x;
  let r0 = gid.y * 4u;
  if (r0 >= p.m || c4 >= p.n4) { return; }
  let ra0 = (p.off_a + r0 * p.wpr_a) / 4u;
  let ra1 = (p.off_a + min(r0 + 1u, p.m - 1u) * p.wpr_a) / 4u;
  let ra2 = (p.off_a + min(r0 + 2u, p.m - 1u) * p.wpr_a) / 4u;
  let ra3 = (p.off_a + min(r0 + 3u, p.m - 1u) * p.wpr_a) / 4u;
  var acc0 = vec4<i32>(0); var acc1 = vec4<i32>(0); var acc2 = vec4<i32>(0); var acc3 = vec4<i32>(0);
  var bo = p.off_b / 4u + c4;
  for (var k = 0u; k < p.wpr_a / 4u; k++) {
    let x0 = a[ra0 + k]; let x1 = a[ra1 + k]; let x2 = a[ra2 + k]; let x3 = a[ra3 + k];
    let y0 = b[bo]; let y1 = b[bo + p.n4]; let y2 = b[bo + 2u * p.n4]; let y3 = b[bo + 3u * p.n4];
    ${row(0)}
    ${row(1)}
    ${row(2)}
    ${row(3)}
    bo += 4u * p.n4;
  }
  let c0 = c4 * 4u;
  put(r0, c0, acc0.x); put(r0, c0 + 1u, acc0.y); put(r0, c0 + 2u, acc0.z); put(r0, c0 + 3u, acc0.w);
  put(r0 + 1u, c0, acc1.x); put(r0 + 1u, c0 + 1u, acc1.y); put(r0 + 1u, c0 + 2u, acc1.z); put(r0 + 1u, c0 + 3u, acc1.w);
  put(r0 + 2u, c0, acc2.x); put(r0 + 2u, c0 + 1u, acc2.y); put(r0 + 2u, c0 + 2u, acc2.z); put(r0 + 2u, c0 + 3u, acc2.w);
  put(r0 + 3u, c0, acc3.x); put(r0 + 3u, c0 + 1u, acc3.y); put(r0 + 3u, c0 + 2u, acc3.z); put(r0 + 3u, c0 + 3u, acc3.w);
}`;
}

/**
 * int8 × int8 with word-major weights for software adapters, where `dot4I8Packed` is emulated: bytes are
 * widened to f32 and multiplied-added with f32 FMAs. The products of int8 values and their sums stay
 * integers below 2²⁴ within runs of 1024 k values (256 words), so f32 arithmetic is exact there; each
 * run is added to an i32 accumulator, keeping the result exact for any K. Each invocation computes 4 rows
 * × 8 columns.
 */
export function int8MatmulF32Kernel(withBias: boolean, nRows = 4): string {
  const rows = Array.from({ length: nRows }, (_, i) => i);
  return /* wgsl */ `
struct P { m: u32, n: u32, wpr_a: u32, n4: u32, off_a: u32, off_b: u32, off_c: u32, off_sa: u32,
  off_sb: u32, n0: u32, ldc: u32, off_bias: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> sa: array<f32>;
@group(0) @binding(4) var<storage, read> sb: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
${withBias ? "@group(0) @binding(6) var<storage, read> bias: array<f32>;" : ""}
fn byte_v(v: vec4<u32>, t: u32) -> vec4<f32> { return vec4<f32>(bitcast<vec4<i32>>(v << vec4<u32>(24u - 8u * t)) >> vec4<u32>(24u)); }
${epilogue(withBias)}
@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c8 = gid.x * 2u;
  let r0 = gid.y * ${nRows}u;
  if (r0 >= p.m || c8 >= p.n4) { return; }
  let c8b = min(c8 + 1u, p.n4 - 1u);
${rows.map((i) => `  let ra${i} = p.off_a + min(r0 + ${i}u, p.m - 1u) * p.wpr_a;`).join("\n")}
${rows.map((i) => `  var i${i}a = vec4<i32>(0); var i${i}b = vec4<i32>(0);`).join("\n")}
  var w0 = 0u;
  while (w0 < p.wpr_a) {
    let w1 = min(w0 + 256u, p.wpr_a);
${rows.map((i) => `    var f${i}a = vec4<f32>(0.0); var f${i}b = vec4<f32>(0.0);`).join("\n")}
    for (var w = w0; w < w1; w++) {
      let ya = b[p.off_b / 4u + w * p.n4 + c8];
      let yb = b[p.off_b / 4u + w * p.n4 + c8b];
${rows.map((i) => `      let x${i} = vec4<f32>(unpack4xI8(a[ra${i} + w]));`).join("\n")}
      for (var t = 0u; t < 4u; t++) {
        let ba = byte_v(ya, t);
        let bb = byte_v(yb, t);
${
    rows.map((i) =>
      `        f${i}a = fma(vec4<f32>(x${i}[t]), ba, f${i}a); f${i}b = fma(vec4<f32>(x${i}[t]), bb, f${i}b);`
    ).join("\n")
  }
      }
    }
${rows.map((i) => `    i${i}a += vec4<i32>(f${i}a); i${i}b += vec4<i32>(f${i}b);`).join("\n")}
    w0 = w1;
  }
  let c0 = c8 * 4u;
${
    rows.map((i) =>
      `  put(r0 + ${i}u, c0, i${i}a.x); put(r0 + ${i}u, c0 + 1u, i${i}a.y); put(r0 + ${i}u, c0 + 2u, i${i}a.z); put(r0 + ${i}u, c0 + 3u, i${i}a.w);
  if (c8 + 1u < p.n4) { put(r0 + ${i}u, c0 + 4u, i${i}b.x); put(r0 + ${i}u, c0 + 5u, i${i}b.y); put(r0 + ${i}u, c0 + 6u, i${i}b.z); put(r0 + ${i}u, c0 + 7u, i${i}b.w); }`
    ).join("\n")
  }
}`;
}
