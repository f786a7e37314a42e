"""Managing sessions in the web UI, in real Chromium (issue 16, point 1): New chat (button and
shortcut), inline Rename, Pin / Unpin, Archive / Unarchive and Delete, each seen live in a
second tab of the same user."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.async_api import Dialog, Page, expect

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


async def _ide_message(gateway: RunningGateway, port: int, content: str) -> dict[str, Any]:
    async with gateway.connect() as ide:
        ack = await request(ide, {"type": "message", "port": port, "content": content})
    assert ack["type"] == "ack", ack
    return ack


async def _two_sessions(
    gateway: RunningGateway, port: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The acks of "older chat", in a session archived by a New chat, and "newer chat"."""
    older = await _ide_message(gateway, port, "older chat")
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        assert (await http.post("/api/sessions", json={"port": port})).status_code == 201
    return older, await _ide_message(gateway, port, "newer chat")


def _sessions(page: Page) -> Any:
    return page.get_by_test_id("session-item")


async def _session(gateway: RunningGateway, session_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        response = await http.get(f"/api/sessions/{session_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_new_chat_by_button_and_by_shortcut_shows_in_every_tab(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """ "New chat" starts a new active session on the port, shown at once in both tabs; the
    documented shortcut (Ctrl+Shift+O) does the same."""
    await _ide_message(gateway, 9240, "first chat")
    one, two = await profile.open(9240), await profile.open(9240)
    for page in (one, two):
        await expect(message(page, 1)).to_be_visible(timeout=WAIT_MS)
    await one.get_by_role("button", name="New chat", exact=True).click()
    for page in (one, two):
        await expect(_sessions(page)).to_have_count(2, timeout=WAIT_MS)
        await expect(page.locator('[data-testid="message"]')).to_have_count(0, timeout=WAIT_MS)
        await expect(page.locator("#conversation-info")).to_contain_text("active session")
    await two.keyboard.press("Control+Shift+O")
    for page in (one, two):
        await expect(_sessions(page)).to_have_count(3, timeout=WAIT_MS)
    active = one.locator('[data-testid="session-item"][data-active="true"]')
    await expect(active).to_have_count(1)
    await expect(active).to_have_attribute("aria-current", "true")


async def test_rename_is_inline_and_shows_in_every_tab(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """Rename turns the title into a field: Enter saves (both tabs show it, the API has it),
    Escape cancels, an empty title goes back to the derived one."""
    ack = await _ide_message(gateway, 9241, "notes")
    one, two = await profile.open(9241), await profile.open(9241)
    title = one.locator("#conversation-title")
    await expect(title).to_have_text("notes", timeout=WAIT_MS)  # named by its first message
    await one.get_by_role("button", name="Rename", exact=True).click()
    field = one.get_by_role("textbox", name="Session title")
    await expect(field).to_be_focused()
    await field.fill("Refactor plan")
    await field.press("Enter")
    for page in (one, two):
        await expect(page.locator("#conversation-title")).to_have_text(
            "Refactor plan", timeout=WAIT_MS
        )
        await expect(_sessions(page).first).to_contain_text("Refactor plan")
    assert (await _session(gateway, ack["session_id"]))["title"] == "Refactor plan"
    await one.get_by_role("button", name="Rename", exact=True).click()
    await field.fill("Not this")
    await field.press("Escape")
    await expect(field).to_be_hidden()
    await expect(title).to_have_text("Refactor plan")
    await expect(one.get_by_role("button", name="Rename", exact=True)).to_be_focused()
    await one.get_by_role("button", name="Rename", exact=True).click()
    await field.fill("")
    await field.press("Enter")
    for page in (one, two):
        await expect(page.locator("#conversation-title")).to_have_text("notes", timeout=WAIT_MS)
    assert (await _session(gateway, ack["session_id"]))["title"] is None


async def test_pin_puts_the_session_first_and_marks_it_in_every_tab(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """A pinned session comes first in both tabs' lists and says so; Unpin puts it back."""
    old, _ = await _two_sessions(gateway, 9242)
    one, two = await profile.open(9242), await profile.open(9242)
    for page in (one, two):
        await expect(_sessions(page)).to_have_count(2, timeout=WAIT_MS)
    older = one.locator(f'[data-session-id="{old["session_id"]}"]')
    await older.click()
    await expect(message(one, 1)).to_contain_text("older chat", timeout=WAIT_MS)
    await one.get_by_role("button", name="Pin", exact=True).click()
    for page in (one, two):
        first = _sessions(page).first
        await expect(first).to_have_attribute("data-session-id", old["session_id"], timeout=WAIT_MS)
        await expect(first).to_have_attribute("data-pinned", "true")
        await expect(first).to_contain_text("pinned")
    await expect(one.locator("#conversation-info")).to_contain_text("pinned")
    await one.get_by_role("button", name="Unpin", exact=True).click()
    for page in (one, two):
        await expect(_sessions(page).first).not_to_have_attribute(
            "data-session-id", old["session_id"], timeout=WAIT_MS
        )
    await expect(one.get_by_role("button", name="Pin", exact=True)).to_be_visible()


async def test_archive_and_unarchive_show_in_every_tab(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """Archive and Unarchive change the session in both tabs and swap the button's name."""
    ack = await _ide_message(gateway, 9243, "to archive")
    one, two = await profile.open(9243), await profile.open(9243)
    await expect(message(one, 1)).to_be_visible(timeout=WAIT_MS)
    item = f'[data-session-id="{ack["session_id"]}"]'
    await one.get_by_role("button", name="Archive", exact=True).click()
    for page in (one, two):
        await expect(page.locator(item)).to_have_attribute("data-active", "false", timeout=WAIT_MS)
    assert (await _session(gateway, ack["session_id"]))["status"] == "archived"
    await one.locator(item).click()
    await one.get_by_role("button", name="Unarchive", exact=True).click()
    for page in (one, two):
        await expect(page.locator(item)).to_have_attribute("data-active", "true", timeout=WAIT_MS)
    await expect(one.get_by_role("button", name="Archive", exact=True)).to_be_visible()
    assert (await _session(gateway, ack["session_id"]))["status"] == "active"


async def test_delete_asks_first_then_removes_the_session_from_every_tab(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """Delete asks for confirmation: declined, nothing changes; accepted, the session leaves
    both tabs and the API."""
    ack = await _ide_message(gateway, 9244, "short-lived")
    one, two = await profile.open(9244), await profile.open(9244)
    item = f'[data-session-id="{ack["session_id"]}"]'
    for page in (one, two):
        await expect(page.locator(item)).to_be_visible(timeout=WAIT_MS)
    asked: list[str] = []

    async def decline(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.dismiss()

    one.once("dialog", decline)
    await one.get_by_role("button", name="Delete", exact=True).click()
    await expect(one.locator(item)).to_be_visible()
    assert len(asked) == 1 and "“short-lived”" in asked[0] and "1 message" in asked[0]
    one.once("dialog", lambda dialog: dialog.accept())
    await one.get_by_role("button", name="Delete", exact=True).click()
    for page in (one, two):
        await expect(page.locator(item)).to_have_count(0, timeout=WAIT_MS)
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        response = await http.get(f"/api/sessions/{ack['session_id']}")
    assert response.status_code == 404


async def _archive(gateway: RunningGateway, session_id: str) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        response = await http.patch(f"/api/sessions/{session_id}", json={"status": "archived"})
    assert response.status_code == 200, response.text


async def test_archived_sessions_are_listed_apart_under_their_heading(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """The port's archived sessions come after its active one, under an "Archived" heading."""
    first, current = await _two_sessions(gateway, 9245)
    page = await profile.open(9245)
    await expect(_sessions(page)).to_have_count(2, timeout=WAIT_MS)
    order: list[str] = await page.locator('[data-port="9245"] ~ .sessions > li').evaluate_all(
        "(items) => items.map((li) => li.dataset.group"
        " || li.querySelector('button').dataset.sessionId)"
    )
    assert order == [current["session_id"], "archived", "archived-today", first["session_id"]]
    await expect(page.get_by_role("heading", name="Archived")).to_be_visible()
    await _archive(gateway, current["session_id"])
    await expect(page.locator('[data-port="9245"] ~ .sessions > li').first).to_have_attribute(
        "data-testid", "archived-heading", timeout=WAIT_MS
    )


async def test_archiving_the_shown_session_keeps_its_messages_in_view(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """Archiving the active session leaves its messages in view in both tabs (the port has
    none active now); the port's next message starts a session both tabs follow again."""
    for text in ("one", "two", "three"):
        await _ide_message(gateway, 9246, text)
    one, two = await profile.open(9246), await profile.open(9246)
    for page in (one, two):
        await expect(message(page, 3)).to_be_visible(timeout=WAIT_MS)
    await one.get_by_role("button", name="Archive", exact=True).click()
    for page in (one, two):
        await expect(page.locator("#conversation-info")).to_contain_text(
            "archived session", timeout=WAIT_MS
        )
        await expect(page.locator('[data-testid="message"]')).to_have_count(3)
        await expect(page.locator("#messages-empty")).to_be_hidden()
        await expect(
            page.get_by_role("button", name="Back to the active session", exact=True)
        ).to_be_hidden()
    await _ide_message(gateway, 9246, "a new chat")
    for page in (one, two):
        await expect(message(page, 1)).to_contain_text("a new chat", timeout=WAIT_MS)
        await expect(page.locator('[data-testid="message"]')).to_have_count(1)
        await expect(page.locator("#conversation-info")).to_contain_text("active session")


async def test_a_port_without_an_active_session_opens_on_its_newest_history(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """A port whose sessions are all archived shows its newest one, not "No messages yet"."""
    ack = await _ide_message(gateway, 9247, "kept for later")
    await _archive(gateway, ack["session_id"])
    page = await profile.open(9247)
    await expect(message(page, 1)).to_contain_text("kept for later", timeout=WAIT_MS)
    await expect(page.locator("#messages-empty")).to_be_hidden()
    await expect(page.locator(f'[data-session-id="{ack["session_id"]}"]')).to_have_attribute(
        "aria-current", "true"
    )


async def test_ports_are_ordered_by_recent_activity_live(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """The most recently active port is listed first, and a new message moves its port up."""
    async with gateway.connect() as ide:
        for port in (9248, 9249, 9250):
            frame = {"type": "message", "port": port, "content": "hi", "durable": True}
            assert (await request(ide, frame))["durability"] == "persisted"
        page = await profile.open(9249)
        ports = page.get_by_test_id("port-item")
        order = "(items) => items.map((item) => Number(item.dataset.port))"
        listed = [p for p in await ports.evaluate_all(order) if p in (9248, 9249, 9250)]
        assert listed == [9250, 9249, 9248]
        frame = {"type": "message", "port": 9248, "content": "back", "durable": True}
        assert (await request(ide, frame))["durability"] == "persisted"
        await expect(ports.first).to_have_attribute("data-port", "9248", timeout=WAIT_MS)


async def test_an_untitled_session_is_named_by_its_first_user_message_live(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """An untitled session shows its first user message's line as its name, in the list and
    the heading of both tabs, as soon as the writer has stored it."""
    async with gateway.connect() as ide:
        hello = {"type": "message", "port": 9238, "role": "assistant", "content": "Hi!"}
        assert (await request(ide, hello))["type"] == "ack"
        one, two = await profile.open(9238), await profile.open(9238)
        for page in (one, two):
            await expect(page.locator("#conversation-title")).to_contain_text(
                "Session of", timeout=WAIT_MS
            )
        ask = {"type": "message", "port": 9238, "content": "Plan the migration\nin detail"}
        assert (await request(ide, ask))["type"] == "ack"
    for page in (one, two):
        await expect(page.locator("#conversation-title")).to_have_text(
            "Plan the migration", timeout=WAIT_MS
        )
        await expect(_sessions(page).first.locator(".session-title")).to_have_text(
            "Plan the migration"
        )


async def test_a_port_with_many_sessions_shows_its_first_few_until_asked(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """A port's list of 12 sessions shows 8 (the newest, the shown one among them) and a
    "Show all 12 sessions" toggle, which shows them all and folds them again."""
    await _ide_message(gateway, 9237, "the first")
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        for _ in range(11):
            assert (await http.post("/api/sessions", json={"port": 9237})).status_code == 201
    page = await profile.open(9237)
    visible = page.locator('[data-testid="session-item"]:visible')
    toggle = page.get_by_test_id("fold-sessions")
    await expect(toggle).to_have_text("Show all 12 sessions", timeout=WAIT_MS)
    await expect(visible).to_have_count(8)
    await expect(page.locator('[data-testid="session-item"][aria-current="true"]')).to_be_visible()
    await toggle.click()
    await expect(visible).to_have_count(12)
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await toggle.click()
    await expect(visible).to_have_count(8)


async def test_history_is_grouped_by_day_and_each_session_previews_its_last_message(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """A port's archived sessions are listed by the day of their latest activity (Today,
    Yesterday, Previous 7 days, Older); each session shows its last message's first words,
    "You:" before the user's, renewed live when a message arrives."""
    ages = {"Older": 40, "Previous 7 days": 4, "Yesterday": 1, "Today": 0}
    sessions = {}
    async with gateway.connect() as ide:
        for label in ages:
            frame = {"type": "message", "port": 9269, "content": f"asked {label}", "durable": True}
            ack = await request(ide, frame)
            assert ack["durability"] == "persisted", ack
            sessions[label] = ack["session_id"]
            assert (await request(ide, {"type": "session.new", "port": 9269}))["type"] == "session"
    async with gateway.gateway.pool.acquire() as conn:
        for label, days in ages.items():
            await conn.execute(
                "UPDATE sessions SET last_message_at = last_message_at - make_interval(days => $2),"
                " created_at = created_at - make_interval(days => $2) WHERE id = $1",
                sessions[label],
                days,
            )
    page = await profile.open(9269)
    await expect(_sessions(page)).to_have_count(5, timeout=WAIT_MS)  # and the new active one
    order: list[str] = await page.locator('[data-port="9269"] ~ .sessions > li').evaluate_all(
        "(items) => items.map((li) => li.querySelector('h3, h4')?.textContent"
        " ?? li.querySelector('.session-title').textContent)"
    )
    assert order == [
        order[0],  # the active session, empty: named by when it started
        "Archived",
        "Today",
        "asked Today",
        "Yesterday",
        "asked Yesterday",
        "Previous 7 days",
        "asked Previous 7 days",
        "Older",
        "asked Older",
    ]
    today = page.locator(f'[data-session-id="{sessions["Today"]}"] .session-preview')
    await expect(today).to_have_text("You: asked Today")
    async with gateway.connect() as ide:
        reply = {"type": "message", "port": 9269, "role": "assistant", "content": "**Sure**, here"}
        ack = await request(ide, reply)
    active = page.locator(f'[data-session-id="{ack["session_id"]}"] .session-preview')
    await expect(active).to_have_text("Sure, here", timeout=WAIT_MS)  # no markdown marks


async def test_a_port_label_is_edited_inline_and_shows_in_every_tab(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """ "Label port" names the port beside its IDE type, in the sidebar and the head of both
    tabs; Escape cancels; an empty label takes it away, in both tabs."""
    await _ide_message(gateway, 9273, "a message")
    one, two = await profile.open(9273), await profile.open(9273)
    port_button = '[data-testid="port-item"][data-port="9273"]'
    await one.get_by_role("button", name="Label port").click()
    field = one.get_by_test_id("port-label-input")
    await expect(field).to_be_focused()
    await field.fill("forgotten")
    await field.press("Escape")
    await expect(one.get_by_test_id("port-label-form")).to_be_hidden()
    await one.get_by_role("button", name="Label port").click()
    await field.fill("billing-api")
    await field.press("Enter")
    for page in (one, two):
        await expect(page.locator(port_button)).to_contain_text(
            ":9273billing-apiunknown", timeout=WAIT_MS
        )
        await expect(page.locator("#conversation-info")).to_contain_text(":9273 · billing-api")
        await expect(page.get_by_role("button", name="Rename port")).to_be_visible()
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        ports = {p["port"]: p for p in (await http.get("/api/ports")).json()["ports"]}
    assert ports[9273]["label"] == "billing-api"
    await two.get_by_role("button", name="Rename port").click()
    await expect(two.get_by_test_id("port-label-input")).to_have_value("billing-api")
    await two.get_by_test_id("port-label-input").fill("")
    await two.get_by_test_id("port-label-input").press("Enter")
    for page in (one, two):
        await expect(page.locator(f"{port_button} .port-label")).to_be_hidden(timeout=WAIT_MS)
        await expect(page.get_by_role("button", name="Label port")).to_be_visible()
