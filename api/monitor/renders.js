// Renders: a filtered, paged table kept live by the tenant's WebSocket, the
// controls of each render, and the submit form.

import { h, replace, badge, bar, when, money, tell, act } from "./dom.js";
import * as api from "./api.js";
import { Live } from "./live.js";

const PAGE_SIZE = 20;
const STATUSES = ["", "active", "paused", "completed", "failed", "cancelled"];

/** The buttons of a render's controls (shared with the render page). */
export function controls(render, changed) {
  const id = render.id;
  const button = (label, path, when, body) => {
    if (!when) return null;
    const b = h("button", { type: "button", "aria-label": `${label} ${render.name}` }, label);
    b.addEventListener("click", () => act(b, async () => {
      changed(await api.post(`/v1/renders/${id}/${path}`, body));
    }));
    return b;
  };
  const live = render.status === "active" || render.status === "paused" || render.status === "waiting";
  return [
    button("Pause", "pause", render.status === "active"),
    button("Resume", "resume", render.status === "paused"),
    button("Cancel", "cancel", live),
    button("Retry failed", "retry", (render.frames_failed || 0) > 0 || render.status === "failed"),
  ];
}

function submitForm(done) {
  const id = (n) => `submit-${n}`;
  const input = (name, label, attrs = {}) => [
    h("label", { for: id(name) }, label),
    h("input", { id: id(name), name, ...attrs }),
  ];
  const renderer = h("select", { id: id("renderer"), name: "renderer" },
    h("option", { value: "builtin" }, "builtin"), h("option", { value: "blender" }, "blender"));
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit" }, "Submit render");
  const form = h("form", { class: "submit-form", "aria-labelledby": "submit-title" },
    h("h2", { id: "submit-title" }, "Submit a render"),
    h("div", { class: "fields" },
      input("scene", "Scene file (.json or .blend)", { type: "file", required: true, accept: ".json,.blend" }),
      input("name", "Name", { type: "text", maxlength: "200" }),
      h("label", { for: id("renderer") }, "Renderer"), renderer,
      input("start", "First frame", { type: "number", min: "0", value: "1", required: true }),
      input("end", "Last frame", { type: "number", min: "0", value: "10", required: true }),
      input("chunk", "Frames per task", { type: "number", min: "1", value: "1", required: true }),
      input("width", "Width (px)", { type: "number", min: "1", max: "16384", value: "320" }),
      input("height", "Height (px)", { type: "number", min: "1", max: "16384", value: "180" }),
      input("samples", "Samples", { type: "number", min: "1" }),
      input("priority", "Priority (0–100)", { type: "number", min: "0", max: "100", value: "50" }),
      input("retries", "Retries per task", { type: "number", min: "0", value: "3" }),
      input("task-timeout", "Task timeout (s)", { type: "number", min: "1", max: "604800" }),
      input("stall-timeout", "Stall timeout (s)", { type: "number", min: "1", max: "604800" }),
      input("depends", "Depends on (render ids, comma-separated)", { type: "text" })),
    error, submit);
  const value = (n) => form.elements[n].value.trim();
  const number = (n) => (value(n) === "" ? null : Number(value(n)));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    replace(error);
    act(submit, async () => {
      try {
        const file = form.elements.scene.files[0];
        if (!file) throw new Error("Choose a scene file.");
        const uploaded = await api.upload(file.name, file);
        const body = {
          scene_file_id: uploaded.id,
          renderer: renderer.value,
          frames: { start: number("start"), end: number("end") },
          chunk_size: number("chunk"),
          priority: number("priority") ?? 50,
          max_retries: number("retries") ?? 3,
        };
        if (value("name")) body.name = value("name");
        if (number("width") !== null || number("height") !== null) {
          body.resolution = { width: number("width") ?? 320, height: number("height") ?? 180 };
        }
        if (number("samples") !== null) body.samples = number("samples");
        if (number("task-timeout") !== null) body.task_timeout_seconds = number("task-timeout");
        if (number("stall-timeout") !== null) body.stall_timeout_seconds = number("stall-timeout");
        const deps = value("depends").split(/[\s,]+/).filter(Boolean);
        if (deps.length) body.depends_on = deps;
        const render = await api.post("/v1/renders", body, { "Idempotency-Key": crypto.randomUUID() });
        done(render);
      } catch (err) {
        replace(error, err.message);
        throw err;
      }
    });
  });
  return form;
}

export function rendersPage(main) {
  document.title = "Renders · FlatRender";
  const operator = (api.claims() || {}).role === "operator";
  let filter = { status: "", name: "", page: 1, all: false };
  let rows = new Map(); // id → {render, tr}
  const tbody = h("tbody");
  const columns = () => ["Name", "Status", "Progress", "Frames", filter.all ? "Tenant" : null, "Priority", "Cost",
    "Submitted", "Updated", "Actions"].filter(Boolean);
  const head = h("thead", {}, h("tr", {}, columns().map((c) => h("th", { scope: "col" }, c))));
  const pager = h("nav", { class: "pager", "aria-label": "Pages of renders" });
  const count = h("p", { class: "count", role: "status" });

  const status = h("select", { id: "filter-status" },
    STATUSES.map((s) => h("option", { value: s }, s || "any")));
  const name = h("input", { id: "filter-name", type: "search", placeholder: "part of a name" });
  const everyTenant = operator ? h("input", { id: "filter-all", type: "checkbox" }) : null;
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter renders" },
    h("label", { for: "filter-status" }, "Status"), status,
    h("label", { for: "filter-name" }, "Name contains"), name,
    everyTenant ? [everyTenant, h("label", { for: "filter-all" }, "Every tenant")] : null,
    h("button", { type: "submit" }, "Filter"));
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    const all = Boolean(everyTenant && everyTenant.checked);
    const changed = all !== filter.all;
    filter = { status: status.value, name: name.value.trim(), page: 1, all };
    if (changed) connect();
    load();
  });

  function row(r) {
    const link = h("a", { href: `#/renders/${r.id}` }, r.name);
    return h("tr", { dataset: { render: r.id } },
      h("th", { scope: "row" }, link),
      h("td", {}, badge(r.status)),
      h("td", {}, bar(r.progress ?? (r.frames_total ? r.frames_done / r.frames_total : 0), `progress of ${r.name}`)),
      h("td", { class: "num" }, `${r.frames_done}/${r.frames_total}`),
      filter.all ? h("td", { class: "mono", title: r.tenant_id }, String(r.tenant_id).slice(0, 8)) : null,
      h("td", { class: "num" }, String(r.priority)),
      h("td", { class: "num" }, money(r.cost_minor)),
      h("td", {}, when(r.submitted_at)),
      h("td", {}, when(r.updated_at)),
      h("td", { class: "actions" }, controls(r, (answer) => {
        if (answer && answer.status) put({ ...r, status: answer.status });
        soon();
      })));
  }

  function put(r) {
    const tr = row(r);
    const old = rows.get(r.id);
    if (old) old.tr.replaceWith(tr);
    rows.set(r.id, { render: r, tr });
    return tr;
  }

  async function load() {
    const q = new URLSearchParams({ page: String(filter.page), page_size: String(PAGE_SIZE) });
    if (filter.status) q.set("status", filter.status);
    if (filter.name) q.set("name_contains", filter.name);
    if (filter.all) q.set("all_tenants", "true");
    try {
      const list = await api.get(`/v1/renders?${q}`);
      rows = new Map();
      replace(tbody, list.items.map(put));
      replace(head, h("tr", {}, columns().map((c) => h("th", { scope: "col" }, c))));
      if (!list.items.length) replace(tbody, h("tr", {}, h("td", { colspan: String(columns().length) }, "No renders.")));
      const pages = Math.max(1, Math.ceil(list.total / PAGE_SIZE));
      replace(count, `${list.total} render${list.total === 1 ? "" : "s"}`);
      const go = (p, label) => {
        const b = h("button", { type: "button", disabled: p < 1 || p > pages || p === filter.page }, label);
        b.addEventListener("click", () => { filter.page = p; load(); });
        return b;
      };
      replace(pager, go(filter.page - 1, "Previous"), h("span", {}, ` Page ${filter.page} of ${pages} `),
        go(filter.page + 1, "Next"));
    } catch (err) {
      tell(err.message);
    }
  }

  // Live: patch rows in place; a render that appears or changes status
  // reloads the page of the table (once per second at most).
  let reload = null;
  const soon = () => { if (!reload) reload = setTimeout(() => { reload = null; load(); }, 1000); };
  let live = null;
  const connect = () => {
    if (live) live.close();
    live = new Live("/v1/ws/renders", onMessage, filter.all ? { all_tenants: "true" } : {});
  };
  const onMessage = (m) => {
    if (m.type === "snapshot") { soon(); return; }
    const entry = rows.get(m.render_id);
    if (!entry) { if (m.type === "render.status") soon(); return; }
    const r = { ...entry.render };
    if (m.type === "render.status") { r.status = m.status; r.updated_at = m.at; soon(); }
    else if (m.type === "render.priority") r.priority = m.priority;
    else if (m.type === "frame.done") {
      r.frames_done = Math.min(r.frames_total, r.frames_done + 1);
      r.progress = r.frames_total ? r.frames_done / r.frames_total : 0;
      r.updated_at = m.at;
    } else if (m.type === "task.failed") soon();
    else return;
    put(r);
  };
  connect();

  const form = submitForm((render) => { location.hash = `#/renders/${render.id}`; });
  replace(main,
    h("h1", {}, "Renders"),
    filters,
    count,
    h("div", { class: "table-wrap" },
      h("table", { class: "renders" },
        h("caption", { class: "visually-hidden" }, "Renders"),
        head,
        tbody)),
    pager,
    h("details", { class: "submit" }, h("summary", {}, "Submit a render"), form));
  load();
  return () => { live.close(); if (reload) clearTimeout(reload); };
}
