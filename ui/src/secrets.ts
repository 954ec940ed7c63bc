// Secrets and namespaces: list, create, update, remove. A secret's value goes to the gateway
// and is never shown back (the API does not return it).
import { ApiError, call, getJson } from "./api";
import { clear, clearErrors, field, fieldError, h } from "./dom";
import { pairs } from "./deploy";
import { DEFAULT_NAMESPACE } from "./live";

interface Secret {
  name: string;
  namespace: string;
}

function showError(form: HTMLElement, error: unknown, fallback: HTMLElement, fields: Record<string, string>): void {
  if (error instanceof ApiError) {
    const name = error.field;
    if (!fieldError(form, name ? fields[name] ?? null : null, error.message)) fallback.textContent = error.message;
  } else fallback.textContent = String(error);
}

export function secretsView(onNamespaces: () => void): HTMLElement {
  const list = h("tbody");
  const nsList = h("tbody");
  const namespace = h("select", { "aria-label": "Namespace of the secrets" });
  const name = h("input", { type: "text", autocomplete: "off" });
  const value = h("input", { type: "password", autocomplete: "new-password" });
  const message = h("p", { class: "form-error", role: "alert" });
  const form = h(
    "form",
    { class: "panel", "aria-label": "Create or update a secret" },
    h("h3", {}, "Create or update a secret"),
    h("div", { class: "row" }, field("Secret name", name, "secret-name"), field("Secret value", value, "secret-value", "Write-only: never shown back")),
    message,
    h("div", { class: "row" },
      h("button", { type: "submit", class: "primary", value: "create" }, "Create secret"),
      h("button", { type: "submit", value: "update" }, "Update secret")),
  );
  const nsName = h("input", { type: "text", autocomplete: "off" });
  const nsLabels = h("textarea", { rows: 2, class: "code", placeholder: "team=a" });
  const nsMessage = h("p", { class: "form-error", role: "alert" });
  const nsForm = h(
    "form",
    { class: "panel", "aria-label": "Create a namespace" },
    h("h3", {}, "Create or update a namespace"),
    h("div", { class: "row" }, field("Namespace name", nsName, "ns-name"), field("Namespace labels", nsLabels, "ns-labels", "KEY=value, one a line")),
    nsMessage,
    h("div", { class: "row" },
      h("button", { type: "submit", class: "primary", value: "create" }, "Create namespace"),
      h("button", { type: "submit", value: "update" }, "Update namespace")),
  );

  async function refresh(): Promise<void> {
    const namespaces = await getJson<string[]>("/system/namespaces");
    const chosen = namespace.value || DEFAULT_NAMESPACE;
    clear(namespace, ...namespaces.map((ns) => h("option", { value: ns, selected: ns === chosen }, ns)));
    const secrets = await getJson<Secret[]>(`/system/secrets?namespace=${encodeURIComponent(namespace.value)}`);
    clear(
      list,
      ...secrets.map((s) =>
        h("tr", {}, h("td", {}, s.name), h("td", { class: "muted" }, "••••••"),
          h("td", {}, h("button", { type: "button", class: "danger", "aria-label": `Remove secret ${s.name}`, onclick: () => void removeSecret(s) }, "Remove"))),
      ),
    );
    if (!secrets.length) list.append(h("tr", {}, h("td", { colSpan: 3, class: "empty" }, "No secrets in this namespace.")));
    clear(
      nsList,
      ...namespaces.map((ns) =>
        h("tr", {}, h("td", {}, ns),
          h("td", {}, ns === DEFAULT_NAMESPACE ? "" : h("button", { type: "button", class: "danger", "aria-label": `Remove namespace ${ns}`, onclick: () => void removeNamespace(ns) }, "Remove"))),
      ),
    );
  }

  async function removeSecret(secret: Secret): Promise<void> {
    message.textContent = "";
    try {
      await call("DELETE", "/system/secrets", secret);
    } catch (error) {
      showError(form, error, message, {});
    }
    await refresh();
  }

  async function removeNamespace(ns: string): Promise<void> {
    nsMessage.textContent = "";
    try {
      await call("DELETE", `/system/namespace/${encodeURIComponent(ns)}`);
    } catch (error) {
      showError(nsForm, error, nsMessage, {});
    }
    await refresh();
    onNamespaces();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    message.textContent = "";
    const update = (event as SubmitEvent).submitter?.getAttribute("value") === "update";
    try {
      await call(update ? "PUT" : "POST", "/system/secrets", { name: name.value.trim(), value: value.value, namespace: namespace.value });
      name.value = value.value = "";
    } catch (error) {
      showError(form, error, message, { name: "secret-name", value: "secret-value" });
    }
    await refresh();
  });
  nsForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(nsForm);
    nsMessage.textContent = "";
    const update = (event as SubmitEvent).submitter?.getAttribute("value") === "update";
    const ns = nsName.value.trim();
    try {
      const labels = pairs(nsLabels.value) ?? {};
      await call(update ? "PUT" : "POST", `/system/namespace/${encodeURIComponent(ns)}`, { name: ns, labels });
      nsName.value = nsLabels.value = "";
    } catch (error) {
      showError(nsForm, error, nsMessage, { name: "ns-name", labels: "ns-labels" });
    }
    await refresh();
    onNamespaces();
  });
  namespace.addEventListener("change", () => void refresh());
  void refresh();
  return h(
    "section",
    { class: "view secrets-view" },
    h("div", { class: "columns" },
      h("div", {},
        h("div", { class: "toolbar" }, h("h2", {}, "Secrets"), namespace),
        h("table", { class: "simple", "aria-label": "Secrets" }, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Value"), h("th", {}, ""))), list),
        form),
      h("div", {},
        h("h2", {}, "Namespaces"),
        h("table", { class: "simple", "aria-label": "Namespaces" }, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, ""))), nsList),
        nsForm)),
  );
}
