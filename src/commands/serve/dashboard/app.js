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

function repoLink(name) {
  return el("a", { href: `/repositories/${encodeURIComponent(name)}` }, name);
}

// A link to this page with `changes` made to its query.
function withQuery(changes) {
  const query = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(changes)) query.set(key, String(value));
  return `${location.pathname}?${query}`;
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
        el("td", {}, repoLink(repo.name)),
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
      el("dt", {}, "Repository"), el("dd", {}, repoLink(plan.repository)),
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

const SNAPSHOTS_PER_PAGE = 50;

async function startCheck(name) {
  const started = await api("POST", `/api/v1/repositories/${encodeURIComponent(name)}/check`, {});
  location.assign(`/operations/${started.operation}`);
}

// A repository: what the service knows of it, a check, and its snapshots, newest first, by
// pages, filtered by host, tag and path (the form sends them in the page's query).
async function repositoryPage(page, name) {
  const query = new URLSearchParams(location.search);
  const filters = new URLSearchParams();
  for (const key of ["host", "tag", "path"]) {
    if (query.get(key)) filters.set(key, query.get(key));
  }
  const base = `/api/v1/repositories/${encodeURIComponent(name)}`;
  const [repositories, snapshots] = await Promise.all([
    api("GET", "/api/v1/repositories"),
    api("GET", `${base}/snapshots?${filters}`),
  ]);
  const repo = repositories.find((r) => r.name === name);
  snapshots.reverse();
  const at = Math.max(0, Number(query.get("page")) || 0);
  const shown = snapshots.slice(at * SNAPSHOTS_PER_PAGE, (at + 1) * SNAPSHOTS_PER_PAGE);
  const first = at * SNAPSHOTS_PER_PAGE;
  const input = (key) => [el("label", { for: `filter-${key}` }, key), " ",
    el("input", { id: `filter-${key}`, name: key, value: query.get(key) || "" }), " "];
  fill(page,
    el("h1", {}, `Repository ${name}`),
    el("dl", {},
      el("dt", {}, "Snapshots"), el("dd", {}, repo.snapshots === null ? "unknown" : String(repo.snapshots)),
      el("dt", {}, "Size"), el("dd", {}, bytes(repo.size_bytes)),
      el("dt", {}, "Last check"), el("dd", {}, repo.last_check
        ? [el("a", { href: `/operations/${repo.last_check.operation}` }, when(repo.last_check.ended)), " ",
          badge(repo.last_check.success ? "ok" : "failing")]
        : "never")),
    canOperate() ? el("button", { type: "button", onclick: () => startCheck(name).catch(showError) }, "Check") : null,
    el("form", { method: "get", action: location.pathname, class: "filters" },
      input("host"), input("tag"), input("path"), el("button", { type: "submit" }, "Filter")),
    table("Snapshots", ["Snapshot", "Time", "Host", "Paths", "Tags", "Added"], shown.map((snap) =>
      el("tr", {},
        el("td", {}, el("a", { href: `${location.pathname}/snapshots/${snap.id}` }, snap.short_id)),
        el("td", {}, when(snap.time)),
        el("td", {}, snap.host),
        el("td", {}, snap.paths.join(", ")),
        el("td", {}, snap.tags.join(", ")),
        el("td", {}, snap.summary ? bytes(snap.summary.bytes_added) : "")))),
    pager(first, shown.length, snapshots.length,
      at > 0 ? withQuery({ page: at - 1 }) : null,
      first + shown.length < snapshots.length ? withQuery({ page: at + 1 }) : null));
}

// "FIRST–LAST of TOTAL" with links to the previous and next pages, where there are.
function pager(first, count, total, previous, next) {
  const range = count ? `${first + 1}–${first + count} of ${total}` : `none of ${total}`;
  return el("nav", { class: "pager", "aria-label": "Pages" },
    previous ? el("a", { href: previous }, "Previous page") : null, " ",
    el("span", { class: "range" }, range), " ",
    next ? el("a", { href: next }, "Next page") : null);
}

const ENTRIES_PER_PAGE = 200;

// A directory of a snapshot, by pages: directories open here, files download.
async function treePage(page, name, id) {
  const query = new URLSearchParams(location.search);
  const path = query.get("path") || "/";
  const offset = Math.max(0, Number(query.get("offset")) || 0);
  const base = `/api/v1/repositories/${encodeURIComponent(name)}/snapshots/${encodeURIComponent(id)}`;
  const listing = await api("GET", `${base}/tree?${new URLSearchParams({ path, offset, limit: ENTRIES_PER_PAGE })}`);
  const here = (dir) => `${location.pathname}?${new URLSearchParams({ path: dir })}`;
  const parts = listing.path.split("/").filter((p) => p);
  const crumbs = [el("a", { href: here("/") }, "/")];
  parts.forEach((part, i) => crumbs.push(" ", el("a", { href: here(`/${parts.slice(0, i + 1).join("/")}`) }, part)));
  const link = (entry) => entry.type === "dir"
    ? el("a", { href: here(entry.path) }, `${entry.name}/`)
    : el("a", { href: `${base}/file?${new URLSearchParams({ path: entry.path })}`, download: entry.name }, entry.name);
  fill(page,
    el("h1", {}, `Snapshot ${id.slice(0, 8)} of `, repoLink(name)),
    el("nav", { "aria-label": "Path" }, crumbs),
    table("Entries", ["Name", "Type", "Size", "Modified"], listing.entries.map((entry) =>
      el("tr", {},
        el("td", {}, link(entry)),
        el("td", {}, entry.type),
        el("td", {}, entry.type === "dir" ? "" : bytes(entry.size)),
        el("td", {}, when(entry.mtime))))),
    pager(listing.offset, listing.entries.length, listing.total,
      listing.offset > 0 ? withQuery({ offset: Math.max(0, listing.offset - ENTRIES_PER_PAGE) }) : null,
      listing.next_offset ? withQuery({ offset: listing.next_offset }) : null));
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
  const repository = path.match(/^\/repositories\/([^/]+)$/);
  const snapshot = path.match(/^\/repositories\/([^/]+)\/snapshots\/([^/]+)$/);
  if (plan) await planPage(page, decodeURIComponent(plan[1]));
  else if (repository) await repositoryPage(page, decodeURIComponent(repository[1]));
  else if (snapshot) await treePage(page, decodeURIComponent(snapshot[1]), decodeURIComponent(snapshot[2]));
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
