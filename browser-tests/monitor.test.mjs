// The web monitor in headless Chromium against a real server with real
// agents (`flatrender demo --keep`: the server, two node agents as their own
// processes, a finished render, and an operator's token).
//
//   FLATRENDER_BIN=target/debug/flatrender node browser-tests/monitor.test.mjs
//
// Screenshots of every page go to target/monitor-screenshots/. Exits 1 on
// the first failed check, with the server's and agents' output kept.

import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import crypto from "node:crypto";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const bin = path.resolve(root, process.env.FLATRENDER_BIN || "target/debug/flatrender");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = path.join(root, "target", "monitor-screenshots");
const scene = path.join(root, "node-agent", "scenes", "demo.json");
const axeSource = fs.readFileSync(path.join(here, "node_modules", "axe-core", "axe.min.js"), "utf8");
const TIMEOUT = 60_000;

fs.mkdirSync(shots, { recursive: true });
const work = fs.mkdtempSync(path.join(os.tmpdir(), "flatrender-monitor-"));

/** Starts `flatrender demo --keep` and waits for its monitor URL and token. */
async function startDemo() {
  const child = spawn(bin, ["demo", "--keep", "--quiet", "--nodes", "2", "--dir", work], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d) => { out += d; });
  child.stderr.on("data", (d) => { out += d; });
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    const lines = out.split("\n");
    const at = lines.findIndex((l) => l.startsWith("or with this operator's token"));
    if (at >= 0 && lines[at + 1] && lines[at + 1].trim().length > 20 && out.includes("Serving until")) {
      return {
        child,
        monitor: out.match(/Monitor: (\S+)/)[1],
        server: out.match(/Server: +(\S+)/)[1],
        token: lines[at + 1].trim(),
        email: out.match(/Sign in as (\S+) with the password (\S+)/)[1],
        password: out.match(/Sign in as (\S+) with the password (\S+)/)[2],
        output: () => out,
      };
    }
    if (child.exitCode !== null) throw new Error(`flatrender demo exited ${child.exitCode}:\n${out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill("SIGTERM");
  throw new Error(`flatrender demo did not start in 3 minutes:\n${out}`);
}

/** The public API, as a third-party client would call it. */
function client(server, token) {
  const call = async (method, p, body, headers = {}) => {
    const r = await fetch(server + p, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}), ...headers },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  return {
    get: (p) => call("GET", p),
    post: (p, body) => call("POST", p, body ?? {}),
    async upload(name, bytes) {
      const r = await fetch(`${server}/v1/files?name=${encodeURIComponent(name)}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/octet-stream" },
        body: bytes,
      });
      if (!r.ok) throw new Error(`upload: ${r.status} ${await r.text()}`);
      return r.json();
    },
  };
}

async function until(what, f, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

/** axe-core on the page as it is now: no violations (WCAG 2 A and AA). */
async function accessible(page, name) {
  // Evaluated through the DevTools protocol, so the page's CSP (which
  // forbids inline scripts) stays on for everything the page itself runs.
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }));
  const problems = result.violations.map((v) =>
    `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join("; ")}`);
  assert.deepEqual(problems, [], `accessibility of the ${name} page`);
  console.log(`  axe: ${name} page — ${result.passes.length} rules pass, no violations`);
}

/** The grid's counts per state (its data-* attributes). */
async function counts(page) {
  return page.evaluate(() => {
    const d = document.querySelector(".grid").dataset;
    return Object.fromEntries(["queued", "leased", "rendering", "done", "failed", "cancelled"].map((s) => [s, Number(d[s])]));
  });
}

/** Clicks a frame's cell on the grid's canvas. */
async function clickFrame(page, frame) {
  const at = await page.evaluate((f) => {
    const grid = document.querySelector(".grid");
    const canvas = grid.querySelector("canvas").getBoundingClientRect();
    const first = Number(grid.getAttribute("aria-label").match(/Frames (\d+)/)[1]);
    const pitch = Number(grid.dataset.pitch);
    const columns = Number(grid.dataset.columns);
    const i = f - first;
    return { x: canvas.left + (i % columns) * pitch + pitch / 2 - 1, y: canvas.top + Math.floor(i / columns) * pitch + pitch / 2 - 1 };
  }, frame);
  await page.mouse.click(at.x, at.y);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

const demo = await startDemo();
const api = client(demo.server, demo.token);
const browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox"] });
const dialogs = [];
const errors = [];
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss(); });
  page.on("pageerror", (e) => errors.push(e.message));
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const step = (s) => console.log(`- ${s}`);

  step("the monitor is served with a CSP without unsafe-inline");
  const index = await fetch(demo.monitor);
  const csp = index.headers.get("content-security-policy");
  assert.ok(csp && csp.includes("script-src 'self'") && !csp.includes("unsafe-inline"), `CSP: ${csp}`);

  step("sign in: a wrong password and a bad token are refused; a token and then a password sign in");
  await page.goto(demo.monitor);
  await page.waitForSelector("#token");
  await accessible(page, "sign-in");
  await shot(page, "1-sign-in");
  await page.fill("#email", demo.email);
  await page.fill("#password", "not the password");
  await page.click("form.sign-in:not(.token) button[type=submit]");
  await page.waitForSelector("#password-error:not(:empty)");
  await page.fill("#token", "not-a-token");
  await page.click("form.sign-in.token button[type=submit]");
  await page.waitForSelector("#sign-in-error:not(:empty)");
  await page.fill("#token", demo.token);
  await page.click("form.sign-in.token button[type=submit]");
  await page.waitForSelector("table.renders tbody tr[data-render]");
  await page.click("#sign-out");
  await page.waitForSelector("#email");
  await page.fill("#email", demo.email.toUpperCase());
  await page.fill("#password", demo.password);
  await page.click("form.sign-in:not(.token) button[type=submit]");
  await page.waitForSelector("table.renders tbody tr[data-render]");

  step("a render named <img src=x onerror=alert(1)> shows as text");
  const uploaded = await api.upload("demo.json", fs.readFileSync(scene));
  const evil = "<img src=x onerror=alert(1)>";
  const xss = await api.post("/v1/renders", {
    name: evil, scene_file_id: uploaded.id, renderer: "builtin", frames: { start: 1, end: 2 },
    resolution: { width: 64, height: 36 },
  });
  await page.waitForSelector(`tr[data-render="${xss.id}"]`);
  const shown = await page.textContent(`tr[data-render="${xss.id}"] th a`);
  assert.equal(shown, evil);
  assert.equal(await page.locator("table.renders img").count(), 0, "no <img> element was created");
  await accessible(page, "renders");
  await shot(page, "2-renders");
  // An operator may list every tenant's renders, with their tenant.
  await page.check("#filter-all");
  await page.click("form.filters button[type=submit]");
  await page.waitForSelector("table.renders thead th:text('Tenant')");
  await page.waitForSelector(`tr[data-render="${xss.id}"] td.mono`);
  assert.equal(await page.getAttribute(`tr[data-render="${xss.id}"] td.mono`, "title"), xss.tenant_id ?? (await api.get(`/v1/renders/${xss.id}`)).tenant_id);
  await accessible(page, "renders (every tenant)");
  await page.uncheck("#filter-all");
  await page.click("form.filters button[type=submit]");
  await page.waitForSelector("table.renders thead th:text('Tenant')", { state: "detached" });

  step("submit a render from the form and watch its frames turn done live");
  await page.click("details.submit summary");
  await page.setInputFiles("#submit-scene", scene);
  await page.fill("#submit-name", "From the form");
  await page.fill("#submit-start", "1");
  await page.fill("#submit-end", "12");
  await page.fill("#submit-chunk", "2");
  // Large enough that frames finish while the page watches (~1 s each).
  await page.fill("#submit-width", "960");
  await page.fill("#submit-height", "540");
  await page.fill("#submit-task-timeout", "600");
  await page.click("form.submit-form button[type=submit]");
  await page.waitForURL(/#\/renders\/[0-9a-f-]{36}$/);
  const formRender = page.url().split("/").pop();
  await page.waitForSelector(".grid canvas");
  const total = Object.values(await counts(page)).reduce((a, b) => a + b, 0);
  assert.equal(total, 12, "one cell per frame");
  // Cells turn done while the page watches (the grid's done count, seen
  // growing by a MutationObserver).
  const firstSeen = await page.evaluate(() => {
    window.__turnedDone = 0;
    const grid = document.querySelector(".grid");
    let last = Number(grid.dataset.done);
    new MutationObserver(() => {
      const now = Number(grid.dataset.done);
      if (now > last) window.__turnedDone += now - last;
      last = now;
    }).observe(grid, { attributes: true, attributeFilter: ["data-done"] });
    return last;
  });
  await page.waitForFunction(() => document.querySelector(".grid").dataset.done === "12");
  const turned = await page.evaluate(() => window.__turnedDone);
  assert.ok(turned > 0 && firstSeen < 12, `frames turned done live (${firstSeen} done at first, ${turned} turned)`);
  const submitted = await api.get(`/v1/renders/${formRender}`);
  assert.equal(submitted.name, "From the form");
  assert.equal(submitted.task_timeout_seconds, 600);
  assert.equal(submitted.chunk_size, 2);
  console.log(`  ${firstSeen} of 12 frames were done when the grid first showed; ${turned} turned done live`);
  await page.waitForSelector(".latest img");

  step("open a frame: its thumbnail, node and log");
  await clickFrame(page, 5);
  await page.waitForSelector("dialog[open] .frame-picture img");
  await page.waitForFunction(() => document.querySelector("dialog[open] pre.log").textContent.includes("Saved frame_0005.png")
    || document.querySelector("dialog[open] pre.log").textContent.includes("Saved frame_0006.png"));
  await page.waitForFunction(() => /^[0-9a-f-]{36}$/.test(document.getElementById("frame-node").textContent));
  await page.click("dialog[open] button:text('Open full PNG')");
  await page.waitForSelector("dialog[open] img.full");
  await accessible(page, "frame");
  await shot(page, "3-frame");
  await page.keyboard.press("Escape");
  await page.waitForSelector("dialog[open]", { state: "detached" });
  await page.waitForTimeout(300);
  // Keyboard: the grid is one tab stop and arrow keys move within it.
  // Closing the dialog gave the focus back to the grid, on the frame it showed.
  const cursor = () => page.evaluate(() => document.activeElement.classList.contains("grid") && document.activeElement.dataset.cursor);
  assert.equal(await cursor(), "5");
  await page.keyboard.press("ArrowRight");
  assert.equal(await cursor(), "6");
  assert.equal(await page.textContent(".grid [aria-live]"), "Frame 6: done");
  await page.keyboard.press("Home");
  assert.equal(await cursor(), "1");
  await page.keyboard.press("Enter");
  await page.waitForSelector("dialog[open] #frame-title");
  assert.equal(await page.textContent("dialog[open] #frame-title"), "Frame 1");
  await page.keyboard.press("Escape");
  await page.click("details.history summary");
  await page.waitForSelector("details.history tbody tr");
  assert.ok((await page.textContent("details.history tbody")).includes("render.job.submitted.v1"));
  await accessible(page, "render");
  await shot(page, "4-render");

  step("a dropped WebSocket resumes with ?after= and the page ends with exactly the farm's state");
  {
    const tab = await context.newPage();
    tab.setDefaultTimeout(TIMEOUT);
    tab.on("pageerror", (e) => errors.push(e.message));
    await tab.addInitScript((t) => sessionStorage.setItem("flatrender.token", t), demo.token);
    const dropped = await api.post("/v1/renders", {
      name: "Dropped socket", scene_file_id: uploaded.id, renderer: "builtin", frames: { start: 1, end: 16 },
      resolution: { width: 480, height: 270 },
    });
    const connections = [];
    let cut = false;
    await tab.routeWebSocket(/\/v1\/ws\/renders\//, (ws) => {
      connections.push(new URL(ws.url()).searchParams);
      const server = ws.connectToServer();
      let seen = 0;
      ws.onMessage((m) => server.send(m));
      server.onMessage((m) => {
        ws.send(m);
        // The first connection is cut (as a restarting server would) after
        // its snapshot and a few events.
        if (!cut && ++seen === 4) {
          cut = true;
          ws.close({ code: 1001, reason: "going away" });
          server.close();
        }
      });
    });
    await tab.goto(`${demo.monitor}#/renders/${dropped.id}`);
    await until("the render to complete", async () => (await api.get(`/v1/renders/${dropped.id}`)).status === "completed", 120_000);
    await tab.waitForFunction(() => document.querySelector(".grid")?.dataset.done === "16", null, { timeout: TIMEOUT });
    assert.ok(connections.length >= 2, "the page reconnected");
    assert.equal(connections[0].get("after"), null, "the first connection asks for a snapshot");
    assert.match(connections[1].get("after") || "", /^\d+$/, "the reconnection resumes from a position");
    const final = await counts(tab);
    assert.deepEqual(final, { queued: 0, leased: 0, rendering: 0, done: 16, failed: 0, cancelled: 0 });
    await tab.waitForSelector("h1 .status-completed");
    console.log(`  cut after 4 messages; reconnected with after=${connections[1].get("after")}; all 16 frames done`);
    await tab.close();
  }

  step("cancel a second render and see its cells stop");
  const long = await api.post("/v1/renders", {
    name: "Long one", scene_file_id: uploaded.id, renderer: "builtin", frames: { start: 1, end: 400 },
    chunk_size: 1, resolution: { width: 320, height: 180 },
  });
  await page.goto(`${demo.monitor}#/renders/${long.id}`);
  await page.waitForFunction(() => Number(document.querySelector(".grid")?.dataset.done) > 0);
  await page.click("button:text('Cancel')");
  await page.waitForSelector("h1 .status-cancelled");
  await page.waitForFunction(() => {
    const d = document.querySelector(".grid").dataset;
    return d.queued === "0" && d.leased === "0" && d.rendering === "0";
  });
  const stopped = await counts(page);
  assert.ok(stopped.cancelled > 0, `cells show the cancellation: ${JSON.stringify(stopped)}`);
  await page.waitForTimeout(2000);
  assert.deepEqual(await counts(page), stopped, "no cell changed after the cancellation");
  const cancelled = await api.get(`/v1/renders/${long.id}`);
  assert.equal(cancelled.status, "cancelled");
  assert.ok(cancelled.frames_done < 400, "the cancelled render did not finish");
  console.log(`  cancelled after ${cancelled.frames_done} of 400 frames`);

  step("drain a node and see it take no more work");
  await page.goto(`${demo.monitor}#/nodes`);
  await page.waitForSelector("tr[data-node]");
  assert.equal(await page.locator("tr[data-node]").count(), 2);
  await accessible(page, "nodes");
  await shot(page, "5-nodes");
  const nodes = (await api.get("/v1/nodes")).items;
  const drained = nodes[0];
  await page.click(`tr[data-node="${drained.id}"] button:text('Drain')`);
  await page.waitForSelector(`tr[data-node="${drained.id}"] .status-draining`);
  const after = await api.post("/v1/renders", {
    name: "After the drain", scene_file_id: uploaded.id, renderer: "builtin", frames: { start: 1, end: 8 },
    resolution: { width: 64, height: 36 },
  });
  await until("the render after the drain to complete",
    async () => (await api.get(`/v1/renders/${after.id}`)).status === "completed", 120_000);
  const tasks = (await api.get(`/v1/renders/${after.id}/tasks?page_size=100`)).items;
  assert.ok(tasks.length > 0);
  for (const t of tasks) assert.notEqual(t.node_id, drained.id, "a drained node got a task");
  await page.click(`tr[data-node="${drained.id}"] button:text('Enable')`);
  await page.waitForSelector(`tr[data-node="${drained.id}"] .status-online`);
  // Live: a change made elsewhere (here through the API) shows without a reload.
  const other = nodes[1];
  await api.post(`/v1/nodes/${other.id}/disable`);
  await page.waitForSelector(`tr[data-node="${other.id}"] .status-disabled`);
  await api.post(`/v1/nodes/${other.id}/enable`);
  await page.waitForSelector(`tr[data-node="${other.id}"] .status-online`);

  step("the tenant page plots usage");
  await page.goto(`${demo.monitor}#/tenant`);
  await page.waitForSelector("svg.plot rect.bar-charge");
  await page.waitForSelector("svg.plot-line circle.point-balance");
  await accessible(page, "tenant");
  await shot(page, "6-tenant");

  step("a token that expires while the tab is open: the next reconnect leads to the sign-in page");
  {
    // A token signed with the demo's own secret, valid for a few more
    // seconds (the server allows 30 s of clock skew after `exp`).
    const runDir = path.dirname(demo.output().match(/Frames: (\S+)/)[1]);
    const secret = fs.readFileSync(path.join(runDir, "data", "jwt-secret"), "utf8").trim();
    const me = await (await fetch(`${demo.server}/v1/auth/token`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email: demo.email, password: demo.password }),
    })).json();
    const now = Math.floor(Date.now() / 1000);
    const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const body = `${b64({ typ: "JWT", alg: "HS256" })}.${b64({
      sub: me.user_id, tenant_id: me.tenant_id, role: me.role, iss: "flatrender", aud: "flatrender-api",
      iat: now - 60, nbf: now - 60, exp: now - 24,
    })}`;
    const short = `${body}.${crypto.createHmac("sha256", secret).update(body).digest("base64url")}`;
    const tab = await context.newPage();
    tab.setDefaultTimeout(TIMEOUT);
    await tab.addInitScript((t) => { if (!sessionStorage.getItem("flatrender.token")) sessionStorage.setItem("flatrender.token", t); }, short);
    let socket = null;
    await tab.routeWebSocket(/\/v1\/ws\/renders/, (ws) => {
      const server = ws.connectToServer();
      socket = ws;
      ws.onMessage((m) => server.send(m));
      server.onMessage((m) => ws.send(m));
    });
    await tab.goto(`${demo.monitor}#/renders`);
    await tab.waitForSelector("table.renders tbody tr[data-render]");
    await until("the socket to open", async () => socket !== null);
    await tab.waitForTimeout(Math.max(0, (now + 8) * 1000 - Date.now())); // the token is now refused
    socket.close({ code: 1001, reason: "going away" });
    await tab.waitForSelector("#email", { timeout: 30_000 });
    console.log("  the expired token was noticed at the reconnect: the sign-in page is shown");
    await tab.close();
  }

  step("the token never appeared in a URL other than the WebSocket's");
  const leaks = requests.filter((u) => u.includes(demo.token) && !new URL(u).pathname.startsWith("/v1/ws/"));
  assert.deepEqual(leaks, []);
  assert.deepEqual(dialogs, [], "no script ran from a render's name");
  assert.deepEqual(errors, [], "no error in the page");
  console.log(`ok: every check passed; screenshots in ${shots}`);
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.stack || e}`);
  console.error(`--- flatrender demo output ---\n${demo.output()}`);
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages[0]) await pages[0].screenshot({ path: path.join(shots, "failure.png"), fullPage: true });
  } catch { /* best effort */ }
} finally {
  await browser.close();
  demo.child.kill("SIGTERM");
  await new Promise((r) => { demo.child.once("exit", r); setTimeout(r, 10_000).unref(); });
  if (!failed) fs.rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
