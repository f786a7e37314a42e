"""HTTP API: ports and session listing (the parts the web UI needs)."""

from __future__ import annotations

import httpx

from tests.conftest import RunningGateway, receive, request


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
