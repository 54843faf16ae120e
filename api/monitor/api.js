// The public API over fetch. The token lives in this tab's sessionStorage
// and goes only in the Authorization header (and, for the WebSocket, in the
// ?token= the contract requires).

const KEY = "flatrender.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value.trim());
  else sessionStorage.removeItem(KEY);
}

/** The claims of the token (not verified here: the server does). */
export function claims() {
  const t = token();
  if (!t) return null;
  try {
    const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

/** An error answered by the API, with the contract's code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

async function send(method, path, { json, body, headers } = {}) {
  const h = new Headers(headers || {});
  const t = token();
  if (t) h.set("Authorization", `Bearer ${t}`);
  if (json !== undefined) {
    h.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers: h, body, cache: "no-store" });
  if (!response.ok) {
    let code = "error";
    let message = `${response.status} ${response.statusText}`;
    try {
      const e = (await response.json()).error;
      code = e.code;
      message = e.message;
    } catch { /* not the error body */ }
    if (response.status === 401) onUnauthorized(message);
    throw new ApiError(response.status, code, message);
  }
  return response;
}

/** A token for an e-mail address and password (POST /v1/auth/token). */
export async function signIn(email, password) {
  const response = await fetch("/v1/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password }),
    cache: "no-store",
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const e = body.error || {};
    throw new ApiError(response.status, e.code || "error", e.message || `${response.status}`);
  }
  return body.token;
}

export async function get(path) {
  return (await send("GET", path)).json();
}

export async function post(path, json, headers) {
  return (await send("POST", path, { json: json ?? {}, headers })).json();
}

export async function upload(name, file) {
  const path = `/v1/files?name=${encodeURIComponent(name)}`;
  return (await send("POST", path, {
    body: file,
    headers: { "Content-Type": "application/octet-stream" },
  })).json();
}

/** A binary response as an object URL (images and archives need the header too). */
export async function objectUrl(path) {
  const response = await send("GET", path);
  return URL.createObjectURL(await response.blob());
}

export async function text(path) {
  return (await send("GET", path)).text();
}
