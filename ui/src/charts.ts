// Live charts with uPlot: one chart per figure, data as column arrays, setData on each tick
// over a fixed window (uPlot's streaming demos).
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export type Columns = Record<string, (number | null)[]>;

export interface Line {
  key: string;
  label: string;
  color: string;
  bars?: boolean;
}

function latest(values: (number | null)[] | undefined): number | null {
  if (!values) return null;
  for (let i = values.length - 1; i >= 0; i--) if (values[i] != null) return values[i]!;
  return null;
}

const WIDTH_FALLBACK = 360;

function width(host: HTMLElement): number {
  return Math.max(200, host.clientWidth || WIDTH_FALLBACK);
}

function fmtLatest(value: number | null): string {
  return value === null ? "–" : value.toLocaleString("en", { maximumFractionDigits: 3 });
}

export class LiveChart {
  readonly plot: uPlot;
  private readonly observer: ResizeObserver;
  // The latest value of each line in words, under the chart (what a screen reader reads).
  private readonly caption = document.createElement("p");

  constructor(
    readonly host: HTMLElement,
    title: string,
    private readonly lines: Line[],
    private readonly unit: string,
  ) {
    const options: uPlot.Options = {
      title,
      width: width(host),
      height: 170,
      cursor: { drag: { x: false, y: false } },
      legend: { live: false },
      scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min ?? 0), Math.max(1, max ?? 1) * 1.08] } },
      axes: [
        // One line of clock time: the window is minutes long, its date needs no saying.
        { stroke: "#8a94a6", space: 80, values: (_u, splits) => splits.map((t) => new Date(t * 1000).toLocaleTimeString("en-GB")) },
        { stroke: "#8a94a6", size: 50, label: unit },
      ],
      series: [
        {},
        ...lines.map((line) => ({
          label: line.label,
          stroke: line.color,
          width: 1.5,
          fill: line.bars ? line.color + "55" : undefined,
          paths: line.bars ? uPlot.paths.bars!({ size: [0.8, 8] }) : undefined,
          spanGaps: false,
          // Latency has no value in a second without calls: show lone points as dots.
          points: line.bars ? { show: false } : { size: 4 },
        })),
      ],
    };
    this.plot = new uPlot(options, [[]], host);
    this.caption.className = "latest";
    host.append(this.caption);
    this.observer = new ResizeObserver(() => this.plot.setSize({ width: width(host), height: 170 }));
    this.observer.observe(host);
  }

  set(times: number[], columns: Columns): void {
    this.plot.setData([times, ...this.lines.map((line) => columns[line.key] ?? [])] as uPlot.AlignedData);
    const now = this.lines.map((line) => {
      const values = columns[line.key] ?? [];
      const peak = values.reduce<number | null>((top, v) => (v != null && (top === null || v > top) ? v : top), null);
      return `${line.label} ${fmtLatest(latest(values))} (peak ${fmtLatest(peak)})`;
    });
    this.caption.textContent = `latest: ${now.join(", ")}${this.unit ? " " + this.unit : ""}`;
  }

  destroy(): void {
    this.observer.disconnect();
    this.plot.destroy();
  }
}

// A fixed window of points per column, appended tick by tick (the browser's side of the
// gateway's ring).
export class Window {
  times: number[] = [];
  columns: Columns = {};

  constructor(private readonly capacity: number) {}

  load(times: number[], columns: Columns): void {
    this.times = times.slice(-this.capacity);
    this.columns = Object.fromEntries(
      Object.entries(columns).map(([key, values]) => [key, values.slice(-this.capacity)]),
    );
  }

  push(t: number, point: Record<string, number | null>): void {
    if (this.times.length && t <= this.times[this.times.length - 1]!) return;
    this.times.push(t);
    for (const key of new Set([...Object.keys(this.columns), ...Object.keys(point)])) {
      const column = (this.columns[key] ??= this.times.map(() => null));
      column.push(point[key] ?? null);
      if (column.length > this.times.length) column.splice(0, column.length - this.times.length);
    }
    if (this.times.length > this.capacity) {
      this.times.shift();
      for (const column of Object.values(this.columns)) column.shift();
    }
  }
}

export interface IdleHistogram {
  binWidthSeconds: number;
  bins: number;
  counts: [number, number][];
  outOfBounds: number;
}

// The app's idle-time histogram as bars, with the pre-warm and keep-alive windows drawn as
// vertical lines: the keep-alive policy's own picture.
export class HistogramChart {
  readonly plot: uPlot;
  private marks: { prewarm: number | null; keepalive: number | null } = { prewarm: null, keepalive: null };
  private readonly observer: ResizeObserver;
  private readonly caption = document.createElement("p");

  constructor(readonly host: HTMLElement) {
    const draw = (u: uPlot): void => {
      const ctx = u.ctx;
      for (const [key, color, label] of [
        ["prewarm", "#f59e0b", "pre-warm"],
        ["keepalive", "#10b981", "keep-alive"],
      ] as const) {
        const value = this.marks[key];
        if (value === null) continue;
        // A window beyond the bins drawn is marked at the right edge, with its value.
        const right = u.bbox.left + u.bbox.width;
        const x = Math.min(Number.isFinite(value) ? u.valToPos(value / 60, "x", true) : right, right);
        const beyond = x >= right;
        ctx.save();
        ctx.strokeStyle = color;
        ctx.lineWidth = 2 * devicePixelRatio;
        ctx.setLineDash([6, 4]);
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.fillStyle = color;
        ctx.font = `${11 * devicePixelRatio}px sans-serif`;
        const text = beyond ? `${label} ${Number.isFinite(value) ? (value / 60).toFixed(0) + " min" : "∞"} →` : label;
        ctx.textAlign = beyond ? "right" : "left";
        ctx.fillText(text, beyond ? x - 4 : x + 4, u.bbox.top + 12 * devicePixelRatio * (key === "prewarm" ? 1 : 2));
        ctx.restore();
      }
    };
    this.plot = new uPlot(
      {
        title: "Idle times between invocations (the app's histogram)",
        width: width(host),
        height: 190,
        cursor: { drag: { x: false, y: false } },
        legend: { live: false },
        scales: { x: { time: false } },
        axes: [
          { stroke: "#8a94a6", label: "idle time, minutes" },
          { stroke: "#8a94a6", size: 50, label: "count" },
        ],
        series: [
          { label: "idle (min)" },
          {
            label: "idle times",
            stroke: "#6366f1",
            fill: "#6366f166",
            paths: uPlot.paths.bars!({ size: [0.9, 30], align: 1 }),
            points: { show: false },
          },
        ],
        hooks: { draw: [draw] },
      },
      [[], []],
      host,
    );
    this.caption.className = "latest";
    host.append(this.caption);
    this.observer = new ResizeObserver(() => this.plot.setSize({ width: width(host), height: 190 }));
    this.observer.observe(host);
  }

  set(histogram: IdleHistogram | null, prewarm: number | null, keepalive: number | null): void {
    this.marks = { prewarm, keepalive };
    const samples = histogram ? histogram.counts.reduce((a, [, c]) => a + c, 0) : 0;
    this.caption.textContent = histogram
      ? `${samples} idle times in range, ${histogram.outOfBounds} beyond it; bins of ${histogram.binWidthSeconds} s`
      : "No idle time recorded yet: the histogram fills as the app goes idle and is called again.";
    const xs: number[] = [];
    const ys: number[] = [];
    if (histogram) {
      const width = histogram.binWidthSeconds / 60;
      const used = new Map(histogram.counts);
      // The bins in use and the pre-warm window, at least ten: a keep-alive window far beyond
      // them (the whole range, 4 h, until the policy has learnt) is marked at the edge.
      const last = Math.max(
        ...histogram.counts.map(([i]) => i + 1),
        prewarm !== null ? Math.ceil(prewarm / histogram.binWidthSeconds) + 1 : 0,
        keepalive !== null && keepalive <= 60 * histogram.binWidthSeconds ? Math.ceil(keepalive / histogram.binWidthSeconds) + 1 : 0,
        10,
      );
      for (let i = 0; i <= Math.min(last + 1, histogram.bins); i++) {
        xs.push(i * width);
        ys.push(used.get(i) ?? 0);
      }
    }
    this.plot.setData([xs, ys]);
  }

  destroy(): void {
    this.observer.disconnect();
    this.plot.destroy();
  }
}
