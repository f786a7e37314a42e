"""Messages in the web UI, in real Chromium (issue 16, point 6): markdown tables as tables,
a Copy button on code blocks, and long messages collapsed behind "Show more"."""

from __future__ import annotations

from playwright.async_api import expect

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


async def test_tables_copy_buttons_and_long_messages(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """A markdown table shows as a table; a code block's Copy button puts its code on the
    clipboard; a long message shows collapsed until "Show more", then "Show less"."""
    reply = "| file | lines |\n|---|--:|\n| app.py | 120 |\n\n```python\nprint('copied')\n```"
    long_text = "\n".join(f"line {i}" for i in range(200))
    async with gateway.connect() as ide:
        for content in (reply, long_text):
            frame = {"type": "message", "port": 9265, "role": "assistant", "content": content,
                     "content_type": "markdown"}  # fmt: skip
            assert (await request(ide, frame))["type"] == "ack"
    await profile.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = await profile.open(9265)
    first, second = message(page, 1), message(page, 2)
    await expect(first.locator("table th")).to_have_text(["file", "lines"], timeout=WAIT_MS)
    await expect(first.locator("table td")).to_have_text(["app.py", "120"])
    await first.get_by_role("button", name="Copy").click()
    await expect(first.get_by_role("button", name="Copied")).to_be_visible()
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == "print('copied')"
    more = second.get_by_role("button", name="Show more")
    await expect(more).to_have_attribute("aria-expanded", "false")
    body = second.locator(".content")
    collapsed = await body.evaluate("(el) => el.clientHeight < el.scrollHeight")
    assert collapsed
    await more.click()
    await expect(second.get_by_role("button", name="Show less")).to_have_attribute(
        "aria-expanded", "true"
    )
    expanded = await body.evaluate("(el) => el.clientHeight >= el.scrollHeight")
    assert expanded
    await expect(first.get_by_role("button", name="Show more")).to_have_count(0)
