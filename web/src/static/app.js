// app.js: the console's entry. /login shows the login form; / is the
// console, with pages on hash routes (#/instances, #/topics, #/messages,
// #/monitor, #/destinations). Everything but the login form needs a session.
import * as api from "./api.js";
import { clear, clearAlerts, errText, fmtTime, h, refreshInterval, setRefreshInterval, showError } from "./ui.js";
import * as instances from "./pages/instances.js";
import * as topics from "./pages/topics.js";
import * as messages from "./pages/messages.js";
import * as monitor from "./pages/monitor.js";
import * as destinations from "./pages/destinations.js";

const pages = { instances, topics, messages, monitor, destinations };
const main = document.getElementById("main");
let cleanup = null;

// A safe "next" target: only one of our own hash routes.
function safeNext(next) {
  return typeof next === "string" && /^#\/[A-Za-z0-9/?=&%._~-]*$/.test(next) ? next : "#/instances";
}

// toLogin goes to the login form, back to this page after; expired says
// why (a call answered 401 in a page that had a session), so that the
// operator learns the session ended and what was being saved was not.
function toLogin(expired = false) {
  location.replace(`/login?next=${encodeURIComponent(location.hash || "#/instances")}${expired ? "&expired=1" : ""}`);
}

// SESSION_WARN_MS before the session's fixed end (admin.session_ttl from
// login; using the console does not extend it), or halfway through a
// session shorter than twice that, a banner says when it ends; at the end the page goes to the login form, saying why. Both ask
// the server first: a login in another tab gives this tab a new session.
const SESSION_WARN_MS = 2 * 60 * 1000;

function watchSession(expiresAt) {
  const banner = document.getElementById("session-ending");
  const later = (ms, fn) => setTimeout(fn, Math.max(0, ms - Date.now()));
  // current calls fn if the session still ends at expiresAt; else watches
  // the new one, or goes to the login form if there is none.
  const current = (fn) => async () => {
    let who;
    try {
      who = await api.me();
    } catch (e) {
      if (e.status === 401) toLogin(true);
      else setTimeout(current(fn), 30000); // unreachable: ask again
      return;
    }
    if (who.expires_at === expiresAt) {
      fn();
      return;
    }
    banner.hidden = true;
    watchSession(who.expires_at);
  };
  const lead = Math.min(SESSION_WARN_MS, (expiresAt - Date.now()) / 2);
  later(expiresAt - lead, current(() => {
    const again = h("button.small.secondary#session-login", { type: "button", onclick: () => toLogin() }, "Log in again");
    clear(banner, `Your session ends at ${fmtTime(expiresAt).slice(11, 19)}; log in again to keep working. `, again);
    banner.hidden = false;
    later(expiresAt + 1000, current(() => toLogin(true)));
  }));
}

// "#/messages?id=x" → ["messages", URLSearchParams]
function parseHash() {
  const m = /^#\/([a-z]*)(?:\?(.*))?$/.exec(location.hash);
  return m ? [m[1], new URLSearchParams(m[2] || "")] : ["", new URLSearchParams()];
}

function route() {
  const [name, params] = parseHash();
  if (!pages[name]) {
    location.replace("#/instances");
    return;
  }
  if (cleanup) {
    try { cleanup(); } catch (e) { console.error(e); }
    cleanup = null;
  }
  clearAlerts();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  document.title = `${document.querySelector(`#nav a[data-page=${name}]`).textContent} · sorakaQ`;
  clear(main);
  const page = h("section", { id: `page-${name}` });
  main.append(page);
  cleanup = pages[name].render(page, params) || null;
}

function renderLogin() {
  document.title = "Log in · sorakaQ";
  const next = safeNext(new URLSearchParams(location.search).get("next"));
  const err = h("div.alert.error#login-error", { role: "alert", hidden: true });
  const q = new URLSearchParams(location.search);
  const note = (q.get("expired") === "1"
    && h("div.alert.warn#login-expired", { role: "status" },
      h("span.text", "Your session expired. Log in again; a change being saved when it expired was not saved.")))
    || (q.get("out") === "1" && h("div.alert.ok#login-out", { role: "status" }, h("span.text", "You are logged out.")));
  const user = h("input#username", { name: "username", autocomplete: "username", required: true, value: "admin" });
  const pass = h("input#password", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const btn = h("button#login-submit", { type: "submit" }, "Log in");
  const form = h("form.login#login-form",
    h("h1", "sorakaQ"),
    h("p", "Operators' console"),
    note,
    h("label", "Username", user),
    h("label", "Password", pass),
    err,
    btn);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    btn.disabled = true;
    try {
      await api.login(user.value, pass.value);
      location.replace(`/${next}`);
    } catch (e) {
      err.textContent = errText(e).replace(/^unauthorized: /, ""); // the API's error class means nothing here
      err.hidden = false;
      pass.select();
    } finally {
      btn.disabled = false;
    }
  });
  clear(main, h("div.login-wrap", form));
  (user.value ? pass : user).focus();
}

async function start() {
  api.setLoginRequiredHandler(() => toLogin(true));
  if (location.pathname === "/login") {
    renderLogin();
    return;
  }
  let who;
  try {
    who = await api.me();
  } catch (e) {
    if (e.status === 401) {
      toLogin();
      return;
    }
    showError(`Cannot load the session: ${errText(e)}`);
    return;
  }
  document.getElementById("topbar").hidden = false;
  document.getElementById("whoami").textContent = who.username;
  document.getElementById("default-password").hidden = !who.default_password;
  const every = document.getElementById("refresh-interval");
  every.value = String(refreshInterval());
  every.addEventListener("change", () => setRefreshInterval(Number(every.value)));
  if (who.expires_at) watchSession(who.expires_at);
  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await api.logout();
    } catch (e) {
      // Unreachable: stay (the login page would not load either, and the
      // session is not ended). Any answer (401: gone already) is fine.
      if (e.status === 0) {
        showError(`Log out: ${errText(e)}`);
        return;
      }
    }
    location.replace("/login?out=1");
  });
  window.addEventListener("hashchange", route);
  route();
}

start();
