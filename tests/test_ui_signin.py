"""The web UI's sign-in in token mode, in real Chromium: the form instead of a reconnect
loop, a refused or expired token said plainly, who is signed in, and signing out; local
mode shows none of it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from gateway.auth import issue_token
from gateway.settings import Settings
from tests.conftest import RunningGateway, request, run_gateway
from tests.test_ui import WAIT_MS, browser, message, needs_chromium  # noqa: F401 - a fixture

pytestmark = needs_chromium

SECRET = "ui-sign-in-secret-0123456789abcdefghij"
PORT = 9233


@dataclass
class Visitor:
    """One browser page on the gateway, with the WebSockets it opened and its JS errors."""

    page: Page
    sockets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def token_kept(self) -> str | None:
        kept: str | None = await self.page.evaluate(
            "sessionStorage.getItem('chat-gateway-token')"
        )
        return kept


@pytest.fixture
async def secure(settings: Settings) -> AsyncIterator[RunningGateway]:
    """A token-mode gateway where alice has a message on PORT."""
    async with run_gateway(replace(settings, auth_secret=SECRET)) as running:
        bearer = {"Authorization": f"Bearer {issue_token(SECRET, 'alice', 600)}"}
        async with running.connect(additional_headers=bearer) as ide:
            ack = await request(ide, {"type": "message", "port": PORT, "content": "alice's note"})
            assert ack["type"] == "ack", ack
        yield running


@dataclass
class Visits:
    """Pages of one fresh browser context; every page must end with no JavaScript error."""

    context: BrowserContext
    visitors: list[Visitor] = field(default_factory=list)

    async def open(self, url: str) -> Visitor:
        page = await self.context.new_page()
        visitor = Visitor(page)
        page.on("pageerror", lambda error: visitor.errors.append(str(error)))
        page.on("websocket", lambda socket: visitor.sockets.append(socket.url))
        self.visitors.append(visitor)
        await page.goto(url)
        return visitor


@pytest.fixture
async def visits(browser: Browser) -> AsyncIterator[Visits]:  # noqa: F811 - the fixture
    opened = Visits(await browser.new_context(viewport={"width": 1100, "height": 720}))
    try:
        yield opened
    finally:
        await opened.context.close()
    assert [error for v in opened.visitors for error in v.errors] == []


async def test_without_a_token_the_page_asks_for_one_instead_of_reconnecting(
    visits: Visits,
    secure: RunningGateway,
) -> None:
    """No token: the sign-in form with a labelled Token field, no chats, no WebSocket."""
    you = await visits.open(secure.http_url + "/")
    page = you.page
    await expect(page.get_by_test_id("sign-in")).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("sign-in-reason")).to_have_text(
        "This gateway needs a token to show your chats."
    )
    await expect(page.get_by_label("Token")).to_be_focused()
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await expect(page.get_by_test_id("ports")).to_be_hidden()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "closed")
    assert you.sockets == []  # it never tried: there is no loop to stop


async def test_a_wrong_token_is_refused_beside_the_form(
    visits: Visits,
    secure: RunningGateway,
) -> None:
    """A token the gateway refuses is said so; the form stays and nothing is kept."""
    page = (await visits.open(secure.http_url + "/")).page
    await page.get_by_label("Token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("sign-in-reason")).to_contain_text(
        "That token was not accepted", timeout=WAIT_MS
    )
    await expect(page.get_by_test_id("sign-in")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('chat-gateway-token')") is None


async def test_signing_in_shows_the_user_and_their_chats_and_signing_out_forgets(
    visits: Visits,
    secure: RunningGateway,
) -> None:
    """A pasted token opens alice's chats with "Signed in as alice"; Sign out drops the
    token, the socket and the chats, and shows the form again."""
    you = await visits.open(secure.http_url + "/")
    page = you.page
    await page.get_by_label("Token").fill(issue_token(SECRET, "alice", 600))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("connection")).to_have_attribute(
        "data-state", "open", timeout=WAIT_MS
    )
    await expect(page.get_by_test_id("account")).to_contain_text("Signed in as alice")
    await expect(page.get_by_test_id("sign-in")).to_be_hidden()
    await page.locator(f'[data-testid="port-item"][data-port="{PORT}"]').click(timeout=WAIT_MS)
    await expect(message(page, 1)).to_contain_text("alice's note", timeout=WAIT_MS)

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_test_id("sign-in")).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("account")).to_be_hidden()
    await expect(page.get_by_test_id("messages")).to_be_hidden()
    assert await you.token_kept() is None
    assert await page.evaluate("window.chatGateway.socket") is None


async def test_an_expired_token_says_so(
    visits: Visits,
    secure: RunningGateway,
) -> None:
    """A link with an expired token shows the sign-in saying the token has expired."""
    expired = issue_token(SECRET, "alice", 60, now=time.time() - 3600)
    page = (await visits.open(f"{secure.http_url}/?token={expired}")).page
    await expect(page.get_by_test_id("sign-in-reason")).to_have_text(
        "Your token has expired. Paste a new one to sign in.", timeout=WAIT_MS
    )
    await expect(page.get_by_label("Token")).to_be_visible()


async def test_local_mode_shows_no_sign_in(
    visits: Visits,
    gateway: RunningGateway,
) -> None:
    """Local mode wants no token: no form, no account, the chats at once."""
    page = (await visits.open(gateway.http_url + "/")).page
    await expect(page.get_by_test_id("connection")).to_have_attribute(
        "data-state", "open", timeout=WAIT_MS
    )
    await expect(page.get_by_test_id("sign-in")).to_be_hidden()
    await expect(page.get_by_test_id("account")).to_be_hidden()
    await expect(page.get_by_test_id("ports")).to_be_attached()
