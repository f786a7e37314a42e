"""What full-text search costs ingest, per design, and how fast the chosen one searches.

    python -m bench.search_ingest [--rows 1000000] [--users 1] [--repeat 30]

All sections use the same generated chat rows (a Zipf vocabulary of 30,000 words, lengths
log-normal with a median of about 150 characters, capped at 8 KiB; one in ten messages is
code-like, with dotted and underscored identifiers), in sessions of `--users` users (1: local
single-user mode, where every row is the searching user's, the worst case for the filter).

1. COPY ingest into `messages`, batches of 5,000 rows (the writer's target), one transaction
   each, into a fresh database per design: today's schema (which design (b) leaves as it is),
   (a) a generated tsvector column (`search_document(content)`) without and with its GIN
   index, (c) a pg_trgm GIN index on `content`.
2. Design (b): the indexer draining the index stream filled as the writer fills it (one entry
   of 5,000 keys per batch) for all the rows of (1).
3. Ingest and indexer at once, as in `serve`: COPY batches, each followed by its index-stream
   entry, with the indexer running in the same event loop. A burst of `--burst-rows` (COPY
   rate against the same burst into a database without indexer, and the indexer's backlog
   when the burst ends), then `--paced-seconds` at each of `--paced-rates` rows/s in a batch
   every 50 ms, like the writer under steady load (how far search lags behind the commit).
   3b. The real pipeline: `--writer-messages` messages through the ingest script into the
   ingest stream (100 per frame), then the batch writer draining it alone, and with the
   indexer running beside it, yielding to the writer while it is behind (the default) and
   not yielding.
4. Search latency through `storage.search.search` (the handler minus HTTP) on the indexed
   table, per typical query, `--repeat` runs each after one warm-up run.
5. Catch-up: indexing every row of an emptied index with `catch_up`, then a pass over the
   fully indexed table (what a needless catch-up costs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

from bench.harness import Timer, copy_in_batches, fresh_database, machine, make_items, servers
from gateway.ws.ingest import buffer_item
from gateway.ws.protocol import MessageItem
from storage.buffer import IngestBuffer
from storage.db import Connection, PoolSettings, create_pool
from storage.indexer import Indexer, IndexerConfig, catch_up
from storage.keys import Keys
from storage.rows import COLUMNS
from storage.search import search
from storage.writer import BatchWriter

VOCABULARY = 30_000
SESSIONS_PER_USER = 200
PORTS = 20
BATCH = 5_000  # the writer's target batch (WriterConfig.batch_rows)

DESIGNS: dict[str, list[str]] = {
    "none (today; design b)": [],
    "(a) generated tsvector column, no index": [
        "ALTER TABLE messages ADD COLUMN tsv tsvector"
        " GENERATED ALWAYS AS (search_document(content)) STORED"
    ],
    "(a) generated tsvector column + GIN": [
        "ALTER TABLE messages ADD COLUMN tsv tsvector"
        " GENERATED ALWAYS AS (search_document(content)) STORED",
        "CREATE INDEX messages_tsv ON messages USING gin (tsv)",
    ],
    "(c) pg_trgm GIN on content": [
        "CREATE EXTENSION IF NOT EXISTS pg_trgm",
        "CREATE INDEX messages_trgm ON messages USING gin (content gin_trgm_ops)",
    ],
}


def word(rank: int) -> str:
    """The vocabulary's word of this frequency rank (0 the most common): pronounceable,
    distinct, 2 to 4 syllables."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]  # 70
    parts = []
    n = rank + 70  # at least two syllables
    while n:
        n, digit = divmod(n, len(syllables))
        parts.append(syllables[digit])
    return "".join(parts)


@dataclass(frozen=True)
class Corpus:
    rows: list[tuple[Any, ...]]  # COPY records in COLUMNS order
    sessions: list[tuple[uuid.UUID, str, int]]  # (id, user, port)


def make_corpus(n: int, users: int, seed: int = 7) -> Corpus:
    rng = random.Random(seed)
    words = [word(r) for r in range(VOCABULARY)]
    cumulative = list(itertools.accumulate(1 / (r + 1) for r in range(VOCABULARY)))
    sessions = [
        (uuid.UUID(int=rng.getrandbits(128)), f"user{u}", 9222 + s % PORTS)
        for u in range(users)
        for s in range(SESSIONS_PER_USER)
    ]
    next_seq = dict.fromkeys((s[0] for s in sessions), 0)
    start = datetime(2026, 10, 24, tzinfo=UTC)
    step = timedelta(days=30) / n
    rows = []
    for i in range(n):
        session_id, user, port = sessions[rng.randrange(len(sessions))]
        next_seq[session_id] += 1
        length = min(int(rng.lognormvariate(5.0, 1.1)) + 1, 8192)
        count = max(1, length // 7)
        drawn = rng.choices(words, cum_weights=cumulative, k=count)
        if i % 10 == 0:  # code-like: dotted calls and snake_case names
            content = " ".join(
                f"self.{a}_{b}({c})" if j % 3 == 0 else a
                for j, (a, b, c) in enumerate(
                    zip(drawn, drawn[1:] + drawn[:1], drawn[::-1], strict=True)
                )
            )
        else:
            content = " ".join(drawn)
        created = start + step * i
        rows.append(
            (
                str(session_id),
                next_seq[session_id],
                str(uuid.UUID(int=rng.getrandbits(128))),
                user,
                port,
                None,
                str(uuid.UUID(int=rng.getrandbits(128))),
                "user" if i % 2 else "assistant",
                content[:8192],
                "markdown",
                "ide_extraction",
                None,
                created,
                None,
                "{}",
            )
        )
    return Corpus(rows, sessions)


async def prepare(conn: Connection, corpus: Corpus, ddl: Sequence[str]) -> None:
    await conn.executemany(
        "INSERT INTO sessions (id, user_id, port, ide_type, status)"
        " VALUES ($1, $2, $3, 'cursor', 'archived')",
        corpus.sessions,
    )
    for statement in ddl:
        await conn.execute(statement)


async def copy_rows(conn: Connection, rows: list[tuple[Any, ...]]) -> float:
    return await copy_in_batches(conn, rows, BATCH)


def index_entry(rows: Sequence[tuple[Any, ...]]) -> dict[str, bytes]:
    """The writer's index-stream entry for these committed rows."""
    return {"k": orjson.dumps([[r[0], r[1]] for r in rows])}


async def server_cpu(conn: Connection) -> float:
    """CPU seconds used so far by the database's server processes (client backends of this
    database), read from /proc: a cost that other load on the machine does not inflate the
    way it inflates elapsed time. NaN when the server is not on this machine."""
    pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return sum(process_cpu(record["pid"]) for record in pids)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a local process; NaN if it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def section_copy(server_url: str, corpus: Corpus) -> dict[str, float]:
    rates: dict[str, float] = {}
    for name, ddl in DESIGNS.items():
        async with fresh_database(server_url) as url:
            conn = await asyncpg.connect(url)
            try:
                await prepare(conn, corpus, ddl)
                cpu = await server_cpu(conn)
                seconds = await copy_rows(conn, corpus.rows)
                cpu = await server_cpu(conn) - cpu
            finally:
                await conn.close()
        rates[name] = len(corpus.rows) / seconds
        print(
            f"  {name:<42} {rates[name]:>9,.0f} rows/s ({seconds:.1f} s);"
            f" server CPU {cpu / len(corpus.rows) * 1e6:.0f} µs/row"
        )
        sys.stdout.flush()
    return rates


async def section_indexer(url: str, redis_url: str, corpus: Corpus) -> float:
    keys = Keys(f"bench-search-{uuid.uuid4().hex[:6]}:")
    pool = await create_pool(url, PoolSettings(max_size=4))
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with pool.acquire() as conn:
            await prepare(conn, corpus, [])
            await copy_rows(conn, corpus.rows)
            await conn.execute("VACUUM ANALYZE messages")
        indexer = Indexer(pool, redis, keys)
        await indexer.ensure_group()
        await redis.delete(f"{keys.index_stream}:catch-up")  # the rows all have entries
        for start in range(0, len(corpus.rows), BATCH):
            await redis.xadd(keys.index_stream, index_entry(corpus.rows[start : start + BATCH]))  # type: ignore[arg-type]
        async with pool.acquire() as conn:
            cpu = await server_cpu(conn)
        with Timer() as timer:
            await indexer.drain()
        assert indexer.rows_indexed == len(corpus.rows), indexer.rows_indexed
        async with pool.acquire() as conn:
            cpu = await server_cpu(conn) - cpu
            await conn.execute("VACUUM ANALYZE message_search")
            size = await conn.fetchval(
                "SELECT pg_size_pretty(pg_total_relation_size('message_search')) || ' (messages '"
                " || pg_size_pretty(pg_total_relation_size('messages')) || ')'"
            )
    finally:
        await redis.delete(keys.index_stream)
        await redis.aclose()
        await pool.close()
    rate = len(corpus.rows) / timer.seconds
    print(
        f"  indexer: {rate:,.0f} rows/s ({timer.seconds:.1f} s for {len(corpus.rows):,} rows);"
        f" server CPU {cpu / len(corpus.rows) * 1e6:.0f} µs/row; message_search {size}"
    )
    return rate


async def copy_and_announce(
    conn: Connection, redis: aioredis.Redis, keys: Keys, batch: list[tuple[Any, ...]]
) -> None:
    """What the writer does per batch: commit the rows, then announce their keys."""
    async with conn.transaction():
        await conn.copy_records_to_table("messages", records=batch, columns=COLUMNS)
    await redis.xadd(keys.index_stream, index_entry(batch))  # type: ignore[arg-type]


async def section_concurrent(
    server_url: str,
    redis_url: str,
    corpus: Corpus,
    burst_rows: int,
    paced_rates: list[int],
    paced_seconds: float,
) -> None:
    burst = corpus.rows[:burst_rows]
    async with fresh_database(server_url) as url:
        direct = await asyncpg.connect(url)
        try:
            await prepare(direct, corpus, [])
            alone = burst_rows / await copy_rows(direct, burst)
        finally:
            await direct.close()
    async with fresh_database(server_url) as url:
        keys = Keys(f"bench-search-{uuid.uuid4().hex[:6]}:")
        pool = await create_pool(url, PoolSettings(max_size=4))
        redis = aioredis.Redis.from_url(redis_url)
        lags: list[float] = []
        try:
            async with pool.acquire() as conn:
                await prepare(conn, corpus, [])
            indexer = Indexer(pool, redis, keys, on_batch=lambda rows, lag: lags.append(lag))
            await indexer.ensure_group()
            await redis.delete(f"{keys.index_stream}:catch-up")  # every row gets an entry
            async with indexer.running(), pool.acquire() as conn:
                with Timer() as copying:
                    for start in range(0, burst_rows, BATCH):
                        await copy_and_announce(conn, redis, keys, burst[start : start + BATCH])
                behind = await indexer.backlog() * BATCH
                with Timer() as settle:
                    await indexer.wait_idle()
                print(
                    f"  burst of {burst_rows:,} rows: COPY alone {alone:,.0f} rows/s, with the"
                    f" indexer running {burst_rows / copying.seconds:,.0f} rows/s"
                    f" ({copying.seconds:.1f} s); the indexer was about {behind:,} rows"
                    f" behind at the end and done {settle.seconds:.1f} s later"
                )
                offset = burst_rows
                for rate in paced_rates:
                    lags.clear()
                    per_tick = max(1, rate // 20)  # a writer batch every 50 ms
                    ticks = int(paced_seconds * 20)
                    t0 = time.monotonic()
                    for tick in range(ticks):
                        await asyncio.sleep(max(0.0, t0 + tick / 20 - time.monotonic()))
                        batch = corpus.rows[offset : offset + per_tick]
                        offset += per_tick
                        await copy_and_announce(conn, redis, keys, batch)
                    await indexer.wait_idle()
                    print(
                        f"  paced at {rate:,} rows/s for {paced_seconds:.0f} s ({per_tick} rows"
                        f" per 50 ms): search lags the commit by"
                        f" p50 {percentile(lags, 50) * 1000:,.0f} ms,"
                        f" p99 {percentile(lags, 99) * 1000:,.0f} ms,"
                        f" max {max(lags) * 1000:,.0f} ms"
                    )
                    sys.stdout.flush()
        finally:
            await redis.delete(keys.index_stream)
            await redis.aclose()
            await pool.close()


async def fill(buffer: IngestBuffer, items: list[tuple[int, MessageItem]]) -> None:
    """Submit the items in frames of 100 (one port each), 100 frames in flight at a time:
    the buffer sends all it has queued in one script call, and 180,000 messages in one call
    outlast the Redis client's read timeout."""
    by_port: dict[int, list[MessageItem]] = {}
    for port, item in items:
        by_port.setdefault(port, []).append(item)
    frames = [
        (port, [buffer_item("bench", port, m) for m in port_items[i : i + 100]])
        for port, port_items in by_port.items()
        for i in range(0, len(port_items), 100)
    ]
    for start in range(0, len(frames), 100):
        await asyncio.gather(
            *(buffer.submit("bench", port, "cursor", f) for port, f in frames[start : start + 100])
        )


async def section_writer(server_url: str, redis_url: str, n: int) -> None:
    """The real pipeline: messages through the ingest script into the ingest stream, then the
    batch writer draining it alone, and with an indexer running beside it (yielding to the
    writer while it is behind, the default, and not yielding)."""
    variants: list[tuple[str, IndexerConfig | None]] = [
        ("writer alone", None),
        ("with the indexer (yields to the writer)", IndexerConfig()),
        ("with the indexer, not yielding", IndexerConfig(yield_to_writer_ms=0)),
    ]
    alone = 0.0
    for name, config in variants:
        async with fresh_database(server_url) as url:
            keys = Keys(f"bench-search-{uuid.uuid4().hex[:6]}:")
            pool = await create_pool(url, PoolSettings(max_size=6))
            redis = aioredis.Redis.from_url(redis_url)
            try:
                buffer = IngestBuffer(redis, pool, keys, state_ttl_s=3600)
                async with buffer.running():
                    await fill(buffer, make_items(n, seed=11))
                writer = BatchWriter(pool, redis, keys)
                await writer.ensure_group()
                indexer = Indexer(pool, redis, keys, config)
                await indexer.ensure_group()
                await redis.delete(f"{keys.index_stream}:catch-up")  # nothing written before
                async with contextlib.AsyncExitStack() as stack:
                    if config is not None:
                        await stack.enter_async_context(indexer.running())
                    with Timer() as drain:
                        while await writer.step(block_ms=None):
                            pass
                    with Timer() as settle:
                        if config is not None:
                            await indexer.wait_idle()
                assert writer.rows_written == n, (writer.rows_written, n)
            finally:
                await redis.delete(keys.stream, keys.index_stream)
                await redis.aclose()
                await pool.close()
        rate = n / drain.seconds
        alone = alone or rate
        searchable = (
            f"; all searchable {settle.seconds:.1f} s after the writer finished"
            if config is not None
            else ""
        )
        print(
            f"  {name:<40} writer {rate:>7,.0f} rows/s ({drain.seconds:.1f} s),"
            f" {rate / alone:.2f} of alone{searchable}"
        )
        sys.stdout.flush()


def queries() -> list[tuple[str, str]]:
    """(what, q): typical queries, by the frequency rank of their words."""
    w = word
    return [
        ("very common word (rank 3)", w(3)),
        ("common word (rank 30)", w(30)),
        ("mid word (rank 300)", w(300)),
        ("rare word (rank 3,000)", w(3000)),
        ("very rare word (rank 25,000)", w(25000)),
        ("two words (ranks 20, 200)", f"{w(20)} {w(200)}"),
        ("three words (ranks 10, 100, 1,000)", f"{w(10)} {w(100)} {w(1000)}"),
        ('phrase of two common words "a b"', f'"{w(1)} {w(2)}"'),
        ("identifier (self.w0_w1)", f"self.{w(0)}_{w(1)}"),
        ("or (ranks 500, 600)", f"{w(500)} or {w(600)}"),
        ("negation (rank 50 -rank 5)", f"{w(50)} -{w(5)}"),
        ("no match", "zzzzqqq"),
    ]


async def section_search(url: str, repeat: int, port_filter: bool) -> None:
    pool = await create_pool(url, PoolSettings(max_size=2))
    try:
        async with pool.acquire() as conn:
            print("  | query | matches | p50 | p99 |")
            print("  |---|---|---|---|")
            for what, q in queries():
                matches = await conn.fetchval(
                    "SELECT count(*) FROM message_search"
                    " WHERE user_id = 'user0' AND tsv @@ search_query($1)",
                    q,
                )
                port = 9222 if port_filter else None
                await search(conn, "user0", q, port=port, limit=20)  # warm-up
                samples = []
                for _ in range(repeat):
                    t = time.perf_counter()
                    await search(conn, "user0", q, port=port, limit=20)
                    samples.append((time.perf_counter() - t) * 1000)
                print(
                    f"  | {what}: `{q}` | {matches:,} | {statistics.median(samples):.1f} ms"
                    f" | {percentile(samples, 99):.1f} ms |"
                )
                sys.stdout.flush()
    finally:
        await pool.close()


async def section_catch_up(url: str, n: int) -> None:
    pool = await create_pool(url, PoolSettings(max_size=2))
    try:
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE message_search")
            cpu = await server_cpu(conn)
        with Timer() as full:
            indexed = await catch_up(pool)
        assert indexed == n, indexed
        with Timer() as again:
            none = await catch_up(pool)
        assert none == 0, none
        async with pool.acquire() as conn:
            cpu = await server_cpu(conn) - cpu
    finally:
        await pool.close()
    print(
        f"  catch-up of an empty index: {n / full.seconds:,.0f} rows/s ({full.seconds:.1f} s);"
        f" a pass over the fully indexed table: {again.seconds:.1f} s;"
        f" server CPU of both {cpu:.1f} s"
    )


async def main_async(args: argparse.Namespace) -> None:
    print(f"# search indexing, {args.rows:,} rows, {args.users} user(s); {machine()}")
    with Timer() as gen:
        corpus = make_corpus(args.rows, args.users)
    print(f"(corpus generated in {gen.seconds:.0f} s)")
    with servers() as (server_url, redis_url):
        if "copy" in args.sections:
            print("## 1. COPY ingest into messages, per design")
            await section_copy(server_url, corpus)
        if {"indexer", "search", "catch-up"} & set(args.sections):
            async with fresh_database(server_url) as url:
                print("## 2. design (b): indexer throughput")
                await section_indexer(url, redis_url, corpus)
                if "search" in args.sections:
                    print("## 4. search latency, limit 20")
                    await section_search(url, args.repeat, port_filter=False)
                    print("## 4b. the same with a port filter (port=9222)")
                    await section_search(url, args.repeat, port_filter=True)
                if "catch-up" in args.sections:
                    print("## 5. catch-up")
                    await section_catch_up(url, len(corpus.rows))
        if "writer" in args.sections:
            print(f"## 3b. the batch writer draining {args.writer_messages:,} messages")
            await section_writer(server_url, redis_url, args.writer_messages)
        if "concurrent" in args.sections:
            print("## 3. ingest with the indexer running")
            await section_concurrent(
                server_url,
                redis_url,
                corpus,
                args.burst_rows,
                args.paced_rates,
                args.paced_seconds,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--burst-rows", type=int, default=300_000)
    parser.add_argument("--writer-messages", type=int, default=200_000)
    parser.add_argument("--paced-rates", type=int, nargs="+", default=[1_000, 5_000, 10_000])
    parser.add_argument("--paced-seconds", type=float, default=15.0)
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["copy", "indexer", "search", "catch-up", "concurrent", "writer"],
        choices=["copy", "indexer", "search", "catch-up", "concurrent", "writer"],
    )
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
