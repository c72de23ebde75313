"""The web console in a real browser: Playwright drives Debian's chromium against a real server,
agent and workload (py-spiffe over the Workload API).

One server, agent and browser serve every scenario; the tests run in file order and build on
each other (log in, create the entry, the approvals inbox, the audit, roles, then revocation).
Screenshots of each page go to $CONSOLE_SCREENSHOTS (default: a temporary directory).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from tests.integration.console.admin_calls import admin_call
from tests.support.agent_proc import AgentProc
from tests.support.policy_rules import PAYMENTS_RULE
from tests.support.server_proc import ServerProc, free_port

pytestmark = pytest.mark.slow

TD = "example.org"
WORKLOAD_ID = f"spiffe://{TD}/console/payments-bot"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = ("/", "/entries", "/agents", "/revocations", "/audit", "/policy", "/approvals")
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
APPROVAL_TTL = 4  # seconds: the bounded approval of the expiry scenario


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Stack:
    """The processes and the browser all scenarios share."""

    def __init__(self, server: ServerProc, agent: AgentProc, port: int, login_url: str, shots: Path,
                 browser: Any, playwright: Any) -> None:
        self.server = server
        self.agent = agent
        self.port = port
        self.login_url = login_url
        self.shots = shots
        self.browser = browser
        self.playwright = playwright
        self.admin: Any = None  # the logged-in admin page
        self.entry_id = ""
        self.timings: dict[str, float] = {}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def shot(self, page: Any, name: str) -> None:
        page.screenshot(path=str(self.shots / f"{name}.png"), full_page=False)

    # -- the workload ------------------------------------------------------------------------

    def _client(self) -> Any:
        from spiffe import WorkloadApiClient

        return WorkloadApiClient(self.agent.address)

    def x509_id(self) -> str | None:
        """The workload's X.509-SVID SPIFFE ID, or None while it is refused."""
        try:
            with self._client() as client:
                return str(client.fetch_x509_svid().spiffe_id)
        except Exception:
            return None

    def payments_ok(self) -> bool:
        """Whether a JWT-SVID for the payments audience is issued."""
        from spiffe.workloadapi.errors import FetchJwtSvidError

        try:
            with self._client() as client:
                client.fetch_jwt_svid(audience={"payments"})
        except FetchJwtSvidError:
            return False
        return True


def _login_url(log: str) -> str:
    lines = [line for line in log.splitlines() if "/login?token=" in line]
    assert len(lines) == 1, f"expected one login line, got {lines}"
    match = re.search(r"(http://\S+/login\?token=[A-Za-z0-9_\-%]+)", lines[0])
    assert match, lines[0]
    return match.group(1)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="console-", dir="/tmp"))
    policy = work / "policy.toml"
    policy.write_text(PAYMENTS_RULE)
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tempfile.mkdtemp(prefix="console-shots-", dir="/tmp"))
    shots.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = f'policy_file = "{policy}"\nsigning_workers = 0\n[console]\nbind_port = {port}\n'
    with ServerProc.start(trust_domain=TD, config_text=config) as server, \
            AgentProc.start(server, "a1", ("--policy", str(policy))) as agent, sync_playwright() as pw:
        agent.wait_ready()
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield Stack(server, agent, port, _login_url(server.log_text()), shots, browser, pw)
        finally:
            browser.close()
            print(f"\nconsole screenshots: {shots}")
    shutil.rmtree(work, ignore_errors=True)


def _csp_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    return errors


# -- scenarios, in order -----------------------------------------------------------------------


def test_login_with_the_one_time_link(stack: Stack) -> None:
    context = stack.browser.new_context(viewport=VIEWPORTS["desktop"])
    page = context.new_page()
    csp = _csp_errors(page)
    denied = page.goto(stack.url("/entries"))
    assert denied.status == 401
    assert "one-time link" in page.content()

    response = page.goto(stack.login_url)
    assert response.status == 200 and page.url == stack.url("/")
    assert response.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    cookie = next(c for c in context.cookies() if c["name"] == "spiffe_console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    page.wait_for_selector(".chart[data-ready]")  # uPlot drew the chart under the strict CSP
    stack.shot(page, "overview")
    assert csp == []

    # the link works once
    other = stack.browser.new_context()
    again = other.new_page().goto(stack.login_url)
    assert again.status == 403 and "already used" in again.text()
    other.close()
    # the token itself was logged once only (the start-up line)
    assert stack.server.log_text().count(stack.login_url.split("token=")[1]) == 1
    stack.admin = page


def test_create_an_entry_and_the_workload_gets_its_svid(stack: Stack) -> None:
    page = stack.admin
    assert stack.x509_id() is None  # no entry yet: refused
    page.goto(stack.url("/entries"))
    page.get_by_label("SPIFFE ID", exact=True).last.fill(WORKLOAD_ID)
    page.get_by_label("Parent ID", exact=True).last.fill(stack.agent.agent_id)
    page.get_by_label("Selectors (one per line)").fill(f"unix:uid:{os.geteuid()}")
    page.get_by_role("button", name="Create entry").click()
    page.wait_for_url(re.compile(r"/entries/[^/?]+"))
    assert page.locator("#entry-spiffe-id").inner_text() == WORKLOAD_ID
    stack.entry_id = page.url.split("/entries/")[1].split("?")[0]

    assert wait_for(lambda: stack.x509_id() == WORKLOAD_ID, 30, "the workload's X.509-SVID")
    page.goto(stack.url(f"/entries/{stack.entry_id}"))  # the detail view lists the SVID's serial
    assert re.search(r"serial [0-9a-f]{16,}", page.locator("#entry-svids").inner_text())
    assert stack.agent.agent_id in page.content()  # the matching agent
    edit = page.locator("#edit-entry")  # edit: UpdateEntry keeps what the form does not show
    edit.get_by_label("X.509-SVID TTL (s)").fill("600")
    edit.get_by_role("button", name="Save entry").click()
    page.wait_for_selector(".flash")
    assert "X.509 600" in page.content()
    assert admin_call(stack.server, "GetEntry", admin_pb2.GetEntryRequest(id=stack.entry_id)).x509_svid_ttl == 600
    # the change went through the admin service: audited with the console user as actor
    records = admin_call(stack.server, "ListAudit", admin_pb2.ListAuditRequest(page_size=1000)).records
    assert any('"method":"CreateEntry"' in r and '"actor":"console:admin"' in r for r in records)
    # invalid input gets the CLI's validation and error
    page.goto(stack.url("/entries"))
    page.get_by_label("SPIFFE ID", exact=True).last.fill("spiffe://other.org/x")
    page.get_by_label("Parent ID", exact=True).last.fill(stack.agent.agent_id)
    page.get_by_label("Selectors (one per line)").fill("unix:uid:1")
    with page.expect_response(lambda r: r.url.endswith("/entries") and r.request.method == "POST") as info:
        page.get_by_role("button", name="Create entry").click()
    assert info.value.status == 400
    page.goto(stack.url(f"/entries?spiffe_id={WORKLOAD_ID}"))
    assert page.locator("tbody tr").count() == 1
    stack.shot(page, "entries")


def test_the_agent_shows_its_last_sync_with_this_server(stack: Stack) -> None:
    # the agent's sync stream is open and the workload's SVID was signed for it: the server knows
    page = stack.admin
    page.goto(stack.url("/agents"))
    cell = page.locator("tr", has_text=stack.agent.agent_id).locator("td.last-sync").inner_text()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC connected", cell), cell
    shown = stack.server.cli("agent", "show", "--spiffe-id", stack.agent.agent_id).stdout
    assert re.search(r"Last sync\s+\S+.*, connected", shown), shown  # the CLI shows the same
    stack.shot(page, "agents")


def test_payments_denied_then_approved_from_the_inbox(stack: Stack) -> None:
    page = stack.admin
    assert not stack.payments_ok()  # denied: the entry has no approved=true label

    def pending() -> bool:
        page.goto(stack.url("/approvals"))
        return page.locator(f'li.item[data-entry="{stack.entry_id}"]').count() == 1

    wait_for(pending, 20, "the denial in the approvals inbox", interval=0.3)
    item = page.locator(f'li.item[data-entry="{stack.entry_id}"]')
    text = item.inner_text()
    assert WORKLOAD_ID in text and "payments" in text and "payments-needs-approval" in text
    assert "audience payments requires an approved entry" in text
    stack.shot(page, "approvals")

    item.get_by_label("For (seconds)").fill(str(APPROVAL_TTL))
    started = time.monotonic()  # from the operator's click: an upper bound of approval -> success
    item.get_by_role("button", name="Approve").click()
    wait_for(stack.payments_ok, 5, "the approved payments request", interval=0.01)
    latency = time.monotonic() - started
    stack.timings["approval_to_success_s"] = latency
    print(f"\napproval -> next successful request: {latency * 1000:.0f} ms")
    assert latency < 1.0

    page.goto(stack.url("/approvals"))
    assert page.locator(f'li.item[data-entry="{stack.entry_id}"]').count() == 0
    records = admin_call(stack.server, "ListAudit", admin_pb2.ListAuditRequest(page_size=1000)).records
    assert any('"method":"ApproveRequest"' in r and '"actor":"console:admin"' in r for r in records)
    # the overview chart: the X.509-SVID and the approved JWT-SVID were issued, the first payments
    # request denied by the agent (its forwarded record)
    series = page.request.get(stack.url("/overview/series")).json()
    assert sum(series["issued"]) >= 2 and sum(series["denied"]) >= 1, series


def test_the_approval_expires_and_the_request_is_denied_again(stack: Stack) -> None:
    wait_for(lambda: not stack.payments_ok(), APPROVAL_TTL + 3, "the lapsed approval", interval=0.1)
    entry = admin_call(stack.server, "GetEntry", admin_pb2.GetEntryRequest(id=stack.entry_id))
    assert "approved" not in entry.labels
    items = lambda: admin_call(stack.server, "ListPendingApprovals",  # noqa: E731
                               admin_pb2.ListPendingApprovalsRequest()).items
    assert wait_for(lambda: [i for i in items() if i.entry_id == stack.entry_id], 10, "the new denial pending")
    # reject it from the inbox: audited, and it leaves the inbox
    page = stack.admin
    page.goto(stack.url("/approvals"))
    item = page.locator(f'li.item[data-entry="{stack.entry_id}"]')
    item.get_by_label("Reason").fill("not this sprint")
    item.get_by_role("button", name="Reject").click()
    page.wait_for_selector(".flash")
    assert page.locator(f'li.item[data-entry="{stack.entry_id}"]').count() == 0
    records = admin_call(stack.server, "ListAudit", admin_pb2.ListAuditRequest(page_size=1000)).records
    assert any('"method":"RejectRequest"' in r and "not this sprint" in r for r in records)
    assert any('"method":"LabelExpired"' in r and '"actor":"server"' in r for r in records)


def test_audit_view_shows_the_chain_verified(stack: Stack) -> None:
    page = stack.admin
    page.goto(stack.url("/audit"))
    state = page.locator("#chain-state")
    state.wait_for()
    assert "Chain verified" in state.inner_text()
    assert "hash" in state.inner_text()
    assert page.locator("tbody tr").count() > 0
    page.goto(stack.url("/audit?decision=deny&rule=payments-needs-approval"))
    assert page.locator("tbody tr").count() >= 1
    page.goto(stack.url("/audit"))
    page.locator("#chain-state").wait_for()
    stack.shot(page, "audit")


def test_every_page_renders_and_is_screenshotted(stack: Stack) -> None:
    page = stack.admin
    csp = _csp_errors(page)
    for path in PAGES:
        response = page.goto(stack.url(path))
        assert response.status == 200, path
        name = path.strip("/") or "overview"
        stack.shot(page, f"page-{name}")
    page.goto(stack.url("/policy"))
    page.get_by_label("Audiences (comma-separated)").fill("payments")
    page.get_by_role("button", name="Evaluate").click()
    page.wait_for_selector("#whatif-result")
    assert "deny" in page.locator("#whatif-result").inner_text()
    assert "payments-needs-approval" in page.locator("#whatif-result").inner_text()
    assert csp == []


def test_a_read_only_user_cannot_change_anything(stack: Stack) -> None:
    login = admin_call(stack.server, "CreateConsoleLogin",
                       admin_pb2.CreateConsoleLoginRequest(user="auditor", readonly=True))
    context = stack.browser.new_context(viewport=VIEWPORTS["desktop"])
    page = context.new_page()
    page.goto(login.url)
    page.goto(stack.url("/entries"))
    assert "auditor (read-only)" in page.content()
    assert page.get_by_role("button", name="Create entry").count() == 0
    page.goto(stack.url(f"/entries/{stack.entry_id}"))
    assert page.get_by_role("button", name="Delete entry").count() == 0
    assert page.get_by_role("button", name="Save entry").count() == 0
    token = json.loads(page.locator("body").get_attribute("hx-headers"))["X-CSRF-Token"]  # a valid CSRF token
    assert token
    before = admin_call(stack.server, "CountEntries", admin_pb2.CountRequest()).count
    forged = page.request.post(stack.url("/entries"), form={
        "csrf": token, "spiffe_id": f"spiffe://{TD}/forged", "parent_id": stack.agent.agent_id,
        "selectors": "unix:uid:0"})
    assert forged.status == 403 and "admin_readonly" in forged.text()
    deleted = page.request.post(stack.url(f"/entries/{stack.entry_id}/delete"), form={"csrf": token})
    assert deleted.status == 403
    assert admin_call(stack.server, "CountEntries", admin_pb2.CountRequest()).count == before
    context.close()


def test_posts_without_csrf_token_or_cookie_are_refused(stack: Stack) -> None:
    page = stack.admin
    form = {"spiffe_id": f"spiffe://{TD}/csrf", "parent_id": stack.agent.agent_id, "selectors": "unix:uid:0"}
    no_token = page.request.post(stack.url("/entries"), form=form)
    assert no_token.status == 403 and "CSRF" in no_token.text()
    wrong = page.request.post(stack.url("/entries"), form={**form, "csrf": "x" * 43})
    assert wrong.status == 403
    anonymous = stack.playwright.request.new_context()
    no_cookie = anonymous.post(stack.url("/entries"), form={**form, "csrf": "x" * 43})
    assert no_cookie.status == 401
    anonymous.dispose()
    assert not admin_call(stack.server, "ListEntries",
                          admin_pb2.ListEntriesRequest(spiffe_id=f"spiffe://{TD}/csrf")).entries


_UNLABELLED = """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
  .map(el => el.name || el.outerHTML.slice(0, 80))"""
_OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"
_FOCUSED = "() => (document.activeElement.innerText || document.activeElement.value || '').trim()"


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_accessibility_smoke(stack: Stack, viewport: str) -> None:
    context = stack.browser.new_context(viewport=VIEWPORTS[viewport])
    context.add_cookies([c for c in stack.admin.context.cookies() if c["name"] == "spiffe_console"])
    page = context.new_page()
    for path in PAGES:
        page.goto(stack.url(path))
        assert page.evaluate(_UNLABELLED) == [], path
        assert page.evaluate(_OVERFLOW) <= 1, f"{path} scrolls sideways at {viewport}"
    if viewport == "phone":
        stack.shot(page, "approvals-phone")

    def tab_to(name: str, limit: int = 80) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(_FOCUSED) == name:
                return
        raise AssertionError(f"{name!r} not reachable with Tab")

    # the skip link comes first; the nav and the main actions are reachable and work from the keyboard
    page.goto(stack.url("/"))
    page.keyboard.press("Tab")
    assert page.evaluate(_FOCUSED) == "Skip to content"
    tab_to("Entries")
    page.keyboard.press("Enter")
    page.wait_for_url(stack.url("/entries"))
    tab_to("Create entry")
    page.goto(stack.url("/policy"))
    tab_to("Evaluate")
    page.keyboard.press("Enter")
    page.wait_for_selector("#whatif-result")
    context.close()


def test_revoke_the_entry_and_the_workload_is_refused(stack: Stack) -> None:
    page = stack.admin
    assert stack.x509_id() == WORKLOAD_ID
    page.goto(stack.url(f"/entries/{stack.entry_id}"))
    form = page.locator("#revoke-entry")
    form.get_by_label("Revocation reason").fill("key leaked")
    form.get_by_label("Delete the entry too").check()
    form.get_by_role("button", name="Revoke its SVIDs").click()
    page.wait_for_url(re.compile(r"/entries\?message="))
    wait_for(lambda: stack.x509_id() is None, 15, "the workload to be refused")
    page.goto(stack.url("/revocations"))
    assert "key leaked" in page.content()
    row = page.locator("tbody tr", has_text="key leaked").first.inner_text()
    assert "agent confirmation not tracked" in row  # agents do not acknowledge; the page says so
    stack.shot(page, "revocations")
