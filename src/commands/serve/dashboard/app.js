// The dashboard's pages, drawn from the JSON API under /api/v1 with the session cookie;
// calls that change anything send the session's CSRF token in X-CSRF-Token.
"use strict";

let me = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...present(children));
  return node;
}

// The nodes and strings of `children`, nested arrays flattened, null and undefined left out.
function present(children) {
  return children.flat(Infinity).filter((c) => c !== null && c !== undefined);
}

function fill(node, ...children) {
  node.replaceChildren(...present(children));
}

async function api(method, path, body) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = me.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (answer.status === 401) {
    location.assign("/login");
    throw new Error("logged out");
  }
  const data = answer.status === 204 ? null : await answer.json();
  if (!answer.ok) throw new Error(data && data.detail ? data.detail : answer.statusText);
  return data;
}

function showError(e) {
  document.getElementById("error").textContent = String(e.message || e);
}

const canOperate = () => me.role === "operate" || me.role === "admin";

function when(time) {
  return time ? new Date(time).toLocaleString() : "never";
}

function bytes(n) {
  if (n === null || n === undefined) return "unknown";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function duration(op) {
  if (!op.ended) return "";
  const seconds = (new Date(op.ended) - new Date(op.started)) / 1000;
  return `${seconds.toFixed(1)} s`;
}

// `show` of a backup report's summary, if the operation has one.
function summary(op, show) {
  const s = op.report && op.report.summary;
  return s ? show(s) : "";
}

function badge(text) {
  return el("span", { class: `status status-${text}` }, text);
}

// What the overview says of a plan: running, paused, failing, stale or ok.
function planStatus(plan) {
  if (plan.running !== null) return "running";
  if (plan.paused) return "paused";
  const last = plan.last_run;
  if (last && last.status !== "success") return "failing";
  if (plan.stale) return "stale";
  return last ? "ok" : "never";
}

function table(caption, heads, rows) {
  return el("div", { class: "table-wrap" },
    el("table", {},
      el("caption", {}, caption),
      el("thead", {}, el("tr", {}, heads.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows)));
}

async function runNow(plan) {
  const started = await api("POST", `/api/v1/plans/${encodeURIComponent(plan)}/run`);
  location.assign(`/operations/${started.operation}`);
}

async function setPaused(plan, paused) {
  const action = paused ? "pause" : "resume";
  await api("POST", `/api/v1/plans/${encodeURIComponent(plan)}/${action}`);
  route();
}

function planControls(plan) {
  if (!canOperate()) return null;
  return el("span", { class: "controls" },
    el("button", { type: "button", onclick: () => runNow(plan.name).catch(showError) }, "Run now"), " ",
    el("button", { type: "button", onclick: () => setPaused(plan.name, !plan.paused).catch(showError) },
      plan.paused ? "Resume" : "Pause"));
}

function opLink(op) {
  return el("a", { href: `/operations/${op.id}` }, `#${op.id}`);
}

async function overview(page) {
  const [plans, repositories, followers] = await Promise.all([
    api("GET", "/api/v1/plans"),
    api("GET", "/api/v1/repositories"),
    api("GET", "/api/v1/followers"),
  ]);
  fill(page, 
    el("h1", {}, "Overview"),
    table("Plans", ["Plan", "Status", "Last run", "Next run", ""], plans.map((plan) =>
      el("tr", { "data-plan": plan.name },
        el("td", {}, el("a", { href: `/plans/${encodeURIComponent(plan.name)}` }, plan.name)),
        el("td", {}, badge(planStatus(plan))),
        el("td", {}, plan.last_run ? [opLink(plan.last_run), " ", when(plan.last_run.ended), " ", badge(plan.last_run.status)] : "never"),
        el("td", {}, plan.paused ? "paused" : when(plan.next_run)),
        el("td", {}, planControls(plan))))),
    table("Repositories", ["Repository", "Snapshots", "Size", "Last check"], repositories.map((repo) =>
      el("tr", {},
        el("td", {}, repo.name),
        el("td", {}, repo.snapshots === null ? "unknown" : String(repo.snapshots)),
        el("td", {}, bytes(repo.size_bytes)),
        el("td", {}, repo.last_check ? [when(repo.last_check.ended), " ", badge(repo.last_check.success ? "ok" : "failing")] : "never")))),
    followers.length === 0 ? null :
      table("MongoDB followers", ["Follower", "Repository", "Lag", "Running", "Last error"], followers.map((f) =>
        el("tr", {},
          el("td", {}, f.name),
          el("td", {}, f.repository),
          el("td", {}, f.lag_seconds === null ? "unknown" : `${f.lag_seconds.toFixed(1)} s`),
          el("td", {}, f.running ? "yes" : "no"),
          el("td", {}, f.last_error || "")))));
}

async function planPage(page, name) {
  const [plans, history] = await Promise.all([
    api("GET", "/api/v1/plans"),
    api("GET", `/api/v1/operations?plan=${encodeURIComponent(name)}&limit=50`),
  ]);
  const plan = plans.find((p) => p.name === name);
  if (!plan) throw new Error(`no plan is named ${name}`);
  fill(page, 
    el("h1", {}, `Plan ${plan.name}`),
    el("dl", {},
      el("dt", {}, "Status"), el("dd", {}, badge(planStatus(plan))),
      el("dt", {}, "Repository"), el("dd", {}, plan.repository),
      el("dt", {}, "Schedule"), el("dd", {}, plan.schedule),
      el("dt", {}, "Next run"), el("dd", {}, plan.paused ? "paused" : when(plan.next_run)),
      el("dt", {}, "Last success"), el("dd", {}, when(plan.last_success))),
    planControls(plan),
    table("History", ["Run", "Kind", "Started", "Duration", "Files", "Added", "Status"], history.map((op) =>
      el("tr", { "data-operation": String(op.id) },
        el("td", {}, opLink(op)),
        el("td", {}, op.kind),
        el("td", {}, when(op.started)),
        el("td", {}, duration(op)),
        el("td", {}, summary(op, (s) => String(s.total_files))),
        el("td", {}, summary(op, (s) => bytes(s.bytes_added))),
        el("td", {}, badge(op.status))))));
}

// The report's fields as a definition list, nested objects as nested lists, arrays as JSON.
function reportList(report, attrs) {
  return el("dl", attrs, Object.entries(report).map(([key, value]) => [
    el("dt", {}, key),
    el("dd", {}, reportValue(value)),
  ]));
}

function reportValue(value) {
  if (value === null) return "none";
  if (Array.isArray(value)) return value.length ? JSON.stringify(value) : "none";
  if (typeof value === "object") return reportList(value, {});
  return String(value);
}

async function operationPage(page, id) {
  const op = await api("GET", `/api/v1/operations/${id}`);
  const bar = el("progress", { id: "progress", "aria-label": "Progress" });
  const status = el("span", { id: "op-status" }, badge(op.status));
  const phase = el("span", { id: "phase" }, "");
  const counters = el("span", { id: "counters" }, "");
  const errors = el("ul", { id: "errors" });
  const log = el("pre", { id: "log", tabindex: "0", "aria-label": "Log" });
  const report = el("section", { id: "final" });
  const cancel = canOperate() && op.status === "running"
    ? el("button", { type: "button", onclick: () => api("POST", `/api/v1/operations/${id}/cancel`).catch(showError) }, "Cancel")
    : null;
  fill(page, 
    el("h1", {}, `Operation #${op.id}: ${op.kind}`, op.plan ? ` of plan ${op.plan}` : ""),
    op.plan ? el("p", {}, el("a", { href: `/plans/${encodeURIComponent(op.plan)}` }, `Plan ${op.plan}`)) : null,
    el("p", {}, "Status: ", status, " · Phase: ", phase, " · ", counters),
    bar, cancel,
    el("h2", {}, "Errors"), errors,
    el("h2", {}, "Log"), log,
    report);
  const events = new EventSource(`/api/v1/operations/${id}/events`);
  // A reconnection replays the events from the first: those seen already are skipped.
  let seen = -1;
  const on = (kind, handle) => events.addEventListener(kind, (e) => {
    const event = JSON.parse(e.data);
    if (event.seq <= seen) return;
    seen = event.seq;
    handle(event.data);
  });
  on("phase", (name) => { phase.textContent = name; });
  on("progress", (c) => {
    counters.textContent = `${c.files} files, ${bytes(c.bytes_read)} read, ${bytes(c.bytes_added)} added`;
  });
  on("log", (line) => { log.append(`${line}\n`); });
  on("error", (e) => { errors.append(el("li", {}, `${e.path}: ${e.message}`)); });
  on("report", (end) => {
    events.close();
    bar.max = 1;
    bar.value = 1;
    phase.textContent = "ended";
    fill(status, badge(end.status));
    if (cancel) cancel.remove();
    fill(report, el("h2", {}, "Report"),
      end.error ? el("p", { role: "alert" }, end.error) : null,
      end.report ? reportList(end.report, { id: "report" }) : null);
  });
}

async function route() {
  const page = document.getElementById("page");
  const path = location.pathname;
  const plan = path.match(/^\/plans\/([^/]+)$/);
  const operation = path.match(/^\/operations\/(\d+)$/);
  if (plan) await planPage(page, decodeURIComponent(plan[1]));
  else if (operation) await operationPage(page, operation[1]);
  else await overview(page);
}

async function start() {
  me = await api("GET", "/session");
  document.getElementById("who").textContent = `${me.name} (${me.role})`;
  document.getElementById("logout").addEventListener("click", () =>
    api("POST", "/logout").then(() => location.assign("/login")).catch(showError));
  await route();
}

function loginPage() {
  const form = document.getElementById("login-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = await fetch("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: document.getElementById("token").value }),
      credentials: "same-origin",
    });
    if (answer.ok) {
      location.assign("/");
    } else {
      const problem = await answer.json().catch(() => null);
      document.getElementById("login-error").textContent = problem ? problem.detail : answer.statusText;
    }
  });
}

if (document.getElementById("login-form")) loginPage();
else start().catch(showError);
