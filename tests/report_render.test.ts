/**
 * report.html in a real browser: a report of realistic size (32 layers, text/vision/audio, three methods,
 * 4096 channels with planted outliers) is rendered by headless Chromium. The page must load with no console
 * message and no resource request, keep one <svg> per plot in the browser's DOM, and the screenshot must show
 * the lines of every method and modality in their colours. Needs /usr/bin/chromium (Debian `chromium`);
 * skipped with a visible message otherwise. The chart helpers (ticks, gaps, log axes, escaping) are checked
 * without a browser.
 */
import { assert, assertEquals } from "@std/assert";
import { Buffer } from "node:buffer";
import { existsSync } from "node:fs";
import { PNG } from "pngjs";
import { type Modality, Rng } from "@masquant/core";
import {
  type EvalReport,
  lineChartSvg,
  METHOD_COLORS,
  MODALITY_COLORS,
  niceTicks,
  renderReportHtml,
} from "../cli/report.ts";
import { tempDir } from "./fixtures/synthetic.ts";

const CHROMIUM = "/usr/bin/chromium";
const WIDTH = 1400;
const HEIGHT = 2600;

/** A deterministic report: SQNR falling with depth (methods apart by a few dB), spiky channel ranges. */
function syntheticReport(): EvalReport {
  const rng = new Rng(7);
  const layers = 32;
  const hidden = 4096;
  const modalities: Modality[] = ["text", "vision", "audio"];
  const labels = ["masquant w4a8", "smoothquant w4a8", "rtn w4a8"];
  const curve = (base: number) =>
    Array.from({ length: layers + 1 }, (_, l) => base - 0.35 * l + 0.3 * rng.normal() - (l === layers ? 2 : 0));
  const channels = (spikes: number[], scale: number) => {
    const v = Array.from({ length: hidden }, () => 0.5 + Math.abs(rng.normal()));
    for (const c of spikes) v[c] *= scale;
    return v;
  };
  const profile = () => ({
    text: channels([101, 2533], 40),
    vision: channels([777, 3001], 90),
    audio: channels([1500, 4000], 25),
  });
  return {
    tool: { name: "masquant", version: "0.1.0" },
    model: {
      dir: "llava-1.5-7b-hf",
      family: "llava",
      architecture: "LlavaForConditionalGeneration (llava)",
      layers,
      hidden,
    },
    backend: "cpu",
    mode: "deploy",
    quantized: labels.map((label) => ({
      label,
      dir: `out/${label.replace(" ", "-")}`,
      method: label.split(" ")[0],
      scheme: "w4a8",
    })),
    calibration: {
      file: "eval.jsonl",
      samples: 16,
      layers,
      tokens: { text: 900, vision: 9216, audio: 1500 },
      modalities,
      float_text_nll: 2.1,
      variants: labels.map((label, k) => ({
        label,
        sqnr: { text: curve(30 - 3 * k), vision: curve(34 - 4 * k), audio: curve(28 - 2 * k) },
        mean_kl: 0.01 * (k + 1),
        final_rel_error: 0.05 * (k + 1),
        text_nll: 2.1 + 0.05 * (k + 1),
      })),
    },
    perplexity: {
      file: "wiki.test.raw",
      seq_len: 512,
      chunks: 32,
      tokens: 32 * 511,
      float: { label: "float", mean_nll: 1.7, perplexity: Math.exp(1.7) },
      variants: labels.map((label, k) => ({
        label,
        mean_nll: 1.75 + 0.1 * k,
        perplexity: Math.exp(1.75 + 0.1 * k),
      })),
    },
    activations: {
      layer: 16,
      samples: 16,
      tokens: { text: 900, vision: 9216, audio: 1500 },
      qkv: profile(),
      gate_up: profile(),
    },
  };
}

function hexRgb(hex: string): [number, number, number] {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)) as [number, number, number];
}

/** Pixels of the screenshot within a small distance of a colour. */
function countColour(png: { data: Uint8Array }, hex: string): number {
  const [r, g, b] = hexRgb(hex);
  let n = 0;
  for (let i = 0; i < png.data.length; i += 4) {
    if (Math.abs(png.data[i] - r) + Math.abs(png.data[i + 1] - g) + Math.abs(png.data[i + 2] - b) <= 40) n++;
  }
  return n;
}

async function chromium(userDir: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(CHROMIUM, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      `--user-data-dir=${userDir}`,
      "--enable-logging=stderr",
      "--v=0",
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Lines of Chromium's log that report something the page did: console output, script errors, requests. */
function pageProblems(stderr: string): string[] {
  return stderr.split("\n").filter((l) => /CONSOLE|Uncaught|Failed to load resource|net::ERR_|Refused to/i.test(l));
}

const available = existsSync(CHROMIUM);
if (!available) console.log(`skipped: ${CHROMIUM} not present (report.html render check; apt-get install chromium)`);

Deno.test({
  name: "report.html renders in headless Chromium: no console output or requests, every plot drawn",
  ignore: !available,
  fn: async () => {
    const fx = await tempDir("masquant-render-");
    try {
      const html = renderReportHtml(syntheticReport());
      const page = `${fx.dir}/report.html`;
      await Deno.writeTextFile(page, html);
      const url = `file://${page}`;
      const dom = await chromium(await Deno.makeTempDir({ dir: fx.dir }), ["--dump-dom", url]);
      assertEquals(dom.code, 0, dom.stderr);
      assertEquals(pageProblems(dom.stderr), []);
      assertEquals((dom.stdout.match(/<svg\b/g) ?? []).length, 3 + 2, "three SQNR panels and two activation panels");
      for (const t of ["Audio tokens: SQNR per decoder layer", "Layer 16, gate/up input"]) {
        assert(dom.stdout.includes(t), `the browser's DOM lacks "${t}"`);
      }
      const shot = `${fx.dir}/report.png`;
      const res = await chromium(await Deno.makeTempDir({ dir: fx.dir }), [
        `--screenshot=${shot}`,
        `--window-size=${WIDTH},${HEIGHT}`,
        "--hide-scrollbars",
        url,
      ]);
      assertEquals(res.code, 0, res.stderr);
      assertEquals(pageProblems(res.stderr), []);
      const png = (PNG as unknown as { sync: { read(b: Buffer): { width: number; height: number; data: Uint8Array } } })
        .sync.read(Buffer.from(await Deno.readFile(shot)));
      assertEquals([png.width, png.height], [WIDTH, HEIGHT]);
      // Each method's line appears in three SQNR panels; each modality's series in two activation panels.
      for (const c of METHOD_COLORS.slice(0, 3)) assert(countColour(png, c) > 300, `method colour ${c} is missing`);
      for (const c of Object.values(MODALITY_COLORS)) {
        assert(countColour(png, c) > 300, `modality colour ${c} is missing`);
      }
    } finally {
      await fx.cleanup();
    }
  },
});

Deno.test("niceTicks: round steps of 1, 2 or 5 × 10^k covering the range", () => {
  assertEquals(niceTicks(0, 32, 8), [0, 5, 10, 15, 20, 25, 30]);
  assertEquals(niceTicks(21.3, 34.9, 6), [22, 24, 26, 28, 30, 32, 34]);
  assertEquals(niceTicks(-0.013, 0.021, 5), [-0.01, 0, 0.01, 0.02]);
  assertEquals(niceTicks(5, 5, 3), [4.5, 5, 5.5]);
});

Deno.test("line charts: gaps at null, log axes drop non-positive values, text is escaped", () => {
  const svg = lineChartSvg({
    title: "A <b> & 'c'",
    xLabel: "x",
    yLabel: "y",
    series: [{ name: 's "1"', color: "#000000", values: [1, 2, null, 4, 5] }],
  });
  assertEquals((svg.match(/<polyline/g) ?? []).length, 2, "a null splits the line");
  assert(svg.includes("A &lt;b&gt; &amp; &#39;c&#39;") && svg.includes("s &quot;1&quot;"));
  assert(!/https?:\/\//.test(svg), "no namespace or other URL");
  const log = lineChartSvg({
    title: "t",
    xLabel: "x",
    yLabel: "y",
    logY: true,
    series: [{ name: "s", color: "#000000", values: [0, 0.5, 20, -1, 3] }],
  });
  const pts = /points="([^"]*)"/.exec(log)![1].split(" ");
  assertEquals(pts.length, 2, "0 and −1 are left out of a log plot: the points 0.5, 20 form a line");
  assert(log.includes(">0.1<") && log.includes(">100<"), "decade ticks from 0.1 to 100");
  const html = renderReportHtml({
    ...syntheticReport(),
    quantized: [{ label: "x<script>", dir: "d&d", method: "m", scheme: "s" }],
  });
  assert(!html.includes("<script") && html.includes("x&lt;script&gt;") && html.includes("d&amp;d"));
});
