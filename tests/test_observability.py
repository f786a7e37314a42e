"""Operations endpoints: readiness with its reasons, Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import asyncpg
import httpx
import pytest

from gateway.settings import Settings
from tests.conftest import RunningGateway, drained, request, run_gateway, send


async def test_readyz_is_ready_with_its_checks(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """With PostgreSQL, Redis and a writer keeping up, /readyz is 200 and says why."""
    response = await http.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["postgres"] == "ok" and body["checks"]["redis"] == "ok"
    assert body["checks"]["writer_lag_s"] >= 0
    assert (await http.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_is_503_when_the_writer_lags(settings: Settings) -> None:
    """With no writer and a lag bound of zero, a buffered message makes /readyz 503 with the
    reason."""
    lagging = replace(settings, run_writer=False, ready_max_writer_lag_s=0.0)
    async with run_gateway(lagging) as running, running.connect() as ws:
        await request(ws, {"type": "message", "port": 9500, "content": "waiting"})
        async with httpx.AsyncClient(base_url=running.http_url) as http:
            response = await http.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unready" and "writer lag" in body["reason"]
    assert body["checks"]["writer_lag_s"] > 0


def _sample(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in the Prometheus text exposition."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {wanted} in:\n{text}")


async def test_metrics_count_frames_acks_errors_and_writes(settings: Settings) -> None:
    """/metrics counts frames in and out by type, acks, errors by code, writer batches and
    rows, rows indexed for search, queries with their time and the slow and very slow ones,
    and reports connections, the buffer, the search backlog and the pool."""
    slow_everything = replace(settings, slow_query_s=0.0, very_slow_query_s=0.0)
    async with run_gateway(slow_everything) as running, running.connect() as ws:
        for i in range(3):
            await request(ws, {"type": "message", "port": 9501, "content": f"m{i}"})
        await request(ws, {"type": "message", "port": 0, "content": "bad"})
        await send(ws, {"type": "ping"})
        await ws.recv()
        await drained(running)
        indexer = running.gateway.indexer
        assert indexer is not None
        await asyncio.wait_for(indexer.wait_idle(), 15)
        async with httpx.AsyncClient(base_url=running.http_url) as http:
            response = await http.get("/metrics")
            search = await http.get("/api/search", params={"q": "m0 or m1 or m2", "port": 9501})
    found = sorted(search.json()["results"], key=lambda r: r["seq"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert _sample(text, "gateway_frames_in_total", 'type="message"') == 4 - 1
    assert _sample(text, "gateway_frames_in_total", 'type="invalid"') == 1
    assert _sample(text, "gateway_frames_out_total", 'type="ack"') == 3
    assert _sample(text, "gateway_frames_out_total", 'type="pong"') == 1
    assert _sample(text, "gateway_acks_total", 'durability="buffered"') == 3
    assert _sample(text, "gateway_errors_total", 'code="bad_request"') == 1
    assert _sample(text, "gateway_writer_rows_written_total") == 3
    assert _sample(text, "gateway_writer_batch_rows_count") >= 1
    assert _sample(text, "gateway_writer_flush_seconds_count") >= 1
    # The stream's rows (a catch-up at start may have indexed some of them first: it counts
    # apart), and everything sent is searchable.
    assert _sample(text, "gateway_search_rows_indexed_total") == indexer.rows_indexed
    assert [r["seq"] for r in found] == [1, 2, 3]
    assert _sample(text, "gateway_search_backlog") == 0
    assert _sample(text, "gateway_search_lag_seconds") >= 0
    slow = _sample(text, "gateway_db_slow_queries_total")
    assert slow > 0 and _sample(text, "gateway_db_very_slow_queries_total") == slow
    assert _sample(text, "gateway_db_query_seconds_count") == slow  # every query is slow here
    assert _sample(text, "gateway_db_query_seconds_sum") > 0
    assert _sample(text, "gateway_connections") == 1
    assert _sample(text, "gateway_buffer_entries") == 0
    assert 0 <= _sample(text, "gateway_db_pool_in_use") <= slow_everything.database_pool_size


async def _metric(http: httpx.AsyncClient, name: str) -> float:
    return _sample((await http.get("/metrics")).text, name)


async def _until_metric(http: httpx.AsyncClient, name: str, value: float) -> None:
    """Wait (bounded) until /metrics reports `value` for `name`: asyncpg closes an idle
    connection from a timer of its own and announces nothing, so the pool's size is polled."""
    deadline = time.monotonic() + 15
    while (seen := await _metric(http, name)) != value:
        assert time.monotonic() < deadline, f"{name} stayed {seen}, not {value}"
        await asyncio.sleep(0.05)


async def test_the_pool_follows_its_settings_and_reports_size_waiters_and_waits(
    settings: Settings,
) -> None:
    """The pool keeps its minimum open, closes idle connections above it after the idle
    lifetime, has PostgreSQL cancel statements over the statement timeout, and /metrics
    reports its size, the tasks waiting for a connection and how long acquisitions took."""
    pooled = replace(
        settings,
        database_pool_size=2,
        database_pool_min_size=1,
        database_statement_timeout_s=0.3,
        database_idle_lifetime_s=0.5,
    )
    async with run_gateway(pooled) as running, httpx.AsyncClient(base_url=running.http_url) as http:
        pool = running.gateway.pool
        with pytest.raises(asyncpg.QueryCanceledError):
            await pool.execute("SELECT pg_sleep(5)")
        first, second = await pool.acquire(), await pool.acquire()
        try:
            assert await _metric(http, "gateway_db_pool_size") == 2
            assert await _metric(http, "gateway_db_pool_in_use") == 2
            before = await _metric(http, "gateway_db_pool_acquire_seconds_count")
            third = asyncio.create_task(pool.fetchval("SELECT 1"))
            # The scrape's round trip lets the task run into the pool's empty queue.
            assert await _metric(http, "gateway_db_pool_waiting") == 1
        finally:
            await pool.release(first)
            await pool.release(second)
        assert await asyncio.wait_for(third, 15) == 1
        assert await _metric(http, "gateway_db_pool_waiting") == 0
        assert await _metric(http, "gateway_db_pool_acquire_seconds_count") == before + 1
        await _until_metric(http, "gateway_db_pool_size", 1)  # idle past its lifetime
