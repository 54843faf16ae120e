// The frame grid: one cell per frame, coloured by state, drawn on a canvas
// so that a render of 10,000 frames (or 100,000) costs one element, and an
// update repaints one cell: however many messages arrive, the page lays
// nothing out again. Changes are applied at most once per animation frame.
//
// Keyboard and screen readers: the grid is one tab stop; arrow keys, Home,
// End, Page Up and Page Down move a cursor (drawn as a ring), Enter or
// Space opens the frame, and a live region says which frame the cursor is
// on and its state. Failed and cancelled cells carry a mark as well as a
// colour. The counts per state are in the legend (and in data-* of the
// grid, for tests).

import { h } from "./dom.js";

export const STATES = ["queued", "leased", "rendering", "done", "failed", "cancelled"];
const CODE = Object.fromEntries(STATES.map((s, i) => [s, i]));

function colours() {
  const css = getComputedStyle(document.documentElement);
  const get = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  return {
    queued: get("--queued", "#d4d4d4"), leased: get("--leased", "#93c5fd"),
    rendering: get("--rendering", "#2563eb"), done: get("--done", "#15803d"),
    failed: get("--failed", "#b91c1c"), cancelled: get("--cancelled", "#6b7280"),
    ring: get("--ring", "#f59e0b"), bg: get("--bg", "#ffffff"),
  };
}

export class FrameGrid {
  constructor(first, last, open) {
    this.first = first;
    this.count = last - first + 1;
    this.open = open;
    this.state = new Uint8Array(this.count); // all queued
    this.percent = new Float32Array(this.count);
    this.tally = Object.fromEntries(STATES.map((s) => [s, 0]));
    this.tally.queued = this.count;
    this.pending = new Set();
    this.scheduled = false;
    this.cursor = 0;
    // Big renders get smaller cells, so the canvas stays a sane size.
    this.size = this.count <= 20_000 ? 12 : this.count <= 200_000 ? 5 : 2;
    this.gap = this.size >= 12 ? 2 : 1;
    this.canvas = h("canvas", { class: "grid-canvas", "aria-hidden": "true" });
    this.status = h("p", { class: "visually-hidden", "aria-live": "polite" });
    this.el = h("div", {
      class: "grid", tabindex: "0", role: "group",
      "aria-label": `Frames ${first} to ${last}. Arrow keys move, Enter opens a frame.`,
    }, this.canvas, this.status);
    this.ctx = this.canvas.getContext("2d", { alpha: false });
    this.el.addEventListener("click", (e) => {
      const frame = this.frameAt(e.clientX, e.clientY);
      if (frame !== null) { this.focus(frame); this.open(frame); }
    });
    this.el.addEventListener("keydown", (e) => this.key(e));
    this.el.addEventListener("focus", () => { this.drawCell(this.cursor); this.say(); });
    this.el.addEventListener("blur", () => this.drawCell(this.cursor));
    this.resize = () => this.layout();
    window.addEventListener("resize", this.resize);
    requestAnimationFrame(() => this.layout());
    this.publish();
  }

  /** Stops listening to the window (the page is left). */
  destroy() {
    window.removeEventListener("resize", this.resize);
  }

  layout() {
    const width = Math.max(this.el.clientWidth, 200);
    const pitch = this.size + this.gap;
    this.columns = Math.max(1, Math.floor((width + this.gap) / pitch));
    this.rows = Math.ceil(this.count / this.columns);
    const ratio = window.devicePixelRatio || 1;
    const cssW = this.columns * pitch - this.gap;
    const cssH = this.rows * pitch - this.gap;
    this.canvas.style.width = `${cssW}px`;
    this.canvas.style.height = `${cssH}px`;
    this.canvas.width = Math.ceil(cssW * ratio);
    this.canvas.height = Math.ceil(cssH * ratio);
    this.ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    this.colours = colours();
    this.ctx.fillStyle = this.colours.bg;
    this.ctx.fillRect(0, 0, cssW, cssH);
    for (let i = 0; i < this.count; i++) this.drawCell(i);
    this.el.dataset.columns = String(this.columns);
    this.el.dataset.pitch = String(pitch);
  }

  drawCell(i) {
    if (!this.columns) return;
    const ctx = this.ctx;
    const c = this.colours;
    const pitch = this.size + this.gap;
    const x = (i % this.columns) * pitch;
    const y = Math.floor(i / this.columns) * pitch;
    const s = this.size;
    const state = STATES[this.state[i]];
    ctx.fillStyle = c.bg;
    ctx.fillRect(x - 1, y - 1, s + 2, s + 2);
    if (state === "rendering") {
      const filled = Math.round((s * Math.min(100, Math.max(0, this.percent[i]))) / 100);
      ctx.fillStyle = c.leased;
      ctx.fillRect(x, y, s, s - filled);
      ctx.fillStyle = c.rendering;
      ctx.fillRect(x, y + s - filled, s, filled);
    } else {
      ctx.fillStyle = c[state];
      ctx.fillRect(x, y, s, s);
    }
    if (s >= 12 && (state === "failed" || state === "cancelled")) {
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      if (state === "failed") { ctx.moveTo(x + 3, y + 3); ctx.lineTo(x + s - 3, y + s - 3); ctx.moveTo(x + s - 3, y + 3); ctx.lineTo(x + 3, y + s - 3); }
      else { ctx.moveTo(x + 3, y + s / 2); ctx.lineTo(x + s - 3, y + s / 2); }
      ctx.stroke();
    }
    if (i === this.cursor && document.activeElement === this.el) {
      ctx.strokeStyle = c.ring;
      ctx.lineWidth = 2;
      ctx.strokeRect(x - 0.5, y - 0.5, s + 1, s + 1);
    }
  }

  frameAt(clientX, clientY) {
    const r = this.canvas.getBoundingClientRect();
    const pitch = this.size + this.gap;
    const col = Math.floor((clientX - r.left) / pitch);
    const row = Math.floor((clientY - r.top) / pitch);
    if (col < 0 || col >= this.columns || row < 0) return null;
    const i = row * this.columns + col;
    return i < this.count ? this.first + i : null;
  }

  stateOf(frame) {
    return STATES[this.state[frame - this.first]];
  }

  label(i) {
    const state = STATES[this.state[i]];
    const pct = state === "rendering" ? ` ${Math.round(this.percent[i])}%` : "";
    return `Frame ${this.first + i}: ${state}${pct}`;
  }

  say() {
    this.status.textContent = this.label(this.cursor);
    this.el.dataset.cursor = String(this.first + this.cursor);
  }

  /** Moves the cursor to a frame and focuses the grid. */
  focus(frame) {
    const i = frame - this.first;
    if (i < 0 || i >= this.count) return;
    const was = this.cursor;
    this.cursor = i;
    this.drawCell(was);
    if (document.activeElement !== this.el) this.el.focus({ preventScroll: true });
    this.drawCell(i);
    this.say();
    const pitch = this.size + this.gap;
    const r = this.canvas.getBoundingClientRect();
    const y = r.top + Math.floor(i / this.columns) * pitch;
    if (y < 0 || y + pitch > window.innerHeight) window.scrollBy(0, y - window.innerHeight / 2);
  }

  key(e) {
    const at = this.first + this.cursor;
    const last = this.first + this.count - 1;
    const cols = this.columns || 1;
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols, PageDown: cols * 10, PageUp: -cols * 10 };
    if (e.key in moves) {
      e.preventDefault();
      this.focus(Math.max(this.first, Math.min(last, at + moves[e.key])));
    } else if (e.key === "Home") {
      e.preventDefault();
      this.focus(this.first);
    } else if (e.key === "End") {
      e.preventDefault();
      this.focus(last);
    } else if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      this.open(at);
    }
  }

  /** Sets a frame's state (drawn on the next animation frame). */
  set(frame, state, percent = null) {
    const i = frame - this.first;
    if (i < 0 || i >= this.count) return;
    const code = CODE[state];
    if (this.state[i] !== code) {
      this.tally[STATES[this.state[i]]]--;
      this.tally[state]++;
      this.state[i] = code;
    }
    if (percent !== null) this.percent[i] = percent;
    this.pending.add(i);
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => this.flush());
    }
  }

  flush() {
    this.scheduled = false;
    for (const i of this.pending) this.drawCell(i);
    if (this.pending.has(this.cursor) && document.activeElement === this.el) this.say();
    this.pending.clear();
    this.publish();
  }

  publish() {
    for (const s of STATES) this.el.dataset[s] = String(this.tally[s]);
  }

  /** How many frames are in each state. */
  counts() {
    return { ...this.tally };
  }
}
