"""Prometheus metrics of one gateway process, served at `/metrics`.

Counters and histograms are updated where things happen (connections, the writer, the
database pool's query logger). Gauges that describe shared state (the ingest stream's length
and pending entries, the pool's size, use and waiters, open connections, hub resets) come from a
`SharedStateCollector`: prometheus-client asks a collector for its metrics at each scrape, but
synchronously, so `Metrics.render` first reads Redis (asynchronously) into a snapshot that the
collector then reports. Each app has its own registry, so several gateways in one process (the
tests) do not clash.

The metrics take only what they read (`Sources`), not the whole gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from storage.db import MeteredPool
from storage.keys import WRITER_GROUP, Keys

log = logging.getLogger(__name__)

_BATCH_ROWS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000)
_ACQUIRE_SECONDS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
_FLUSH_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True, slots=True)
class Sources:
    """What the shared-state gauges read: the process's connections and hub resets (as
    callables, so the metrics import neither), its pool, and Redis with its key names."""

    connections: Callable[[], int]
    hub_resets: Callable[[], int]
    pool: MeteredPool
    redis: aioredis.Redis
    keys: Keys


@dataclass(slots=True)
class _Snapshot:
    # None: not known at this scrape (Redis could not be read, or this process has no such
    # part: a standalone writer has no connections and no hub).
    connections: int | None = None
    pool_size: int | None = None
    pool_in_use: int | None = None
    pool_waiting: int | None = None
    hub_resets: int | None = None
    buffer_entries: int | None = None
    buffer_pending: int | None = None
    search_backlog: int | None = None


class SharedStateCollector(Collector):
    """Gauges of state shared with other processes or owned elsewhere, from the snapshot the
    last `Metrics.render` took. A gauge Redis could not be read for is left out of that scrape
    (absent, not a stale or zero value)."""

    def __init__(self) -> None:
        self.snapshot = _Snapshot()

    def collect(self) -> Iterator[Metric]:
        shot = self.snapshot
        gauges: list[tuple[str, str, int | None]] = [  # name, help, value
            ("gateway_connections", "Open WebSocket connections", shot.connections),
            ("gateway_db_pool_size", "PostgreSQL connections open in the pool", shot.pool_size),
            ("gateway_db_pool_in_use", "PostgreSQL connections checked out", shot.pool_in_use),
            (
                "gateway_db_pool_waiting",
                "Tasks waiting for a PostgreSQL connection from the pool",
                shot.pool_waiting,
            ),
            (
                "gateway_hub_resets",
                "Reconnects of this process's pub/sub connection since it started (each one"
                " makes every live feed catch up from storage)",
                shot.hub_resets,
            ),
            (
                "gateway_buffer_entries",
                "Ingest stream entries not yet written",
                shot.buffer_entries,
            ),
            (
                "gateway_buffer_pending_entries",
                "Ingest stream entries delivered to a writer and not acknowledged",
                shot.buffer_pending,
            ),
            ("gateway_search_backlog", "Index stream entries not yet indexed", shot.search_backlog),
        ]
        for name, documentation, value in gauges:
            if value is not None:
                yield GaugeMetricFamily(name, documentation, value=value)


class CounterByLabel(Collector):
    """A counter with one label, counted per frame (frames in and out, acks, errors): a
    plain dict of ints, reported as a counter family at each scrape.

    A prometheus-client `Counter` child takes a lock on every `inc`, about 0.7 us against
    0.15 for a dict: three of them per message were 2 us of the gateway's CPU per message.
    No lock is needed because only the event loop's thread counts. `/metrics` shows the
    same `NAME_total{LABEL="..."}` samples as a `Counter` (without its `_created` ones).
    """

    def __init__(self, name: str, documentation: str, label: str, registry: CollectorRegistry):
        self._name, self._documentation, self._label = name, documentation, label
        self._counts: dict[str, int] = {}
        registry.register(self)

    def inc(self, label: str) -> None:
        counts = self._counts
        counts[label] = counts.get(label, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for label, count in list(self._counts.items()):
            family.add_metric([label], count)
        yield family


class Metrics:
    def __init__(self, slow_query_s: float, very_slow_query_s: float = 5.0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._shared = SharedStateCollector()
        r.register(self._shared)
        self._sources: Sources | None = None
        self.slow_query_s = slow_query_s
        self.very_slow_query_s = very_slow_query_s
        self.frames_in = CounterByLabel(
            "gateway_frames_in", "Client frames received, by type", "type", r
        )
        self.frames_out = CounterByLabel(
            "gateway_frames_out", "Frames sent to clients, by type", "type", r
        )
        self.acks = CounterByLabel("gateway_acks", "Acks sent, by durability", "durability", r)
        self.errors = CounterByLabel("gateway_errors", "Error frames sent, by code", "code", r)
        self.batch_rows = Histogram(
            "gateway_writer_batch_rows", "Rows per writer batch", buckets=_BATCH_ROWS, registry=r
        )
        self.flush_seconds = Histogram(
            "gateway_writer_flush_seconds",
            "Time to write and acknowledge one batch",
            buckets=_FLUSH_SECONDS,
            registry=r,
        )
        self.rows_written = Counter(
            "gateway_writer_rows_written", "Message rows inserted by this process's writer",
            registry=r,
        )  # fmt: skip
        self.rows_indexed = Counter(
            "gateway_search_rows_indexed",
            "Message rows (re)indexed for search from the index stream by this process",
            registry=r,
        )  # fmt: skip
        self.search_lag = Gauge(
            "gateway_search_lag_seconds",
            "Age of the oldest index entry of the last search-index batch when it was committed",
            registry=r,
        )
        # Every query's duration: _count and _sum give the count and the mean (no quantiles:
        # a Summary's are per process and cannot be aggregated; the tiers below can).
        self.query_seconds = Summary(
            "gateway_db_query_seconds", "PostgreSQL queries and their duration", registry=r
        )
        self.slow_queries = Counter(
            "gateway_db_slow_queries",
            "Queries slower than GATEWAY_SLOW_QUERY_S (logged as warnings)",
            registry=r,
        )
        self.very_slow_queries = Counter(
            "gateway_db_very_slow_queries",
            "Queries slower than GATEWAY_VERY_SLOW_QUERY_S (logged as errors; also counted slow)",
            registry=r,
        )
        self.pool_acquire_seconds = Histogram(
            "gateway_db_pool_acquire_seconds",
            "Time to get a connection from the PostgreSQL pool (waiting for a free one, or for"
            " a new one to connect)",
            buckets=_ACQUIRE_SECONDS,
            registry=r,
        )

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.flush_seconds.observe(seconds)
        self.rows_written.inc(rows)

    def observe_index_batch(self, rows: int, lag_s: float) -> None:
        self.rows_indexed.inc(rows)
        self.search_lag.set(lag_s)

    def observe_acquire(self, seconds: float) -> None:
        """The pool's acquisition meter (storage/db.py MeteredPool)."""
        self.pool_acquire_seconds.observe(seconds)

    def observe_query(self, record: Any) -> None:
        """asyncpg query logger: count every query and its time; count and log the slow and
        the very slow ones."""
        elapsed = record.elapsed
        self.query_seconds.observe(elapsed)
        if elapsed >= self.slow_query_s:
            self.slow_queries.inc()
            very_slow = elapsed >= self.very_slow_query_s
            if very_slow:
                self.very_slow_queries.inc()
            query = " ".join(record.query.split())
            level = logging.ERROR if very_slow else logging.WARNING
            log.log(level, "%s query (%.3f s): %.300s", "very slow" if very_slow else "slow",
                    elapsed, query)  # fmt: skip

    def watch(self, sources: Sources) -> None:
        """Report the shared-state gauges of `sources` from now on (the pool and Redis exist
        only after the metrics: the pool's query logger is one of them)."""
        self._sources = sources

    async def render(self) -> tuple[bytes, str]:
        """Read the shared state into the collector's snapshot, then the exposition text and
        its content type."""
        shot = _Snapshot()
        sources = self._sources
        if sources is not None:
            shot.connections = sources.connections()
            shot.hub_resets = sources.hub_resets()
            pool = sources.pool.state()
            shot.pool_size = pool.size
            shot.pool_in_use = pool.in_use
            shot.pool_waiting = pool.waiting
            stream = sources.keys.stream
            pipe = sources.redis.pipeline(transaction=False)
            pipe.xlen(stream)
            pipe.xpending(stream, WRITER_GROUP)
            pipe.xlen(sources.keys.index_stream)
            try:
                length, pending, index_length = await pipe.execute(raise_on_error=False)
                shot.buffer_entries = int(length)
                if isinstance(pending, dict):
                    shot.buffer_pending = int(pending.get("pending", 0))
                shot.search_backlog = int(index_length)
            except Exception:
                log.exception("could not read the ingest stream for /metrics")
        self._shared.snapshot = shot
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
