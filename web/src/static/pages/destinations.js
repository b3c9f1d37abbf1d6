// Destinations: per-destination flow control as each worker sees it
// (GET /sorakaq/admin/destinations): limits, calls in flight, messages
// parked, the circuit breaker and the last Retry-After honoured.
import { get } from "../api.js";
import { badge, clear, errText, fmtBound, fmtNum, fmtRelative, fmtTime, h, refreshEvery, showError, table as uiTable } from "../ui.js";

const breakerText = { closed: "closed", open: "open", half_open: "half-open" };

export function render(page, params) {
  const body = h("div.card", h("p.muted", "Loading…"));
  const status = h("span.muted#destinations-status");
  const filter = h("input#destinations-key", { type: "search", placeholder: "Filter by key", value: params.get("key") || "", "aria-label": "Filter destinations by key" });
  const refresh = h("button.secondary#destinations-refresh", { type: "button", onclick: () => load() }, "Refresh");
  const errors = h("div#destinations-errors");
  filter.addEventListener("change", () => {
    const q = new URLSearchParams();
    if (filter.value) q.set("key", filter.value);
    location.hash = `#/destinations${q.toString() ? `?${q}` : ""}`;
  });
  page.append(h("div.page-head", h("h1", "Destinations"), h("span.spacer"), filter, status, refresh), errors, body,
    h("p.muted", "A destination is the address a callback dials (IP:port), or the callback.destination a submit gave. "
      + "A due message whose destination has no room is parked: it holds no caller and uses no attempt, and goes, oldest first, when there is room. "
      + "Limits are per worker; 0 means unlimited."));

  async function load(background = false) {
    let v;
    try {
      v = await get("/sorakaq/admin/destinations", { key: filter.value || undefined, limit: 200 });
    } catch (e) {
      if (background) throw e;
      showError(`Loading the destinations: ${errText(e)}`);
      return;
    }
    clear(errors, ...(v.errors || []).map((e) => h("div.alert.warn", { role: "status" },
      h("span.text", `Worker ${e.node_id} did not answer: ${e.error}`))));
    const now = Date.now();
    clear(body, table(v.destinations, now),
      v.total > v.destinations.length ? h("p.muted", `${v.destinations.length} of ${v.total} shown, busiest first.`) : "");
  }

  function table(rows, now) {
    return tableOf([
      { title: "Destination", cell: (d) => h("code", d.key) },
      { title: "Worker", cell: (d) => d.node_id },
      { title: "Rate", cls: "num", cell: (d) => (d.rate ? `${fmtNum(d.rate, 1)}/s` : "—") },
      { title: "Concurrency", cls: "num", cell: (d) => (d.concurrency ? String(d.concurrency) : "—") },
      { title: "In flight", cls: "num", cell: (d) => String(d.in_flight) },
      { title: "Queued", cls: "num", cell: (d) => String(d.queued) },
      {
        title: "Breaker",
        cell: (d) => h("span", {},
          badge(breakerText[d.breaker] || d.breaker, `breaker-${d.breaker}`),
          d.open_until ? h("span.muted", ` probe ${fmtRelative(d.open_until, now)}`) : "",
          d.failures ? h("span.muted", ` · ${d.failures} failed in a row`) : ""),
      },
      {
        title: "Retry-After",
        cell: (d) => (d.last_retry_after_ms
          ? h("span", { title: `honoured at ${fmtTime(d.last_retry_after_at)}` },
            fmtBound(d.last_retry_after_ms),
            d.paused_until ? h("span.muted", ` · paused until ${fmtTime(d.paused_until).slice(11, 19)}`) : "")
          : "—"),
      },
      { title: "Calls", cls: "num", cell: (d) => String(d.started) },
    ], rows);
  }

  load();
  return refreshEvery(5000, load, status, body);
}

// tableOf is ui.table with this page's empty text.
const tableOf = (cols, rows) => uiTable(cols, rows, "No callbacks made lately.");
