"use strict";
const view = document.getElementById("view");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
// Calls the API; a request that changes something is sent as JSON (the server refuses anything else), and an
// ended session goes back to the sign-in page.
const api = async (path, options = {}) => {
  const method = options.method ?? "GET";
  const init = method === "GET" ? {} : { method, headers: { "Content-Type": "application/json" }, body: options.body ?? "" };
  const response = await fetch(path, init);
  if (response.status === 401) { location.href = "/signin"; throw new Error("signed out"); }
  const body = response.status === 204 ? {} : await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
};
const status = (s) => `<span class="status-${esc(s)}" data-status="${esc(s)}">${esc(s)}</span>`;
const duration = (run) => run.ended_at ? ((Date.parse(run.ended_at) - Date.parse(run.started_at)) / 1000).toFixed(2) + " s" : "…";
const trigger = (t) => t.cron ? `cron ${t.cron}${t.timezone ? " (" + t.timezone + ")" : ""}` : t.every ? `every ${t.every}` :
  t.after.length ? `after ${t.after.join(", ")}` : t.webhook ? `webhook ${t.webhook}` : "";

async function pipelines() {
  const data = await api("/api/pipelines");
  const rows = data.pipelines.map((p) => `<tr data-pipeline="${esc(p.name)}">
      <td><a href="#/pipeline/${encodeURIComponent(p.name)}">${esc(p.name)}</a><div class="muted">${esc(p.description)}</div></td>
      <td>${p.triggers.map(trigger).map(esc).join("<br>") || '<span class="muted">manual</span>'}</td>
      <td>${esc(p.next_run ?? "")}</td>
      <td>${p.last_run ? status(p.last_run.status) + " " + esc(p.last_run.started_at) : '<span class="muted">never</span>'}</td>
      <td class="running">${p.running ? status("running") + " " + p.running : ""}</td>
      <td><button data-trigger="${esc(p.name)}">Run now</button> <a href="#/dlq/${encodeURIComponent(p.name)}">dead letters</a></td></tr>`);
  const broken = Object.entries(data.broken).map(([file, mistakes]) =>
    `<tr><td>${esc(file)}</td><td class="error">${mistakes.map(esc).join("\n")}</td></tr>`);
  view.innerHTML = `<h2>Pipelines</h2><table id="pipelines"><tr><th>Pipeline</th><th>Triggers</th><th>Next run</th><th>Last run</th><th>Running</th><th></th></tr>${rows.join("")}</table>` +
    (broken.length ? `<h2>Files with mistakes</h2><table id="broken"><tr><th>File</th><th>Mistakes (the previous version keeps running)</th></tr>${broken.join("")}</table>` : "");
  view.querySelectorAll("button[data-trigger]").forEach((b) => b.onclick = async () => {
    b.disabled = true;
    try { await api(`/api/pipelines/${encodeURIComponent(b.dataset.trigger)}/runs`, { method: "POST" }); } catch (e) { alert(e.message); }
    render();
  });
}

function chart(title, id, values, unit) {
  const w = 420, h = 120, max = Math.max(1, ...values.map((v) => v.value));
  const bw = values.length ? Math.max(2, Math.floor((w - 20) / values.length) - 2) : 0;
  const bars = values.map((v, i) => {
    const bh = Math.round((v.value / max) * (h - 30));
    return `<rect x="${10 + i * (bw + 2)}" y="${h - 15 - bh}" width="${bw}" height="${bh}" fill="${v.failed ? "#c62828" : "#3b6fd8"}"><title>${esc(v.label)}: ${v.value} ${unit}</title></rect>`;
  });
  return `<div class="chart"><b>${esc(title)}</b><svg id="${id}" width="${w}" height="${h}">${bars.join("")}<text x="10" y="${h - 2}" class="muted">max ${max} ${unit}</text></svg></div>`;
}

async function pipeline(name) {
  const { runs } = await api(`/api/runs?pipeline=${encodeURIComponent(name)}&limit=50`);
  const { state } = await api(`/api/pipelines/${encodeURIComponent(name)}/state`);
  const details = await Promise.all(runs.slice(0, 30).map((r) => api(`/api/runs/${r.run_id}`)));
  const series = details.reverse().map((d) => ({
    label: d.run.started_at,
    failed: d.run.status === "failed",
    rows: d.steps.filter((s) => s.category === "load").reduce((n, s) => n + s.rows_out, 0),
    seconds: d.run.ended_at ? (Date.parse(d.run.ended_at) - Date.parse(d.run.started_at)) / 1000 : 0,
  }));
  const rows = runs.map((r) => `<tr data-run="${esc(r.run_id)}"><td><a href="#/run/${esc(r.run_id)}">${esc(r.run_id)}</a></td>
      <td>${status(r.status)}</td><td>${esc(r.trigger)}</td><td>${esc(r.started_at)}</td><td>${duration(r)}</td>
      <td class="error">${esc(r.error ?? "")}</td></tr>`);
  view.innerHTML = `<h2>${esc(name)}</h2><div class="charts">` +
    chart("Rows loaded per run", "rows-chart", series.map((s) => ({ label: s.label, value: s.rows, failed: s.failed })), "rows") +
    chart("Duration per run", "duration-chart", series.map((s) => ({ label: s.label, value: s.seconds, failed: s.failed })), "s") +
    `</div>` + stateTable(state) +
    `<h3>Runs</h3><table id="runs"><tr><th>Run</th><th>Status</th><th>Trigger</th><th>Started</th><th>Duration</th><th>Error</th></tr>${rows.join("")}</table>`;
}

// The values a pipeline keeps between runs (its cursors), stored or still the declared default.
function stateTable(state) {
  const rows = Object.entries(state).map(([name, v]) =>
    `<tr data-state="${esc(name)}"><td>${esc(name)}</td><td>${esc(v.value)}</td><td>${v.default ? '<span class="muted">default</span>' : "stored"}</td></tr>`);
  return rows.length ? `<h3>State</h3><table id="state"><tr><th>Name</th><th>Value</th><th></th></tr>${rows.join("")}</table>` : "";
}

function dag(steps, outcome) {
  // Columns by depth: a step sits one column right of its deepest input.
  const depth = {};
  const place = (s) => depth[s.id] ?? (depth[s.id] = s.inputs.length ? 1 + Math.max(...s.inputs.map((i) => place(steps.find((x) => x.id === i) ?? { id: i, inputs: [] }))) : 0);
  steps.forEach(place);
  const rowsAt = {}, pos = {};
  steps.forEach((s) => { const d = depth[s.id]; rowsAt[d] = (rowsAt[d] ?? 0) + 1; pos[s.id] = { x: 20 + d * 170, y: 20 + (rowsAt[d] - 1) * 60 }; });
  const height = 40 + Math.max(...Object.values(rowsAt)) * 60, width = 40 + (Math.max(...Object.values(depth)) + 1) * 170;
  const colour = { success: "#d9f2df", failed: "#f8d7da", none: "#eceff3" };
  const edges = steps.flatMap((s) => s.inputs.filter((i) => pos[i]).map((i) =>
    `<line x1="${pos[i].x + 130}" y1="${pos[i].y + 18}" x2="${pos[s.id].x}" y2="${pos[s.id].y + 18}" stroke="#8a93a6" marker-end="url(#arrow)"/>`));
  const nodes = steps.map((s) => {
    const o = outcome(s.id);
    return `<g class="step" data-step="${esc(s.id)}" data-outcome="${o}"><rect x="${pos[s.id].x}" y="${pos[s.id].y}" width="130" height="36" rx="6" fill="${colour[o]}" stroke="#5b6478"/>
      <text x="${pos[s.id].x + 8}" y="${pos[s.id].y + 15}">${esc(s.id)}</text><text x="${pos[s.id].x + 8}" y="${pos[s.id].y + 30}" class="muted">${esc(s.kind)}</text></g>`;
  });
  return `<svg id="dag" width="${width}" height="${height}"><defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#8a93a6"/></marker></defs>${edges.join("")}${nodes.join("")}</svg>`;
}

async function run(id) {
  const detail = await api(`/api/runs/${id}`);
  const { pipelines } = await api("/api/pipelines");
  const p = pipelines.find((x) => x.name === detail.run.pipeline);
  const metrics = Object.fromEntries(detail.steps.map((s) => [s.step, s]));
  const outcome = (step) => detail.run.status === "failed" && detail.run.stage === step ? "failed" : metrics[step] ? "success" : "none";
  live = detail.run.status === "running";
  const rows = detail.steps.map((s) => `<tr><td>${esc(s.step)}</td><td>${esc(s.kind)}</td><td>${s.rows_in}</td><td>${s.rows_out}</td>
      <td>${s.rows_invalid}</td><td>${s.duration_ms} ms</td><td>${s.retries}</td></tr>`);
  const checks = detail.checks.map((c) => `<tr><td>${esc(c.name)}</td><td>${esc(c.step)}</td><td>${c.passed ? status("success") : status("failed")}</td><td>${esc(c.message)}</td></tr>`);
  view.innerHTML = `<h2>Run ${esc(id)}</h2><p><a href="#/pipeline/${encodeURIComponent(detail.run.pipeline)}">${esc(detail.run.pipeline)}</a> ·
      ${status(detail.run.status)} · ${esc(detail.run.trigger)} · ${esc(detail.run.started_at)} · ${duration(detail.run)}
      ${detail.run.status === "running" ? `<button data-cancel="${esc(id)}">Cancel run</button>` : ""}</p>` +
    (detail.run.error ? `<p class="error" id="run-error">${detail.run.stage ? "Step " + esc(detail.run.stage) + ": " : ""}${esc(detail.run.error)}</p>` : "") +
    (p ? dag(p.steps, outcome) : "") +
    `<h3>Steps</h3><table id="steps"><tr><th>Step</th><th>Kind</th><th>Rows in</th><th>Rows out</th><th>Invalid</th><th>Time</th><th>Retries</th></tr>${rows.join("")}</table>` +
    (checks.length ? `<h3>Checks</h3><table id="checks"><tr><th>Check</th><th>Step</th><th>Outcome</th><th>Detail</th></tr>${checks.join("")}</table>` : "") +
    `<h3>Log</h3><pre id="log">${detail.logs.map((l) => `${esc(l.at)} ${esc(l.level.padEnd(5))} ${esc(l.message)}`).join("\n")}</pre>`;
  view.querySelectorAll("button[data-cancel]").forEach((b) => b.onclick = async () => {
    b.disabled = true;
    try { await api(`/api/runs/${encodeURIComponent(b.dataset.cancel)}/cancel`, { method: "POST" }); } catch (e) { alert(e.message); }
    setTimeout(render, 500);
  });
}

async function dlq(name) {
  const { dead_letters } = await api(`/api/dead-letters?pipeline=${encodeURIComponent(name)}`);
  const rows = dead_letters.map((l) => `<tr data-letter="${l.id}"><td>${l.id}</td><td>${esc(l.step)}</td><td>${esc(l.error)}</td>
      <td><code>${esc(JSON.stringify(l.record))}</code></td><td>${l.retry_count}</td><td>${esc(l.created_at)}</td></tr>`);
  const steps = [...new Set(dead_letters.map((l) => l.step))];
  view.innerHTML = `<h2>Dead letters of ${esc(name)}</h2>` +
    steps.map((s) => `<button data-replay="${esc(s)}">Replay ${esc(s)}</button> `).join("") + `<span id="replay-result"></span>` +
    `<table id="dead-letters"><tr><th>Id</th><th>Step</th><th>Reason</th><th>Record</th><th>Retries</th><th>Set aside</th></tr>${rows.join("")}</table>`;
  view.querySelectorAll("button[data-replay]").forEach((b) => b.onclick = async () => {
    b.disabled = true;
    const out = document.getElementById("replay-result");
    try {
      const r = await api(`/api/dead-letters/replay?pipeline=${encodeURIComponent(name)}&step=${encodeURIComponent(b.dataset.replay)}`, { method: "POST" });
      out.textContent = `${r.passed} went through, ${r.failed_again} failed again` +
        (r.skipped ? `, ${r.skipped} of failed runs left alone` : "");
    } catch (e) { out.textContent = e.message; }
    setTimeout(render, 500);
  });
}

// Every call that changed something, newest first (only an admin token may read it).
async function audit() {
  const { audit } = await api("/api/audit?limit=200");
  const rows = audit.map((a) => `<tr data-audit><td>${esc(a.at)}</td><td>${esc(a.actor)}</td><td>${esc(a.address)}</td>
      <td><code>${esc(a.action)}</code></td><td>${a.status}</td></tr>`);
  view.innerHTML = `<h2>Audit log</h2><table id="audit"><tr><th>When</th><th>Who</th><th>From</th><th>What</th><th>Outcome</th></tr>${rows.join("")}</table>`;
}

// Who is signed in, and a way out when the server asks for tokens.
async function who() {
  const me = await api("/api/session");
  document.getElementById("who").textContent = me.tokens ? `${me.name} (${me.role})` : "";
  const out = document.getElementById("sign-out");
  out.hidden = !me.tokens;
  out.onclick = async () => { await api("/api/session", { method: "DELETE" }); location.href = "/signin"; };
}

// Whether the page shows a run still going, which refreshes like the pipeline list.
let live = false;

async function render() {
  const [, page, arg] = (location.hash || "#/").split("/").map(decodeURIComponent);
  live = false;
  try {
    if (page === "pipeline") await pipeline(arg);
    else if (page === "run") await run(arg);
    else if (page === "dlq") await dlq(arg);
    else if (page === "audit") await audit();
    else await pipelines();
  } catch (e) {
    view.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
  document.getElementById("clock").textContent = "updated " + new Date().toLocaleTimeString();
}
window.addEventListener("hashchange", render);
who();
render();
// Live progress: the pipeline list, and a run still going, refresh every two seconds.
setInterval(() => { if ((location.hash || "#/") === "#/" || live) render(); }, 2000);
