// Messages: look one up by id; list a topic's messages by state with
// paging; act on them (cancel, set delay, re-drive, delete); the dead
// letters of a topic with re-drive all / delete all.
import { get, post } from "../api.js";
import {
  clear, confirmDialog, dialog, errText, fmtDue, fmtRelative, fmtTime, h, showError, showOk, stateBadge, table,
} from "../ui.js";

const STATES = ["delayed", "delivering", "retrying", "delivered", "dead", "cancelled"];
const PENDING = ["delayed", "retrying"];
const FINAL = ["delivered", "dead", "cancelled"];
const MAX_DELAY_MS = 604800000;

// prettyJSON indents params that are JSON (most are) and leaves anything
// else as it was sent.
function prettyJSON(s) {
  try {
    return JSON.stringify(JSON.parse(s), null, 2);
  } catch {
    return s;
  }
}

export function render(page, params) {
  const st = {
    id: params.get("id") || "",
    topic: params.get("topic") || "",
    state: params.get("state") || "",
    limit: Number(params.get("limit")) || 20,
    cursors: [""], // cursors[i] is where page i starts
  };

  // Keep the view in the address (bookmarkable) without re-rendering.
  function syncHash() {
    const q = new URLSearchParams();
    if (st.id) q.set("id", st.id);
    if (st.topic) q.set("topic", st.topic);
    if (st.state) q.set("state", st.state);
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
    if (st.topic) list();
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
      ["Params", cb.params ? h("pre.params.mono#msg-params", prettyJSON(cb.params)) : h("span.muted", "none")],
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

  // ---- list by topic and state
  const topicSel = h("select#list-topic", { name: "topic_name", required: true }, h("option", { value: "" }, "— topic —"));
  const stateSel = h("select#list-state", { name: "state" },
    h("option", { value: "" }, "every state"), STATES.map((s) => h("option", { value: s }, s)));
  const limitSel = h("select#list-limit", { name: "limit" }, [20, 50, 100, 500].map((n) => h("option", { value: String(n) }, String(n))));
  stateSel.value = st.state;
  limitSel.value = String(st.limit);
  const listForm = h("form.row#msg-list-form",
    h("label", "Topic", topicSel), h("label", "State", stateSel), h("label", "Per page", limitSel),
    h("button#msg-list", { type: "submit" }, "List"));
  const deadBar = h("div.row#dead-actions", { hidden: true });
  const listBody = h("div#msg-list-body");
  const pager = h("div.pager");
  listForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    st.topic = topicSel.value;
    st.state = stateSel.value;
    st.limit = Number(limitSel.value);
    st.cursors = [""];
    syncHash();
    list();
  });

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
    st.cursors = [""];
    list();
  }

  async function list() {
    const page = st.cursors.length - 1;
    const isDead = st.state === "dead" && st.topic;
    deadBar.hidden = !isDead;
    clear(deadBar, isDead && [
      h("strong", `Dead letters of ${st.topic}`), h("span.spacer"),
      h("button#redrive-all", { type: "button", onclick: () => bulk("redriveAll") }, "Re-drive all"),
      h("button.danger#delete-all", { type: "button", onclick: () => bulk("deleteAll") }, "Delete all")]);
    if (!st.topic) {
      clear(listBody, h("p.muted", "Choose a topic."));
      clear(pager);
      return;
    }
    let r;
    try {
      r = await get("/sorakaq/admin/msg/list", { topic_name: st.topic, state: st.state, cursor: st.cursors[page], limit: st.limit });
    } catch (e) {
      showError(`Listing ${st.topic}: ${errText(e)}`);
      return;
    }
    const msgs = r.messages || [];
    clear(listBody, table([
      {
        title: "Id",
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
      { title: "State", cell: (m) => stateBadge(m.state) },
      { title: "Due", cell: (m) => fmtDue(m.due_at) },
      { title: "Attempts", cls: "num", cell: (m) => String(m.attempts) },
      { title: "Last error", cell: (m) => (m.last_error ? h("code", m.last_error) : "") },
      { title: "", cell: (m) => actions(m) },
    ], msgs, `No ${st.state || ""} messages in ${st.topic}.`.replace("  ", " ")));
    clear(pager,
      h("span.muted", `Page ${page + 1}, ${msgs.length} message${msgs.length === 1 ? "" : "s"}`),
      page > 0 && h("button.secondary#page-prev", { type: "button", onclick: () => { st.cursors.pop(); list(); } }, "‹ Previous"),
      r.next_cursor && h("button.secondary#page-next", { type: "button", onclick: () => { st.cursors.push(r.next_cursor); list(); } }, "Next ›"));
  }

  page.append(
    h("div.page-head", h("h1", "Messages")),
    h("div.card", findForm), detail,
    h("div.card", listForm, deadBar, listBody, pager));

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
    if (st.topic) list();
  })();
  if (st.id) lookup(st.id);
  return () => clearTimeout(again);
}
