"""Sending from the web UI while the gateway is unreachable, in real Chromium (issue 16, point
7): a message waits, marked, in IndexedDB; it is sent when the connection returns, once; a
refused or unanswered one is marked "Not sent" and can be retried, edited or discarded."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import httpx
from playwright.async_api import Browser, Page, WebSocketRoute, expect

from gateway.settings import Settings
from tests.conftest import RunningGateway, request, run_gateway
from tests.test_ui import (  # noqa: F401 - fixtures
    WAIT_MS,
    Tabs,
    browser,
    drop_socket,
    message,
    needs_chromium,
    profile_fixture,
    tabs_of,
)

pytestmark = needs_chromium

# What Chromium logs while offline, on purpose here: the socket's and the API's failed attempts.
_OFFLINE_NOISE = re.compile(r"WebSocket connection to .* failed|ERR_INTERNET_DISCONNECTED")

_OUTBOX = """() => new Promise((resolve, reject) => {
    const opening = indexedDB.open('chat-gateway');
    opening.onerror = () => reject(opening.error);
    opening.onsuccess = () => {
        const read = opening.result.transaction('outbox').objectStore('outbox').getAll();
        read.onsuccess = () => resolve(read.result.map((r) => [r.content, r.failed]));
    };
})"""


async def _outbox(page: Page) -> list[list[Any]]:
    """The (content, failed) pairs the browser profile's outbox holds."""
    records: list[list[Any]] = await page.evaluate(_OUTBOX)
    return records


async def _stored(gateway: RunningGateway, port: int) -> list[str]:
    """The contents of the port's messages, as the API serves them (buffered ones included)."""
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        body = (await http.get(f"/api/ports/{port}/messages")).json()
    return [m["content"] for m in reversed(body["messages"])]


async def _start_port(gateway: RunningGateway, port: int) -> None:
    async with gateway.connect() as ide:
        ack = await request(ide, {"type": "message", "port": port, "content": "hello"})
    assert ack["type"] == "ack", ack


async def test_a_message_typed_offline_waits_outlives_its_tab_and_is_sent_once(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """Typed while the gateway is unreachable, a message shows as waiting and is kept in
    IndexedDB; after its tab is closed, the next tab sends it, and it is stored once."""
    await _start_port(gateway, 9274)
    page = await profile.open(9274)
    await profile.context.set_offline(True)
    await drop_socket(page)
    await expect(page.get_by_test_id("connection")).not_to_have_attribute("data-state", "open")
    composer = page.get_by_test_id("composer")
    await composer.fill("typed offline")
    await composer.press("Enter")
    waiting = page.get_by_test_id("outgoing-message")
    await expect(waiting).to_have_attribute("data-state", "pending")
    await expect(waiting).to_contain_text("Waiting for the connection")
    await expect(waiting).to_contain_text("typed offline")
    await expect(composer).to_have_value("")
    assert await _outbox(page) == [["typed offline", None]]
    await page.close()
    profile.errors[:] = [e for e in profile.errors if not _OFFLINE_NOISE.search(e)]
    await profile.context.set_offline(False)
    again = await profile.open(9274)
    await expect(message(again, 2)).to_contain_text("typed offline", timeout=WAIT_MS)
    await expect(again.get_by_test_id("outgoing-message")).to_have_count(0)
    assert await _outbox(again) == []
    assert await _stored(gateway, 9274) == ["hello", "typed offline"]


async def test_an_unanswered_message_is_marked_and_its_retry_stores_it_once(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """When the ack of a sent message is lost, the message is marked "Not sent" after the
    ack timeout; Retry sends it again with the same client id, and it is stored once."""
    dropped: list[str] = []

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        ws.on_message(lambda text: server.send(text))

        def to_page(text: str | bytes) -> None:
            if not dropped and isinstance(text, str) and '"type":"ack"' in text:
                dropped.append(text)  # the first ack is lost on the way
                return
            ws.send(text)

        server.on_message(to_page)

    await _start_port(gateway, 9275)
    await profile.context.route_web_socket(re.compile(r"/ws"), route)
    page = await profile.open(9275)
    await page.evaluate("window.chatGateway.composer.ackTimeoutMs = 1000")
    composer = page.get_by_test_id("composer")
    await composer.fill("acked on the way, lost")
    await composer.press("Enter")
    unsent = page.get_by_test_id("outgoing-message")
    await expect(unsent).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
    await expect(unsent).to_contain_text("Not sent: no answer from the gateway")
    assert await _outbox(page) == [["acked on the way, lost", "no answer from the gateway"]]
    assert len(dropped) == 1
    await unsent.get_by_role("button", name="Retry").click()
    await expect(page.get_by_test_id("outgoing-message")).to_have_count(0, timeout=WAIT_MS)
    await expect(message(page, 2)).to_contain_text("acked on the way, lost", timeout=WAIT_MS)
    assert await _outbox(page) == []
    assert await _stored(gateway, 9275) == ["hello", "acked on the way, lost"]


async def test_a_refused_message_can_be_edited_or_discarded(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """A message the gateway refuses (too large) is marked with the reason; Edit puts its
    text back in the box, Discard drops it from the page and the outbox."""
    await _start_port(gateway, 9276)
    page = await profile.open(9276)
    composer = page.get_by_test_id("composer")
    huge = "x" * (gateway.settings.max_content_bytes + 1)
    for _ in range(2):
        await composer.fill(huge)
        await composer.press("Enter")
    unsent = page.get_by_test_id("outgoing-message")
    await expect(unsent).to_have_count(2, timeout=WAIT_MS)
    for i in range(2):
        await expect(unsent.nth(i)).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
    await expect(unsent.first).to_contain_text("Not sent:")
    await unsent.first.get_by_role("button", name="Edit").click()
    await expect(composer).to_have_value(huge)
    await expect(unsent).to_have_count(1)
    await unsent.first.get_by_role("button", name="Discard").click()
    await expect(unsent).to_have_count(0)
    assert await _outbox(page) == []
    assert await _stored(gateway, 9276) == ["hello"]


async def test_a_rate_limited_message_is_sent_again_after_the_wait(
    browser: Browser,  # noqa: F811 - the fixture
    settings: Settings,
) -> None:
    """A "try again later" from the gateway is not a failure: the message is sent again
    after the wait it names, never marked "Not sent", and stored once."""
    limited = replace(settings, rate_limit_connection_msgs_s=1.0, rate_limit_burst_s=1.0)
    async with run_gateway(limited) as running, tabs_of(browser, running) as tabs:
        await _start_port(running, 9277)
        page = await tabs.open(9277)
        await page.evaluate(
            """() => {
                window.outgoingStates = [];
                new MutationObserver(() => {
                    for (const m of document.querySelectorAll('[data-testid=outgoing-message]')) {
                        window.outgoingStates.push(m.dataset.state);
                    }
                }).observe(document.getElementById('outbox'),
                           {childList: true, subtree: true, attributes: true});
            }"""
        )
        composer = page.get_by_test_id("composer")
        for text in ("first", "second", "third"):
            await composer.fill(text)
            await composer.press("Enter")
        for seq, text in ((2, "first"), (3, "second"), (4, "third")):
            await expect(message(page, seq)).to_contain_text(text, timeout=WAIT_MS)
        await expect(page.get_by_test_id("outgoing-message")).to_have_count(0)
        states: list[str] = await page.evaluate("window.outgoingStates")
        assert "failed" not in states and states, states
        assert await _stored(running, 9277) == ["hello", "first", "second", "third"]
