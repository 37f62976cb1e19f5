/**
 * Progress on stderr: a live status line (layer i of N, epoch, loss, ETA, peak memory) when stderr is a
 * terminal, plain log lines otherwise (CI logs, pipes).
 */
import type { Backend, PipelineEvent } from "@masquant/core";

/** A progress display. */
export class Progress {
  readonly #tty: boolean;
  readonly #enc = new TextEncoder();
  #peakRss = 0;
  #peakBackend = 0;
  #start = performance.now();
  #layerTimes: number[] = [];
  #lastLine = 0;
  #live = false;

  constructor(readonly backend: Backend, opts: { tty?: boolean } = {}) {
    this.#tty = opts.tty ?? Deno.stderr.isTerminal();
  }

  /** Peak resident memory seen so far (bytes) and peak backend memory. */
  get peaks(): { rss: number; backend: number } {
    this.#sample();
    return { rss: this.#peakRss, backend: this.#peakBackend };
  }

  #sample(): void {
    this.#peakRss = Math.max(this.#peakRss, Deno.memoryUsage().rss);
    const m = this.backend.memory();
    this.#peakBackend = Math.max(this.#peakBackend, m.liveBytes + m.pooledBytes);
  }

  #write(s: string): void {
    Deno.stderr.writeSync(this.#enc.encode(s));
  }

  /** A log line (ends any live line first). */
  log(msg: string): void {
    if (this.#live) {
      this.#write("\r\x1b[2K");
      this.#live = false;
    }
    this.#write(`${msg}\n`);
  }

  /** A status update: live on a terminal, throttled log lines otherwise. */
  status(msg: string, force = false): void {
    this.#sample();
    const mem = `peak ${(this.#peakRss / 2 ** 20).toFixed(0)} MiB`;
    const line = `${msg} · ${mem}`;
    if (this.#tty) {
      this.#write(`\r\x1b[2K${line}`);
      this.#live = true;
      return;
    }
    const now = performance.now();
    if (force || now - this.#lastLine > 5000) {
      this.#lastLine = now;
      this.#write(`${line}\n`);
    }
  }

  /** Handles a pipeline event. */
  event(e: PipelineEvent): void {
    const eta = () => {
      if (!this.#layerTimes.length) return "ETA –";
      const avg = this.#layerTimes.reduce((a, b) => a + b, 0) / this.#layerTimes.length;
      const left = Math.max(0, (e.layers - e.layer - (e.kind === "layer-done" ? 1 : 0)) * avg);
      return `ETA ${fmtSeconds(left)}`;
    };
    if (e.kind === "layer-start") this.status(`layer ${e.layer + 1}/${e.layers} · statistics · ${eta()}`, true);
    else if (e.kind === "mas-step") {
      this.status(
        `layer ${e.layer + 1}/${e.layers} · epoch ${e.epoch + 1}/${e.epochs} · step ${e.step + 1}/${e.steps} · loss ${
          e.loss.toExponential(3)
        } · ${eta()}`,
      );
    } else {
      this.#layerTimes.push(e.seconds);
      const loss = e.loss?.length ? ` · loss ${e.loss.map((l) => l.toExponential(3)).join(" → ")}` : "";
      this.log(`layer ${e.layer + 1}/${e.layers} done in ${e.seconds.toFixed(1)} s${loss} · ${eta()}`);
    }
  }

  /** Seconds since the display was created. */
  elapsed(): number {
    return (performance.now() - this.#start) / 1e3;
  }
}

/** 83 → "1m23s". */
export function fmtSeconds(s: number): string {
  if (s < 60) return `${s.toFixed(0)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s - 60 * m)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}
