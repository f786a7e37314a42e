"""Backpressure: the Redis buffer's cap, the in-process ingest queue's cap, and a Redis outage,
each answered with `overloaded` and `retry_after_ms`, never with unbounded growth."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from gateway.errors import Overloaded
from gateway.settings import Settings
from gateway.ws.protocol import Ingest, Limits, parse_frame
from storage.buffer import IngestBuffer
from storage.embedded import embedded_redis
from storage.writer import BatchWriter
from tests.conftest import RECV_TIMEOUT, RunningGateway, receive, request, run_gateway, send


def _frame(port: int, i: int) -> dict[str, Any]:
    return {"type": "message", "port": port, "content": f"m{i}", "id": f"m{i}", "ref": f"r{i}"}


def _assert_overloaded(reply: dict[str, Any], ref: str) -> None:
    assert reply["type"] == "error" and reply["code"] == "overloaded", reply
    assert reply["ref"] == ref
    assert reply["details"]["retry_after_ms"] > 0


async def _stored_ids(db: asyncpg.Pool, session_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT id FROM messages WHERE session_id = $1 ORDER BY seq", uuid.UUID(session_id)
    )
    return [str(r["id"]) for r in rows]


async def _drain(running: RunningGateway, redis: aioredis.Redis) -> None:
    """Run a writer until everything buffered so far is committed."""
    writer = BatchWriter(running.gateway.pool, redis, running.gateway.keys)
    async with writer.running():
        await asyncio.wait_for(writer.wait_drained(), RECV_TIMEOUT)


async def test_messages_past_the_buffer_cap_are_refused_until_a_writer_catches_up(
    settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """With no writer and a cap of 5 buffered messages, the 6th to 8th get `overloaded` with
    `retry_after_ms` and are not stored, a resend of an acked one is still its duplicate, the
    five acked are all stored once a writer runs, and then the refused ones are acked."""
    port = 9650
    frames = [_frame(port, i) for i in range(8)]
    capped = replace(settings, run_writer=False, max_buffered_messages=5)
    async with run_gateway(capped) as running, running.connect() as ws:
        keys = running.gateway.keys
        for frame in frames:
            await send(ws, frame)
        replies = [await receive(ws) for _ in frames]
        assert [r["type"] for r in replies[:5]] == ["ack"] * 5, replies
        for reply, frame in zip(replies[5:], frames[5:], strict=True):
            _assert_overloaded(reply, frame["ref"])
        session_id = replies[0]["session_id"]
        assert await redis.zcard(keys.pending(session_id)) == 5
        assert int(await redis.get(keys.buffered) or 0) == 5
        resend = await request(ws, frames[0])
        assert resend["type"] == "ack" and resend["results"][0]["duplicate"] is True
        _assert_overloaded(await request(ws, frames[5]), frames[5]["ref"])  # still full

        await _drain(running, redis)
        acked = [r["results"][0]["id"] for r in replies[:5]]
        assert await _stored_ids(db, session_id) == acked
        assert int(await redis.get(keys.buffered) or 0) == 0
        again = [await request(ws, frame) for frame in frames[5:]]
        assert [a["results"][0]["seq"] for a in again] == [6, 7, 8], again
        await _drain(running, redis)
    assert await _stored_ids(db, session_id) == acked + [a["results"][0]["id"] for a in again]


async def test_a_full_ingest_queue_refuses_a_frame_at_once(gateway: RunningGateway) -> None:
    """With the in-process queue at its cap (no flush yet), the next frame is refused at once
    with `overloaded` and `retry_after_ms`, and the queued frames are acked once it flushes."""
    running = gateway.gateway
    small = IngestBuffer(
        running.redis, running.pool, running.keys, state_ttl_s=60, max_queued_ingests=2
    )
    ingestor = replace(running.ingestor, buffer=small)
    limits = Limits(1 << 20, 1 << 19, 1 << 14, 500)
    user = f"q{uuid.uuid4().hex[:8]}"
    commands = []
    for i in range(3):
        command = parse_frame(orjson.dumps(_frame(9651, i)).decode(), limits)
        assert isinstance(command, Ingest)
        commands.append(command)
    replies = [ingestor.start_ingest(user, command) for command in commands]
    with pytest.raises(Overloaded) as refused:
        await asyncio.wait_for(replies[2], RECV_TIMEOUT)  # the flusher is not even running
    assert refused.value.details == {"retry_after_ms": 1000}
    async with small.running():
        acks = [orjson.loads((await asyncio.wait_for(r, RECV_TIMEOUT)).text) for r in replies[:2]]
    assert [a["results"][0]["seq"] for a in acks] == [1, 2]


async def test_a_redis_outage_leaves_no_unretrieved_future_in_the_log(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stopped: frames get `overloaded`, the frames of a client that left unanswered
    leave no "exception was never retrieved" in the log, and a restarted Redis acks again."""
    caplog.set_level(logging.WARNING)
    data = tmp_path / "valkey"
    with contextlib.ExitStack() as valkey:
        # Started and stopped from this (the main) thread: see storage/embedded.py.
        url = valkey.enter_context(embedded_redis(data))
        port = urlsplit(url).port
        async with (
            run_gateway(replace(settings, redis_url=url)) as running,
            running.connect() as stays,
        ):
            first = await request(stays, _frame(9652, 0))
            assert first["type"] == "ack", first
            valkey.close()  # a real stop: Valkey exits
            async with running.connect() as leaves:
                for i in range(50):
                    await send(leaves, _frame(9653, i))
            # The leaver is gone, so its frames are all submitted; frames are flushed in
            # submit order, so once this one is answered the leaver's are settled too.
            await asyncio.wait_for(running.gateway.connections.wait_for_count(1), RECV_TIMEOUT)
            _assert_overloaded(await request(stays, _frame(9652, 1)), "r1")
            gc.collect()  # the failed requests reference each other through tracebacks
            never = [r for r in caplog.records if "never retrieved" in r.getMessage()]
            assert never == []
            valkey.enter_context(embedded_redis(data, port=port))
            again = await request(stays, _frame(9652, 1))
            assert again["type"] == "ack" and again["results"][0]["seq"] == 2, again
