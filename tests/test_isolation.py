"""Nobody reads another user's chats: user B, on every WebSocket frame and every HTTP route,
against user A's session and port, gets "not found" or nothing of A's.

"Not found" must not even tell that the session exists: B's answer for A's session is
compared with the answer for a session id nobody has. The route and frame lists are read
from the app and from the client frame declarations, so a new route or frame without an
isolation case fails here.
"""

from __future__ import annotations

import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route, WebSocketRoute

from gateway.app import create_app
from gateway.auth import issue_token
from gateway.settings import Settings
from gateway.ws.client_frames import ClientFrame
from tests.conftest import RunningGateway, receive, request, run_gateway, searchable, send

SECRET = "isolation-tests-secret-0123456789abcdef"
PORT = 9260  # A's port, also used by B: ports are per user
WORD = "zebraquartz"  # only in A's messages, so any leak of their text is found by it


def headers(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, user, 600)}"}


@dataclass
class World:
    """A token-mode gateway where A has a session on PORT with WORD in it, and an IDE
    connection serving PORT (so A's port is online)."""

    running: RunningGateway
    a: str
    b: str
    session_id: str
    a_http: httpx.AsyncClient
    b_http: httpx.AsyncClient

    def connect(self, user: str) -> Any:
        return self.running.connect(additional_headers=headers(user))

    async def a_session(self) -> dict[str, Any]:
        response = await self.a_http.get(f"/api/sessions/{self.session_id}")
        assert response.status_code == 200, response.text
        session: dict[str, Any] = response.json()
        return session


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[World]:
    a, b = f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    async with (
        run_gateway(replace(settings, auth_secret=SECRET)) as running,
        running.connect(additional_headers=headers(a)) as ide,
    ):
        hello = {"type": "hello", "kind": "ide", "ports": [PORT], "client": {"name": "t"}}
        assert (await request(ide, hello))["type"] == "welcome"
        content = f"the {WORD} plan"
        ack = await request(ide, {"type": "message", "port": PORT, "content": content})
        assert ack["type"] == "ack", ack
        await searchable(running)
        base = running.http_url
        async with (
            httpx.AsyncClient(base_url=base, headers=headers(a)) as a_http,
            httpx.AsyncClient(base_url=base, headers=headers(b)) as b_http,
        ):
            hits = (await a_http.get("/api/search", params={"q": WORD})).json()["results"]
            assert len(hits) == 1  # the positive control: A finds it
            yield World(running, a, b, ack["session_id"], a_http, b_http)


def assert_nothing_of_a(world: World, body: str) -> None:
    """A response or frame of B's holds neither A's session, A's user id nor A's words."""
    for secret in (world.session_id, world.a, WORD):
        assert secret not in body, f"{secret!r} leaked to B: {body}"


# --- HTTP ---------------------------------------------------------------------------------

HttpCase = Callable[[World], Awaitable[None]]


async def same_as_unknown(world: World, method: str, path: str, **kwargs: Any) -> None:
    """B's request on A's session answers exactly as on a session nobody has: 404."""
    theirs = await world.b_http.request(method, path.format(world.session_id), **kwargs)
    nobodys = await world.b_http.request(method, path.format(uuid.uuid4()), **kwargs)
    assert theirs.status_code == 404, theirs.text
    assert (theirs.status_code, theirs.json()) == (nobodys.status_code, nobodys.json())
    assert_nothing_of_a(world, theirs.text)


async def get_session(world: World) -> None:
    await same_as_unknown(world, "GET", "/api/sessions/{}")


async def patch_session(world: World) -> None:
    before = await world.a_session()
    change = {"title": "mine", "pinned": True}
    await same_as_unknown(world, "PATCH", "/api/sessions/{}", json=change)
    await same_as_unknown(world, "PATCH", "/api/sessions/{}", json={"status": "archived"})
    assert await world.a_session() == before


async def delete_session(world: World) -> None:
    await same_as_unknown(world, "DELETE", "/api/sessions/{}")
    assert (await world.a_session())["status"] == "active"


async def session_messages(world: World) -> None:
    await same_as_unknown(world, "GET", "/api/sessions/{}/messages", params={"after_seq": 0})


async def list_sessions(world: World) -> None:
    queries: list[dict[str, str | int]] = [
        {}, {"port": PORT}, {"status": "archived"}, {"q": WORD}, {"pinned": "true"},
    ]  # fmt: skip
    for params in queries:
        response = await world.b_http.get("/api/sessions", params=params)
        assert response.status_code == 200 and response.json()["sessions"] == [], response.text


async def create_session(world: World) -> None:
    """B opening a session on the same port number rotates B's port, not A's."""
    response = await world.b_http.post("/api/sessions", json={"port": PORT, "title": "b's"})
    assert response.status_code in (200, 201), response.text
    assert response.json()["id"] != world.session_id
    assert_nothing_of_a(world, response.text)
    assert (await world.a_session())["status"] == "active"


async def port_messages(world: World) -> None:
    response = await world.b_http.get(f"/api/ports/{PORT}/messages")
    assert response.status_code == 200 and response.json()["messages"] == [], response.text


async def list_ports(world: World) -> None:
    """Neither A's port nor A's presence on it."""
    response = await world.b_http.get("/api/ports")
    assert response.status_code == 200 and response.json()["ports"] == [], response.text


async def stats(world: World) -> None:
    response = await world.b_http.get("/api/stats")
    assert response.status_code == 200, response.text
    assert response.json() == {"sessions": {"active": 0, "archived": 0, "total": 0}, "messages": 0}


async def search(world: World) -> None:
    queries: list[dict[str, str | int]] = [{"q": WORD}, {"q": WORD, "port": PORT}, {"q": "plan"}]
    for params in queries:
        response = await world.b_http.get("/api/search", params=params)
        assert response.status_code == 200 and response.json()["results"] == [], response.text


def public(path: str) -> HttpCase:
    """A route that serves no user's data: it must not carry A's either."""

    async def case(world: World) -> None:
        response = await world.b_http.get(path)
        assert response.status_code == 200, response.text
        assert_nothing_of_a(world, response.text)

    return case


HTTP_CASES: dict[tuple[str, str], HttpCase] = {
    ("GET", "/api/sessions/{session_id}"): get_session,
    ("PATCH", "/api/sessions/{session_id}"): patch_session,
    ("DELETE", "/api/sessions/{session_id}"): delete_session,
    ("GET", "/api/sessions/{session_id}/messages"): session_messages,
    ("GET", "/api/sessions"): list_sessions,
    ("POST", "/api/sessions"): create_session,
    ("GET", "/api/ports/{port}/messages"): port_messages,
    ("GET", "/api/ports"): list_ports,
    ("GET", "/api/stats"): stats,
    ("GET", "/api/search"): search,
    # Operator and static routes: no user's data, so none of A's (metrics are totals).
    ("GET", "/healthz"): public("/healthz"),
    ("GET", "/readyz"): public("/readyz"),
    ("GET", "/metrics"): public("/metrics"),
    ("GET", "/openapi.json"): public("/openapi.json"),
    ("GET", "/"): public("/"),
    ("GET", "/ui/ide-ports.js"): public("/ui/ide-ports.js"),
    ("GET", "/ui"): public("/ui/app.js"),  # the static files' mount
}


def app_routes() -> set[tuple[str, str]]:
    """Every (method, path) the app answers, HEAD aside (it answers as GET does)."""
    found: set[tuple[str, str]] = set()
    for route in create_app(Settings(auth_secret=SECRET)).routes:
        if isinstance(route, Route):
            found |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
        elif isinstance(route, Mount):
            found.add(("GET", route.path))
        else:
            assert isinstance(route, WebSocketRoute), route  # /ws: the frames below
    return found


def test_every_http_route_has_an_isolation_case() -> None:
    """The cases cover exactly the app's routes: a new route needs its case here."""
    assert app_routes() == set(HTTP_CASES)


@pytest.mark.parametrize("route", sorted(HTTP_CASES), ids=lambda r: f"{r[0]} {r[1]}")
async def test_another_users_http_request_finds_nothing(
    world: World, route: tuple[str, str]
) -> None:
    """B's request on this route answers "not found" for A's session, or nothing of A's."""
    await HTTP_CASES[route](world)


# --- WebSocket ----------------------------------------------------------------------------


def frame_tags() -> set[str]:
    """The `type` of every frame a client may send, from their declarations."""
    return {str(frame.__struct_config__.tag) for frame in typing.get_args(ClientFrame)}


async def ws_same_as_unknown(world: World, frame: dict[str, Any]) -> dict[str, Any]:
    """B's frame naming A's session is answered exactly as one naming nobody's session."""
    async with world.connect(world.b) as ws:
        theirs = await request(ws, {**frame, "session_id": world.session_id})
        nobodys = await request(ws, {**frame, "session_id": str(uuid.uuid4())})
    # An answer may echo the id B sent (`unsubscribed` does); beyond that, the same answer.
    echo = {"session_id": world.session_id} if "session_id" in nobodys else {}
    assert theirs == nobodys | echo
    assert_nothing_of_a(world, str({k: v for k, v in theirs.items() if k != "session_id"}))
    return theirs


async def ws_subscribe(world: World) -> None:
    for since in ({}, {"since_seq": 0}):
        answer = await ws_same_as_unknown(world, {"type": "subscribe", **since})
        assert answer["type"] == "error" and answer["code"] == "not_found", answer


async def ws_unsubscribe(world: World) -> None:
    """Unsubscribing names only what the connection holds: A's id is answered as any id."""
    answer = await ws_same_as_unknown(world, {"type": "unsubscribe"})
    assert answer["type"] in ("unsubscribed", "error"), answer


async def ws_writes(world: World) -> None:
    """`message`, `extracted` and `session.new` on A's port number go to B's own sessions."""
    async with world.connect(world.b) as ws:
        acks = [
            await request(ws, {"type": "message", "port": PORT, "content": "b one"}),
            await request(
                ws, {"type": "extracted", "port": PORT, "messages": [{"content": "b two"}]}
            ),
        ]
        rotated = await request(ws, {"type": "session.new", "port": PORT})
    for answer in (*acks, rotated):
        assert answer["type"] in ("ack", "session"), answer
        assert_nothing_of_a(world, str(answer))
    assert acks[0]["results"][0]["seq"] == 1  # B's session starts at 1, A's is untouched
    session = await world.a_session()
    assert session["status"] == "active" and session["message_count"] == 1, session


async def ws_hello_and_ping(world: World) -> None:
    """B's welcome names B; an IDE hello of B on A's port does not touch A's presence."""
    async with world.connect(world.b) as ws:
        hello = {"type": "hello", "kind": "ide", "ports": [PORT], "client": {"name": "t"}}
        welcome = await request(ws, hello)
        assert welcome["type"] == "welcome" and welcome["user_id"] == world.b, welcome
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"
    ports = (await world.a_http.get("/api/ports")).json()["ports"]
    assert [(p["port"], p["online"]) for p in ports] == [(PORT, True)]


WS_CASES: dict[str, Callable[[World], Awaitable[None]]] = {
    "subscribe": ws_subscribe,
    "unsubscribe": ws_unsubscribe,
    "message": ws_writes,
    "extracted": ws_writes,
    "session.new": ws_writes,
    "hello": ws_hello_and_ping,
    "ping": ws_hello_and_ping,
}


def test_every_client_frame_has_an_isolation_case() -> None:
    """The cases cover exactly the frames a client may send."""
    assert frame_tags() == set(WS_CASES)


WS_CASE_NAMES = sorted({case.__name__: case for case in WS_CASES.values()})


@pytest.mark.parametrize("name", WS_CASE_NAMES)
async def test_another_users_frames_find_nothing(world: World, name: str) -> None:
    """B's frames against A's session and port: "not found", or B's own data only."""
    cases = {case.__name__: case for case in WS_CASES.values()}
    await cases[name](world)


async def test_no_live_event_of_a_reaches_b(world: World) -> None:
    """B subscribed to the session list and to A's port number gets none of A's messages,
    session changes or presence; B's own message, sent after them, arrives (the control)."""
    async with world.connect(world.b) as tab, world.connect(world.a) as a_ide:
        assert (await request(tab, {"type": "subscribe", "sessions": True}))["type"] == "subscribed"
        on_port = await request(tab, {"type": "subscribe", "port": PORT, "since_seq": 0})
        assert on_port["type"] == "subscribed" and on_port.get("session") is None, on_port
        assert_nothing_of_a(world, str(on_port))
        # A: an IDE coming online, a message, a rename, a new session on the port.
        hello = {"type": "hello", "kind": "ide", "ports": [PORT, PORT + 1], "client": {"name": "t"}}
        await request(a_ide, hello)
        message = {"type": "message", "port": PORT, "content": f"{WORD} 2"}
        assert (await request(a_ide, message))["type"] == "ack"
        path = f"/api/sessions/{world.session_id}"
        renamed = await world.a_http.patch(path, json={"title": WORD})
        assert renamed.status_code == 200
        assert (await request(a_ide, {"type": "session.new", "port": PORT}))["type"] == "session"
        # B's own message: once its event is in, anything of A's would have come before it.
        async with world.connect(world.b) as b_ide:
            await send(b_ide, {"type": "message", "port": PORT, "content": "control"})
            seen: list[dict[str, Any]] = []
            while not any("control" in str(frame) for frame in seen):
                seen.append(await receive(tab))
    for frame in seen:
        assert_nothing_of_a(world, str(frame))
