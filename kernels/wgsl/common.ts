/** WGSL snippets shared by the kernel families. */

/** Threads per workgroup of the 1-D (elementwise) kernels. */
export const WG1D = 256;

/** Linear invocation index of a 1-D kernel dispatched as a 2-D grid (more than 65535 workgroups). */
export const LINEAR_ID = /* wgsl */ `
fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * ${WG1D}u;
}`;

/** Row index of a "one workgroup per row" kernel dispatched as a 2-D grid. */
export const ROW_ID = /* wgsl */ `
fn row_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}`;

/** Stable f32 sigmoid, erf (Abramowitz–Stegun 7.1.26, |error| < 1.5e-7) and tanh. */
export const MATH = /* wgsl */ `
fn sigmoid_f(v: f32) -> f32 {
  if (v >= 0.0) { return 1.0 / (1.0 + exp(-v)); }
  let e = exp(v);
  return e / (1.0 + e);
}
fn erf_f(v: f32) -> f32 {
  let a = abs(v);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(v) * (1.0 - poly * exp(-a * a));
}
fn tanh_f(v: f32) -> f32 {
  let e = exp(-2.0 * abs(v));
  return sign(v) * (1.0 - e) / (1.0 + e);
}`;

/** Round half to even. WGSL's round() already rounds ties to even; kept as a named function. */
export const ROUND = /* wgsl */ `
fn round_even(v: f32) -> f32 { return round(v); }`;
