"""Drives the dashboard of a running `strata serve` in headless Chromium (tests/cli_dashboard.rs).

Arguments: SCENARIO OUT_DIR BASE_URL, then the scenario's:
- `run` READ_TOKEN OPERATE_TOKEN PLAN FILE MANY: a read session sees the plan and no Run now
  button; an operate session runs it now, follows it to its end, finds it in the plan's
  history, pauses and resumes the plan, then opens the snapshot from the repository's page,
  walks its tree down to the backed-up FILE and downloads it into OUT_DIR/download.bin, and
  pages through the directory MANY (250 entries). Prints the run's operation id.
- `cancel` OPERATE_TOKEN PLAN: runs the plan now and cancels the run from its operation page
  once it shows progress. Prints the run's operation id.
- `failing` READ_TOKEN PLAN: the plan, whose last run failed, shows as failing.
Asserts, screenshots every page into OUT_DIR, fails on any console error, and exits non-zero
with the reason on the first failure.
"""
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
                browse_snapshot(page, file, many, out)
                page.context.close()
            elif scenario == "failing":
                printed = failing(browser, base, *args, out, problems)
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
    shot(page, out, "plan")
    status = page.locator("dd .status")
    page.get_by_role("button", name="Pause").click()
    expect(status).to_have_text("paused")
    page.get_by_role("button", name="Resume").click()
    expect(status).to_have_text("ok")
    page.goto(base + "/")
    expect(plan_row(page, plan)).to_contain_text(f"#{operation}")
    expect(plan_row(page, plan).locator(".status").first).to_have_text("ok")
    return operation


def browse_snapshot(page, file, many, out):
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
    if page.locator("#op-status").inner_text() != "running":
        sys.exit("the backup ended before it could be cancelled: make its data larger")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#op-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    shot(page, out, "operation-cancelled")
    page.context.close()
    return operation


if __name__ == "__main__":
    main(*sys.argv[1:])
