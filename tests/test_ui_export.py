"""Export in the web UI (issue 17, point 5), in real Chromium: the shown session's Export
control lists the three formats, and each downloads the session in that format, in local
mode by the link itself and in token mode through the tab's token."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from gateway.auth import issue_token
from gateway.settings import Settings
from tests.conftest import RunningGateway, request, run_gateway
from tests.test_ui import (  # noqa: F401 - fixtures
    WAIT_MS,
    Tabs,
    browser,
    message,
    needs_chromium,
    profile_fixture,
)

pytestmark = needs_chromium


async def _ide_messages(
    gateway: RunningGateway, port: int, items: list[dict[str, Any]], **connect: Any
) -> str:
    """Store the items as an IDE would; the session's id."""
    async with gateway.connect(**connect) as ide:
        ack = await request(ide, {"type": "extracted", "port": port, "messages": items})
    assert ack["type"] == "ack", ack
    session_id: str = ack["session_id"]
    return session_id


async def _download(page: Page, name: str) -> tuple[str, str]:
    """Open the Export list (which focuses its first format) and take the format named
    `name`: the file's name and text."""
    await page.get_by_role("button", name="Export", exact=True).click()
    first = page.get_by_role("link", name="Markdown transcript (.md)")
    await expect(first).to_be_focused(timeout=WAIT_MS)
    link = page.get_by_role("link", name=name)
    async with page.expect_download(timeout=WAIT_MS) as started:
        await link.click()
    download = await started.value
    path = await download.path()
    await expect(page.get_by_test_id("export-menu")).to_be_hidden()
    text = await asyncio.to_thread(Path(path).read_text)
    return download.suggested_filename, text


ITEMS = [
    {"content": "Export this, please", "role": "user"},
    {"content": "def f():\n    return 1", "role": "assistant", "content_type": "code"},
]


async def test_export_downloads_the_shown_session_in_each_format(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """The toolbar's Export lists Markdown, JSON and the LLM message list; each link downloads
    the shown session in that format, named after it; Escape closes the list."""
    session_id = await _ide_messages(gateway, 9280, ITEMS)
    page = await profile.open(9280)
    await expect(message(page, 2)).to_be_visible(timeout=WAIT_MS)
    toolbar = page.get_by_role("toolbar", name="Session")
    button = toolbar.get_by_role("button", name="Export", exact=True)
    await expect(button).to_be_enabled()
    await expect(button).to_have_attribute("aria-expanded", "false")
    await button.click()
    await expect(button).to_have_attribute("aria-expanded", "true")
    await page.keyboard.press("Escape")
    await expect(page.get_by_test_id("export-menu")).to_be_hidden()
    await expect(button).to_be_focused()

    name, text = await _download(page, "Markdown transcript (.md)")
    assert name == f"export-this-please-{session_id[:8]}.md"
    assert text.startswith("# Export this, please\n")
    assert "## Assistant · " in text and "```\ndef f():\n    return 1\n```" in text
    name, text = await _download(page, "JSON, for chat-gateway import")
    assert name.endswith(".json")
    chat = json.loads(text)
    assert chat["format"] == "chat-gateway.chat/1" and chat["id"] == session_id
    assert [(m["role"], m["content"]) for m in chat["messages"]] == [
        (item["role"], item["content"]) for item in ITEMS
    ]
    name, text = await _download(page, "LLM message list (JSON)")
    assert name.endswith(".openai.json")
    assert json.loads(text) == [{"role": i["role"], "content": i["content"]} for i in ITEMS]


async def test_export_in_token_mode_downloads_with_the_tabs_token(
    profile: Tabs, settings: Settings
) -> None:
    """A tab signed in with a token (which a link cannot carry) downloads the export through
    the API with its token, under the name the gateway gave it."""
    secure = replace(settings, auth_secret="ui-export-secret-0123456789abcdefghij")
    token = issue_token(secure.auth_secret, "alice", 3600)
    async with run_gateway(secure) as running:
        bearer = {"Authorization": f"Bearer {token}"}
        session_id = await _ide_messages(running, 9281, ITEMS, additional_headers=bearer)
        alice = Tabs(profile.context, running, profile.errors)
        page = await alice.open(9281, query=f"?token={token}")
        await expect(message(page, 2)).to_be_visible(timeout=WAIT_MS)
        name, text = await _download(page, "JSON, for chat-gateway import")
        assert name == f"export-this-please-{session_id[:8]}.json"
        assert json.loads(text)["user"] == "alice"
        await page.close()
