// The tenant: balance, quota, the balance at the end of each day and the
// charges per day as SVG plots drawn here
// (no charting library; every element through the DOM).

import { h, s, replace, money, when, tell } from "./dom.js";
import * as api from "./api.js";

/** A plot of one value per day: bars, or a line with points. */
function plot(items, { id, title, value, kind, describe }) {
  const width = 720, height = 220, left = 64, bottom = 28, top = 12, right = 12;
  const innerW = width - left - right, innerH = height - top - bottom;
  const values = items.map(value);
  const max = Math.max(1, ...values);
  const step = innerW / Math.max(1, items.length);
  const x = (n) => left + n * step + step / 2;
  const y = (v) => top + innerH - (v / max) * innerH;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: `plot plot-${kind}`, role: "img",
    "aria-labelledby": `${id}-title ${id}-desc` },
    s("title", { id: `${id}-title` }, title),
    s("desc", { id: `${id}-desc` }, items.length ? describe(values) : "No data yet."),
    s("line", { x1: left, y1: top + innerH, x2: width - right, y2: top + innerH, class: "axis" }),
    s("line", { x1: left, y1: top, x2: left, y2: top + innerH, class: "axis" }),
    s("text", { x: left - 6, y: top + 4, class: "label", "text-anchor": "end" }, money(max)),
    s("text", { x: left - 6, y: top + innerH, class: "label", "text-anchor": "end" }, "0"));
  if (kind === "line" && items.length) {
    svg.append(s("polyline", { class: "line-balance", fill: "none",
      points: values.map((v, n) => `${x(n)},${y(v)}`).join(" ") }));
  }
  items.forEach((item, n) => {
    const label = `${item.day}: ${money(values[n])}`;
    if (kind === "bars") {
      const w = Math.max(1, Math.min(40, step * 0.7));
      svg.append(s("rect", { x: x(n) - w / 2, y: y(values[n]), width: w,
        height: Math.max(0, top + innerH - y(values[n])), class: "bar-charge" }, s("title", {}, label)));
    } else {
      svg.append(s("circle", { cx: x(n), cy: y(values[n]), r: 3, class: "point-balance" }, s("title", {}, label)));
    }
    if (items.length <= 14 || n % Math.ceil(items.length / 7) === 0) {
      svg.append(s("text", { x: x(n), y: height - 8, class: "label", "text-anchor": "middle" }, item.day.slice(5)));
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
        h("h2", {}, "Balance at the end of each day"),
        plot(items, { id: "balance-plot", title: "Balance at the end of each day", kind: "line",
          value: (i) => i.balance_minor,
          describe: (v) => `${items.length} days from ${items[0].day} to ${items[items.length - 1].day}; from ${money(v[0])} to ${money(v[v.length - 1])}.` }),
        h("h2", {}, "Charges per day"),
        plot(items, { id: "charges-plot", title: "Charges per day", kind: "bars",
          value: (i) => i.charged_minor,
          describe: (v) => `${items.length} days; the most in one day ${money(Math.max(...v))}.` }),
        h("table", {},
          h("caption", {}, "Usage per day (UTC)"),
          h("thead", {}, h("tr", {}, ["Day", "Tasks", "Render seconds", "Charged", "Uncovered", "Added", "Balance at the end"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, items.map((i) => h("tr", {},
            h("th", { scope: "row" }, i.day), h("td", { class: "num" }, String(i.tasks)),
            h("td", { class: "num" }, String(i.render_seconds)), h("td", { class: "num" }, money(i.charged_minor)),
            h("td", { class: "num" }, money(i.uncovered_minor)), h("td", { class: "num" }, money(i.added_minor)),
            h("td", { class: "num" }, money(i.balance_minor)))))));
    } catch (err) {
      tell(err.message);
    }
  })();
  return () => {};
}
