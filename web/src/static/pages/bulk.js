// bulk.js: the message list's filter, its total and the bulk actions on a
// selection or on everything the filter matches, over the admin API's
// bounded calls (docs/api.md, "Bulk operations"): each call reads at most
// 5000 messages and answers a cursor, so counting and acting loop on it.
import { get, post } from "../api.js";

// The most calls a count makes (5000 messages read each) before it says
// "at least": a total over half a million messages is not worth the wait.
const MAX_COUNT_CALLS = 100;

// filterQuery is the filter as the API's fields (absent ones left out).
export function filterQuery(f) {
  const q = { topic_name: f.topic };
  if (f.state) q.state = f.state;
  if (f.prefix) q.id_prefix = f.prefix;
  if (f.dest) q.destination = f.dest;
  if (f.from) q.due_from = f.from;
  if (f.to) q.due_to = f.to;
  return q;
}

// countMatching counts what the filter matches: {n, exact}. onProgress(n)
// is told the count so far while it loops.
export async function countMatching(f, onProgress = () => {}) {
  let n = 0;
  let cursor = "";
  for (let i = 0; i < MAX_COUNT_CALLS; i++) {
    const r = await get("/sorakaq/admin/msg/count", { ...filterQuery(f), cursor });
    n += r.matched;
    if (!r.next_cursor) return { n, exact: true };
    cursor = r.next_cursor;
    onProgress(n);
  }
  return { n, exact: false };
}

// bulkCall is one bulk call; extra are action, dry_run, ids, delay_time.
export function bulkCall(f, extra) {
  return post("/sorakaq/admin/msg/bulk", { ...filterQuery(f), ...extra });
}

// bulkAll runs a bulk call (a dry run too) until its cursor runs out and
// sums the results.
export async function bulkAll(f, extra, onProgress = () => {}) {
  const sum = { matched: 0, changed: 0, skipped: 0, failed: 0, errors: [] };
  let cursor = "";
  for (;;) {
    const body = { ...extra };
    if (cursor) body.cursor = cursor;
    const r = await bulkCall(f, body);
    for (const k of ["matched", "changed", "skipped", "failed"]) sum[k] += r[k];
    sum.errors.push(...r.errors.slice(0, 20 - sum.errors.length));
    if (!r.next_cursor || extra.ids) return sum;
    cursor = r.next_cursor;
    onProgress(sum);
  }
}

// Actions offered on a selection: what each is called and which states
// it takes (as the server selects them).
export const BULK_ACTIONS = [
  { action: "cancel", label: "Cancel", verb: "Cancel", done: "Cancelled", states: ["delayed", "retrying"], danger: true },
  { action: "setDelay", label: "Set delay", verb: "Set the delay of", done: "Rescheduled", states: ["delayed", "retrying"], danger: false },
  { action: "redrive", label: "Re-drive", verb: "Re-drive", done: "Re-drove", states: ["dead"], danger: false },
  { action: "delete", label: "Delete", verb: "Delete", done: "Deleted", states: ["delivered", "dead", "cancelled"], danger: true },
];

export const plural = (n, one, many = `${one}s`) => `${n.toLocaleString("en-US")} ${n === 1 ? one : many}`;

// copyText puts text on the clipboard (the async API where the page may
// use it, else a hidden textarea and execCommand).
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const ta = document.createElement("textarea");
  ta.value = text;
  ta.setAttribute("readonly", "");
  ta.style.position = "fixed";
  ta.style.opacity = "0";
  document.body.append(ta);
  ta.select();
  const ok = document.execCommand("copy");
  ta.remove();
  if (!ok) throw new Error("the browser refused to copy");
}
