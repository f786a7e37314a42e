"""Connection lifecycle: backpressure and clients that leave mid-flight."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import connect

from gateway.ws.connection import _teardown_step
from tests.conftest import RunningGateway, drained, receive, request


async def test_client_that_leaves_mid_flight_frees_its_connection(
    gateway: RunningGateway, db: asyncpg.Pool
) -> None:
    """A client that pipelines 3,000 frames, reads only the first acks and then drops the TCP
    connection leaves no connection task behind; every message it got an ack for is stored
    exactly once, under the id the ack gave, and nothing is stored twice."""
    registry = gateway.gateway.connections
    async with connect(gateway.ws_url, max_queue=1) as probe:
        session = await request(probe, {"type": "message", "port": 9900, "content": "p"})
    ws = await connect(gateway.ws_url, max_queue=1)
    frame = {"type": "message", "port": 9900, "content": "x" * 2000}
    for i in range(3000):
        await ws.send(orjson.dumps({**frame, "id": str(i)}).decode())
    acked: dict[str, str] = {}  # client id -> message id, from the acks received
    for _ in range(100):  # the gateway is still working through the rest
        ack = await receive(ws)
        assert ack["type"] == "ack", ack
        acked |= {r["client_id"]: r["id"] for r in ack["results"]}
    assert len(registry) == 1
    ws.transport.abort()  # no close handshake: the client just vanishes
    await asyncio.wait_for(registry.wait_for_count(0), 15)
    await drained(gateway)
    rows = await db.fetch(
        "SELECT client_id, id::text FROM messages WHERE session_id = $1 AND client_id IS NOT NULL",
        uuid.UUID(session["session_id"]),
    )
    stored = Counter((r["client_id"], r["id"]) for r in rows)
    assert len(acked) == 100
    assert all(stored[client_id, message_id] == 1 for client_id, message_id in acked.items())
    assert max(stored.values()) == 1 and len({c for c, _ in stored}) == len(stored)
    assert len(stored) <= 3000


async def test_reader_stops_at_the_inflight_limit(gateway: RunningGateway) -> None:
    """A client that sends but does not read is not buffered without bound: once the socket
    takes no more acks, the outbox fills to its limit, the gateway stops reading, and the
    client's `send` blocks."""
    ws = await connect(gateway.ws_url, max_queue=1, write_limit=2**16)
    frame = orjson.dumps({"type": "message", "port": 9901, "content": "y" * 4000}).decode()
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while True:
            await ws.send(frame)
            sent += 1

    task = asyncio.create_task(flood())
    # Wait until the flood stalls: sent stops moving for a while.
    last = -1
    while sent != last:
        last = sent
        await asyncio.wait({task}, timeout=1.0)  # a stall is an absence: it needs a window
    [connection] = gateway.gateway.connections
    inflight = connection.inflight
    task.cancel()
    ws.transport.abort()
    # Stalled with the outbox exactly full: the gateway holds at most max_inflight replies;
    # the rest of what was sent sits in kernel socket buffers (bounded by the kernel).
    assert inflight == gateway.settings.max_inflight_frames
    assert sent < 200_000


def test_a_failed_teardown_step_is_logged_and_teardown_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A teardown step that fails is logged as a warning carrying the exception, and the
    code after it runs; an expected failure (the client left) is not logged, and a
    cancellation is not swallowed."""
    steps: list[str] = []
    with caplog.at_level(logging.WARNING, logger="gateway.ws.connection"):
        with _teardown_step("marking the ports offline"):
            steps.append("first")
            raise RuntimeError("redis is gone")
        with _teardown_step("closing the socket", (OSError,)):
            steps.append("second")
            raise ConnectionResetError
        with pytest.raises(asyncio.CancelledError), _teardown_step("stopping a task"):
            raise asyncio.CancelledError
    assert steps == ["first", "second"]
    [record] = [r for r in caplog.records if r.name == "gateway.ws.connection"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "connection teardown: marking the ports offline failed"
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
