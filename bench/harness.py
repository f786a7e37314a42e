"""Shared benchmark plumbing: servers (embedded unless URLs are given), a fresh database,
machine facts, and timing helpers. Benchmarks report ratios against baselines run in the same
session, so the numbers compare across machines."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from storage import migrate
from storage.db import Connection
from storage.embedded import embedded_postgres, embedded_redis
from storage.writer import COLUMNS


@contextlib.contextmanager
def servers(shared_buffers: str = "128MB") -> Iterator[tuple[str, str]]:
    """(database server URL, Redis URL): BENCH_DATABASE_URL / BENCH_REDIS_URL, else embedded
    servers in a throw-away folder."""
    given_db, given_redis = os.environ.get("BENCH_DATABASE_URL"), os.environ.get("BENCH_REDIS_URL")
    with tempfile.TemporaryDirectory(prefix="cg-bench-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        folder.chmod(0o755)  # as root, the embedded PostgreSQL runs as nobody
        db = given_db or stack.enter_context(
            embedded_postgres(folder / "postgres", shared_buffers=shared_buffers)
        )
        rd = given_redis or stack.enter_context(embedded_redis(folder / "redis"))
        yield db, rd


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new migrated database on the server, dropped afterwards."""
    name = f"cg_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    try:
        conn = await asyncpg.connect(url)
        await migrate.apply_pending(conn)
        await conn.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def content_of_realistic_length(rng: random.Random) -> str:
    """Chat content: mostly short lines, some paragraphs, a few long code replies
    (log-normal lengths, median ~150 characters, capped at 8 KiB)."""
    length = min(int(rng.lognormvariate(5.0, 1.1)) + 1, 8192)
    words = "the of and to in is that for it as with was on be at by this code function return"
    vocabulary = words.split()
    text: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(vocabulary)
        text.append(word)
        size += len(word) + 1
    return " ".join(text)[:length]


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


async def copy_in_batches(
    conn: Connection, rows: Sequence[tuple[object, ...]], batch_rows: int
) -> float:
    """COPY `rows` (in the writer's COLUMNS order) into `messages`, `batch_rows` per
    transaction as the writer commits them; the seconds it took: the raw-COPY baseline."""
    with Timer() as timer:
        for start in range(0, len(rows), batch_rows):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "messages", records=rows[start : start + batch_rows], columns=COLUMNS
                )
    return timer.seconds
