// One WebSocket of the contract (contracts/websocket/render-progress.md),
// reconnected with ?after=<position of the last message handled>, so that
// after any drop the page sees every stored event once and in order.

import { token, get } from "./api.js";

const status = new Set();

/** Whether any live connection is down (for the header's indicator). */
export function onConnection(f) {
  status.add(f);
  return () => status.delete(f);
}

export class Live {
  /** path: "/v1/ws/renders" or "/v1/ws/renders/<id>"; handle(message);
   * extra query parameters (all_tenants). */
  constructor(path, handle, extra = {}) {
    this.path = path;
    this.extra = extra;
    this.handle = handle;
    this.position = null;
    this.closed = false;
    this.delay = 500;
    this.follows = new Set();
    this.open();
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams({ token: token() || "", ...this.extra });
    if (this.position !== null) q.set("after", String(this.position));
    return `${scheme}//${location.host}${this.path}?${q}`;
  }

  open() {
    const ws = new WebSocket(this.url());
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.delay = 500;
      for (const task of this.follows) this.send({ type: "follow_logs", task_id: task });
      for (const f of status) f(true);
    };
    ws.onmessage = (e) => {
      let message;
      try {
        message = JSON.parse(e.data);
      } catch {
        return;
      }
      if (typeof message.position === "number") this.position = message.position;
      this.handle(message);
    };
    ws.onclose = (e) => {
      if (this.closed) return;
      for (const f of status) f(false);
      if (e.code === 1008) return; // our message was wrong: retrying repeats it
      // Refused before it opened: an expired or revoked token is a 401 the
      // browser does not show; asking the API finds out (and signs out).
      if (!opened) get("/v1/tenant").catch(() => {});
      setTimeout(() => { if (!this.closed) this.open(); }, this.delay);
      this.delay = Math.min(this.delay * 2, 10_000);
    };
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  followLogs(task) {
    this.follows.add(task);
    this.send({ type: "follow_logs", task_id: task });
  }

  unfollowLogs(task) {
    this.follows.delete(task);
    this.send({ type: "unfollow_logs", task_id: task });
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close(1000);
  }
}
