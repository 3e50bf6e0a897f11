"""Drives the dashboard of a running `strata serve` in headless Chromium (tests/cli_dashboard.rs).

Arguments: BASE_URL READ_TOKEN OPERATE_TOKEN PLAN OUT_DIR. Asserts, screenshots every page
into OUT_DIR, and exits non-zero with the reason on the first failure. Prints the finished
run's operation id on success.
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


def main(base, read_token, operate_token, plan, out):
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        try:
            read_session(browser, base, read_token, plan, out, problems)
            operation = operate_session(browser, base, operate_token, plan, out, problems)
        finally:
            browser.close()
    if problems:
        sys.exit("console errors:\n" + "\n".join(problems))
    print(operation)


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
    log_in(page, base, token)
    expect(plan_row(page, plan)).to_contain_text(plan)
    expect(plan_row(page, plan).locator(".status").first).to_have_text("never")
    expect(page.get_by_text("(read)")).to_be_visible()
    if page.get_by_role("button", name="Run now").count() != 0:
        sys.exit("a read session is shown a Run now button")
    shot(page, out, "overview-read")
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


def operate_session(browser, base, token, plan, out, problems):
    page = new_page(browser, problems)
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
    page.goto(base + "/")
    expect(plan_row(page, plan)).to_contain_text(f"#{operation}")
    expect(plan_row(page, plan).locator(".status").first).to_have_text("ok")
    page.context.close()
    return operation


if __name__ == "__main__":
    main(*sys.argv[1:6])
