/**
 * The evaluation report: the data written to report.json and its rendering as one self-contained HTML
 * page (inline CSS and SVG plots, no scripts, no external resources).
 */
import type { Modality } from "@masquant/core";

/** A quantized output directory that was evaluated. */
export interface ReportVariant {
  /** Label in tables and legends: method and scheme from masquant_config.json, e.g. "masquant w4a8". */
  label: string;
  dir: string;
  method: string;
  scheme: string;
}

/** Results of one quantized output on the calibration-format set. */
export interface CalibrationVariantResult {
  label: string;
  /**
   * SQNR in dB against the float model, per modality present in the set: entry l < layers is decoder
   * layer l's output, the last entry the final RMSNorm output; null where the error is exactly zero.
   */
  sqnr: Partial<Record<Modality, (number | null)[]>>;
  /** Mean over all tokens of KL(float ‖ quantized) of the next-token distributions (nats). */
  mean_kl: number;
  /** Relative Frobenius error of the final normed hidden states. */
  final_rel_error: number;
  /** Mean next-token NLL over the positions whose next token is text (nats); null without any. */
  text_nll: number | null;
}

/** The per-layer comparison on a calibration-format set. */
export interface CalibrationResult {
  file: string;
  samples: number;
  /** Decoder layers; every SQNR array has layers + 1 entries. */
  layers: number;
  tokens: Record<Modality, number>;
  /** Modalities with at least one token, in MODALITIES order. */
  modalities: Modality[];
  /** The float model's text NLL on the same tokens as `text_nll` (nats). */
  float_text_nll: number | null;
  variants: CalibrationVariantResult[];
}

/** Perplexity of one model on the text chunks. */
export interface PerplexityEntry {
  label: string;
  mean_nll: number;
  perplexity: number;
}

/** Perplexity on a plain text file cut into non-overlapping chunks. */
export interface PerplexityResult {
  file: string;
  seq_len: number;
  chunks: number;
  /** Predicted tokens (chunk length − 1 per chunk). */
  tokens: number;
  float: PerplexityEntry;
  variants: PerplexityEntry[];
}

/** Per-input-channel activation max-abs by modality at one layer of the float model (the paper's Fig. 1). */
export interface ActivationProfile {
  layer: number;
  samples: number;
  tokens: Record<Modality, number>;
  /** Input of q/k/v (input_layernorm output): per-channel max |x| per modality present. */
  qkv: Partial<Record<Modality, number[]>>;
  /** Input of gate/up (post_attention_layernorm output): per-channel max |x| per modality present. */
  gate_up: Partial<Record<Modality, number[]>>;
}

/** Everything report.json holds. */
export interface EvalReport {
  tool: { name: string; version: string };
  model: { dir: string; family: string; architecture: string; layers: number; hidden: number };
  backend: string;
  /** Every output is run in deploy mode: integer kernels on the unified weight plus CMC. */
  mode: "deploy";
  quantized: ReportVariant[];
  calibration: CalibrationResult | null;
  perplexity: PerplexityResult | null;
  activations: ActivationProfile | null;
}

// ---------------------------------------------------------------------------------------------------------
// SVG line charts

/** One line of a chart; null values leave a gap. */
export interface ChartSeries {
  name: string;
  color: string;
  values: readonly (number | null)[];
}

/** A line chart over the indices 0..n−1 of its series. */
export interface LineChartSpec {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  series: readonly ChartSeries[];
  /** Tick label of an x index (default: the index); ticks are chosen by {@link LineChartSpec.xTicks}. */
  xTickLabel?: (i: number) => string;
  /** Indices that get a tick (default: about eight evenly spaced round numbers). */
  xTicks?: readonly number[];
  /** Logarithmic y axis (non-positive values are left out). */
  logY?: boolean;
  /** Draw a marker on every point (for short series). */
  markers?: boolean;
  width?: number;
  height?: number;
}

/** Colours of methods (lines in the SQNR panels). */
export const METHOD_COLORS: readonly string[] = [
  "#1f5fa8",
  "#d1495b",
  "#2a9d5c",
  "#e08a1e",
  "#7b4fa3",
  "#6b4f3a",
  "#c2478f",
  "#5f6b73",
];

/** Colours of modalities (series in the activation panels). */
export const MODALITY_COLORS: Readonly<Record<Modality, string>> = {
  text: "#1f5fa8",
  vision: "#e0701e",
  audio: "#2a9d5c",
};

/** Escapes text for HTML and SVG content and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

/** Round tick values within [lo, hi] (steps of 1, 2 or 5 × 10^k, as close to `count` of them as these allow). */
export function niceTicks(lo: number, hi: number, count = 6): number[] {
  if (!(hi > lo)) {
    const d = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= d;
    hi += d;
  }
  const raw = (hi - lo) / Math.max(count - 1, 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const countFor = (step: number) => Math.floor(hi / step + 1e-9) - Math.ceil(lo / step - 1e-9) + 1;
  // The step whose tick count is nearest `count` (the larger step on a tie).
  let step = 10 * mag;
  for (const f of [5, 2, 1]) {
    if (Math.abs(countFor(f * mag) - count) < Math.abs(countFor(step) - count)) step = f * mag;
  }
  const first = Math.ceil(lo / step - 1e-9);
  const last = Math.floor(hi / step + 1e-9);
  const out: number[] = [];
  for (let k = first; k <= last; k++) out.push(k === 0 ? 0 : Number((k * step).toPrecision(12)));
  return out;
}

function fmtTick(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(0);
  return String(Number(v.toPrecision(6)));
}

function fmtLogTick(e: number): string {
  const v = 10 ** e;
  return e >= -3 && e <= 4 ? String(Number(v.toPrecision(3))) : `1e${e}`;
}

/** Renders a line chart as an inline `<svg>` element (no namespace URL, no external references). */
export function lineChartSvg(spec: LineChartSpec): string {
  const W = spec.width ?? 640;
  const H = spec.height ?? 340;
  const legendW = 170;
  const m = { left: 64, right: legendW + 12, top: spec.subtitle ? 50 : 34, bottom: 48 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const n = Math.max(1, ...spec.series.map((s) => s.values.length));
  const usable = (v: number | null): v is number => v !== null && Number.isFinite(v) && (!spec.logY || v > 0);
  const all = spec.series.flatMap((s) => s.values.filter(usable));
  const parts: string[] = [];
  parts.push(
    `<svg class="chart" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${
      escapeHtml(spec.title)
    }">`,
  );
  parts.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  parts.push(`<text class="title" x="${m.left}" y="18">${escapeHtml(spec.title)}</text>`);
  if (spec.subtitle) parts.push(`<text class="subtitle" x="${m.left}" y="36">${escapeHtml(spec.subtitle)}</text>`);
  // y scale
  let yTicks: number[];
  let yTickText: string[];
  let ty: (v: number) => number;
  if (spec.logY) {
    const lo = all.length ? Math.floor(Math.log10(Math.min(...all))) : 0;
    let hi = all.length ? Math.ceil(Math.log10(Math.max(...all))) : 1;
    if (hi <= lo) hi = lo + 1;
    const stride = Math.max(1, Math.ceil((hi - lo) / 8));
    yTicks = [];
    yTickText = [];
    for (let e = lo; e <= hi; e += stride) {
      // Over at most two decades, 2× and 5× ticks help reading values.
      for (const f of hi - lo <= 2 && e < hi ? [1, 2, 5] : [1]) {
        yTicks.push(e + Math.log10(f));
        yTickText.push(f === 1 ? fmtLogTick(e) : String(Number((f * 10 ** e).toPrecision(3))));
      }
    }
    ty = (v) => m.top + ph - ((Math.log10(v) - lo) / (hi - lo)) * ph;
    yTicks = yTicks.map((e) => 10 ** e);
  } else {
    const lo0 = all.length ? Math.min(...all) : 0;
    const hi0 = all.length ? Math.max(...all) : 1;
    const pad = (hi0 - lo0) * 0.06 || Math.abs(hi0) * 0.05 || 1;
    yTicks = niceTicks(lo0 - pad, hi0 + pad, 6);
    const lo = Math.min(yTicks[0], lo0 - pad);
    const hi = Math.max(yTicks[yTicks.length - 1], hi0 + pad);
    yTicks = yTicks.filter((v) => v >= lo && v <= hi);
    yTickText = yTicks.map(fmtTick);
    ty = (v) => m.top + ph - ((v - lo) / (hi - lo)) * ph;
  }
  // Short series with markers keep their end points off the axes.
  const inset = spec.markers ? 14 : 0;
  const tx = (i: number) => m.left + inset + (n === 1 ? (pw - 2 * inset) / 2 : (i / (n - 1)) * (pw - 2 * inset));
  // grid and axes
  parts.push(`<g class="grid">`);
  for (const v of yTicks) {
    const y = ty(v).toFixed(1);
    parts.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}"/>`);
  }
  parts.push(`</g>`);
  parts.push(`<g class="axis">`);
  parts.push(`<line x1="${m.left}" y1="${m.top + ph}" x2="${m.left + pw}" y2="${m.top + ph}"/>`);
  parts.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + ph}"/>`);
  yTicks.forEach((v, k) => {
    const y = ty(v);
    parts.push(`<line x1="${m.left - 4}" y1="${y.toFixed(1)}" x2="${m.left}" y2="${y.toFixed(1)}"/>`);
    parts.push(`<text class="ytick" x="${m.left - 7}" y="${(y + 4).toFixed(1)}">${escapeHtml(yTickText[k])}</text>`);
  });
  const xTicks = spec.xTicks ?? niceTicks(0, n - 1, 8).filter((v) => v >= 0 && v <= n - 1 && Number.isInteger(v));
  const xLabel = spec.xTickLabel ?? ((i: number) => String(i));
  for (const i of xTicks) {
    const x = tx(i).toFixed(1);
    parts.push(`<line x1="${x}" y1="${m.top + ph}" x2="${x}" y2="${m.top + ph + 4}"/>`);
    parts.push(`<text class="xtick" x="${x}" y="${m.top + ph + 17}">${escapeHtml(xLabel(i))}</text>`);
  }
  parts.push(`</g>`);
  parts.push(
    `<text class="xlabel" x="${(m.left + pw / 2).toFixed(1)}" y="${H - 8}">${escapeHtml(spec.xLabel)}</text>`,
  );
  const yc = (m.top + ph / 2).toFixed(1);
  parts.push(
    `<text class="ylabel" x="16" y="${yc}" transform="rotate(-90 16 ${yc})">${escapeHtml(spec.yLabel)}</text>`,
  );
  // series
  for (const s of spec.series) {
    const segments: string[][] = [];
    let cur: string[] = [];
    s.values.forEach((v, i) => {
      if (!usable(v)) {
        if (cur.length) segments.push(cur);
        cur = [];
        return;
      }
      cur.push(`${tx(i).toFixed(1)},${ty(v).toFixed(1)}`);
    });
    if (cur.length) segments.push(cur);
    const width = spec.markers ? 2 : 1;
    for (const seg of segments) {
      if (seg.length > 1) {
        parts.push(
          `<polyline fill="none" stroke="${s.color}" stroke-width="${width}" stroke-linejoin="round" points="${
            seg.join(" ")
          }"/>`,
        );
      }
    }
    if (spec.markers || segments.some((seg) => seg.length === 1)) {
      s.values.forEach((v, i) => {
        if (!usable(v)) return;
        parts.push(
          `<circle cx="${tx(i).toFixed(1)}" cy="${ty(v).toFixed(1)}" r="3.2" fill="${s.color}"><title>${
            escapeHtml(`${s.name}, ${xLabel(i)}: ${Number(v.toPrecision(5))}`)
          }</title></circle>`,
        );
      });
    }
  }
  // legend
  const lx = W - legendW;
  parts.push(`<g class="legend">`);
  spec.series.forEach((s, k) => {
    const y = m.top + 10 + k * 20;
    const name = s.name.length > 24 ? `${s.name.slice(0, 23)}…` : s.name;
    parts.push(`<line x1="${lx}" y1="${y - 4}" x2="${lx + 22}" y2="${y - 4}" stroke="${s.color}" stroke-width="3"/>`);
    parts.push(`<text x="${lx + 28}" y="${y}">${escapeHtml(name)}<title>${escapeHtml(s.name)}</title></text>`);
  });
  parts.push(`</g>`);
  if (!all.length) {
    parts.push(
      `<text class="empty" x="${(m.left + pw / 2).toFixed(1)}" y="${(m.top + ph / 2).toFixed(1)}">no data</text>`,
    );
  }
  parts.push(`</svg>`);
  return parts.join("\n");
}

// ---------------------------------------------------------------------------------------------------------
// The page

const MODALITY_TITLE: Record<Modality, string> = { text: "Text", vision: "Vision", audio: "Audio" };

function fmt(v: number | null | undefined, digits = 2): string {
  if (v === null || v === undefined) return "–";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "–";
  return v.toFixed(digits);
}

function fmtSci(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  return v.toExponential(3);
}

/** A table as rows of formatted cells; columns from `numericFrom` on are right-aligned numbers. */
interface TableData {
  head: string[];
  rows: string[][];
  numericFrom: number;
}

function htmlTable(t: TableData): string {
  const cls = (i: number) => i >= t.numericFrom ? ' class="num"' : "";
  const th = t.head.map((h, i) => `<th${cls(i)}>${escapeHtml(h)}</th>`).join("");
  const body = t.rows.map((r) => `<tr>${r.map((c, i) => `<td${cls(i)}>${escapeHtml(c)}</td>`).join("")}</tr>`)
    .join("\n");
  return `<table><thead><tr>${th}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

function markdownTable(t: TableData): string {
  const cell = (c: string) => c.replace(/\|/g, "\\|");
  const lines = [`| ${t.head.map(cell).join(" | ")} |`];
  lines.push(`|${t.head.map((_, i) => i >= t.numericFrom ? "---:" : "---").join("|")}|`);
  for (const r of t.rows) lines.push(`| ${r.map(cell).join(" | ")} |`);
  return lines.join("\n");
}

/** Label of SQNR array index i (layer index, or the final norm). */
function layerTickLabel(layers: number): (i: number) => string {
  return (i) => i === layers ? "norm" : String(i);
}

/** Tick positions of the layer axis: every layer when few, else a round stride, always the final norm. */
function layerTicks(layers: number): number[] {
  const stride = layers <= 16 ? 1 : layers <= 40 ? 4 : Math.ceil(layers / 10);
  const out: number[] = [];
  for (let i = 0; i < layers; i += stride) out.push(i);
  out.push(layers);
  return out;
}

/** Final-norm SQNR per modality, logit KL, final error and text NLL of each output. */
function summaryTable(c: CalibrationResult): TableData {
  const withNll = c.float_text_nll !== null;
  const head = ["model", ...c.modalities.map((m) => `${m} SQNR (dB)`), "logit KL (nats)", "final rel. error"];
  if (withNll) head.push("text NLL (nats)");
  const rows: string[][] = [];
  if (withNll) rows.push(["float", ...c.modalities.map(() => "–"), "–", "–", fmt(c.float_text_nll, 4)]);
  for (const v of c.variants) {
    const r = [v.label, ...c.modalities.map((m) => fmt(v.sqnr[m]?.[c.layers]))];
    r.push(fmtSci(v.mean_kl), fmtSci(v.final_rel_error));
    if (withNll) r.push(fmt(v.text_nll, 4));
    rows.push(r);
  }
  return { head, rows, numericFrom: 1 };
}

/** SQNR of every layer: one row per layer, one column per output and modality. */
function layerTable(c: CalibrationResult): TableData {
  const label = layerTickLabel(c.layers);
  const head = ["layer", ...c.variants.flatMap((v) => c.modalities.map((m) => `${v.label}, ${m}`))];
  const rows: string[][] = [];
  for (let l = 0; l <= c.layers; l++) {
    rows.push([label(l), ...c.variants.flatMap((v) => c.modalities.map((m) => fmt(v.sqnr[m]?.[l])))]);
  }
  return { head, rows, numericFrom: 1 };
}

function perplexityTable(p: PerplexityResult): TableData {
  const rows = [p.float, ...p.variants].map((e) => [e.label, fmt(e.mean_nll, 4), fmt(e.perplexity, 3)]);
  return { head: ["model", "mean NLL (nats)", "perplexity"], rows, numericFrom: 1 };
}

const GROUPS = [
  { key: "qkv" as const, short: "q/k/v", norm: "input_layernorm" },
  { key: "gate_up" as const, short: "gate/up", norm: "post_attention_layernorm" },
];

function presentModalities(tokens: Record<Modality, number>): Modality[] {
  return (["text", "vision", "audio"] as const).filter((m) => tokens[m] > 0);
}

/** Summary of the per-channel ranges: median and largest channel, their ratio, the top channels. */
function activationTable(a: ActivationProfile): TableData {
  const rows: string[][] = [];
  for (const g of GROUPS) {
    for (const m of presentModalities(a.tokens)) {
      const v = a[g.key][m];
      if (!v || !v.length) continue;
      const sorted = [...v].sort((x, y) => x - y);
      const median = sorted[Math.floor((sorted.length - 1) / 2)];
      const largest = sorted[sorted.length - 1];
      const top = v.map((x, i) => [x, i]).sort((p, q) => q[0] - p[0]).slice(0, 3).map((p) => `#${p[1]}`).join(" ");
      rows.push([g.short, m, fmt(median, 3), fmt(largest, 3), fmt(largest / Math.max(median, 1e-30), 1), top]);
    }
  }
  return {
    head: ["input of", "modality", "median channel", "largest channel", "largest / median", "top channels"],
    rows,
    numericFrom: 2,
  };
}

function calibrationSection(c: CalibrationResult): string {
  const out: string[] = [];
  out.push(`<h2>Per-layer SQNR against the float model</h2>`);
  const tok = c.modalities.map((m) => `${c.tokens[m]} ${m}`).join(", ");
  out.push(
    `<p>Calibration-format set <code>${escapeHtml(c.file)}</code>: ${c.samples} samples (${escapeHtml(tok)} tokens). ` +
      `SQNR of modality m at a layer = 10·log10(Σ o² / Σ (o − q)²) over the hidden-state elements of m's tokens ` +
      `(o: float model, q: quantized output in deploy mode, both fed the same layer-0 inputs); the last point is ` +
      `the final RMSNorm output. Higher is better. Logit KL = mean over all tokens of KL(float ‖ quantized).</p>`,
  );
  out.push(`<h3>Final normed hidden states and logits</h3>`);
  out.push(htmlTable(summaryTable(c)));
  out.push(`<div class="panels">`);
  for (const m of c.modalities) {
    const chart = lineChartSvg({
      title: `${MODALITY_TITLE[m]} tokens: SQNR per decoder layer`,
      subtitle: `deploy-mode hidden states of each method vs the float model (${c.tokens[m]} ${m} tokens)`,
      xLabel: "decoder layer output (norm = final RMSNorm)",
      yLabel: "SQNR (dB), higher is better",
      series: c.variants.map((v, k) => ({
        name: v.label,
        color: METHOD_COLORS[k % METHOD_COLORS.length],
        values: v.sqnr[m] ?? [],
      })),
      xTickLabel: layerTickLabel(c.layers),
      xTicks: layerTicks(c.layers),
      markers: c.layers <= 64,
    });
    out.push(`<figure>${chart}</figure>`);
  }
  out.push(`</div>`);
  out.push(`<details><summary>SQNR per layer, as a table (dB)</summary>`);
  out.push(`<div class="scroll">${htmlTable(layerTable(c))}</div></details>`);
  return out.join("\n");
}

function perplexitySection(p: PerplexityResult): string {
  return [
    `<h2>Perplexity</h2>`,
    `<p><code>${escapeHtml(p.file)}</code>: ${p.chunks} non-overlapping chunks of ${p.seq_len} tokens ` +
    `(${p.tokens} predicted tokens); perplexity = exp(mean next-token NLL). Lower is better.</p>`,
    htmlTable(perplexityTable(p)),
  ].join("\n");
}

function activationSection(a: ActivationProfile): string {
  const out: string[] = [];
  out.push(`<h2>Activation ranges by modality at layer ${a.layer}</h2>`);
  out.push(
    `<p>Float model on the calibration-format set (${a.samples} samples): for each input channel of the linears, ` +
      `the largest |x| over the tokens of each modality. Channels whose range differs between modalities are ` +
      `the ones a single smoothing vector cannot serve well.</p>`,
  );
  out.push(`<div class="panels">`);
  for (const g of GROUPS) {
    const data = a[g.key];
    const chart = lineChartSvg({
      title: `Layer ${a.layer}, ${g.short} input: per-channel max |x| by modality`,
      subtitle: `input of the ${g.short} linears (${g.norm} output), float model, log scale`,
      xLabel: "input channel",
      yLabel: "max |activation| (log scale)",
      series: presentModalities(a.tokens).filter((m) => data[m]).map((m) => ({
        name: `${m} (${a.tokens[m]} tokens)`,
        color: MODALITY_COLORS[m],
        values: data[m]!,
      })),
      logY: true,
      width: 1320,
      height: 360,
    });
    out.push(`<figure>${chart}</figure>`);
  }
  out.push(`</div>`);
  out.push(htmlTable(activationTable(a)));
  return out.join("\n");
}

/** The report's tables as markdown (what the eval command prints). */
export function markdownReport(r: EvalReport): string {
  const out: string[] = [];
  out.push(`# ${r.tool.name} eval: ${r.model.dir}`);
  out.push("");
  out.push(
    `${r.model.family}, ${r.model.layers} decoder layers, hidden ${r.model.hidden}; backend ${r.backend}; ` +
      `quantized outputs run in deploy mode (integer kernels + CMC):`,
  );
  for (const v of r.quantized) out.push(`- ${v.label}: ${v.dir}`);
  const c = r.calibration;
  if (c) {
    const tok = c.modalities.map((m) => `${c.tokens[m]} ${m}`).join(", ");
    out.push("", `## Final normed hidden states vs the float model (${c.file}: ${c.samples} samples, ${tok} tokens)`);
    out.push("", markdownTable(summaryTable(c)));
    out.push("", `## SQNR per layer (dB; "norm" is the final RMSNorm output)`);
    out.push("", markdownTable(layerTable(c)));
  }
  const p = r.perplexity;
  if (p) {
    out.push("", `## Perplexity (${p.file}: ${p.chunks} chunks of ${p.seq_len} tokens, ${p.tokens} predicted tokens)`);
    out.push("", markdownTable(perplexityTable(p)));
  }
  const a = r.activations;
  if (a) {
    out.push("", `## Per-channel activation max |x| by modality at layer ${a.layer} (float model)`);
    out.push("", markdownTable(activationTable(a)));
  }
  return out.join("\n") + "\n";
}

const STYLE = `
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 24px 32px;
  color: #1d232a; background: #f6f7f9; max-width: 1400px; }
h1 { font-size: 24px; margin: 0 0 6px; }
h2 { font-size: 19px; margin: 30px 0 8px; border-bottom: 1px solid #d5d9de; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p, li { font-size: 14px; line-height: 1.45; max-width: 1100px; }
code { font-size: 13px; background: #eceff2; padding: 1px 4px; border-radius: 3px; }
table { border-collapse: collapse; font-size: 13px; background: #fff; margin: 6px 0 12px; }
th, td { border: 1px solid #d5d9de; padding: 4px 9px; text-align: left; white-space: nowrap; }
th { background: #eef1f4; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; max-width: 100%; }
.panels { display: flex; flex-wrap: wrap; gap: 14px; }
summary { font-size: 14px; font-weight: 600; margin: 14px 0 6px; cursor: pointer; }
figure { margin: 0; background: #fff; border: 1px solid #d5d9de; border-radius: 4px; }
svg.chart { display: block; font-family: inherit; max-width: 100%; height: auto; }
svg .title { font-size: 14px; font-weight: 600; fill: #1d232a; }
svg .subtitle { font-size: 12px; fill: #56606b; }
svg .grid line { stroke: #e6e9ed; stroke-width: 1; }
svg .axis line { stroke: #5b6570; stroke-width: 1; }
svg .xtick { font-size: 11px; fill: #3a434d; text-anchor: middle; }
svg .ytick { font-size: 11px; fill: #3a434d; text-anchor: end; }
svg .xlabel, svg .ylabel { font-size: 12px; fill: #1d232a; text-anchor: middle; }
svg .legend text { font-size: 12px; fill: #1d232a; }
svg .empty { font-size: 13px; fill: #8a939c; text-anchor: middle; }
`;

/** Renders the report as a self-contained HTML page (inline CSS and SVG; no scripts or external resources). */
export function renderReportHtml(r: EvalReport): string {
  const out: string[] = [];
  out.push(`<!DOCTYPE html>`);
  out.push(`<html lang="en"><head><meta charset="utf-8">`);
  out.push(`<meta name="viewport" content="width=device-width, initial-scale=1">`);
  out.push(`<title>masquant evaluation: ${escapeHtml(r.model.dir)}</title>`);
  out.push(`<style>${STYLE}</style></head><body>`);
  out.push(`<h1>Quantized vs float: ${escapeHtml(r.model.dir)}</h1>`);
  out.push(
    `<p>Float model <code>${escapeHtml(r.model.dir)}</code> (${escapeHtml(r.model.family)}, ` +
      `${escapeHtml(r.model.architecture)}, ${r.model.layers} decoder layers, hidden ${r.model.hidden}); ` +
      `backend ${escapeHtml(r.backend)}; ${escapeHtml(r.tool.name)} ${escapeHtml(r.tool.version)}. ` +
      `Each quantized output runs in deploy mode, as deployed: integer kernels on the one stored weight per ` +
      `linear, activations divided by their modality's smoothing vector, and the low-rank cross-modal ` +
      `compensation for vision and audio tokens.</p>`,
  );
  out.push(`<ul>`);
  for (const v of r.quantized) {
    out.push(`<li><b>${escapeHtml(v.label)}</b>: <code>${escapeHtml(v.dir)}</code></li>`);
  }
  out.push(`</ul>`);
  if (r.calibration) out.push(calibrationSection(r.calibration));
  if (r.perplexity) out.push(perplexitySection(r.perplexity));
  if (r.activations) out.push(activationSection(r.activations));
  out.push(`</body></html>`);
  return out.join("\n") + "\n";
}
