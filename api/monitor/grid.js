// The frame grid: one cell per frame, coloured by state, updated at most
// once per animation frame however many messages arrive. One cell is in
// the tab order at a time (arrow keys, Home and End move; Enter opens), so
// a render of 10,000 frames is one tab stop, not 10,000.

import { h } from "./dom.js";

export const STATES = ["queued", "leased", "rendering", "done", "failed", "cancelled"];

export class FrameGrid {
  constructor(first, last, open) {
    this.first = first;
    this.open = open;
    this.cells = [];
    this.pending = new Map(); // frame → [state, percent]
    this.scheduled = false;
    this.tally = Object.fromEntries(STATES.map((s) => [s, 0]));
    this.tally.queued = last - first + 1;
    this.el = h("div", { class: "grid", role: "grid", "aria-label": `Frames ${first} to ${last}`,
      "aria-rowcount": "1", "aria-colcount": String(last - first + 1) });
    const row = h("div", { role: "row", class: "grid-row" });
    const fragment = document.createDocumentFragment();
    for (let f = first; f <= last; f++) {
      const cell = document.createElement("div");
      cell.setAttribute("role", "gridcell");
      cell.className = "cell queued";
      cell.tabIndex = f === first ? 0 : -1;
      cell.dataset.frame = String(f);
      cell.dataset.state = "queued";
      cell.setAttribute("aria-label", `Frame ${f}: queued`);
      cell.title = `Frame ${f}: queued`;
      fragment.append(cell);
      this.cells.push(cell);
    }
    row.append(fragment);
    this.el.append(row);
    this.el.addEventListener("click", (e) => {
      const cell = e.target.closest(".cell");
      if (cell) { this.focus(Number(cell.dataset.frame)); this.open(Number(cell.dataset.frame)); }
    });
    this.el.addEventListener("keydown", (e) => this.key(e));
  }

  cell(frame) {
    return this.cells[frame - this.first];
  }

  focus(frame) {
    const next = this.cell(frame);
    if (!next) return;
    for (const c of this.el.querySelectorAll('.cell[tabindex="0"]')) c.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  }

  key(e) {
    const cell = e.target.closest(".cell");
    if (!cell) return;
    const frame = Number(cell.dataset.frame);
    const perRow = Math.max(1, Math.round(this.el.clientWidth / (cell.offsetWidth + 2)) || 1);
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow, ArrowUp: -perRow };
    if (e.key in moves) {
      e.preventDefault();
      this.focus(Math.max(this.first, Math.min(this.first + this.cells.length - 1, frame + moves[e.key])));
    } else if (e.key === "Home") {
      e.preventDefault();
      this.focus(this.first);
    } else if (e.key === "End") {
      e.preventDefault();
      this.focus(this.first + this.cells.length - 1);
    } else if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      this.open(frame);
    }
  }

  /** Sets a frame's state (applied on the next animation frame). */
  set(frame, state, percent = null) {
    if (!this.cell(frame)) return;
    this.pending.set(frame, [state, percent]);
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => this.flush());
    }
  }

  flush() {
    this.scheduled = false;
    for (const [frame, [state, percent]] of this.pending) {
      const cell = this.cell(frame);
      const label = state === "rendering" && percent !== null
        ? `Frame ${frame}: rendering ${Math.round(percent)}%` : `Frame ${frame}: ${state}`;
      if (cell.dataset.state !== state) {
        this.tally[cell.dataset.state]--;
        this.tally[state]++;
        cell.className = `cell ${state}`;
        cell.dataset.state = state;
      }
      if (state === "rendering" && percent !== null) cell.style.setProperty("--p", `${percent}%`);
      if (cell.title !== label) {
        cell.title = label;
        cell.setAttribute("aria-label", label);
      }
    }
    this.pending.clear();
  }

  /** How many cells are in each state (the legend's counts). */
  counts() {
    return { ...this.tally };
  }
}
