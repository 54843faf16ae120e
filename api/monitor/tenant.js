// The tenant: balance, quota, and usage per day as an SVG plot drawn here
// (no charting library; every element through the DOM).

import { h, s, replace, money, when, tell } from "./dom.js";
import * as api from "./api.js";

function plot(items) {
  const width = 720, height = 240, left = 56, bottom = 28, top = 12, right = 12;
  const innerW = width - left - right, innerH = height - top - bottom;
  const max = Math.max(1, ...items.map((i) => i.charged_minor));
  const step = innerW / Math.max(1, items.length);
  const y = (v) => top + innerH - (v / max) * innerH;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "plot", role: "img",
    "aria-labelledby": "plot-title plot-desc" },
    s("title", { id: "plot-title" }, "Charges per day"),
    s("desc", { id: "plot-desc" }, items.length
      ? `${items.length} days from ${items[0].day} to ${items[items.length - 1].day}; the most in one day ${money(max)}.`
      : "No usage yet."),
    s("line", { x1: left, y1: top + innerH, x2: width - right, y2: top + innerH, class: "axis" }),
    s("line", { x1: left, y1: top, x2: left, y2: top + innerH, class: "axis" }),
    s("text", { x: left - 6, y: top + 4, class: "label", "text-anchor": "end" }, money(max)),
    s("text", { x: left - 6, y: top + innerH, class: "label", "text-anchor": "end" }, "0"));
  items.forEach((i, n) => {
    const x = left + n * step + step * 0.15;
    svg.append(s("rect", { x, y: y(i.charged_minor), width: Math.max(1, step * 0.7),
      height: Math.max(0, top + innerH - y(i.charged_minor)), class: "bar-charge" },
      s("title", {}, `${i.day}: ${money(i.charged_minor)} for ${i.render_seconds} render-seconds, ${i.tasks} tasks`)));
    if (items.length <= 14 || n % Math.ceil(items.length / 7) === 0) {
      svg.append(s("text", { x: x + step * 0.35, y: height - 8, class: "label", "text-anchor": "middle" }, i.day.slice(5)));
    }
  });
  return svg;
}

export function tenantPage(main) {
  document.title = "Tenant · FlatRender";
  (async () => {
    try {
      const [t, usage] = await Promise.all([api.get("/v1/tenant"), api.get("/v1/tenant/usage")]);
      const items = usage.items;
      replace(main,
        h("h1", {}, t.name),
        h("dl", { class: "facts" },
          h("dt", {}, "Balance"), h("dd", { id: "balance" }, money(t.balance_minor)),
          h("dt", {}, "Added"), h("dd", {}, money(t.added_minor)),
          h("dt", {}, "Charged"), h("dd", {}, money(t.charged_minor)),
          h("dt", {}, "Status"), h("dd", {}, t.status),
          h("dt", {}, "Running tasks"), h("dd", {}, `${t.running_tasks} of at most ${t.max_running_tasks}`),
          h("dt", {}, "Since"), h("dd", {}, when(t.created_at))),
        h("h2", {}, "Usage per day"),
        plot(items),
        h("table", {},
          h("caption", {}, "Usage per day (UTC)"),
          h("thead", {}, h("tr", {}, ["Day", "Tasks", "Render seconds", "Charged", "Uncovered"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, items.map((i) => h("tr", {},
            h("th", { scope: "row" }, i.day), h("td", { class: "num" }, String(i.tasks)),
            h("td", { class: "num" }, String(i.render_seconds)), h("td", { class: "num" }, money(i.charged_minor)),
            h("td", { class: "num" }, money(i.uncovered_minor)))))));
    } catch (err) {
      tell(err.message);
    }
  })();
  return () => {};
}
