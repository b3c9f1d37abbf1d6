// Messages: look one up by id; list a topic's messages filtered by state,
// id prefix, due range and destination, with the total, sorting and
// paging; act on one (cancel, set delay, re-drive, delete), on the rows
// selected or on everything the filter matches (bulk.js); the dead
// letters of a topic with re-drive all / delete all.
import { get, post } from "../api.js";
import {
  clear, confirmDialog, dialog, errText, fmtDue, fmtRelative, fmtTime, h, showError, showOk, stateBadge, table,
} from "../ui.js";
import { BULK_ACTIONS, bulkAll, copyText, countMatching, plural } from "./bulk.js";

const STATES = ["delayed", "delivering", "retrying", "delivered", "dead", "cancelled"];
const PENDING = ["delayed", "retrying"];
const FINAL = ["delivered", "dead", "cancelled"];
const MAX_DELAY_MS = 604800000;

// prettyJSON indents params that are JSON (most are) and leaves anything
// else as it was sent; json says which it was.
function prettyJSON(s) {
  try {
    return { text: JSON.stringify(JSON.parse(s), null, 2), json: true };
  } catch {
    return { text: s, json: false };
  }
}

// toLocalInput and fromLocalInput convert unix ms and a datetime-local
// input's value (the browser's time zone).
const toLocalInput = (ms) => {
  if (!ms) return "";
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
};
const fromLocalInput = (v) => (v ? new Date(v).getTime() : 0);

// Sortable columns of the list: the page shown is sorted in the browser
// (the server lists in id order, which is submit order).
const SORTS = {
  id: (m) => m.msg_id,
  state: (m) => m.state,
  due: (m) => m.due_at,
  attempts: (m) => m.attempts,
};

export function render(page, params) {
  const st = {
    id: params.get("id") || "",
    topic: params.get("topic") || "",
    state: params.get("state") || "",
    prefix: params.get("prefix") || "",
    dest: params.get("dest") || "",
    from: Number(params.get("from")) || 0,
    to: Number(params.get("to")) || 0,
    sort: params.get("sort") || "", // "due" or "due-desc", ...
    limit: Number(params.get("limit")) || 20,
    cursors: [""], // cursors[i] is where page i starts
    selected: new Map(), // msg_id → message, rows ticked
    allMatching: false, // "select all matching": the filter, not the rows
    total: null, // {n, exact} of the filter
  };
  const filter = () => ({ topic: st.topic, state: st.state, prefix: st.prefix, dest: st.dest, from: st.from, to: st.to });

  // Keep the view in the address (bookmarkable) without re-rendering.
  function syncHash() {
    const q = new URLSearchParams();
    if (st.id) q.set("id", st.id);
    if (st.topic) q.set("topic", st.topic);
    if (st.state) q.set("state", st.state);
    if (st.prefix) q.set("prefix", st.prefix);
    if (st.dest) q.set("dest", st.dest);
    if (st.from) q.set("from", String(st.from));
    if (st.to) q.set("to", String(st.to));
    if (st.sort) q.set("sort", st.sort);
    if (st.limit !== 20) q.set("limit", String(st.limit));
    const s = q.toString();
    history.replaceState(null, "", `#/messages${s ? `?${s}` : ""}`);
  }

  // ---- actions (shared by the detail card and the list rows)
  async function act(m, action) {
    const ref = { topic_name: m.topic_name, msg_id: m.msg_id };
    try {
      switch (action) {
        case "cancel":
          if (!await confirmDialog(`Cancel message ${m.msg_id}?`, `It will not be delivered. Topic ${m.topic_name}, due ${fmtDue(m.due_at)}.`, "Cancel message", true, "Keep it")) return;
          await post("/sorakaq/admin/msg/cancel", ref);
          showOk(`Message ${m.msg_id} cancelled.`);
          break;
        case "setDelay": {
          const input = h("input#delay-ms", { type: "number", min: 0, max: MAX_DELAY_MS, step: 1, required: true, value: "60000" });
          const ms = await dialog({
            title: `Set the delay of ${m.msg_id}`,
            text: "New delay from now, in milliseconds (0 to 604800000; below 100 = at once).",
            body: h("label", "Delay (ms)", input),
            ok: "Set delay",
            collect: () => Number(input.value),
          });
          if (ms === null) return;
          await post("/sorakaq/admin/msg/setDelay", { ...ref, delay_time: ms });
          showOk(`Message ${m.msg_id} is now due in ${ms} ms.`);
          break;
        }
        case "redrive":
          // It fires the callback at once: ask, as for every other action.
          if (!await confirmDialog(`Re-drive message ${m.msg_id}?`, `Its callback (${(m.callback && m.callback.url) || "topic " + m.topic_name}) is called now, with a fresh set of attempts.`, "Re-drive", false)) return;
          await post("/sorakaq/admin/msg/redrive", ref);
          showOk(`Message ${m.msg_id} re-driven: it is due now.`);
          break;
        case "delete":
          if (!await confirmDialog(`Delete message ${m.msg_id}?`, `The ${m.state} message is removed for good.`, "Delete")) return;
          await post("/sorakaq/admin/msg/delete", ref);
          showOk(`Message ${m.msg_id} deleted.`);
          if (st.id === m.msg_id) {
            st.id = "";
            syncHash();
            clear(detail);
          }
          break;
        default:
          return;
      }
    } catch (e) {
      showError(`${action} ${m.msg_id}: ${errText(e)}`);
    }
    if (st.id) lookup(st.id);
    if (st.topic) relist();
  }

  function actions(m) {
    const b = (action, label, cls = "small secondary") =>
      h("button", { type: "button", class: cls, "aria-label": `${label} message ${m.msg_id}`, dataset: { action, msg: m.msg_id }, onclick: () => act(m, action) }, label);
    return h("div.actions-cell",
      PENDING.includes(m.state) && b("cancel", "Cancel", "small danger"),
      PENDING.includes(m.state) && b("setDelay", "Set delay"),
      m.state === "dead" && b("redrive", "Re-drive", "small"),
      FINAL.includes(m.state) && b("delete", "Delete", "small danger"));
  }

  // ---- look up by id
  const idInput = h("input#msg-id", { name: "msg_id", placeholder: "message id (20 characters)", size: 26, value: st.id, required: true, pattern: "\\s*[0-9a-v]{20}\\s*" }); // spaces around a pasted id are trimmed
  const findForm = h("form.row#msg-find-form", h("label", "Message id", idInput), h("button#msg-find", { type: "submit" }, "Find"));
  const detail = h("div#msg-detail");
  findForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    st.id = idInput.value.trim();
    syncHash();
    lookup(st.id);
  });

  // lookup shows message id in the detail card (resolves once it is there).
  async function lookup(id) {
    let m;
    try {
      m = await get("/sorakaq/admin/msg/get", { msg_id: id });
    } catch (e) {
      clear(detail, h("div.alert.error", { role: "alert" }, h("span.text", `Message ${id}: ${errText(e)}`)));
      return;
    }
    const cb = m.callback || {};
    const kv = [
      ["Id", h("code", m.msg_id)],
      ["Topic", h("a", { href: `#/messages?topic=${encodeURIComponent(m.topic_name)}` }, m.topic_name)],
      ["State", h("span#msg-state", stateBadge(m.state))],
      ["Due", h("span#msg-due", fmtDue(m.due_at))],
      ["Delay (as submitted)", `${m.delay_time} ms`],
      ["TTR", `${m.ttr} ms`],
      ["Attempts", h("span#msg-attempts", String(m.attempts))],
      ["Last error", m.last_error ? h("code#msg-last-error", m.last_error) : h("span.muted", "none")],
      ["Worker", m.worker || "—"],
      ["Callback", h("code", `${cb.request_type || ""} ${cb.url || ""}`)],
      ["Params", cb.params ? paramsView(cb.params) : h("span.muted", "none")],
      ["Received", fmtTime(m.received_at)],
      ["Updated", fmtTime(m.updated_at)],
      ["Done", m.done_at ? `${fmtTime(m.done_at)} (${fmtRelative(m.done_at)})` : "—"],
      ["Version", String(m.version)],
    ];
    clear(detail, h("div.card",
      h("div.row", h("h3", "Message ", h("code", m.msg_id)), h("span.spacer"), actions(m)),
      h("dl.kv", kv.map(([k, v]) => [h("dt", k), h("dd", v)])),
      h("h3", "History"),
      h("div#msg-history", table([
        { title: "At", cell: (e) => fmtTime(e.at) },
        { title: "Event", cell: (e) => e.type },
        { title: "Detail", cell: (e) => e.detail || "" },
      ], m.history || [], "No events."))));
    watch(m);
  }

  // paramsView shows the params readable (JSON indented) with a button
  // that copies them exactly as they were submitted.
  function paramsView(raw) {
    const p = prettyJSON(raw);
    const copy = h("button.small.secondary#msg-params-copy", {
      type: "button", "aria-label": "Copy the params",
      onclick: async () => {
        try {
          await copyText(raw);
          showOk(`Params copied (${plural(raw.length, "character")}).`);
        } catch (e) {
          showError(`Copying the params: ${errText(e)}`);
        }
      },
    }, "Copy");
    return h("div.params-view",
      h("div.row", h("span.muted", p.json ? "JSON (indented)" : "text, as sent"), copy),
      h("pre.params.mono#msg-params", p.text));
  }

  // A message not done yet changes by itself: look again once it is due
  // (at most a minute on, every 5 s while it is being delivered), while the
  // page shows it; not while a dialog is open or focus is in the card.
  let again = null;
  function watch(m) {
    clearTimeout(again);
    if (FINAL.includes(m.state)) return;
    const wait = PENDING.includes(m.state) ? Math.min(Math.max(m.due_at - Date.now() + 1000, 1000), 60000) : 5000;
    again = setTimeout(function tick() {
      if (!page.isConnected || st.id !== m.msg_id) return;
      if (document.getElementById("dialog").open || detail.contains(document.activeElement)) {
        again = setTimeout(tick, 5000);
        return;
      }
      lookup(m.msg_id);
    }, wait);
  }

  // ---- list by topic and a filter
  const topicSel = h("select#list-topic", { name: "topic_name", required: true }, h("option", { value: "" }, "— topic —"));
  const stateSel = h("select#list-state", { name: "state" },
    h("option", { value: "" }, "every state"), STATES.map((s) => h("option", { value: s }, s)));
  const limitSel = h("select#list-limit", { name: "limit" }, [20, 50, 100, 500].map((n) => h("option", { value: String(n) }, String(n))));
  const prefixIn = h("input#list-prefix", { name: "id_prefix", placeholder: "id prefix", size: 12, maxlength: 20, pattern: "\\s*[0-9a-v]{1,20}\\s*", value: st.prefix });
  const destIn = h("input#list-dest", { name: "destination", placeholder: "callback host[:port]", size: 18, maxlength: 260, value: st.dest });
  const fromIn = h("input#list-due-from", { name: "due_from", type: "datetime-local", step: 1, value: toLocalInput(st.from) });
  const toIn = h("input#list-due-to", { name: "due_to", type: "datetime-local", step: 1, value: toLocalInput(st.to) });
  stateSel.value = st.state;
  limitSel.value = String(st.limit);
  const listForm = h("form.row#msg-list-form",
    h("label", "Topic", topicSel), h("label", "State", stateSel),
    h("label", "Id prefix", prefixIn), h("label", "Destination", destIn),
    h("label", "Due from", fromIn), h("label", "Due to", toIn),
    h("label", "Per page", limitSel),
    h("button#msg-list", { type: "submit" }, "List"));
  const deadBar = h("div.row#dead-actions", { hidden: true });
  const totalLine = h("p.muted#msg-total", { "aria-live": "polite" });
  const bulkBar = h("div.row.bulk-bar#bulk-bar", { hidden: true });
  const listBody = h("div#msg-list-body");
  const pager = h("div.pager");
  let shown = []; // the messages of the page shown
  listForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    st.topic = topicSel.value;
    st.state = stateSel.value;
    st.prefix = prefixIn.value.trim();
    st.dest = destIn.value.trim();
    st.from = fromLocalInput(fromIn.value);
    st.to = fromLocalInput(toIn.value);
    st.limit = Number(limitSel.value);
    st.cursors = [""];
    syncHash();
    relist();
  });

  // relist starts over: the filter (or the data) changed, so the
  // selection and the total are dropped.
  function relist() {
    st.selected.clear();
    st.allMatching = false;
    st.cursors = [""];
    list();
    total();
  }

  let totalRun = 0;
  async function total() {
    const run = ++totalRun;
    st.total = null;
    if (!st.topic) {
      clear(totalLine);
      return;
    }
    totalLine.textContent = "Counting…";
    try {
      const t = await countMatching(filter(), (n) => {
        if (run === totalRun) totalLine.textContent = `Counting… ${plural(n, "message")} so far`;
      });
      if (run !== totalRun) return;
      st.total = t;
      totalLine.textContent = `${t.exact ? "" : "at least "}${plural(t.n, "message")} match${t.n === 1 && t.exact ? "es" : ""} this filter`;
    } catch (e) {
      if (run === totalRun) totalLine.textContent = `Counting failed: ${errText(e)}`;
    }
    renderBulkBar();
  }

  async function bulk(kind) {
    const t = st.topic;
    const redrive = kind === "redriveAll";
    // Say how many: the topic's dead count now (more may die before OK).
    let n = null;
    try {
      const tp = (await get("/sorakaq/topic/list")).find((x) => x.topic_name === t);
      n = tp && tp.counts ? tp.counts.dead || 0 : null;
    } catch (e) {
      // the count is a courtesy: the dialog still asks without it
    }
    const what = n === null ? "every dead message" : `${n} dead message${n === 1 ? "" : "s"}`;
    const ok = await confirmDialog(
      redrive ? `Re-drive ${what} of ${t}?` : `Delete ${what} of ${t}?`,
      (redrive ? "Each gets a fresh set of attempts and is due now." : "They are removed for good.")
        + " Messages that die before you confirm are included.",
      redrive ? "Re-drive all" : "Delete all", !redrive);
    if (!ok) return;
    try {
      const r = await post(`/sorakaq/admin/msg/${kind}`, { topic_name: t });
      showOk(`${redrive ? "Re-drove" : "Deleted"} ${r.done} dead message${r.done === 1 ? "" : "s"} of ${t}.`);
    } catch (e) {
      showError(`${redrive ? "Re-drive all" : "Delete all"} (${t}): ${errText(e)}`);
    }
    relist();
  }

  // ---- selection and bulk actions
  function renderBulkBar() {
    const k = st.selected.size;
    bulkBar.hidden = !st.topic || (k === 0 && !st.allMatching);
    if (bulkBar.hidden) {
      clear(bulkBar);
      return;
    }
    const n = st.total ? st.total.n : null;
    const what = st.allMatching
      ? h("strong#bulk-what", `All ${n === null ? "" : `${st.total.exact ? "" : "≥ "}${n.toLocaleString("en-US")} `}messages matching the filter are selected`)
      : h("strong#bulk-what", `${plural(k, "message")} selected`);
    const canAll = !st.allMatching && n !== null && n > k;
    clear(bulkBar, what,
      canAll && h("button.small.secondary#select-all-matching", { type: "button", onclick: () => { st.allMatching = true; renderRows(); } },
        `Select all ${n.toLocaleString("en-US")} matching`),
      h("button.small.secondary#select-none", { type: "button", onclick: () => { st.selected.clear(); st.allMatching = false; renderRows(); } }, "Clear selection"),
      h("span.spacer"),
      BULK_ACTIONS.map((a) => h(`button.small${a.danger ? ".danger" : ""}#bulk-${a.action}`, { type: "button", onclick: () => bulkAct(a) }, `${a.label}…`)));
  }

  // bulkAct asks how many the action would change (a dry run: only those
  // in a state it takes count), says so in the dialog, then does it.
  async function bulkAct(a) {
    const f = filter();
    const ids = st.allMatching ? null : [...st.selected.keys()];
    const extra = ids ? { ids } : {};
    let n;
    try {
      n = (await bulkAll(f, { ...extra, action: a.action, dry_run: true })).matched;
    } catch (e) {
      showError(`${a.label} (${st.topic}): counting: ${errText(e)}`);
      return;
    }
    const scope = ids ? `of the ${plural(ids.length, "selected message")}` : `matching the filter in ${st.topic}`;
    if (n === 0) {
      showError(`${a.label}: none of the messages ${scope} is ${a.states.join(" or ")}.`);
      return;
    }
    const title = `${a.verb} ${plural(n, "message")} ${scope}?`;
    const text = `Only ${a.states.join(", ")} messages are ${a.done.toLowerCase()}`
      + (ids && n < ids.length ? ` (${ids.length - n} of the selected are not).` : ".")
      + " Each is changed on its own; one that changes meanwhile is left as it is.";
    let delay = null;
    if (a.action === "setDelay") {
      const input = h("input#bulk-delay-ms", { type: "number", min: 0, max: MAX_DELAY_MS, step: 1, required: true, value: "60000" });
      delay = await dialog({ title, text, body: h("label", "Delay from now (ms)", input), ok: `Set delay of ${plural(n, "message")}`, collect: () => Number(input.value) });
      if (delay === null) return;
    } else if (!await confirmDialog(title, text, `${a.label} ${plural(n, "message")}`, a.danger, "Keep them")) {
      return;
    }
    const body = { ...extra, action: a.action };
    if (delay !== null) body.delay_time = delay;
    try {
      const r = await bulkAll(f, body);
      const rest = r.skipped + r.failed;
      const msg = `${a.done} ${plural(r.changed, "message")} of ${st.topic}` + (rest ? `; ${rest} left as they were (${(r.errors[0] || {}).em || "changed meanwhile"})` : "") + ".";
      if (r.failed) showError(msg);
      else showOk(msg);
    } catch (e) {
      showError(`${a.label} (${st.topic}): ${errText(e)}`);
    }
    relist();
  }

  // ---- the table
  function sortHeader(key, title) {
    const [k, dir] = st.sort.split("-");
    const on = k === key;
    return h("button.sort#sort-" + key, {
      type: "button", "aria-label": `Sort by ${title}`,
      onclick: () => {
        st.sort = on && dir !== "desc" ? `${key}-desc` : key;
        syncHash();
        renderRows();
      },
    }, title, on ? (dir === "desc" ? " ▼" : " ▲") : "");
  }

  function ariaSort(key) {
    const [k, dir] = st.sort.split("-");
    return k === key ? (dir === "desc" ? "descending" : "ascending") : null;
  }

  function sorted(msgs) {
    if (!st.sort) return msgs;
    const [k, dir] = st.sort.split("-");
    const key = SORTS[k];
    if (!key) return msgs;
    const sgn = dir === "desc" ? -1 : 1;
    return [...msgs].sort((a, b) => (key(a) < key(b) ? -sgn : key(a) > key(b) ? sgn : 0));
  }

  function renderRows() {
    const msgs = sorted(shown);
    const allOnPage = msgs.length > 0 && msgs.every((m) => st.selected.has(m.msg_id));
    const pageBox = h("input#select-page", {
      type: "checkbox", "aria-label": "Select every message of this page", checked: allOnPage || st.allMatching, disabled: st.allMatching,
      onchange: (ev) => {
        for (const m of msgs) {
          if (ev.target.checked) st.selected.set(m.msg_id, m);
          else st.selected.delete(m.msg_id);
        }
        renderRows();
      },
    });
    clear(listBody, table([
      {
        title: pageBox, label: "Select", cls: "select",
        cell: (m) => h("input.row-select", {
          type: "checkbox", "aria-label": `Select message ${m.msg_id}`, dataset: { msg: m.msg_id },
          checked: st.allMatching || st.selected.has(m.msg_id), disabled: st.allMatching,
          onchange: (ev) => {
            if (ev.target.checked) st.selected.set(m.msg_id, m);
            else st.selected.delete(m.msg_id);
            renderRows();
          },
        }),
      },
      {
        title: sortHeader("id", "Id"), label: "Id", sort: ariaSort("id"),
        cell: (m) => h("a", {
          href: "#", dataset: { msg: m.msg_id },
          onclick: async (ev) => {
            ev.preventDefault();
            st.id = m.msg_id;
            idInput.value = m.msg_id;
            syncHash();
            // Scroll once the card is there: scrolled to while still empty,
            // it was left above the view.
            await lookup(m.msg_id);
            detail.scrollIntoView({ block: "start" });
          },
        }, h("code", m.msg_id)),
      },
      { title: sortHeader("state", "State"), label: "State", sort: ariaSort("state"), cell: (m) => stateBadge(m.state) },
      { title: sortHeader("due", "Due"), label: "Due", sort: ariaSort("due"), cell: (m) => fmtDue(m.due_at) },
      { title: "Destination", cell: (m) => h("span.dest", hostOf(m)) },
      { title: sortHeader("attempts", "Attempts"), label: "Attempts", sort: ariaSort("attempts"), cls: "num", cell: (m) => String(m.attempts) },
      { title: "Last error", cell: (m) => (m.last_error ? h("code", m.last_error) : "") },
      { title: "", cell: (m) => actions(m) },
    ], msgs, `No ${st.state || ""} messages in ${st.topic}${filtered() ? " match the filter" : ""}${st.cursors.length > 1 || lastNext ? " on this page" : ""}.`.replace("  ", " ")));
    renderBulkBar();
  }

  const filtered = () => Boolean(st.prefix || st.dest || st.from || st.to);
  const hostOf = (m) => {
    try {
      return new URL(m.callback.url).host;
    } catch {
      return "";
    }
  };

  let lastNext = "";
  async function list() {
    const pageNo = st.cursors.length - 1;
    const isDead = st.state === "dead" && st.topic;
    deadBar.hidden = !isDead;
    clear(deadBar, isDead && [
      h("strong", `Dead letters of ${st.topic}`), h("span.spacer"),
      h("button#redrive-all", { type: "button", onclick: () => bulk("redriveAll") }, "Re-drive all"),
      h("button.danger#delete-all", { type: "button", onclick: () => bulk("deleteAll") }, "Delete all")]);
    if (!st.topic) {
      clear(listBody, h("p.muted", "Choose a topic."));
      clear(pager);
      renderBulkBar();
      return;
    }
    let r;
    try {
      const q = { topic_name: st.topic, state: st.state, cursor: st.cursors[pageNo], limit: st.limit };
      if (st.prefix) q.id_prefix = st.prefix;
      if (st.dest) q.destination = st.dest;
      if (st.from) q.due_from = st.from;
      if (st.to) q.due_to = st.to;
      r = await get("/sorakaq/admin/msg/list", q);
    } catch (e) {
      showError(`Listing ${st.topic}: ${errText(e)}`);
      return;
    }
    shown = r.messages || [];
    lastNext = r.next_cursor;
    renderRows();
    clear(pager,
      h("span.muted#msg-page", `Page ${pageNo + 1}, ${plural(shown.length, "message")}${r.scanned !== undefined ? ` (of ${r.scanned.toLocaleString("en-US")} read)` : ""}`),
      pageNo > 0 && h("button.secondary#page-prev", { type: "button", onclick: () => { st.cursors.pop(); list(); } }, "‹ Previous"),
      r.next_cursor && h("button.secondary#page-next", { type: "button", onclick: () => { st.cursors.push(r.next_cursor); list(); } }, "Next ›"));
  }

  page.append(
    h("div.page-head", h("h1", "Messages")),
    h("div.card", findForm), detail,
    h("div.card", listForm, deadBar, totalLine, bulkBar, listBody, pager));

  (async () => {
    try {
      const topics = await get("/sorakaq/topic/list");
      const names = topics.map((t) => t.topic_name).sort();
      if (st.topic && !names.includes(st.topic)) names.push(st.topic);
      topicSel.append(...names.map((n) => h("option", { value: n }, n)));
      topicSel.value = st.topic;
    } catch (e) {
      showError(`Loading the topics: ${errText(e)}`);
    }
    if (st.topic) relist();
  })();
  if (st.id) lookup(st.id);
  return () => clearTimeout(again);
}
