"""Prometheus metrics of one gateway process, served at `/metrics`.

Counters and histograms are updated where things happen (connections, the writer, the
database pool's query logger); gauges that describe shared state (the ingest stream's length
and pending entries, the pool in use, open connections) are read when Prometheus scrapes.
Each app has its own registry, so several gateways in one process (the tests) do not clash.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from storage.keys import WRITER_GROUP

if TYPE_CHECKING:
    from gateway.context import Gateway

log = logging.getLogger(__name__)

_BATCH_ROWS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000)
_FLUSH_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, slow_query_s: float) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.slow_query_s = slow_query_s
        self.connections = Gauge("gateway_connections", "Open WebSocket connections", registry=r)
        self.frames_in = Counter(
            "gateway_frames_in", "Client frames received, by type", ["type"], registry=r
        )
        self.frames_out = Counter(
            "gateway_frames_out", "Frames sent to clients, by type", ["type"], registry=r
        )
        self.acks = Counter("gateway_acks", "Acks sent, by durability", ["durability"], registry=r)
        self.errors = Counter("gateway_errors", "Error frames sent, by code", ["code"], registry=r)
        self.buffer_entries = Gauge(
            "gateway_buffer_entries", "Ingest stream entries not yet written", registry=r
        )
        self.buffer_pending = Gauge(
            "gateway_buffer_pending_entries",
            "Ingest stream entries delivered to a writer and not acknowledged",
            registry=r,
        )
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
        self.search_backlog = Gauge(
            "gateway_search_backlog", "Index stream entries not yet indexed", registry=r
        )
        self.pool_in_use = Gauge(
            "gateway_db_pool_in_use", "PostgreSQL connections checked out", registry=r
        )
        self.hub_resets = Gauge(
            "gateway_hub_resets",
            "Reconnects of this process's pub/sub connection since it started (each one makes"
            " every live feed catch up from storage)",
            registry=r,
        )
        self.slow_queries = Counter(
            "gateway_db_slow_queries", "Queries slower than the slow-query threshold", registry=r
        )

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.flush_seconds.observe(seconds)
        self.rows_written.inc(rows)

    def observe_index_batch(self, rows: int, lag_s: float) -> None:
        self.rows_indexed.inc(rows)
        self.search_lag.set(lag_s)

    def observe_query(self, record: Any) -> None:
        """asyncpg query logger: count and log queries over the threshold."""
        if record.elapsed >= self.slow_query_s:
            self.slow_queries.inc()
            query = " ".join(record.query.split())
            log.warning("slow query (%.3f s): %.300s", record.elapsed, query)

    async def render(self, gateway: Gateway) -> tuple[bytes, str]:
        """Read the gauges of shared state, then the exposition text and its content type."""
        self.connections.set(len(gateway.connections))
        self.hub_resets.set(gateway.hub.resets)
        pool = gateway.pool
        self.pool_in_use.set(pool.get_size() - pool.get_idle_size())
        stream = gateway.keys.stream
        pipe = gateway.redis.pipeline(transaction=False)
        pipe.xlen(stream)
        pipe.xpending(stream, WRITER_GROUP)
        pipe.xlen(gateway.keys.index_stream)
        try:
            length, pending, index_length = await pipe.execute(raise_on_error=False)
            self.buffer_entries.set(int(length))
            if isinstance(pending, dict):
                self.buffer_pending.set(int(pending.get("pending", 0)))
            self.search_backlog.set(int(index_length))
        except Exception:
            log.exception("could not read the ingest stream for /metrics")
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def frame_type(text: str) -> str:
    """The `type` of an encoded server frame (every encoder writes it first)."""
    if text.startswith('{"type":"'):
        end = text.find('"', 9)
        if end > 0:
            return text[9:end]
    return "unknown"
