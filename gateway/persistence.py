"""What runs wherever the writer runs: the batch writer, the search indexer and their metrics.

`serve` runs them in-process (unless `--no-writer`) and `chat-gateway writer` runs only them;
both wire them here, so a standalone writer has the same configuration, metrics and slow-query
logging as an in-process one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from gateway.metrics import Metrics
from gateway.settings import Settings
from storage.indexer import Indexer
from storage.keys import Keys
from storage.writer import BatchWriter, WriterConfig


@dataclass(frozen=True, slots=True)
class Persistence:
    """The running writer and indexer of this process."""

    writer: BatchWriter
    indexer: Indexer


def writer_config(settings: Settings) -> WriterConfig:
    """The writer's knobs, from the settings."""
    return WriterConfig(
        batch_entries=settings.writer_batch_entries,
        block_ms=settings.writer_block_ms,
        claim_idle_ms=settings.writer_claim_idle_ms,
        alive_ttl_ms=settings.writer_alive_ttl_ms,
    )


@contextlib.asynccontextmanager
async def running_persistence(
    settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis, keys: Keys, metrics: Metrics
) -> AsyncIterator[Persistence]:
    """Run the writer and the indexer for the body of the `async with`.

    On exit the indexer stops first, then the writer drains the ingest stream into PostgreSQL
    (its last batches' index entries are picked up by the next indexer, or `reindex`). The
    pool's query logger should be `metrics.observe_query` (see `storage.db.create_pool`)."""
    writer = BatchWriter(
        pool, redis, keys, writer_config(settings), on_batch=metrics.observe_batch
    )
    # Search indexing runs off the ingest path, beside the writer (docs/search.md).
    indexer = Indexer(pool, redis, keys, on_batch=metrics.observe_index_batch)
    async with writer.running(), indexer.running():
        yield Persistence(writer, indexer)
