// Topics: per-state counts, retry policy; add a topic, edit one.
import { get, post } from "../api.js";
import { clear, dialog, errText, h, parseMsList, refreshEvery, showError, showOk, table } from "../ui.js";

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

  const countLink = (t, s) => {
    const n = (t.counts && t.counts[s]) || 0;
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
    clear(body, table([
      { title: "Topic", cell: (t) => h("a", { href: `#/messages?topic=${encodeURIComponent(t.topic_name)}` }, h("code", t.topic_name)) },
      { title: "Business", cls: "wrap", cell: (t) => t.business || "" },
      { title: "Workers", cls: "num", cell: (t) => String(t.worker_num) },
      { title: "Parts", cls: "num", cell: (t) => String(t.partitions) },
      { title: "Retry (ms)", cell: (t) => (t.retry_backoff_ms && t.retry_backoff_ms.length ? t.retry_backoff_ms.join(", ") : h("span.muted", "default")) },
      { title: "Mapping", cell: (t) => (t.workers && t.workers.length ? t.workers.join(", ") : h("span.muted", "hashing")) },
      ...STATES.map((s) => ({ title: s, cls: "num", cell: (t) => countLink(t, s) })),
      {
        title: "",
        cell: (t) => h("button.small.secondary", { type: "button", "aria-label": `Edit topic ${t.topic_name}`, dataset: { action: "edit", topic: t.topic_name }, onclick: () => edit(t) }, "Edit"),
      },
    ], list, "No topics yet: create one, or submit a message (unknown topics are created on submit)."));
  }

  load();
  return refreshEvery(10000, load, status, body);
}
