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

const SPARK_RUNS = 20;

async function overview(page) {
  const [plans, repositories, followers, alerts] = await Promise.all([
    api("GET", "/api/v1/plans"),
    api("GET", "/api/v1/repositories"),
    api("GET", "/api/v1/followers"),
    api("GET", "/api/v1/alerts?limit=10"),
  ]);
  const recent = await Promise.all(plans.map((plan) =>
    api("GET", `/api/v1/operations?plan=${encodeURIComponent(plan.name)}&limit=${SPARK_RUNS}`).then(runSeries)));
  fill(page, 
    el("h1", {}, "Overview"),
    table("Plans", ["Plan", "Status", "Last run", "Next run", "Recent durations", "Recent bytes added", ""], plans.map((plan, i) =>
      el("tr", { "data-plan": plan.name },
        el("td", {}, el("a", { href: `/plans/${encodeURIComponent(plan.name)}` }, plan.name)),
        el("td", {}, badge(planStatus(plan))),
        el("td", {}, plan.last_run ? [opLink(plan.last_run), " ", when(plan.last_run.ended), " ", badge(plan.last_run.status)] : "never"),
        el("td", {}, plan.paused ? "paused" : when(plan.next_run)),
        el("td", { class: "spark-duration" }, sparkline(recent[i], (r) => r.seconds, seconds, "durations")),
        el("td", { class: "spark-added" }, sparkline(recent[i], (r) => r.added, bytes, "bytes added")),
        el("td", {}, planControls(plan))))),
    table("Repositories", ["Repository", "Snapshots", "Size", "Deduplication", "Compression", "Last check"], repositories.map((repo) =>
      el("tr", {},
        el("td", {}, repoLink(repo.name)),
        el("td", {}, repo.snapshots === null ? "unknown" : String(repo.snapshots)),
        el("td", {}, bytes(repo.size_bytes)),
        el("td", { class: "dedup" }, factor(repo.deduplication)),
        el("td", { class: "compression" }, factor(repo.compression)),
        el("td", {}, repo.last_check ? [when(repo.last_check.ended), " ", badge(repo.last_check.success ? "ok" : "failing")] : "never")))),
    followers.length === 0 ? null :
      table("MongoDB followers", ["Follower", "Repository", "Lag", "Running", "Last error"], followers.map((f) =>
        el("tr", {},
          el("td", {}, f.name),
          el("td", {}, f.repository),
          el("td", {}, f.lag_seconds === null ? "unknown" : `${f.lag_seconds.toFixed(1)} s`),
          el("td", {}, f.running ? "yes" : "no"),
          el("td", {}, f.last_error || "")))),
    alerts.length === 0 ? el("p", { id: "no-alerts" }, "No alerts since the service started.") :
      table("Recent alerts", ["Time", "Event", "About", "What"], alerts.map((a) =>
        el("tr", {},
          el("td", {}, when(a.time)),
          el("td", {}, badge(a.event)),
          el("td", {}, a.plan || a.repository || a.follower || ""),
          el("td", {}, a.text || "")))));
}

// A ratio as "2.4×", or "unknown" before the service has listed the repository.
function factor(x) {
  return x === null || x === undefined ? "unknown" : `${x.toFixed(1)}×`;
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
    el("h2", {}, "Runs"),
    el("div", { class: "chart-wrap" }, historyChart(runSeries(history))),
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

async function startPrune(name) {
  const started = await api("POST", `/api/v1/repositories/${encodeURIComponent(name)}/prune`, {});
  location.assign(`/operations/${started.operation}`);
}

// A repository: what the service knows of it, a check, and its snapshots, newest first, by
// pages, filtered by host, tag, path and plan (the form sends them in the page's query).
async function repositoryPage(page, name) {
  const query = new URLSearchParams(location.search);
  const filters = new URLSearchParams();
  for (const key of ["host", "tag", "path", "plan"]) {
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
    canOperate() ? el("p", { class: "controls" },
      el("button", { type: "button", onclick: () => startCheck(name).catch(showError) }, "Check"), " ",
      me.role === "admin" ? [el("button", { type: "button", onclick: () => startPrune(name).catch(showError) }, "Prune"), " "] : null,
      el("a", { href: restoreHref(name, {}) }, "Restore files…")) : null,
    el("p", {}, el("a", { href: `/repositories/${encodeURIComponent(name)}/timeline` }, "MongoDB timeline")),
    snapshots.length < 2 ? null : el("form", { method: "get", action: `${location.pathname}/compare`, class: "filters", "aria-label": "Compare" },
      field("From", select({ id: "compare-from", name: "from" }, snapshots.map(snapshotOption), snapshots[1].id)), " ",
      field("To", select({ id: "compare-to", name: "to" }, snapshots.map(snapshotOption), snapshots[0].id)), " ",
      el("button", { type: "submit" }, "Compare")),
    el("form", { method: "get", action: location.pathname, class: "filters" },
      input("host"), input("tag"), input("path"), input("plan"), el("button", { type: "submit" }, "Filter")),
    snapshots.length === 0 ? null : [el("h2", {}, "Over time"),
      el("div", { class: "chart-wrap" }, repositoryChart(snapshots))],
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

function snapshotOption(s) {
  return [s.id, `${s.short_id} · ${when(s.time)} · ${s.host} · ${s.paths.join(", ")}`];
}

const CHANGES_SHOWN = 1000;

// Two snapshots compared (the diff route): what was added, removed and changed.
async function comparePage(page, name) {
  const query = new URLSearchParams(location.search);
  const [from, to] = [query.get("from") || "", query.get("to") || ""];
  const base = `/api/v1/repositories/${encodeURIComponent(name)}`;
  const diff = await api("GET", `${base}/diff?${new URLSearchParams({ from, to })}`);
  const snap = (id) => el("a", { href: `/repositories/${encodeURIComponent(name)}/snapshots/${id}` }, id.slice(0, 8));
  const s = diff.summary;
  const section = (caption, kinds) => {
    const rows = diff.changes.filter((c) => kinds.includes(c.change));
    const shown = rows.slice(0, CHANGES_SHOWN);
    return [table(caption, ["Path", "Type", "Change", "Size before", "Size after"], shown.map((c) =>
      el("tr", {},
        el("td", {}, c.path),
        el("td", {}, c.type),
        el("td", {}, c.change === "metadata" ? `metadata: ${c.fields.join(", ")}` : c.change),
        el("td", {}, c.size_before === null ? "" : bytes(c.size_before)),
        el("td", {}, c.size_after === null ? "" : bytes(c.size_after))))),
    rows.length > shown.length ? el("p", {}, `and ${rows.length - shown.length} more`) : null];
  };
  fill(page,
    el("h1", {}, "Snapshots ", snap(diff.before), " and ", snap(diff.after), " of ", repoLink(name)),
    el("p", { id: "diff-summary" },
      `${s.files_added} files and ${s.dirs_added} directories added, ${s.files_removed} files and ${s.dirs_removed} directories removed, `,
      `${s.modified} modified, ${s.metadata} with other metadata; ${bytes(s.bytes_added)} added, ${bytes(s.bytes_removed)} removed`),
    section("Added", ["added"]),
    section("Removed", ["removed"]),
    section("Changed", ["modified", "metadata"]));
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
    canOperate() ? el("p", {}, el("a", { href: restoreHref(name, { snapshot: id, path: listing.path }) },
      `Restore ${listing.path}…`)) : null,
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

function restoreHref(name, params) {
  return `/repositories/${encodeURIComponent(name)}/restore?${new URLSearchParams(params)}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The operation `id` once it has ended, asked every quarter of a second.
async function ended(id) {
  for (;;) {
    const op = await api("GET", `/api/v1/operations/${id}`);
    if (op.status !== "running") return op;
    await sleep(250);
  }
}

// A labelled control: the label, then the control, in one grid row of the form.
function field(label, control) {
  return [el("label", { for: control.id }, label), control];
}

function select(attrs, options, chosen) {
  const node = el("select", attrs, options.map(([value, text]) => el("option", { value }, text)));
  if (chosen !== null && options.some(([value]) => value === chosen)) node.value = chosen;
  return node;
}

const PLANNED_SHOWN = 500;

// The restore wizard: which snapshot (prefilled from the page it was opened from), which
// path in it, into which directory of the service's host, what to do with existing entries;
// a dry run lists what would be written, and only then may the restore run, as an operation
// whose page shows it live. Changing anything asks for a new dry run.
async function restorePage(page, name) {
  if (!canOperate()) throw new Error("restoring needs the operate or admin role");
  const query = new URLSearchParams(location.search);
  const base = `/api/v1/repositories/${encodeURIComponent(name)}`;
  const snapshots = (await api("GET", `${base}/snapshots`)).reverse();
  let wanted = query.get("snapshot") || "latest";
  const match = snapshots.find((s) => s.id.startsWith(wanted));
  if (match) wanted = match.id;
  const snapshot = select({ id: "restore-snapshot", name: "snapshot" },
    [["latest", "latest"], ...snapshots.map(snapshotOption)],
    wanted);
  // Or a time: the newest snapshot taken at or before it is chosen.
  const before = el("input", { id: "restore-before", type: "datetime-local", step: "1", "aria-describedby": "before-state" });
  const found = el("span", { id: "before-state" }, "");
  before.addEventListener("input", () => {
    const time = Date.parse(before.value);
    const snap = Number.isNaN(time) ? null : snapshots.find((s) => Date.parse(s.time) <= time);
    if (snap) snapshot.value = snap.id;
    found.textContent = Number.isNaN(time) ? "" : snap ? `snapshot ${snap.short_id} of ${when(snap.time)}` : "no snapshot is that old";
  });
  const path = el("input", { id: "restore-path", name: "path", value: query.get("path") || "/" });
  const target = el("input", { id: "restore-target", name: "target", required: "", placeholder: "/absolute/directory" });
  const conflict = select({ id: "restore-conflict", name: "on_conflict" }, [
    ["fail", "fail: write nothing if anything exists"],
    ["skip", "skip: keep what exists"],
    ["overwrite", "overwrite what exists"],
    ["rename", "rename: write beside what exists"],
  ], "fail");
  const plan = el("section", { id: "plan", "aria-live": "polite" },
    el("p", {}, "Run a dry run to see what would be written."));
  const restore = el("button", { type: "submit", disabled: "" }, "Restore");
  const dry = el("button", { type: "button" }, "Dry run");
  const request = (dryRun) => ({
    snapshot: snapshot.value,
    path: path.value,
    target: target.value.trim(),
    on_conflict: conflict.value,
    dry_run: dryRun,
  });
  const form = el("form", { class: "wizard", "aria-label": "Restore" },
    field("Snapshot", snapshot),
    field("Or the newest snapshot before (local time)", before), el("span", {}), found,
    field("Path in the snapshot", path),
    field("Target directory", target),
    field("If an entry exists", conflict),
    el("div", { class: "buttons" }, dry, " ", restore));
  dryRunFirst({ form, plan, dry, restore, url: `${base}/restore`, request, what: "written" }, (report) => {
    showPlan(plan, report);
    return !report.planned.some((e) => e.action === "conflict");
  });
  fill(page,
    el("h1", {}, "Restore files from ", repoLink(name)),
    el("p", {}, "MongoDB databases and collections restore from the ",
      el("a", { href: `/repositories/${encodeURIComponent(name)}/timeline` }, "MongoDB timeline"),
      ", to any second it covers."),
    form,
    plan);
}

// The flow of a restore form, for files and for MongoDB: `Restore` is enabled only by a
// successful dry run of what the form holds, when `shown` (which draws the dry run's report)
// allows it, and any change to the form disables it again; the restore then runs as an
// operation, whose page the browser goes to.
function dryRunFirst({ form, plan, dry, restore, url, request, what }, shown) {
  const stale = () => {
    restore.disabled = true;
    fill(plan, el("p", {}, `Run a dry run to see what would be ${what}.`));
  };
  form.addEventListener("input", stale);
  form.addEventListener("change", stale);
  dry.addEventListener("click", () => (async () => {
    if (!form.reportValidity()) return;
    stale();
    dry.disabled = true;
    fill(plan, el("p", {}, "Dry run…"));
    try {
      const started = await api("POST", url, request(true));
      const op = await ended(started.operation);
      if (op.status !== "success") throw new Error(op.error || `the dry run ended ${op.status}`);
      restore.disabled = !shown(op.report);
    } finally {
      dry.disabled = false;
    }
  })().catch((e) => { fill(plan); showError(e); }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (restore.disabled) return;
    api("POST", url, request(false))
      .then((started) => location.assign(`/operations/${started.operation}`))
      .catch(showError);
  });
}

// What a dry run's report says would be written, in tree order.
function showPlan(node, report) {
  const count = (action) => report.planned.filter((e) => e.action === action).length;
  const conflicts = count("conflict");
  const written = report.planned.filter((e) => e.kind === "file" && (e.action === "write" || e.action === "rename"))
    .reduce((sum, e) => sum + e.size, 0);
  const shown = report.planned.slice(0, PLANNED_SHOWN);
  fill(node,
    el("h2", {}, "Dry run"),
    el("p", { id: "plan-summary" },
      `${report.files} files, ${report.dirs} directories, ${bytes(written)} would be written`,
      count("skip") ? `; ${count("skip")} kept as they are` : "",
      count("rename") ? `; ${count("rename")} written under a new name` : ""),
    conflicts ? el("p", { role: "alert" },
      `${conflicts} entries exist already: choose another target or what to do with them.`) : null,
    table("Would be written", ["Path", "Type", "Size", "Action", "Exists"], shown.map((e) =>
      el("tr", {},
        el("td", {}, e.path),
        el("td", {}, e.kind),
        el("td", {}, e.kind === "dir" ? "" : bytes(e.size)),
        el("td", {}, e.action),
        el("td", {}, e.existing ? "yes" : "no")))),
    report.planned.length > shown.length
      ? el("p", {}, `and ${report.planned.length - shown.length} more entries`) : null);
}

const SVG = "http://www.w3.org/2000/svg";

// An SVG element: drawn inline by this script, as every chart of the dashboard is (no
// chart library: the few shapes needed are lines and rectangles, and nothing may be
// fetched from a CDN; presentation attributes, not style attributes, which the pages'
// Content-Security-Policy forbids).
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...present(children));
  return node;
}

// A UTC second as RFC 3339, as the restore API takes a point in time.
function rfc3339(seconds) {
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

// `SECONDS:INCREMENT` or RFC 3339 text as seconds since the epoch (NaN when neither).
function parseAt(text) {
  const pair = text.trim().match(/^(\d+):(\d+)$/);
  if (pair) return Number(pair[1]);
  const ms = Date.parse(text.trim());
  return Number.isNaN(ms) ? NaN : Math.floor(ms / 1000);
}

const AXIS = { width: 800, left: 150, right: 20, row: 34, top: 10, bottom: 30 };

// Each server's recoverable windows (a snapshot and the archived oplog after it) and gaps on
// one time axis, snapshots marked; a click picks that second into `pick`.
function timelineChart(timeline, pick) {
  const servers = [...new Set([...timeline.windows, ...timeline.gaps].map((w) => w.server))].sort();
  const times = [...timeline.windows, ...timeline.gaps].flatMap((w) => [w.from.t, w.to.t]);
  const lo = Math.min(...times);
  const hi = Math.max(lo + 1, ...times);
  const span = AXIS.width - AXIS.left - AXIS.right;
  const x = (t) => AXIS.left + ((t - lo) / (hi - lo)) * span;
  const y = (server) => AXIS.top + servers.indexOf(server) * AXIS.row;
  const height = AXIS.top + servers.length * AXIS.row + AXIS.bottom;
  const cursor = svg("line", { class: "cursor", x1: -10, x2: -10, y1: AXIS.top, y2: height - AXIS.bottom,
    stroke: "#1d2430", "stroke-width": 2, "stroke-dasharray": "4 3" });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => lo + f * (hi - lo));
  // Times of day over less than a day, else dates and times (UTC, as the time field takes).
  const tick = (t) => new Date(t * 1000).toISOString().slice(hi - lo < 86400 ? 11 : 0, 19).replace("T", " ");
  const chart = svg("svg", {
    id: "timeline", viewBox: `0 0 ${AXIS.width} ${height}`, role: "img",
    "aria-label": `Recoverable windows and gaps from ${rfc3339(lo)} to ${rfc3339(Math.ceil(hi))}`,
  },
    servers.map((server) => svg("text", { x: 4, y: y(server) + 20, "font-size": 12, fill: "#1d2430" }, server)),
    timeline.windows.map((w) => svg("rect", {
      class: "window", "data-from": w.from.t, "data-to": w.to.t,
      x: x(w.from.t), y: y(w.server) + 6, width: Math.max(2, x(w.to.t) - x(w.from.t)), height: 20,
      fill: "#7cc68c", stroke: "#14532d",
    }, svg("title", {}, `recoverable ${rfc3339(w.from.t)} to ${rfc3339(w.to.t)} from snapshot ${w.snapshot.slice(0, 8)}`))),
    timeline.gaps.map((g) => svg("rect", {
      class: "gap", x: x(g.from.t), y: y(g.server) + 6, width: Math.max(2, x(g.to.t) - x(g.from.t)), height: 20,
      fill: "#f29b9b", stroke: "#7f1d1d",
    }, svg("title", {}, `gap (${g.kind.replace("_", " ")}) ${rfc3339(g.from.t)} to ${rfc3339(g.to.t)}`))),
    timeline.windows.map((w) => svg("path", {
      class: "snapshot", d: `M ${x(w.from.t)} ${y(w.server) + 2} l 6 -8 h -12 z`, fill: "#1e3a8a",
    }, svg("title", {}, `snapshot ${w.snapshot.slice(0, 8)} at ${rfc3339(w.from.t)}`))),
    svg("line", { x1: AXIS.left, x2: AXIS.width - AXIS.right, y1: height - AXIS.bottom, y2: height - AXIS.bottom, stroke: "#6b7280" }),
    ticks.map((t, i) => (i > 0 && tick(t) === tick(ticks[i - 1]) ? null : svg("text", {
      x: x(t), y: height - 10, "font-size": 11, fill: "#374151",
      "text-anchor": i === 0 ? "start" : i === ticks.length - 1 ? "end" : "middle",
    }, tick(t)))),
    cursor);
  const mark = (seconds) => {
    const at = Number.isNaN(seconds) || seconds < lo || seconds > hi ? -10 : x(seconds);
    cursor.setAttribute("x1", at);
    cursor.setAttribute("x2", at);
  };
  chart.addEventListener("click", (event) => {
    const box = chart.getBoundingClientRect();
    const at = ((event.clientX - box.left) / box.width) * AXIS.width;
    const seconds = Math.round(lo + ((at - AXIS.left) / span) * (hi - lo));
    pick(Math.min(Math.floor(hi), Math.max(Math.ceil(lo), seconds)));
  });
  return { chart, mark };
}

// Whether a restore to `seconds` is covered by a window (to the second: the oplog's
// entries of that second are all applied).
function recoverable(timeline, seconds) {
  return timeline.windows.some((w) => w.from.t <= seconds && seconds <= w.to.t);
}

// A repository's MongoDB timeline, and a point-in-time restore of a database or
// collection to a second picked on it.
async function timelinePage(page, name) {
  const base = `/api/v1/repositories/${encodeURIComponent(name)}`;
  const timeline = await api("GET", `${base}/timelines`);
  const heading = el("h1", {}, "MongoDB timeline of ", repoLink(name));
  if (timeline.windows.length === 0 && timeline.gaps.length === 0) {
    fill(page, heading, el("p", {}, "No MongoDB snapshots in this repository."));
    return;
  }
  const at = el("input", { id: "restore-at", name: "at", required: "", placeholder: "2026-01-31T12:00:00Z",
    "aria-describedby": "at-state" });
  const state = el("span", { id: "at-state" }, "");
  const { chart, mark } = timelineChart(timeline, (seconds) => {
    at.value = rfc3339(seconds);
    // As typing it would: the mark and state follow, and the form wants a new dry run.
    at.dispatchEvent(new Event("input", { bubbles: true }));
  });
  function update() {
    const seconds = parseAt(at.value);
    mark(seconds);
    if (at.value.trim() === "") state.textContent = "";
    else if (Number.isNaN(seconds)) state.textContent = "not a time";
    else state.textContent = recoverable(timeline, seconds) ? "recoverable" : "not recoverable: outside every window";
  }
  at.addEventListener("input", update);
  const servers = [...new Set(timeline.windows.map((w) => w.server))];
  const uri = el("input", { id: "restore-uri", name: "uri", required: "", autocomplete: "off",
    value: servers.length ? `mongodb://${servers[0]}/` : "" });
  const ns = el("input", { id: "restore-ns", name: "ns", required: "", placeholder: "db.collection or db.*" });
  const rename = el("input", { id: "restore-rename", name: "rename", placeholder: "other_db.* (optional)" });
  // From the time picked (a snapshot and the oplog after it), or from a snapshot alone.
  const snapshots = [...new Set(timeline.windows.map((w) => w.snapshot))];
  const source = select({ id: "restore-from", name: "from" }, [["at", "the time picked"],
    ...snapshots.map((id) => [id, `snapshot ${id.slice(0, 8)} alone`])], "at");
  source.addEventListener("change", () => {
    at.required = source.value === "at";
    at.disabled = source.value !== "at";
  });
  const mode = select({ id: "restore-mode", name: "mode" }, [
    ["insert", "insert: fail on existing _id"],
    ["upsert", "upsert: replace existing documents"],
    ["skip_existing", "skip existing documents"],
  ], "insert");
  const drop = el("input", { id: "restore-drop", name: "drop", type: "checkbox" });
  const plan = el("section", { id: "plan", "aria-live": "polite" },
    el("p", {}, "Run a dry run to see what would be restored."));
  const dry = el("button", { type: "button" }, "Dry run");
  const restore = el("button", { type: "submit", disabled: "" }, "Restore");
  const form = el("form", { class: "wizard", "aria-label": "Restore MongoDB" },
    field("Restore from", source),
    field("Time (UTC, RFC 3339 or SECONDS:INCREMENT)", at), el("span", {}), state,
    field("Into the server (URI)", uri),
    field("Database or collection", ns),
    field("Restore as", rename),
    field("Existing documents", mode),
    field("Drop each collection first", drop),
    el("div", { class: "buttons" }, dry, " ", restore));
  const request = (dryRun) => {
    const from = ns.value.trim();
    return {
      uri: uri.value.trim(),
      ...(source.value === "at" ? { at: at.value.trim() } : { snapshot: source.value }),
      include: [from],
      renames: rename.value.trim() ? [{ from, to: rename.value.trim() }] : [],
      mode: mode.value,
      drop: drop.checked,
      dry_run: dryRun,
    };
  };
  dryRunFirst({ form, plan, dry, restore, url: `${base}/restore/mongo`, request, what: "restored" }, (report) => {
    showMongoPlan(plan, report, source.value === "at");
    return true;
  });
  fill(page,
    heading,
    el("p", {}, "Green: recoverable to any second (a snapshot, marked ▼, and the archived oplog after it). Red: gaps. Click to pick a second."),
    el("div", { class: "chart-wrap" }, chart),
    table("Windows", ["Server", "Snapshot", "From", "To"], timeline.windows.map((w) =>
      el("tr", {},
        el("td", {}, w.server),
        el("td", {}, el("a", { href: `/repositories/${encodeURIComponent(name)}/snapshots/${w.snapshot}` }, w.snapshot.slice(0, 8))),
        el("td", {}, rfc3339(w.from.t)),
        el("td", {}, rfc3339(w.to.t))))),
    timeline.gaps.length ? table("Gaps", ["Server", "Kind", "From", "To"], timeline.gaps.map((g) =>
      el("tr", {},
        el("td", {}, g.server),
        el("td", {}, g.kind.replace("_", " ")),
        el("td", {}, rfc3339(g.from.t)),
        el("td", {}, rfc3339(g.to.t))))) : null,
    canOperate() ? [el("h2", {}, "Restore MongoDB"), form, plan] : null);
}

// What a MongoDB dry run's report says would be restored: the collections, by the names
// they would get (the dry run also found none of them holding documents the restore would
// collide with, or it would have failed).
function showMongoPlan(node, report, pointInTime) {
  const m = report.mongodb;
  fill(node,
    el("h2", {}, "Dry run"),
    el("p", { id: "plan-summary" },
      `From snapshot ${report.snapshot_id.slice(0, 8)}${pointInTime ? " and the oplog after it" : ""}, `,
      `${m.namespaces.length} collections would be restored into ${report.target}.`),
    table("Would be restored", ["Collection"], m.namespaces.map((n) => el("tr", {}, el("td", {}, n.ns)))));
}

// The plan's backup runs that ended, oldest first, with what the charts draw of each.
function runSeries(history) {
  return history.filter((op) => op.kind === "backup" && op.ended).reverse().map((op) => {
    const s = op.report && op.report.summary;
    return {
      op,
      seconds: (new Date(op.ended) - new Date(op.started)) / 1000,
      added: s ? s.bytes_added : null,
      files: s ? s.total_files : null,
    };
  });
}

// A line of `values` (null where a run has none) in a box of `width` × `height`, a circle
// per value, each titled by `label`.
function line(values, width, height, pad, label) {
  const max = Math.max(0, ...values.filter((v) => v !== null));
  const step = values.length > 1 ? (width - 2 * pad) / (values.length - 1) : 0;
  const x = (i) => (values.length > 1 ? pad + i * step : width / 2);
  const y = (v) => height - pad - (max > 0 ? (v / max) * (height - 2 * pad) : 0);
  const points = values.map((v, i) => (v === null ? null : [x(i), y(v), i]));
  const drawn = points.filter((p) => p !== null);
  return [
    drawn.length > 1 ? svg("polyline", {
      points: drawn.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" "),
      fill: "none", stroke: "#2f6fd0", "stroke-width": 1.5,
    }) : null,
    drawn.map(([px, py, i]) => svg("circle", { class: "point", cx: px.toFixed(1), cy: py.toFixed(1), r: 2.5, fill: "#1e3a8a" },
      svg("title", {}, label(i)))),
  ];
}

function seconds(n) {
  return `${n.toFixed(1)} s`;
}

// A sparkline of the recent runs' `pick` for the overview.
function sparkline(runs, pick, show, what) {
  const values = runs.map(pick);
  const known = values.filter((v) => v !== null);
  const text = known.length ? `${what} of the last ${runs.length} runs, latest ${show(known[known.length - 1])}` : `no ${what} yet`;
  return svg("svg", { class: "sparkline", viewBox: "0 0 100 24", width: 100, height: 24, role: "img", "aria-label": text },
    svg("title", {}, text),
    line(values, 100, 24, 3, (i) => `${when(runs[i].op.started)}: ${values[i] === null ? "none" : show(values[i])}`));
}

// A chart of `items` (oldest first) with one band per series `[name, pick, show]`, each on
// its own scale, a point per item that has a value; `title(item)` names an item.
function bandsChart(id, label, items, series, title) {
  const width = 600;
  const band = 70;
  return svg("svg", { id, viewBox: `0 0 ${width} ${band * series.length}`, role: "img", "aria-label": label },
    series.map(([name, pick, show], k) => {
      const values = items.map(pick);
      const max = Math.max(0, ...values.filter((v) => v !== null));
      return svg("g", { class: "series", "data-series": name, transform: `translate(0 ${k * band})` },
        svg("rect", { x: 0, y: 0, width, height: band - 6, fill: "#fff", stroke: "#dde1e6" }),
        svg("text", { x: 6, y: 15, "font-size": 12, fill: "#1d2430" }, `${name} (max ${show(max)})`),
        svg("g", { transform: "translate(120 0)" },
          line(values, width - 130, band - 6, 8, (i) => `${title(items[i])}: ${values[i] === null ? "none" : show(values[i])}`)));
    }));
}

// The plan page's history chart: duration, bytes added and files of each run.
function historyChart(runs) {
  return bandsChart("history-chart", `Duration, bytes added and files of the last ${runs.length} runs`, runs, [
    ["Duration", (r) => r.seconds, seconds],
    ["Bytes added", (r) => r.added, bytes],
    ["Files", (r) => r.files, String],
  ], (r) => `run #${r.op.id}, ${when(r.op.started)}`);
}

const CHARTED_SNAPSHOTS = 100;

// The repository page's stats over time, from its snapshots' summaries (the service records
// no history of the repository's size): each snapshot's size, the bytes it added, and those
// added since the first charted (what the repository grew by, before any prune).
function repositoryChart(newestFirst) {
  const snaps = newestFirst.slice(0, CHARTED_SNAPSHOTS).reverse();
  let sum = 0;
  const items = snaps.map((s) => ({ s, grown: s.summary ? (sum += s.summary.bytes_added) : null }));
  const of = (pick) => (item) => (item.s.summary ? pick(item.s.summary) : null);
  return bandsChart("repository-chart", `Size, bytes added and growth of the last ${snaps.length} snapshots`, items, [
    ["Snapshot size", of((m) => m.total_bytes), bytes],
    ["Bytes added", of((m) => m.bytes_added), bytes],
    ["Added in total", (item) => item.grown, bytes],
  ], (item) => `${item.s.short_id}, ${when(item.s.time)}`);
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
  const rate = el("span", { id: "rate" }, "");
  const item = el("span", { id: "item" }, "");
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
    el("p", { class: "current" }, "Rate: ", rate, " · Now: ", item),
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
  // The rate: bytes read (or, for a restore, written) per second over the last few seconds.
  const samples = [];
  on("progress", (c) => {
    counters.textContent = `${c.files} files, ${bytes(c.bytes_read)} read, ${bytes(c.bytes_added)} added`;
    const moved = op.kind === "restore" ? c.bytes_added : c.bytes_read;
    const now = Date.now();
    samples.push([now, moved]);
    while (samples.length > 2 && now - samples[0][0] > 5000) samples.shift();
    const [then, before] = samples[0];
    if (now > then) rate.textContent = `${bytes(((moved - before) * 1000) / (now - then))}/s`;
    if (c.item) item.textContent = c.item;
    if (c.total_bytes_added) {
      bar.max = c.total_bytes_added;
      bar.value = Math.min(c.bytes_added, c.total_bytes_added);
    } else if (c.total_files) {
      bar.max = c.total_files;
      bar.value = Math.min(c.files, c.total_files);
    }
  });
  on("log", (line) => { log.append(`${line}\n`); });
  on("error", (e) => { errors.append(el("li", {}, `${e.path}: ${e.message}`)); });
  on("report", (end) => {
    events.close();
    bar.max = 1;
    bar.value = 1;
    phase.textContent = "ended";
    item.textContent = "";
    fill(status, badge(end.status));
    if (cancel) cancel.remove();
    const reported = end.report && Object.keys(end.report).length > 0;
    fill(report, el("h2", {}, "Report"),
      end.error ? el("p", { role: "alert" }, end.error) : null,
      reported ? reportList(end.report, { id: "report" }) : null,
      end.error || reported ? null : el("p", {}, `No report: the operation ended ${end.status}.`));
  });
}

async function route() {
  const page = document.getElementById("page");
  const path = location.pathname;
  const plan = path.match(/^\/plans\/([^/]+)$/);
  const operation = path.match(/^\/operations\/(\d+)$/);
  const repository = path.match(/^\/repositories\/([^/]+)$/);
  const snapshot = path.match(/^\/repositories\/([^/]+)\/snapshots\/([^/]+)$/);
  const restore = path.match(/^\/repositories\/([^/]+)\/restore$/);
  const timeline = path.match(/^\/repositories\/([^/]+)\/timeline$/);
  const compare = path.match(/^\/repositories\/([^/]+)\/compare$/);
  if (plan) await planPage(page, decodeURIComponent(plan[1]));
  else if (repository) await repositoryPage(page, decodeURIComponent(repository[1]));
  else if (snapshot) await treePage(page, decodeURIComponent(snapshot[1]), decodeURIComponent(snapshot[2]));
  else if (operation) await operationPage(page, operation[1]);
  else if (restore) await restorePage(page, decodeURIComponent(restore[1]));
  else if (timeline) await timelinePage(page, decodeURIComponent(timeline[1]));
  else if (compare) await comparePage(page, decodeURIComponent(compare[1]));
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
