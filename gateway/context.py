"""What every request handler needs, built once per process by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.lifecycle import SessionLifecycle
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.ws.connection import ConnectionParts, ConnectionRegistry
from gateway.ws.hub import Hub
from gateway.ws.ingest import Ingestor
from gateway.ws.live import LiveContext
from gateway.ws.presence import Presence
from gateway.ws.protocol import Limits
from storage.db import MeteredPool
from storage.indexer import Indexer
from storage.keys import Keys
from storage.writer import BatchWriter


@dataclass(frozen=True, slots=True)
class Gateway:
    settings: Settings
    pool: MeteredPool
    redis: aioredis.Redis
    keys: Keys
    limits: Limits
    ingestor: Ingestor
    writer: BatchWriter | None  # None when the writer runs elsewhere (`serve --no-writer`)
    connections: ConnectionRegistry
    hub: Hub
    live: LiveContext
    presence: Presence
    metrics: Metrics
    indexer: Indexer | None  # runs where the writer runs
    lifecycle: SessionLifecycle  # rotate, rename, pin, archive, delete, with their events
    connection_parts: ConnectionParts  # what each WebSocket connection is given
