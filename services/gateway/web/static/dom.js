// Building the page without markup: every customer string becomes a text node, never HTML,
// so a config value or a log line reading `<img onerror=...>` stays text.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.setAttribute("class", value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("td", {class: "num"}, "3"). Children are nodes or text. */
export function h(tag, attrs = {}, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element (charts). */
export function s(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** A link out of the dashboard, only for http(s) URLs: a `javascript:` URL never becomes one. */
export function outLink(url, text) {
  if (typeof url !== "string" || !/^https?:\/\//i.test(url)) return h("span", {}, text ?? "");
  return h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, text ?? url);
}

export function spinner() {
  return h("span", { class: "spinner", role: "status", "aria-label": "working" });
}

/** Run `work` with `button` disabled and spinning; errors are shown in `where` (if given). */
export async function busy(button, work, where) {
  const label = Array.from(button.childNodes);
  button.disabled = true;
  button.replaceChildren(spinner(), ...label);
  try {
    return await work();
  } catch (error) {
    if (where) showError(where, error);
    else throw error;
  } finally {
    button.disabled = false;
    button.replaceChildren(...label);
  }
}

export function showError(where, error) {
  const message = error && error.message ? error.message : String(error);
  clear(where).append(h("p", { class: "error", role: "alert" }, message));
}

/** A table that scrolls sideways on a narrow screen. */
export function table(headings, rows, attrs = {}) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs,
      h("thead", {}, h("tr", {}, headings.map((title) => h("th", { scope: "col" }, title)))),
      h("tbody", {}, rows),
    ),
  );
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

export function ago(iso) {
  if (!iso) return "";
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return String(iso);
  const seconds = Math.max(0, Math.round((Date.now() - at) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function fmt(value, digits = 1) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
}
