"""HTTP API: ports and session listing (the parts the web UI needs)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import httpx
import pytest

from storage.writer import BatchWriter
from tests.conftest import RunningGateway, receive, request
from tests.test_live import receive_until


async def test_ports_list_ide_type_active_session_and_online(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """`GET /api/ports` lists the user's ports with IDE type, active session and online."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        await request(tab, {"type": "subscribe", "sessions": True})
        await request(ide, {"type": "hello", "kind": "ide", "ports": [9222]})
        await receive(tab)  # presence online: the state is in place
        first = await request(ide, {"type": "message", "port": 9222, "content": "a"})
        await request(ide, {"type": "message", "port": 9245, "content": "b"})
        body = (await http.get("/api/ports")).json()
    ports = {p["port"]: p for p in body["ports"]}
    assert set(ports) == {9222, 9245}
    assert ports[9222]["ide_type"] == "cursor" and ports[9222]["online"] is True
    assert ports[9245]["ide_type"] == "windsurf" and ports[9245]["online"] is False
    assert ports[9222]["active_session"]["id"] == first["session_id"]


async def test_a_port_label_is_listed_and_announced_and_can_be_taken_away(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """`PATCH /api/ports/{port}` names a port (trimmed), `GET /api/ports` lists the name, every
    session-list subscriber gets a `port` event; "" or null takes it away; bad input is a 400
    that changes nothing."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        await request(ide, {"type": "message", "port": 9246, "content": "a"})
        await request(tab, {"type": "subscribe", "sessions": True})
        named = await http.patch("/api/ports/9246", json={"label": "  billing-api "})
        assert named.status_code == 200 and named.json() == {"port": 9246, "label": "billing-api"}
        [*_, event] = await receive_until(tab, lambda f: f["type"] == "port")
        assert event == {"type": "port", "port": 9246, "label": "billing-api"}
        ports = {p["port"]: p for p in (await http.get("/api/ports")).json()["ports"]}
        assert ports[9246]["label"] == "billing-api"
        for bad in ({"label": "x" * 81}, {"label": 7}, {"label": "a\u0000b"}, {}, {"x": 1}):
            answer = await http.patch("/api/ports/9246", json=bad)
            assert answer.status_code == 400, (bad, answer.text)
            assert answer.json()["error"]["code"] == "bad_request"
        for port in ("0", "65536", "x"):
            assert (await http.patch(f"/api/ports/{port}", json={"label": "a"})).status_code == 400
        cleared = await http.patch("/api/ports/9246", json={"label": ""})
        assert cleared.json() == {"port": 9246, "label": None}
        [*_, event] = await receive_until(tab, lambda f: f["type"] == "port")
        assert event == {"type": "port", "port": 9246, "label": None}
        assert (await http.patch("/api/ports/9246", json={"label": None})).status_code == 200
    ports = {p["port"]: p for p in (await http.get("/api/ports")).json()["ports"]}
    assert ports[9246]["label"] is None


async def test_sessions_list_is_keyset_paginated_newest_first(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """`GET /api/sessions` pages through every session once, newest activity first, and
    filters by port and status."""
    async with gateway.connect() as ide:
        await request(ide, {"type": "message", "port": 9300, "content": "x"})
        created = [await request(ide, {"type": "session.new", "port": 9300}) for _ in range(4)]
        await request(ide, {"type": "message", "port": 9301, "content": "y"})
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", "port": "9300"} | ({"cursor": cursor} if cursor else {})
        body = (await http.get("/api/sessions", params=params)).json()
        seen += [s["id"] for s in body["sessions"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    assert seen[0] == created[-1]["session"]["id"]  # the newest first
    active = (await http.get("/api/sessions", params={"status": "active"})).json()["sessions"]
    assert {s["port"] for s in active} == {9300, 9301}
    bad = await http.get("/api/sessions", params={"cursor": "!!"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    bad_status = await http.get("/api/sessions", params={"status": "gone"})
    assert bad_status.status_code == 400


async def test_post_session_rotates_and_port_subscribers_follow(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """`POST /api/sessions` archives the port's session and opens a new one; a port
    subscriber gets archived, created, then the new session's messages."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        old = await request(ide, {"type": "message", "port": 9310, "content": "old"})
        await request(tab, {"type": "subscribe", "port": 9310})
        response = await http.post("/api/sessions", json={"port": 9310, "title": "Fresh"})
        assert response.status_code == 201
        new = response.json()
        assert new["title"] == "Fresh" and new["status"] == "active" and new["port"] == 9310
        events = [await receive(tab) for _ in range(2)]
        assert [(e["event"], e["session"]["id"]) for e in events] == [
            ("archived", old["session_id"]),
            ("created", new["id"]),
        ]
        ack = await request(ide, {"type": "message", "port": 9310, "content": "new"})
        assert ack["session_id"] == new["id"]
        live = await receive(tab)
        assert (live["session_id"], live["message"]["content"]) == (new["id"], "new")


async def test_patch_and_delete_reach_session_list_subscribers(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """Rename, pin, archive, unarchive and delete each answer with the session and reach
    `sessions: true` subscribers as session events."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        first = await request(ide, {"type": "message", "port": 9311, "content": "x"})
        sid = first["session_id"]
        await request(tab, {"type": "subscribe", "sessions": True})
        path = f"/api/sessions/{sid}"
        renamed = await http.patch(path, json={"title": "Plan", "pinned": True})
        assert renamed.status_code == 200
        assert (renamed.json()["title"], renamed.json()["pinned"]) == ("Plan", True)
        archived = (await http.patch(path, json={"status": "archived"})).json()
        assert archived["status"] == "archived"
        # The port has no active session now: the next message opens a new one.
        other = await request(ide, {"type": "message", "port": 9311, "content": "y"})
        assert other["session_id"] != sid
        back = (await http.patch(path, json={"status": "active"})).json()
        assert back["status"] == "active"
        ack = await request(ide, {"type": "message", "port": 9311, "content": "z"})
        assert ack["session_id"] == sid  # unarchived: the port's active session again
        assert (await http.delete(path)).status_code == 204
        assert (await http.get(path)).status_code == 404
        assert (await http.get(path + "/messages")).status_code == 404
        frames = await _session_events(tab, until=("deleted", sid))
    about_sid = [f["event"] for f in frames if f["session"]["id"] == sid]
    assert about_sid[0] == "updated" and "archived" in about_sid and about_sid[-1] == "deleted"
    assert any(f["session"]["title"] == "Plan" and f["session"]["pinned"] for f in frames)
    displaced = [f for f in frames if f["event"] == "archived" and f["session"]["id"] != sid]
    assert [f["session"]["id"] for f in displaced] == [other["session_id"]]


async def _session_events(ws: Any, *, until: tuple[str, str]) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await receive(ws)
        if frame["type"] != "session":
            continue
        frames.append(frame)
        if (frame["event"], frame["session"]["id"]) == until:
            return frames


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("POST", {"port": 0}),
        ("POST", {"port": 9, "title": 5}),
        ("POST", {"port": 9, "extra": 1}),
        ("POST", [1]),
        ("PATCH", {"status": "deleted"}),
        ("PATCH", {"pinned": "yes"}),
        ("PATCH", {"title": "x" * 201}),
    ],
)
async def test_bad_session_bodies_are_400(
    gateway: RunningGateway, http: httpx.AsyncClient, method: str, body: Any
) -> None:
    """Malformed create and patch bodies get 400 with the contract's error body."""
    async with gateway.connect() as ide:
        sid = (await request(ide, {"type": "message", "port": 9312, "content": "x"}))["session_id"]
    path = "/api/sessions" if method == "POST" else f"/api/sessions/{sid}"
    response = await http.request(method, path, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


async def test_sessions_filter_by_pinned_and_title(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """`pinned` and `q` (a literal, case-insensitive title substring) filter the list."""
    titles = ["Refactor parser", "100% done_now", "refactor UI"]
    ids = []
    for i, title in enumerate(titles):
        response = await http.post("/api/sessions", json={"port": 9320 + i, "title": title})
        ids.append(response.json()["id"])
    await http.patch(f"/api/sessions/{ids[2]}", json={"pinned": True})

    async def titles_for(**params: str) -> set[str]:
        body = (await http.get("/api/sessions", params=params)).json()
        return {s["title"] for s in body["sessions"]}

    assert await titles_for(q="refactor") == {"Refactor parser", "refactor UI"}
    assert await titles_for(q="0% d") == {"100% done_now"}
    assert await titles_for(q="_") == {"100% done_now"}  # not a wildcard
    assert await titles_for(pinned="true") == {"refactor UI"}
    assert (await http.get("/api/sessions", params={"pinned": "maybe"})).status_code == 400


async def test_port_messages_span_sessions_newest_first(
    gateway_no_writer: RunningGateway,
) -> None:
    """`GET /api/ports/{port}/messages` gives the port's newest messages across its sessions,
    newest first, buffered ones included, deleted sessions left out."""
    async with gateway_no_writer.connect() as ide, httpx.AsyncClient(
        base_url=gateway_no_writer.http_url
    ) as http:
        for text in ("a1", "a2"):
            await request(ide, {"type": "message", "port": 9330, "content": text})
        await request(ide, {"type": "session.new", "port": 9330})
        for text in ("b1", "b2", "b3"):
            await request(ide, {"type": "message", "port": 9330, "content": text})
        gone = await http.post("/api/sessions", json={"port": 9331})
        await request(ide, {"type": "message", "port": 9331, "content": "other port"})
        await http.delete(f"/api/sessions/{gone.json()['id']}")
        body = (await http.get("/api/ports/9330/messages", params={"limit": "4"})).json()
        running = gateway_no_writer.gateway
        writer = BatchWriter(running.pool, running.redis, running.keys)
        async with writer.running():
            await asyncio.wait_for(writer.wait_drained(), 15)
        written = (await http.get("/api/ports/9330/messages", params={"limit": "4"})).json()
        other = (await http.get("/api/ports/9331/messages")).json()
        bad = await http.get("/api/ports/70000/messages")
    assert [m["content"] for m in body["messages"]] == ["b3", "b2", "b1", "a2"]
    assert written["messages"] == body["messages"]  # the same from PostgreSQL
    assert len({m["session_id"] for m in body["messages"]}) == 2
    assert [m["content"] for m in other["messages"]] == []  # its only session was deleted
    assert bad.status_code == 400


async def test_hostile_parameters_are_400_not_500(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """Parameters that once reached PostgreSQL and failed there are refused up front: a seq
    past bigint, a NUL in q, a non-ASCII digit as port, a cursor out of the date range."""
    async with gateway.connect() as ide:
        sid = (await request(ide, {"type": "message", "port": 9340, "content": "x"}))["session_id"]
    cursor = base64.urlsafe_b64encode(
        f"9999-12-31T23:59:59-05:00|{uuid.uuid4()}".encode()
    ).decode()
    naive = base64.urlsafe_b64encode(f"2026-01-01T00:00:00|{uuid.uuid4()}".encode()).decode()
    answers = [
        await http.get(f"/api/sessions/{sid}/messages", params={"after_seq": str(2**64)}),
        await http.get(f"/api/sessions/{sid}/messages", params={"before_seq": str(2**63)}),
        await http.get("/api/sessions", params={"q": "a\x00b"}),
        await http.get("/api/ports/%C2%B2/messages"),
        await http.get("/api/sessions", params={"cursor": cursor}),
        await http.get("/api/sessions", params={"cursor": naive}),
    ]
    assert [a.status_code for a in answers] == [400] * 6
    assert {a.json()["error"]["code"] for a in answers} == {"bad_request"}
