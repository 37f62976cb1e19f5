/**
 * The vision transformer of Qwen2.5-VL and of the Qwen2.5-Omni thinker (transformers
 * `Qwen2_5_VisionTransformerPretrainedModel` / `Qwen2_5OmniVisionEncoder`, spec model-formats.md §1.2):
 *
 * 1. patch embedding: the Conv3d [hidden, C, tp, p, p] with stride = kernel is a matmul of the flattened patch rows
 *    [N, C·tp·p·p] (the processor's (c, t, y, x) column order is the weight's memory order) with the weight [hidden, ·];
 * 2. 2-D rotary: head_dim/4 inverse frequencies of base 10⁴ over head_dim/2, applied to the patch row for the first
 *    head_dim/4 frequencies and to the patch column for the next head_dim/4 (duplicated to head_dim, rotate-half);
 * 3. window order: the processor emits rows in m × m merge groups; the groups are permuted into windows of
 *    `window_size / m / p` × `window_size / m / p` merged tokens (per frame group, windows row-major, groups row-major
 *    inside a window, partial windows at the right and bottom edges), and permuted back after the merger;
 * 4. blocks: x + proj(attn(RMSNorm(x))), x + down(act(gate(h)) ⊙ up(h)) with h = RMSNorm(x) (eps 1e-6, all linears
 *    biased); attention is block-diagonal per window, except in `fullatt_block_indexes`, where it spans each frame
 *    group (transformers' cu_seqlens); q/k/v come from one fused `attn.qkv` (Qwen2.5-VL) or three linears (Omni);
 *    whole windows are batched into attention calls of bounded size, so the cost grows with the patch count times
 *    the batch size rather than with the square of the patch count;
 * 5. merger: RMSNorm per patch (eps 1e-6), m² consecutive rows concatenated, Linear → GELU (erf) → Linear.
 */
import {
  attention,
  type AttentionShape,
  type Backend,
  gatedMlp,
  inverseFrequencies,
  type Linear,
  linear,
  type QwenVisionConfig,
  scope,
  type Tensor,
  type UnaryOp,
} from "@masquant/core";
import type { QwenVisionPatches } from "./image_processor.ts";
import type { GridThw } from "./positions.ts";

/** RMSNorm epsilon of the vision blocks and the merger (fixed in transformers). */
export const VISION_RMS_EPS = 1e-6;
/** Base of the 2-D rotary inside the ViT. */
export const VISION_ROPE_THETA = 10000;

/** Reads a float tensor of a given shape from a checkpoint (DecoderLM.readTensor). */
export type TensorReader = (name: string, shape: readonly number[]) => Promise<Tensor>;

/** Weights of one vision block (q/k/v kept separate; a fused qkv is split on load). */
export interface QwenVisionBlockWeights {
  norm1: Tensor;
  norm2: Tensor;
  q: Linear;
  k: Linear;
  v: Linear;
  proj: Linear;
  gate: Linear;
  up: Linear;
  down: Linear;
}

/** All weights of the vision tower. */
export interface QwenVisionWeights {
  /** Patch embedding as a matrix [hidden, C·tp·p·p]. */
  patch: Tensor;
  blocks: QwenVisionBlockWeights[];
  /** Merger RMSNorm weight [hidden]. */
  lnQ: Tensor;
  /** Merger first linear [m²·hidden → m²·hidden]. */
  fc1: Linear;
  /** Merger second linear [m²·hidden → out_hidden_size]. */
  fc2: Linear;
}

/** Thrown for a vision config or input the tower cannot take. */
export class VisionTowerError extends Error {
  /** Creates the error with a complete sentence. */
  constructor(message: string) {
    super(message);
    this.name = "VisionTowerError";
  }
}

/** The backend activation of a transformers `hidden_act` name; `where` names the config field in errors. */
export function activationOp(name: string, where: string): UnaryOp {
  const map: Record<string, UnaryOp> = {
    silu: "silu",
    swish: "silu",
    gelu: "gelu",
    gelu_pytorch_tanh: "gelu_tanh",
    gelu_new: "gelu_tanh",
    quick_gelu: "quick_gelu",
    relu: "relu",
  };
  const op = map[name];
  if (!op) throw new VisionTowerError(`${where}: activation "${name}" is not supported (use ${Object.keys(map)})`);
  return op;
}

/**
 * Loads the tower under `prefix` (e.g. "visual", "model.visual", "thinker.visual"). Blocks with a fused
 * `attn.qkv` are split into q/k/v by rows (q first, then k, then v, as transformers reshapes them).
 */
export async function loadQwenVisionTower(
  be: Backend,
  read: TensorReader,
  has: (name: string) => boolean,
  prefix: string,
  cfg: QwenVisionConfig,
): Promise<QwenVisionWeights> {
  const h = cfg.hiddenSize, inter = cfg.intermediateSize, m2 = cfg.spatialMergeSize ** 2;
  const p = cfg.patchSize, tp = cfg.temporalPatchSize, c = cfg.inChannels;
  const lin = async (name: string, out: number, inp: number): Promise<Linear> => ({
    w: await read(`${name}.weight`, [out, inp]),
    b: await read(`${name}.bias`, [out]),
  });
  const conv = await read(`${prefix}.patch_embed.proj.weight`, [h, c, tp, p, p]);
  const patch = be.reshape(conv, [h, c * tp * p * p]);
  conv.dispose();
  const blocks: QwenVisionBlockWeights[] = [];
  for (let i = 0; i < cfg.depth; i++) {
    const bp = `${prefix}.blocks.${i}`;
    let q: Linear, k: Linear, v: Linear;
    if (has(`${bp}.attn.qkv.weight`)) {
      const fused = await lin(`${bp}.attn.qkv`, 3 * h, h);
      const part = (j: number): Linear => ({
        w: be.slice(fused.w, 0, j * h, (j + 1) * h),
        b: be.slice(fused.b!, 0, j * h, (j + 1) * h),
      });
      [q, k, v] = [part(0), part(1), part(2)];
      fused.w.dispose();
      fused.b!.dispose();
    } else {
      q = await lin(`${bp}.attn.q`, h, h);
      k = await lin(`${bp}.attn.k`, h, h);
      v = await lin(`${bp}.attn.v`, h, h);
    }
    blocks.push({
      norm1: await read(`${bp}.norm1.weight`, [h]),
      norm2: await read(`${bp}.norm2.weight`, [h]),
      q,
      k,
      v,
      proj: await lin(`${bp}.attn.proj`, h, h),
      gate: await lin(`${bp}.mlp.gate_proj`, inter, h),
      up: await lin(`${bp}.mlp.up_proj`, inter, h),
      down: await lin(`${bp}.mlp.down_proj`, h, inter),
    });
  }
  return {
    patch,
    blocks,
    lnQ: await read(`${prefix}.merger.ln_q.weight`, [h]),
    fc1: await lin(`${prefix}.merger.mlp.0`, m2 * h, m2 * h),
    fc2: await lin(`${prefix}.merger.mlp.2`, cfg.outHiddenSize, m2 * h),
  };
}

/** Frees the tower's tensors. */
export function disposeQwenVisionTower(w: QwenVisionWeights): void {
  const lins: Linear[] = [w.fc1, w.fc2];
  const ts: Tensor[] = [w.patch, w.lnQ];
  for (const b of w.blocks) {
    ts.push(b.norm1, b.norm2);
    lins.push(b.q, b.k, b.v, b.proj, b.gate, b.up, b.down);
  }
  for (const l of lins) {
    l.w.dispose();
    l.b?.dispose();
  }
  for (const t of ts) t.dispose();
}

/** The permutation of merged tokens into attention windows and the attention segments that go with it. */
export interface VisionWindowLayout {
  /** Merged-token indices (in processor order) listed in window order. */
  order: Int32Array;
  /** Window number of each entry of `order` (windows never span two frame groups). */
  window: Int32Array;
  /** Frame group of each entry of `order`. */
  frame: Int32Array;
}

/** Side of an attention window in merged tokens: ⌊window_size / m / p⌋ (4 for 112 / 2 / 14). */
export function windowSideInMergedTokens(
  cfg: Pick<QwenVisionConfig, "windowSize" | "spatialMergeSize" | "patchSize">,
): number {
  return Math.floor(Math.floor(cfg.windowSize / cfg.spatialMergeSize) / cfg.patchSize);
}

/**
 * Window order of the merged tokens of one grid (transformers `get_window_index`): per frame group, windows of
 * `side` × `side` merged tokens row-major over the merged grid (partial windows at the edges), tokens row-major
 * inside each window.
 */
export function visionWindowLayout(grid: GridThw, mergeSize: number, side: number): VisionWindowLayout {
  if (!(side >= 1)) throw new VisionTowerError(`the attention window must cover at least one merged token (${side})`);
  const [gt, gh, gw] = grid;
  const hm = gh / mergeSize, wm = gw / mergeSize;
  const n = gt * hm * wm;
  const order = new Int32Array(n), window = new Int32Array(n), frame = new Int32Array(n);
  let j = 0, win = 0;
  for (let t = 0; t < gt; t++) {
    for (let wy = 0; wy < Math.ceil(hm / side); wy++) {
      for (let wx = 0; wx < Math.ceil(wm / side); wx++, win++) {
        for (let r = wy * side; r < Math.min(hm, (wy + 1) * side); r++) {
          for (let c = wx * side; c < Math.min(wm, (wx + 1) * side); c++, j++) {
            order[j] = (t * hm + r) * wm + c;
            window[j] = win;
            frame[j] = t;
          }
        }
      }
    }
  }
  return { order, window, frame };
}

/**
 * Patch row and column of every processor row of a grid (rows come in m × m merge groups, groups row-major over
 * the merged grid, frames one after another): [2, N] row-major (all rows, then all columns).
 */
export function visionPatchPositions(grid: GridThw, mergeSize: number): Int32Array {
  const [gt, gh, gw] = grid;
  const n = gt * gh * gw;
  const out = new Int32Array(2 * n);
  let j = 0;
  for (let t = 0; t < gt; t++) {
    for (let bh = 0; bh < gh / mergeSize; bh++) {
      for (let bw = 0; bw < gw / mergeSize; bw++) {
        for (let mh = 0; mh < mergeSize; mh++) {
          for (let mw = 0; mw < mergeSize; mw++, j++) {
            out[j] = bh * mergeSize + mh;
            out[n + j] = bw * mergeSize + mw;
          }
        }
      }
    }
  }
  return out;
}

/** Rows per attention call of {@link blockDiagonalAttention} before it splits the sequence (segments stay whole). */
export const ATTENTION_GROUP_ROWS = 512;

/**
 * Splits rows 0..n−1 into consecutive ranges of whole segments (runs of equal ids) of at most `maxRows` rows each
 * (a longer segment gets a range of its own). Segments must be contiguous runs.
 */
export function segmentGroups(segments: Int32Array, maxRows: number): [number, number][] {
  const n = segments.length;
  const groups: [number, number][] = [];
  let start = 0;
  for (let i = 0; i < n;) {
    let end = i;
    while (end < n && segments[end] === segments[i]) end++;
    if (end - start > maxRows && i > start) {
      groups.push([start, i]);
      start = i;
    }
    i = end;
  }
  groups.push([start, n]);
  return groups;
}

/**
 * Attention restricted to segments (query and key rows with equal ids, each segment a contiguous run of rows), for
 * q [T, H, D] and k, v [T, Hkv, D] → [T, H·D]. Whole segments are grouped into calls of at most `maxRows` rows, so
 * windowed attention costs O(T · maxRows) instead of O(T²).
 */
export function blockDiagonalAttention(
  be: Backend,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  shape: AttentionShape,
  segments: Int32Array,
  maxRows = ATTENTION_GROUP_ROWS,
): Tensor {
  const groups = segmentGroups(segments, maxRows);
  return scope(() => {
    const parts = groups.map(([s, e]) => {
      const seg = be.tensor(segments.subarray(s, e), [e - s], "i32");
      if (groups.length === 1) return attention(be, q, k, v, shape, { segments: seg });
      return attention(be, be.slice(q, 0, s, e), be.slice(k, 0, s, e), be.slice(v, 0, s, e), shape, { segments: seg });
    });
    return parts.length === 1 ? parts[0] : be.concat(parts, 0);
  });
}

/** Checks that a patch grid fits the tower config. */
function checkGrid(px: QwenVisionPatches, cfg: QwenVisionConfig): void {
  const [gt, gh, gw] = px.gridThw;
  const m = cfg.spatialMergeSize;
  const cols = cfg.inChannels * cfg.temporalPatchSize * cfg.patchSize ** 2;
  if (px.cols !== cols || px.rows !== gt * gh * gw || gh % m !== 0 || gw % m !== 0) {
    throw new VisionTowerError(
      `vision patches [${px.rows}, ${px.cols}] with grid [${px.gridThw}] do not fit the tower ` +
        `(${cols} columns per patch, grid sides divisible by ${m})`,
    );
  }
}

/**
 * Runs the tower on the patch rows of one image or video; returns the merged features [t·h·w/m², out_hidden_size]
 * in processor order (frame group, merged row, merged column).
 */
export function qwenVisionForward(
  be: Backend,
  cfg: QwenVisionConfig,
  w: QwenVisionWeights,
  px: QwenVisionPatches,
): Tensor {
  checkGrid(px, cfg);
  const m = cfg.spatialMergeSize, unit = m * m;
  const n = px.rows, cols = px.cols;
  const heads = cfg.numHeads, headDim = cfg.hiddenSize / heads;
  if (headDim % 4 !== 0) {
    throw new VisionTowerError(`vision head_dim ${headDim} must be a multiple of 4 for the 2-D rotary`);
  }
  const act = activationOp(cfg.hiddenAct, "vision_config.hidden_act");
  const layout = visionWindowLayout(px.gridThw, m, windowSideInMergedTokens(cfg));
  const pos = visionPatchPositions(px.gridThw, m);

  // Host-side permutation of patch rows and their rotary positions into window order.
  const patches = new Float32Array(n * cols);
  const posW = new Int32Array(2 * n);
  const segWindow = new Int32Array(n), segFrame = new Int32Array(n);
  for (let i = 0; i < layout.order.length; i++) {
    const src = layout.order[i] * unit;
    patches.set(px.patches.subarray(src * cols, (src + unit) * cols), i * unit * cols);
    for (let u = 0; u < unit; u++) {
      posW[i * unit + u] = pos[src + u];
      posW[n + i * unit + u] = pos[n + src + u];
      segWindow[i * unit + u] = layout.window[i];
      segFrame[i * unit + u] = layout.frame[i];
    }
  }
  const inverse = new Int32Array(layout.order.length);
  layout.order.forEach((o, i) => (inverse[o] = i));

  return scope(() => {
    const inv = inverseFrequencies(headDim / 2, VISION_ROPE_THETA);
    const invBoth = new Float32Array(headDim / 2);
    invBoth.set(inv, 0);
    invBoth.set(inv, inv.length);
    const [cos, sin] = be.ropeTables(
      be.tensor(posW, [2, n], "i32"),
      be.tensor(invBoth, [headDim / 2]),
      [headDim / 4, headDim / 4],
    );
    let x = be.matmul(be.tensor(patches, [n, cols]), w.patch, { transB: true });
    w.blocks.forEach((b, i) => {
      const segments = cfg.fullattBlockIndexes.includes(i) ? segFrame : segWindow;
      const y = scope(() => {
        const h = be.rmsNorm(x, b.norm1, VISION_RMS_EPS);
        const q = be.rotary(be.reshape(linear(be, h, b.q), [n, heads, headDim]), cos, sin);
        const k = be.rotary(be.reshape(linear(be, h, b.k), [n, heads, headDim]), cos, sin);
        const v = be.reshape(linear(be, h, b.v), [n, heads, headDim]);
        const a = blockDiagonalAttention(be, q, k, v, { heads, kvHeads: heads, headDim }, segments);
        const x1 = be.binary("add", x, linear(be, a, b.proj));
        const h2 = be.rmsNorm(x1, b.norm2, VISION_RMS_EPS);
        return be.binary("add", x1, gatedMlp(be, h2, b.gate, b.up, b.down, act));
      });
      x.dispose();
      x = y;
    });
    const normed = be.reshape(be.rmsNorm(x, w.lnQ, VISION_RMS_EPS), [n / unit, unit * cfg.hiddenSize]);
    const merged = linear(be, be.unary("gelu", linear(be, normed, w.fc1)), w.fc2);
    return be.gatherRows(merged, be.tensor(inverse, [inverse.length], "i32"));
  });
}
