/** Scalar kernels of the CPU backend's elementwise ops and their derivatives. */
import type { BinaryOp, UnaryOp } from "../backend.ts";
import { normalCdf, normalPdf, sigmoid } from "../special.ts";

const GELU_TANH_C = Math.sqrt(2 / Math.PI);
const QUICK_GELU = 1.702;

function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(GELU_TANH_C * (x + 0.044715 * x * x * x)));
}

function geluTanhGrad(x: number): number {
  const u = GELU_TANH_C * (x + 0.044715 * x * x * x);
  const t = Math.tanh(u);
  const du = GELU_TANH_C * (1 + 3 * 0.044715 * x * x);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du;
}

/** f(x) for a unary op. */
export function unaryFn(op: UnaryOp): (x: number) => number {
  switch (op) {
    case "neg":
      return (x) => -x;
    case "abs":
      return Math.abs;
    case "sign":
      return (x) => (x > 0 ? 1 : x < 0 ? -1 : x);
    case "exp":
      return Math.exp;
    case "log":
      return Math.log;
    case "sqrt":
      return Math.sqrt;
    case "rsqrt":
      return (x) => 1 / Math.sqrt(x);
    case "square":
      return (x) => x * x;
    case "recip":
      return (x) => 1 / x;
    case "tanh":
      return Math.tanh;
    case "sigmoid":
      return sigmoid;
    case "relu":
      return (x) => (x > 0 ? x : 0);
    case "silu":
      return (x) => x * sigmoid(x);
    case "gelu":
      return (x) => x * normalCdf(x);
    case "gelu_tanh":
      return geluTanh;
    case "quick_gelu":
      return (x) => x * sigmoid(QUICK_GELU * x);
  }
}

/** f′(x) for a unary op. */
export function unaryDerivative(op: UnaryOp): (x: number) => number {
  switch (op) {
    case "neg":
      return () => -1;
    case "abs":
    case "sign":
      return op === "abs" ? (x) => (x > 0 ? 1 : x < 0 ? -1 : 0) : () => 0;
    case "exp":
      return Math.exp;
    case "log":
      return (x) => 1 / x;
    case "sqrt":
      return (x) => 0.5 / Math.sqrt(x);
    case "rsqrt":
      return (x) => -0.5 / (x * Math.sqrt(x));
    case "square":
      return (x) => 2 * x;
    case "recip":
      return (x) => -1 / (x * x);
    case "tanh":
      return (x) => 1 - Math.tanh(x) ** 2;
    case "sigmoid":
      return (x) => {
        const s = sigmoid(x);
        return s * (1 - s);
      };
    case "relu":
      return (x) => (x > 0 ? 1 : 0);
    case "silu":
      return (x) => {
        const s = sigmoid(x);
        return s * (1 + x * (1 - s));
      };
    case "gelu":
      return (x) => normalCdf(x) + x * normalPdf(x);
    case "gelu_tanh":
      return geluTanhGrad;
    case "quick_gelu":
      return (x) => {
        const s = sigmoid(QUICK_GELU * x);
        return s + QUICK_GELU * x * s * (1 - s);
      };
  }
}

/** a ∘ b for a binary op. */
export function binaryFn(op: BinaryOp): (a: number, b: number) => number {
  switch (op) {
    case "add":
      return (a, b) => a + b;
    case "sub":
      return (a, b) => a - b;
    case "mul":
      return (a, b) => a * b;
    case "div":
      return (a, b) => a / b;
    case "maximum":
      return (a, b) => (a !== a || b !== b ? NaN : a >= b ? a : b);
    case "minimum":
      return (a, b) => (a !== a || b !== b ? NaN : a <= b ? a : b);
  }
}
