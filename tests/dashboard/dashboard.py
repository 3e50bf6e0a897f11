"""Drives the dashboard of a running `strata serve` in headless Chromium (tests/cli_dashboard.rs).

Arguments: SCENARIO OUT_DIR BASE_URL, then the scenario's:
- `run` READ_TOKEN OPERATE_TOKEN PLAN FILE MANY: a read session sees the plan and no Run now
  button; an operate session runs it now, follows it to its end, finds it in the plan's
  history table and chart (a point per run), pauses and resumes the plan, sees the run's
  point in the overview's sparklines, then opens the snapshot from the repository's page,
  walks its tree down to the backed-up FILE and downloads it into OUT_DIR/download.bin, and
  pages through the directory MANY (250 entries). Prints the run's operation id.
- `cancel` OPERATE_TOKEN PLAN: runs the plan now and cancels the run from its operation page
  once it shows progress (counters, a rate and the path being read). Prints the run's operation id.
- `failing` READ_TOKEN PLAN: the plan, whose last run failed, shows as failing, and its
  failure alert is among the recent alerts.
- `restore` READ_TOKEN OPERATE_TOKEN REPOSITORY DIR TARGET: a read session is shown no way to
  restore; an operate session opens the repository's one snapshot, walks its tree to DIR, opens
  the restore wizard from there (snapshot and path prefilled; a time picks the newest snapshot
  before it), asks for a dry run into TARGET
  (listed, nothing written), then restores and follows the operation to its success. Prints its
  id.
- `compare` READ_TOKEN ADMIN_TOKEN REPOSITORY ADDED REMOVED CHANGED: a read session (shown no
  Check or Prune) sees a point per snapshot in the repository's chart, and compares the repository's two snapshots from its page: ADDED, REMOVED and
  CHANGED (paths) are in the Added, Removed and Changed tables. An admin session runs Check
  from the repository's page (its result shows there after) and Prune, then screenshots the
  overview with two runs in its sparklines (OUT_DIR/overview-runs.png, docs/dashboard-overview.png).
- `timeline` OPERATE_TOKEN REPOSITORY SECONDS URI NAMESPACE RENAME RENAME_SNAPSHOT: the repository's MongoDB
  timeline shows a recoverable window with its snapshot marked; a click on it picks a second;
  SECONDS (UTC, since the epoch) is then picked in the time field, and NAMESPACE restored to it
  as RENAME into URI: a dry run first (listing RENAME's collections), then the restore,
  followed to its success. Then NAMESPACE from the snapshot alone (no time) as RENAME_SNAPSHOT,
  dry run first. Prints the two operations' ids.
Asserts, screenshots every page into OUT_DIR, fails on any console error, and exits non-zero
with the reason on the first failure.
"""
import datetime
import os
import re
import sys

from playwright.sync_api import expect, sync_playwright

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Waits for the service, in milliseconds: a run of the small test plan ends well within.
PATIENCE = 90_000


def main(scenario, out, base, *args):
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        try:
            if scenario == "run":
                read_token, operate_token, plan, file, many = args
                read_session(browser, base, read_token, plan, out, problems)
                page = new_page(browser, problems)
                printed = operate_session(page, base, operate_token, plan, out)
                browse_snapshot(page, plan, file, many, out)
                page.context.close()
            elif scenario == "failing":
                printed = failing(browser, base, *args, out, problems)
            elif scenario == "restore":
                printed = restore(browser, base, *args, out, problems)
            elif scenario == "compare":
                printed = compare(browser, base, *args, out, problems)
            elif scenario == "timeline":
                printed = timeline(browser, base, *args, out, problems)
            elif scenario == "cancel":
                printed = cancel(browser, base, *args, out, problems)
            else:
                sys.exit(f"no scenario {scenario!r}")
        finally:
            browser.close()
    if problems:
        sys.exit("console errors:\n" + "\n".join(problems))
    print(printed)


def new_page(browser, problems):
    """A page in a fresh context (no cookies), its console errors and uncaught exceptions
    collected in `problems`."""
    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    page.set_default_timeout(PATIENCE)
    page.on("console", lambda m: m.type == "error" and problems.append(f"{page.url}: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"{page.url}: {e}"))
    return page


def shot(page, out, name):
    """Asserts the page shows no value the script failed to turn into text; saves its
    screenshot as OUT/NAME.png."""
    expect(page.locator("body")).not_to_have_text(re.compile(r"\b(null|undefined|NaN)\b|\[object"))
    page.screenshot(path=f"{out}/{name}.png", full_page=True)


def log_in(page, base, token):
    page.goto(base + "/")
    expect(page).to_have_url(base + "/login")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(base + "/")


def plan_row(page, plan):
    return page.get_by_role("table", name="Plans").locator(f'tr[data-plan="{plan}"]')


def read_session(browser, base, token, plan, out, problems):
    page = new_page(browser, problems)
    page.goto(base + "/")
    expect(page).to_have_url(base + "/login")
    shot(page, out, "login")
    # By keyboard alone: the first Tab reaches the Token field, Enter logs in.
    page.keyboard.press("Tab")
    expect(page.get_by_label("Token")).to_be_focused()
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page).to_have_url(base + "/")
    expect(plan_row(page, plan)).to_contain_text(plan)
    expect(plan_row(page, plan).locator(".status").first).to_have_text("never")
    expect(page.get_by_text("(read)")).to_be_visible()
    if page.get_by_role("button", name="Run now").count() != 0:
        sys.exit("a read session is shown a Run now button")
    shot(page, out, "overview-read")
    # On a phone-sized screen the page itself does not scroll sideways (wide tables do).
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    if overflow > 0:
        sys.exit(f"the overview is {overflow} px wider than a phone's screen")
    shot(page, out, "overview-phone")
    # The server refuses a run to a read session even with its CSRF token.
    # (Asked with the page's cookies outside the page, whose console would show the 403.)
    me = page.request.get(base + "/session").json()
    answer = page.request.post(f"{base}/api/v1/plans/{plan}/run", headers={"X-CSRF-Token": me["csrf"]})
    status = answer.status
    if status != 403:
        sys.exit(f"a read session's run was answered {status}, not 403")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(base + "/login")
    page.goto(base + "/")
    expect(page).to_have_url(base + "/login")
    page.context.close()


def operate_session(page, base, token, plan, out):
    log_in(page, base, token)
    row = plan_row(page, plan)
    expect(row).to_contain_text(plan)
    shot(page, out, "overview")
    row.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(re.compile(re.escape(base) + r"/operations/\d+$"))
    operation = page.url.rsplit("/", 1)[1]
    expect(page.locator("#op-status")).to_have_text("success", timeout=PATIENCE)
    bar = page.get_by_role("progressbar", name="Progress")
    expect(bar).to_have_attribute("value", "1")
    expect(bar).to_have_attribute("max", "1")
    expect(page.locator("#report")).to_be_visible()
    shot(page, out, "operation")
    page.get_by_role("link", name=f"Plan {plan}").click()
    expect(page).to_have_url(f"{base}/plans/{plan}")
    run = page.get_by_role("table", name="History").locator(f'tr[data-operation="{operation}"]')
    expect(run).to_contain_text("success")
    expect(run.locator("td").nth(4)).to_have_text(re.compile(r"^[1-9]\d*$"))
    # The history chart: one point per run that ended, in each of its three series.
    runs = page.get_by_role("table", name="History").locator("tbody tr").count()
    chart = page.get_by_role("img", name=re.compile("Duration, bytes added and files"))
    expect(chart).to_be_visible()
    for series in ["Duration", "Bytes added", "Files"]:
        expect(chart.locator(f'g[data-series="{series}"] circle.point')).to_have_count(runs)
    shot(page, out, "plan")
    page.set_viewport_size({"width": 390, "height": 844})
    no_sideways_scroll(page, "the plan page")
    page.set_viewport_size({"width": 1200, "height": 900})
    status = page.locator("dd .status")
    page.get_by_role("button", name="Pause").click()
    expect(status).to_have_text("paused")
    page.get_by_role("button", name="Resume").click()
    expect(status).to_have_text("ok")
    page.goto(base + "/")
    expect(plan_row(page, plan)).to_contain_text(f"#{operation}")
    # The repository's deduplication and compression, from its snapshots after the run.
    repository = page.get_by_role("table", name="Repositories").locator("tbody tr").first
    for ratio in [".dedup", ".compression"]:
        expect(repository.locator(ratio)).to_have_text(re.compile(r"^\d+\.\d×$"))
    expect(plan_row(page, plan).locator(".status").first).to_have_text("ok")
    # The overview's sparklines have a point for the run.
    for cell in ["spark-duration", "spark-added"]:
        expect(plan_row(page, plan).locator(f"td.{cell} svg circle.point")).to_have_count(1)
    return operation


def browse_snapshot(page, plan, file, many, out):
    """From the overview: the repository, its one snapshot (and none for another host), FILE
    downloaded, MANY paged."""
    page.get_by_role("table", name="Repositories").get_by_role("link").first.click()
    snapshots = page.get_by_role("table", name="Snapshots").locator("tbody tr")
    expect(snapshots).to_have_count(1)
    expect(page.locator(".range")).to_have_text("1–1 of 1")
    shot(page, out, "repository")
    page.get_by_label("host", exact=True).fill("no-such-host")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(".range")).to_have_text("none of 0")
    page.go_back()
    expect(snapshots).to_have_count(1)
    # The plan's runs tag their snapshots, by which the list filters.
    expect(snapshots).to_contain_text(f"plan:{plan}")
    for name, shown in [("no-such-plan", "none of 0"), (plan, "1–1 of 1")]:
        page.get_by_label("plan", exact=True).fill(name)
        page.get_by_role("button", name="Filter").click()
        expect(page.locator(".range")).to_have_text(shown)
    page.go_back()
    page.go_back()
    expect(snapshots).to_have_count(1)
    snapshots.get_by_role("link").click()
    entries = page.get_by_role("table", name="Entries")
    *dirs, name = file.strip("/").split("/")
    for part in dirs:
        entries.get_by_role("link", name=f"{part}/", exact=True).click()
    expect(page.get_by_role("navigation", name="Path")).to_contain_text(dirs[-1])
    shot(page, out, "tree")
    with page.expect_download() as download:
        entries.get_by_role("link", name=name, exact=True).click()
    download.value.save_as(f"{out}/download.bin")
    page.goto(page.url.split("?")[0] + "?path=" + many)
    expect(page.locator(".range")).to_have_text("1–200 of 250")
    page.get_by_role("link", name="Next page").click()
    expect(page.locator(".range")).to_have_text("201–250 of 250")
    expect(entries.get_by_role("link", name="f249", exact=True)).to_be_visible()


def failing(browser, base, token, plan, out, problems):
    page = new_page(browser, problems)
    log_in(page, base, token)
    row = plan_row(page, plan)
    expect(row.locator(".status").first).to_have_text("failing")
    expect(row.locator(".status").nth(1)).to_have_text("failed")
    alerts = page.get_by_role("table", name="Recent alerts")
    expect(alerts).to_contain_text("failure")
    expect(alerts).to_contain_text(f"plan {plan} failed")
    shot(page, out, "overview-failing")
    page.context.close()
    return plan


def cancel(browser, base, token, plan, out, problems):
    page = new_page(browser, problems)
    log_in(page, base, token)
    plan_row(page, plan).get_by_role("button", name="Run now").click()
    expect(page).to_have_url(re.compile(re.escape(base) + r"/operations/\d+$"))
    operation = page.url.rsplit("/", 1)[1]
    expect(page.locator("#counters")).to_contain_text("files")
    # The rate and the path being read, from the progress events.
    expect(page.locator("#rate")).to_contain_text("/s")
    expect(page.locator("#item")).to_contain_text("/")
    if page.locator("#op-status").inner_text() != "running":
        sys.exit("the backup ended before it could be cancelled: make its data larger")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#op-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    shot(page, out, "operation-cancelled")
    page.context.close()
    return operation


def walk_to(page, path):
    """From a snapshot's root directory, down the directory links to PATH."""
    entries = page.get_by_role("table", name="Entries")
    for part in path.strip("/").split("/"):
        entries.get_by_role("link", name=f"{part}/", exact=True).click()
    expect(page.get_by_role("navigation", name="Path")).to_contain_text(path.strip("/").split("/")[-1])


def restore(browser, base, read_token, token, repository, directory, target, out, problems):
    page = new_page(browser, problems)
    log_in(page, base, read_token)
    page.goto(f"{base}/repositories/{repository}")
    expect(page.get_by_role("table", name="Snapshots").locator("tbody tr")).to_have_count(1)
    if page.get_by_role("link", name=re.compile("Restore")).count() != 0:
        sys.exit("a read session is offered a restore")
    page.context.close()

    page = new_page(browser, problems)
    log_in(page, base, token)
    page.goto(f"{base}/repositories/{repository}")
    expect(page.get_by_role("link", name="Restore files…")).to_be_visible()
    page.get_by_role("table", name="Snapshots").get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/snapshots/[0-9a-f]+$"))
    snapshot = page.url.rsplit("/", 1)[1]
    walk_to(page, directory)
    page.get_by_role("link", name=f"Restore {directory}…").click()
    expect(page).to_have_url(re.compile(re.escape(f"{base}/repositories/{repository}/restore?")))
    expect(page.get_by_label("Snapshot", exact=True)).to_have_value(snapshot)
    expect(page.get_by_label("Path in the snapshot")).to_have_value(directory)
    # A time chooses the newest snapshot taken before it.
    before = page.get_by_label("Or the newest snapshot before (local time)")
    before.fill("2000-01-01T00:00:00")
    expect(page.locator("#before-state")).to_have_text("no snapshot is that old")
    before.fill("2099-01-01T00:00:00")
    expect(page.locator("#before-state")).to_contain_text(f"snapshot {snapshot[:8]}")
    expect(page.get_by_label("Snapshot", exact=True)).to_have_value(snapshot)
    restore_button = page.get_by_role("button", name="Restore", exact=True)
    expect(restore_button).to_be_disabled()
    page.get_by_label("Target directory").fill(target)
    page.get_by_label("If an entry exists").select_option("fail")
    page.get_by_role("button", name="Dry run").click()
    planned = page.get_by_role("table", name="Would be written").locator("tbody tr")
    expect(planned.first).to_be_visible()
    expect(page.locator("#plan-summary")).to_contain_text("would be written")
    if planned.count() < 2:
        sys.exit(f"the dry run lists {planned.count()} entries")
    expect(planned.first).to_contain_text("write")
    if os.path.exists(target):
        sys.exit("the dry run wrote the target")
    expect(restore_button).to_be_enabled()
    shot(page, out, "restore")
    # A change of the form asks for a new dry run before a restore.
    page.get_by_label("If an entry exists").select_option("skip")
    expect(restore_button).to_be_disabled()
    page.get_by_label("If an entry exists").select_option("fail")
    page.get_by_role("button", name="Dry run").click()
    expect(restore_button).to_be_enabled()
    restore_button.click()
    expect(page).to_have_url(re.compile(re.escape(base) + r"/operations/\d+$"))
    operation = page.url.rsplit("/", 1)[1]
    expect(page.locator("#op-status")).to_have_text("success")
    expect(page.locator("#report")).to_be_visible()
    shot(page, out, "restore-operation")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/repositories/{repository}/restore?snapshot={snapshot}")
    expect(page.get_by_label("Target directory")).to_be_visible()
    no_sideways_scroll(page, "the restore wizard")
    page.context.close()
    return operation


def compare(browser, base, read_token, admin_token, repository, added, removed, changed, out, problems):
    page = new_page(browser, problems)
    log_in(page, base, read_token)
    page.goto(f"{base}/repositories/{repository}")
    expect(page.get_by_role("table", name="Snapshots").locator("tbody tr")).to_have_count(2)
    chart = page.get_by_role("img", name=re.compile("Size, bytes added and growth"))
    for series in ["Snapshot size", "Bytes added", "Added in total"]:
        expect(chart.locator(f'g[data-series="{series}"] circle.point')).to_have_count(2)
    for button in ["Check", "Prune"]:
        if page.get_by_role("button", name=button).count() != 0:
            sys.exit(f"a read session is shown {button}")
    page.get_by_role("button", name="Compare").click()
    expect(page).to_have_url(re.compile(re.escape(f"{base}/repositories/{repository}/compare?")))
    for caption, path in [("Added", added), ("Removed", removed), ("Changed", changed)]:
        expect(page.get_by_role("table", name=caption)).to_contain_text(path)
    expect(page.get_by_role("table", name="Added")).not_to_contain_text(removed)
    expect(page.locator("#diff-summary")).to_contain_text("1 modified")
    shot(page, out, "compare")
    page.set_viewport_size({"width": 390, "height": 844})
    no_sideways_scroll(page, "the comparison")
    page.context.close()

    page = new_page(browser, problems)
    log_in(page, base, admin_token)
    page.goto(f"{base}/repositories/{repository}")
    page.get_by_role("button", name="Check").click()
    expect(page).to_have_url(re.compile(re.escape(base) + r"/operations/\d+$"))
    expect(page.locator("#op-status")).to_have_text("success")
    page.goto(f"{base}/repositories/{repository}")
    expect(page.locator("dd .status")).to_have_text("ok")
    page.get_by_role("button", name="Prune").click()
    expect(page).to_have_url(re.compile(re.escape(base) + r"/operations/\d+$"))
    expect(page.locator("#op-status")).to_have_text("success")
    expect(page.get_by_role("heading", level=1)).to_contain_text("prune")
    # The overview after two runs, a check and a prune (the README's picture).
    page.goto(base + "/")
    expect(page.get_by_role("table", name="Plans").locator("td.spark-duration circle.point")).to_have_count(2)
    shot(page, out, "overview-runs")
    page.context.close()
    return "ok"


def no_sideways_scroll(page, what):
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    if overflow > 0:
        sys.exit(f"{what} is {overflow} px wider than a phone's screen")


def timeline(browser, base, token, repository, seconds, uri, namespace, rename, rename_snapshot, out, problems):
    page = new_page(browser, problems)
    log_in(page, base, token)
    page.goto(f"{base}/repositories/{repository}")
    page.get_by_role("link", name="MongoDB timeline").click()
    expect(page).to_have_url(f"{base}/repositories/{repository}/timeline")
    chart = page.get_by_role("img", name=re.compile("Recoverable windows"))
    expect(chart).to_be_visible()
    window = chart.locator("rect.window").first
    expect(window).to_be_visible()
    if chart.locator("path.snapshot").count() < 1:
        sys.exit("no snapshot is marked on the timeline")
    at = page.get_by_label("Time (UTC, RFC 3339 or SECONDS:INCREMENT)")
    # A click in a window picks a recoverable second of it.
    window.click()
    expect(at).to_have_value(re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"))
    expect(page.locator("#at-state")).to_have_text("recoverable")
    when = datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    at.fill(when)
    expect(page.locator("#at-state")).to_have_text("recoverable")
    page.get_by_label("Into the server (URI)").fill(uri)
    page.get_by_label("Database or collection").fill(namespace)
    page.get_by_label("Restore as").fill(rename)
    page.get_by_label("Existing documents").select_option("insert")
    restore_button = page.get_by_role("button", name="Restore", exact=True)
    expect(restore_button).to_be_disabled()
    page.get_by_role("button", name="Dry run").click()
    would = page.get_by_role("table", name="Would be restored")
    expect(would).to_contain_text(rename.removesuffix("*"))
    expect(page.locator("#plan-summary")).to_contain_text("would be restored")
    expect(restore_button).to_be_enabled()
    shot(page, out, "timeline")
    page.set_viewport_size({"width": 390, "height": 844})
    no_sideways_scroll(page, "the timeline page")
    page.set_viewport_size({"width": 1200, "height": 900})
    restore_button.click()
    expect(page).to_have_url(re.compile(re.escape(base) + r"/operations/\d+$"))
    operation = page.url.rsplit("/", 1)[1]
    expect(page.locator("#op-status")).to_have_text("success")
    shot(page, out, "timeline-operation")
    # From the snapshot alone: no time asked for.
    page.goto(f"{base}/repositories/{repository}/timeline")
    page.get_by_label("Restore from").select_option(index=1)
    expect(at).to_be_disabled()
    page.get_by_label("Into the server (URI)").fill(uri)
    page.get_by_label("Database or collection").fill(namespace)
    page.get_by_label("Restore as").fill(rename_snapshot)
    page.get_by_role("button", name="Dry run").click()
    expect(page.get_by_role("table", name="Would be restored")).to_contain_text(rename_snapshot.removesuffix("*"))
    expect(page.locator("#plan-summary")).not_to_contain_text("oplog")
    restore_button.click()
    expect(page).to_have_url(re.compile(re.escape(base) + r"/operations/\d+$"))
    from_snapshot = page.url.rsplit("/", 1)[1]
    expect(page.locator("#op-status")).to_have_text("success")
    page.context.close()
    return f"{operation} {from_snapshot}"


if __name__ == "__main__":
    main(*sys.argv[1:])
