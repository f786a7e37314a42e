"""`durable: true`: the ack waits for PostgreSQL, including for duplicates still buffered."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import asyncpg
import redis.asyncio as aioredis

from gateway.settings import Settings
from storage.writer import BatchWriter
from tests.conftest import RunningGateway, receive, request, run_gateway, send


async def test_durable_resend_of_a_buffered_message_waits_for_its_commit(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """A durable resend of a message still in the buffer is acked `persisted` (and duplicate)
    only once a writer has committed the original."""
    async with gateway_no_writer.connect() as ws:
        first = await request(ws, {"type": "message", "port": 9800, "content": "once"})
        await send(ws, {"type": "message", "port": 9800, "content": "once", "durable": True})
        ack = asyncio.create_task(receive(ws, timeout=20))
        done, _ = await asyncio.wait({ack}, timeout=0.3)
        assert not done, "acked persisted before any writer ran"
        running = gateway_no_writer.gateway
        async with BatchWriter(running.pool, redis, running.keys).running():
            durable = await ack
    assert durable["durability"] == "persisted"
    assert durable["results"][0]["duplicate"] is True
    assert durable["results"][0]["id"] == first["results"][0]["id"]
    stored = await db.fetchval(
        "SELECT count(*) FROM messages WHERE id = $1", uuid.UUID(first["results"][0]["id"])
    )
    assert stored == 1


async def test_durable_without_a_writer_times_out_as_overloaded(settings: Settings) -> None:
    """With no writer running, a durable frame gets `overloaded` with retry_after_ms after the
    configured timeout, and the connection stays usable."""
    quick = replace(settings, run_writer=False, durable_timeout_s=0.5)
    async with run_gateway(quick) as running, running.connect() as ws:
        error = await request(
            ws, {"type": "message", "port": 9801, "content": "x", "durable": True, "ref": "d"}
        )
        assert error["type"] == "error" and error["code"] == "overloaded"
        assert error["ref"] == "d" and error["details"]["retry_after_ms"] == 1000
        assert "buffered" in error["message"]
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"


async def test_durable_batch_acks_after_commit(gateway: RunningGateway, db: asyncpg.Pool) -> None:
    """A durable `extracted` batch is acked `persisted` with every item in PostgreSQL."""
    items = [{"content": f"line {i}", "id": f"l{i}"} for i in range(50)]
    async with gateway.connect() as ws:
        ack = await request(
            ws, {"type": "extracted", "port": 9802, "messages": items, "durable": True}
        )
    assert ack["durability"] == "persisted"
    n = await db.fetchval(
        "SELECT count(*) FROM messages WHERE session_id = $1", uuid.UUID(ack["session_id"])
    )
    assert n == 50
