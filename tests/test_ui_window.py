"""A long session in the web UI, in real Chromium (issue 16: a page holding 10,000 messages
stays smooth): at most 1,000 messages are on the page at once, whichever part of the session
is read, and reading moves through all of it."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.conftest import RunningGateway, request, searchable
from tests.test_ui import (  # noqa: F401 - fixtures
    WAIT_MS,
    Tabs,
    browser,
    message,
    needs_chromium,
    profile_fixture,
)

pytestmark = needs_chromium

MESSAGES = 1300
MAX_SHOWN = 1000  # conversation.js


async def _rendered(page: Page) -> list[int]:
    """The seqs on the page, in page order."""
    seqs: list[int] = await page.locator('[data-testid="message"]').evaluate_all(
        "(items) => items.map((el) => Number(el.dataset.seq))"
    )
    return seqs


async def _press(page: Page, button: str) -> None:
    """Scroll to the button, as a reader does, and press it. Pressed by script: coming into
    view may already do what it would (the window moves as reading reaches its edge), and
    hide it before a pointer click lands."""
    await page.locator(button).scroll_into_view_if_needed()
    await page.locator(button).evaluate("(button) => button.click()")


async def test_a_long_session_keeps_a_bounded_window_of_messages(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """Loading earlier messages to the first drops the newest past 1,000 (shown again by
    "Show newer messages"); a search hit far back shows its neighbourhood; a live message
    while reading far back waits behind the button, and sending shows the newest."""
    async with gateway.connect() as ide:
        for start in range(1, MESSAGES + 1, 500):
            batch = [
                {"content": f"line {i} ibex{i}", "id": f"m{i}"}
                for i in range(start, min(start + 500, MESSAGES + 1))
            ]
            ack = await request(ide, {"type": "extracted", "port": 9296, "messages": batch})
            assert ack["type"] == "ack", ack
    await searchable(gateway)
    page = await profile.open(9296)
    await expect(message(page, MESSAGES)).to_be_visible(timeout=WAIT_MS)
    assert await _rendered(page) == list(range(MESSAGES - 199, MESSAGES + 1))
    earlier = page.get_by_role("button", name="Load earlier messages")
    await expect(earlier).to_be_visible()
    for _ in range(10):  # bounded: six loads reach the first message
        if await message(page, 1).count():
            break
        await _press(page, "#load-older")
        await expect(page.locator("#load-older")).to_be_enabled(timeout=WAIT_MS)  # loaded
        seqs = await _rendered(page)
        assert len(seqs) <= MAX_SHOWN and seqs == list(range(seqs[0], seqs[-1] + 1))
    assert await _rendered(page) == list(range(1, MAX_SHOWN + 1))
    await expect(earlier).to_be_hidden()
    newer = page.get_by_test_id("show-newer")
    await expect(newer).to_have_text(f"Show newer messages ({MESSAGES - MAX_SHOWN})")
    async with gateway.connect() as ide:
        await request(ide, {"type": "message", "port": 9296, "content": "live while away"})
    await expect(newer).to_have_text(f"Show newer messages ({MESSAGES - MAX_SHOWN + 1})")
    assert len(await _rendered(page)) == MAX_SHOWN  # the live one waits
    for _ in range(5):  # bounded: two steps reach the newest
        if await newer.is_hidden():
            break
        await _press(page, "#show-newer")
    await expect(message(page, MESSAGES + 1)).to_contain_text("live while away")
    seqs = await _rendered(page)
    assert len(seqs) == MAX_SHOWN and seqs[-1] == MESSAGES + 1
    # A search hit far back shows the messages around it, not the whole way there.
    await page.get_by_test_id("search-input").fill("ibex3")
    hit = page.locator('[data-testid="search-result"][data-seq="3"]')
    await hit.click(timeout=WAIT_MS)
    await expect(message(page, 3)).to_be_in_viewport(timeout=WAIT_MS)
    seqs = await _rendered(page)
    assert seqs[0] == 1 and len(seqs) <= MAX_SHOWN
    # Sending while reading far back shows the newest, with the message sent.
    composer = page.get_by_test_id("composer")
    await composer.fill("typed at the start")
    await composer.press("Enter")
    await expect(message(page, MESSAGES + 2)).to_contain_text("typed at the start", timeout=WAIT_MS)
    await expect(message(page, MESSAGES + 2)).to_be_in_viewport()
    assert len(await _rendered(page)) <= MAX_SHOWN
