// A few lines of DOM building: the page is small enough to need no framework.

type Child = Node | string | null | undefined | false;
type Props = Record<string, string | number | boolean | ((event: Event) => void) | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = String(value);
    else if (key in element && key !== "list" && key !== "form") {
      (element as unknown as Record<string, unknown>)[key] = value;
    } else element.setAttribute(key, value === true ? "" : String(value));
  }
  element.append(...children.filter((c): c is Node | string => c !== null && c !== undefined && c !== false));
  return element;
}

export function clear(element: Element, ...children: Child[]): void {
  element.replaceChildren(...children.filter((c): c is Node | string => !!c));
}

// A labelled form field: the label names the control (what tests and screen readers find it
// by), and the error line under it shows what the API said about that field.
export function field(label: string, control: HTMLElement, name: string, hint?: string): HTMLElement {
  const id = `field-${name}`;
  control.id = id;
  const error = h("p", { class: "field-error", id: `${id}-error`, role: "alert" });
  control.setAttribute("aria-describedby", error.id);
  return h(
    "div",
    { class: "field", "data-field": name },
    h("label", { htmlFor: id }, label),
    control,
    hint ? h("p", { class: "hint" }, hint) : null,
    error,
  );
}

export function fieldError(form: HTMLElement, name: string | null, message: string): boolean {
  const box = name ? form.querySelector(`[data-field="${CSS.escape(name)}"] .field-error`) : null;
  if (!box) return false;
  box.textContent = message;
  box.closest(".field")?.classList.add("invalid");
  return true;
}

export function clearErrors(form: HTMLElement): void {
  form.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
  form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
}

export function fmt(value: number | null | undefined, digits = 1): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return value.toLocaleString("en", { maximumFractionDigits: digits });
}

export function seconds(value: number | null | undefined): string {
  if (value === null || value === undefined) return "–";
  if (!Number.isFinite(value)) return "∞";
  if (value >= 3600) return `${fmt(value / 3600)} h`;
  if (value >= 60) return `${fmt(value / 60)} min`;
  return `${fmt(value, 2)} s`;
}
