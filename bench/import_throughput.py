"""`chat-gateway import` throughput on a million messages, against one INSERT per row.

    python -m bench.import_throughput [--messages 1000000] [--per-chat 100]
                                      [--baseline-messages 20000] [--pairs 3]

1. Generates `--messages` messages as per-chat JSON files of `--per-chat` messages each (the
   chat file format: an id, a title, a port, and messages with a role, realistic content,
   a timestamp and a client id) in a temporary folder, removed afterwards.
2. Imports them all into a fresh database with the import as the command runs it
   (gateway/chat_import.py: one transaction and one COPY a chat, `JOBS` chats at a time,
   search index and counters included), then runs it again (a second run adds nothing),
   and checks the result: every message there, `verify-counts` finding no drift.
3. The baseline, on the first `--baseline-messages` of the same files: the same import with
   the COPY replaced by one INSERT statement per row (everything else the same), against
   the COPY import of the same files, each into a fresh database, `--pairs` times in
   alternation; the ratio is the median pair's.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import redis.asyncio as aioredis

from bench.harness import Timer, content_of_realistic_length, fresh_database, machine, servers
from gateway.chat_format import FORMAT
from gateway.chat_import import Options, Summary, import_files
from storage import stats, transfer
from storage.db import Connection
from storage.keys import Keys
from storage.rows import COLUMNS

_INSERT = (
    f"INSERT INTO messages ({', '.join(COLUMNS)})"
    f" VALUES ({', '.join(f'${n}' for n in range(1, len(COLUMNS) + 1))})"
)


async def insert_rows(conn: Connection, rows: list[transfer.Row]) -> None:
    """The baseline: one INSERT statement per row (a prepared statement, one round trip each)."""
    for row in rows:
        await conn.execute(_INSERT, *row)


def generate(folder: Path, messages: int, per_chat: int, seed: int = 17) -> tuple[list[Path], int]:
    """Per-chat JSON files holding `messages` messages; returns them and their bytes."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    written = size = 0
    chat = 0
    files = []
    while written < messages:
        count = min(per_chat, messages - written)
        at = start + timedelta(minutes=chat)
        body = {
            "format": FORMAT,
            "id": f"bench-{chat}",
            "title": f"Chat {chat}",
            "port": 9222 + chat % 20,
            "created_at": at.isoformat(),
            "messages": [
                {
                    "role": "user" if n % 2 == 0 else "assistant",
                    "content": f"{n} " + content_of_realistic_length(rng),
                    "timestamp": (at + timedelta(seconds=n)).isoformat(),
                    "id": f"m{n}",
                }
                for n in range(count)
            ],
        }
        data = orjson.dumps(body)
        files.append(folder / f"chat-{chat:07d}.json")
        files[-1].write_bytes(data)
        size += len(data)
        written += count
        chat += 1
    return files, size


async def run_import(
    database_url: str,
    redis_url: str,
    files: list[Path],
    write_rows: transfer.RowsWriter = transfer.copy_rows,
) -> tuple[float, Summary]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        with Timer() as timer:
            summary = await import_files(
                pool,
                redis,
                Keys("bench-import:"),
                files,
                Options(default_user="bench"),
                print,
                lambda done, total=None: None,
                write_rows=write_rows,
            )
        return timer.seconds, summary
    finally:
        await redis.aclose()
        await pool.close()


async def main_async(messages: int, per_chat: int, baseline: int, pairs: int) -> None:
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="cg-import-bench-") as tmp:
        folder = Path(tmp)
        with Timer() as made:
            files, size = generate(folder, messages, per_chat)
        chats = len(files)
        print(
            f"generated {messages:,} messages in {chats:,} chat files, {size / 2**20:.0f} MiB,"
            f" in {made.seconds:.1f} s"
        )
        with servers() as (server_url, redis_url):
            async with fresh_database(server_url) as url:
                seconds, summary = await run_import(url, redis_url, files)
                assert summary.messages == messages and summary.clean, summary
                print(
                    f"full import (COPY): {messages:,} messages in {seconds:.1f} s ="
                    f" {messages / seconds:,.0f} messages/s, {chats / seconds:,.0f} chats/s"
                )
                again, summary = await run_import(url, redis_url, files)
                assert summary.messages == 0 and summary.unchanged == chats, summary
                print(f"second run (adds nothing): {again:.1f} s")
                conn = await asyncpg.connect(url)
                try:
                    stored = await conn.fetchval("SELECT count(*) FROM messages")
                    indexed = await conn.fetchval("SELECT count(*) FROM message_search")
                    drift = await stats.verify(conn, fix=False)
                finally:
                    await conn.close()
                assert stored == indexed == messages and drift.clean, (stored, indexed, drift)
                print(f"checked: {stored:,} messages stored and indexed, counters without drift")
            subset = files[: max(1, baseline // per_chat)]
            count = min(baseline, messages)
            ratios, copies, inserts = [], [], []
            for _ in range(pairs):
                async with fresh_database(server_url) as url:
                    insert_s, _ = await run_import(url, redis_url, subset, insert_rows)
                async with fresh_database(server_url) as url:
                    copy_s, _ = await run_import(url, redis_url, subset)
                copies.append(count / copy_s)
                inserts.append(count / insert_s)
                ratios.append(insert_s / copy_s)
            print(
                f"baseline on {count:,} messages ({len(subset)} chats), {pairs} pairs:"
                f" COPY {statistics.median(copies):,.0f} messages/s, one INSERT per row"
                f" {statistics.median(inserts):,.0f} messages/s; COPY is"
                f" {statistics.median(ratios):.2f}x as fast (pairs: "
                + ", ".join(f"{r:.2f}" for r in ratios)
                + ")"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--per-chat", type=int, default=100)
    parser.add_argument("--baseline-messages", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main_async(args.messages, args.per_chat, args.baseline_messages, args.pairs))


if __name__ == "__main__":
    main()
