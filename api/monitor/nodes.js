// Nodes (operators): status, capabilities, current task, last seen; drain,
// enable, disable. Live: the farm's WebSocket (`all_tenants=true`) sends
// each node's status changes (`node.status`) and which task each node
// takes or ends (`task.*` with `node_id`).

import { h, replace, badge, when, tell, act } from "./dom.js";
import * as api from "./api.js";
import { Live } from "./live.js";

/** The status people see, as the read model names it. */
function statusOf(n) {
  if (n.availability === "deregistered" || n.availability === "draining" || n.availability === "disabled") {
    return n.availability;
  }
  return n.connectivity === "online" ? "online" : "offline";
}

function capabilities(c) {
  if (!c || typeof c !== "object") return "—";
  const parts = [];
  if (c.cores) parts.push(`${c.cores} cores`);
  if (c.memory_bytes) parts.push(`${Math.round(c.memory_bytes / 2 ** 30)} GiB`);
  if (Array.isArray(c.gpus) && c.gpus.length) parts.push(`${c.gpus.length} GPU`);
  if (Array.isArray(c.renderers)) parts.push(c.renderers.map((r) => (r.version ? `${r.name} ${r.version}` : r.name)).join(", "));
  if (Array.isArray(c.tags) && c.tags.length) parts.push(`tags: ${c.tags.join(", ")}`);
  return parts.join(" · ");
}

export function nodesPage(main) {
  document.title = "Nodes · FlatRender";
  const tbody = h("tbody");
  const count = h("p", { class: "count", role: "status" });
  const reload = h("button", { type: "button" }, "Refresh");

  function actions(n) {
    const button = (label, path, allowed) => {
      if (!allowed) return null;
      const b = h("button", { type: "button", "aria-label": `${label} ${n.name}` }, label);
      b.addEventListener("click", () => act(b, async () => {
        await api.post(`/v1/nodes/${n.id}/${path}`);
        // Accepted: shown at once (the read models follow within moments).
        const availability = { drain: "draining", enable: "enabled", disable: "disabled" }[path];
        const status = availability === "enabled" ? n.connectivity : availability;
        pending.set(n.id, { availability, status });
        show();
        setTimeout(load, 1000);
      }));
      return b;
    };
    return [
      button("Drain", "drain", n.availability === "enabled"),
      button("Enable", "enable", n.availability === "draining" || n.availability === "disabled"),
      button("Disable", "disable", n.availability === "enabled" || n.availability === "draining"),
    ];
  }

  // Changes accepted but not yet in the read models: node id → fields.
  const pending = new Map();
  let items = [];

  let alive = true;
  // Live changes since the list was read: node id → fields.
  const operator = (api.claims() || {}).role === "operator";
  const live = !operator ? null : new Live("/v1/ws/renders", (m) => {
    if (m.type === "snapshot") { load(); return; }
    const patch = (id, f) => {
      const n = items.find((x) => x.id === id);
      if (!n) { if (m.type === "node.status") load(); return; }
      f(n);
      n.status = statusOf(n);
      if (m.at) n.last_seen_at = m.at;
      show();
    };
    if (m.type === "node.status") {
      patch(m.node_id, (n) => {
        if (m.connectivity) n.connectivity = m.connectivity;
        if (m.availability) { n.availability = m.availability; pending.delete(n.id); }
      });
    } else if (m.type === "task.assigned" || m.type === "task.started") {
      patch(m.node_id, (n) => { n.current_task_id = m.task_id; n.current_render_id = m.render_id; });
    } else if (["task.completed", "task.failed", "task.requeued"].includes(m.type) && m.node_id) {
      patch(m.node_id, (n) => {
        if (n.current_task_id === m.task_id) { n.current_task_id = null; n.current_render_id = null; }
      });
    }
  }, { all_tenants: "true" });
  async function load() {
    if (!alive) return;
    try {
      const fresh = [];
      for (let page = 1; ; page++) {
        const list = await api.get(`/v1/nodes?page=${page}&page_size=100`);
        fresh.push(...list.items);
        if (fresh.length >= list.total || !list.items.length) break;
      }
      if (!alive) return;
      items = fresh;
      let stale = false;
      for (const n of items) {
        const p = pending.get(n.id);
        if (!p) continue;
        if (n.availability === p.availability) pending.delete(n.id);
        else stale = true;
      }
      if (stale) setTimeout(load, 1000);
      show();
    } catch (err) {
      if (err.status === 403) {
        replace(main, h("h1", {}, "Nodes"),
          h("p", {}, "Nodes are shown to operators only (a user created with ", h("code", {}, "--role operator"), ")."));
      } else {
        tell(err.message);
      }
    }
  }

  function show() {
    {
      const shown = items.map((n) => ({ ...n, ...(pending.get(n.id) || {}) }));
      replace(count, `${shown.length} node${shown.length === 1 ? "" : "s"}`);
      replace(tbody, shown.length ? shown.map((n) => h("tr", { dataset: { node: n.id } },
        h("th", { scope: "row" }, n.name),
        h("td", {}, badge(n.status)),
        h("td", {}, capabilities(n.capabilities)),
        h("td", {}, n.current_render_id
          ? h("a", { href: `#/renders/${n.current_render_id}` }, `task ${String(n.current_task_id).slice(0, 8)}`)
          : "idle"),
        h("td", {}, when(n.last_seen_at)),
        h("td", { class: "actions" }, actions(n)))) : h("tr", {}, h("td", { colspan: "6" }, "No nodes.")));
    }
  }
  reload.addEventListener("click", () => act(reload, load));

  replace(main,
    h("h1", {}, "Nodes"),
    h("div", { class: "actions" }, count, reload),
    h("div", { class: "table-wrap" },
      h("table", {},
        h("caption", { class: "visually-hidden" }, "The farm's render nodes"),
        h("thead", {}, h("tr", {}, ["Name", "Status", "Capabilities", "Current task", "Last seen", "Actions"]
          .map((c) => h("th", { scope: "col" }, c)))),
        tbody)));
  if (!operator) load(); // the API answers 403, which the page shows
  return () => { alive = false; if (live) live.close(); };
}
