"""Taking over a dead writer's (or indexer's) pending entries through liveness keys: at once
after a SIGKILL, never from a live writer stuck on a slow batch, harmlessly for one that was
only cut off."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from gateway.settings import Settings
from storage.indexer import INDEX_GROUP, Indexer, IndexerConfig
from storage.keys import WRITER_GROUP
from storage.writer import BatchWriter, WriterConfig
from tests.conftest import RunningGateway, count_messages, receive, send
from tests.processes import command_env, start_writer

TAKEOVER_BOUND_S = 5.0  # the aim of issue 12: a restarted writer takes over within 5 s
WAIT_S = 15.0  # bound of every wait; the idle claim (30 s) would take longer


async def _send(running: RunningGateway, port: int, n: int) -> list[dict[str, Any]]:
    """Pipeline n distinct messages on one connection and collect the acks."""
    async with running.connect() as ws:
        for i in range(n):
            await send(ws, {"type": "message", "port": port, "content": f"m{i}", "id": f"m{i}"})
        return [await receive(ws) for _ in range(n)]


async def _holding(redis: aioredis.Redis, stream: str, group: str, consumer: str) -> int:
    """How many entries `consumer` has pending in the group."""
    summary: Any = await redis.xpending(stream, group)
    for c in summary["consumers"] or []:
        if c["name"].decode() == consumer:
            return int(c["pending"])
    return 0


async def _until_holding(
    redis: aioredis.Redis, stream: str, group: str, consumer: str, n: int
) -> None:
    """Return once `consumer` holds exactly `n` pending entries. What another process (or a
    task blocked in PostgreSQL) has read can only be seen by asking Redis: every 20 ms."""
    async with asyncio.timeout(WAIT_S):
        # No event to wait on: the pending list of another consumer is only seen by asking.
        while await _holding(redis, stream, group, consumer) != n:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def _consumers(redis: aioredis.Redis, stream: str, group: str) -> set[str]:
    return {c["name"].decode() for c in await redis.xinfo_consumers(stream, group)}


@contextlib.asynccontextmanager
async def _session_locked(
    db: asyncpg.Pool, session_id: str
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Hold the session's row lock until the yielded `release` is awaited or the context
    ends: a writer's batch touching the session stops inside its transaction (at the counter
    update, after its COPY), its entries read and unacknowledged, as on a slow PostgreSQL."""
    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        held = True

        async def release() -> None:
            nonlocal held
            if held:
                held = False
                await transaction.rollback()

        try:
            await conn.execute(
                "SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", uuid.UUID(session_id)
            )
            yield release
        finally:
            await release()


async def _assert_stored_once(db: asyncpg.Pool, session_id: str, n: int) -> None:
    """The session holds seqs 1..n, once each, and its counter says n."""
    sid = uuid.UUID(session_id)
    seqs = await db.fetch("SELECT seq FROM messages WHERE session_id = $1 ORDER BY seq", sid)
    assert [r["seq"] for r in seqs] == list(range(1, n + 1))
    assert await db.fetchval("SELECT message_count FROM sessions WHERE id = $1", sid) == n


async def test_a_sigkilled_writer_process_is_taken_over_within_5_s(
    gateway_no_writer: RunningGateway,
    settings: Settings,
    redis: aioredis.Redis,
    db: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    """A `chat-gateway writer` SIGKILLed mid-batch: a writer started right after it writes
    its pending entries within 5 s (not the 30 s idle claim), each row once, counters exact,
    and the dead consumer leaves the group."""
    acks = await _send(gateway_no_writer, 9730, 60)
    session_id = acks[0]["session_id"]
    keys = gateway_no_writer.gateway.keys
    entries = await redis.xlen(keys.stream)
    env = command_env(
        GATEWAY_DATABASE_URL=settings.database_url,
        GATEWAY_REDIS_URL=settings.redis_url,
        GATEWAY_KEY_PREFIX=settings.key_prefix,
        GATEWAY_LOG_LEVEL="info",
    )
    async with _session_locked(db, session_id):
        proc, log = await start_writer(tmp_path, env, WAIT_S)
        try:
            match = re.search(r"writer (\S+) running;", log)
            assert match is not None, log
            dead = match.group(1)
            await _until_holding(redis, keys.stream, WRITER_GROUP, dead, entries)
            assert await redis.exists(keys.writer_alive(dead))  # its heartbeat was beating
            proc.kill()
            killed_at = time.monotonic()
            assert await asyncio.wait_for(proc.wait(), WAIT_S) == -signal.SIGKILL
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    # The lock is released: the dead process's half-done transaction is rolled back.
    rescuer = BatchWriter(
        gateway_no_writer.gateway.pool,
        redis,
        keys,
        WriterConfig(block_ms=20, alive_ttl_ms=settings.writer_alive_ttl_ms),
    )
    async with rescuer.running():
        await asyncio.wait_for(rescuer.wait_drained(), WAIT_S)
        took_s = time.monotonic() - killed_at
    print(f"writer takeover after SIGKILL: {took_s:.2f} s for {entries} entries, 60 rows")
    assert took_s < TAKEOVER_BOUND_S, f"takeover took {took_s:.2f} s"
    assert rescuer.rows_written == 60
    await _assert_stored_once(db, session_id, 60)
    pending: Any = await redis.xpending(keys.stream, WRITER_GROUP)
    assert pending["pending"] == 0
    assert dead not in await _consumers(redis, keys.stream, WRITER_GROUP)
    assert not await redis.exists(keys.writer_alive(dead))


async def test_a_live_writer_stuck_on_a_slow_batch_keeps_its_entries(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """A writer whose batch waits on PostgreSQL for ten times its liveness TTL keeps beating,
    so a second writer, which meanwhile takes over a keyless consumer's entries, never takes
    the stuck writer's; the stuck writer then writes its own, once."""
    acks = await _send(gateway_no_writer, 9731, 30)
    session_id = acks[0]["session_id"]
    running = gateway_no_writer.gateway
    stream = running.keys.stream
    entries = await redis.xlen(stream)
    config = WriterConfig(block_ms=20, alive_ttl_ms=300)
    slow = BatchWriter(running.pool, redis, running.keys, config, consumer="slow")
    other = BatchWriter(running.pool, redis, running.keys, config, consumer="other")
    async with contextlib.AsyncExitStack() as stack:
        release = await stack.enter_async_context(_session_locked(db, session_id))
        await stack.enter_async_context(slow.running())
        await _until_holding(redis, stream, WRITER_GROUP, "slow", entries)
        # Meanwhile a consumer keeping no key reads another session's messages.
        ghost = await _send(gateway_no_writer, 9734, 10)
        await redis.xreadgroup(WRITER_GROUP, "ghost", {stream: ">"})
        await stack.enter_async_context(other.running())
        # The writers stop only after their batch: on any exit, release the lock first.
        stack.push_async_callback(release)
        await _until_holding(redis, stream, WRITER_GROUP, "ghost", 0)
        # The event that must not happen: "slow" losing its entries, within 10 TTLs.
        taken = _until_holding(redis, stream, WRITER_GROUP, "slow", 0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(taken, 3.0)
        assert await _holding(redis, stream, WRITER_GROUP, "slow") == entries
        assert await redis.exists(running.keys.writer_alive("slow"))
        await release()
        await asyncio.wait_for(slow.wait_drained(), WAIT_S)
    assert (slow.rows_written, other.rows_written) == (30, 10)
    await _assert_stored_once(db, session_id, 30)
    await _assert_stored_once(db, ghost[0]["session_id"], 10)


async def test_a_writer_cut_off_past_its_ttl_copes_with_its_entries_taken_over(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """A writer whose liveness key lapsed mid-batch (cut from Redis) has its entries taken
    over; it still commits and acknowledges them, entries it no longer owns, and the new
    owner's replay stores nothing twice: rows once, counters exact, nothing pending."""
    acks = await _send(gateway_no_writer, 9732, 20)
    session_id = acks[0]["session_id"]
    running = gateway_no_writer.gateway
    stream, alive = running.keys.stream, running.keys.writer_alive("cut-off")
    entries = await redis.xlen(stream)
    cut_off = BatchWriter(running.pool, redis, running.keys, consumer="cut-off")
    rescuer = BatchWriter(running.pool, redis, running.keys, consumer="rescuer")
    await cut_off.ensure_group()
    await redis.set(alive, b"1", px=60_000)  # its heartbeat, as far as others can tell
    async with _session_locked(db, session_id):
        first = asyncio.create_task(cut_off.step())
        await _until_holding(redis, stream, WRITER_GROUP, "cut-off", entries)
        assert await rescuer.take_over() == 0  # alive: nothing is taken
        assert await _holding(redis, stream, WRITER_GROUP, "cut-off") == entries
        await redis.delete(alive)  # the key lapsed while it could not reach Redis
        second = asyncio.create_task(rescuer.take_over())
        await _until_holding(redis, stream, WRITER_GROUP, "rescuer", entries)
        assert "cut-off" not in await _consumers(redis, stream, WRITER_GROUP)
    assert await asyncio.wait_for(first, WAIT_S) == entries
    assert await asyncio.wait_for(second, WAIT_S) == entries
    assert cut_off.rows_written + rescuer.rows_written == 20
    await _assert_stored_once(db, session_id, 20)
    pending: Any = await redis.xpending(stream, WRITER_GROUP)
    assert pending["pending"] == 0 and await redis.xlen(stream) == 0


async def test_a_dead_indexer_is_taken_over_within_5_s(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """Index entries a dead indexer read but never acknowledged are indexed by the next
    indexer within 5 s (not its 30 s idle claim), and the dead consumer leaves the group."""
    acks = await _send(gateway_no_writer, 9733, 10)
    running = gateway_no_writer.gateway
    keys = running.keys
    writer = BatchWriter(running.pool, redis, keys, WriterConfig(block_ms=20))
    async with writer.running():
        await asyncio.wait_for(writer.wait_drained(), WAIT_S)  # and announced for indexing
    indexer = Indexer(running.pool, redis, keys, IndexerConfig(block_ms=20))
    await indexer.ensure_group()
    await redis.delete(f"{keys.index_stream}:catch-up")  # no catch-up: entries must do it
    read: Any = await redis.xreadgroup(INDEX_GROUP, "dead-indexer", {keys.index_stream: ">"})
    held = len(read[0][1])
    assert held >= 1 and await redis.xlen(keys.index_stream) == held
    started = time.monotonic()
    async with indexer.running():
        await asyncio.wait_for(indexer.wait_idle(), WAIT_S)
        took_s = time.monotonic() - started
    assert took_s < TAKEOVER_BOUND_S, f"takeover took {took_s:.2f} s"
    assert indexer.rows_indexed == 10
    indexed = await db.fetchval(
        "SELECT count(*) FROM message_search WHERE session_id = $1",
        uuid.UUID(acks[0]["session_id"]),
    )
    assert indexed == 10 == await count_messages(db, acks[0]["session_id"])
    assert "dead-indexer" not in await _consumers(redis, keys.index_stream, INDEX_GROUP)
