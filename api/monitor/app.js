// The monitor's shell: sign-in, navigation (#/renders, #/renders/<id>,
// #/nodes, #/tenant) and the notices every page shares.

import { h, replace, tell } from "./dom.js";
import * as api from "./api.js";
import { onConnection } from "./live.js";
import { rendersPage } from "./renders.js";
import { renderPage } from "./render.js";
import { nodesPage } from "./nodes.js";
import { tenantPage } from "./tenant.js";

const main = document.getElementById("main");
const signOut = document.getElementById("sign-out");
const connection = document.getElementById("connection");
let page = null; // the current page's cleanup
let signingIn = false; // a 401 while signing in is the form's to show

function signInPage() {
  document.title = "Sign in · FlatRender";
  const email = h("input", { id: "email", name: "email", type: "email", required: true, autocomplete: "username" });
  const password = h("input", { id: "password", name: "password", type: "password", required: true, autocomplete: "current-password" });
  const passwordError = h("p", { id: "password-error", class: "error", role: "alert" });
  const byPassword = h("form", { class: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("label", { for: "email" }, "E-mail address"), email,
    h("label", { for: "password" }, "Password"), password,
    passwordError,
    h("button", { type: "submit" }, "Sign in"));
  byPassword.addEventListener("submit", async (e) => {
    e.preventDefault();
    replace(passwordError);
    try {
      api.setToken(await api.signIn(email.value.trim(), password.value));
      password.value = "";
      location.hash = "#/renders";
      route();
    } catch (err) {
      replace(passwordError, err.status === 401 ? "The e-mail address or the password is wrong." : err.message);
      password.focus();
    }
  });

  const field = h("textarea", {
    id: "token", name: "token", rows: "4", required: true, autocomplete: "off",
    spellcheck: "false", "aria-describedby": "token-help",
  });
  const error = h("p", { id: "sign-in-error", class: "error", role: "alert" });
  const byToken = h("form", { class: "sign-in token", "aria-labelledby": "token-title" },
    h("h2", { id: "token-title" }, "Or paste an access token"),
    h("label", { for: "token" }, "Access token"),
    field,
    h("p", { id: "token-help", class: "help" },
      "A token of a user registered with ", h("code", {}, "flatrender user create"),
      ", printed by ", h("code", {}, "flatrender token issue --user <id>"),
      " (or by ", h("code", {}, "flatrender demo --keep"), "). It stays in this tab only."),
    error,
    h("button", { type: "submit" }, "Use this token"));
  byToken.addEventListener("submit", async (e) => {
    e.preventDefault();
    api.setToken(field.value);
    signingIn = true;
    try {
      await api.get("/v1/tenant");
      signingIn = false;
      location.hash = "#/renders";
      route();
    } catch (err) {
      signingIn = false;
      api.setToken(null);
      replace(error, err.status === 401 ? "That token is not valid (or its user was removed)." : err.message);
      field.focus();
    }
  });
  replace(main, byPassword, byToken);
  email.focus();
  return () => {};
}

function route() {
  if (page) page();
  page = null;
  tell("");
  const hash = location.hash || "#/renders";
  signOut.hidden = !api.token();
  for (const a of document.querySelectorAll("nav a")) {
    if (hash.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!api.token()) {
    page = signInPage();
    return;
  }
  const parts = hash.slice(2).split("/");
  replace(main);
  try {
    if (parts[0] === "renders" && parts[1]) page = renderPage(main, parts[1]);
    else if (parts[0] === "nodes") page = nodesPage(main);
    else if (parts[0] === "tenant") page = tenantPage(main);
    else page = rendersPage(main);
  } catch (err) {
    tell(err.message);
  }
}

api.whenUnauthorized(() => {
  if (signingIn) return;
  api.setToken(null);
  route();
});
signOut.addEventListener("click", () => {
  api.setToken(null);
  location.hash = "#/renders";
  route();
});
onConnection((up) => {
  connection.textContent = up ? "Live" : "Reconnecting…";
  connection.className = `connection ${up ? "up" : "down"}`;
});
window.addEventListener("hashchange", route);
route();
