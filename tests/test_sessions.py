"""Session resolution: a port's active session found or created, races, rotation."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from storage.sessions import preview_of
from tests.conftest import RunningGateway, drained, receive, request, send


async def test_racing_first_messages_on_a_new_port_land_in_one_session(
    gateway: RunningGateway, db: asyncpg.Pool
) -> None:
    """25 connections sending their first message to a new port at once share one session,
    with seqs 1..25 and no gaps."""
    connections = [await gateway.connect().__aenter__() for _ in range(25)]
    try:
        start = asyncio.Event()

        async def first_message(i: int) -> dict[str, object]:
            await start.wait()
            return await request(
                connections[i], {"type": "message", "port": 9230, "content": f"from {i}"}
            )

        tasks = [asyncio.create_task(first_message(i)) for i in range(25)]
        start.set()
        acks = await asyncio.gather(*tasks)
    finally:
        for ws in connections:
            await ws.close()
    assert len({a["session_id"] for a in acks}) == 1
    seqs = sorted(a["results"][0]["seq"] for a in acks)  # type: ignore[index]
    assert seqs == list(range(1, 26))
    await drained(gateway)
    row = await db.fetchrow(
        "SELECT count(*) AS n, max(seq) AS top FROM messages WHERE session_id = $1",
        uuid.UUID(str(acks[0]["session_id"])),
    )
    assert row is not None and (row["n"], row["top"]) == (25, 25)
    active = await db.fetchval(
        "SELECT count(*) FROM sessions WHERE user_id = $1 AND port = 9230",
        gateway.settings.local_user,
    )
    assert active == 1


async def test_ide_type_comes_from_the_port_unless_the_client_says(
    gateway: RunningGateway, db: asyncpg.Pool
) -> None:
    """Ports map to cursor/vscode/windsurf/unknown; `extracted.ide_type` overrides."""
    expected = {9222: "cursor", 9231: "cursor", 9232: "vscode", 9251: "windsurf", 8080: "unknown"}
    async with gateway.connect() as ws:
        for port in expected:
            await request(ws, {"type": "message", "port": port, "content": "x"})
        await request(
            ws,
            {"type": "extracted", "port": 7000, "ide_type": "zed", "messages": [{"content": "y"}]},
        )
    rows = await db.fetch(
        "SELECT port, ide_type FROM sessions WHERE user_id = $1", gateway.settings.local_user
    )
    assert {r["port"]: r["ide_type"] for r in rows} == {**expected, 7000: "zed"}


async def test_session_new_archives_the_active_session_and_opens_a_new_one(
    gateway: RunningGateway, db: asyncpg.Pool
) -> None:
    """`session.new` archives the port's session; later messages go to the new one from seq 1,
    and messages sent before it (without waiting) stay in the old one."""
    async with gateway.connect() as ws:
        first = await request(ws, {"type": "message", "port": 9240, "content": "old 1"})
        # Pipelined: the frame before session.new must land in the old session.
        await send(ws, {"type": "message", "port": 9240, "content": "old 2"})
        await send(ws, {"type": "session.new", "port": 9240, "title": "Refactor", "ref": "n"})
        await send(ws, {"type": "message", "port": 9240, "content": "new 1"})
        old_ack, created, new_ack = [await receive(ws) for _ in range(3)]
    assert old_ack["session_id"] == first["session_id"]
    assert old_ack["results"][0]["seq"] == 2
    assert created["type"] == "session" and created["event"] == "created"
    assert created["ref"] == "n"
    session = created["session"]
    assert session["title"] == "Refactor" and session["status"] == "active"
    assert session["port"] == 9240 and session["ide_type"] == "vscode"
    assert new_ack["session_id"] == session["id"] != first["session_id"]
    assert new_ack["results"][0]["seq"] == 1
    statuses = await db.fetch(
        "SELECT id, status FROM sessions WHERE user_id = $1 AND port = 9240",
        gateway.settings.local_user,
    )
    assert {str(r["id"]): r["status"] for r in statuses} == {
        first["session_id"]: "archived",
        session["id"]: "active",
    }
    await drained(gateway)
    counts = await db.fetch(
        "SELECT id, message_count FROM sessions WHERE user_id = $1 AND port = 9240",
        gateway.settings.local_user,
    )
    assert {str(r["id"]): r["message_count"] for r in counts} == {
        first["session_id"]: 2,
        session["id"]: 1,
    }


async def test_another_connection_follows_the_rotation(gateway: RunningGateway) -> None:
    """After one connection rotates a port, another connection's messages go to the new
    session too (the active session is shared state, not per connection)."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        before = await request(ide, {"type": "message", "port": 9250, "content": "a"})
        created = await request(tab, {"type": "session.new", "port": 9250})
        after = await request(ide, {"type": "message", "port": 9250, "content": "b"})
    assert before["session_id"] != created["session"]["id"]
    assert after["session_id"] == created["session"]["id"]
    assert after["results"][0]["seq"] == 1


async def test_a_session_previews_its_last_message_live_and_after_an_edit(
    gateway: RunningGateway,
) -> None:
    """A session carries the first words of its last message (code marks dropped, white space
    collapsed, at most 120 characters) and its role, in the API and in the live session
    events; an edit of that message renews it."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        await request(tab, {"type": "subscribe", "sessions": True})
        await request(ide, {"type": "message", "port": 9272, "content": "first", "durable": True})
        reply = {"type": "message", "port": 9272, "role": "assistant", "id": "r1",
                 "content": "Use this:\n```python\nprint(`x`)\n```\n" + "word " * 40,
                 "durable": True}  # fmt: skip
        ack = await request(ide, reply)
        assert ack["durability"] == "persisted", ack
        expected = "Use this: print(x) " + ("word " * 40)[: 120 - len("Use this: print(x) ")]
        while True:  # the session events, until the one of the reply's commit
            event = await receive(tab)
            if event["type"] == "session" and event["session"]["message_count"] == 2:
                break
        assert event["session"]["preview"] == expected.rstrip()
        assert event["session"]["preview_role"] == "assistant"
        edited = await request(ide, reply | {"content": "Done: all tests pass"})
        assert edited["durability"] == "persisted", edited
        while True:
            event = await receive(tab)
            if event["type"] == "session" and event["session"]["preview"] != expected.rstrip():
                break
    assert event["session"]["preview"] == "Done: all tests pass"
    assert event["session"]["message_count"] == 2  # an edit is no new message
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        session = (await http.get(f"/api/sessions/{ack['session_id']}")).json()
    assert (session["preview"], session["preview_role"]) == ("Done: all tests pass", "assistant")


@pytest.mark.parametrize(
    "content",
    [
        "plain words",
        "  # Heading\n> quoted **bold** and ~~struck~~\n\n\tindented `code`",
        "```python\nprint('x')\n```\nafter the fence",
        "word " * 60,
        "a" * 130 + " tail",
        "``` \n```",
        "unicode café ✓ and emoji 🎉",
    ],
)
async def test_the_backfill_previews_as_the_writer_does(db: asyncpg.Pool, content: str) -> None:
    """sql/0006's `session_preview`, which filled in the sessions stored before it, gives the
    same preview as the writer's `preview_of`."""
    assert await db.fetchval("SELECT session_preview($1)", content) == preview_of(content)


async def test_a_session_is_named_by_the_first_line_of_its_first_user_message(
    gateway: RunningGateway,
) -> None:
    """Once committed, a session's `auto_title` is its first user message's first line, markdown
    marks dropped, at most 80 characters; later messages and a rename leave it alone."""
    async with gateway.connect() as ws:
        for role, content in [
            ("assistant", "How can I help?"),
            ("user", "\n  ## Fix the *login* bug on Safari\nit fails after the redirect"),
            ("user", "another question"),
        ]:
            frame = {"type": "message", "port": 9270, "role": role, "content": content,
                     "durable": True}  # fmt: skip
            ack = await request(ws, frame)
            assert ack["durability"] == "persisted", ack
        long = {"type": "message", "port": 9271, "content": "x" * 200, "durable": True}
        long_ack = await request(ws, long)
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        path = f"/api/sessions/{ack['session_id']}"
        session = (await http.get(path)).json()
        assert session["title"] is None
        assert session["auto_title"] == "Fix the *login* bug on Safari"
        renamed = (await http.patch(path, json={"title": "Safari"})).json()
        assert (renamed["title"], renamed["auto_title"]) == ("Safari", session["auto_title"])
        other = (await http.get(f"/api/sessions/{long_ack['session_id']}")).json()
        assert other["auto_title"] == "x" * 80
