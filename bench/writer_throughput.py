"""Batch writer throughput against raw COPY into the same table, in the same session.

    python -m bench.writer_throughput [--messages 100000] [--items-per-frame 1 100]

For each frame shape (1 item per frame, like `message`; 100, like `extracted`), the script
fills the ingest stream with N messages through the real ingest script (timed too: that is
the buffer's rate without WebSockets), then times the batch writer draining it into
PostgreSQL. The baseline is the same rows COPYed straight into an empty `messages` table in
the writer's target batch size (`WriterConfig.batch_rows`): the writer cannot beat that, so
the ratio says what its bookkeeping (stream reads, decoding, counters, XACK/XDEL,
pending-set cleanup) costs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg
import redis.asyncio as aioredis

from bench.harness import (
    Timer,
    copy_in_batches,
    fresh_database,
    machine,
    make_items,
    servers,
)
from gateway.ws.ingest import buffer_item
from gateway.ws.protocol import MessageItem
from storage.buffer import IngestBuffer
from storage.db import PoolSettings, create_pool
from storage.keys import Keys
from storage.streams import Entry
from storage.writer import BatchWriter, WriterConfig, _Batch


async def fill_stream(
    buffer: IngestBuffer, items: list[tuple[int, MessageItem]], per_frame: int
) -> float:
    """Submit every item in frames of `per_frame` (one port per frame); returns seconds."""
    by_port: dict[int, list[MessageItem]] = {}
    for port, item in items:
        by_port.setdefault(port, []).append(item)
    futures = []
    with Timer() as timer:
        for port, port_items in by_port.items():
            for start in range(0, len(port_items), per_frame):
                chunk = port_items[start : start + per_frame]
                frame = [buffer_item("bench", port, m) for m in chunk]
                futures.append(buffer.submit("bench", port, "cursor", frame))
                if len(futures) % 200 == 0:
                    await asyncio.sleep(0)  # let the flusher batch, as a busy loop would
        await asyncio.gather(*futures)
    return timer.seconds


async def run_shape(database_url: str, redis_url: str, n: int, per_frame: int) -> dict[str, float]:
    keys = Keys(f"bench{per_frame}:")
    pool = await create_pool(database_url, PoolSettings(max_size=4))
    redis = aioredis.Redis.from_url(redis_url)
    try:
        buffer = IngestBuffer(redis, pool, keys, state_ttl_s=3600)
        async with buffer.running():
            fill_s = await fill_stream(buffer, make_items(n, seed=per_frame), per_frame)
        config = WriterConfig()  # the production defaults
        writer = BatchWriter(pool, redis, keys, config)
        await writer.ensure_group()
        # Keep the decoded rows for the baseline before the writer deletes the entries.
        raw: list[Entry] = await redis.xrange(keys.stream)
        batch_rows = [list((await _Batch.read(redis, keys, [e])).new.values()) for e in raw]
        with Timer() as write:
            while await writer.step(block_ms=None):
                pass
        assert writer.rows_written == n, (writer.rows_written, n)
        copy_s = await raw_copy(pool, batch_rows, rows_per_batch=config.batch_rows)
    finally:
        await redis.aclose()
        await pool.close()
    return {
        "fill_s": fill_s,
        "write_s": write.seconds,
        "copy_s": copy_s,
        "buffer_rate": n / fill_s,
        "writer_rate": n / write.seconds,
        "copy_rate": n / copy_s,
    }


async def raw_copy(
    pool: asyncpg.Pool, entry_rows: list[list[tuple[object, ...]]], rows_per_batch: int
) -> float:
    """COPY the same rows, in the writer's batch sizes, into an emptied `messages`."""
    rows = [r for rows in entry_rows for r in rows]
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE messages")
        return await copy_in_batches(conn, rows, rows_per_batch)


async def main_async(n: int, shapes: list[int]) -> None:
    print(f"# writer throughput, {n} messages; {machine()}")
    with servers() as (server_url, redis_url):
        for per_frame in shapes:
            async with fresh_database(server_url) as database_url:
                r = await run_shape(database_url, redis_url, n, per_frame)
            print(
                f"items/frame={per_frame:<4} buffer {r['buffer_rate']:>9,.0f} msg/s"
                f" | writer {r['writer_rate']:>9,.0f} rows/s ({r['write_s']:.2f} s)"
                f" | raw COPY {r['copy_rate']:>9,.0f} rows/s ({r['copy_s']:.2f} s)"
                f" | writer/COPY {r['writer_rate'] / r['copy_rate']:.2f}"
            )
            sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--items-per-frame", type=int, nargs="+", default=[1, 100])
    args = parser.parse_args()
    asyncio.run(main_async(args.messages, args.items_per_frame))


if __name__ == "__main__":
    main()
