// One function: its live charts, its app's keep-alive picture and cache, invoke, logs, remove.
import { ApiError, call, follow, getJson, invoke, type Status } from "./api";
import { HistogramChart, LiveChart, Window } from "./charts";
import { clear, field, fmt, h, seconds } from "./dom";
import { CAPACITY, DEFAULT_NAMESPACE, type FunctionStatus, type Live, type Series, type Tick } from "./live";

const LOG_LINES = 1000; // lines kept in the browser
const STAGES: Record<string, string> = {
  queue: "#f59e0b",
  "cold-start": "#ef4444",
  execution: "#6366f1",
  network: "#10b981",
};

export class FunctionView {
  readonly element: HTMLElement;
  private readonly window = new Window(CAPACITY);
  private readonly appWindow = new Window(CAPACITY);
  private readonly charts: LiveChart[] = [];
  private appCharts: LiveChart[] = [];
  private histogram: HistogramChart | null = null;
  private readonly controller = new AbortController();
  private readonly unsubscribe: () => void;
  private readonly summary = h("dl", { class: "summary" });
  private readonly keepAliveText = h("p", { class: "keepalive" });
  private app = "";
  private appPoint: Record<string, number | null> | null = null;
  private histogramTimer = 0;

  constructor(
    private readonly live: Live,
    readonly ref: string,
    private readonly status: FunctionStatus,
    private readonly removed: () => void,
  ) {
    const chartGrid = h("div", { class: "charts" });
    const appGrid = h("div", { class: "charts" });
    const histogramHost = h("div", { class: "chart wide", role: "figure", "aria-label": "Idle times" });
    this.element = h(
      "section",
      { class: "view function-view", "aria-label": `Function ${status.name}` },
      h(
        "div",
        { class: "toolbar" },
        h("a", { href: "#/functions", class: "back" }, "← Functions"),
        h("h2", {}, status.name),
        h("span", { class: "muted" }, `${status.namespace} · ${status.image}`),
        h("button", { type: "button", class: "danger", onclick: () => void this.remove() }, "Remove"),
      ),
      this.summary,
      h("h3", {}, "Live"),
      chartGrid,
      h("div", { class: "columns" }, this.invokePanel(), this.logsPanel()),
      h("h3", {}, "Keep-alive and pre-warm"),
      this.keepAliveText,
      histogramHost,
      h("h3", {}, "Cache of the app"),
      appGrid,
    );
    const charts: [string, { key: string; label: string; color: string; bars?: boolean }[], string][] = [
      ["Requests per second", [{ key: "rate", label: "req/s", color: "#6366f1" }], "req/s"],
      ["Latency", [{ key: "p50", label: "p50", color: "#10b981" }, { key: "p99", label: "p99", color: "#ef4444" }], "ms"],
      [
        "Cold starts and errors",
        [
          { key: "coldStarts", label: "cold starts", color: "#3b82f6", bars: true },
          { key: "clientErrors", label: "4xx", color: "#f59e0b", bars: true },
          { key: "serverErrors", label: "5xx", color: "#ef4444", bars: true },
        ],
        "per s",
      ],
      [
        "Instances",
        [{ key: "instances", label: "ready", color: "#10b981" }, { key: "inflight", label: "in flight", color: "#6366f1" }],
        "",
      ],
    ];
    for (const [title, lines, unit] of charts) {
      const host = h("div", { class: "chart", role: "figure", "aria-label": title });
      chartGrid.append(host);
      this.charts.push(new LiveChart(host, title, lines, unit));
    }
    requestAnimationFrame(() => {
      this.histogram = new HistogramChart(histogramHost);
      this.appCharts = [
        ["Cache hit rate", [{ key: "hitRate", label: "hit rate", color: "#10b981" }], ""],
        ["Bytes cached", [{ key: "cacheBytes", label: "bytes", color: "#6366f1" }], "bytes"],
        ["Pre-warmed objects read", [{ key: "prewarmHits", label: "pre-warm hits", color: "#f59e0b", bars: true }], "per s"],
      ].map(([title, lines, unit]) => {
        const host = h("div", { class: "chart", role: "figure", "aria-label": title as string });
        appGrid.append(host);
        return new LiveChart(host, title as string, lines as { key: string; label: string; color: string }[], unit as string);
      });
      void this.load();
    });
    this.unsubscribe = live.on((tick) => this.onTick(tick));
    this.renderSummary();
  }

  destroy(): void {
    this.controller.abort();
    this.unsubscribe();
    clearInterval(this.histogramTimer);
    [...this.charts, ...this.appCharts].forEach((chart) => chart.destroy());
    this.histogram?.destroy();
  }

  private query(): string {
    const ns = this.status.namespace;
    return `name=${encodeURIComponent(this.status.name)}${ns === DEFAULT_NAMESPACE ? "" : `&namespace=${encodeURIComponent(ns)}`}`;
  }

  private async load(): Promise<void> {
    const series = await getJson<Series>(`/system/dashboard/series?${this.query()}`, this.controller.signal);
    this.window.load(series.t, series.function ?? {});
    this.app = String(series.app?.name ?? "");
    const { name: _name, ...columns } = series.app ?? {};
    this.appWindow.load(series.t, columns as Record<string, (number | null)[]>);
    const last = series.t.length - 1;
    if (last >= 0 && series.app?.name !== undefined) {
      this.appPoint = Object.fromEntries(
        Object.entries(columns as Record<string, (number | null)[]>).map(([key, values]) => [key, values[last] ?? null]),
      );
    }
    this.draw();
    this.drawHistogram(series);
    // The histogram changes only when the app goes idle and is called again: every 5 s is plenty.
    this.histogramTimer = window.setInterval(() => {
      getJson<Series>(`/system/dashboard/series?${this.query()}`, this.controller.signal)
        .then((fresh) => this.drawHistogram(fresh))
        .catch(() => undefined);
    }, 5000);
  }

  private drawHistogram(series: Series): void {
    const row = this.live.rows.get(this.ref);
    const policy = row !== undefined && row.loaded !== null;
    // A keep-alive of null is "never unloaded" (JSON has no infinity).
    this.histogram?.set(
      series.idleHistogram ?? null,
      policy ? row.prewarmSeconds : null,
      policy ? (row.keepaliveSeconds ?? Infinity) : null,
    );
  }

  private onTick(tick: Tick | null): void {
    this.renderSummary();
    if (!tick) return;
    // A tick names only what changed: a function or app it leaves out had the same point as
    // in the last second (the row the live state holds; the app's point kept here).
    const point = this.live.rows.get(this.ref)?.point;
    if (point) this.window.push(tick.t, point);
    this.appPoint = tick.apps[this.app] ?? this.appPoint;
    if (this.appPoint) this.appWindow.push(tick.t, this.appPoint);
    this.draw();
  }

  private draw(): void {
    for (const chart of this.charts) chart.set(this.window.times, this.window.columns);
    for (const chart of this.appCharts) chart.set(this.appWindow.times, this.appWindow.columns);
  }

  private renderSummary(): void {
    const row = this.live.rows.get(this.ref);
    const items: [string, string][] = [
      ["Invocations", fmt(row?.invocations ?? this.status.invocationCount, 0)],
      ["Ready", `${row?.available ?? this.status.availableReplicas}/${row?.replicas ?? this.status.replicas}`],
      ["Req/s (1 min)", fmt(row?.rate, 2)],
      ["p50 / p99 (1 min)", `${fmt(row?.p50, 2)} / ${fmt(row?.p99, 2)} ms`],
      ["Errors (1 min)", row?.errorRate == null ? "–" : `${fmt(row.errorRate * 100)}%`],
      ["Cold starts", fmt(row?.coldStarts ?? 0, 0)],
    ];
    clear(this.summary, ...items.flatMap(([k, v]) => [h("div", {}, h("dt", {}, k), h("dd", { "data-figure": k }, v))]));
    if (!row || row.loaded === null) {
      this.keepAliveText.textContent = "No keep-alive policy: the function keeps its minimum of instances.";
    } else {
      this.keepAliveText.textContent =
        `App ${row.app} is ${row.loaded ? "loaded" : "unloaded"}; after each execution it is ` +
        `pre-warmed after ${seconds(row.prewarmSeconds)} and kept alive until ` +
        `${seconds(row.keepaliveSeconds ?? Infinity)} (rule: ${row.rule ?? "–"}).`;
    }
  }

  private async remove(): Promise<void> {
    if (!confirm(`Remove function ${this.status.name}?`)) return;
    await call("DELETE", "/system/functions", { functionName: this.status.name, namespace: this.status.namespace });
    await this.live.refreshFunctions();
    this.removed();
  }

  // --- invoke -------------------------------------------------------------------------------

  private invokePanel(): HTMLElement {
    const method = h("select", {}, ...["POST", "GET", "PUT", "PATCH", "DELETE"].map((m) => h("option", { value: m }, m)));
    const path = h("input", { type: "text", placeholder: "/", value: "" });
    const query = h("input", { type: "text", placeholder: "a=1&b=2" });
    const headers = h("textarea", { rows: 2, placeholder: "Content-Type: application/json" });
    const body = h("textarea", { rows: 5, placeholder: '{"name": "world"}', class: "code" });
    const result = h("div", { class: "result", "aria-live": "polite" });
    const form = h(
      "form",
      { class: "panel", "aria-label": "Invoke" },
      h("h3", {}, "Invoke"),
      h("div", { class: "row" }, field("Method", method, "invoke-method"), field("Path", path, "invoke-path"), field("Query", query, "invoke-query")),
      field("Headers", headers, "invoke-headers", "One a line: Name: value"),
      field("Request body", body, "invoke-body"),
      h("button", { type: "submit", class: "primary" }, "Invoke"),
      result,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.send(method.value, path.value, query.value, headers.value, body.value, result);
    });
    return form;
  }

  private async send(method: string, path: string, query: string, headerText: string, body: string, result: HTMLElement): Promise<void> {
    const base = `/function/${encodeURIComponent(this.status.name)}${this.status.namespace === DEFAULT_NAMESPACE ? "" : "." + encodeURIComponent(this.status.namespace)}`;
    const suffix = path && path !== "/" ? (path.startsWith("/") ? path : "/" + path) : "";
    const url = base + suffix + (query ? "?" + query.replace(/^\?/, "") : "");
    const headers: [string, string][] = headerText
      .split("\n")
      .map((line) => line.split(/:(.*)/s).map((part) => part.trim()))
      .filter((parts): parts is [string, string] => !!parts[0] && parts.length >= 2)
      .map(([k, v]) => [k, v ?? ""]);
    if (body && !headers.some(([k]) => k.toLowerCase() === "content-type") && /^\s*[[{]/.test(body)) {
      headers.push(["Content-Type", "application/json"]);
    }
    clear(result, h("p", { class: "muted" }, "Invoking…"));
    const started = performance.now();
    let response: Response;
    try {
      response = await invoke(method, url, headers, ["GET", "HEAD"].includes(method) ? null : body);
    } catch (error) {
      clear(result, h("p", { class: "error" }, `The request failed: ${String(error)}`));
      return;
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    const elapsed = performance.now() - started;
    const type = response.headers.get("Content-Type") ?? "";
    clear(
      result,
      h(
        "p",
        { class: "status-line" },
        h("strong", { class: response.ok ? "ok" : "error", "data-testid": "invoke-status" }, `${response.status} ${response.statusText}`),
        ` · ${fmt(elapsed, 1)} ms in the browser · ${bytes.length} bytes`,
      ),
      timingBar(response.headers.get("Server-Timing")),
      h("details", {}, h("summary", {}, "Response headers"),
        h("dl", { class: "headers" }, ...[...response.headers].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
      bodyView(bytes, type),
    );
  }

  // --- logs ---------------------------------------------------------------------------------

  private logsPanel(): HTMLElement {
    const lines = h("ol", { class: "log", "aria-label": "Log lines" });
    const state = h("span", { class: "stream-state muted" }, "");
    const instance = h("select", { "aria-label": "Instance" }, h("option", { value: "" }, "every instance"));
    const stream = h(
      "select",
      { "aria-label": "Stream" },
      h("option", { value: "" }, "every stream"),
      ...["stdout", "stderr", "worker"].map((name) => h("option", { value: name }, name)),
    );
    const text = h("input", { type: "search", placeholder: "text", "aria-label": "Filter log lines" });
    const pause = h("button", { type: "button" }, "Pause");
    let paused = false;
    let held: HTMLElement[] = [];
    const instances = new Set<string>();
    const matches = (li: HTMLElement): boolean =>
      (!instance.value || li.dataset.instance === instance.value) &&
      (!stream.value || li.dataset.stream === stream.value) &&
      (!text.value || (li.textContent ?? "").toLowerCase().includes(text.value.toLowerCase()));
    const refilter = (): void => lines.querySelectorAll("li").forEach((li) => (li.hidden = !matches(li)));
    instance.addEventListener("change", refilter);
    stream.addEventListener("change", refilter);
    text.addEventListener("input", refilter);
    const add = (items: HTMLElement[]): void => {
      const atBottom = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 8;
      lines.append(...items);
      while (lines.childElementCount > LOG_LINES) lines.firstElementChild!.remove();
      if (atBottom) lines.scrollTop = lines.scrollHeight;
    };
    pause.addEventListener("click", () => {
      paused = !paused;
      pause.textContent = paused ? "Follow" : "Pause";
      if (!paused) {
        add(held);
        held = [];
      }
    });
    const ns = this.status.namespace === DEFAULT_NAMESPACE ? "" : `&namespace=${encodeURIComponent(this.status.namespace)}`;
    let first = true;
    void follow(
      `/system/logs?name=${encodeURIComponent(this.status.name)}${ns}&tail=100&follow=true`,
      "application/x-ndjson",
      (line) => {
        if (!line.trim()) return;
        const entry = JSON.parse(line) as { instance: string; timestamp: string; text: string; stream?: string };
        if (!instances.has(entry.instance)) {
          instances.add(entry.instance);
          instance.append(h("option", { value: entry.instance }, entry.instance));
        }
        const li = h("li", {}, h("time", {}, entry.timestamp.slice(11, 23)), h("span", { class: "inst" }, entry.instance.slice(-8)), entry.text);
        li.dataset.instance = entry.instance;
        li.dataset.stream = entry.stream ?? "stdout";
        if (entry.stream === "stderr" || entry.stream === "worker") li.classList.add(entry.stream);
        li.hidden = !matches(li);
        if (paused) held.splice(0, Math.max(0, held.length - LOG_LINES), li);
        else add([li]);
      },
      (status: Status) => {
        state.textContent = status === "live" ? "following" : status;
        // After a reconnect the tail is sent again: start over rather than repeat lines.
        if (status === "live" && !first) clear(lines);
        if (status === "live") first = false;
      },
      this.controller.signal,
    ).catch(() => undefined);
    return h(
      "section",
      { class: "panel", "aria-label": "Logs" },
      h("div", { class: "toolbar" }, h("h3", {}, "Logs"), state, instance, stream, text, pause),
      lines,
    );
  }
}

// The Server-Timing stages as one bar, each stage's width its share of the total.
export function timingBar(header: string | null): HTMLElement {
  if (!header) return h("p", { class: "muted" }, "No Server-Timing header.");
  const stages = header.split(",").map((part) => {
    const [name, ...params] = part.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    return { name: name!.trim(), ms: dur ? Number(dur.slice(4)) : 0 };
  });
  const total = stages.find((s) => s.name === "total")?.ms ?? stages.reduce((a, s) => a + s.ms, 0);
  const parts = stages.filter((s) => s.name !== "total");
  const sum = parts.reduce((a, s) => a + s.ms, 0) || 1;
  const label = parts.map((s) => `${s.name} ${fmt(s.ms, 3)} ms`).join(", ");
  return h(
    "figure",
    { class: "timing" },
    h(
      "div",
      { class: "timing-bar", role: "img", "aria-label": `Server-Timing: ${label}, total ${fmt(total, 3)} ms` },
      ...parts.map((s) =>
        h("span", {
          class: "stage",
          title: `${s.name}: ${fmt(s.ms, 3)} ms`,
          style: `flex-grow:${Math.max(s.ms / sum, 0.004)};background:${STAGES[s.name] ?? "#8a94a6"}`,
        }),
      ),
    ),
    h(
      "figcaption",
      {},
      ...parts.map((s) =>
        h("span", { class: "legend" }, h("i", { style: `background:${STAGES[s.name] ?? "#8a94a6"}` }), `${s.name} ${fmt(s.ms, 3)} ms`),
      ),
      h("span", { class: "legend" }, `total ${fmt(total, 3)} ms`),
    ),
  );
}

function bodyView(bytes: Uint8Array, type: string): HTMLElement {
  let text: string | null = null;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    text = null;
  }
  if (text === null || /application\/octet-stream|image\/|audio\/|video\//.test(type)) {
    const url = URL.createObjectURL(new Blob([bytes as BlobPart], { type: type || "application/octet-stream" }));
    return h("p", {}, "Binary body: ", h("a", { href: url, download: "response.bin" }, `download ${bytes.length} bytes`));
  }
  if (/json/.test(type) || /^\s*[[{]/.test(text)) {
    try {
      text = JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      // not JSON after all: show it as it came
    }
  }
  return h("pre", { class: "body code", "aria-label": "Response body" }, text);
}

export { ApiError };
