// The dashboard's shell: log in, the views behind a hash route, the live status, log out.
import "./style.css";
import { ApiError, getJson, loggedIn, login, logout } from "./api";
import { LiveChart } from "./charts";
import { deployView } from "./deploy";
import { FunctionView } from "./detail";
import { clear, field, h } from "./dom";
import { FunctionsView } from "./functions";
import { Live, type FunctionStatus } from "./live";
import { secretsView } from "./secrets";

const live = new Live();
const root = document.getElementById("app")!;
const main = h("main", { id: "main" });
const status = h("span", { class: "live-status", role: "status" }, "");
let current: { destroy?: () => void } | null = null;

live.onStatus((s) => {
  status.textContent = s === "live" ? "● live" : s === "reconnecting" ? "◌ reconnecting…" : "○ stopped";
  status.dataset.state = s;
});

function shell(): HTMLElement {
  const link = (href: string, text: string): HTMLElement => h("a", { href, class: "nav-link" }, text);
  return h(
    "div",
    { class: "shell" },
    h(
      "header",
      { class: "top" },
      h("a", { class: "brand", href: "#/functions" }, "faasd-py"),
      h("nav", { "aria-label": "Views" }, link("#/functions", "Functions"), link("#/gateway", "Gateway"), link("#/deploy", "Deploy"), link("#/secrets", "Secrets & namespaces")),
      status,
      h("button", { type: "button", class: "logout", onclick: () => signOut() }, "Log out"),
    ),
    main,
  );
}

function loginView(problem = ""): HTMLElement {
  const user = h("input", { type: "text", value: "admin", autocomplete: "username" });
  const password = h("input", { type: "password", autocomplete: "current-password", required: true });
  const message = h("p", { class: "form-error", role: "alert" }, problem);
  const form = h(
    "form",
    { class: "panel login", "aria-label": "Log in" },
    h("h1", {}, "faasd-py"),
    h("p", { class: "muted" }, "The gateway's user and password: `faasd-py up` wrote them to its data dir (credentials/)."),
    field("User", user, "user"),
    field("Password", password, "password"),
    message,
    h("button", { type: "submit", class: "primary" }, "Log in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    login(user.value, password.value);
    password.value = "";
    try {
      await getJson("/system/info");
    } catch (error) {
      logout();
      message.textContent = error instanceof ApiError && error.status === 401 ? "Wrong user or password." : String(error);
      return;
    }
    await start();
  });
  return h("div", { class: "login-page" }, form);
}

async function start(): Promise<void> {
  clear(root, shell());
  try {
    await live.start(() => signOut("The gateway no longer accepts these credentials."));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return signOut("Wrong user or password.");
    throw error;
  }
  route();
}

function signOut(problem = ""): void {
  live.stop();
  current?.destroy?.();
  current = null;
  logout();
  history.replaceState(null, "", "#/");
  clear(root, loginView(problem));
}

function gatewayView(): { element: HTMLElement; destroy: () => void } {
  const grid = h("div", { class: "charts" });
  const element = h("section", { class: "view", "aria-label": "Gateway" }, h("h2", {}, "The whole gateway"), grid);
  const specs: [string, { key: string; label: string; color: string; bars?: boolean }[], string][] = [
    ["Requests per second", [{ key: "rate", label: "req/s", color: "#6366f1" }], "req/s"],
    ["Latency", [{ key: "p50", label: "p50", color: "#10b981" }, { key: "p99", label: "p99", color: "#ef4444" }], "ms"],
    ["Cold starts and errors", [
      { key: "coldStarts", label: "cold starts", color: "#3b82f6", bars: true },
      { key: "clientErrors", label: "4xx", color: "#f59e0b", bars: true },
      { key: "serverErrors", label: "5xx", color: "#ef4444", bars: true }], "per s"],
    ["Instances", [{ key: "instances", label: "ready", color: "#10b981" }, { key: "inflight", label: "in flight", color: "#6366f1" }], ""],
    ["Cache hit rate", [{ key: "hitRate", label: "hit rate", color: "#10b981" }], ""],
    ["Bytes cached", [{ key: "cacheBytes", label: "bytes", color: "#6366f1" }], "bytes"],
  ];
  const charts: LiveChart[] = [];
  requestAnimationFrame(() => {
    for (const [title, lines, unit] of specs) {
      const host = h("div", { class: "chart", role: "figure", "aria-label": title });
      grid.append(host);
      charts.push(new LiveChart(host, title, lines, unit));
    }
    draw();
  });
  const draw = (): void => charts.forEach((c) => c.set(live.gateway.times, live.gateway.columns));
  const unsubscribe = live.on(draw);
  return { element, destroy: () => { unsubscribe(); charts.forEach((c) => c.destroy()); } };
}

async function namespaces(): Promise<string[]> {
  return getJson<string[]>("/system/namespaces");
}

function show(view: { element: HTMLElement; destroy?: () => void }): void {
  current?.destroy?.();
  current = view;
  clear(main, view.element);
}

function open(ref: string): void {
  location.hash = `#/function/${encodeURIComponent(ref)}`;
}

async function route(): Promise<void> {
  if (!loggedIn()) return;
  const [, view, arg] = location.hash.split("/");
  document.querySelectorAll(".nav-link").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === `#/${view}`));
  if (view === "function" && arg) {
    const ref = decodeURIComponent(arg);
    let status: FunctionStatus | undefined = live.functions.get(ref);
    if (!status) {
      await live.refreshFunctions();
      status = live.functions.get(ref);
    }
    if (!status) return show({ element: h("p", { class: "error" }, `No function ${ref}.`) });
    show(new FunctionView(live, ref, status, () => (location.hash = "#/functions")));
  } else if (view === "gateway") show(gatewayView());
  else if (view === "deploy") {
    show({ element: deployView(await namespaces(), async (ref) => { await live.refreshFunctions(); open(ref); }) });
  } else if (view === "secrets") show({ element: secretsView(() => void live.refreshFunctions()) });
  else show(new FunctionsView(live, open));
}

window.addEventListener("hashchange", () => void route());
clear(root, loginView());
