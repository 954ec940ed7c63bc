// The dashboard's live state: every function's row and the gateway's series, kept current by
// the gateway's Server-Sent Events (/system/dashboard/events), reconnected with backoff.
import { follow, getJson, type Status } from "./api";
import { Window, type Columns } from "./charts";

export const DEFAULT_NAMESPACE = "openfaas-fn";
export const CAPACITY = 300;

export type Point = Record<string, number | null>;

export interface Row {
  ref: string;
  invocations: number;
  rate: number | null;
  errorRate: number | null;
  p50: number | null;
  p99: number | null;
  coldStarts: number;
  replicas: number;
  available: number;
  inflight: number;
  queued: number;
  app: string;
  loaded: boolean | null;
  prewarmSeconds: number | null;
  keepaliveSeconds: number | null;
  rule: string | null;
  point: Point;
}

export interface Tick {
  t: number;
  gateway: Point;
  rows: Row[];
  apps: Record<string, Point>;
  removed: string[];
}

export interface FunctionStatus {
  name: string;
  namespace: string;
  image: string;
  replicas: number;
  availableReplicas: number;
  invocationCount: number;
  envVars?: Record<string, string>;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  secrets?: string[];
  limits?: { memory?: string; cpu?: string };
  keepAlive?: Record<string, unknown>;
}

export interface Series {
  interval: number;
  t: number[];
  gateway?: Columns;
  rows?: Row[];
  function?: Columns;
  app?: Columns & { name?: string };
  idleHistogram?: import("./charts").IdleHistogram | null;
}

export function refOf(name: string, namespace: string): string {
  return namespace === DEFAULT_NAMESPACE ? name : `${name}.${namespace}`;
}

type Listener = (tick: Tick | null) => void;

export class Live {
  readonly rows = new Map<string, Row>();
  readonly functions = new Map<string, FunctionStatus>();
  readonly gateway = new Window(CAPACITY);
  status: Status = "stopped";
  private readonly listeners = new Set<Listener>();
  private readonly statusListeners = new Set<(status: Status) => void>();
  private controller: AbortController | null = null;
  private refreshing: Promise<void> | null = null;

  on(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onStatus(listener: (status: Status) => void): void {
    this.statusListeners.add(listener);
  }

  // Every namespace's functions (their image, labels and the like: what ticks do not carry).
  async refreshFunctions(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const namespaces = await getJson<string[]>("/system/namespaces");
        const lists = await Promise.all(
          namespaces.map((ns) => getJson<FunctionStatus[]>(`/system/functions?namespace=${encodeURIComponent(ns)}`)),
        );
        this.functions.clear();
        for (const status of lists.flat()) this.functions.set(refOf(status.name, status.namespace), status);
        this.emit(null);
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  async start(onUnauthorized: () => void): Promise<void> {
    this.stop();
    const controller = new AbortController();
    this.controller = controller;
    const series = await getJson<Series>("/system/dashboard/series");
    this.gateway.load(series.t, series.gateway ?? {});
    for (const row of series.rows ?? []) this.rows.set(row.ref, row);
    await this.refreshFunctions();
    let kind = "message";
    follow(
      "/system/dashboard/events",
      "text/event-stream",
      (line) => {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) this.handle(kind, JSON.parse(line.slice(5)) as unknown);
        else if (line === "") kind = "message";
      },
      (status) => {
        this.status = status;
        this.statusListeners.forEach((listener) => listener(status));
      },
      controller.signal,
    ).catch(() => onUnauthorized());
  }

  stop(): void {
    this.controller?.abort();
    this.controller = null;
    this.rows.clear();
    this.functions.clear();
  }

  private handle(kind: string, data: unknown): void {
    if (kind === "rows") {
      const { rows } = data as { rows: Row[] };
      this.rows.clear();
      for (const row of rows) this.rows.set(row.ref, row);
      this.emit(null);
    } else if (kind === "tick") {
      const tick = data as Tick;
      this.gateway.push(tick.t, tick.gateway);
      let unknown = false;
      for (const row of tick.rows) {
        this.rows.set(row.ref, row);
        unknown ||= !this.functions.has(row.ref);
      }
      for (const ref of tick.removed) {
        this.rows.delete(ref);
        unknown = true;
      }
      if (unknown) void this.refreshFunctions().catch(() => undefined);
      this.emit(tick);
    }
  }

  private emit(tick: Tick | null): void {
    this.listeners.forEach((listener) => listener(tick));
  }
}
