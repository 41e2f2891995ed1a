"""The web dashboard in a real browser (Playwright driving Debian's chromium) against
``fulcrum up``: Keystone login, a load balancer created through the page turning ACTIVE
without a reload (driven by the event feed), a listener, a pool and members with real
backends, traffic through the VIP moving the page's counters (the LB's and each member's), a
health monitor added to the pool, an API error shown to the user, a dropped feed resumed with
Last-Event-ID, the admin's amphora failover, and the cascade delete, confirmed first."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser import chromium
from tests.e2e.chaos import kill, wait_ready
from tests.e2e.conftest import VENV_BIN, Backend, Stack

pytestmark = pytest.mark.timeout(300)

WAIT_MS = 30_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def dashboard_url(stack: Stack) -> str:
    """The dashboard URL as ``fulcrum up`` prints it."""
    found = re.search(r"Dashboard: (\S+)", (stack.state / "endpoint.txt").read_text())
    assert found is not None
    return found.group(1)


async def api_active_at(api_url: str, token: str, lb_id: str) -> float:
    """Polls the API (every 20 ms, 60 s at most) until the load balancer is ACTIVE; returns
    the wall-clock time in ms when it first answered ACTIVE."""
    url = f"{api_url}/v2/lbaas/loadbalancers/{lb_id}"
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(headers={"X-Auth-Token": token}) as http:
        while time.monotonic() < deadline:
            async with http.get(url) as resp:
                body = await resp.json()
            if body["loadbalancer"]["provisioning_status"] == "ACTIVE":
                return time.time() * 1000
            await asyncio.sleep(0.02)
    raise AssertionError(f"{lb_id} not ACTIVE in the API after 60 s")


def identity(stack: Stack, *args: str) -> None:
    """``fulcrum identity ... --state-dir <the stack's>``."""
    subprocess.run(
        [str(VENV_BIN / "fulcrum"), "identity", "--state-dir", str(stack.state), *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


async def served(url: str) -> bool:
    """Whether ``url`` answers 200 within 10 tries, half a second apart."""
    async with aiohttp.ClientSession() as http:
        for _ in range(10):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url, headers={"Connection": "close"}) as resp:
                    if resp.status == 200:
                        return True
            await asyncio.sleep(0.5)
    return False


async def submit(page: Page, form: str, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        field = page.locator(f"#{form} [name={name}]")
        if await field.evaluate("node => node.tagName") == "SELECT":
            await field.select_option(value)
        else:
            await field.fill(value)
    await page.locator(f"#{form} button[type=submit]").click()


async def wait_active(page: Page, kind: str, count: int = 1) -> None:
    """``count`` items of ``kind`` in the status tree, all ACTIVE (and so the LB again)."""
    items = page.locator(f'#tree li[data-kind="{kind}"]')
    await expect(items).to_have_count(count, timeout=WAIT_MS)
    active = page.locator(f'#tree li[data-kind="{kind}"][data-provisioning-status="ACTIVE"]')
    await expect(active).to_have_count(count, timeout=WAIT_MS)
    root = page.locator('#tree li[data-kind="loadbalancer"]')
    await expect(root).to_have_attribute("data-provisioning-status", "ACTIVE", timeout=WAIT_MS)


async def test_dashboard_create_watch_traffic_delete(
    stack: Stack, backends: list[Backend], browser: Browser
) -> None:
    url = dashboard_url(stack)
    assert url == f"{stack.api_url}/dashboard/"
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    feed_requests: list[str | None] = []
    page.on(
        "request",
        lambda request: (
            feed_requests.append(request.headers.get("last-event-id"))
            if "/v2/fulcrum/events" in request.url
            else None
        ),
    )
    dialogs: list[str] = []
    # Every delete asks first; the first question is declined, the next ones accepted.
    page.on(
        "dialog",
        lambda dialog: (
            dialogs.append(dialog.message),
            asyncio.ensure_future(dialog.accept() if len(dialogs) > 1 else dialog.dismiss()),
        ),
    )
    deletes: list[str] = []
    page.on(
        "request",
        lambda request: deletes.append(request.url) if request.method == "DELETE" else None,
    )
    await page.goto(url)

    # A wrong password is Keystone's 401, shown to the user.
    await submit(page, "login-form", {"username": "admin", "password": "wrong", "project": "admin"})
    await expect(page.locator("#error")).to_contain_text("requires authentication", timeout=WAIT_MS)
    password = stack.secret("admin.password")
    await submit(
        page, "login-form", {"username": "admin", "password": password, "project": "admin"}
    )
    await expect(page.locator("#feed-state")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    await expect(page.locator("#error")).to_be_hidden()
    token = await page.evaluate("JSON.parse(sessionStorage.getItem('fulcrum.session')).token")
    await page.evaluate("window.notReloaded = true")

    # Create: the row appears PENDING_CREATE and turns ACTIVE by the feed alone.
    await submit(page, "lb-form", {"name": "dash-lb"})
    row = page.locator("#lb-rows tr", has_text="dash-lb")
    await expect(row).to_have_count(1, timeout=WAIT_MS)
    lb_id = await row.get_attribute("data-lb-id")
    assert lb_id
    api_ms = await api_active_at(stack.api_url, token, lb_id)
    await expect(row).to_have_attribute("data-provisioning-status", "ACTIVE", timeout=WAIT_MS)
    shown_ms = float(await row.get_attribute("data-provisioning-since") or 0)
    print(f"\ndashboard showed ACTIVE {shown_ms - api_ms:.0f} ms after the API answered ACTIVE")
    vip = await row.locator('[data-field="vip_address"]').inner_text()

    # A dropped feed (the API killed; supervisord restarts it) resumes with Last-Event-ID.
    badge = page.locator("#feed-state")
    killed = kill(stack.state, ["api"])
    await expect(badge).not_to_have_attribute("data-state", "live", timeout=WAIT_MS)
    last_seen = await badge.get_attribute("data-last-event-id")
    assert last_seen
    await wait_ready(stack.state, after=killed)
    await expect(badge).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    assert feed_requests[0] is None and feed_requests[-1] == last_seen, feed_requests

    # The status tree, built through the forms.
    await row.locator("button.open").click()
    await wait_active(page, "loadbalancer")
    await submit(
        page, "listener-form", {"name": "dash-listener", "protocol": "HTTP", "protocol_port": "80"}
    )
    await wait_active(page, "listener")
    await submit(page, "pool-form", {"name": "dash-pool", "protocol": "HTTP"})
    await wait_active(page, "pool")
    for count, backend in enumerate(backends, start=1):
        await submit(
            page, "member-form", {"address": "127.0.0.1", "protocol_port": str(backend.port)}
        )
        await wait_active(page, "member", count)
    await expect(page.locator("#member-rows tr")).to_have_count(len(backends))

    # An error of the API reaches the user: the port is taken.
    await submit(
        page, "listener-form", {"name": "again", "protocol": "HTTP", "protocol_port": "80"}
    )
    await expect(page.locator("#error")).to_contain_text("80", timeout=WAIT_MS)

    # Traffic through the VIP moves the counters on the page.
    async with aiohttp.ClientSession() as http:
        for _ in range(20):
            async with http.get(f"http://{vip}/", headers={"Connection": "close"}) as resp:
                assert resp.status == 200
    assert all(backend.hits > 0 for backend in backends)
    total = page.locator(
        '#traffic-rows tr[data-stats="loadbalancer"] [data-field="total_connections"]'
    )
    await expect(total).to_have_text(re.compile(r"^([2-9]\d|\d{3,})$"), timeout=WAIT_MS)  # >= 20
    member_totals = page.locator(
        '#traffic-rows tr[data-stats^="member-"] [data-field="total_connections"]'
    )
    await expect(member_totals).to_have_count(len(backends))
    for n in range(len(backends)):  # each backend was hit: each member's row moved
        await expect(member_totals.nth(n)).not_to_have_text("0", timeout=WAIT_MS)
    member_bytes = page.locator('#traffic-rows tr[data-stats^="member-"] [data-field="bytes_out"]')
    for n in range(len(backends)):
        await expect(member_bytes.nth(n)).not_to_have_text("0", timeout=WAIT_MS)

    # A health monitor for the pool, from its form.
    await submit(
        page,
        "healthmonitor-form",
        {"type": "TCP", "delay": "2", "timeout": "1", "max_retries": "2"},
    )
    await wait_active(page, "healthmonitor")

    # The admin sees the LB's amphora and fails it over; a new one serves the VIP.
    amphora = page.locator("#amphora-rows tr", has_text=lb_id)
    await expect(amphora).to_have_count(1, timeout=WAIT_MS)
    first = await amphora.get_attribute("data-amphora-id")
    await amphora.locator("button.failover").click()
    replaced = page.locator(f'#amphora-rows tr[data-amphora-id="{first}"]')
    await expect(replaced).to_have_count(0, timeout=WAIT_MS)
    await expect(amphora).to_have_count(1, timeout=WAIT_MS)
    assert await served(f"http://{vip}/")

    # A member of another project: its own (empty) list, no amphorae, the feed live.
    await asyncio.to_thread(identity, stack, "project", "add", "team-dash")
    member = ["dash-user", "--password", "dash-pass", "--project", "team-dash", "--role", "member"]
    await asyncio.to_thread(identity, stack, "user", "add", *member)
    member_page = await browser.new_page()
    await member_page.goto(url)
    await submit(
        member_page,
        "login-form",
        {"username": "dash-user", "password": "dash-pass", "project": "team-dash"},
    )
    member_badge = member_page.locator("#feed-state")
    await expect(member_badge).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    await expect(member_page.locator("#amphorae")).to_be_hidden()
    await expect(member_page.locator("#lb-rows tr")).to_have_count(0)
    # A token the API refuses ends the session: back to the login form, told why.
    await member_page.evaluate(
        "sessionStorage.setItem('fulcrum.session', JSON.stringify("
        "{...JSON.parse(sessionStorage.getItem('fulcrum.session')), token: 'forged'}))"
    )
    await submit(member_page, "lb-form", {"name": "refused"})
    await expect(member_page.locator("#login-view")).to_be_visible(timeout=WAIT_MS)
    await expect(member_page.locator("#error")).to_contain_text("log in again")
    await expect(member_badge).to_have_attribute("data-state", "off")
    await member_page.close()

    # Cascade delete, confirmed: declined once (nothing happens), then accepted; the row goes
    # away, still without a reload.
    await row.locator("button.delete").click()
    for _ in range(200):
        if dialogs:
            break
        await asyncio.sleep(0.05)
    assert dialogs == ["Delete load balancer dash-lb and everything in it?"]
    assert deletes == []
    await row.locator("button.delete").click()
    await expect(page.locator(f'#lb-rows tr[data-lb-id="{lb_id}"]')).to_have_count(
        0, timeout=WAIT_MS
    )
    assert await page.evaluate("window.notReloaded") is True
    assert errors == []
