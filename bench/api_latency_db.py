"""Filling a database for bench.api_latency, keeping it between runs, and warming the caches
before measuring. The data itself comes from bench.api_latency_data; this module loads it with
COPY (indexes dropped meanwhile and rebuilt, checked against the migrated schema), sets the
counters from aggregates, fills the search index with the indexer's own catch-up, and reads
the database's files so the measurement starts from a warm server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import itertools
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.api_latency_data import (
    DAYS,
    MESSAGE_COLUMNS,
    SESSION_COLUMNS,
    Contents,
    message_rows,
    plan_sessions,
)
from bench.harness import fresh_database
from storage import migrate, stats

CHUNK_ROWS = 50_000
# Bump when the generated data changes: kept databases of another version are not reused.
DATA_VERSION = 1


@dataclass
class Generated:
    """How a database was filled: seconds per step, table sizes, what search holds."""

    messages: int
    seconds: dict[str, float] = field(default_factory=dict)
    # table, rows, pg_total_relation_size, of which indexes
    sizes: list[tuple[str, int, int, int]] = field(default_factory=list)
    search: str = ""


class Progress:
    """One line on stderr, redrawn in place: done/total, rate, time left."""

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.started, self.shown = what, total, time.monotonic(), 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.shown < 0.5 and done < self.total:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        left = (self.total - done) / rate if rate else 0.0
        print(
            f"\r  {self.what}: {done:,}/{self.total:,} ({done / self.total:.0%}),"
            f" {rate:,.0f}/s, {left:.0f} s left   ",
            end="", file=sys.stderr, flush=True,
        )  # fmt: skip

    def close(self) -> float:
        print(file=sys.stderr)
        return time.monotonic() - self.started


async def schema_snapshot(conn: asyncpg.Connection) -> list[tuple[str, ...]]:
    """Every index and constraint definition in the public schema."""
    indexes = await conn.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes"
        " WHERE schemaname = 'public' ORDER BY 1, 2"
    )
    constraints = await conn.fetch(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
        " FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
    )
    return [tuple(r) for r in indexes] + [tuple(r) for r in constraints]


async def drop_indexes(conn: asyncpg.Connection, table: str, *, constraints: bool) -> list[str]:
    """Drop the table's indexes (with `constraints`, its primary key and unique constraints
    too); returns the statements that recreate them as they were."""
    recreate = []
    if constraints:
        for r in await conn.fetch(
            "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
            " WHERE conrelid = $1::regclass AND contype IN ('p', 'u') ORDER BY conname",
            table,
        ):
            await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{r["conname"]}"')
            recreate.append(f'ALTER TABLE {table} ADD CONSTRAINT "{r["conname"]}" {r["def"]}')
    for r in await conn.fetch(
        "SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def"
        " FROM pg_index i WHERE indrelid = $1::regclass AND NOT EXISTS (SELECT 1"
        " FROM pg_constraint c WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid)",
        table,
    ):
        await conn.execute(f"DROP INDEX {r['name']}")
        recreate.append(r["def"])
    return recreate


@dataclass(frozen=True)
class SearchSupport:
    """The search of this tree (sql/0003_search.sql, storage/search.py, storage/indexer.py),
    found at run time: another change may not have brought it yet."""

    search: Callable[..., Awaitable[list[Any]]]
    catch_up: Callable[..., Awaitable[int | None]]
    index_group: str


def search_support() -> SearchSupport | None:
    if not any(m.name == "search" for m in migrate.discover()):
        return None
    try:
        search_module = importlib.import_module("storage.search")
        indexer_module = importlib.import_module("storage.indexer")
    except ImportError:
        return None
    search = getattr(search_module, "search", None)
    catch_up = getattr(indexer_module, "catch_up", None)
    group = getattr(indexer_module, "INDEX_GROUP", None)
    if search is None or catch_up is None or group is None:
        return None
    return SearchSupport(search, catch_up, group)


async def generate(
    url: str, n: int, seed: int, contents: Contents, search: SearchSupport | None
) -> Generated:
    """Fill the (freshly migrated, empty) database at `url` with `n` messages; see the
    module docstring for the shape of the data."""
    rng = random.Random(seed)
    generated = Generated(n)
    seconds = generated.seconds
    started = time.monotonic()
    conn = await asyncpg.connect(url)
    try:
        migrated = await schema_snapshot(conn)
        # Index builds sort in memory rather than in temporary files, on both cores.
        await conn.execute("SET maintenance_work_mem = '1GB'")
        epoch = datetime.now(UTC).replace(microsecond=0) - timedelta(days=DAYS)
        planned = plan_sessions(rng, n)
        await conn.copy_records_to_table(
            "sessions", records=[s.row(epoch) for s in planned], columns=SESSION_COLUMNS
        )
        recreate = await drop_indexes(conn, "messages", constraints=True)
        progress = Progress("messages (COPY)", n)
        rows, done = message_rows(planned, contents.texts, rng, epoch), 0
        while chunk := list(itertools.islice(rows, CHUNK_ROWS)):
            await conn.copy_records_to_table("messages", records=chunk, columns=MESSAGE_COLUMNS)
            done += len(chunk)
            progress(done)
        seconds["sessions and messages (COPY)"] = progress.close()
        step = time.monotonic()
        for statement in recreate:
            print(f"  {statement}", file=sys.stderr, flush=True)
            await conn.execute(statement)
        seconds["messages' indexes (built after the load)"] = time.monotonic() - step
        step = time.monotonic()
        await set_counters(conn)
        seconds["counters from aggregates"] = time.monotonic() - step
        step = time.monotonic()
        print("  VACUUM (ANALYZE)", file=sys.stderr, flush=True)
        await conn.execute("VACUUM (ANALYZE)")
        seconds["VACUUM (ANALYZE)"] = time.monotonic() - step
        step = time.monotonic()
        drift = await stats.verify(conn, fix=False)
        if not drift.clean:
            raise SystemExit(f"the generated counters drifted: {drift}")
        seconds["verify-counts' check (clean)"] = time.monotonic() - step
        generated.search = await fill_search(conn, url, search, seconds)
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")  # its writes would otherwise land in the timings
        if await schema_snapshot(conn) != migrated:
            raise SystemExit("the indexes or constraints differ from the migrated schema")
        seconds["total"] = time.monotonic() - started
        generated.sizes = await table_sizes(conn)
    finally:
        await conn.close()
    return generated


async def set_counters(conn: asyncpg.Connection) -> None:
    """Session counters and user_stats from the rows, as `verify-counts --fix` sets them."""
    await conn.execute(
        "UPDATE sessions s SET message_count = c.n, last_message_at = c.newest,"
        " activity_at = greatest(s.created_at, c.newest),"
        " updated_at = greatest(s.updated_at, c.newest)"
        " FROM (SELECT session_id, count(*) AS n, max(created_at) AS newest FROM messages"
        " GROUP BY session_id) c WHERE s.id = c.session_id"
    )
    await conn.execute(
        "INSERT INTO user_stats (user_id, sessions_active, sessions_archived, messages)"
        " SELECT user_id, count(*) FILTER (WHERE status = 'active'),"
        " count(*) FILTER (WHERE status = 'archived'),"
        " coalesce(sum(message_count) FILTER (WHERE status <> 'deleted'), 0)"
        " FROM sessions GROUP BY user_id"
        " ON CONFLICT (user_id) DO UPDATE SET sessions_active = excluded.sessions_active,"
        " sessions_archived = excluded.sessions_archived, messages = excluded.messages"
    )


async def fill_search(
    conn: asyncpg.Connection, url: str, search: SearchSupport | None, seconds: dict[str, float]
) -> str:
    """Index every message for search with the indexer's own catch-up scan (the GIN index
    dropped meanwhile and built after, as for `messages`); a sentence on what was done."""
    if search is None or not await conn.fetchval(
        "SELECT to_regclass('message_search') IS NOT NULL"
    ):
        print("  no search in this tree (sql/*_search.sql, storage.indexer.catch_up): skipped")
        return "no search in this tree: not filled"
    step = time.monotonic()
    recreate = await drop_indexes(conn, "message_search", constraints=False)
    total = await conn.fetchval("SELECT count(*) FROM messages")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    assert pool is not None
    progress = Progress("search index (catch-up)", total)

    async def watch() -> None:
        while True:
            await asyncio.sleep(1.0)
            inserted = await conn.fetchval(
                "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'message_search'"
            )
            progress(min(int(inserted or 0), total - 1))

    watcher = asyncio.create_task(watch())
    try:
        indexed = await search.catch_up(pool)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await pool.close()
    progress(total)
    progress.close()
    for statement in recreate:
        print(f"  {statement}", file=sys.stderr, flush=True)
        await conn.execute(statement)
    await conn.execute("VACUUM (ANALYZE) message_search")
    seconds["search index (catch-up, GIN after)"] = time.monotonic() - step
    return f"{indexed:,} messages indexed by storage.indexer.catch_up"


async def table_sizes(conn: asyncpg.Connection) -> list[tuple[str, int, int, int]]:
    records = await conn.fetch(
        "SELECT c.relname, c.reltuples::bigint AS rows, pg_total_relation_size(c.oid) AS total,"
        " pg_indexes_size(c.oid) AS indexes FROM pg_class c"
        " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
        " AND c.relname IN ('messages', 'sessions', 'user_stats', 'message_search')"
        " ORDER BY total DESC"
    )
    return [(r["relname"], r["rows"], r["total"], r["indexes"]) for r in records]


async def warm_page_cache(conn: asyncpg.Connection) -> str:
    """Read every file of the database's tables, indexes and TOAST once, so the OS page cache
    holds them: the state of a server whose RAM exceeds its data, whatever ran before (the
    catch-up scan, another database). Needs the server's files on this machine; a sentence
    on what was done."""
    try:
        data_dir = Path(await conn.fetchval("SELECT current_setting('data_directory')"))
    except asyncpg.InsufficientPrivilegeError:
        return "page cache not warmed (no access to data_directory)"
    paths = await conn.fetch(
        "SELECT pg_relation_filepath(oid) AS path FROM pg_class"
        " WHERE relnamespace IN ('public'::regnamespace, 'pg_toast'::regnamespace)"
        " AND relkind IN ('r', 'i', 't') AND pg_relation_filepath(oid) IS NOT NULL"
    )

    def read_all() -> int | None:
        if not data_dir.is_dir():
            return None  # a server on another machine
        total = 0
        for record in paths:
            base = data_dir / record["path"]
            files = [base, *(base.with_name(f"{base.name}_{f}") for f in ("vm", "fsm"))]
            files += itertools.takewhile(
                Path.exists, (base.with_name(f"{base.name}.{i}") for i in itertools.count(1))
            )
            for path in files:
                with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
                    while chunk := f.read(1 << 24):
                        total += len(chunk)
        return total

    started = time.monotonic()
    total = await asyncio.to_thread(read_all)
    if total is None:
        return "page cache not warmed (the server's files are not on this machine)"
    return f"{total / 2**30:.1f} GiB read into the page cache in {time.monotonic() - started:.0f} s"


# What the list queries read, loaded into PostgreSQL's buffers in this order (pg_prewarm) when
# they are large enough: the steady state of a server that has served these reads for a while.
HOT_RELATIONS = ["sessions", "user_stats", "messages_pkey", "messages_port_newest", "messages"]


async def warm_shared_buffers(conn: asyncpg.Connection) -> str:
    """Load HOT_RELATIONS into shared_buffers, as far as they fit, with pg_prewarm; a sentence
    on what was done (nothing if the extension is missing or the buffers hold less than the
    relations: then the OS page cache serves them, as with the embedded default)."""
    buffers = int(await conn.fetchval("SELECT setting::bigint * 8192 FROM pg_settings"
                                      " WHERE name = 'shared_buffers'"))  # fmt: skip
    sizes = await conn.fetch(
        "SELECT relname, pg_relation_size(oid) AS size FROM pg_class"
        " WHERE relname = ANY($1::text[]) AND relnamespace = 'public'::regnamespace",
        HOT_RELATIONS,
    )
    total = sum(r["size"] for r in sizes)
    if total > 0.9 * buffers:
        return f"shared_buffers ({buffers / 2**30:.1f} GiB) not warmed: the hot relations take more"
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    except asyncpg.PostgresError as exc:
        return f"shared_buffers not warmed (pg_prewarm: {exc})"
    started = time.monotonic()
    for name in HOT_RELATIONS:
        await conn.execute("SELECT pg_prewarm($1::regclass)", name)
    return (
        f"{total / 2**30:.1f} GiB of {', '.join(HOT_RELATIONS)} loaded into shared_buffers"
        f" ({buffers / 2**30:.1f} GiB) in {time.monotonic() - started:.0f} s"
    )


def database_name(n: int, seed: int) -> str:
    """A kept database's name: changes with the data's shape and with every migration."""
    digest = hashlib.sha256(f"{DATA_VERSION}|{n}|{seed}".encode())
    for m in migrate.discover():
        digest.update(m.checksum.encode())
    return f"cg_bench_latency_{n}_{digest.hexdigest()[:10]}"


@contextlib.asynccontextmanager
async def kept_database(server_url: str, name: str) -> AsyncIterator[tuple[str, Generated | None]]:
    """The database `name`, migrated, left in place afterwards; with how it was generated if
    an earlier run completed it (else it is empty: an interrupted one is dropped first)."""
    admin = await asyncpg.connect(server_url)
    try:
        record = await admin.fetchrow(
            "SELECT shobj_description(oid, 'pg_database') AS note FROM pg_database"
            " WHERE datname = $1",
            name,
        )
        done = None
        if record is not None and record["note"]:
            done = Generated(**json.loads(record["note"]))
            done.sizes = [tuple(s) for s in done.sizes]  # type: ignore[misc]
        elif record is not None:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        if done is None:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    conn = await asyncpg.connect(url)
    try:
        await migrate.apply_pending(conn)
    finally:
        await conn.close()
    yield url, done


async def mark_complete(server_url: str, name: str, generated: Generated) -> None:
    """Record on the kept database how it was generated: a later run reuses it as it is."""
    admin = await asyncpg.connect(server_url)
    try:
        note = json.dumps(generated.__dict__).replace("'", "''")
        await admin.execute(f"COMMENT ON DATABASE \"{name}\" IS '{note}'")
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def database(
    server_url: str, n: int, seed: int, keep: bool
) -> AsyncIterator[tuple[str, Generated | None]]:
    """The database of size `n`: with `keep`, the kept one (and how it was generated, if an
    earlier run completed it); else a fresh one, dropped afterwards (and None)."""
    if keep:
        name = database_name(n, seed)
        async with kept_database(server_url, name) as (url, done):
            print(f"# database {name}: {'reused' if done else 'generating'}", file=sys.stderr)
            yield url, done
    else:
        async with fresh_database(server_url) as url:
            yield url, None
