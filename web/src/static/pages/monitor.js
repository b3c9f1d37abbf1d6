// Monitoring: today's per-minute curves (all topics or one) and the
// messages each worker holds, refreshed every 5 s. Charts: Apache ECharts
// (window.echarts, from /static/vendor/echarts.min.js).
import { get } from "../api.js";
import { errText, fmtTime, h } from "../ui.js";

const REFRESH_MS = 5000;

const MINUTE = 60000;

// The x range: today's minutes, at least the last hour, up to now.
function xRange(ms) {
  const now = Date.now();
  const day = now - (now % 86400000); // 00:00 UTC
  const first = ms.length ? ms[0].minute : now;
  return { min: Math.max(day, Math.min(first, now - 60 * MINUTE)), max: now - (now % MINUTE) + MINUTE };
}

function lineOption(title, series, unit, ms) {
  return {
    title: { text: title, left: 0, textStyle: { fontSize: 14 } },
    tooltip: { trigger: "axis", valueFormatter: (v) => (v === null || v === undefined ? "—" : `${Math.round(v * 10) / 10}${unit}`) },
    legend: { top: 28, left: 0 },
    grid: { left: 50, right: 20, top: 66, bottom: 28 },
    xAxis: { type: "time", ...xRange(ms) },
    yAxis: { type: "value", minInterval: unit ? 0 : 1 },
    animation: false,
    // Few points: show them (a lone minute has no line to draw).
    series: series.map((s) => ({ type: "line", showSymbol: ms.length < 90, symbolSize: 5, ...s })),
  };
}

export function render(page, params) {
  const echarts = window.echarts;
  const topicSel = h("select#monitor-topic", h("option", { value: "" }, "all topics"));
  const status = h("span.muted#monitor-status", "Loading…");
  page.append(
    h("div.page-head", h("h2", "Monitoring"), h("span.spacer"), h("label", "Topic", topicSel), status),
    h("p.muted", "Today (UTC, from 00:00), one point per minute with activity. Times are shown in local time."));
  if (!echarts) {
    page.append(h("div.alert.error", { role: "alert" }, h("span.text", "ECharts did not load (/static/vendor/echarts.min.js).")));
    return null;
  }
  const box = (id) => {
    const el = h(`div.chart#${id}`);
    page.querySelector(".charts").append(h("div.card.chart-card", el));
    return echarts.init(el, null, { renderer: "canvas" });
  };
  page.append(h("div.charts"));
  const charts = {
    time: box("chart-time"),
    count: box("chart-count"),
    late: box("chart-lateness"),
    workers: box("chart-workers"),
  };
  const empty = (none) => ({
    graphic: none ? [{ type: "text", left: "center", top: "middle", style: { text: "No activity yet today", fill: "#8a96a5", fontSize: 14 } }] : [],
  });

  async function refresh() {
    const topic = topicSel.value;
    let minutes;
    let workers;
    try {
      [minutes, workers] = await Promise.all([
        get("/sorakaq/monitor/minutes", { topic_name: topic }),
        get("/sorakaq/monitor/workers"),
      ]);
    } catch (e) {
      status.textContent = `Refresh failed: ${errText(e)}`;
      status.className = "error-text";
      return;
    }
    const ms = (minutes && minutes.minutes) || [];
    const pts = (k) => ms.map((m) => [m.minute, m[k]]);
    const none = ms.length === 0;
    const of = topic ? ` · ${topic}` : "";
    charts.time.setOption({ ...lineOption(`Time per message, ms${of}`, [
      { name: "avg flow (received → held by a worker)", data: pts("avg_flow_ms") },
      { name: "avg callback", data: pts("avg_callback_ms") },
    ], " ms", ms), ...empty(none) }, true);
    charts.count.setOption({ ...lineOption(`Messages per minute${of}`, [
      { name: "submitted", data: pts("submitted") },
      { name: "fired", data: pts("fired") },
      { name: "failed", data: pts("failed"), itemStyle: { color: "#c0262d" } },
    ], "", ms), ...empty(none) }, true);
    charts.late.setOption({ ...lineOption(`Lateness (fired after due), ms${of}`, [
      { name: "p50", data: pts("lateness_p50_ms") },
      { name: "p99", data: pts("lateness_p99_ms") },
    ], " ms", ms), ...empty(none) }, true);
    const ws = [...(workers || [])].sort((a, b) => a.node_id.localeCompare(b.node_id));
    charts.workers.setOption({
      title: { text: "Messages held per worker", left: 0, textStyle: { fontSize: 14 } },
      tooltip: {
        trigger: "axis",
        formatter: (p) => {
          const w = ws[p[0].dataIndex];
          // ECharts puts this string in the DOM as HTML: escape it.
          const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
          return `${esc(w.node_id)}<br>held ${esc(w.held)} · load ${esc(w.load)} · ${esc(Math.round(w.fire_rate * 100) / 100)} callbacks/s`;
        },
      },
      grid: { left: 50, right: 20, top: 60, bottom: 40 },
      xAxis: { type: "category", data: ws.map((w) => w.node_id), axisLabel: { interval: 0, overflow: "truncate", width: 140 } },
      yAxis: { type: "value", minInterval: 1 },
      animation: false,
      series: [{ type: "bar", name: "held", data: ws.map((w) => w.held), barMaxWidth: 60 }],
      graphic: ws.length ? [] : [{ type: "text", left: "center", top: "middle", style: { text: "No workers", fill: "#8a96a5" } }],
    }, true);
    status.textContent = `Updated ${fmtTime(Date.now()).slice(11, 19)} · every ${REFRESH_MS / 1000} s`;
    status.className = "muted";
  }

  get("/sorakaq/topic/list").then((ts) => {
    topicSel.append(...ts.map((t) => t.topic_name).sort().map((n) => h("option", { value: n }, n)));
    if (params.get("topic")) topicSel.value = params.get("topic");
  }).catch(() => {}).finally(refresh);
  topicSel.addEventListener("change", () => {
    history.replaceState(null, "", topicSel.value ? `#/monitor?topic=${encodeURIComponent(topicSel.value)}` : "#/monitor");
    refresh();
  });
  const timer = setInterval(refresh, REFRESH_MS);
  const onResize = () => Object.values(charts).forEach((c) => c.resize());
  window.addEventListener("resize", onResize);
  return () => {
    clearInterval(timer);
    window.removeEventListener("resize", onResize);
    Object.values(charts).forEach((c) => c.dispose());
  };
}
