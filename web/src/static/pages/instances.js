// Instances: the running sorakaQ processes; workers can be taken offline.
import { get, post } from "../api.js";
import { badge, clear, confirmDialog, errText, fmtDuration, fmtNum, fmtTime, h, refreshEvery, showError, showOk, table } from "../ui.js";

export function render(page) {
  const body = h("div.card", h("p.muted", "Loading…"));
  const refresh = h("button.secondary#instances-refresh", { type: "button", onclick: () => load() }, "Refresh");
  const status = h("span.muted#instances-status");
  page.append(h("div.page-head", h("h1", "Instances"), h("span.spacer"), status, refresh), body,
    h("p.muted", "Held: messages in a worker's timer wheel, those due within its window (worker.window, 60 s by default); "
      + "later ones wait in the store. Load: callbacks in flight over the worker's concurrency, 0 to 1."));

  async function setOffline(inst, off) {
    const verb = off ? "Take offline" : "Bring online";
    const ok = await confirmDialog(`${verb} ${inst.node_id}?`,
      off ? `The worker ${inst.node_id} stops taking messages; the ${inst.held} messages it holds move to the other workers.`
        : `The worker ${inst.node_id} takes messages again.`,
      verb, off);
    if (!ok) return;
    try {
      await post(off ? "/sorakaq/instance/offline" : "/sorakaq/instance/online", { node_id: inst.node_id });
      showOk(`${inst.node_id} is ${off ? "offline" : "online"}.`);
    } catch (e) {
      showError(`${verb} ${inst.node_id}: ${errText(e)}`);
    }
    load();
  }

  // load (re)draws the table; a background refresh's failure goes to the
  // status line (throws), not to one more alert.
  async function load(background = false) {
    let list;
    try {
      list = await get("/sorakaq/instance/list");
    } catch (e) {
      if (background) throw e;
      showError(`Loading the instances: ${errText(e)}`);
      return;
    }
    const now = Date.now();
    list.sort((a, b) => a.role.localeCompare(b.role) || a.node_id.localeCompare(b.node_id));
    clear(body, table([
      { title: "Node id", cell: (i) => h("code", i.node_id) },
      { title: "Role", cell: (i) => i.role },
      { title: "Address", cell: (i) => h("code", i.addr) },
      { title: "Up", cell: (i) => h("span", { title: `started ${fmtTime(i.started_at)}` }, i.started_at ? fmtDuration(now - i.started_at) : "—") },
      { title: "Held", cls: "num", cell: (i) => String(i.held) },
      { title: "Load", cls: "num", cell: (i) => fmtNum(i.load, 2) },
      { title: "Callbacks/s", cls: "num", cell: (i) => (i.role === "worker" || i.role === "all" ? fmtNum(i.fire_rate || 0, 1) : "—") },
      { title: "Status", cell: (i) => (i.offline ? badge("offline", "offline") : badge("online", "online")) },
      {
        title: "",
        // The all-in-one is the only worker there is: the server always
        // refuses to take it offline, so it is not offered.
        cell: (i) => (i.role === "worker"
          ? h("button.small", {
            type: "button",
            class: i.offline ? "small secondary" : "small danger",
            "aria-label": `${i.offline ? "Bring online" : "Take offline"} ${i.node_id}`,
            dataset: { action: i.offline ? "online" : "offline", node: i.node_id },
            onclick: () => setOffline(i, !i.offline),
          }, i.offline ? "Bring online" : "Take offline")
          : ""),
      },
    ], list, "No instances registered."));
  }

  load();
  return refreshEvery(load, status, body);
}
