// The cluster dashboard: polls /api/state once a second and redraws; the load form drives /api/load.
// Every figure also carries its raw number in data-value (what the browser tests read).

const POLL_MS = 1000;
const STRATEGY_NAMES = { broadcast: "broadcast", partitioned: "partitioned", dispatcher: "dispatcher" };
const $ = (id) => document.getElementById(id);

const fmt = {
  count: (v) => (v == null ? "–" : Math.round(v).toLocaleString("en-US")),
  rate: (v) => (v == null ? "–" : v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(1)),
  pct: (v) => (v == null ? "–" : `${(v * 100).toFixed(1)} %`),
};

function setValue(el, value, format) {
  el.textContent = format(value);
  el.dataset.value = value == null ? "" : String(value);
}

function strategyLabel(state) {
  const name = STRATEGY_NAMES[state.strategy] || state.strategy;
  if (state.strategy !== "partitioned") return name;
  if (state.partitions === 0) return `${name} · one channel per video`;
  return state.partitions == null ? name : `${name} · ${state.partitions} channels`;
}

function cell(row, field, value, format) {
  const td = document.createElement("td");
  td.dataset.field = field;
  setValue(td, value, format);
  row.append(td);
  return td;
}

function wasteCell(row, waste) {
  const td = document.createElement("td");
  td.dataset.field = "waste";
  td.dataset.value = waste == null ? "" : String(waste);
  const box = document.createElement("div");
  box.className = "waste";
  const text = document.createElement("span");
  text.textContent = fmt.pct(waste);
  const meter = document.createElement("div");
  meter.className = "meter";
  const fill = document.createElement("div");
  const share = waste == null ? 0 : Math.min(1, Math.max(0, waste));
  fill.style.width = `${share * 100}%`;
  fill.className = share > 0.5 ? "high" : share > 0.1 ? "mid" : "";
  meter.append(fill);
  box.append(text, meter);
  td.append(box);
  row.append(td);
}

function renderServers(servers) {
  const body = document.querySelector("#servers tbody");
  const rows = servers.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.server = s.name;
    const name = document.createElement("td");
    name.textContent = s.name;
    name.title = s.url;
    tr.append(name);
    if (!s.up) {
      tr.className = "down";
      const td = document.createElement("td");
      td.colSpan = 8;
      td.textContent = `down: ${s.error}`;
      tr.append(td);
      return tr;
    }
    cell(tr, "connections", s.connections, fmt.count);
    cell(tr, "watched_videos", s.watched_videos, fmt.count);
    cell(tr, "subscriptions", s.subscriptions, fmt.count);
    cell(tr, "received_per_s", s.received_per_s, fmt.rate);
    cell(tr, "delivered_per_s", s.delivered_per_s, fmt.rate);
    cell(tr, "discarded_per_s", s.discarded_per_s, fmt.rate);
    wasteCell(tr, s.waste);
    const p99 = cell(tr, "p99_ms", s.p99_ms, (v) => (v == null ? "–" : `${s.p99_above ? "> " : "≤ "}${v} ms`));
    p99.title = "upper bound of the histogram bucket holding the 99th percentile, last second";
    return tr;
  });
  body.replaceChildren(...rows);
}

function renderWriters(writers) {
  const body = document.querySelector("#writers tbody");
  body.replaceChildren(...writers.map((w) => {
    const tr = document.createElement("tr");
    tr.dataset.writer = w.name;
    const name = document.createElement("td");
    name.textContent = w.up ? w.name : `${w.name} (down)`;
    tr.append(name);
    cell(tr, "stored_per_s", w.up ? w.stored_per_s : null, fmt.rate);
    cell(tr, "stored_total", w.up ? w.stored_total : null, fmt.count);
    return tr;
  }));
}

function renderBroker(broker) {
  const facts = [];
  if (broker.kind === "push") {
    facts.push(["transport", "HTTP pushes (dispatcher)"], ["pushes/s", fmt.rate(broker.pushes_per_s)]);
  } else if (broker.kind === "redis") {
    facts.push(["transport", broker.up ? "Redis pub/sub" : "Redis (unreachable)"]);
    if (broker.up) {
      facts.push(["publishes/s", fmt.rate(broker.publishes_per_s)], ["channels", fmt.count(broker.channels)],
                 ["out KB/s", fmt.rate(broker.out_kb_per_s)]);
    }
  } else {
    facts.push(["transport", "not observed"]);
  }
  $("broker").replaceChildren(...facts.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    return [dt, dd];
  }));
}

function renderLoad(load) {
  const running = load != null && ["starting", "connecting", "running", "draining"].includes(load.state);
  $("load-start").disabled = running;
  $("load-stop").disabled = !running;
  const status = $("load-status");
  status.dataset.state = load ? load.state : "idle";
  if (!load) {
    status.textContent = "No load running.";
    return;
  }
  const s = load.settings;
  const p99 = load.p99_ms == null ? "–" : `${Math.round(load.p99_ms)} ms`;
  status.textContent = `${load.state} · ${Math.round(load.elapsed)}/${s.duration} s · viewers ${load.viewers_open}/${s.viewers}`
    + ` · posted ${fmt.count(load.posted)} (${fmt.count(load.failed)} failed) · frames read ${fmt.count(load.delivered)}`
    + ` · viewers' p99 ${p99}`;
  $("load-bar").style.width = `${Math.min(100, (100 * load.elapsed) / s.duration)}%`;
  showError(load.error);
}

function showError(message) {
  const el = $("load-error");
  el.hidden = !message;
  el.textContent = message || "";
}

function render(state) {
  $("strategy").textContent = strategyLabel(state);
  $("policy").textContent = state.policy;
  $("demo-link").href = state.demo;
  const t = state.totals;
  setValue($("total-connections"), t.connections, fmt.count);
  setValue($("total-received"), t.received_per_s, fmt.rate);
  setValue($("total-delivered"), t.delivered_per_s, fmt.rate);
  setValue($("total-discarded"), t.discarded_per_s, fmt.rate);
  setValue($("waste-now"), t.waste, fmt.pct);
  setValue($("waste-total"), t.waste_total, fmt.pct);
  $("waste-total-hint").textContent =
    `${fmt.count(t.discarded_total)} of ${fmt.count(t.received_total)} received were discarded`;
  renderServers(state.servers);
  renderWriters(state.writers);
  renderBroker(state.broker);
  renderLoad(state.load);
}

async function poll() {
  const health = $("health");
  try {
    const response = await fetch("api/state", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    health.dataset.state = "live";
    health.textContent = "live";
  } catch (error) {
    health.dataset.state = "down";
    health.textContent = `dashboard unreachable (${error.message})`;
  }
  setTimeout(poll, POLL_MS);
}

// The server puts this run's token in the page; state-changing calls send it back (a page on
// another site cannot read it, nor send the header without a preflight the server never answers).
const TOKEN = document.querySelector('meta[name="dashboard-token"]').content;

async function send(method, body) {
  const headers = { "X-Dashboard-Token": TOKEN };
  if (body) headers["Content-Type"] = "application/json";
  const response = await fetch("api/load", { method, headers, body: body && JSON.stringify(body) });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error ? answer.error.message : `HTTP ${response.status}`);
  renderLoad(answer.load);
}

$("load-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const settings = {};
  for (const name of ["videos", "viewers"]) settings[name] = parseInt(form.get(name), 10);
  for (const name of ["zipf", "rate", "duration"]) settings[name] = Number(form.get(name));
  showError("");
  try {
    await send("POST", settings);
  } catch (error) {
    showError(error.message);
  }
});

$("load-stop").addEventListener("click", async () => {
  try {
    await send("DELETE");
  } catch (error) {
    showError(error.message);
  }
});

poll();
