"""The batch writer: exactly once into PostgreSQL, idempotent replays, reclaim, drain."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from gateway.settings import Settings
from storage.keys import WRITER_GROUP, Keys
from storage.streams import Entry
from storage.writer import BatchWriter, WriterConfig, _Batch, write_batch
from tests.conftest import (
    RunningGateway,
    count_messages,
    drained,
    receive,
    request,
    run_gateway,
    send,
)


async def _send_many(gateway: RunningGateway, port: int, n: int, tag: str) -> list[dict[str, Any]]:
    """Pipeline n messages (every fifth one a resend of the previous) and collect the acks."""
    async with gateway.connect() as ws:
        for i in range(n):
            content = f"{tag} {i - 1 if i % 5 == 4 else i}"
            frame = {"type": "message", "port": port, "content": content, "id": content}
            await send(ws, frame)
        return [await receive(ws) for _ in range(n)]


async def test_every_acked_message_is_in_postgres_exactly_once(
    gateway: RunningGateway, db: asyncpg.Pool
) -> None:
    """Four concurrent connections on two ports: after the writer drains, PostgreSQL holds
    exactly the acked (session, seq, id) triples, once each, with matching counters."""
    batches = await asyncio.gather(
        *[_send_many(gateway, 9700 + c % 2, 500, f"c{c}") for c in range(4)]
    )
    acked = {
        (a["session_id"], r["seq"], r["id"])
        for acks in batches
        for a in acks
        for r in a["results"]
        if not r["duplicate"]
    }
    assert len(acked) == 4 * 400
    await drained(gateway)
    rows = await db.fetch(
        "SELECT session_id, seq, id FROM messages WHERE user_id = $1",
        gateway.settings.local_user,
    )
    stored = [(str(r["session_id"]), r["seq"], str(r["id"])) for r in rows]
    assert len(stored) == len(set(stored)) == len(acked)
    assert set(stored) == acked
    per_session = await db.fetch(
        "SELECT id, message_count FROM sessions WHERE user_id = $1", gateway.settings.local_user
    )
    assert sorted(r["message_count"] for r in per_session) == [800, 800]
    for session in per_session:
        seqs = sorted(s for sid, s, _ in stored if sid == str(session["id"]))
        assert seqs == list(range(1, 801))


def _rows(entries: list[Entry]) -> int:
    """New message rows named by stream entries (one entry names the rows of one ingest call,
    a field per session: 'sid seq seq ...')."""
    return sum(
        len(value.split()) - 1 for _, fields in entries for name, value in fields.items()
        if name.startswith(b"r")
    )  # fmt: skip


async def _read_as(redis: aioredis.Redis, gateway: RunningGateway, consumer: str) -> list[Entry]:
    """Read every new entry as `consumer` (and leave them pending for it)."""
    stream = gateway.gateway.keys.stream
    writer = BatchWriter(gateway.gateway.pool, redis, gateway.gateway.keys)
    await writer.ensure_group()
    response: Any = await redis.xreadgroup(WRITER_GROUP, consumer, {stream: ">"}, count=10_000)
    return list(response[0][1]) if response else []


async def _xrange(redis: aioredis.Redis, stream: str) -> list[Entry]:
    entries: list[Entry] = await redis.xrange(stream)
    return entries


async def test_batch_written_twice_leaves_one_row_per_message(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """A writer killed after its commit but before XACK: the batch is written again by
    another writer, which stores no duplicate and does not double the counters."""
    acks = await _send_many(gateway_no_writer, 9710, 50, "twice")
    entries = await _read_as(redis, gateway_no_writer, "crashed")
    assert _rows(entries) == 40  # resends add no row
    pool = gateway_no_writer.gateway.pool
    async with pool.acquire() as conn:
        batch = await _Batch.read(redis, gateway_no_writer.gateway.keys, entries)
        first = await write_batch(conn, batch)  # committed, never acked
    assert (first.rows_inserted, first.replayed) == (40, False)
    replay = BatchWriter(pool, redis, gateway_no_writer.gateway.keys, consumer="rescuer")
    second = await replay.write(entries)
    assert (second.rows_inserted, second.replayed) == (0, True)
    session_id = uuid.UUID(acks[0]["session_id"])
    assert await count_messages(db, session_id) == 40
    assert await db.fetchval("SELECT message_count FROM sessions WHERE id = $1", session_id) == 40
    assert await replay.backlog() == 0


async def test_a_half_written_batch_is_completed_without_duplicates(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """A replayed batch that overlaps committed rows writes only the missing ones."""
    acks = await _send_many(gateway_no_writer, 9711, 30, "half")
    entries = await _read_as(redis, gateway_no_writer, "crashed")
    pool = gateway_no_writer.gateway.pool
    async with pool.acquire() as conn:
        whole = await _Batch.read(redis, gateway_no_writer.gateway.keys, entries)
        first_ten = dict(sorted(whole.new.items(), key=lambda kv: kv[0][1])[:10])
        partial = _Batch(new=first_ten, edits={}, written={}, edits_written=[], notify=[], raw=[])
        await write_batch(conn, partial)
    writer = BatchWriter(pool, redis, gateway_no_writer.gateway.keys, consumer="rescuer")
    result = await writer.write(entries)
    assert result.replayed and result.rows_inserted == 24 - 10
    session_id = uuid.UUID(acks[0]["session_id"])
    rows = await db.fetch("SELECT seq FROM messages WHERE session_id = $1", session_id)
    assert sorted(r["seq"] for r in rows) == list(range(1, 25))
    assert await db.fetchval("SELECT message_count FROM sessions WHERE id = $1", session_id) == 24


async def test_entries_of_a_dead_writer_are_claimed(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """Entries a dead consumer read but never acknowledged are claimed by idle time and
    written (the fallback: liveness keys off here; tests/test_writer_takeover.py has them on)."""
    acks = await _send_many(gateway_no_writer, 9712, 20, "dead")
    entries = await _read_as(redis, gateway_no_writer, "dead-writer")
    assert _rows(entries) == 16
    running = gateway_no_writer.gateway
    config = WriterConfig(claim_idle_ms=0, alive_ttl_ms=0)
    writer = BatchWriter(running.pool, redis, running.keys, config, consumer="alive")
    async with writer.running():
        await asyncio.wait_for(writer.wait_drained(), 15)
    session_id = uuid.UUID(acks[0]["session_id"])
    assert await count_messages(db, session_id) == 16
    pending = await redis.xpending(running.keys.stream, WRITER_GROUP)
    assert pending["pending"] == 0


async def test_edits_within_a_batch_become_one_row_write(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """50 growing snapshots of one reply, written in one batch, give one row with the final
    content."""
    async with gateway_no_writer.connect() as ws:
        for n in range(1, 51):
            frame = {"type": "message", "port": 9713, "id": "r", "content": "tok " * n}
            await send(ws, frame)
        acks = [await receive(ws) for _ in range(50)]
    entries = await _read_as(redis, gateway_no_writer, "one-batch")
    batch = await _Batch.read(redis, gateway_no_writer.gateway.keys, entries)
    assert len(batch.new) == 1 and not batch.edits  # folded into the new row
    running = gateway_no_writer.gateway
    await BatchWriter(running.pool, redis, running.keys, consumer="one-batch").write(entries)
    rows = await db.fetch(
        "SELECT content FROM messages WHERE session_id = $1", uuid.UUID(acks[0]["session_id"])
    )
    assert [r["content"] for r in rows] == ["tok " * 50]


async def test_edit_of_a_committed_message_updates_it(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """An edit arriving after its original was committed updates the row in place."""
    running = gateway_no_writer.gateway
    writer = BatchWriter(running.pool, redis, running.keys, consumer="w")
    async with gateway_no_writer.connect() as ws:
        ack = await request(ws, {"type": "message", "port": 9714, "id": "e", "content": "v1"})
        await writer.write(await _read_as(redis, gateway_no_writer, "w"))
        await request(ws, {"type": "message", "port": 9714, "id": "e", "content": "v2"})
        result = await writer.write(await _read_as(redis, gateway_no_writer, "w"))
    assert (result.rows_inserted, result.rows_edited) == (0, 1)
    row = await db.fetchrow(
        "SELECT content, seq, id FROM messages WHERE session_id = $1",
        uuid.UUID(ack["session_id"]),
    )
    assert row is not None and row["content"] == "v2" and row["seq"] == 1
    assert str(row["id"]) == ack["results"][0]["id"]


async def test_shutdown_drains_the_buffer(settings: Settings, db: asyncpg.Pool) -> None:
    """A gateway stopped right after acking writes everything before it exits."""
    slow = replace(settings, writer_block_ms=5000)
    async with run_gateway(slow) as running:
        acks = await _send_many(running, 9715, 100, "drain")
    session_id = uuid.UUID(acks[0]["session_id"])
    assert await count_messages(db, session_id) == 80


async def test_writer_alone_drains_what_a_writerless_gateway_buffered(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """`serve --no-writer` plus a separate writer: the writer picks up every entry."""
    acks = await _send_many(gateway_no_writer, 9716, 60, "split")
    running = gateway_no_writer.gateway
    writer = BatchWriter(running.pool, redis, running.keys)
    async with writer.running():
        await asyncio.wait_for(writer.wait_drained(), 15)
    session_id = uuid.UUID(acks[0]["session_id"])
    assert await count_messages(db, session_id) == 48


async def test_pending_set_is_emptied_after_commit(
    gateway: RunningGateway, redis: aioredis.Redis
) -> None:
    """Once written, rows leave the read-your-writes pending set (Redis memory is bounded by
    writer lag, not by history)."""
    acks = await _send_many(gateway, 9717, 25, "pend")
    await drained(gateway)
    assert await redis.zcard(gateway.gateway.keys.pending(acks[0]["session_id"])) == 0


async def test_a_row_postgres_refuses_goes_to_dead_letters(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """An entry PostgreSQL refuses as data (one that slipped past validation) is set aside in
    the dead-letter stream; the rest of its batch is written and the writer goes on."""
    acks = await _send_many(gateway_no_writer, 9718, 10, "poison")
    running = gateway_no_writer.gateway
    await _forge_poison_row(redis, running.keys, acks[0]["session_id"])
    await _send_many(gateway_no_writer, 9718, 5, "after")
    writer = BatchWriter(running.pool, redis, running.keys)
    async with writer.running():
        await asyncio.wait_for(writer.wait_drained(), 15)
    dead = await _xrange(redis, running.keys.dead_letters)
    assert len(dead) == 1 and b"\\u0000" in dead[0][1][b"row0"]
    assert b"error" in dead[0][1]
    assert await count_messages(db, acks[0]["session_id"]) == 8 + 4


async def _forge_poison_row(redis: aioredis.Redis, keys: Keys, session_id: str) -> None:
    """Store a row as the ingest script would, at seq 99 of the session, with a NUL the
    protocol layer would refuse, and an entry naming it."""
    good_row = (await redis.zrange(keys.pending(session_id), 0, 0))[0]
    poison = good_row.replace(b'"content":"', b'"content":"\\u0000', 1).replace(
        b'"seq":1,', b'"seq":99,', 1
    )
    await redis.zadd(keys.pending(session_id), {poison: 99})
    await redis.xadd(keys.stream, {b"n": b"", b"r0": f"{session_id} 99".encode()})


async def test_the_dead_letter_stream_is_capped_dropping_the_oldest(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """A dead letter added to a dead-letter stream past its cap trims the oldest entries
    (approximately: whole stream nodes), keeps the newest, and counts what it dropped."""
    acks = await _send_many(gateway_no_writer, 9722, 5, "capped")
    running = gateway_no_writer.gateway
    for i in range(300):  # dead letters of long ago
        await redis.xadd(running.keys.dead_letters, {b"old": str(i).encode()})
    await _forge_poison_row(redis, running.keys, acks[0]["session_id"])
    writer = BatchWriter(running.pool, redis, running.keys, WriterConfig(dead_letter_maxlen=50))
    async with writer.running():
        await asyncio.wait_for(writer.wait_drained(), 15)
    dead = await _xrange(redis, running.keys.dead_letters)
    # Approximate trimming removes only whole nodes (100 entries each by default).
    assert 50 <= len(dead) <= 50 + 100
    assert writer.dead_letters_dropped == 301 - len(dead)
    assert b"\\u0000" in dead[-1][1][b"row0"] and b"error" in dead[-1][1]
    assert dead[0][1][b"old"] == str(301 - len(dead)).encode()  # the oldest went first
    assert await count_messages(db, acks[0]["session_id"]) == 4


async def test_a_buffered_edit_is_read_over_the_committed_original(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis
) -> None:
    """Read your writes with edits: while an edit waits in the buffer, the API serves it, not
    the committed original; once written, the pending-edit entry is gone."""
    running = gateway_no_writer.gateway
    writer = BatchWriter(running.pool, redis, running.keys, consumer="w")
    async with (
        gateway_no_writer.connect() as ws,
        httpx.AsyncClient(base_url=gateway_no_writer.http_url) as http,
    ):
        ack = await request(ws, {"type": "message", "port": 9719, "id": "x", "content": "v1"})
        await writer.write(await _read_as(redis, gateway_no_writer, "w"))  # v1 committed
        await request(ws, {"type": "message", "port": 9719, "id": "x", "content": "v2"})
        path = f"/api/sessions/{ack['session_id']}/messages"
        before = (await http.get(path)).json()["messages"]
        await writer.write(await _read_as(redis, gateway_no_writer, "w"))  # v2 committed
        after = (await http.get(path)).json()["messages"]
    assert [(m["seq"], m["content"]) for m in before] == [(1, "v2")]
    assert before[0]["edited_at"] is not None
    assert [(m["seq"], m["content"]) for m in after] == [(1, "v2")]
    assert await redis.hlen(running.keys.pending_edits(ack["session_id"])) == 0  # type: ignore[misc]  # redis-py 7 types sync|async
    assert await redis.zcard(running.keys.pending(ack["session_id"])) == 0


async def test_three_writers_share_the_stream_exactly_once(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """Three writers draining one backlog together write every row once and keep every
    session counter exact (they lock sessions in one order, so they never deadlock)."""

    async def send_one_by_one(c: int) -> list[dict[str, Any]]:
        # Waiting for each ack keeps stream entries small, so the writers interleave.
        async with gateway_no_writer.connect() as ws:
            frame = {"type": "message", "port": 9720 + c % 3}
            return [await request(ws, {**frame, "content": f"m{c} {i}"}) for i in range(480)]

    batches = await asyncio.gather(*[send_one_by_one(c) for c in range(6)])
    running = gateway_no_writer.gateway
    config = WriterConfig(batch_rows=200)  # small batches: many interleaved transactions
    writers = [
        BatchWriter(running.pool, redis, running.keys, config, consumer=f"w{i}") for i in range(3)
    ]
    async with writers[0].running(), writers[1].running(), writers[2].running():
        await asyncio.wait_for(writers[0].wait_drained(), 30)
    assert sum(w.rows_written for w in writers) == 6 * 480
    assert sum(1 for w in writers if w.rows_written) >= 2, "the writers did not share the work"
    session_ids = {a["session_id"] for acks in batches for a in acks}
    for session_id in session_ids:
        n = await count_messages(db, session_id)
        counter = await db.fetchval(
            "SELECT message_count FROM sessions WHERE id = $1", uuid.UUID(session_id)
        )
        assert n == counter == 2 * 480


async def test_writer_recreates_its_group_when_the_stream_is_lost(
    settings: Settings, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """Redis losing the ingest stream (here: the key deleted under a blocked writer) does not
    stop the writer: it recreates its group and writes what is acked afterwards."""
    own = replace(settings, key_prefix=f"lost{uuid.uuid4().hex[:8]}:")
    async with run_gateway(own) as running:
        before = await _send_many(running, 9721, 10, "before loss")
        await drained(running)
        await redis.delete(running.gateway.keys.stream)
        after = await _send_many(running, 9721, 10, "after loss")
        await drained(running)
    session_id = uuid.UUID(before[0]["session_id"])
    assert after[0]["session_id"] == before[0]["session_id"]
    assert await count_messages(db, session_id) == 16
