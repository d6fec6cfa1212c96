// The live dashboard: polls the read API every few seconds and redraws in place.
// All text from the stream goes in through textContent, never as HTML.
"use strict";

const POLL_MS = 5000;
const TOP_LIMIT = 50;
const params = new URLSearchParams(location.search);
const state = {
  window: ["5m", "1h", "24h"].includes(params.get("window")) ? params.get("window") : "1h",
  minCount: Math.max(1, parseInt(params.get("min_count") || "10", 10) || 10),
  filter: "",
  selected: params.get("query") ? { kind: "query", name: params.get("query") } : null,
  top: { query: [], product: [] },
  firing: new Set(),
  chart: null,
  chartKey: "",
  periods: [],
  timer: null,
  generation: 0,
};

const $ = (selector) => document.querySelector(selector);
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value); // CSSOM: the page's CSP forbids inline style attributes
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(`${path.split("?")[0]}: ${body.error || response.status}`);
  return body;
}

function showProblem(message) {
  const box = $("#problem");
  box.hidden = !message;
  box.textContent = message || "";
}

// ---- tables -------------------------------------------------------------------------------

function shareCell(row) {
  const [low, high] = row.interval_95 || [row.share, row.share];
  const bar = el("span", { class: "bar" }, [
    el("span", { class: "interval", style: { left: `${100 * low}%`, width: `${Math.max(0.5, 100 * (high - low))}%` } }),
    el("span", { class: "point", style: { left: `calc(${100 * row.share}% - 1px)` } }),
  ]);
  const label = row.interval_95 ? `${pct(row.share)} (${pct(low)}–${pct(high)})` : pct(row.share);
  return el("td", {}, [el("span", { class: "share" }, [bar, el("span", { class: "value", text: label })])]);
}

function renderTable(kind) {
  const table = kind === "query" ? $("#top-queries") : $("#top-products");
  const field = kind === "query" ? "query" : "product_id";
  const needle = state.filter.toLowerCase();
  const rows = state.top[kind].filter((row) => !needle || row[field].toLowerCase().includes(needle));
  const body = table.tBodies[0];
  body.replaceChildren(...rows.map((row) => {
    const selected = state.selected && state.selected.kind === kind && state.selected.name === row[field];
    const tr = el("tr", { "data-name": row[field], class: [selected ? "selected" : "", state.firing.has(`${kind}:${row[field]}`) ? "firing" : ""].join(" ").trim() }, [
      el("td", { class: "name", title: row[field], text: row[field] }),
      el("td", { class: "num", text: String(row.count) }),
      el("td", { class: "num", text: String(row.total) }),
      shareCell(row),
    ]);
    tr.addEventListener("click", () => select(kind, row[field]));
    return tr;
  }));
  table.parentElement.querySelector(".empty").hidden = rows.length > 0;
}

// ---- alerts -------------------------------------------------------------------------------

function renderAlerts(alerts) {
  state.firing = new Set(alerts.filter((a) => a.state === "firing").map((a) => `${a.subject}:${a.query ?? a.product_id}`));
  const items = alerts.slice(0, 20).map((a) => {
    const name = a.query ?? a.product_id;
    const reference = a.baseline_share === null ? `prior ${pct(a.reference_share)}` : `baseline ${pct(a.baseline_share)}`;
    const when = a.state === "firing" ? `since ${new Date(a.fired_at).toLocaleTimeString()}`
      : `${new Date(a.fired_at).toLocaleTimeString()}–${new Date(a.resolved_at).toLocaleTimeString()}`;
    const li = el("li", { class: a.state, "data-name": name }, [
      el("span", { class: "state", text: a.state }),
      el("b", { text: name }), " ",
      el("span", { class: "muted", text: a.subject }),
      el("div", { class: "detail", text: `${pct(a.negative_share)} negative in ${a.window} (${a.count} events) vs ${reference}; z = ${a.statistic}; ${when}` }),
    ]);
    li.addEventListener("click", () => select(a.subject, name));
    return li;
  });
  $("#alerts").replaceChildren(...items);
  $("#alerts").parentElement.querySelector(".empty").hidden = items.length > 0;
}

// ---- consumer status (only with serve --metrics-url) ------------------------------------

function renderStatus(status) {
  const box = $("#consumer");
  box.hidden = !status.configured;
  if (!status.configured) return;
  if (!status.available) {
    box.replaceChildren(el("span", { class: "trouble", text: status.error }));
    return;
  }
  const rate = (v) => (v === null ? "–" : v.toFixed(1));
  const parts = status.models.map((m) => el("span", {}, ["model ", el("b", { text: `${m.name} ${m.version}` }), ` (${m.route}, ${m.device})`]));
  parts.push(el("span", {}, ["events/s in ", el("b", { text: rate(status.events_in_per_s) }), " out ", el("b", { text: rate(status.events_out_per_s) })]));
  parts.push(el("span", { title: status.lag.map((p) => `${p.topic}[${p.partition}]: ${p.lag}`).join("\n") }, ["lag ", el("b", { text: String(status.lag_total) })]));
  if (status.troubles.length) parts.push(el("span", { class: "trouble", text: `trouble: ${status.troubles.join(", ")}` }));
  box.replaceChildren(...parts);
}

// ---- chart --------------------------------------------------------------------------------

function shadeFiring(u) {
  // Firing periods behind the lines: one translucent band each, clipped to the plot.
  const { ctx } = u;
  const { left, top, width, height } = u.bbox;
  ctx.save();
  ctx.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--firing");
  for (const period of state.periods) {
    // At least 3 px wide: on a day's axis a spike that fired a minute ago is still visible.
    const x1 = Math.min(left + width, u.valToPos(period.to ?? Date.now() / 1000, "x", true));
    const x0 = Math.max(left, Math.min(u.valToPos(period.from, "x", true), x1 - 3 * devicePixelRatio));
    if (x1 > x0) ctx.fillRect(x0, top, x1 - x0, height);
  }
  ctx.restore();
}

function chartData(series) {
  const xs = series.points.map((p) => p.t);
  const share = series.points.map((p) => p.negative_share);
  const low = series.points.map((p) => (p.interval_95 ? p.interval_95[0] : null));
  const high = series.points.map((p) => (p.interval_95 ? p.interval_95[1] : null));
  const baseline = xs.map(() => series.baseline.negative_share);
  return [xs, share, low, high, baseline];
}

function drawChart(series) {
  const key = `${series.kind}:${series[series.kind === "query" ? "query" : "product_id"]}`;
  state.periods = series.firing_periods;
  const data = chartData(series);
  const container = $("#chart");
  if (state.chart && state.chartKey === key) {
    state.chart.setData(data);
    return;
  }
  if (state.chart) state.chart.destroy();
  const css = getComputedStyle(document.documentElement);
  const neg = css.getPropertyValue("--neg").trim();
  state.chartKey = key;
  state.chart = new uPlot({
    width: container.clientWidth,
    height: 260,
    // x runs to now, past the last bucket's start, so a spike firing since minutes ago shows.
    scales: { x: { time: true, range: (u, min, max) => [min, Math.max(max, Date.now() / 1000)] }, y: { range: [0, 1] } },
    axes: [{}, { values: (u, ticks) => ticks.map((t) => Math.round(100 * t) + "%"), size: 50 }],
    series: [
      {},
      { label: "negative share", stroke: neg, width: 2, points: { show: true, size: 5, fill: neg }, value: (u, v) => pct(v) },
      { label: "95% low", stroke: "transparent", value: (u, v) => pct(v) },
      { label: "95% high", stroke: "transparent", value: (u, v) => pct(v) },
      { label: "baseline", stroke: "#555", dash: [6, 4], width: 1.5, points: { show: false }, value: (u, v) => pct(v) },
    ],
    bands: [{ series: [3, 2], fill: css.getPropertyValue("--band").trim() }],
    legend: { show: false },
    hooks: { drawClear: [shadeFiring] },
  }, data, container);
}

async function refreshSeries() {
  if (!state.selected) return;
  const { kind, name } = state.selected;
  const series = await getJSON(`/series?kind=${kind}&name=${encodeURIComponent(name)}&window=24h`);
  const shown = series[kind === "query" ? "query" : "product_id"]; // queries come back normalized
  if (state.selected.kind === kind && state.selected.name === name && shown !== name) {
    state.selected.name = shown;
    renderTable(kind);
  }
  $("#series-name").textContent = `${shown} (${kind === "query" ? "query" : "product"})`;
  drawChart(series);
}

function select(kind, name) {
  state.selected = { kind, name };
  renderTable("query");
  renderTable("product");
  refreshSeries().catch((error) => showProblem(error.message));
}

// ---- polling ------------------------------------------------------------------------------

async function poll() {
  // One polling loop: a poll started by a click supersedes one in flight, which then schedules nothing.
  clearTimeout(state.timer);
  const generation = ++state.generation;
  try {
    const top = (kind) => getJSON(`/top?kind=${kind}&window=${state.window}&min_count=${state.minCount}&limit=${TOP_LIMIT}`);
    const [queries, products, alerts, status] = await Promise.all([top("query"), top("product"), getJSON("/alerts"), getJSON("/status")]);
    if (generation !== state.generation) return; // superseded (another window chosen meanwhile): draw nothing stale
    state.top = { query: queries.results, product: products.results };
    renderAlerts(alerts.alerts);
    renderTable("query");
    renderTable("product");
    renderStatus(status);
    if (!state.selected && queries.results.length) state.selected = { kind: "query", name: queries.results[0].query };
    await refreshSeries();
    showProblem("");
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    showProblem(`cannot refresh: ${error.message}`);
  }
  if (generation === state.generation) state.timer = setTimeout(poll, POLL_MS);
}

function setWindow(window) {
  state.window = window;
  for (const button of document.querySelectorAll("#windows button")) button.classList.toggle("active", button.dataset.window === window);
  for (const span of document.querySelectorAll(".window-name")) span.textContent = `(${window})`;
  poll();
}

for (const button of document.querySelectorAll("#windows button")) button.addEventListener("click", () => setWindow(button.dataset.window));
$("#filter").addEventListener("input", (event) => {
  state.filter = event.target.value.trim();
  renderTable("query");
  renderTable("product");
});
$("#filter").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.value.trim()) select("query", event.target.value.trim());
});
window.addEventListener("resize", () => state.chart && state.chart.setSize({ width: $("#chart").clientWidth, height: 260 }));
setWindow(state.window);
