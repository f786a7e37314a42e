"""Tabs inside the web UI, in real Chromium (issue 16, point 5): several chats open at once,
each scrolled where it was left, the same after a reload."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.conftest import RunningGateway, request
from tests.test_ui import (  # noqa: F401 - fixtures
    WAIT_MS,
    Tabs,
    browser,
    message,
    needs_chromium,
    profile_fixture,
)

pytestmark = needs_chromium

# The message's top, in px below the top of the conversation's scrolled view.
_OFFSET = """(seq) => {
    const el = document.querySelector(`[data-testid=message][data-seq="${seq}"]`);
    if (!el) return null;
    return el.getBoundingClientRect().top
        - document.getElementById('scroller').getBoundingClientRect().top;
}"""


async def _scroll_to(page: Page, seq: int, offset: int) -> None:
    """Scroll the conversation so that message `seq` starts `offset` px below the top, and
    wait until the shown tab has noted it."""
    await page.evaluate(
        """([seq, offset]) => {
            const el = document.querySelector(`[data-testid=message][data-seq="${seq}"]`);
            const scroller = document.getElementById('scroller');
            scroller.scrollTop += el.getBoundingClientRect().top
                - scroller.getBoundingClientRect().top - offset;
        }""",
        [seq, offset],
    )
    # The tab keeps the first message in view (here the end of the one before) and its offset.
    await page.wait_for_function(
        """(seq) => {
            const saved = JSON.parse(sessionStorage.getItem('chat-gateway-tabs') || 'null');
            return saved && saved.tabs[saved.active].scroll?.seq === seq - 1;
        }""",
        arg=seq,
        timeout=WAIT_MS,
    )


async def _expect_at(page: Page, seq: int, offset: int) -> None:
    """Wait until message `seq` starts `offset` px (give or take 2) below the view's top."""
    await page.wait_for_function(
        f"([seq, offset]) => {{ const at = ({_OFFSET})(seq);"
        " return at !== null && Math.abs(at - offset) <= 2; }",
        arg=[seq, offset],
        timeout=WAIT_MS,
    )


async def test_chats_open_in_tabs_that_keep_their_place_through_a_reload(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """Ctrl+click opens a port in a new tab; each tab shows its chat scrolled where it was
    left, after switching and after a reload, which brings back the same tabs; a tab closes."""
    async with gateway.connect() as ide:
        batch = [{"content": f"long chat {i}", "id": f"m{i}"} for i in range(1, 301)]
        ack = await request(ide, {"type": "extracted", "port": 9278, "messages": batch})
        assert ack["type"] == "ack", ack
        other = await request(ide, {"type": "message", "port": 9279, "content": "short chat"})
        assert other["type"] == "ack", other
    page = await profile.open(9278)
    tabs = page.get_by_test_id("chat-tab")
    await expect(tabs).to_have_count(1)
    await expect(message(page, 300)).to_be_in_viewport(timeout=WAIT_MS)
    await _scroll_to(page, 150, 40)
    await page.locator('[data-testid="port-item"][data-port="9279"]').click(modifiers=["Control"])
    await expect(tabs).to_have_count(2)
    await expect(tabs.nth(1)).to_have_attribute("aria-selected", "true")
    await expect(tabs.nth(1)).to_contain_text(":9279")
    await expect(message(page, 1)).to_contain_text("short chat", timeout=WAIT_MS)
    await tabs.nth(0).click()
    await expect(tabs.nth(0)).to_have_attribute("aria-selected", "true")
    await _expect_at(page, 150, 40)
    await page.reload()
    await expect(tabs).to_have_count(2, timeout=WAIT_MS)
    await expect(tabs.nth(0)).to_have_attribute("aria-selected", "true")
    await expect(tabs.nth(0)).to_contain_text(":9278")
    await expect(tabs.nth(1)).to_contain_text(":9279 · short chat")
    await _expect_at(page, 150, 40)
    await tabs.nth(0).press("ArrowRight")  # the tabs pattern: arrows move and show
    await expect(tabs.nth(1)).to_be_focused()
    await expect(message(page, 1)).to_contain_text("short chat", timeout=WAIT_MS)
    await page.get_by_role("button", name="Close :9279 · short chat").click()
    await expect(tabs).to_have_count(1)
    await expect(tabs.first).to_have_attribute("aria-selected", "true")
    await _expect_at(page, 150, 40)
    await expect(page.locator(".tab-close")).to_have_count(0)  # the last tab stays
    await page.get_by_role("button", name="New tab").click()  # the shown chat, again
    await expect(tabs).to_have_count(2)
    await expect(tabs.nth(1)).to_have_attribute("aria-selected", "true")
    await expect(tabs.nth(1)).to_contain_text(":9278")
    await expect(message(page, 300)).to_be_in_viewport(timeout=WAIT_MS)  # a new tab: the end
