"""Scenario b: PostgreSQL stopped for 10 s under load, then started again."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from storage.embedded import ServerProcess
from storage.keys import Keys
from tests.faults.harness import (
    IO_TIMEOUT,
    Acked,
    Deployment,
    LoadClient,
    collect_report,
    gateway_process,
    readyz,
    restart,
    stream_empty,
    wait_until,
)

# How long PostgreSQL stays down: the fault's shape, not a wait for anything.
OUTAGE_S = 10.0


class PersistedChecker:
    """Checks, the moment a `persisted` ack arrives, that its rows are committed."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self.checked = 0
        self.early: list[Acked] = []  # acked persisted, not (yet) in PostgreSQL
        self.times: list[float] = []
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> PersistedChecker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.terminate()  # no goodbye needed; a pool here hung on close

    async def __call__(self, results: list[Acked]) -> None:
        wanted = {(uuid.UUID(r.session_id), r.seq, uuid.UUID(r.id)) for r in results}
        rows = await self._fetch(uuid.UUID(results[0].session_id), [r.seq for r in results])
        found = {(r["session_id"], r["seq"], r["id"]) for r in rows}
        self.checked += 1
        self.times.append(time.monotonic())
        if not wanted <= found:
            self.early.extend(results)

    async def _fetch(self, session_id: uuid.UUID, seqs: list[int]) -> list[asyncpg.Record]:
        # The connection may predate the outage: one retry on a fresh one.
        for attempt in range(2):
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self._database_url, timeout=IO_TIMEOUT)
                return await self._conn.fetch(
                    "SELECT session_id, seq, id FROM messages"
                    " WHERE session_id = $1 AND seq = ANY($2)",
                    session_id,
                    seqs,
                )
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
                if self._conn is not None:
                    self._conn.terminate()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


@pytest.mark.timeout(180)
async def test_postgres_outage_buffers_acks_and_resumes(
    own_postgres: ServerProcess, redis_url: str, tmp_path: Path
) -> None:
    """PostgreSQL stopped for 10 s under load (with a hub reset in the middle): buffered acks
    go on, a `durable` frame is never acked `persisted` before its rows are committed, nor
    refused with anything but `overloaded`, and service resumes by itself."""
    deployment = Deployment(own_postgres.url, redis_url)
    started = time.monotonic()
    # serve applies the migrations; the checker connects once they ran.
    async with (
        gateway_process(deployment, tmp_path) as serve,
        PersistedChecker(own_postgres.url) as checker,
    ):
        # Buffered and durable frames on separate connections: a connection's answers come
        # in order, so its buffered acks would queue behind a durable one held by the outage.
        async with (
            LoadClient([serve.ws_url], connections=5, rate=40) as load,
            LoadClient(
                [serve.ws_url],
                connections=1,
                rate=20,
                port_base=9400,
                durable_every=1,
                on_persisted=checker,
            ) as durable,
        ):
            await load.wait_acked(300, timeout=30)
            await durable.wait_acked(20, timeout=30)
            await asyncio.to_thread(own_postgres.stop)
            stopped = time.monotonic()
            code, body = await readyz(serve.url)
            # A hub reset in the middle of the outage: the durable frames' waiters then look
            # for their rows in PostgreSQL, which is down: still not an `internal` error.
            pubsub = aioredis.Redis.from_url(redis_url)
            try:
                hub_killed = int(await pubsub.client_kill_filter(_type="pubsub"))
            finally:
                await pubsub.aclose()
            await asyncio.sleep(OUTAGE_S)  # the outage itself (see OUTAGE_S)
            during = load.acks_since(stopped)
            durable_during = durable.acks_since(stopped)
            await restart(own_postgres)
            restarted = time.monotonic()
            await wait_until(
                lambda: _checked_after(checker, restarted),
                30,
                "a durable frame acked persisted after the restart",
            )
            recovery_s = min(t for t in checker.times if t >= restarted) - restarted
            await asyncio.gather(load.finish(timeout=40), durable.finish(timeout=40))
        redis = aioredis.Redis.from_url(redis_url)
        try:
            stream = Keys(deployment.key_prefix).stream
            await wait_until(lambda: stream_empty(redis, stream), 30, "the writer drained")
        finally:
            await redis.aclose()
        exit_code = await serve.stop(signal.SIGINT)
    report = await collect_report(
        "b. PostgreSQL stopped 10 s under load, restarted",
        deployment,
        [load, durable],
        started=started,
        recovery_s=recovery_s,
        notes={
            "buffered acks during the outage": len(during),
            "durable acks during the outage": len(durable_during),
            "persisted acks checked in PostgreSQL on arrival": checker.checked,
            "persisted acks found uncommitted": len(checker.early),
            "readyz during the outage": f"{code} {body.get('reason', '')}",
            "serve exit code": exit_code,
            "pub/sub connections killed during the outage": hub_killed,
        },
    )
    report.check(min_acked=600)
    assert hub_killed >= 1
    assert set(durable.errors) <= {"overloaded"}, report.render()  # never `internal`
    assert not checker.early, report.render()
    assert len(during) > 100, report.render()  # ~40 s of frames in 10 s: buffered acks went on
    assert checker.checked >= 40, report.render()
    assert code == 503 and "PostgreSQL" in body["reason"], body
    assert exit_code == 0, serve.log[-3000:]


async def _checked_after(checker: PersistedChecker, moment: float) -> bool:
    return any(t >= moment for t in checker.times)
