// Calls to this gateway. The credentials live in this module's memory only: they go in an
// Authorization header, never in a URL, a cookie or any storage, and `logout` forgets them.

let authorization: string | null = null;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }

  // The field an API error names ("limits.memory: expected ...", "image 'x' is not ..."):
  // the dashboard shows the message next to it.
  get field(): string | null {
    const match = /^([A-Za-z][\w.]*)[:\s]/.exec(this.message);
    return match?.[1] ?? null;
  }
}

export function login(user: string, password: string): void {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  authorization = "Basic " + btoa(String.fromCharCode(...bytes));
}

export function logout(): void {
  authorization = null;
}

export function loggedIn(): boolean {
  return authorization !== null;
}

function headers(extra: HeadersInit = {}): Headers {
  const all = new Headers(extra);
  if (authorization) all.set("Authorization", authorization);
  return all;
}

// "omit": the browser adds no credentials of its own and shows no login dialog of its own.
const OPTIONS: RequestInit = { credentials: "omit", cache: "no-store" };

async function errorOf(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = (await response.json()) as { error?: string };
    if (body.error) message = body.error;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message);
}

export async function call(
  method: string,
  path: string,
  body?: unknown,
  signal?: AbortSignal,
  accept?: string,
): Promise<Response> {
  const init: RequestInit = { ...OPTIONS, method, headers: headers(accept ? { Accept: accept } : {}), signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Headers).set("Content-Type", "application/json");
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  return (await (await call("GET", path, undefined, signal)).json()) as T;
}

// An invocation as the user wrote it: no credentials (functions need none).
export async function invoke(
  method: string,
  url: string,
  extra: [string, string][],
  body: string | null,
): Promise<Response> {
  return fetch(url, { ...OPTIONS, method, headers: new Headers(extra), body });
}

// The lines of a streamed response (ndjson, or Server-Sent Events' lines), as they come.
export async function* lines(response: Response): AsyncGenerator<string> {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += value;
    let end: number;
    while ((end = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, end);
      pending = pending.slice(end + 1);
    }
  }
  if (pending) yield pending;
}

// Delay before reconnect attempt `failures` (1, 2, ...): doubling from 0.5 s up to 10 s, with
// jitter, so that browsers do not all come back at once when a gateway restarts.
export function backoff(failures: number): number {
  const base = Math.min(10_000, 500 * 2 ** Math.max(0, failures - 1));
  return base / 2 + (Math.random() * base) / 2;
}

export type Status = "live" | "reconnecting" | "stopped";

// Follow a stream (Server-Sent Events from /system/dashboard/events, or a log's ndjson), reconnecting
// with backoff whenever it ends or fails, until `signal` aborts.
export async function follow(
  path: string,
  accept: string,
  onLine: (line: string) => void,
  onStatus: (status: Status) => void,
  signal: AbortSignal,
): Promise<void> {
  let failures = 0;
  while (!signal.aborted) {
    try {
      const response = await call("GET", path, undefined, signal, accept);
      onStatus("live");
      failures = 0;
      for await (const line of lines(response)) onLine(line);
    } catch (error) {
      if (signal.aborted) break;
      if (error instanceof ApiError && error.status === 401) {
        onStatus("stopped");
        throw error;
      }
    }
    if (signal.aborted) break;
    failures += 1;
    onStatus("reconnecting");
    await sleep(backoff(failures), signal);
  }
  onStatus("stopped");
}

export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
