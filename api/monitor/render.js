// One render: its controls, the frame grid (live), the last rendered frame,
// a frame's details with its log (following live), the render's history,
// and the download of every frame.

import { h, replace, badge, bar, when, money, tell, act, safeLine } from "./dom.js";
import * as api from "./api.js";
import { Live } from "./live.js";
import { FrameGrid, STATES } from "./grid.js";
import { controls } from "./renders.js";

const LOG_TAIL = 200;
const LOG_LINES_KEPT = 1000;

export function renderPage(main, renderId) {
  document.title = "Render · FlatRender";
  const base = `/v1/renders/${encodeURIComponent(renderId)}`;
  let render = null;
  let grid = null;
  const tasks = new Map(); // task id → task (status, frames, node, attempt, done frames, rendering)
  const taskOfFrame = new Map();
  const urls = new Set(); // object URLs to revoke on leave
  let lastShown = 0;
  let lastFrame = null;
  let openFrame = null; // the dialog's frame
  let following = null; // the task whose log the dialog follows
  let logLines = [];
  // The status as the WebSocket (or a control's answer) last said: newer
  // than the read models a refresh reads, which may lag a moment.
  let liveStatus = null;

  const header = h("div", { class: "render-header" });
  const legend = h("ul", { class: "legend", "aria-label": "Frames by state" });
  const gridHolder = h("div", { class: "grid-holder" });
  const latest = h("figure", { class: "latest" }, h("figcaption", {}, "Last rendered frame: none yet"));
  const history = h("tbody");
  const historyMore = h("button", { type: "button" }, "Load more events");
  let historyAfter = 0;
  const dialog = h("dialog", { class: "frame-dialog", "aria-labelledby": "frame-title" });

  function url(u) { urls.add(u); return u; }

  // ----- the render's header -----
  function showHeader() {
    if (!render) return;
    document.title = `${render.name} · FlatRender`;
    const priority = h("input", { id: "priority", type: "number", min: "0", max: "100", value: String(render.priority) });
    const setPriority = h("button", { type: "button" }, "Set priority");
    setPriority.addEventListener("click", () => act(setPriority, async () => {
      await api.post(`${base}/priority`, { priority: Number(priority.value) });
      await refresh();
    }));
    const download = h("button", { type: "button" }, "Download all frames");
    download.addEventListener("click", () => act(download, async () => {
      const u = url(await api.objectUrl(`${base}/archive`));
      const a = h("a", { href: u, download: `${render.name.replace(/[^\w.-]+/g, "_")}.tar` });
      document.body.append(a);
      a.click();
      a.remove();
    }));
    replace(header,
      h("p", {}, h("a", { href: "#/renders" }, "← Renders")),
      h("h1", {}, render.name, " ", badge(render.status)),
      bar(grid && render.frames_total ? grid.counts().done / render.frames_total
        : render.frames_total ? render.frames_done / render.frames_total : 0, "render progress"),
      h("dl", { class: "facts" },
        h("dt", {}, "Frames"), h("dd", { id: "frames-count" }, `${grid ? grid.counts().done : render.frames_done}/${render.frames_total}`),
        h("dt", {}, "Renderer"), h("dd", {}, render.renderer),
        h("dt", {}, "Cost"), h("dd", {}, money(render.cost_minor)),
        h("dt", {}, "Submitted"), h("dd", {}, when(render.submitted_at)),
        h("dt", {}, "Updated"), h("dd", {}, when(render.updated_at)),
        render.last_error ? [h("dt", {}, "Last error"), h("dd", {}, render.last_error)] : null),
      h("div", { class: "actions" }, controls(render, (answer) => {
        if (answer && answer.status) { liveStatus = answer.status; render.status = answer.status; showHeader(); }
      }),
        h("label", { for: "priority" }, "Priority"), priority, setPriority, download));
  }

  // A render submitted a moment ago may not be in the read models yet.
  async function refresh(tries = 1) {
    for (let i = 0; ; i++) {
      try {
        render = await api.get(base);
        if (liveStatus) render.status = liveStatus;
        showHeader();
        return;
      } catch (err) {
        if (err.status !== 404 || i + 1 >= tries) {
          tell(err.message);
          return;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  // ----- frames -----
  function frameState(task, frame) {
    switch (task.status) {
      case "completed": return ["done", null];
      case "failed": return ["failed", null];
      case "cancelled": return ["cancelled", null];
      case "queued": return ["queued", null];
      default:
        if (task.done.has(frame)) return ["done", null];
        if (task.rendering === frame) return ["rendering", task.percent];
        return [task.status === "running" ? "rendering" : "leased", task.status === "running" ? 0 : null];
    }
  }

  function paint(task) {
    if (!grid) return;
    for (let f = task.start; f <= task.end; f++) {
      const [state, percent] = frameState(task, f);
      grid.set(f, state, percent);
    }
    legendSoon();
  }

  let legendTimer = null;
  function legendSoon() {
    if (legendTimer) return;
    legendTimer = setTimeout(() => {
      legendTimer = null;
      if (!grid) return;
      grid.flush();
      const counts = grid.counts();
      replace(legend, STATES.map((s) => h("li", {}, h("span", { class: `swatch ${s}`, "aria-hidden": "true" }), `${s}: ${counts[s]}`)));
      if (render) {
        // The header follows the grid: frames done, and the bar.
        const done = counts.done;
        const el = document.getElementById("frames-count");
        if (el) el.textContent = `${done}/${render.frames_total}`;
        const pct = render.frames_total ? Math.round((100 * done) / render.frames_total) : 0;
        const progress = header.querySelector(".bar progress");
        const text = header.querySelector(".bar .bar-text");
        if (progress) progress.value = pct;
        if (text) text.textContent = `${pct}%`;
      }
    }, 250);
  }

  function addTask(t) {
    const task = {
      id: t.task_id, index: t.index, start: t.frames.start, end: t.frames.end,
      status: t.status || "queued", node: t.node_id || null, attempt: t.attempt || 0,
      done: new Set(), rendering: null, percent: null,
    };
    const already = Math.min(t.frames_done || 0, task.end - task.start + 1);
    for (let i = 0; i < already; i++) task.done.add(task.start + i);
    tasks.set(task.id, task);
    for (let f = task.start; f <= task.end; f++) taskOfFrame.set(f, task);
    paint(task);
  }

  function ensureGrid() {
    if (grid || !render) return;
    grid = new FrameGrid(render.frames.start, render.frames.end, openDialog);
    replace(gridHolder, grid.el);
  }

  // The read models may not hold a frame the moment its event arrives:
  // a thumbnail that is not there yet is asked for again, a few times.
  async function thumbnail(frame, tries = 6, size = 256) {
    for (let i = 0; ; i++) {
      try {
        return url(await api.objectUrl(`${base}/frames/${frame}/thumbnail?size=${size}`));
      } catch (err) {
        if (err.status !== 404 || i + 1 >= tries) throw err;
        await new Promise((r) => setTimeout(r, 700));
      }
    }
  }

  let latestTimer = null;
  function showLatest(frame) {
    lastFrame = frame;
    if (latestTimer) return; // at most one image every 2 s, the newest
    latestTimer = setTimeout(async () => {
      lastShown = Date.now();
      const shown = lastFrame;
      try {
        const u = await thumbnail(shown, 6, 512);
        replace(latest,
          h("img", { src: u, alt: `Frame ${shown} of ${render ? render.name : "the render"}` }),
          h("figcaption", {}, `Last rendered frame: ${shown}`));
      } catch { /* the next frame will show */ }
      latestTimer = null;
    }, Math.max(0, 2000 - (Date.now() - lastShown)));
  }

  function handle(m) {
    if (m.type === "snapshot") {
      if (m.render && render) {
        render.status = m.render.status;
        liveStatus = m.render.status;
        render.priority = m.render.priority;
        render.frames_done = m.render.frames_done;
        showHeader();
      }
      ensureGrid();
      tasks.clear();
      for (const t of m.tasks || []) addTask(t);
      if (grid) grid.el.dataset.snapshot = String(m.position);
      let newest = null;
      for (const t of tasks.values()) for (const f of t.done) newest = newest === null ? f : Math.max(newest, f);
      for (const t of tasks.values()) if (t.status === "completed") newest = newest === null ? t.end : Math.max(newest, t.end);
      if (newest !== null) showLatest(newest);
      return;
    }
    const task = m.task_id ? tasks.get(m.task_id) : null;
    switch (m.type) {
      case "render.split":
        ensureGrid();
        for (const t of m.tasks) addTask({ ...t, status: "queued" });
        break;
      case "render.status":
        liveStatus = m.status;
        if (render) {
          render.status = m.status;
          render.updated_at = m.at;
          if (m.reason) render.last_error = m.reason;
          showHeader();
        }
        if (m.status === "cancelled") {
          for (const t of tasks.values()) {
            if (t.status !== "completed") { t.status = "cancelled"; paint(t); }
          }
        }
        // Cost and times of the end, once the read models have it.
        if (["completed", "failed", "cancelled"].includes(m.status)) setTimeout(() => refresh(), 1500);
        break;
      case "render.priority":
        if (render) { render.priority = m.priority; showHeader(); }
        break;
      case "task.assigned":
        if (task) {
          Object.assign(task, { status: "leased", node: m.node_id, attempt: m.attempt, rendering: null, percent: null });
          task.done.clear();
          paint(task);
        }
        break;
      case "task.started":
        if (task) { task.status = "running"; paint(task); }
        break;
      case "progress":
        if (task && m.attempt === task.attempt && task.status !== "completed") {
          task.status = "running";
          task.rendering = m.frame;
          task.percent = m.percent;
          paint(task);
        }
        break;
      case "frame.done":
        if (task) {
          task.done.add(m.frame);
          if (task.rendering === m.frame) task.rendering = null;
          paint(task);
        }
        showLatest(m.frame);
        break;
      case "task.completed":
        if (task) { task.status = "completed"; task.rendering = null; paint(task); }
        break;
      case "task.failed":
        if (task) { task.status = "failed"; task.rendering = null; paint(task); }
        break;
      case "task.requeued":
        if (task) {
          Object.assign(task, { status: "queued", rendering: null, percent: null });
          task.done.clear();
          paint(task);
        }
        break;
      case "log":
        if (following && m.task_id === following.task && m.attempt === following.attempt) appendLog(m.lines);
        break;
      default:
        break;
    }
    if (m.routing_key && historyLoaded) addHistory({ version: "live", recorded_at: m.at, routing_key: m.routing_key });
  }

  // ----- the frame dialog -----
  const logPre = h("pre", { class: "log", tabindex: "0", "aria-label": "Task log" });

  function appendLog(lines) {
    for (const l of lines) logLines.push(`${l.stream === "stderr" ? "! " : ""}${safeLine(l.text)}`);
    if (logLines.length > LOG_LINES_KEPT) logLines = logLines.slice(-LOG_LINES_KEPT);
    const atBottom = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 4;
    logPre.textContent = logLines.join("\n");
    if (atBottom) logPre.scrollTop = logPre.scrollHeight;
  }

  function stopFollowing() {
    if (following) live.unfollowLogs(following.task);
    following = null;
  }

  async function openDialog(frame) {
    stopFollowing();
    openFrame = frame;
    const task = taskOfFrame.get(frame);
    const [state, percent] = task ? frameState(task, frame) : ["queued", null];
    const facts = h("dl", { class: "facts" },
      h("dt", {}, "State"), h("dd", {}, state + (percent !== null && state === "rendering" ? ` ${Math.round(percent)}%` : "")),
      h("dt", {}, "Task"), h("dd", {}, task ? `#${task.index} (frames ${task.start}–${task.end})` : "—"),
      h("dt", {}, "Node"), h("dd", { class: "mono", id: "frame-node" }, task && task.node ? task.node : "—"),
      h("dt", {}, "Attempt"), h("dd", {}, task ? String(task.attempt) : "—"));
    const extra = h("dl", { class: "facts" });
    const picture = h("div", { class: "frame-picture" });
    const close = h("button", { type: "button", class: "close" }, "Close");
    close.addEventListener("click", () => dialog.close());
    const full = h("button", { type: "button" }, "Open full PNG");
    full.addEventListener("click", () => act(full, async () => {
      const u = url(await api.objectUrl(`${base}/frames/${frame}`));
      replace(picture, h("img", { src: u, alt: `Frame ${frame}, full size`, class: "full" }),
        h("p", {}, h("a", { href: u, download: `frame_${String(frame).padStart(4, "0")}.png` }, "Save PNG")));
    }));
    const fullLog = h("button", { type: "button" }, "Full log");
    const follow = h("button", { type: "button", "aria-pressed": "false" }, "Follow live");
    logLines = [];
    logPre.textContent = "";
    replace(dialog,
      h("h2", { id: "frame-title" }, `Frame ${frame}`),
      facts, extra, picture,
      h("div", { class: "actions" }, full),
      h("h3", {}, "Log"),
      h("div", { class: "actions" }, follow, fullLog),
      logPre,
      close);
    if (!dialog.open) dialog.showModal();
    close.focus();

    if (state === "done") {
      thumbnail(frame).then((u) => {
        if (openFrame !== frame) return;
        replace(picture, h("img", { src: u, alt: `Frame ${frame}`, class: "thumb" }));
      }).catch(() => replace(picture, h("p", {}, "No output stored for this frame yet.")));
    }
    if (!task) return;
    // Render seconds, attempts and failures: the task's row (tasks are paged by index).
    api.get(`${base}/tasks?page=${Math.floor(task.index / 100) + 1}&page_size=100`).then((page) => {
      const t = page.items.find((x) => x.id === task.id);
      if (!t || openFrame !== frame) return;
      if (t.node_id) document.getElementById("frame-node").textContent = t.node_id;
      replace(extra,
        h("dt", {}, "Render seconds"), h("dd", {}, String(t.render_seconds)),
        h("dt", {}, "Attempts"), h("dd", {}, String(t.attempts)),
        h("dt", {}, "Failures"), h("dd", {}, String(t.failures)),
        t.last_error ? [h("dt", {}, "Last error"), h("dd", {}, t.last_error)] : null);
    }).catch(() => {});
    const attempt = task.attempt;
    if (!attempt) { logPre.textContent = "The task has not run yet."; return; }
    const logPath = `${base}/tasks/${task.id}/attempts/${attempt}/log`;
    const loadLog = async (tail) => {
      try {
        const text = await api.text(tail ? `${logPath}?tail=${tail}` : logPath);
        logLines = text.split("\n").filter((l, i, all) => l !== "" || i < all.length - 1).map(safeLine);
        logPre.textContent = logLines.join("\n");
        logPre.scrollTop = logPre.scrollHeight;
      } catch (err) {
        logPre.textContent = err.status === 404 ? "No log for this attempt yet." : err.message;
      }
    };
    fullLog.addEventListener("click", () => act(fullLog, () => loadLog(null)));
    follow.addEventListener("click", () => {
      if (following) {
        stopFollowing();
        follow.setAttribute("aria-pressed", "false");
        follow.textContent = "Follow live";
      } else {
        following = { task: task.id, attempt };
        live.followLogs(task.id);
        follow.setAttribute("aria-pressed", "true");
        follow.textContent = "Stop following";
      }
    });
    await loadLog(LOG_TAIL);
    if (["leased", "rendering"].includes(state)) follow.click();
  }
  dialog.addEventListener("close", () => {
    stopFollowing();
    const frame = openFrame;
    openFrame = null;
    // Back to the frame's cell, unless the focus already went somewhere.
    if (grid && frame !== null) grid.focus(frame);
  });

  // ----- history -----
  let historyLoaded = false;
  function addHistory(e) {
    history.append(h("tr", {},
      h("td", { class: "num" }, String(e.version)),
      h("td", {}, when(e.recorded_at)),
      h("td", { class: "mono" }, e.routing_key)));
  }
  async function loadHistory() {
    try {
      const page = await api.get(`${base}/events?after=${historyAfter}&limit=100`);
      historyLoaded = true;
      for (const e of page.items) addHistory(e);
      if (page.next_after !== undefined && page.next_after !== null) historyAfter = page.next_after;
      historyMore.hidden = page.items.length < 100;
    } catch (err) {
      tell(err.message);
    }
  }
  historyMore.addEventListener("click", () => act(historyMore, loadHistory));
  const historySection = h("details", { class: "history" },
    h("summary", {}, "Event history"),
    h("table", {},
      h("caption", { class: "visually-hidden" }, "The render's events"),
      h("thead", {}, h("tr", {}, ["Version", "Recorded", "Event"].map((c) => h("th", { scope: "col" }, c)))),
      history),
    historyMore);
  historySection.addEventListener("toggle", () => { if (historySection.open && !historyLoaded) loadHistory(); });

  replace(main, header,
    h("section", { "aria-labelledby": "frames-title" },
      h("h2", { id: "frames-title" }, "Frames"), legend,
      h("p", { class: "help" }, "Click a frame, or focus the grid: arrow keys move between frames, Enter opens one."),
      gridHolder),
    latest, historySection, dialog);

  let live = null;
  refresh(20).then(() => {
    if (!render) return;
    ensureGrid();
    live = new Live(`/v1/ws/renders/${encodeURIComponent(renderId)}`, handle);
  });
  return () => {
    if (live) live.close();
    if (grid) grid.destroy();
    if (legendTimer) clearTimeout(legendTimer);
    if (latestTimer) clearTimeout(latestTimer);
    for (const u of urls) URL.revokeObjectURL(u);
    if (dialog.open) dialog.close();
  };
}
