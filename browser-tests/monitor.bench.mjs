// The web monitor's benchmark (not a test: it prints figures, asserts
// nothing about time). Against `flatrender demo --keep`:
//
// 1. First paint and time to interactive of the render page, for a render
//    of 10,000 frames (10,000 tasks, queued: the demo's nodes are drained)
//    and, as the baseline of the same run, for the demo's 48-frame render.
// 2. The browser's CPU while frame updates arrive on the render page's
//    WebSocket at 1,000 a second, against the same page receiving none
//    (same run, same duration). The updates are the contract's messages
//    (task.assigned, progress, frame.done, task.completed for the render's
//    real tasks), injected into the page's real WebSocket by Playwright's
//    routeWebSocket after the server's snapshot: no farm can complete 1,000
//    frames a second on this machine, and the browser's work is the same.
//
//   FLATRENDER_BIN=target/debug/flatrender [FLATRENDER_BENCH_SECONDS=10] node browser-tests/monitor.bench.mjs

import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const bin = path.resolve(root, process.env.FLATRENDER_BIN || "target/debug/flatrender");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const seconds = Number(process.env.FLATRENDER_BENCH_SECONDS || 10);
const rate = Number(process.env.FLATRENDER_BENCH_UPDATES_PER_SECOND || 1000);
const FRAMES = Number(process.env.FLATRENDER_BENCH_FRAMES || 10_000);
const work = fs.mkdtempSync(path.join(os.tmpdir(), "flatrender-monitor-bench-"));

async function startDemo() {
  const child = spawn(bin, ["demo", "--keep", "--quiet", "--nodes", "1", "--dir", work], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (d) => { out += d; });
  for (let i = 0; i < 900; i++) {
    const lines = out.split("\n");
    const at = lines.findIndex((l) => l.startsWith("or with this operator's token"));
    if (at >= 0 && out.includes("Serving until")) {
      return { child, monitor: out.match(/Monitor: (\S+)/)[1], server: out.match(/Server: +(\S+)/)[1], token: lines[at + 1].trim() };
    }
    if (child.exitCode !== null) throw new Error(`flatrender demo exited:\n${out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error("flatrender demo did not start");
}

const demo = await startDemo();
const call = async (method, p, body, headers = {}) => {
  const r = await fetch(demo.server + p, {
    method,
    headers: { Authorization: `Bearer ${demo.token}`, ...headers, ...(body && !(body instanceof Uint8Array) ? { "Content-Type": "application/json" } : {}) },
    body: body instanceof Uint8Array ? body : body ? JSON.stringify(body) : undefined,
  });
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${await r.text()}`);
  return r.json();
};

// The 10,000-frame render stays queued: every node is drained first.
for (const n of (await call("GET", "/v1/nodes")).items) await call("POST", `/v1/nodes/${n.id}/drain`);
const small = (await call("GET", "/v1/renders")).items[0];
const scene = await call("POST", "/v1/files?name=demo.json",
  new Uint8Array(fs.readFileSync(path.join(root, "node-agent", "scenes", "demo.json"))),
  { "Content-Type": "application/octet-stream" });
const big = await call("POST", "/v1/renders", {
  name: `${FRAMES} frames`, scene_file_id: scene.id, renderer: "builtin",
  frames: { start: 1, end: FRAMES }, chunk_size: 1,
});
for (let i = 0; i < 120; i++) {
  try { await call("GET", `/v1/renders/${big.id}`); break; } catch { await new Promise((r) => setTimeout(r, 500)); }
}

const browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox"] });
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
await context.addInitScript((token) => sessionStorage.setItem("flatrender.token", token), demo.token);

/** Loads a render page: first paint, and interactive once every cell is in
 * the page and no long task (> 50 ms) ran for 500 ms. */
async function load(renderId) {
  const page = await context.newPage();
  await page.addInitScript(() => {
    window.__long = [];
    new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.startTime + e.duration); })
      .observe({ type: "longtask", buffered: true });
  });
  await page.goto(`${demo.monitor}#/renders/${renderId}`);
  // Interactive: the snapshot applied and every cell drawn.
  await page.waitForFunction(() => document.querySelector(".grid[data-snapshot] canvas")?.width > 0
    && document.querySelector("h1 .badge"), null, { timeout: 120_000 });
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  const cellsAt = await page.evaluate(() => performance.now());
  for (;;) {
    const quiet = await page.evaluate(() => performance.now() - Math.max(0, ...window.__long));
    if (quiet >= 500) break;
    await page.waitForTimeout(100);
  }
  const r = await page.evaluate(() => ({
    fcp: performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? null,
    lastLong: Math.max(0, ...window.__long),
  }));
  await page.close();
  return { fcp: r.fcp, tti: Math.max(cellsAt, r.lastLong), cells: cellsAt };
}

/** CPU of every Chromium process (seconds of user + system time). */
function browserCpu() {
  let ticks = 0;
  for (const pid of fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
      if (!cmd.includes("chromium")) continue;
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch { /* gone */ }
  }
  return ticks / 100;
}

/** The render page of the big render for `seconds`, with `perSecond` injected updates. */
async function updates(perSecond, { unknownTasks = false } = {}) {
  const page = await context.newPage();
  let tasks = null;
  let inject = null;
  await page.routeWebSocket(/\/v1\/ws\/renders\//, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((m) => {
      ws.send(m);
      if (!tasks) {
        try {
          const v = JSON.parse(m);
          if (v.type === "snapshot") tasks = v.tasks;
        } catch { /* not JSON */ }
      }
    });
    inject = (m) => ws.send(JSON.stringify(m));
  });
  await page.goto(`${demo.monitor}#/renders/${big.id}`);
  await page.waitForFunction(() => document.querySelector(".grid[data-snapshot] canvas")?.width > 0, null, { timeout: 120_000 });
  while (!tasks) await page.waitForTimeout(50);
  await page.waitForTimeout(1000);
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable");
  const busy = async () => (await cdp.send("Performance.getMetrics")).metrics.find((m) => m.name === "TaskDuration").value;
  const node = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
  let next = 0;
  let position = 1e12; // beyond the log: the page only keeps it for a reconnect
  const message = (i) => {
    // Each task: assigned, progress 50 %, frame done, completed (4 updates per frame).
    const t = unknownTasks
      ? { task_id: `00000000-0000-4000-8000-${String(i % 1e12).padStart(12, "0")}`, frames: { start: 1, end: 1 } }
      : tasks[Math.floor(i / 4) % tasks.length];
    const base = { render_id: big.id, task_id: t.task_id, node_id: node, attempt: 1, at: new Date().toISOString() };
    switch (i % 4) {
      case 0: return { ...base, type: "task.assigned", position: position++, routing_key: "render.task.assigned.v1", frames: t.frames };
      case 1: return { type: "progress", render_id: big.id, task_id: t.task_id, node_id: node, attempt: 1, frame: t.frames.start, percent: 50 };
      case 2: return { ...base, type: "frame.done", position: position++, routing_key: "render.task.progressed.v1", frame: t.frames.start, file_id: node, url: "" };
      default: return { ...base, type: "task.completed", position: position++, routing_key: "render.task.completed.v1", render_seconds: 1 };
    }
  };
  await page.evaluate(() => {
    window.__long = [];
    new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); })
      .observe({ type: "longtask" });
    // How late a 50 ms timer fires: what a click would wait for.
    window.__lag = [];
    let at = performance.now();
    setInterval(() => { const now = performance.now(); window.__lag.push(now - at - 50); at = now; }, 50);
  });
  const profile = process.env.FLATRENDER_BENCH_PROFILE && perSecond > 0 && !unknownTasks;
  if (profile) { await cdp.send("Profiler.enable"); await cdp.send("Profiler.start"); }
  const cpu0 = browserCpu();
  const busy0 = await busy();
  const started = Date.now();
  let sent = 0;
  while (Date.now() - started < seconds * 1000) {
    const due = Math.floor(((Date.now() - started) / 1000) * perSecond);
    while (sent < due) { inject(message(next++)); sent++; }
    await new Promise((r) => setTimeout(r, 10));
  }
  const wall = (Date.now() - started) / 1000;
  if (profile) {
    // Where the page's time went (self time per function), for tuning.
    const { profile: p } = await cdp.send("Profiler.stop");
    const self = new Map();
    const dt = p.timeDeltas;
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    p.samples.forEach((id, i) => {
      const n = byId.get(id);
      const key = `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.split("/").pop()}:${n.callFrame.lineNumber + 1}`;
      self.set(key, (self.get(key) || 0) + (dt[i] || 0));
    });
    const total = [...self.values()].reduce((a, b) => a + b, 0);
    console.log("\nprofile (self time):");
    for (const [k, v] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
      console.log(`  ${(100 * v / total).toFixed(1).padStart(5)} %  ${k}`);
    }
  }
  const result = {
    sent,
    perSecond: sent / wall,
    mainThread: (await busy() - busy0) / wall,
    browser: (browserCpu() - cpu0) / wall,
    done: await page.evaluate(() => Number(document.querySelector(".grid").dataset.done)),
    ...(await page.evaluate(() => {
      const lag = window.__lag.slice().sort((a, b) => a - b);
      return {
        longest: Math.max(0, ...window.__long),
        lagP99: lag.length ? lag[Math.min(lag.length - 1, Math.floor(lag.length * 0.99))] : 0,
      };
    })),
  };
  await page.close();
  return result;
}

const pct = (x) => `${(x * 100).toFixed(1)} %`;
const ms = (x) => (x === null ? "—" : `${Math.round(x)} ms`);
const smallLoad = await load(small.id);
const bigLoad = await load(big.id);
// The injection-only baseline runs before and after the frame updates (the
// machine drifts), and counts as their mean.
const idle = await updates(0);
const before = await updates(rate, { unknownTasks: true });
const busyRun = await updates(rate);
const after = await updates(rate, { unknownTasks: true });
const mean = (k) => (before[k] + after[k]) / 2;
const transport = { ...before, perSecond: mean("perSecond"), mainThread: mean("mainThread"), browser: mean("browser"),
  longest: Math.max(before.longest, after.longest), lagP99: Math.max(before.lagP99, after.lagP99) };
console.log(`\nRender page load (Chromium ${browser.version()}, headless):`);
console.log("| render | first contentful paint | every cell drawn | time to interactive |");
console.log("|---|---:|---:|---:|");
console.log(`| ${small.frames_total} frames (baseline) | ${ms(smallLoad.fcp)} | ${ms(smallLoad.cells)} | ${ms(smallLoad.tti)} |`);
console.log(`| ${FRAMES} frames | ${ms(bigLoad.fcp)} | ${ms(bigLoad.cells)} | ${ms(bigLoad.tti)} |`);
console.log(`\nUpdates on the ${FRAMES}-frame render page, ${seconds} s each:`);
console.log("| run | updates/s | page main thread busy | all Chromium processes CPU | longest task | timer lag p99 | frames shown done |");
console.log("|---|---:|---:|---:|---:|---:|---:|");
for (const [name, r] of [["idle", idle], ["injection only (unknown tasks: parsed, ignored), mean of before and after", transport], ["frame updates", busyRun]]) {
  console.log(`| ${name} | ${Math.round(r.perSecond)} | ${pct(r.mainThread)} | ${pct(r.browser)} | ${ms(r.longest)} | ${ms(r.lagP99)} | ${r.done} |`);
}
console.log(`\nthe page's own work for ${rate} updates/s (frame updates − injection only): main thread ${pct(busyRun.mainThread - transport.mainThread)}, all processes ${pct(busyRun.browser - transport.browser)}`);
console.log(`(the two injection-only runs: main thread ${pct(before.mainThread)} and ${pct(after.mainThread)}; their difference is this run's noise)`);
await browser.close();
demo.child.kill("SIGTERM");
await new Promise((r) => { demo.child.once("exit", r); setTimeout(r, 10_000).unref(); });
fs.rmSync(work, { recursive: true, force: true });
