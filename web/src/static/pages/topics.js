// Topics: per-state counts, retry policy; add a topic, edit one.
import { get, post } from "../api.js";
import { badge, clear, confirmDialog, dialog, errText, fmtTime, h, parseMsList, refreshEvery, showError, showOk, table } from "../ui.js";

const STATES = ["delayed", "delivering", "retrying", "delivered", "dead", "cancelled"];

const numOrUndef = (s) => (s.trim() === "" ? undefined : Number(s));

export function render(page) {
  const body = h("div.card", h("p.muted", "Loading…"));
  const formCard = h("div.card#topic-add-card", { hidden: true });
  const newBtn = h("button#topic-new", { type: "button", onclick: () => { formCard.hidden = !formCard.hidden; } }, "New topic");
  const status = h("span.muted#topics-status");
  page.append(h("div.page-head", h("h1", "Topics"), h("span.spacer"), status, newBtn), formCard, body);

  // ---- new topic form
  const f = {
    business: h("input#new-business", { name: "business", maxlength: 128, placeholder: "optional" }),
    topic: h("input#new-topic-name", { name: "topic_name", required: true, pattern: "[A-Za-z0-9._\\-]{1,64}", placeholder: "order_timeout" }),
    workers: h("input#new-worker-num", { name: "worker_num", type: "number", min: 1, max: 1024, value: "1" }),
    parts: h("input#new-partitions", { name: "partitions", type: "number", min: 1, max: 1024, placeholder: "default" }),
    backoff: h("input#new-retry-backoff", { name: "retry_backoff_ms", placeholder: "default, e.g. 1000, 10000, 60000", size: 32 }),
  };
  const addForm = h("form.row#topic-add-form",
    h("label", "Topic name", f.topic),
    h("label", "Business", f.business),
    h("label", "Worker num", f.workers),
    h("label", "Partitions", f.parts),
    h("label", "Retry back-off (ms, comma-separated)", f.backoff),
    h("button#topic-add-submit", { type: "submit" }, "Create"),
    h("button.secondary", { type: "button", onclick: () => { formCard.hidden = true; } }, "Close"));
  formCard.append(h("h3", "New topic"), addForm);
  addForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let req;
    try {
      req = {
        topic_name: f.topic.value.trim(),
        business: f.business.value.trim(),
        worker_num: numOrUndef(f.workers.value),
        partitions: numOrUndef(f.parts.value),
      };
      const b = parseMsList(f.backoff.value);
      if (b.length) req.retry_backoff_ms = b;
    } catch (e) {
      showError(errText(e));
      return;
    }
    try {
      const t = await post("/sorakaq/topic/add", req);
      showOk(`Topic ${t.topic_name} created.`);
      addForm.reset();
      f.workers.value = "1"; // reset() empties it: the value was set as a property
      formCard.hidden = true;
      load();
    } catch (e) {
      showError(`Creating topic ${req.topic_name}: ${errText(e)}`);
    }
  });

  // ---- edit
  async function edit(t) {
    let workers = [];
    try {
      const inst = await get("/sorakaq/instance/list");
      workers = inst.filter((i) => i.role === "worker" || i.role === "all").map((i) => i.node_id);
    } catch (e) {
      showError(`Loading the workers: ${errText(e)}`);
    }
    const current = t.workers || [];
    for (const w of current) if (!workers.includes(w)) workers.push(w);
    workers.sort();
    const wn = h("input#edit-worker-num", { type: "number", min: 1, max: 1024, required: true, value: String(t.worker_num) });
    const parts = h("input#edit-partitions", { type: "number", min: t.partitions, max: 1024, required: true, value: String(t.partitions) });
    const backoff = h("input#edit-retry-backoff", { type: "text", value: (t.retry_backoff_ms || []).join(", "), placeholder: "empty = the server's default" });
    const boxes = workers.map((w) => h("input", { type: "checkbox", value: w, checked: current.includes(w) }));
    const body = h("div",
      h("label", "Worker num", wn),
      h("label", "Partitions (can only grow)", parts),
      h("label", "Retry back-off (ms, comma-separated)", backoff),
      h("fieldset",
        h("legend", "Workers mapped to the topic (none = by hashing)"),
        boxes.length ? boxes.map((b) => h("label.inline", b, h("code", b.value))) : h("p.muted", "No workers registered.")));
    // Saved from the dialog: a bad back-off or the server's refusal is
    // shown there, with the edits kept.
    const saved = await dialog({
      title: `Edit topic ${t.topic_name}`, body, ok: "Save",
      collect: () => ({
        topic_name: t.topic_name,
        worker_num: Number(wn.value),
        partitions: Number(parts.value),
        retry_backoff_ms: backoff.value,
        workers: boxes.filter((b) => b.checked).map((b) => b.value),
      }),
      action: async (req) => {
        req.retry_backoff_ms = parseMsList(req.retry_backoff_ms);
        // The mapping is sent only when it changed.
        if (req.workers.join(",") === [...current].sort().join(",")) delete req.workers;
        await post("/sorakaq/topic/update", req);
        return true;
      },
    });
    if (!saved) return;
    showOk(`Topic ${t.topic_name} updated.`);
    load();
  }

  // ---- pause / resume: the topic's callbacks stop (submits go on); due
  // messages wait, pending, and fire in due order on resume.
  async function setPaused(t, pause) {
    const name = t.topic_name;
    const waiting = (t.counts && (t.counts.delayed || 0) + (t.counts.retrying || 0)) || 0;
    const ok = await confirmDialog(
      pause ? `Pause deliveries of ${name}?` : `Resume deliveries of ${name}?`,
      pause
        ? `No callback of ${name} is made while it is paused (every worker stops within a second). Submits are still accepted; the ${waiting} pending messages and those submitted meanwhile wait, and can still be cancelled or moved.`
        : `Messages of ${name} that fell due while it was paused are called back at once, in due order, then the others on time.`,
      pause ? "Pause deliveries" : "Resume deliveries", pause, "Keep as it is");
    if (!ok) return;
    try {
      await post(pause ? "/sorakaq/topic/pause" : "/sorakaq/topic/resume", { topic_name: name });
      showOk(pause ? `Deliveries of ${name} paused.` : `Deliveries of ${name} resumed.`);
    } catch (e) {
      showError(`${pause ? "Pausing" : "Resuming"} ${name}: ${errText(e)}`);
    }
    load();
  }

  // ---- test message: through the receive service's submit path, with the
  // topic's limits; the callback URL defaults to one of the topic's own.
  async function testMessage(t) {
    const name = t.topic_name;
    let url = "";
    try {
      const page = await get("/sorakaq/admin/msg/list", { topic_name: name, limit: 1 });
      url = (page.messages && page.messages[0] && page.messages[0].callback.url) || "";
    } catch {
      // no default then
    }
    const delay = h("input#test-delay", { type: "number", min: 0, max: 604800000, step: 1, required: true, value: "1000" });
    const method = h("select#test-method", h("option", { value: "POST" }, "POST"), h("option", { value: "GET" }, "GET"));
    const cb = h("input#test-url", { type: "url", required: true, value: url, placeholder: "https://receiver.example/callback", size: 40 });
    const params = h("textarea#test-params", { rows: 4, cols: 40, placeholder: '{"test": true}' });
    params.value = '{"test":true}';
    const body = h("div",
      h("label", "Delay (ms)", delay),
      h("label", "Method", method),
      h("label", url ? "Callback URL (from a message of this topic)" : "Callback URL", cb),
      h("label", "Body (POST) or query (GET)", params));
    const res = await dialog({
      title: `Send a test message to ${name}`, body, ok: "Send",
      collect: () => ({
        topic_name: name, delay_time: Number(delay.value),
        callback: { request_type: method.value, url: cb.value.trim(), params: params.value },
      }),
      action: (req) => post("/sorakaq/topic/testMessage", req),
    });
    if (!res) return;
    const a = h("a#test-result", { href: `#/messages?id=${encodeURIComponent(res.msgId)}` }, res.msgId);
    const el = showOk(`Test message stored, due ${fmtTime(res.due_at).slice(11, 23)}: `);
    el.querySelector(".text").append(a);
    load();
  }

  const countLink = (t, s) => {
    const n = (t.counts && t.counts[s]) || 0;
    if (t.total) return h("b", String(n));
    return n ? h("a", { href: `#/messages?topic=${encodeURIComponent(t.topic_name)}&state=${s}`, "aria-label": `${n} ${s} messages of ${t.topic_name}` }, String(n)) : "0";
  };

  // load (re)draws the table; a background refresh's failure goes to the
  // status line (throws), not to one more alert.
  async function load(background = false) {
    let list;
    try {
      list = await get("/sorakaq/topic/list");
    } catch (e) {
      if (background) throw e;
      showError(`Loading the topics: ${errText(e)}`);
      return;
    }
    list.sort((a, b) => a.topic_name.localeCompare(b.topic_name));
    // The totals row: counts and rates summed over the topics.
    const total = { total: true, topic_name: "", counts: {}, rates: { submitted_per_s: 0, fired_per_s: 0, failed_per_s: 0 } };
    for (const t of list) {
      for (const s of STATES) total.counts[s] = (total.counts[s] || 0) + ((t.counts && t.counts[s]) || 0);
      for (const k of Object.keys(total.rates)) total.rates[k] += (t.rates && t.rates[k]) || 0;
    }
    const rate = (k) => (t) => {
      const v = t.rates ? t.rates[k] : null;
      const txt = v === null || v === undefined ? "—" : (v >= 10 ? v.toFixed(0) : v.toFixed(2));
      return t.total ? h("b", txt) : txt;
    };
    const rows = list.length ? [...list, total] : list;
    const rateNote = "per second over the last full minute";
    clear(body, table([
      {
        title: "Topic",
        cell: (t) => (t.total ? h("b", `Total (${list.length} topics)`) : h("span",
          h("a", { href: `#/messages?topic=${encodeURIComponent(t.topic_name)}` }, h("code", t.topic_name)),
          t.paused ? badge("paused", "paused", { title: `Deliveries paused since ${fmtTime(t.paused_at)}` }) : null)),
      },
      { title: "Business", cls: "wrap", cell: (t) => t.business || "" },
      { title: "Workers", cls: "num", cell: (t) => (t.total ? "" : String(t.worker_num)) },
      { title: "Parts", cls: "num", cell: (t) => (t.total ? "" : String(t.partitions)) },
      { title: "Retry (ms)", cell: (t) => (t.total ? "" : t.retry_backoff_ms && t.retry_backoff_ms.length ? t.retry_backoff_ms.join(", ") : h("span.muted", "default")) },
      { title: "Mapping", cell: (t) => (t.total ? "" : t.workers && t.workers.length ? t.workers.join(", ") : h("span.muted", "hashing")) },
      ...STATES.map((s) => ({ title: s, cls: "num", cell: (t) => countLink(t, s) })),
      { title: "Submitted/s", cls: "num", cell: rate("submitted_per_s") },
      { title: "Fired/s", cls: "num", cell: rate("fired_per_s") },
      { title: "Failed/s", cls: "num", cell: rate("failed_per_s") },
      {
        title: "",
        cell: (t) => (t.total ? "" : h("span.actions-cell",
          h("button.small.secondary", { type: "button", "aria-label": `Edit topic ${t.topic_name}`, dataset: { action: "edit", topic: t.topic_name }, onclick: () => edit(t) }, "Edit"),
          t.paused
            ? h("button.small", { type: "button", "aria-label": `Resume deliveries of ${t.topic_name}`, dataset: { action: "resume", topic: t.topic_name }, onclick: () => setPaused(t, false) }, "Resume")
            : h("button.small.secondary", { type: "button", "aria-label": `Pause deliveries of ${t.topic_name}`, dataset: { action: "pause", topic: t.topic_name }, onclick: () => setPaused(t, true) }, "Pause"),
          h("button.small.secondary", { type: "button", "aria-label": `Send a test message to ${t.topic_name}`, dataset: { action: "test", topic: t.topic_name }, onclick: () => testMessage(t) }, "Test message"))),
      },
    ], rows, "No topics yet: create one, or submit a message (unknown topics are created on submit)."));
    body.append(h("p.muted#topics-rates-note", `Rates are ${rateNote} (fired counts callback attempts, retries too).`));
  }

  load();
  return refreshEvery(load, status, body);
}
