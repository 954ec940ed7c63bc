// Deploy a function from a package in the gateway's store. The gateway validates: its 400s
// are shown next to the field they name.
import { ApiError, call, getJson } from "./api";
import { clearErrors, field, fieldError, h } from "./dom";
import { DEFAULT_NAMESPACE } from "./live";

interface Package {
  image: string;
  builtAt: number;
}

// "KEY=value" lines (env, labels, annotations) as an object; blank lines skipped.
export function pairs(text: string): Record<string, string> | undefined {
  const entries = text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const at = line.indexOf("=");
      return at < 0 ? [line, ""] : [line.slice(0, at).trim(), line.slice(at + 1).trim()];
    });
  return entries.length ? Object.fromEntries(entries) : undefined;
}

// The field an error names, as this form calls it.
const FIELDS: Record<string, string> = {
  service: "service",
  image: "image",
  namespace: "namespace",
  envVars: "envVars",
  labels: "labels",
  annotations: "annotations",
  secrets: "secrets",
  secret: "secrets",
  "limits.memory": "limits.memory",
  "limits.cpu": "limits.cpu",
  limits: "limits.memory",
};

export function deployView(namespaces: string[], deployed: (ref: string) => void): HTMLElement {
  const service = h("input", { type: "text", required: true, autocomplete: "off", placeholder: "my-function" });
  // Any image may be typed; the store's packages are offered as it is.
  const image = h("input", { type: "text", list: "packages", autocomplete: "off", placeholder: "hello:latest" });
  const offered = h("datalist", { id: "packages" });
  const namespace = h("select", {}, ...namespaces.map((ns) => h("option", { value: ns, selected: ns === DEFAULT_NAMESPACE }, ns)));
  const env = h("textarea", { rows: 3, placeholder: "greeting=hi", class: "code" });
  const labels = h("textarea", { rows: 2, placeholder: "com.openfaas.scale.min=1", class: "code" });
  const annotations = h("textarea", { rows: 2, placeholder: "com.faasd-py.policy=hybrid", class: "code" });
  const secrets = h("input", { type: "text", placeholder: "api-key, db-password" });
  const memory = h("input", { type: "text", placeholder: "128Mi" });
  const cpu = h("input", { type: "text", placeholder: "0.5" });
  const message = h("p", { class: "form-error", role: "alert" });
  const form = h(
    "form",
    { class: "panel deploy", "aria-label": "Deploy a function", novalidate: true },
    h("h2", {}, "Deploy a function"),
    h("p", { class: "muted" }, "From a package in the gateway's store (`faasd-py build` puts one there)."),
    h("div", { class: "row" }, field("Function name", service, "service"), field("Package (image)", image, "image"), field("Namespace", namespace, "namespace")),
    h("div", { class: "row" },
      field("Environment", env, "envVars", "KEY=value, one a line"),
      field("Labels", labels, "labels", "KEY=value, one a line"),
      field("Annotations", annotations, "annotations", "KEY=value, one a line")),
    h("div", { class: "row" },
      field("Secrets", secrets, "secrets", "Names, separated by commas"),
      field("Memory limit", memory, "limits.memory"),
      field("CPU limit", cpu, "limits.cpu")),
    message,
    h("button", { type: "submit", class: "primary" }, "Deploy"),
    offered,
  );
  getJson<Package[]>("/system/dashboard/packages")
    .then((packages) => {
      offered.append(...packages.map((p) => h("option", { value: p.image })));
      if (!image.value && packages[0]) image.value = packages[0].image;
    })
    .catch((error: unknown) => (message.textContent = String(error)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    message.textContent = "";
    const limits = { memory: memory.value.trim() || undefined, cpu: cpu.value.trim() || undefined };
    const body = {
      service: service.value.trim(),
      image: image.value.trim(),
      namespace: namespace.value,
      envVars: pairs(env.value),
      labels: pairs(labels.value),
      annotations: pairs(annotations.value),
      secrets: secrets.value.split(",").map((s) => s.trim()).filter(Boolean),
      limits: limits.memory || limits.cpu ? limits : undefined,
    };
    try {
      await call("POST", "/system/functions", body);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const name = error.field;
      if (!fieldError(form, name ? FIELDS[name] ?? name : null, error.message)) message.textContent = error.message;
      return;
    }
    deployed(body.namespace === DEFAULT_NAMESPACE ? body.service : `${body.service}.${body.namespace}`);
  });
  return h("section", { class: "view" }, form);
}
