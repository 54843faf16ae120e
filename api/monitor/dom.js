// Building the page: every element through createElement, every string
// through text nodes or attributes. Nothing here parses HTML, so a render
// named <script> is shown as those characters.

const SVG = "http://www.w3.org/2000/svg";

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("button", {type: "button", onclick}, "Pause"). */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG, tag), attrs, children);
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return fill(el, {}, children);
}

/** Control characters of a log line shown escaped (never interpreted). */
export function safeLine(text) {
  return String(text).replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g,
    (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

/** A short, local time. */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

/** Minor units as money. */
export function money(minor) {
  return (Number(minor || 0) / 100).toFixed(2);
}

/** A status badge. */
export function badge(status) {
  return h("span", { class: `badge status-${String(status).replace(/[^a-z_]/g, "")}` }, status);
}

/** A progress bar (0 to 1) with its text. */
export function bar(fraction, label) {
  const pct = Math.max(0, Math.min(100, Math.round((fraction || 0) * 100)));
  return h("div", { class: "bar" },
    h("progress", { max: "100", value: String(pct), "aria-label": label }),
    h("span", { class: "bar-text" }, `${pct}%`));
}

/** A message for the user (errors from the API keep the contract's text). */
export function tell(text, kind = "error") {
  const notice = document.getElementById("notice");
  replace(notice, text ? h("p", { class: `notice-${kind}` }, text) : "");
  if (text) setTimeout(() => { if (notice.textContent === text) replace(notice); }, 8000);
}

/** Runs an action of a button: disabled while it runs, errors told. */
export async function act(button, f) {
  button.disabled = true;
  try {
    await f();
  } catch (err) {
    tell(err.message);
  } finally {
    button.disabled = false;
  }
}
