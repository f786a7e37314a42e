"""The web UI's search, in real Chromium (issue 16, point 4): results as you type, each with
its session's title and port and a plain-text snippet; Ctrl+K and "/" to get there, Escape to
close; a port filter; an opened hit brought into view at the matched word."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from tests.conftest import RunningGateway, request, searchable
from tests.test_ui import (  # noqa: F401 - fixtures
    WAIT_MS,
    Tabs,
    browser,
    needs_chromium,
    profile_fixture,
)

pytestmark = needs_chromium


async def _say(gateway: RunningGateway, port: int, content: str, **fields: object) -> str:
    """Send one IDE message; its session id."""
    async with gateway.connect() as ide:
        ack = await request(ide, {"type": "message", "port": port, "content": content, **fields})
    assert ack["type"] == "ack", ack
    session_id: str = ack["session_id"]
    return session_id


def _results(page: Page) -> object:
    return page.get_by_test_id("search-result")


async def test_results_come_as_you_type_naming_session_and_port_in_plain_text(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """Typing shows the hits without Enter; a hit names its session and port, and a code
    block's fences and backticks do not show in its snippet, the match still marked."""
    session_id = await _say(
        gateway, 9260, "Try this:\n```python\nprint(pelican)\n```\nand `pelican` again",
        content_type="markdown",
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        renamed = await http.patch(f"/api/sessions/{session_id}", json={"title": "Birds"})
        assert renamed.status_code == 200
    await searchable(gateway)
    page = await profile.open(9260)
    await page.get_by_test_id("search-input").press_sequentially("pelic")
    await page.get_by_test_id("search-input").press_sequentially("an")
    hit = page.get_by_test_id("search-result")
    await expect(hit).to_have_count(1, timeout=WAIT_MS)
    await expect(hit).to_contain_text("Birds")
    await expect(hit).to_contain_text(":9260")
    snippet = hit.locator(".search-result-snippet")
    await expect(snippet).not_to_contain_text("`")
    await expect(snippet).not_to_contain_text("python")
    await expect(snippet).to_contain_text("print(pelican)")
    await expect(snippet.locator("mark")).to_have_text(["pelican", "pelican"])


async def test_shortcuts_reach_the_search_and_escape_closes_the_results(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """Ctrl+K, and "/" outside a text field, focus the search; "/" in the message box is
    typed; Escape empties the search and closes its results."""
    await _say(gateway, 9261, "the heron waits")
    await searchable(gateway)
    page = await profile.open(9261)
    field = page.get_by_test_id("search-input")
    await page.locator("#conversation-title").click()
    await page.keyboard.press("Control+k")
    await expect(field).to_be_focused()
    await page.locator("#conversation-title").click()
    await page.keyboard.press("/")
    await expect(field).to_be_focused()
    await expect(field).to_have_value("")
    composer = page.get_by_test_id("composer")
    await composer.click()
    await page.keyboard.type("a/b")
    await expect(composer).to_have_value("a/b")
    await field.click()
    await field.fill("heron")
    await expect(page.get_by_test_id("search-result")).to_have_count(1, timeout=WAIT_MS)
    await field.press("Escape")
    await expect(page.get_by_test_id("search-results")).to_be_hidden()
    await expect(page.get_by_test_id("search-status")).to_be_hidden()
    await expect(field).to_have_value("")


async def test_the_port_filter_keeps_to_one_port(profile: Tabs, gateway: RunningGateway) -> None:
    """With a port chosen, only that port's messages are found."""
    await _say(gateway, 9262, "an ibis here")
    await _say(gateway, 9263, "an ibis there")
    await searchable(gateway)
    page = await profile.open(9262)
    await page.get_by_test_id("search-input").fill("ibis")
    hits = page.get_by_test_id("search-result")
    await expect(hits).to_have_count(2, timeout=WAIT_MS)
    await page.get_by_label("Search in").select_option(label="Port 9263")
    await expect(hits).to_have_count(1, timeout=WAIT_MS)
    await expect(hits).to_contain_text(":9263")
    await page.get_by_label("Search in").select_option(label="All ports")
    await expect(hits).to_have_count(2, timeout=WAIT_MS)


async def test_an_opened_hit_brings_the_matched_word_into_view(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """A match at the end of a very long message is scrolled into view itself (marked), not
    the message's middle."""
    lines = "\n".join(f"line {i} of a long reply" for i in range(400))
    await _say(gateway, 9264, f"{lines}\nfinally the flamingo")
    await _say(gateway, 9264, "a short one after it")
    await searchable(gateway)
    page = await profile.open(9264)
    await page.get_by_test_id("search-input").fill("flamingo")
    hit = page.get_by_test_id("search-result")
    await expect(hit).to_have_count(1, timeout=WAIT_MS)
    await page.locator("#scroller").evaluate("(el) => { el.scrollTop = 0; }")
    await hit.click()
    in_view = """() => {
        const marked = CSS.highlights.get('search-hit');
        if (!marked) return false;
        const [range] = marked;
        const box = range.getBoundingClientRect();
        const frame = document.getElementById('scroller').getBoundingClientRect();
        const inside = box.top >= frame.top && box.bottom <= frame.bottom;
        return range.toString() === 'flamingo' && inside;
    }"""
    await page.wait_for_function(in_view, timeout=WAIT_MS)


async def test_sessions_are_found_by_name_and_untitled_hits_use_the_automatic_title(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """A session whose name matches is listed above the messages and opens on a click; a hit
    in an untitled session is named by its first user message, as the session list names it."""
    first = await _say(gateway, 9268, "Where do cormorants nest?")
    async with gateway.connect() as ide:
        assert (await request(ide, {"type": "session.new", "port": 9268}))["type"] == "session"
    await _say(gateway, 9268, "something else entirely")
    await searchable(gateway)
    page = await profile.open(9268)
    await expect(page.locator("#conversation-title")).to_contain_text(
        "something else entirely", timeout=WAIT_MS
    )
    await page.get_by_test_id("search-input").fill("cormorants")
    named = page.get_by_test_id("search-session")
    await expect(named).to_have_count(1, timeout=WAIT_MS)
    await expect(named).to_contain_text("Where do cormorants nest?")
    await expect(named.locator("mark")).to_have_text(["cormorants"])
    await expect(named).to_contain_text(":9268 · 1 message · archived")
    hit = page.get_by_test_id("search-result")
    await expect(hit.locator(".search-result-session")).to_have_text("Where do cormorants nest?")
    await expect(page.get_by_test_id("search-status")).to_have_text("1 session, 1 message")
    await named.click()
    await expect(page.locator("#conversation-title")).to_contain_text(
        "Where do cormorants nest?", timeout=WAIT_MS
    )
    await expect(page.locator('[data-testid="message"][data-seq="1"]')).to_contain_text(
        "Where do cormorants nest?"
    )
    assert f"session={first}" in await page.evaluate("location.hash")  # a deep link to it
