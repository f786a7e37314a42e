"""The web UI in a real browser: Debian's Chromium, driven by Playwright, against real gateways.

Every wait is on an event (a selector, an attribute, a promise in the page) with a timeout;
nothing sleeps. Pages report their JavaScript errors, and a test fails if there were any.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    async_playwright,
    expect,
)

from gateway.auth import issue_token
from gateway.http.ui_routes import UI_DIR
from gateway.settings import Settings
from gateway.wire import IDE_PORT_RANGES, ide_type_for_port
from tests.conftest import ROOT, RunningGateway, request, run_gateway, searchable
from tests.test_hub_reset import kill_pubsub_clients

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 10_000  # bound of every wait in the page; the latency assertion is separate
XSS = '<img src=x onerror="window.__xss=1">'

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="install Debian's chromium: apt-get install -y chromium"
)
pytestmark = needs_chromium


@contextlib.asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    """Headless Debian Chromium (Playwright's own browsers cannot be downloaded here); tests
    that use it are marked `needs_chromium`."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as launched:
        yield launched


@dataclass
class Tabs:
    """Pages of one browser context (tabs of one browser profile) on one gateway."""

    context: BrowserContext
    gateway: RunningGateway
    errors: list[str] = field(default_factory=list)

    async def open(self, port: int, *, query: str = "") -> Page:
        """A new tab on the UI, connected, with `port` selected."""
        page = await self.context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", self._console)
        await page.goto(self.gateway.http_url + "/" + query)
        await expect(page.get_by_test_id("connection")).to_have_attribute(
            "data-state", "open", timeout=WAIT_MS
        )
        item = page.locator(f'[data-testid="port-item"][data-port="{port}"]')
        await item.click(timeout=WAIT_MS)
        await expect(item).to_have_attribute("aria-expanded", "true")
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text}")


@contextlib.asynccontextmanager
async def tabs_of(browser: Browser, gateway: RunningGateway) -> AsyncIterator[Tabs]:
    """Tabs of one fresh browser profile on the gateway; none may end with a JS error."""
    context = await browser.new_context(viewport={"width": 1100, "height": 720})
    opened = Tabs(context, gateway)
    try:
        yield opened
    finally:
        await context.close()
    assert opened.errors == []


@pytest.fixture
async def tabs(browser: Browser, gateway: RunningGateway) -> AsyncIterator[Tabs]:
    async with tabs_of(browser, gateway) as opened:
        yield opened


@pytest.fixture(name="profile")
async def profile_fixture(browser: Browser, gateway: RunningGateway) -> AsyncIterator[Tabs]:
    """`tabs` for the other UI test modules, which import this function: as `profile`, a
    test's parameter does not shadow an imported name."""
    async with tabs_of(browser, gateway) as opened:
        yield opened


def message(page: Page, seq: int) -> Locator:
    return page.locator(f'[data-testid="message"][data-seq="{seq}"]')


async def shown_seqs(page: Page) -> list[int]:
    """The seqs of the messages the tab shows, in page order."""
    seqs: list[int] = await page.locator('[data-testid="message"]').evaluate_all(
        "(els) => els.map((el) => Number(el.dataset.seq))"
    )
    return seqs


async def drop_socket(page: Page) -> None:
    """Close the tab's WebSocket and return once it is closed (the tab reconnects itself)."""
    await page.evaluate(
        """() => new Promise((resolve) => {
            const socket = window.chatGateway.socket;
            socket.addEventListener('close', resolve, {once: true});
            socket.close();
        })"""
    )


async def ide_message(ide: Any, port: int, content: str, **fields: Any) -> dict[str, Any]:
    """Send one message as an IDE would; return its ack."""
    ack = await request(ide, {"type": "message", "port": port, "content": content, **fields})
    assert ack["type"] == "ack", ack
    return ack


async def test_text_sent_in_one_tab_shows_in_the_other_within_a_second(
    tabs: Tabs, gateway: RunningGateway
) -> None:
    """Two tabs on a port with history: a message sent from tab 1 shows in tab 2 in < 1 s."""
    async with gateway.connect() as ide:
        await request(ide, {"type": "hello", "kind": "ide", "ports": [9222]})
        await ide_message(ide, 9222, "Can you fix the flaky test?")
        await ide_message(
            ide,
            9222,
            "## Plan\n\n1. find the **sleep**\n2. wait on an *event* instead\n\n"
            "```python\nawait expect(locator).to_be_visible()\n```\n\n"
            "See https://playwright.dev/python/docs/test-assertions.",
            role="assistant",
            content_type="markdown",
        )
        await ide_message(ide, 9222, "pytest -q tests/test_ui.py", content_type="code")
        one = await tabs.open(9222)
        two = await tabs.open(9222)
        for page in (one, two):
            await expect(message(page, 3)).to_be_visible(timeout=WAIT_MS)
            await expect(page.locator('[data-testid="message"]')).to_have_count(3)

        text = "Sent from tab 1, **bold** and `code`"
        # Clock both ends in the pages (same machine, same wall clock): the click in tab 1,
        # and the moment the message element is added in tab 2.
        await two.evaluate(
            """(text) => {
                const list = document.querySelector('[data-testid="messages"]');
                window.__seenAt = new Promise((resolve) => {
                    const observer = new MutationObserver(() => {
                        for (const el of list.querySelectorAll('[data-testid="message"]')) {
                            if (el.textContent.includes(text)) {
                                observer.disconnect();
                                resolve(Date.now());
                            }
                        }
                    });
                    observer.observe(list, {childList: true, subtree: true});
                });
            }""",
            "Sent from tab 1, bold and code",
        )
        await one.get_by_test_id("composer").fill(text)
        await one.evaluate(
            """() => document.querySelector('[data-testid="send"]').addEventListener(
                'click', () => { window.__clickedAt = Date.now(); }, {capture: true, once: true})"""
        )
        await one.get_by_test_id("send").click()
        await expect(message(two, 4)).to_contain_text("Sent from tab 1", timeout=WAIT_MS)
        latency_ms = await two.evaluate("() => window.__seenAt") - await one.evaluate(
            "() => window.__clickedAt"
        )
        print(f"tab-to-tab latency: {latency_ms} ms")
        assert latency_ms < 1000
        await expect(message(one, 4).locator("strong")).to_have_text("bold")
        await expect(one.get_by_test_id("composer")).to_have_value("")
        ARTIFACTS.mkdir(exist_ok=True)
        await two.screenshot(path=ARTIFACTS / "ui.png", animations="disabled")


async def test_ide_messages_and_presence_reach_every_tab(
    tabs: Tabs, gateway: RunningGateway
) -> None:
    """An IDE message shows in both tabs; the port goes offline in both when the IDE leaves."""
    async with gateway.connect() as ide:
        await request(ide, {"type": "hello", "kind": "ide", "ports": [9223]})
        await ide_message(ide, 9223, "first")
        one = await tabs.open(9223)
        two = await tabs.open(9223)
        for page in (one, two):
            await expect(message(page, 1)).to_be_visible(timeout=WAIT_MS)
            online = page.get_by_test_id("port-online")
            await expect(online).to_have_attribute("data-online", "true")
        await ide_message(
            ide, 9223, "Done: **all green**", role="assistant", content_type="markdown"
        )
        for page in (one, two):
            await expect(message(page, 2).locator("strong")).to_have_text(
                "all green", timeout=WAIT_MS
            )
            await expect(message(page, 2)).to_contain_text("Assistant")
    for page in (one, two):
        await expect(page.get_by_test_id("port-online")).to_have_attribute(
            "data-online", "false", timeout=WAIT_MS
        )


async def test_message_content_is_never_html(tabs: Tabs, gateway: RunningGateway) -> None:
    """HTML in text and markdown content shows as literal text: no element, no script."""
    async with gateway.connect() as ide:
        await ide_message(ide, 9224, XSS, content_type="text", id="x1")
        page = await tabs.open(9224)
        await expect(message(page, 1)).to_be_visible(timeout=WAIT_MS)
        # One through the HTTP page read, then more live.
        await ide_message(ide, 9224, XSS, content_type="markdown", id="x2")
        await ide_message(ide, 9224, f"**{XSS}** [x](javascript:alert(1))", content_type="markdown")
        await expect(message(page, 3)).to_be_visible(timeout=WAIT_MS)
    for seq in (1, 2):
        await expect(message(page, seq).locator(".content")).to_have_text(XSS)
    await expect(message(page, 3).locator("strong")).to_have_text(XSS)
    pane = page.get_by_test_id("messages")
    await expect(pane.locator("img")).to_have_count(0)
    await expect(pane.locator("a")).to_have_count(0)
    assert await page.evaluate("() => window.__xss") is None


async def test_markdown_code_block_renders_as_pre(tabs: Tabs, gateway: RunningGateway) -> None:
    """A fenced block in markdown becomes <pre><code> holding the code as text."""
    code = "if a < b and c > d:\n    print('<b>not bold</b>')"
    async with gateway.connect() as ide:
        await ide_message(
            ide,
            9225,
            f"Try this:\n\n```python\n{code}\n```\n\nthen run `make`.",
            content_type="markdown",
        )
    page = await tabs.open(9225)
    shown = message(page, 1)
    await expect(shown.locator("pre code")).to_have_text(code, timeout=WAIT_MS)
    await expect(shown.locator("pre")).to_have_attribute("data-lang", "python")
    await expect(shown.locator("p code")).to_have_text("make")
    await expect(shown.locator("b")).to_have_count(0)


async def test_tab_reconnects_and_shows_what_it_missed_once(
    tabs: Tabs, gateway: RunningGateway
) -> None:
    """A dropped tab reconnects itself and shows what was sent while it was away, once."""
    async with gateway.connect() as ide:
        await ide_message(ide, 9226, "before the drop")
        page = await tabs.open(9226)
        await expect(message(page, 1)).to_be_visible(timeout=WAIT_MS)
        await drop_socket(page)
        await ide_message(ide, 9226, "while the tab was away")
        # The tab had no socket when that ack came: the message can only arrive by catch-up.
        assert await page.evaluate("() => window.chatGateway.socket") is None
        composer = page.get_by_test_id("composer")
        await composer.fill("typed while offline")
        await composer.press("Shift+Enter")
        await composer.press_sequentially("second line")
        await composer.press("Enter")
        await expect(page.get_by_test_id("connection")).to_have_attribute(
            "data-state", "open", timeout=WAIT_MS
        )
        await expect(message(page, 3)).to_contain_text("typed while offline", timeout=WAIT_MS)
        await expect(message(page, 3).locator("p br")).to_have_count(1)  # Shift+Enter
        await expect(message(page, 2)).to_contain_text("while the tab was away")
    await expect(page.locator('[data-testid="message"]')).to_have_count(3)
    seqs = await shown_seqs(page)
    assert seqs == [1, 2, 3]


async def test_tab_follows_session_rotation(tabs: Tabs, gateway: RunningGateway) -> None:
    """When the IDE starts a new session, the tab switches to it and marks it active."""
    async with gateway.connect() as ide:
        await ide_message(ide, 9227, "old chat")
        page = await tabs.open(9227)
        await expect(message(page, 1)).to_have_text(re.compile("old chat"), timeout=WAIT_MS)
        created = await request(ide, {"type": "session.new", "port": 9227, "title": "New chat"})
        await ide_message(ide, 9227, "new chat")
    sessions = page.get_by_test_id("session-item")
    await expect(sessions).to_have_count(2, timeout=WAIT_MS)
    active = page.locator('[data-testid="session-item"][data-active="true"]')
    await expect(active).to_have_attribute("data-session-id", created["session"]["id"])
    await expect(active).to_have_attribute("aria-current", "true")
    await expect(page.locator('[data-testid="message"]')).to_have_count(1)
    await expect(message(page, 1)).to_contain_text("new chat")
    await page.locator('[data-testid="session-item"][data-active="false"]').click()
    await expect(message(page, 1)).to_contain_text("old chat", timeout=WAIT_MS)


async def test_reconnect_after_a_rotation_shows_the_new_session(
    tabs: Tabs, gateway: RunningGateway
) -> None:
    """A tab away during a rotation shows the new session from its first message on return."""
    async with gateway.connect() as ide:
        for i in range(3):
            await ide_message(ide, 9228, f"old {i}")
        page = await tabs.open(9228)
        await expect(message(page, 3)).to_be_visible(timeout=WAIT_MS)
        await drop_socket(page)
        await request(ide, {"type": "session.new", "port": 9228})
        await ide_message(ide, 9228, "new 0")
        await ide_message(ide, 9228, "new 1")
    await expect(message(page, 2)).to_contain_text("new 1", timeout=WAIT_MS)
    await expect(message(page, 1)).to_contain_text("new 0")
    await expect(page.locator('[data-testid="message"]')).to_have_count(2)
    await expect(page.get_by_test_id("session-item")).to_have_count(2)


async def test_tab_comes_through_a_pubsub_reset_showing_every_message(
    tabs: Tabs, gateway: RunningGateway, redis: aioredis.Redis
) -> None:
    """With the gateway's pub/sub connection killed twice, ten messages and a rotation sent
    meanwhile, the tab shows every message once, in order, then follows the new session."""
    async with gateway.connect() as ide:
        await ide_message(ide, 9229, "before")
        page = await tabs.open(9229)
        await expect(message(page, 1)).to_be_visible(timeout=WAIT_MS)
        await kill_pubsub_clients(redis)
        for i in range(10):
            await ide_message(ide, 9229, f"during {i}")
        await expect(message(page, 11)).to_contain_text("during 9", timeout=WAIT_MS)
        seqs = await shown_seqs(page)
        assert seqs == list(range(1, 12))
        await kill_pubsub_clients(redis)
        created = await request(ide, {"type": "session.new", "port": 9229})
        await ide_message(ide, 9229, "new session")
    active = page.locator('[data-testid="session-item"][data-active="true"]')
    await expect(active).to_have_attribute(
        "data-session-id", created["session"]["id"], timeout=WAIT_MS
    )
    await expect(message(page, 1)).to_contain_text("new session", timeout=WAIT_MS)
    await expect(page.locator('[data-testid="message"]')).to_have_count(1)


async def test_streaming_reply_is_replaced_in_place(tabs: Tabs, gateway: RunningGateway) -> None:
    """A growing reply (same client id) replaces its message in place, marked edited."""
    async with gateway.connect() as ide:
        fields = {"id": "reply-1", "role": "assistant", "content_type": "markdown"}
        await ide_message(ide, 9229, "Hel", **fields)
        page = await tabs.open(9229)
        await expect(message(page, 1)).to_contain_text("Hel", timeout=WAIT_MS)
        ack = await ide_message(ide, 9229, "Hello, **world**", **fields)
        assert ack["results"][0]["updated"] is True
    await expect(message(page, 1).locator("strong")).to_have_text("world", timeout=WAIT_MS)
    await expect(message(page, 1)).to_contain_text("edited")
    await expect(page.locator('[data-testid="message"]')).to_have_count(1)


async def test_long_session_loads_earlier_messages_on_request(
    tabs: Tabs, gateway: RunningGateway
) -> None:
    """A long session opens on its newest 200 messages; "Load earlier" adds the rest in order."""
    async with gateway.connect() as ide:
        batch = [{"content": f"m{i}", "id": f"m{i}"} for i in range(1, 251)]
        await request(ide, {"type": "extracted", "port": 9230, "messages": batch})
    page = await tabs.open(9230)
    shown = page.locator('[data-testid="message"]')
    await expect(message(page, 250)).to_be_visible(timeout=WAIT_MS)
    await expect(shown).to_have_count(200)
    older = page.get_by_role("button", name="Load earlier messages")
    await older.click()
    await expect(shown).to_have_count(250, timeout=WAIT_MS)
    await expect(older).to_be_hidden()
    seqs = await shown.evaluate_all("(els) => els.map((el) => Number(el.dataset.seq))")
    assert seqs == list(range(1, 251))


async def test_search_opens_the_message_in_its_session(tabs: Tabs, gateway: RunningGateway) -> None:
    """The sidebar search lists matches with the words marked, as text (never HTML); opening
    one shows its session scrolled to the message, loading earlier pages to reach it."""
    async with gateway.connect() as ide:
        batch = [{"content": f"filler {i}", "id": f"f{i}"} for i in range(1, 301)]
        batch[9] = {"content": f"the quetzal flies {XSS}", "id": "f10"}  # older than a page
        await request(ide, {"type": "extracted", "port": 9235, "messages": batch})
        await ide_message(ide, 9236, "elsewhere")
    await searchable(gateway)
    page = await tabs.open(9236)
    search = page.get_by_test_id("search-input")
    await search.fill("Quetzal")
    await search.press("Enter")
    result = page.get_by_test_id("search-result")
    await expect(result).to_have_count(1, timeout=WAIT_MS)
    await expect(result.locator("mark")).to_have_text(["quetzal"])
    await expect(result).to_contain_text(XSS)  # the markup shows as the characters it is
    await expect(page.get_by_test_id("search-status")).to_have_text("1 message")
    await result.click()
    found = message(page, 10)
    await expect(found).to_have_class(re.compile(r"\bfound\b"), timeout=WAIT_MS)
    await expect(found).to_be_in_viewport()
    await expect(page.locator('[data-testid="port-item"][data-port="9235"]')).to_have_attribute(
        "aria-expanded", "true"
    )
    # The port's active session: shown as the port, not as a session left behind.
    await expect(page.get_by_role("button", name="Back to the active session")).to_be_hidden()
    await page.get_by_test_id("messages").evaluate("(el) => el.lastElementChild.scrollIntoView()")
    await expect(found).not_to_be_in_viewport()
    await result.click()  # again, with the session already shown: scrolls back to it
    await expect(found).to_be_in_viewport(timeout=WAIT_MS)
    await search.fill("nothingmatchesthis")
    await search.press("Enter")
    await expect(page.get_by_test_id("search-status")).to_have_text("Nothing matches.")
    await expect(result).to_have_count(0)
    assert await page.evaluate("window.__xss") is None


async def test_token_in_the_page_url_authorizes_the_tab(tabs: Tabs, settings: Settings) -> None:
    """With auth on, ?token= authorizes the tab (and leaves the address bar); none is refused."""
    secure = replace(settings, auth_secret="ui-test-secret-0123456789abcdefghij")
    token = issue_token(secure.auth_secret, "alice", 3600)
    async with run_gateway(secure) as running:
        bearer = {"Authorization": f"Bearer {token}"}
        async with running.connect(additional_headers=bearer) as ide:
            await ide_message(ide, 9231, "for alice only")
        alice = Tabs(tabs.context, running, tabs.errors)
        page = await alice.open(9231, query=f"?token={token}")
        await expect(message(page, 1)).to_contain_text("for alice only", timeout=WAIT_MS)
        assert "token" not in page.url
        # The browser logs the refused requests as errors: expected here, so not collected.
        stranger = await tabs.context.new_page()
        await stranger.goto(running.http_url + "/")
        # Without a token: the sign-in (tests/test_ui_signin.py), not the chats.
        await expect(stranger.get_by_test_id("sign-in")).to_be_visible(timeout=WAIT_MS)
        for opened in (page, stranger):
            await opened.close()


async def test_ui_takes_the_ide_port_ranges_from_the_protocol(
    tabs: Tabs, gateway: RunningGateway
) -> None:
    """The page imports gateway/ws/protocol.py's IDE port ranges and names a port's IDE by them."""
    async with gateway.connect() as ide:
        await ide_message(ide, 9222, "here")
        page = await tabs.open(9222)
        served = await page.evaluate(
            "async () => (await import('/ui/ide-ports.js')).IDE_PORT_RANGES"
        )
        assert served == [list(r) for r in IDE_PORT_RANGES]
        # Ports the tab learns of from presence alone: no session or port record names their IDE.
        async with gateway.connect() as other:
            await request(other, {"type": "hello", "kind": "ide", "ports": [9235, 9245, 9300]})
            for port in (9235, 9245, 9300):
                item = page.locator(f'[data-testid="port-item"][data-port="{port}"]')
                await expect(item.locator(".ide-type")).to_have_text(
                    ide_type_for_port(port), timeout=WAIT_MS
                )


def test_ui_scripts_hold_no_copy_of_the_ide_port_ranges() -> None:
    """No file in gateway/ui spells out an IDE port: the ranges reach the page from one route."""
    for path in UI_DIR.iterdir():
        if not path.is_file():
            continue  # vendor/: third-party code, none of ours
        text = path.read_text()
        for first, last, _ in IDE_PORT_RANGES:
            assert str(first) not in text and str(last) not in text, path.name
