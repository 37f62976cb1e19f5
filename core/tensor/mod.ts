/** Tensors, dtypes, the Backend interface, scopes, the CPU backend and seeded randomness. */
export type {
  Backend,
  BinaryOp,
  FakeQuantOptions,
  MatmulOptions,
  Quantized,
  QuantSpec,
  ReduceOp,
  SoftmaxMask,
  UnaryOp,
} from "./backend.ts";
export {
  type DType,
  DTYPES,
  type FloatDType,
  type HostArray,
  hostArray,
  isFloat,
  isInteger,
  toHostArray,
} from "./dtype.ts";
export { check, fmtShape, TensorOpError } from "./errors.ts";
export {
  disposeAll,
  keep,
  sameShape,
  scope,
  scopeAsync,
  shapeSize,
  type Storage,
  stridesOf,
  Tensor,
  untracked,
} from "./tensor.ts";
export { CpuBackend, type CpuBackendOptions, cpuData } from "./cpu/backend.ts";
export { Rng } from "./random.ts";
export { roundHalfEven, STEP_MAX, STEP_MIN } from "./quant_math.ts";
