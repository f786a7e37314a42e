"""Live feeds through a reset of the hub's pub/sub connection: nothing missed, nothing twice.

Redis drops pub/sub publications while a subscriber's connection is down, and redis-py
resubscribes without saying so. `CLIENT KILL TYPE pubsub` is the fault: what Redis does to a
hub past its output-buffer limit, and what a restart or failover does to every hub.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection

from gateway.ws import frames
from gateway.ws.frames import Frame
from gateway.ws.hub import Hub
from gateway.ws.live import LiveMessage, Send, SessionFeed
from storage.messages import Message
from tests.conftest import RunningGateway, receive, request, send


async def kill_pubsub_clients(redis: aioredis.Redis) -> int:
    """Cut every pub/sub connection on the server (the test's hubs are the only ones)."""
    killed: int = await redis.client_kill_filter(_type="pubsub")
    return killed


async def wait_reset(hub: Hub, resets_before: int, timeout: float = 10.0) -> None:
    """Wait until the hub announced a reset after `resets_before` (its PONG came back)."""
    announced = asyncio.Event()

    def on_reset() -> None:
        announced.set()

    hub.on_reset(on_reset)
    try:
        if hub.resets <= resets_before:
            await asyncio.wait_for(announced.wait(), timeout)
    finally:
        hub.off_reset(on_reset)


async def message_seqs(ws: ClientConnection, count: int, timeout: float = 10.0) -> list[int]:
    """The seqs of the next `count` message events (other frames are skipped)."""
    seqs: list[int] = []
    async with asyncio.timeout(timeout):
        while len(seqs) < count:
            frame = await receive(ws, timeout)
            if frame["type"] == "message":
                seqs.append(frame["message"]["seq"])
    return seqs


async def test_hub_announces_a_reset_and_resubscribes(redis: aioredis.Redis) -> None:
    """After its connection is killed the hub calls its reset callbacks once every channel
    is subscribed again: a publication made after the callback reaches the listener."""
    channel = f"test:{uuid.uuid4().hex}"
    received: list[bytes] = []
    got = asyncio.Event()

    def listener(data: bytes) -> None:
        received.append(data)
        got.set()

    hub = Hub(redis)
    async with hub.running():
        await hub.listen(channel, listener, bytes)
        announced = asyncio.Event()
        hub.on_reset(announced.set)
        assert await kill_pubsub_clients(redis) >= 1
        await asyncio.wait_for(announced.wait(), 10)
        assert hub.resets == 1
        await redis.publish(channel, b"after the reset")
        await asyncio.wait_for(got.wait(), 10)
    assert received == [b"after the reset"]


async def test_port_subscriber_gets_every_seq_across_a_pubsub_kill(
    gateway: RunningGateway, redis: aioredis.Redis
) -> None:
    """The issue's repro: subscribed to a port at seq 2, the pub/sub connection killed, 20
    messages sent: the subscriber gets 3..22, each once, in order, on the same socket, and a
    `resync` for the port's session and presence events."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        for i in range(2):
            await request(ide, {"type": "message", "port": 9300, "content": f"m {i}"})
        reply = await request(tab, {"type": "subscribe", "port": 9300, "since_seq": 0})
        assert reply["type"] == "subscribed"
        assert await message_seqs(tab, 2) == [1, 2]
        resets = gateway.gateway.hub.resets
        assert await kill_pubsub_clients(redis) >= 1
        for i in range(2, 22):  # at once: most are published while the hub is down
            await request(ide, {"type": "message", "port": 9300, "content": f"m {i}"})
        await wait_reset(gateway.gateway.hub, resets)
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while sum(f["type"] == "message" for f in frames) < 20 or not any(
                f["type"] == "resync" for f in frames
            ):
                frames.append(await receive(tab))
        seqs = [f["message"]["seq"] for f in frames if f["type"] == "message"]
        assert seqs == list(range(3, 23))
        assert {"type": "resync", "port": 9300} in frames
        # Still live on the same socket afterwards, and nothing more was queued twice.
        await request(ide, {"type": "message", "port": 9300, "content": "after"})
        assert await message_seqs(tab, 1) == [23]
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http:
        metrics = (await http.get("/metrics")).text
    assert f"gateway_hub_resets {float(gateway.gateway.hub.resets)}" in metrics
    assert gateway.gateway.hub.resets > resets


async def test_port_subscriber_follows_a_rotation_made_while_the_hub_was_down(
    gateway: RunningGateway, redis: aioredis.Redis
) -> None:
    """A rotation and a message made right after the kill reach the port subscriber as an
    `activated` session event for the new session followed by its seq 1, whether the
    rotation's own event was lost or not."""
    async with gateway.connect() as ide, gateway.connect() as tab:
        await request(ide, {"type": "message", "port": 9304, "content": "old"})
        await request(tab, {"type": "subscribe", "port": 9304, "since_seq": 0})
        assert await message_seqs(tab, 1) == [1]
        resets = gateway.gateway.hub.resets
        await kill_pubsub_clients(redis)
        created = await request(ide, {"type": "session.new", "port": 9304})
        new_id = created["session"]["id"]
        await request(ide, {"type": "message", "port": 9304, "content": "new"})
        await wait_reset(gateway.gateway.hub, resets)
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while not any(f["type"] == "message" and f["session_id"] == new_id for f in frames):
                frames.append(await receive(tab))
        activations = [
            i
            for i, f in enumerate(frames)
            if f["type"] == "session" and f.get("activated") and f["session"]["id"] == new_id
        ]
        first_new = next(i for i, f in enumerate(frames) if f.get("session_id") == new_id)
        assert activations and activations[0] < first_new
        assert frames[first_new]["message"]["seq"] == 1
        assert frames[first_new]["message"]["content"] == "new"


async def test_repeated_kills_under_load_lose_nothing_for_any_feed(
    gateway: RunningGateway, redis: aioredis.Redis
) -> None:
    """Five kills of the pub/sub connection, each once the hub is back from the last, while a
    producer sends 300 messages: a session subscriber and a port subscriber each get every
    seq exactly once, in order, and the session-list subscriber is told to re-fetch."""
    total = 300
    async with (
        gateway.connect() as ide,
        gateway.connect() as by_session,
        gateway.connect() as by_port,
        gateway.connect() as by_list,
    ):
        first = await request(ide, {"type": "message", "port": 9301, "content": "m 0"})
        session_id = first["session_id"]
        await request(by_session, {"type": "subscribe", "session_id": session_id, "since_seq": 0})
        await request(by_port, {"type": "subscribe", "port": 9301, "since_seq": 0})
        await request(by_list, {"type": "subscribe", "sessions": True})
        hub = gateway.gateway.hub
        resets_before = hub.resets

        killed = 0

        async def produce() -> None:
            nonlocal killed
            for i in range(1, total):
                await send(ide, {"type": "message", "port": 9301, "content": f"m {i}"})
                if i % 50 == 0:  # a kill, then the next one once the hub is back
                    resets = hub.resets
                    killed += await kill_pubsub_clients(redis)
                    await wait_reset(hub, resets)
            for _ in range(1, total):
                ack = await receive(ide)
                assert ack["type"] == "ack", ack

        producer = asyncio.create_task(produce())
        session_seqs, port_seqs = await asyncio.gather(
            message_seqs(by_session, total, timeout=30), message_seqs(by_port, total, timeout=30)
        )
        await asyncio.wait_for(producer, 30)
        assert session_seqs == list(range(1, total + 1))
        assert port_seqs == list(range(1, total + 1))
        assert killed >= 5 and hub.resets >= resets_before + 5
        resync = await receive(by_list)
        while resync["type"] != "resync":  # session events may come first
            resync = await receive(by_list)
        assert resync == {"type": "resync", "sessions": True}


async def test_a_seq_jump_alone_makes_the_feed_read_the_gap_from_storage(
    gateway: RunningGateway,
) -> None:
    """A live feed that receives seq 5 right after seq 2 (3 and 4 lost on the way, with no
    reset announced) holds 5 back, reads 3 and 4 from storage, then sends 5: in order, once."""
    async with gateway.connect() as ide:
        acks = [
            await request(ide, {"type": "message", "port": 9302, "content": f"m {i}"})
            for i in range(5)
        ]
    session_id = acks[0]["session_id"]
    sent: list[int] = []
    queued: list[Any] = []

    def push(frame: Frame) -> None:
        sent.append(_seq(frame))

    feed = SessionFeed(gateway.gateway.live, session_id, 9302, push, queued.append)
    feed.last_seq = 2
    await feed.go_live(lambda frame: _async_push(push, frame), None)

    def live(seq: int) -> LiveMessage:
        row = _row(session_id, seq)
        return LiveMessage(seq, 0, frames.message_event(row, 9302, edited=False))

    feed.on_messages([live(5)])
    assert sent == [] and len(queued) == 1  # held back; one catch-up queued
    catch_up: Any = queued.pop()
    collected: list[Frame] = []

    async def collect(frame: Frame) -> None:
        collected.append(frame)

    send_fn: Send = collect
    await catch_up(send_fn)
    assert [_seq(t) for t in collected] == [3, 4, 5]
    assert feed.recoveries == 1
    feed.on_messages([live(6)])  # live again
    assert sent == [6]


async def _async_push(push: Any, frame: Frame) -> None:
    push(frame)


def _seq(frame: Frame) -> int:
    seq: int = orjson.loads(frame.text)["message"]["seq"]
    return seq


def _row(session_id: str, seq: int) -> Message:
    """A message as a live publication would carry it."""
    now = datetime.now(UTC)
    return Message(
        session_id, str(uuid.uuid4()), seq, None, "user", f"m {seq - 1}", "text", "user_input",
        None, now, None, {},
    )


async def test_durable_waiter_checks_postgresql_after_a_reset(
    gateway: RunningGateway, redis: aioredis.Redis
) -> None:
    """A durable frame whose commit notification never comes (lost while the hub was down)
    is found committed in PostgreSQL once the hub announces its reset."""
    async with gateway.connect() as ide:
        ack = await request(ide, {"type": "message", "port": 9303, "content": "m", "durable": True})
    assert ack["durability"] == "persisted"
    waiter = gateway.gateway.ingestor.waiter
    never_notified: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(
        waiter.stored(never_notified, uuid.UUID(ack["session_id"]), [1])
    )
    resets = gateway.gateway.hub.resets
    await kill_pubsub_clients(redis)
    await wait_reset(gateway.gateway.hub, resets)
    await asyncio.wait_for(waiting, 10)
    assert not never_notified.done()
