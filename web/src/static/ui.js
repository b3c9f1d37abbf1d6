// ui.js: DOM building (text only: every value goes in as a text node or
// an attribute, never as HTML), alerts, dialogs and formatting.

// h("tag.class#id", {attr: v, onclick: fn, text: "..."}, ...children)
export function h(spec, props, ...children) {
  const m = /^([a-z0-9]+)?((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement(m[1] || "div");
  for (const part of m[2].match(/[.#][\w-]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (props && (typeof props !== "object" || props instanceof Node || Array.isArray(props))) {
    children.unshift(props);
    props = null;
  }
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value") el.value = v;
    else if (k === "checked" || k === "disabled" || k === "selected") el[k] = Boolean(v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// table(columns, rows): columns are {title, cls?, cell(row) → node|string}.
export function table(columns, rows, emptyText = "Nothing here.") {
  // a title may be a node (a sort button, a checkbox): label names it
  const head = h("tr", columns.map((c) => h("th", { class: c.cls, "aria-sort": c.sort || null }, c.title)));
  const body = rows.length
    // data-label: the column's name, shown before the value when a narrow
    // screen lays rows out as cards (app.css)
    ? rows.map((r) => h("tr", columns.map((c) => h("td", { class: c.cls, "data-label": c.label || (typeof c.title === "string" && c.title) || null }, c.cell(r)))))
    : [h("tr", h("td.empty", { colspan: columns.length }, emptyText))];
  return h("div.table-wrap", h("table", h("thead", head), h("tbody", body)));
}

export function badge(text, cls, props = {}) {
  return h("span.badge", { ...props, class: `badge ${cls || ""}` }, text);
}

export const stateBadge = (s) => badge(s, `state-${s}`);

// ---- alerts ---------------------------------------------------------------

// At most MAX_ALERTS stay, newest last, each with the time it came: errors
// stayed until dismissed, so they piled up and stale ones sat beside later
// successes. A success also clears the errors shown before it.
const MAX_ALERTS = 3;

function alertBox(kind, text) {
  const box = document.getElementById("alerts");
  for (const a of box.querySelectorAll(".alert")) {
    if (a.dataset.text === text || (kind === "ok" && a.classList.contains("error"))) a.remove();
  }
  const all = box.querySelectorAll(".alert");
  for (let i = 0; i <= all.length - MAX_ALERTS; i++) all[i].remove();
  const el = h("div.alert", { class: `alert ${kind}`, role: kind === "error" ? "alert" : "status", dataset: { text } },
    h("span.text", text),
    h("span.muted.alert-time", fmtTime(Date.now()).slice(11, 19)),
    h("button", { type: "button", title: "Dismiss", "aria-label": "Dismiss", onclick: () => el.remove() }, "×"));
  box.append(el);
  if (kind === "ok") setTimeout(() => el.remove(), 6000);
  return el;
}

export const showError = (text) => alertBox("error", text);
export const showOk = (text) => alertBox("ok", text);
export const clearAlerts = () => document.getElementById("alerts").replaceChildren();

// errText is the server's em for an ApiError, else the error's message.
export const errText = (e) => (e && e.message) || String(e);

// ---- refresh ---------------------------------------------------------------

// The auto-refresh interval of the pages that refresh themselves (topics,
// instances, monitoring): one choice for all, set in the top bar and kept
// in localStorage. 0 is off.
export const REFRESH_CHOICES = [0, 5000, 15000, 60000];
const REFRESH_KEY = "sorakaq.refresh";
const REFRESH_DEFAULT = 5000;

export function refreshInterval() {
  const v = Number(localStorage.getItem(REFRESH_KEY));
  return localStorage.getItem(REFRESH_KEY) !== null && REFRESH_CHOICES.includes(v) ? v : REFRESH_DEFAULT;
}

// setRefreshInterval keeps the choice and tells the page showing.
export function setRefreshInterval(ms) {
  if (!REFRESH_CHOICES.includes(ms)) return;
  localStorage.setItem(REFRESH_KEY, String(ms));
  window.dispatchEvent(new CustomEvent("sorakaq:refresh", { detail: ms }));
}

export const refreshLabel = (ms) => (ms ? `every ${ms / 1000} s` : "auto-refresh off");

// autoRefresh calls run every refreshInterval(), re-armed when the choice
// changes; returns the function that stops it.
export function autoRefresh(run) {
  let timer = null;
  const arm = () => {
    if (timer) clearInterval(timer);
    const ms = refreshInterval();
    timer = ms ? setInterval(run, ms) : null;
  };
  const onChange = () => arm();
  window.addEventListener("sorakaq:refresh", onChange);
  arm();
  return () => {
    window.removeEventListener("sorakaq:refresh", onChange);
    if (timer) clearInterval(timer);
  };
}

// refreshEvery calls load at the chosen interval while the page shows,
// skipping while a dialog is open, the tab is hidden, or focus is inside
// keep (rebuilding it would lose the operator's place); returns the
// function that stops it. status shows when the page was last refreshed,
// or why it failed.
export function refreshEvery(load, status, keep) {
  const run = async () => {
    if (document.getElementById("dialog").open || document.hidden || keep.contains(document.activeElement)) return;
    try {
      await load(true);
      status.textContent = `Updated ${fmtTime(Date.now()).slice(11, 19)} · ${refreshLabel(refreshInterval())}`;
      status.className = "muted";
    } catch (e) {
      status.textContent = `Refresh failed: ${errText(e)}`;
      status.className = "error-text";
    }
  };
  const note = () => {
    if (!status.classList.contains("error-text") && status.textContent.startsWith("Updated")) {
      status.textContent = status.textContent.replace(/ · .*$/, ` · ${refreshLabel(refreshInterval())}`);
    }
  };
  window.addEventListener("sorakaq:refresh", note);
  const stop = autoRefresh(run);
  return () => {
    window.removeEventListener("sorakaq:refresh", note);
    stop();
  };
}

// ---- dialogs --------------------------------------------------------------

// dialog({title, text, body, ok, cancel, danger, collect, action}) shows
// the modal dialog; resolves to collect() (or true) on OK, null on cancel.
// With action, OK runs action(collect()) first and resolves to its result:
// an error it throws (a bad field, the server's refusal) is shown in the
// dialog, which stays open with what was typed (closing it lost every edit).
export function dialog({ title, text = "", body = null, ok = "OK", cancel = "Cancel", danger = false, collect = () => true, action = null }) {
  const dlg = document.getElementById("dialog");
  const okBtn = document.getElementById("dialog-ok");
  const cancelBtn = document.getElementById("dialog-cancel");
  document.getElementById("dialog-title").textContent = title;
  const p = document.getElementById("dialog-text");
  p.textContent = text;
  p.hidden = !text;
  const err = h("div.alert.error#dialog-error", { role: "alert", hidden: true });
  clear(document.getElementById("dialog-body"), body, err);
  okBtn.textContent = ok;
  cancelBtn.textContent = cancel;
  okBtn.className = danger ? "danger" : "";
  dlg.returnValue = "";
  const form = document.getElementById("dialog-form");
  let result;
  return new Promise((resolve) => {
    const onCancel = () => dlg.close("cancel");
    const onSubmit = async (ev) => {
      if (!action) {
        result = collect();
        return; // the form closes the dialog
      }
      ev.preventDefault();
      okBtn.disabled = true;
      try {
        result = await action(collect());
        dlg.close("ok");
      } catch (e) {
        err.textContent = errText(e);
        err.hidden = false;
      } finally {
        okBtn.disabled = false;
      }
    };
    cancelBtn.addEventListener("click", onCancel);
    form.addEventListener("submit", onSubmit);
    dlg.addEventListener("close", () => {
      cancelBtn.removeEventListener("click", onCancel);
      form.removeEventListener("submit", onSubmit);
      resolve(dlg.returnValue === "ok" ? result : null);
    }, { once: true });
    okBtn.value = "ok";
    dlg.showModal();
    const first = dlg.querySelector("#dialog-body input");
    (first || okBtn).focus();
  });
}

export const confirmDialog = (title, text, ok = "OK", danger = true, cancel = "Cancel") => dialog({ title, text, ok, danger, cancel });

// ---- formatting -----------------------------------------------------------

const pad = (n, w = 2) => String(n).padStart(w, "0");

// Local time "YYYY-MM-DD HH:MM:SS.mmm".
export function fmtTime(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

// "2 d 3 h", "4 min 5 s", "850 ms".
export function fmtDuration(ms) {
  ms = Math.max(0, Math.round(ms));
  if (ms < 1000) return `${ms} ms`;
  const s = Math.floor(ms / 1000);
  const units = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];
  const out = [];
  let rest = s;
  for (const [u, n] of units) {
    if (rest >= n || (out.length === 0 && u === "s")) {
      out.push(`${Math.floor(rest / n)} ${u}`);
      rest %= n;
    }
    if (out.length === 2) break;
  }
  return out.join(" ");
}

// A histogram bucket bound: "50 ms", "40 s", "1 min 40 s", "7 d".
export const fmtBound = (ms) => (ms < 1000 ? `${Math.round(ms)} ms` : fmtDuration(ms));

// "in 5 s", "3 min ago".
export function fmtRelative(ms, now = Date.now()) {
  if (!ms) return "";
  const d = ms - now;
  if (Math.abs(d) < 1000) return "now";
  return d > 0 ? `in ${fmtDuration(d)}` : `${fmtDuration(-d)} ago`;
}

// The due time as local time plus relative.
export const fmtDue = (ms) => (ms ? `${fmtTime(ms)} (${fmtRelative(ms)})` : "—");

export function fmtNum(x, digits = 1) {
  if (x === undefined || x === null) return "—";
  return Number.isInteger(x) ? String(x) : x.toFixed(digits);
}

// "1000, 10000" → [1000, 10000]; "" → []; throws on anything else.
export function parseMsList(s) {
  const parts = s.split(/[\s,]+/).filter(Boolean);
  return parts.map((p) => {
    if (!/^\d+$/.test(p)) throw new Error(`retry_backoff_ms: "${p}" is not a whole number of milliseconds`);
    return Number(p);
  });
}
