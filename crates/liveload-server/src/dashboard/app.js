// liveload's dashboard. Plain JavaScript, no dependencies. Every value from the server is
// put on the page as text (textContent), never as markup.
"use strict";

const main = () => document.getElementById("main");

// The API with the session cookie; changes carry the dashboard's header (see auth.rs).
async function api(path, options = {}) {
  const headers = Object.assign({ "X-Liveload-Dashboard": "1" }, options.headers || {});
  const response = await fetch("/api/v1" + path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  if (response.status === 401 && location.pathname !== "/login") {
    location.href = "/login";
    throw new Error("not logged in");
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    throw new Error(body && body.message ? body.message : String(response.status));
  }
  return body;
}

// Build an element: el("td", {class: "num"}, "12").
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "onclick" || name === "onsubmit") node[name] = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

function show(...nodes) { main().replaceChildren(...nodes); }
const when = (s) => (s ? new Date(s * 1000).toLocaleString() : "");
const fmt = (v, digits = 1) => (v == null || Number.isNaN(v) ? "–" : Number(v).toFixed(digits));
const statusBadge = (s) => el("span", { class: "status " + s, "data-status": s }, s);

// The largest p95 among the step latencies (`step:<name>`, pauses left out: a think step
// times the pause, not the application), else among all.
function stepP95(p95) {
  const entries = Object.entries(p95 || {});
  const steps = entries.filter(([name]) => name.startsWith("step:") && !name.startsWith("step:think"));
  const pool = steps.length ? steps : entries;
  return pool.length ? Math.max(...pool.map(([, v]) => v)) : null;
}

async function loginPage() {
  const error = el("div", { class: "error", id: "login-error" });
  const input = el("input", { id: "token", type: "password", autocomplete: "off", placeholder: "liveload serve token create NAME" });
  const form = el("form", { class: "stack", id: "login-form" },
    el("label", { for: "token" }, "API token"), input, el("p"), el("button", { id: "login", type: "submit" }, "Log in"), error);
  form.onsubmit = async (event) => {
    event.preventDefault();
    try {
      await api("/session", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: input.value }) });
      location.href = "/";
    } catch (e) { error.textContent = e.message; }
  };
  show(el("h1", {}, "Log in"), form);
}

async function historyPage() {
  const runs = await api("/runs");
  const rows = runs.map((run) => el("tr", { "data-run": run.id },
    el("td", {}, el("input", { type: "checkbox", class: "pick", value: run.id })),
    el("td", {}, el("a", { href: "/runs/" + encodeURIComponent(run.id) }, run.id)),
    el("td", {}, run.scenario), el("td", {}, run.backend), el("td", {}, statusBadge(run.status)),
    el("td", { class: "num" }, run.users), el("td", {}, when(run.created_unix_s)), el("td", {}, when(run.ended_unix_s))));
  const compare = el("button", { id: "compare", onclick: () => {
    const picked = [...document.querySelectorAll("input.pick:checked")].map((c) => c.value);
    if (picked.length === 2) location.href = "/compare?a=" + encodeURIComponent(picked[0]) + "&b=" + encodeURIComponent(picked[1]);
  } }, "Compare two");
  show(el("div", { class: "row" }, el("h1", {}, "Runs"), compare),
    el("table", { id: "runs" },
      el("thead", {}, el("tr", {}, ...["", "Run", "Scenario", "Backend", "Verdict", "Users", "Started", "Ended"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)),
    runs.length ? "" : el("p", { class: "muted" }, "No runs yet: start one from the API or the Start page."));
}

// A small line of the last minutes of a series, drawn as an SVG polyline.
function sparkline(values) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 300 60");
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? 300 / (values.length - 1) : 300;
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", values.map((v, i) => `${(i * step).toFixed(1)},${(58 - (v / max) * 56).toFixed(1)}`).join(" "));
  svg.append(line);
  return svg;
}

function card(id, label) {
  const value = el("div", { class: "value", id }, "–");
  const spark = el("div", { id: id + "-spark" });
  return { node: el("div", { class: "card" }, el("div", { class: "label" }, label), value, spark), value, spark };
}

async function runPage(id) {
  const view = await api("/runs/" + encodeURIComponent(id));
  const status = el("span", { id: "status" }, statusBadge(view.status));
  const stop = el("button", { id: "stop", class: "danger" }, "Stop run");
  const message = el("p", { id: "message", class: "muted" }, view.message || "");
  const cards = { users: card("users", "Active users"), rate: card("iterations", "Iterations/s"), p95: card("p95", "Step p95 (ms)"), errors: card("errors", "Failed iterations") };
  const nodes = el("tbody", { id: "nodes" });
  const report = el("div", { id: "report" });
  // The report's own charts over the seconds so far, redrawn by the server every few seconds.
  const chartsUrl = "/api/v1/runs/" + encodeURIComponent(id) + "/charts";
  const charts = el("iframe", { class: "charts", id: "charts", src: chartsUrl, title: "charts" });
  const redraw = setInterval(() => { charts.src = chartsUrl + "?t=" + Date.now(); }, 5000);
  stop.onclick = async () => {
    stop.disabled = true;
    stop.textContent = "Stopping…";
    try { await api("/runs/" + encodeURIComponent(id), { method: "DELETE" }); } catch (e) { message.textContent = e.message; }
  };
  show(el("div", { class: "row" }, el("h1", {}, view.scenario + " · " + id), el("div", {}, status, " ", stop)),
    message,
    el("div", { class: "cards" }, ...Object.values(cards).map((c) => c.node)),
    el("h2", {}, "Over time"), charts,
    el("h2", {}, "Nodes"),
    el("table", {}, el("thead", {}, el("tr", {}, ...["Node", "Users", "Capacity", "CPU (cores)", "Memory (MiB)", "Health"].map((h) => el("th", {}, h)))), nodes),
    report);
  const history = { users: [], rate: [], p95: [], errors: [] };
  let lastSecond = -1;
  const draw = (point) => {
    // A reconnected stream replays the run from its start: draw each second once.
    if (point.second <= lastSecond) return;
    lastSecond = point.second;
    // The step p95 of the latest closed second (think excluded), as the report draws it;
    // before the first one closes, the slowest step's p95 so far.
    const p95 = point.step && point.step.steps > 0 ? point.step.step_p95_ms : stepP95(point.p95_ms);
    const values = { users: point.active_users, rate: point.iterations_per_s, p95, errors: point.iterations_failed };
    for (const [key, value] of Object.entries(values)) {
      history[key].push(value || 0);
      if (history[key].length > 120) history[key].shift();
      cards[key].value.textContent = key === "p95" ? fmt(value) : (value == null ? "–" : String(value));
      cards[key].spark.replaceChildren(sparkline(history[key]));
    }
    cards.users.value.textContent = `${point.active_users} / ${point.target_users}`;
    nodes.replaceChildren(...(point.nodes || []).map((n) => el("tr", {},
      el("td", {}, n.id), el("td", { class: "num" }, n.users), el("td", { class: "num" }, n.capacity),
      el("td", { class: "num" }, n.now ? fmt(n.now.cpu_cores, 2) : "–"),
      el("td", { class: "num" }, n.now ? fmt(n.now.memory_bytes / 1048576, 0) : "–"),
      el("td", { class: n.hot ? "hot" : "" }, n.hot || "ok"))));
  };
  const ended = (record) => {
    clearInterval(redraw);
    charts.remove();
    stop.disabled = true;
    stop.textContent = "Ended";
    if (record) {
      status.replaceChildren(statusBadge(record.status));
      message.textContent = record.message || "";
    }
    report.replaceChildren(el("h2", {}, "Report"), el("iframe", { class: "report", src: "/api/v1/runs/" + encodeURIComponent(id) + "/report", title: "report" }));
  };
  if (view.status !== "running") {
    for (const point of await api("/runs/" + encodeURIComponent(id) + "/points")) draw(point);
    ended(null);
    return;
  }
  const events = new EventSource("/api/v1/runs/" + encodeURIComponent(id) + "/events");
  events.addEventListener("point", (e) => draw(JSON.parse(e.data)));
  events.addEventListener("end", (e) => { events.close(); ended(JSON.parse(e.data)); });
}

async function comparePage() {
  const query = new URLSearchParams(location.search);
  const [a, b] = [query.get("a"), query.get("b")];
  if (!a || !b) {
    show(el("h1", {}, "Compare"), el("p", { class: "muted" }, "Tick two runs in the history, then Compare two."));
    return;
  }
  const [ra, rb] = await Promise.all([a, b].map((id) => api("/runs/" + encodeURIComponent(id) + "/result")));
  ra.latencies = ra.latencies || {};
  rb.latencies = rb.latencies || {};
  const names = [...new Set([...Object.keys(ra.latencies), ...Object.keys(rb.latencies)])].sort();
  const row = (label, va, vb, digits = 1) => el("tr", {}, el("td", {}, label), el("td", { class: "num" }, fmt(va, digits)), el("td", { class: "num" }, fmt(vb, digits)),
    el("td", { class: "num" }, va && vb != null ? (((vb - va) / va) * 100).toFixed(1) + " %" : "–"));
  const rows = [
    row("users", ra.users, rb.users, 0), row("iterations ok", ra.iterations_ok, rb.iterations_ok, 0), row("iterations failed", ra.iterations_failed, rb.iterations_failed, 0),
    ...names.flatMap((n) => ["p50_ms", "p95_ms", "p99_ms"].map((q) => row(`${n} ${q.replace("_ms", "")} (ms)`, (ra.latencies[n] || {})[q], (rb.latencies[n] || {})[q]))),
  ];
  show(el("h1", {}, "Compare"), el("table", { id: "comparison" },
    el("thead", {}, el("tr", {}, el("th", {}, "Metric"), el("th", { class: "num" }, a), el("th", { class: "num" }, b), el("th", { class: "num" }, "Change"))),
    el("tbody", {}, ...rows)));
}

async function startPage() {
  const [scenarios, backends] = await Promise.all([api("/scenarios"), api("/backends")]);
  const error = el("div", { class: "error" });
  const scenario = el("select", { id: "scenario" }, ...scenarios.map((s) => el("option", { value: s }, s)));
  const backend = el("select", { id: "backend" }, ...backends.map((s) => el("option", { value: s }, s)));
  const users = el("input", { id: "users-input", type: "number", min: "1", placeholder: "the scenario's" });
  const duration = el("input", { id: "duration", placeholder: "the scenario's, e.g. 30s" });
  const confirm = el("input", { id: "confirm", type: "checkbox" });
  const form = el("form", { class: "stack", id: "start-form" },
    el("label", { for: "scenario" }, "Stored scenario"), scenario, el("label", { for: "backend" }, "Backend"), backend,
    el("label", { for: "users-input" }, "Users"), users, el("label", { for: "duration" }, "Duration"), duration,
    el("label", {}, confirm, " I accept the cost of a billed backend"), el("p"), el("button", { type: "submit", id: "start" }, "Start"), error);
  form.onsubmit = async (event) => {
    event.preventDefault();
    const request = { scenario: scenario.value, backend: backend.value, confirm: confirm.checked };
    if (users.value) request.users = Number(users.value);
    if (duration.value) request.duration = duration.value;
    try {
      const run = await api("/runs", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(request) });
      location.href = "/runs/" + encodeURIComponent(run.id);
    } catch (e) { error.textContent = e.message; }
  };
  show(el("h1", {}, "Start a run"), scenarios.length ? form : el("p", { class: "muted" }, "No stored scenario: PUT one to /api/v1/scenarios/{name}."));
}

async function route() {
  const path = location.pathname;
  try {
    if (path === "/login") return await loginPage();
    if (path === "/compare") return await comparePage();
    if (path === "/start") return await startPage();
    if (path.startsWith("/runs/")) return await runPage(decodeURIComponent(path.slice(6)));
    return await historyPage();
  } catch (e) {
    if (e.message !== "not logged in") show(el("p", { class: "error" }, e.message));
  }
}

document.addEventListener("DOMContentLoaded", route);
