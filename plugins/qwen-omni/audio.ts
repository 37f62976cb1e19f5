/**
 * The audio encoder of the Qwen2.5-Omni thinker (transformers `Qwen2_5OmniAudioEncoder`, spec model-formats.md §1.3),
 * on the log-mel features of core/io/mel.ts ([n_mels, L], the ceil(samples / 160) valid frames):
 *
 * 1. the L frames are cut into chunks of 2·n_window (200) frames, the last one holding the remainder;
 * 2. per chunk, with zeros outside it: conv1 (kernel 3, padding 1) + GELU, conv2 (kernel 3, stride 2, padding 1) +
 *    GELU, both written as matmuls of gathered frame triples with the kernel flattened tap-major; a chunk of n frames
 *    gives (n − 1) // 2 + 1 frames;
 * 3. sinusoidal positions restarting at 0 in every chunk: channels/2 sines then channels/2 cosines of t·exp(−j·ln(10⁴)
 *    / (channels/2 − 1));
 * 4. pre-LayerNorm encoder layers (GELU MLP, eps 1e-5; k_proj without bias) with attention block-diagonal per chunk
 *    (groups of whole chunks go through the layers separately);
 * 5. over the whole clip: AvgPool1d(2, 2) (an odd last frame is dropped), ln_post, proj to the decoder width.
 *
 * The output has `omniAudioTokenCount(L)` rows: (L − 1) // 2 + 1 frames after conv2, halved by the pooling.
 */
import {
  type Backend,
  disposeEncoderLayer,
  encoderLayer,
  type EncoderLayerWeights,
  type Linear,
  linear,
  type LogMel,
  type Norm,
  type OmniAudioConfig,
  scope,
  type Tensor,
} from "@masquant/core";
import { activationOp, ATTENTION_GROUP_ROWS, segmentGroups, type TensorReader } from "@masquant/plugin-qwen-vl";

/** LayerNorm epsilon of the audio encoder (torch's nn.LayerNorm default). */
export const AUDIO_LN_EPS = 1e-5;

/** Weights of the audio tower. */
export interface OmniAudioWeights {
  /** conv1 as a matrix [d_model, 3·n_mels], columns tap-major (tap k, then mel bin). */
  conv1: Linear;
  /** conv2 as a matrix [d_model, 3·d_model], columns tap-major. */
  conv2: Linear;
  layers: EncoderLayerWeights[];
  lnPost: Norm;
  proj: Linear;
}

/** Thrown when features do not fit the audio tower. */
export class AudioTowerError extends Error {
  /** Creates the error with a complete sentence. */
  constructor(message: string) {
    super(message);
    this.name = "AudioTowerError";
  }
}

/** A Conv1d weight [out, in, 3] as a tap-major matrix [out, 3·in]. */
function convAsMatrix(be: Backend, w: Tensor): Tensor {
  const [out, inp, k] = w.shape;
  const t = be.transpose(w, [0, 2, 1]);
  const m = be.reshape(t, [out, k * inp]);
  t.dispose();
  return m;
}

/** Loads the audio tower under `prefix` (e.g. "thinker.audio_tower"). */
export async function loadOmniAudioTower(
  be: Backend,
  read: TensorReader,
  prefix: string,
  cfg: OmniAudioConfig,
): Promise<OmniAudioWeights> {
  const d = cfg.dModel;
  const lin = async (name: string, out: number, inp: number, bias = true): Promise<Linear> => ({
    w: await read(`${name}.weight`, [out, inp]),
    b: bias ? await read(`${name}.bias`, [out]) : undefined,
  });
  const norm = async (name: string): Promise<Norm> => ({
    w: await read(`${name}.weight`, [d]),
    b: await read(`${name}.bias`, [d]),
  });
  const c1 = await read(`${prefix}.conv1.weight`, [d, cfg.numMelBins, 3]);
  const c2 = await read(`${prefix}.conv2.weight`, [d, d, 3]);
  const conv1 = { w: convAsMatrix(be, c1), b: await read(`${prefix}.conv1.bias`, [d]) };
  const conv2 = { w: convAsMatrix(be, c2), b: await read(`${prefix}.conv2.bias`, [d]) };
  c1.dispose();
  c2.dispose();
  const layers: EncoderLayerWeights[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `${prefix}.layers.${i}`;
    layers.push({
      ln1: await norm(`${p}.self_attn_layer_norm`),
      ln2: await norm(`${p}.final_layer_norm`),
      q: await lin(`${p}.self_attn.q_proj`, d, d),
      k: await lin(`${p}.self_attn.k_proj`, d, d, false),
      v: await lin(`${p}.self_attn.v_proj`, d, d),
      out: await lin(`${p}.self_attn.out_proj`, d, d),
      fc1: await lin(`${p}.fc1`, cfg.ffnDim, d),
      fc2: await lin(`${p}.fc2`, d, cfg.ffnDim),
    });
  }
  return {
    conv1,
    conv2,
    layers,
    lnPost: await norm(`${prefix}.ln_post`),
    proj: await lin(`${prefix}.proj`, cfg.outputDim, d),
  };
}

/** Frees the audio tower's tensors. */
export function disposeOmniAudioTower(w: OmniAudioWeights): void {
  for (const l of [w.conv1, w.conv2, w.proj]) {
    l.w.dispose();
    l.b?.dispose();
  }
  w.lnPost.w.dispose();
  w.lnPost.b?.dispose();
  w.layers.forEach(disposeEncoderLayer);
}

/** Chunk lengths of L mel frames: 2·nWindow each, the last one the remainder (never 0). */
export function audioChunkLengths(frames: number, nWindow: number): number[] {
  const size = 2 * nWindow;
  const out: number[] = [];
  for (let s = 0; s < frames; s += size) out.push(Math.min(size, frames - s));
  return out;
}

/** Frames after the stride-2 convolution of a chunk of n frames: (n − 1) // 2 + 1. */
export function framesAfterConv(n: number): number {
  return Math.floor((n - 1) / 2) + 1;
}

/** The sinusoidal position table [length, channels]: sin(t·f_j) for j < C/2, then cos(t·f_j). */
export function sinusoidPositions(length: number, channels: number): Float32Array {
  if (channels % 2 !== 0 || channels < 4) {
    throw new AudioTowerError(`sinusoidal positions need an even channel count of at least 4, got ${channels}`);
  }
  const half = channels / 2;
  const step = Math.log(10000) / (half - 1);
  const out = new Float32Array(length * channels);
  for (let t = 0; t < length; t++) {
    for (let j = 0; j < half; j++) {
      const a = t * Math.exp(-step * j);
      out[t * channels + j] = Math.sin(a);
      out[t * channels + half + j] = Math.cos(a);
    }
  }
  return out;
}

/**
 * Runs the audio tower on one clip's log-mel features; returns [omniAudioTokenCount(L), output_dim].
 * Throws an {@link AudioTowerError} naming `source` when the features do not fit the tower or give no tokens.
 */
export function omniAudioForward(
  be: Backend,
  cfg: OmniAudioConfig,
  w: OmniAudioWeights,
  mel: LogMel,
  source = "audio clip",
): Tensor {
  const nMels = mel.nMels, frames = mel.frames, d = cfg.dModel;
  if (nMels !== cfg.numMelBins) {
    throw new AudioTowerError(
      `${source}: the features have ${nMels} mel bins but the audio tower takes ${cfg.numMelBins}`,
    );
  }
  const chunks = audioChunkLengths(frames, cfg.nWindow);
  const afterConv = chunks.map(framesAfterConv);
  const a = afterConv.reduce((s, n) => s + n, 0);
  const pooled = Math.floor(a / 2);
  if (pooled < 1) {
    throw new AudioTowerError(
      `${source} gives ${frames} mel frame(s), too short for one audio token; give at least 3 frames (321 samples)`,
    );
  }
  if (Math.max(...afterConv) > cfg.maxSourcePositions) {
    throw new AudioTowerError(`${source}: a chunk is longer than max_source_positions (${cfg.maxSourcePositions})`);
  }

  // conv1 input: for every frame, its three taps (previous, own, next frame of the same chunk; zero outside).
  const cols = 3 * nMels;
  const im2col = new Float32Array(frames * cols);
  // conv2 taps: rows of the conv1 output (index `frames` is an appended zero row); segments and positions.
  const taps = [new Int32Array(a), new Int32Array(a), new Int32Array(a)];
  const segments = new Int32Array(a);
  const maxChunk = Math.max(...afterConv);
  const sinus = sinusoidPositions(maxChunk, d);
  const pos = new Float32Array(a * d);
  let start = 0, row = 0;
  chunks.forEach((n, c) => {
    for (let t = 0; t < n; t++) {
      for (let k = 0; k < 3; k++) {
        const src = t + k - 1;
        if (src < 0 || src >= n) continue;
        const o = (start + t) * cols + k * nMels;
        for (let b = 0; b < nMels; b++) im2col[o + b] = mel.data[b * frames + start + src];
      }
    }
    for (let j = 0; j < afterConv[c]; j++, row++) {
      for (let k = 0; k < 3; k++) {
        const src = 2 * j + k - 1;
        taps[k][row] = src < 0 || src >= n ? frames : start + src;
      }
      segments[row] = c;
      pos.set(sinus.subarray(j * d, (j + 1) * d), row * d);
    }
    start += n;
  });
  const even = Int32Array.from({ length: pooled }, (_, i) => 2 * i);
  const odd = Int32Array.from({ length: pooled }, (_, i) => 2 * i + 1);

  return scope(() => {
    const act = activationOp(cfg.activation, "audio_config.activation_function");
    const h1 = be.unary("gelu", linear(be, be.tensor(im2col, [frames, cols]), w.conv1));
    const table = be.concat([h1, be.full([1, d], 0)], 0);
    const gathered = be.concat(taps.map((t) => be.gatherRows(table, be.tensor(t, [a], "i32"))), 1);
    let x = be.binary("add", be.unary("gelu", linear(be, gathered, w.conv2)), be.tensor(pos, [a, d]));
    // Chunks never attend to each other and every other op is per frame, so groups of whole chunks run through
    // the layers on their own (bounded attention cost for long clips).
    const shape = { heads: cfg.numHeads, headDim: d / cfg.numHeads, eps: AUDIO_LN_EPS, act };
    const groups = segmentGroups(segments, ATTENTION_GROUP_ROWS);
    const outs = groups.map(([s, e]) => {
      let xg = groups.length === 1 ? x.retain() : be.slice(x, 0, s, e);
      const mask = { segments: be.tensor(segments.subarray(s, e), [e - s], "i32") };
      for (const layer of w.layers) {
        const y = encoderLayer(be, shape, layer, xg, mask);
        xg.dispose();
        xg = y;
      }
      return xg;
    });
    x = outs.length === 1 ? outs[0] : be.concat(outs, 0);
    const sum = be.binary(
      "add",
      be.gatherRows(x, be.tensor(even, [pooled], "i32")),
      be.gatherRows(x, be.tensor(odd, [pooled], "i32")),
    );
    const avg = be.affine(sum, 0.5, 0);
    return linear(be, be.layerNorm(avg, w.lnPost.w, w.lnPost.b, AUDIO_LN_EPS), w.proj);
  });
}
