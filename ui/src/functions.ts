// The functions table: live, sortable, filterable. With hundreds of functions, a tick updates
// only the cells of rows that changed, and moves rows only when the order changed.
import { fmt, h, seconds } from "./dom";
import { DEFAULT_NAMESPACE, refOf, type FunctionStatus, type Live, type Row } from "./live";

interface Column {
  key: string;
  label: string;
  numeric?: boolean;
  value: (status: FunctionStatus, row: Row | undefined) => string | number | null;
  text?: (status: FunctionStatus, row: Row | undefined) => string;
}

function keepAlive(row: Row | undefined): string {
  if (!row || row.loaded === null) return "no policy";
  const state = row.loaded ? "loaded" : "unloaded";
  const windows = `${seconds(row.prewarmSeconds)} / ${seconds(row.keepaliveSeconds ?? Infinity)}`;
  return `${state} · ${windows}${row.rule ? ` · ${row.rule}` : ""}`;
}

const COLUMNS: Column[] = [
  { key: "name", label: "Name", value: (s) => s.name },
  { key: "namespace", label: "Namespace", value: (s) => s.namespace },
  { key: "image", label: "Image", value: (s) => s.image },
  {
    key: "replicas",
    label: "Ready",
    numeric: true,
    value: (s, r) => r?.available ?? s.availableReplicas,
    text: (s, r) => `${r?.available ?? s.availableReplicas}/${r?.replicas ?? s.replicas}`,
  },
  { key: "invocations", label: "Invocations", numeric: true, value: (s, r) => r?.invocations ?? s.invocationCount },
  { key: "rate", label: "Req/s (1 min)", numeric: true, value: (_s, r) => r?.rate ?? null, text: (_s, r) => fmt(r?.rate, 2) },
  {
    key: "errorRate",
    label: "Errors",
    numeric: true,
    value: (_s, r) => r?.errorRate ?? null,
    text: (_s, r) => (r?.errorRate == null ? "–" : `${fmt(r.errorRate * 100)}%`),
  },
  { key: "p50", label: "p50 ms", numeric: true, value: (_s, r) => r?.p50 ?? null, text: (_s, r) => fmt(r?.p50, 2) },
  { key: "p99", label: "p99 ms", numeric: true, value: (_s, r) => r?.p99 ?? null, text: (_s, r) => fmt(r?.p99, 2) },
  { key: "coldStarts", label: "Cold starts", numeric: true, value: (_s, r) => r?.coldStarts ?? 0 },
  { key: "keepalive", label: "App: pre-warm / keep-alive", value: (_s, r) => keepAlive(r) },
];

interface Line {
  tr: HTMLTableRowElement;
  cells: HTMLTableCellElement[];
  key: string; // what its cells show, to skip unchanged rows
  status: FunctionStatus | null; // the status its haystack was made from
  haystack: string; // what the filter searches, lower case
}

export class FunctionsView {
  readonly element: HTMLElement;
  private readonly body = h("tbody");
  private readonly empty = h("tr", {}, h("td", { colSpan: COLUMNS.length, class: "empty" }, "No functions yet: deploy one."));
  private readonly lines = new Map<string, Line>();
  private readonly count = h("span", { class: "muted" });
  private readonly filter = h("input", {
    type: "search",
    placeholder: "Filter by name, namespace, image or label",
    "aria-label": "Filter functions",
  });
  private sortKey = "name";
  private descending = false;
  private order: string[] = [];
  private readonly headers = new Map<string, HTMLButtonElement>();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly live: Live,
    private readonly open: (ref: string) => void,
  ) {
    this.filter.addEventListener("input", () => this.render(false));
    const head = h(
      "tr",
      {},
      ...COLUMNS.map((column) => {
        const button = h("button", { class: "sort", type: "button", onclick: () => this.sortBy(column.key) }, column.label);
        this.headers.set(column.key, button);
        return h("th", { scope: "col", class: column.numeric ? "num" : "" }, button);
      }),
    );
    this.element = h(
      "section",
      { class: "view functions-view", "aria-label": "Functions" },
      h("div", { class: "toolbar" }, h("h2", {}, "Functions"), this.count, this.filter,
        h("a", { class: "button primary", href: "#/deploy" }, "Deploy a function")),
      h("div", { class: "table-wrap" }, h("table", { class: "functions" }, h("thead", {}, head), this.body)),
    );
    // Ticks name the rows that changed; renders wait for the next frame, so that ticks that
    // arrive together (after a reconnect, or a busy tab) cost one.
    this.unsubscribe = live.on((tick) => {
      if (tick) tick.rows.forEach((row) => this.dirty.add(row.ref));
      else this.everything = true;
      this.schedule();
    });
    this.render(true);
  }

  private dirty = new Set<string>();
  private everything = true;
  private frame = 0;

  private schedule(): void {
    this.frame ||= requestAnimationFrame(() => {
      this.frame = 0;
      this.render(false);
    });
  }

  destroy(): void {
    this.unsubscribe();
    cancelAnimationFrame(this.frame);
  }

  private sortBy(key: string): void {
    this.descending = this.sortKey === key ? !this.descending : COLUMNS.find((c) => c.key === key)?.numeric === true;
    this.sortKey = key;
    this.render(true);
  }

  private render(force: boolean): void {
    const { functions, rows } = this.live;
    for (const [ref, line] of this.lines) {
      if (!functions.has(ref)) {
        line.tr.remove();
        this.lines.delete(ref);
      }
    }
    const changed = this.everything || force ? functions.keys() : this.dirty.values();
    for (const ref of changed) {
      const status = functions.get(ref);
      if (status) this.update(ref, status, rows.get(ref));
    }
    this.dirty.clear();
    this.everything = false;
    const words = this.filter.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const column = COLUMNS.find((c) => c.key === this.sortKey)!;
    const refs = [...functions.keys()];
    const value = (ref: string): string | number | null => column.value(functions.get(ref)!, rows.get(ref));
    refs.sort((a, b) => {
      const x = value(a);
      const y = value(b);
      const order =
        x === y ? a.localeCompare(b)
        : x === null ? 1
        : y === null ? -1
        : typeof x === "number" && typeof y === "number" ? x - y
        : String(x).localeCompare(String(y));
      return this.descending && x !== null && y !== null ? -order : order;
    });
    if (force || refs.join("\n") !== this.order.join("\n")) {
      this.order = refs;
      this.body.append(...refs.map((ref) => this.lines.get(ref)!.tr));
    }
    let shown = 0;
    for (const ref of refs) {
      const line = this.lines.get(ref)!;
      const visible = words.every((word) => line.haystack.includes(word));
      if (line.tr.hidden === visible) line.tr.hidden = !visible;
      shown += visible ? 1 : 0;
    }
    const count = `${shown} of ${functions.size}`;
    if (this.count.textContent !== count) this.count.textContent = count;
    for (const [key, button] of this.headers) {
      const sort = key === this.sortKey ? (this.descending ? "descending" : "ascending") : "none";
      const th = button.closest("th")!;
      if (th.getAttribute("aria-sort") !== sort) th.setAttribute("aria-sort", sort);
    }
    if (!functions.size) this.body.append(this.empty);
    else this.empty.remove();
  }

  private update(ref: string, status: FunctionStatus, row: Row | undefined): void {
    const texts = COLUMNS.map((c) => (c.text ? c.text(status, row) : String(c.value(status, row) ?? "–")));
    const key = texts.join("\u0000");
    let line = this.lines.get(ref);
    if (!line) {
      const cells = COLUMNS.map((c) => h("td", { class: c.numeric ? "num" : "", "data-column": c.key }));
      const tr = h("tr", { "data-ref": ref }, ...cells);
      const link = h("a", { href: `#/function/${encodeURIComponent(ref)}` });
      link.addEventListener("click", (event) => {
        event.preventDefault();
        this.open(ref);
      });
      cells[0]!.append(link);
      line = { tr, cells, key: "", status: null, haystack: "" };
      this.lines.set(ref, line);
    }
    if (line.status !== status) {
      line.status = status;
      line.haystack = [status.name, status.namespace, status.image, ...Object.entries(status.labels ?? {}).flat()]
        .join(" ")
        .toLowerCase();
    }
    if (line.key === key) return;
    line.key = key;
    texts.forEach((text, i) => {
      const cell = line!.cells[i]!;
      if (i === 0) cell.firstElementChild!.textContent = text;
      else if (cell.textContent !== text) cell.textContent = text;
    });
    line.tr.classList.toggle("unloaded", row?.loaded === false);
    line.tr.classList.toggle("other-ns", status.namespace !== DEFAULT_NAMESPACE);
  }
}

export { refOf };
