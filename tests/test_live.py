"""Live sync: subscriptions, catch-up then live, rotation, session-list and presence events."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.settings import Settings
from tests.conftest import RunningGateway, receive, request, run_gateway, send


async def receive_until(
    ws: ClientConnection, predicate: Any, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Frames up to and including the first one `predicate` accepts."""
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await receive(ws, timeout)
            frames.append(frame)
            if predicate(frame):
                return frames


def contents(frames: list[dict[str, Any]]) -> list[str]:
    return [f["message"]["content"] for f in frames if f["type"] == "message"]


async def test_subscribe_with_since_seq_catches_up_then_goes_live(
    gateway: RunningGateway,
) -> None:
    """`subscribed` (with last_seq), then every message after since_seq in order, then live
    messages, each once."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        acks = [
            await request(ide, {"type": "message", "port": 9222, "content": f"old {i}"})
            for i in range(5)
        ]
        session_id = acks[0]["session_id"]
        reply = await request(
            tab, {"type": "subscribe", "session_id": session_id, "since_seq": 2, "ref": "s"}
        )
        assert reply["type"] == "subscribed" and reply["ref"] == "s"
        assert reply["last_seq"] == 5 and reply["session"]["id"] == session_id
        caught_up = [await receive(tab) for _ in range(3)]
        assert [f["message"]["seq"] for f in caught_up] == [3, 4, 5]
        assert contents(caught_up) == ["old 2", "old 3", "old 4"]
        assert all(f["session_id"] == session_id and f["port"] == 9222 for f in caught_up)
        await request(ide, {"type": "message", "port": 9222, "content": "new"})
        live = await receive(tab)
        assert live["message"]["seq"] == 6 and live["message"]["content"] == "new"
        assert live["edited"] is False


async def test_subscribe_without_since_seq_is_live_only(gateway: RunningGateway) -> None:
    """Without since_seq nothing old is sent; `subscribed` says where live starts."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        first = await request(ide, {"type": "message", "port": 9223, "content": "before"})
        reply = await request(tab, {"type": "subscribe", "session_id": first["session_id"]})
        assert reply["last_seq"] == 1
        await request(ide, {"type": "message", "port": 9223, "content": "after"})
        live = await receive(tab)
        assert (live["message"]["seq"], live["message"]["content"]) == (2, "after")


async def test_catch_up_while_messages_keep_arriving_has_no_gap_or_duplicate(
    gateway_no_writer: RunningGateway,
) -> None:
    """A subscriber joining mid-stream, with messages still only in the Redis buffer, sees
    seqs 1..n exactly once and in order."""
    total = 600
    async with gateway_no_writer.connect() as ide, gateway_no_writer.connect() as tab:
        first = await request(ide, {"type": "message", "port": 9224, "content": "m 0"})

        async def produce() -> None:
            for i in range(1, total):
                await send(ide, {"type": "message", "port": 9224, "content": f"m {i}"})
            for _ in range(1, total):
                await receive(ide)

        producer = asyncio.create_task(produce())
        await asyncio.sleep(0)  # let the producer get going before we subscribe
        await request(tab, {"type": "subscribe", "session_id": first["session_id"], "since_seq": 0})
        frames = await receive_until(tab, lambda f: f["message"]["seq"] == total, timeout=30)
        await producer
    seqs = [f["message"]["seq"] for f in frames]
    assert seqs == list(range(1, total + 1))
    assert contents(frames) == [f"m {i}" for i in range(total)]


async def test_edits_reach_subscribers_as_edited(gateway: RunningGateway) -> None:
    """A streaming reply's growth reaches subscribers as `edited: true` with the same id."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        first = await request(
            ide, {"type": "message", "port": 9225, "id": "r", "content": "Hel", "role": "assistant"}
        )
        await request(tab, {"type": "subscribe", "session_id": first["session_id"]})
        await request(
            ide,
            {"type": "message", "port": 9225, "id": "r", "content": "Hello", "role": "assistant"},
        )
        event = await receive(tab)
    assert event["edited"] is True
    assert event["message"]["content"] == "Hello"
    assert event["message"]["id"] == first["results"][0]["id"] and event["message"]["seq"] == 1


async def test_port_subscription_follows_rotation(gateway: RunningGateway) -> None:
    """A port subscriber gets `session archived`, `session created`, then the new session's
    messages after a `session.new` from another connection."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        old = await request(ide, {"type": "message", "port": 9226, "content": "old"})
        reply = await request(tab, {"type": "subscribe", "port": 9226, "since_seq": 0})
        assert reply["port"] == 9226 and reply["session"]["id"] == old["session_id"]
        assert contents([await receive(tab)]) == ["old"]
        created = await request(ide, {"type": "session.new", "port": 9226, "title": "next"})
        new_id = created["session"]["id"]
        await request(ide, {"type": "message", "port": 9226, "content": "new"})
        frames = await receive_until(tab, lambda f: f["type"] == "message")
    sessions = [(f["event"], f["session"]["id"]) for f in frames if f["type"] == "session"]
    assert sessions == [("archived", old["session_id"]), ("created", new_id)]
    assert frames[-1]["session_id"] == new_id and frames[-1]["message"]["seq"] == 1


async def test_port_subscription_before_any_session_follows_the_first(
    gateway: RunningGateway,
) -> None:
    """Subscribing to a port with no session yet: the first message creates one, and the
    subscriber gets its `created` event and the message."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        reply = await request(tab, {"type": "subscribe", "port": 9227})
        assert reply["session"] is None and reply["last_seq"] == 0
        ack = await request(ide, {"type": "message", "port": 9227, "content": "first"})
        frames = await receive_until(tab, lambda f: f["type"] == "message")
    assert frames[0]["type"] == "session" and frames[0]["event"] == "created"
    assert frames[-1]["session_id"] == ack["session_id"]
    assert contents(frames) == ["first"]


async def test_session_list_events_are_coalesced(gateway: RunningGateway) -> None:
    """`sessions: true` gets created, then `updated` events with the message count; a burst
    of 200 messages gives far fewer than 200 events."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        await request(tab, {"type": "subscribe", "sessions": True, "ref": "l"})
        for i in range(200):
            await send(ide, {"type": "message", "port": 9228, "content": f"b{i}"})
        for _ in range(200):
            await receive(ide)
        frames = await receive_until(
            tab, lambda f: f.get("event") == "updated" and f["session"]["message_count"] == 200
        )
    assert frames[0]["event"] == "created" and frames[0]["session"]["port"] == 9228
    updates = [f for f in frames if f.get("event") == "updated"]
    counts = [f["session"]["message_count"] for f in updates]
    assert counts == sorted(counts) and counts[-1] == 200
    assert len(updates) < 50


async def test_presence_follows_ide_connections(gateway: RunningGateway) -> None:
    """An `ide` hello makes its ports online; a clean close and an abrupt drop take them
    offline, each announced to session-list subscribers."""
    async with gateway.connect() as tab:
        await request(tab, {"type": "subscribe", "sessions": True})
        async with gateway.connect() as ide:
            await request(ide, {"type": "hello", "kind": "ide", "ports": [9229, 9230]})
            online = [await receive(tab) for _ in range(2)]
        offline = [await receive(tab) for _ in range(2)]
        assert {(f["port"], f["online"]) for f in online} == {(9229, True), (9230, True)}
        assert {(f["port"], f["online"]) for f in offline} == {(9229, False), (9230, False)}
        assert all(f["type"] == "presence" for f in online + offline)
        dropped = await gateway.connect().__aenter__()
        await request(dropped, {"type": "hello", "kind": "ide", "ports": [9231]})
        assert (await receive(tab))["online"] is True
        dropped.transport.abort()  # no close frame: the TCP connection just goes away
        gone = await receive(tab)
        assert (gone["port"], gone["online"]) == (9231, False)


@pytest.mark.parametrize("port_key_expired", [False, True], ids=["swept", "port-key-expired"])
async def test_presence_of_a_dead_process_expires(
    settings: Settings, port_key_expired: bool
) -> None:
    """Ports of a gateway process that died without cleaning up go offline when their
    heartbeat expires, announced by a surviving process's sweep; also when the port's own
    set already expired before any sweep ran (a busy or paused survivor)."""
    quick = replace(settings, presence_ttl_s=0.6)
    async with run_gateway(quick) as survivor, survivor.connect() as tab:
        await request(tab, {"type": "subscribe", "sessions": True})
        # A "dead process": its entry was announced once and is never refreshed.
        presence = survivor.gateway.presence
        await presence._call("up", [(quick.local_user, 9232, "ghost-connection")])
        assert (await receive(tab))["online"] is True
        if port_key_expired:
            keys = survivor.gateway.keys
            await survivor.gateway.redis.delete(keys.presence_port(quick.local_user, 9232))
        gone = await receive(tab, timeout=10)
        assert (gone["port"], gone["online"]) == (9232, False)


async def test_unsubscribe_stops_events(gateway: RunningGateway) -> None:
    """After `unsubscribed`, no more events for that session arrive."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        first = await request(ide, {"type": "message", "port": 9233, "content": "a"})
        await request(tab, {"type": "subscribe", "session_id": first["session_id"]})
        reply = await request(tab, {"type": "unsubscribe", "session_id": first["session_id"]})
        assert reply == {"type": "unsubscribed", "ref": None, "session_id": first["session_id"]}
        await request(ide, {"type": "message", "port": 9233, "content": "b"})
        # The next frame the tab gets is the answer to its ping: no message came in between.
        assert (await request(tab, {"type": "ping"}))["type"] == "pong"


async def test_other_users_sessions_cannot_be_subscribed(gateway: RunningGateway) -> None:
    """Subscribing to a session that is not the user's is `not_found`, like a missing one."""
    async with gateway.connect() as tab:
        error = await request(
            tab,
            {"type": "subscribe", "session_id": "00000000-0000-7000-8000-000000000000", "ref": "x"},
        )
    assert error == {"type": "error", "ref": "x", "code": "not_found", "message": "no such session"}


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "subscribe"},
        {"type": "subscribe", "port": 1, "sessions": True},
        {"type": "subscribe", "session_id": "nope"},
        {"type": "subscribe", "port": 1, "since_seq": -1},
        {"type": "subscribe", "sessions": True, "since_seq": 3},
        {"type": "unsubscribe", "sessions": False},
    ],
)
async def test_bad_subscriptions_are_refused(
    gateway: RunningGateway, frame: dict[str, Any]
) -> None:
    """A subscribe naming zero or two targets, a bad id or a bad since_seq is a bad_request."""
    async with gateway.connect() as tab:
        error = await request(tab, frame)
    assert error["type"] == "error" and error["code"] == "bad_request"


async def test_slow_subscriber_is_closed_with_1013_and_resumes(settings: Settings) -> None:
    """A subscriber that stops reading is closed with 1013 once its queued events pass the
    byte budget (gateway memory stays bounded); it resumes with since_seq and misses nothing."""
    small = replace(settings, max_outbox_bytes=64 * 1024)
    async with run_gateway(small) as running, running.connect() as ide:
        first = await request(ide, {"type": "message", "port": 9234, "content": "start"})
        session_id = first["session_id"]
        # max_queue=1: the client library stops reading the socket after one frame.
        slow = await running.connect(max_queue=1).__aenter__()
        await request(slow, {"type": "subscribe", "session_id": session_id})
        payload = "z" * 4000
        for i in range(2000):
            await send(ide, {"type": "message", "port": 9234, "content": f"{i} {payload}"})
        for _ in range(2000):
            await receive(ide)
        registry = running.gateway.connections
        await asyncio.wait_for(registry.wait_for_count(1), 20)  # the slow one was closed
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(slow.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        async with running.connect() as again:
            await request(again, {"type": "subscribe", "session_id": session_id, "since_seq": 0})
            frames = await receive_until(again, lambda f: f["message"]["seq"] == 2001, 30)
        assert [f["message"]["seq"] for f in frames] == list(range(1, 2002))


async def test_two_gateways_share_events(settings: Settings) -> None:
    """An IDE on gateway A, a tab on gateway B (separate hubs and pub/sub connections,
    shared Redis): the tab gets the IDE's messages live."""
    second = replace(settings, run_writer=False)
    async with (
        run_gateway(settings) as a,
        run_gateway(second) as b,
        a.connect() as ide,
        b.connect() as tab,
    ):
        first = await request(ide, {"type": "message", "port": 9235, "content": "one"})
        await request(tab, {"type": "subscribe", "port": 9235, "since_seq": 0})
        await request(ide, {"type": "message", "port": 9235, "content": "two"})
        frames = await receive_until(tab, lambda f: f.get("message", {}).get("seq") == 2)
    assert contents(frames) == ["one", "two"]
    assert frames[-1]["session_id"] == first["session_id"]


async def test_port_subscribers_get_their_ports_presence(gateway: RunningGateway) -> None:
    """A port subscriber gets presence events of its own port, not of the user's others."""
    async with gateway.connect() as tab, gateway.connect() as ide:
        await request(tab, {"type": "subscribe", "port": 9236})
        await request(ide, {"type": "hello", "kind": "ide", "ports": [9237, 9236]})
        event = await receive(tab)
        assert event == {"type": "presence", "port": 9236, "online": True}
        assert (await request(tab, {"type": "ping"}))["type"] == "pong"  # nothing for 9237


async def test_port_resume_after_a_rotation_catches_up_the_new_session(
    gateway: RunningGateway,
) -> None:
    """Resuming a port subscription with `since_session_id` naming the session the client
    had: when the port rotated meanwhile, the new session is caught up from its start."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        old = [
            await request(ide, {"type": "message", "port": 9238, "content": f"old {i}"})
            for i in range(3)
        ]
        await request(ide, {"type": "session.new", "port": 9238})
        for i in range(2):
            await request(ide, {"type": "message", "port": 9238, "content": f"new {i}"})
        reply = await request(
            tab,
            {
                "type": "subscribe",
                "port": 9238,
                "since_seq": 3,
                "since_session_id": old[0]["session_id"],
            },
        )
        assert reply["session"]["id"] != old[0]["session_id"]
        caught_up = [await receive(tab) for _ in range(2)]
    assert contents(caught_up) == ["new 0", "new 1"]
    assert [f["message"]["seq"] for f in caught_up] == [1, 2]
