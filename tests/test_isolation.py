"""Isolation in token mode: user B learns nothing of user A's sessions, messages or ports.

B acts against A's session ids and port numbers with every client frame type of
gateway/ws/client_frames.py and every route of the app. Each answer is exactly the one a
missing session or an unused port gets (`not_found`, 404), or, where the command is scoped to
its user anyway (lists, search, stats, port subscriptions, writes), holds nothing of A's and
changes nothing of A's. Two tests derive the frame tags and the routes from the code and fail
when one has no case here.

The oracle is textual: every answer B gets is searched for A's secrets (A's user id, the ids
of A's sessions and messages, and a random mark in each of A's contents and titles).

Live checks are bounded waits on a positive control, never sleeps: a gateway process has one
Redis pub/sub connection (gateway/ws/hub.py), which hands publications over in the order Redis
took them, so an event of A's that leaked to B would reach B's outbox before the control event
B causes afterwards. B reads up to its control and checks everything before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import string
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import orjson
import pytest
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from websockets.asyncio.client import ClientConnection

from gateway.app import create_app
from gateway.auth import issue_token
from gateway.http import api, openapi
from gateway.settings import Settings
from gateway.ws import client_frames
from tests.conftest import (
    RECV_TIMEOUT,
    RunningGateway,
    drained,
    request,
    run_gateway,
    searchable,
    send,
)
from tests.test_live import receive_until

SECRET = "isolation-test-secret-0123456789abcdef"
PORT = 9222  # A's IDE port: an archived and an active session
OTHER_PORT = 9333  # A's second port: a pinned, titled session
NEW_PORT = 9444  # a port A first uses while B watches
FREE_PORT = 9555  # a port nobody uses: the "unused port" baseline
MISSING = "00000000-0000-7000-8000-000000000000"  # the "missing session" baseline
TS = "2026-01-31T12:00:00Z"


def _letters(n: int) -> str:
    """A random lowercase word (no digits, so the search parser keeps it one word)."""
    return "".join(string.ascii_lowercase[int(c, 16)] for c in uuid.uuid4().hex[:n])


@dataclass
class World:
    """A running token-mode gateway where A has sessions on two ports and an IDE online."""

    running: RunningGateway
    http: httpx.AsyncClient
    alice_user: str
    bob_user: str
    alice_ide: ClientConnection
    mark: str  # in every content and title of A's, in nothing of B's
    word: str  # a searchable word in A's messages (and in B's, for positive controls)
    sessions: dict[str, str] = field(default_factory=dict)  # A's: active, archived, other
    batch: list[dict[str, Any]] = field(default_factory=list)  # A's extracted items (active)
    secrets: set[str] = field(default_factory=set)

    @property
    def alice(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(SECRET, self.alice_user, 600)}"}

    @property
    def bob(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(SECRET, self.bob_user, 600)}"}

    def alice_ws(self) -> Any:
        return self.running.connect(additional_headers=self.alice)

    def bob_ws(self) -> Any:
        return self.running.connect(additional_headers=self.bob)

    async def as_alice(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame on A's IDE connection; every id in the answer becomes a secret."""
        answer = await request(self.alice_ide, frame)
        assert answer["type"] != "error", answer
        self.secrets.update(_ids_in(answer))
        return answer

    def leaked(self, answer: Any) -> list[str]:
        """A's secrets found in an answer B got (a frame, a JSON body, or text)."""
        text = answer if isinstance(answer, str) else orjson.dumps(answer).decode()
        return sorted(secret for secret in self.secrets if secret in text)


def _ids_in(value: Any) -> Iterator[str]:
    """Every session and message id in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("id", "session_id") and isinstance(item, str):
                yield item
            else:
                yield from _ids_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _ids_in(item)


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[World]:
    """A's data, B a stranger: A's IDE serves PORT and OTHER_PORT; on PORT an archived
    session (one message) and an active one (an extracted batch); on OTHER_PORT a pinned,
    titled session."""
    mark, word = "alice" + _letters(12), "word" + _letters(10)
    alice_user, bob_user = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    async with contextlib.AsyncExitStack() as stack:
        running = await stack.enter_async_context(
            run_gateway(replace(settings, auth_secret=SECRET))
        )
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=running.http_url, timeout=RECV_TIMEOUT)
        )
        headers = {"Authorization": f"Bearer {issue_token(SECRET, alice_user, 600)}"}
        ide = await stack.enter_async_context(running.connect(additional_headers=headers))
        w = World(running, http, alice_user, bob_user, ide, mark, word)
        w.secrets |= {alice_user, mark}
        await w.as_alice({"type": "hello", "kind": "ide", "ports": [PORT, OTHER_PORT]})
        first = await w.as_alice(
            {"type": "message", "port": PORT, "id": "a-1", "content": f"{mark} {word} one"}
        )
        await w.as_alice({"type": "session.new", "port": PORT, "title": f"{mark} title"})
        w.batch = [
            {"id": "a-2", "content": f"{mark} {word} two", "role": "assistant"},
            {"content": f"{mark} {word} three", "timestamp": TS},
        ]
        batch = await w.as_alice({"type": "extracted", "port": PORT, "messages": w.batch})
        other = await w.as_alice(
            {"type": "message", "port": OTHER_PORT, "content": f"{mark} {word} four"}
        )
        w.sessions = {
            "archived": first["session_id"],
            "active": batch["session_id"],
            "other": other["session_id"],
        }
        pinned = await http.patch(
            f"/api/sessions/{w.sessions['other']}",
            json={"pinned": True, "title": f"{mark} pinned"},
            headers=w.alice,
        )
        assert pinned.status_code == 200
        yield w


# Helpers shared by the cases.


async def _alice_state(w: World) -> dict[str, Any]:
    """What A sees of each of A's sessions: title, pin, status and messages."""
    state = {}
    for sid in w.sessions.values():
        session = (await w.http.get(f"/api/sessions/{sid}", headers=w.alice)).json()
        page = (await w.http.get(f"/api/sessions/{sid}/messages", headers=w.alice)).json()
        messages = [(m["seq"], m["client_id"], m["content"]) for m in page["messages"]]
        state[sid] = (session["title"], session["pinned"], session["status"], messages)
    return state


async def _alice_control(w: World, tab: ClientConnection) -> None:
    """A's new message on PORT reaches A's port subscription `tab` as a message of A's active
    session, with no session or presence event before it (B caused none)."""
    content = f"{w.mark} control {uuid.uuid4().hex}"
    await w.as_alice({"type": "message", "port": PORT, "content": content})
    frames = await receive_until(
        tab, lambda f: f["type"] == "message" and f["message"]["content"] == content
    )
    assert [(f["type"], f.get("session_id")) for f in frames] == [("message", w.sessions["active"])]


async def _bob_writes(w: World, port: int, content: str) -> dict[str, Any]:
    """B stores one message of B's own on the port; the ack."""
    async with w.bob_ws() as bob:
        ack = await request(bob, {"type": "message", "port": port, "content": content})
    assert ack["type"] == "ack" and not w.leaked(ack), ack
    return ack


async def _bob_control(w: World, bob: ClientConnection, own: set[str]) -> None:
    """B's own message on PORT comes back through B's subscriptions; every frame before it
    is B's own (its ack, its session's events and messages), none of A's."""
    content = f"bob control {uuid.uuid4().hex}"
    await send(bob, {"type": "message", "port": PORT, "content": content})
    frames = await receive_until(
        bob, lambda f: f["type"] == "message" and f["message"]["content"] == content
    )
    for frame in frames:
        assert not w.leaked(frame), frame
        if frame["type"] == "ack":
            own.add(frame["session_id"])
        elif frame["type"] == "session":
            assert frame["session"]["id"] in own, frame
        else:
            assert frame["type"] == "message" and frame["session_id"] in own, frame


async def _like_missing(
    w: World,
    method: str,
    template: str,
    *,
    json: Any = None,
    params: dict[str, str] | None = None,
    status: int = 404,
) -> None:
    """B's request naming each of A's sessions gets exactly the answer (status, body) B gets
    for a session that does not exist, and that answer is `status`."""

    async def ask(sid: str) -> tuple[int, bytes]:
        response = await w.http.request(
            method, template.format(session_id=sid), json=json, params=params, headers=w.bob
        )
        return response.status_code, response.content

    missing = await ask(MISSING)
    assert missing[0] == status, missing
    for name, sid in w.sessions.items():
        assert await ask(sid) == missing, (name, method, template, json, params)


# WebSocket cases, by client frame tag. Each case is one isolation property.

Case = Callable[[World], Awaitable[None]]


async def hello_presence(w: World) -> None:
    """B's `hello` as an IDE serving A's ports welcomes B as B, and neither B's arrival nor
    B's leaving shows as presence to A or changes A's ports' online state."""
    async with w.alice_ws() as tab:
        await request(tab, {"type": "subscribe", "sessions": True})
        async with w.bob_ws() as bob:
            welcome = await request(
                bob, {"type": "hello", "kind": "ide", "ports": [PORT, OTHER_PORT, FREE_PORT]}
            )
            assert welcome["type"] == "welcome" and welcome["user_id"] == w.bob_user
            assert not w.leaked(welcome)
            assert (await w.http.get("/api/ports", headers=w.bob)).json() == {"ports": []}
        # B's connection is gone (its ports went offline) once only A's two are left.
        await asyncio.wait_for(w.running.gateway.connections.wait_for_count(2), RECV_TIMEOUT)
        ports = (await w.http.get("/api/ports", headers=w.alice)).json()["ports"]
        assert {p["port"]: p["online"] for p in ports} == {PORT: True, OTHER_PORT: True}
        await w.as_alice({"type": "hello", "kind": "ide", "ports": [PORT, OTHER_PORT, NEW_PORT]})
        frames = await receive_until(tab, lambda f: f["type"] == "presence")
    assert frames[-1] == {"type": "presence", "port": NEW_PORT, "online": True}


async def subscribe_session_ids(w: World) -> None:
    """B's `subscribe` to each of A's session ids, live or with since_seq, is `not_found`
    exactly as for a missing session, and no catch-up follows it."""
    async with w.bob_ws() as bob:
        for since in ({}, {"since_seq": 0}):
            frame = {"type": "subscribe", "ref": "s", **since}
            missing = await request(bob, {**frame, "session_id": MISSING})
            assert missing["type"] == "error" and missing["code"] == "not_found", missing
            for sid in w.sessions.values():
                assert await request(bob, {**frame, "session_id": sid}) == missing
        assert await request(bob, {"type": "ping", "ref": "after"}) == {
            "type": "pong",
            "ref": "after",
        }


async def subscribe_live(w: World) -> None:
    """B subscribed to A's port numbers and to B's session list (and refused A's session
    ids) gets none of A's live events: messages, edits, presence, rotation, renames,
    deletes, new sessions, nor the writer's counter updates; B's own events come through."""
    async with w.bob_ws() as bob:
        since = {"since_seq": 0, "since_session_id": w.sessions["active"]}
        free = await request(bob, {"type": "subscribe", "ref": "p", "port": FREE_PORT, **since})
        assert free == {
            "type": "subscribed", "ref": "p", "port": FREE_PORT, "session": None, "last_seq": 0
        }  # fmt: skip
        for port in (PORT, OTHER_PORT, NEW_PORT):
            theirs = await request(bob, {"type": "subscribe", "ref": "p", "port": port, **since})
            assert theirs == {**free, "port": port}
        listed = await request(bob, {"type": "subscribe", "ref": "l", "sessions": True})
        assert listed == {"type": "subscribed", "ref": "l", "sessions": True}
        for sid in w.sessions.values():
            refused = await request(bob, {"type": "subscribe", "session_id": sid})
            assert refused["code"] == "not_found"
        await w.as_alice({"type": "message", "port": PORT, "content": f"{w.mark} live"})
        edit = {**w.batch[0], "content": f"{w.mark} edited"}
        assert (await w.as_alice({"type": "extracted", "port": PORT, "messages": [edit]}))[
            "results"
        ][0]["updated"]
        await w.as_alice({"type": "hello", "kind": "ide", "ports": [OTHER_PORT]})  # PORT off
        await w.as_alice({"type": "hello", "kind": "ide", "ports": [PORT, OTHER_PORT]})  # on
        await w.as_alice({"type": "session.new", "port": PORT, "title": f"{w.mark} new"})
        await w.as_alice({"type": "message", "port": PORT, "content": f"{w.mark} rotated"})
        await w.as_alice({"type": "message", "port": NEW_PORT, "content": f"{w.mark} fresh"})
        other = f"/api/sessions/{w.sessions['other']}"
        assert (
            await w.http.patch(other, json={"title": f"{w.mark} renamed"}, headers=w.alice)
        ).status_code == 200
        archived = f"/api/sessions/{w.sessions['archived']}"
        assert (await w.http.delete(archived, headers=w.alice)).status_code == 204
        own: set[str] = set()
        await _bob_control(w, bob, own)
        # The writer announces A's new message counts after its commits: wait for them, then
        # a second control, so those announcements too would come before it.
        await drained(w.running)
        await _bob_control(w, bob, own)
    assert len(own) == 1 and not own & w.secrets


async def unsubscribe_names(w: World) -> None:
    """B's `unsubscribe` of A's session ids and ports answers as for a missing session or an
    unused port, and A's own subscriptions to them keep delivering."""
    async with w.alice_ws() as tab, w.bob_ws() as bob:
        await request(tab, {"type": "subscribe", "session_id": w.sessions["active"]})
        await request(tab, {"type": "subscribe", "port": PORT})
        missing = await request(bob, {"type": "unsubscribe", "ref": "u", "session_id": MISSING})
        assert missing["type"] == "unsubscribed", missing
        for sid in w.sessions.values():
            reply = await request(bob, {"type": "unsubscribe", "ref": "u", "session_id": sid})
            assert reply == {**missing, "session_id": sid}
        free = await request(bob, {"type": "unsubscribe", "ref": "u", "port": FREE_PORT})
        for port in (PORT, OTHER_PORT):
            reply = await request(bob, {"type": "unsubscribe", "ref": "u", "port": port})
            assert reply == {**free, "port": port}
        reply = await request(bob, {"type": "unsubscribe", "ref": "u", "sessions": True})
        assert reply == {"type": "unsubscribed", "ref": "u", "sessions": True}
        content = f"{w.mark} still live"
        await w.as_alice({"type": "message", "port": PORT, "content": content})
        frames = await receive_until(
            tab, lambda f: f["type"] == "message" and f["message"]["content"] == content
        )
        frames += await receive_until(
            tab, lambda f: f["type"] == "message" and f["message"]["content"] == content
        )
    assert [f["session_id"] for f in frames if f["type"] == "message"] == [w.sessions["active"]] * 2


async def message_copies(w: World) -> None:
    """B's `message` frames copying A's messages on A's port (same client id, or the same
    fingerprint) are new messages in a session of B's: never duplicates of A's, never
    edits of A's, and A's messages stay as they were."""
    before = await _alice_state(w)
    async with w.bob_ws() as bob:
        acks = [await request(bob, {"type": "message", "port": PORT, **item}) for item in w.batch]
    assert not w.leaked(acks)
    assert len({a["session_id"] for a in acks}) == 1
    assert [(r["seq"], r["duplicate"], r["updated"]) for a in acks for r in a["results"]] == [
        (1, False, False),
        (2, False, False),
    ]
    assert await _alice_state(w) == before


async def extracted_copies(w: World) -> None:
    """B's `extracted` batch re-sending A's batch on A's port, once as it is and once with
    A's client id under new content, stores B's own messages: nothing duplicate, nothing
    updated, A's messages untouched."""
    before = await _alice_state(w)
    edit = [{**w.batch[0], "content": "bob's version"}]
    async with w.bob_ws() as bob:
        acks = [
            await request(bob, {"type": "extracted", "port": PORT, "messages": batch})
            for batch in (edit, w.batch[1:])
        ]
        whole = {"type": "extracted", "port": OTHER_PORT, "messages": w.batch}
        acks.append(await request(bob, whole))
    assert not w.leaked(acks)
    assert [[(r["seq"], r["duplicate"], r["updated"]) for r in a["results"]] for a in acks] == [
        [(1, False, False)],
        [(2, False, False)],
        [(1, False, False), (2, False, False)],
    ]
    assert await _alice_state(w) == before


async def session_new(w: World) -> None:
    """B's `session.new` on A's ports opens sessions of B's, leaves A's active sessions
    active, and A's port subscribers see no rotation."""
    before = await _alice_state(w)
    async with w.alice_ws() as tab, w.bob_ws() as bob:
        await request(tab, {"type": "subscribe", "port": PORT})
        for port in (PORT, OTHER_PORT):
            reply = await request(bob, {"type": "session.new", "port": port, "title": "bob"})
            assert reply["type"] == "session" and reply["event"] == "created", reply
            assert reply["session"]["message_count"] == 0 and not w.leaked(reply)
        assert await _alice_state(w) == before
        await _alice_control(w, tab)


async def ping(w: World) -> None:
    """`ping` names nothing: its `pong` carries only the ref."""
    async with w.bob_ws() as bob:
        assert await request(bob, {"type": "ping", "ref": "p"}) == {"type": "pong", "ref": "p"}


WS_CASES: dict[str, list[Case]] = {
    "hello": [hello_presence],
    "subscribe": [subscribe_session_ids, subscribe_live],
    "unsubscribe": [unsubscribe_names],
    "message": [message_copies],
    "extracted": [extracted_copies],
    "session.new": [session_new],
    "ping": [ping],
}


# HTTP cases, by (method, path template).


async def list_sessions(w: World) -> None:
    """`GET /api/sessions` as B, with every filter and a cursor placed at A's session, lists
    none of A's sessions; once B has a session on A's port, B's is listed alone."""
    cursor = api._encode_cursor((datetime(2100, 1, 1, tzinfo=UTC), uuid.UUID(w.sessions["other"])))
    queries: list[dict[str, str]] = [
        {},
        {"port": str(PORT)},
        {"port": str(OTHER_PORT)},
        {"status": "active"},
        {"status": "archived"},
        {"pinned": "true"},
        {"pinned": "false"},
        {"q": w.mark},
        {"cursor": cursor},
        {"limit": "200"},
    ]
    mine = (await w.http.get("/api/sessions", params={"q": w.mark}, headers=w.alice)).json()
    assert len(mine["sessions"]) == 2  # the filters do find A's sessions, for A
    for params in queries:
        body = (await w.http.get("/api/sessions", params=params, headers=w.bob)).json()
        assert body == {"sessions": [], "next_cursor": None}, params
    ack = await _bob_writes(w, PORT, "bob's own")
    for params in queries:
        body = (await w.http.get("/api/sessions", params=params, headers=w.bob)).json()
        assert not w.leaked(body), params
        assert {s["id"] for s in body["sessions"]} <= {ack["session_id"]}, params
    listed = (await w.http.get("/api/sessions", params={"port": str(PORT)}, headers=w.bob)).json()
    assert [s["id"] for s in listed["sessions"]] == [ack["session_id"]]


async def create_session(w: World) -> None:
    """`POST /api/sessions` as B on A's ports creates sessions of B's, leaves A's active
    sessions active, and A's port subscribers see no rotation."""
    before = await _alice_state(w)
    async with w.alice_ws() as tab:
        await request(tab, {"type": "subscribe", "port": PORT})
        for port in (PORT, OTHER_PORT):
            response = await w.http.post(
                "/api/sessions", json={"port": port, "title": "bob"}, headers=w.bob
            )
            assert response.status_code == 201 and not w.leaked(response.text)
            assert response.json()["message_count"] == 0
        assert await _alice_state(w) == before
        await _alice_control(w, tab)


async def get_session(w: World) -> None:
    """`GET /api/sessions/{id}` of A's sessions is B's 404 for a missing session."""
    await _like_missing(w, "GET", "/api/sessions/{session_id}")
    await _like_missing(w, "GET", "/api/sessions/not-a-{session_id}")


async def patch_session(w: World) -> None:
    """`PATCH /api/sessions/{id}` of A's sessions, with every kind of change (and a bad
    body), answers as for a missing session and changes nothing of A's."""
    before = await _alice_state(w)
    for body in (
        {"title": "bob's now"},
        {"title": None},
        {"pinned": True},
        {"pinned": False},
        {"status": "archived"},
        {"status": "active"},
        {},
    ):
        await _like_missing(w, "PATCH", "/api/sessions/{session_id}", json=body)
    await _like_missing(w, "PATCH", "/api/sessions/{session_id}", json={"status": "x"}, status=400)
    assert await _alice_state(w) == before


async def delete_session(w: World) -> None:
    """`DELETE /api/sessions/{id}` of A's sessions answers as for a missing session and
    deletes nothing of A's."""
    before = await _alice_state(w)
    await _like_missing(w, "DELETE", "/api/sessions/{session_id}")
    assert await _alice_state(w) == before


async def session_messages(w: World) -> None:
    """`GET /api/sessions/{id}/messages` of A's sessions, with every paging parameter, is
    B's 404 for a missing session, while A's messages are buffered and once persisted."""
    for _ in ("buffered", "persisted"):
        for params in ({}, {"after_seq": "0"}, {"before_seq": "3"}, {"limit": "1000"}):
            await _like_missing(w, "GET", "/api/sessions/{session_id}/messages", params=params)
        await drained(w.running)


async def export_session(w: World) -> None:
    """`GET /api/sessions/{id}/export` of A's sessions, in every format, is B's 404 for a
    missing session, while A's messages are buffered and once persisted; a bad format is the
    same 400 for both. A's own export holds A's messages (the positive control)."""
    url = "/api/sessions/{session_id}/export"
    for _ in ("buffered", "persisted"):
        for params in ({}, {"format": "markdown"}, {"format": "json"}, {"format": "openai"}):
            await _like_missing(w, "GET", url, params=params)
        await drained(w.running)
    await _like_missing(w, "GET", url, params={"format": "pdf"}, status=400)
    mine = await w.http.get(
        url.format(session_id=w.sessions["active"]), params={"format": "json"}, headers=w.alice
    )
    assert mine.status_code == 200 and w.mark in mine.text


async def list_ports(w: World) -> None:
    """`GET /api/ports` as B lists none of A's ports; B's own session on A's port shows
    B's session and offline, though A's IDE serves that port."""
    assert (await w.http.get("/api/ports", headers=w.bob)).json() == {"ports": []}
    ack = await _bob_writes(w, PORT, "bob's own")
    ports = (await w.http.get("/api/ports", headers=w.bob)).json()["ports"]
    assert not w.leaked(ports)
    assert [(p["port"], p["online"], p["active_session"]["id"]) for p in ports] == [
        (PORT, False, ack["session_id"])
    ]
    mine = (await w.http.get("/api/ports", headers=w.alice)).json()["ports"]
    assert {p["port"]: p["online"] for p in mine} == {PORT: True, OTHER_PORT: True}


async def label_port(w: World) -> None:
    """`PATCH /api/ports/{port}` as B labels B's port, not A's: A's label stays, and B's
    list of ports never shows it."""
    url = f"/api/ports/{PORT}"
    mine = await w.http.patch(url, json={"label": f"{w.mark} label"}, headers=w.alice)
    assert mine.status_code == 200, mine.text
    answer = await w.http.patch(url, json={"label": "bob's"}, headers=w.bob)
    assert answer.status_code == 200 and not w.leaked(answer.json()), answer.text
    await _bob_writes(w, PORT, "bob's own")
    ports = (await w.http.get("/api/ports", headers=w.bob)).json()["ports"]
    assert not w.leaked(ports) and [p["label"] for p in ports] == ["bob's"]
    alice_ports = (await w.http.get("/api/ports", headers=w.alice)).json()["ports"]
    assert {p["port"]: p["label"] for p in alice_ports}[PORT] == f"{w.mark} label"


async def send_to_session(w: World) -> None:
    """`POST /api/sessions/{id}/messages` naming A's sessions answers as for a missing
    session, whatever the body, and stores nothing in them."""
    before = await _alice_state(w)
    for body in ({"content": "bob's words"}, {"messages": [{"content": "x"}]}, {"role": 7}):
        await _like_missing(w, "POST", "/api/sessions/{session_id}/messages", json=body)
    await drained(w.running)
    assert await _alice_state(w) == before


async def send_to_port(w: World) -> None:
    """`POST /api/ports/{port}/messages` on A's port as B stores B's message in B's own
    session: the ack holds nothing of A's, and A's sessions are unchanged."""
    before = await _alice_state(w)
    response = await w.http.post(
        f"/api/ports/{PORT}/messages", json={"content": "bob over http"}, headers=w.bob
    )
    assert response.status_code == 200 and not w.leaked(response.json()), response.text
    assert response.json()["session_id"] not in w.sessions.values()
    await drained(w.running)
    assert await _alice_state(w) == before


def _changes_like_missing(method: str, path: str) -> Case:
    async def case(w: World) -> None:
        before = await _alice_state(w)
        await _like_missing(w, method, path)
        assert await _alice_state(w) == before

    case.__name__ = "changes_like_missing"
    case.__doc__ = f"`{method} {path}` of A's sessions answers as for a missing one, no change."
    return case


async def sessions_search(w: World) -> None:
    """`GET /api/sessions/search` (the seed's alias of /api/search) as B finds nothing of A's,
    for A's words and A's mark."""
    await searchable(w.running)
    for params in ({"q": w.word}, {"q": w.mark}, {"q": w.word, "port": str(PORT)}):
        body = (await w.http.get("/api/sessions/search", params=params, headers=w.bob)).json()
        assert not w.leaked(body), params
        assert body["results"] == [] and body["sessions"] == [], params


def _operators_only(method: str, path: str) -> Case:
    async def case(w: World) -> None:
        response = await w.http.request(method, path, headers=w.bob)
        assert response.status_code == 403 and not w.leaked(response.text), response.text
        assert response.json()["error"]["code"] == "forbidden"

    case.__name__ = "operators_only"
    case.__doc__ = f"`{method} {path}` as B, who is no operator, is a 403 holding nothing of A's."
    return case


async def port_messages(w: World) -> None:
    """`GET /api/ports/{port}/messages` of A's ports as B holds none of A's messages, whether
    buffered or persisted; B's own message on A's port is listed alone."""
    mine = (await w.http.get(f"/api/ports/{PORT}/messages", headers=w.alice)).json()
    assert len(mine["messages"]) == 3  # A's, for A
    ack = None
    for _ in ("buffered", "persisted"):
        for port in (PORT, OTHER_PORT):
            for params in ({}, {"limit": "1000"}):
                url = f"/api/ports/{port}/messages"
                body = (await w.http.get(url, params=params, headers=w.bob)).json()
                assert not w.leaked(body)
                own: list[str] = [] if ack is None or port != PORT else [ack["session_id"]]
                assert [m["session_id"] for m in body["messages"]] == own, (port, body)
        ack = ack or await _bob_writes(w, PORT, "bob's own")
        await drained(w.running)


async def search(w: World) -> None:
    """`GET /api/search` as B finds only B's messages: none of A's hits, snippets or
    highlights, with or without a port, for A's words and A's mark."""
    ack = await _bob_writes(w, PORT, f"bob {w.word}")
    await searchable(w.running)
    mine = (await w.http.get("/api/search", params={"q": w.word}, headers=w.alice)).json()
    assert len(mine["results"]) == 4  # A's messages are indexed
    for params in (
        {"q": w.word},
        {"q": w.word, "port": str(PORT)},
        {"q": w.word, "port": str(OTHER_PORT)},
        {"q": w.mark},
        {"q": f"{w.mark} or {w.word}"},
        {"q": w.word, "limit": "100"},
    ):
        body = (await w.http.get("/api/search", params=params, headers=w.bob)).json()
        assert not w.leaked(body), params
        assert {r["session_id"] for r in body["results"]} <= {ack["session_id"]}, params
    found = (await w.http.get("/api/search", params={"q": w.word}, headers=w.bob)).json()
    assert [r["session_id"] for r in found["results"]] == [ack["session_id"]]


async def get_stats(w: World) -> None:
    """`GET /api/stats` as B counts nothing of A's, before and after B's own message is
    persisted."""
    zero = {"sessions": {"active": 0, "archived": 0, "total": 0}, "messages": 0}
    assert (await w.http.get("/api/stats", headers=w.bob)).json() == zero
    await _bob_writes(w, PORT, "bob's own")
    await drained(w.running)
    mine = (await w.http.get("/api/stats", headers=w.alice)).json()
    assert mine == {"sessions": {"active": 2, "archived": 1, "total": 3}, "messages": 4}
    assert (await w.http.get("/api/stats", headers=w.bob)).json() == {
        "sessions": {"active": 1, "archived": 0, "total": 1},
        "messages": 1,
    }


def _public(path: str) -> Case:
    async def case(w: World) -> None:
        for headers in (w.bob, {}):
            response = await w.http.get(path, headers=headers)
            assert response.status_code != 404 and not w.leaked(response.text), path

    case.__name__ = "public"
    case.__doc__ = f"`GET {path}`, with B's token or none, holds nothing of A's."
    return case


HTTP_CASES: dict[tuple[str, str], Case] = {
    ("GET", "/api/sessions"): list_sessions,
    ("POST", "/api/sessions"): create_session,
    ("GET", "/api/sessions/{session_id}"): get_session,
    ("PATCH", "/api/sessions/{session_id}"): patch_session,
    ("DELETE", "/api/sessions/{session_id}"): delete_session,
    ("GET", "/api/sessions/{session_id}/messages"): session_messages,
    ("GET", "/api/sessions/{session_id}/export"): export_session,
    ("GET", "/api/ports"): list_ports,
    ("PATCH", "/api/ports/{port}"): label_port,
    ("GET", "/api/ports/{port}/messages"): port_messages,
    ("GET", "/api/search"): search,
    ("GET", "/api/stats"): get_stats,
    ("POST", "/api/ports/{port}/messages"): send_to_port,
    ("POST", "/api/sessions/{session_id}/messages"): send_to_session,
    ("POST", "/api/sessions/{session_id}/archive"): _changes_like_missing(
        "POST", "/api/sessions/{session_id}/archive"
    ),
    ("POST", "/api/sessions/{session_id}/pin"): _changes_like_missing(
        "POST", "/api/sessions/{session_id}/pin"
    ),
    ("DELETE", "/api/sessions/{session_id}/pin"): _changes_like_missing(
        "DELETE", "/api/sessions/{session_id}/pin"
    ),
    ("GET", "/api/sessions/search"): sessions_search,
    ("GET", "/api/health/database"): _operators_only("GET", "/api/health/database"),
    ("GET", "/api/stats/global"): _operators_only("GET", "/api/stats/global"),
    ("POST", "/api/health/database/statements/reset"): _operators_only(
        "POST", "/api/health/database/statements/reset"
    ),
    ("GET", "/healthz"): _public("/healthz"),
    ("GET", "/readyz"): _public("/readyz"),
    ("GET", "/metrics"): _public("/metrics"),
    ("GET", "/openapi.json"): _public("/openapi.json"),
    ("GET", "/"): _public("/"),
    ("GET", "/ui/ide-ports.js"): _public("/ui/ide-ports.js"),
    ("GET", "/ui/{path}"): _public("/ui/app.js"),
}
# The WebSocket route's cases are WS_CASES.
WS_ROUTE = ("WS", "/ws")


def _fill(template: str, session_id: str) -> str:
    return template.format(session_id=session_id, port=PORT, path="app.js")


# The tests.


@pytest.mark.parametrize(
    "case",
    [case for cases in WS_CASES.values() for case in cases],
    ids=[f"{tag}:{case.__name__}" for tag, cases in WS_CASES.items() for case in cases],
)
async def test_ws_command_isolation(world: World, case: Case) -> None:
    """Each client frame type, sent by B about A's sessions and ports, reveals and changes
    nothing of A's (the case's docstring says how)."""
    await case(world)


@pytest.mark.parametrize("case", list(HTTP_CASES.values()), ids=[f"{m} {p}" for m, p in HTTP_CASES])
async def test_http_route_isolation(world: World, case: Case) -> None:
    """Each HTTP route, called by B about A's sessions and ports, reveals and changes nothing
    of A's (the case's docstring says how)."""
    await case(world)


@pytest.mark.parametrize("template", sorted(p for m, p in HTTP_CASES if m == "GET"))
async def test_head_answers_like_get(world: World, template: str) -> None:
    """HEAD as B on every GET route, filled with A's active session and port, answers GET's
    status with no body, and for A's session exactly what a missing session gets."""
    w = world
    url = _fill(template, w.sessions["active"])
    got = await w.http.get(url, headers=w.bob)
    head = await w.http.head(url, headers=w.bob)
    assert (head.status_code, head.content) == (got.status_code, b"")
    if "{session_id}" in template:
        missing = await w.http.head(_fill(template, MISSING), headers=w.bob)
        assert head.status_code == missing.status_code == 404
        assert head.headers["content-length"] == missing.headers["content-length"]


def _client_frame_tags() -> set[str]:
    """Every client frame tag: of the decoded union, of every public tagged Struct declared
    in gateway/ws/client_frames.py, and of the published schema's discriminator."""
    union = typing.get_args(client_frames.ClientFrame)
    declared = [
        value
        for value in vars(client_frames).values()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == client_frames.__name__
        and not value.__name__.startswith("_")
    ]
    tags = {str(cls.__struct_config__.tag) for cls in union}
    tags |= {
        str(cls.__struct_config__.tag) for cls in declared if cls.__struct_config__.tag is not None
    }
    return tags | set(client_frames.CLIENT_FRAME_SCHEMA["discriminator"]["mapping"])


def test_every_client_frame_type_has_a_case() -> None:
    """The isolation cases cover exactly the client frame tags the code declares."""
    tags = _client_frame_tags()
    assert {"hello", "message", "subscribe"} <= tags  # the derivation found the frames
    assert set(WS_CASES) == tags


def _route_keys(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route, HEAD included; a mount of files is `{path}` under it."""
    keys: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Route):
            keys |= {(method, prefix + route.path) for method in route.methods or ()}
        elif isinstance(route, WebSocketRoute):
            keys.add(("WS", prefix + route.path))
        elif isinstance(route, Mount) and route.routes:
            keys |= _route_keys(list(route.routes), prefix + route.path)
        elif isinstance(route, Mount):
            keys |= {(method, f"{prefix}{route.path}/{{path}}") for method in ("GET", "HEAD")}
        else:
            keys.add(("?", repr(route)))  # a kind of route this test does not know: uncovered
    return keys


def test_every_route_has_a_case(settings: Settings) -> None:
    """The isolation cases cover exactly the app's routes (and every operation of its
    OpenAPI document): HEAD through GET's case, /ws through the frame cases."""
    covered = set(HTTP_CASES) | {("HEAD", p) for m, p in HTTP_CASES if m == "GET"} | {WS_ROUTE}
    routes = create_app(replace(settings, auth_secret=SECRET)).routes
    assert _route_keys(routes) == covered
    documented = {
        (method.upper(), path)
        for path, operations in openapi.document()["paths"].items()
        for method in operations
        if method in ("get", "put", "post", "delete", "patch", "head", "options")
    }
    assert documented and documented <= covered
