// Monitoring: the curves of the last hour, today or the last 7 days (all
// topics or one), in minutes or ten-minute buckets, and the
// messages each worker holds, refreshed at the chosen interval. Charts: Apache ECharts
// (window.echarts, from /static/vendor/echarts.min.js, loaded by this page
// only: it is 96 % of the console's weight).
import { get } from "../api.js";
import { autoRefresh, errText, fmtBound, fmtTime, h, refreshInterval, refreshLabel } from "../ui.js";

const MINUTE = 60000;
const DAY = 24 * 60 * MINUTE;
const HOUR = 60 * MINUTE;

// now is the page's clock: a browser test may set window.__sorakaqNowMs to
// see the page at another time (a day boundary) without waiting for it.
const now = () => (typeof window.__sorakaqNowMs === "number" ? window.__sorakaqNowMs : Date.now());

// The time ranges offered, by their URL value. "today" starts at 00:00 in
// the browser's zone (it was 00:00 UTC, and the curves started over
// there); the server answers in minutes up to 25 h, else in 10 minutes.
export const RANGES = {
  hour: { label: "Last hour", from: (t) => t - HOUR },
  today: { label: "Today", from: (t) => new Date(t).setHours(0, 0, 0, 0) },
  week: { label: "Last 7 days", from: (t) => t - 7 * 24 * HOUR },
};

// The x range of a choice: from its start to the end of the bucket in
// progress.
function xRange(choice, step = MINUTE) {
  const t = now();
  return { min: RANGES[choice].from(t), max: t - (t % step) + step };
}

// Every bucket of the range, the API's point or null for one without
// activity: the API leaves idle buckets out, and a line joined across them
// would draw an outage as steady traffic.
function everyBucket(ms, range, step) {
  const by = new Map(ms.map((m) => [m.minute, m]));
  const out = [];
  for (let t = range.min - (range.min % step); t < range.max; t += step) out.push([t, by.get(t) || null]);
  return out;
}

// The browser's zone at t, "UTC+09:00": times are local, and a tooltip
// without its zone is read as the server's UTC.
function zone(t) {
  const off = -new Date(t).getTimezoneOffset();
  const a = Math.abs(off);
  return `UTC${off < 0 ? "-" : "+"}${String(Math.floor(a / 60)).padStart(2, "0")}:${String(a % 60).padStart(2, "0")}`;
}

// ECharts puts tooltip strings in the DOM as HTML: escape what goes in.
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// The minute in progress is shaded and called so in tooltips: its counts
// are still growing, so its dip at the right edge is not a real one.
function partialMark(cur, step) {
  return {
    silent: true,
    itemStyle: { color: "rgba(120, 130, 145, 0.13)" },
    label: { show: true, position: "insideTopRight", color: "#5d6b7a", fontSize: 11, formatter: "in progress" },
    data: [[{ xAxis: cur }, { xAxis: cur + step }]],
  };
}

function tooltip(fmt, cur, step) {
  return {
    trigger: "axis",
    formatter: (ps) => {
      if (!ps.length) return "";
      const t = ps[0].value[0];
      const until = step > MINUTE ? `–${fmtTime(t + step).slice(11, 16)}` : "";
      const head = `${esc(fmtTime(t).slice(0, 16))}${until} ${zone(t)}${t === cur ? (step > MINUTE ? " (in progress)" : " (minute in progress)") : ""}`;
      return [head, ...ps.map((p) => `${p.marker}${esc(p.seriesName)}: <b>${esc(fmt(p))}</b>`)].join("<br>");
    },
  };
}

function lineOption(title, series, ms, { fmt, yAxis = {}, range, step }) {
  const cur = now() - (now() % step);
  const first = series[0];
  return {
    title: { text: title, left: 0, textStyle: { fontSize: 14 } },
    tooltip: tooltip(fmt, cur, step),
    legend: { top: 28, left: 0, type: "scroll" },
    grid: { left: 8, right: 16, top: 66, bottom: 28, containLabel: true },
    // a range of more than a day names the day on every label, not only
    // the hour (7 days of "12:00" say nothing)
    xAxis: { type: "time", ...range, axisLabel: { hideOverlap: true, formatter: range.max - range.min > DAY ? "{MM}-{dd} {HH}:{mm}" : "{HH}:{mm}" } },
    yAxis: { type: "value", ...yAxis },
    animation: false,
    series: series.map((s) => ({
      // Few points: show them (a lone minute has no line to draw); a gap
      // (null) stays a gap.
      type: "line", showSymbol: ms.length < 90, symbolSize: 5, connectNulls: false, ...s,
      ...(s === first ? { markArea: partialMark(cur, step) } : {}),
    })),
  };
}

// loadECharts adds ECharts' script once. index.html names it in a meta tag
// rather than a script tag, so that the admin service's versioned URL
// (?v=<hash>, cached for good) is used without loading it on every page.
let loading = null;
function loadECharts() {
  if (window.echarts) return Promise.resolve(window.echarts);
  loading ??= new Promise((resolve, reject) => {
    const src = document.querySelector('meta[name="sorakaq-echarts"]')?.content || "/static/vendor/echarts.min.js";
    const script = h("script", { src });
    script.addEventListener("load", () => resolve(window.echarts));
    script.addEventListener("error", () => {
      loading = null;
      script.remove();
      reject(new Error(`ECharts did not load (${src}).`));
    });
    document.head.append(script);
  });
  return loading;
}

export function render(page, params) {
  const topicSel = h("select#monitor-topic", h("option", { value: "" }, "all topics"));
  const rangeSel = h("select#monitor-range", Object.entries(RANGES).map(([v, r]) => h("option", { value: v }, r.label)));
  rangeSel.value = RANGES[params.get("range")] ? params.get("range") : "hour";
  const status = h("span.muted#monitor-status", "Loading…");
  const note = h("p.muted#monitor-note");
  page.append(
    h("div.page-head", h("h1", "Monitoring"), h("span.spacer"), h("label", "Topic", topicSel), h("label", "Range", rangeSel), status),
    note);
  let gone = false;
  let stop = () => {};
  loadECharts().then((echarts) => {
    if (!gone) stop = draw(page, params, echarts, topicSel, rangeSel, status, note);
  }).catch((e) => {
    if (!gone) page.append(h("div.alert.error", { role: "alert" }, h("span.text", errText(e))));
  });
  return () => {
    gone = true;
    stop();
  };
}

// draw makes the charts and keeps them up to date; returns the function
// that stops it.
function draw(page, params, echarts, topicSel, rangeSel, status, note) {
  // Every card is in the grid before any chart is made, and each chart
  // follows its card's size from then on: a chart sized at init measured
  // the grid with one card in it (twice its final width), and the window's
  // resize event misses layout changes such as the grid's columns settling.
  const ids = ["chart-time", "chart-count", "chart-lateness", "chart-workers"];
  const grid = h("div.charts", ids.map((id) => h("div.card.chart-card", h(`div.chart#${id}`))));
  page.append(grid);
  const [time, count, late, workers] = ids.map((id) => echarts.init(grid.querySelector(`#${id}`), null, { renderer: "canvas" }));
  const charts = { time, count, late, workers };
  const observer = new ResizeObserver((entries) => {
    for (const e of entries) echarts.getInstanceByDom(e.target)?.resize();
  });
  ids.forEach((id) => observer.observe(grid.querySelector(`#${id}`)));
  const empty = (none) => ({
    graphic: none ? [{ type: "text", left: "center", top: "middle", style: { text: "No activity in this range", fill: "#8a96a5", fontSize: 14 } }] : [],
  });
  const num = (unit) => (p) => (p.value[1] === null ? "—" : `${Math.round(p.value[1] * 10) / 10}${unit}`);

  async function refresh() {
    const topic = topicSel.value;
    let minutes;
    let held;
    try {
      [minutes, held] = await Promise.all([
        get("/sorakaq/monitor/minutes", { topic_name: topic, from_ms: xRange(rangeSel.value).min, to_ms: xRange(rangeSel.value).max }),
        get("/sorakaq/monitor/workers", topic ? { topic_name: topic } : {}),
      ]);
    } catch (e) {
      status.textContent = `Refresh failed: ${errText(e)}; the charts show the last data`;
      status.className = "error-text";
      grid.classList.add("stale");
      return;
    }
    const ms = (minutes && minutes.minutes) || [];
    const step = (minutes && minutes.step_ms) || MINUTE;
    const range = xRange(rangeSel.value, step);
    const all = everyBucket(ms, range, step);
    const per = step > MINUTE ? `${step / MINUTE} minutes` : "minute";
    note.textContent = `${RANGES[rangeSel.value].label}, one point per ${per}; idle ones count zero. Times are shown in local time (${zone(now())}). `
      + "Lateness is read from a histogram: a percentile is the bound of its bucket (\u2264\u00a050\u00a0ms).";
    // counts: 0 in an idle minute; averages and lateness: no value (a gap)
    const count = (k) => all.map(([t, m]) => [t, m ? m[k] : 0]);
    const avg = (k) => all.map(([t, m]) => [t, m ? m[k] : null]);
    const bound = (k) => all.map(([t, m]) => (m && m.fired > 0
      ? { value: [t, m[`${k}_ms`]], over: m[`${k}_over`] } : { value: [t, null] }));
    const none = ms.length === 0;
    const of = topic ? ` · ${topic}` : "";
    charts.time.setOption({ ...lineOption(`Time per message, ms${of}`, [
      { name: "avg flow (received → held by a worker)", data: avg("avg_flow_ms") },
      { name: "avg callback", data: avg("avg_callback_ms") },
    ], ms, { fmt: num(" ms"), range, step }), ...empty(none) }, true);
    charts.count.setOption({ ...lineOption(`Messages per ${per}${of}`, [
      // every minute has a count (a line always): no dots on the zeros
      { name: "submitted", data: count("submitted"), showSymbol: false },
      { name: "first attempts", data: all.map(([t, m]) => [t, m ? m.fired - (m.retried || 0) : 0]), showSymbol: false },
      { name: "retries", data: count("retried"), showSymbol: false },
      { name: "failed (of both)", data: count("failed"), itemStyle: { color: "#c0262d" }, showSymbol: false },
    ], ms, { fmt: num(""), yAxis: { minInterval: 1 }, range, step }), ...empty(none) }, true);
    // Log axis: an outage's minutes-long lateness and the usual
    // milliseconds on one chart. Values are bucket bounds, shown as such.
    const label = (p) => (p.value[1] === null ? "—" : `${p.data.over ? ">" : "\u2264"} ${fmtBound(p.value[1])}`);
    charts.late.setOption({ ...lineOption(`Lateness (fired after due)${of}`, [
      { name: "p50", data: bound("lateness_p50") },
      { name: "p99", data: bound("lateness_p99") },
    ], ms, { fmt: label, yAxis: { type: "log", logBase: 10, min: 1, axisLabel: { formatter: (v) => fmtBound(v) } }, range, step }), ...empty(none) }, true);
    const ws = [...(held || [])].sort((a, b) => a.node_id.localeCompare(b.node_id));
    // With a topic picked: that topic's pending messages in each worker's
    // slots (all of them, from the store's counters); else the wheel's.
    const perTopic = topic && ws.some((w) => w.pending !== undefined);
    charts.workers.setOption({
      title: { text: perTopic ? `Pending messages per worker${of}` : "Messages held per worker (all topics, in the wheel)", left: 0, textStyle: { fontSize: 14 } },
      tooltip: {
        trigger: "axis",
        formatter: (p) => {
          const w = ws[p[0].dataIndex];
          const mine = perTopic ? `${esc(w.pending)} pending of ${esc(topic)} · ` : "";
          return `${esc(w.node_id)}<br>${mine}held ${esc(w.held)} (all topics) · load ${esc(w.load)} · ${esc(Math.round(w.fire_rate * 100) / 100)} callbacks/s`;
        },
      },
      grid: { left: 8, right: 16, top: 60, bottom: 12, containLabel: true },
      xAxis: { type: "category", data: ws.map((w) => w.node_id), axisLabel: { interval: 0, overflow: "truncate", width: 140 } },
      yAxis: { type: "value", minInterval: 1 },
      animation: false,
      series: [{ type: "bar", name: perTopic ? "pending" : "held", data: ws.map((w) => (perTopic ? w.pending : w.held)), barMaxWidth: 60 }],
      graphic: ws.length ? [] : [{ type: "text", left: "center", top: "middle", style: { text: "No workers", fill: "#8a96a5" } }],
    }, true);
    status.textContent = `Updated ${fmtTime(Date.now()).slice(11, 19)} · ${refreshLabel(refreshInterval())}`;
    status.className = "muted";
    grid.classList.remove("stale");
  }

  get("/sorakaq/topic/list").then((ts) => {
    topicSel.append(...ts.map((t) => t.topic_name).sort().map((n) => h("option", { value: n }, n)));
    if (params.get("topic")) topicSel.value = params.get("topic");
  }).catch(() => {}).finally(refresh);
  // the topic and the range are kept in the URL (bookmarkable)
  const keep = () => {
    const q = new URLSearchParams();
    if (topicSel.value) q.set("topic", topicSel.value);
    if (rangeSel.value !== "hour") q.set("range", rangeSel.value);
    history.replaceState(null, "", `#/monitor${q.size ? `?${q}` : ""}`);
    refresh();
  };
  topicSel.addEventListener("change", keep);
  rangeSel.addEventListener("change", keep);
  const stopRefresh = autoRefresh(refresh);
  return () => {
    stopRefresh();
    observer.disconnect();
    Object.values(charts).forEach((c) => c.dispose());
  };
}
