"""Scenario c: Valkey SIGKILLed and restarted under load, with and without append-only."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from storage.embedded import ServerProcess
from storage.keys import Keys
from tests.conftest import migrated_database
from tests.faults.harness import (
    ChildProcess,
    Deployment,
    LoadClient,
    Report,
    collect_report,
    gateway_process,
    readyz,
    restart,
    started_valkey,
    stream_empty,
    wait_until,
)

# How long Valkey stays dead once the clients have seen the outage: the fault's shape, not a
# wait for anything.
OUTAGE_S = 3.0


@pytest.fixture
async def fresh_database(server_database_url: str) -> AsyncIterator[str]:
    async with migrated_database(server_database_url, "cg_fault") as url:
        yield url


async def _ready(serve: ChildProcess, status: int) -> bool:
    code, _ = await readyz(serve.url)
    return code == status


async def _kill_and_restart(
    valkey: ServerProcess, deployment: Deployment, tmp_path: Path, scenario: str
) -> tuple[Report, dict[str, Any], ChildProcess]:
    """Load a gateway, SIGKILL Valkey, keep it down OUTAGE_S, restart it, let the clients
    resend what was not acked, drain, and report."""
    started = time.monotonic()
    async with gateway_process(deployment, tmp_path) as serve:
        async with LoadClient([serve.ws_url], connections=6, rate=40) as load:
            await load.wait_acked(300, timeout=30)
            assert await _ready(serve, 200), await readyz(serve.url)
            valkey.kill()
            await wait_until(lambda: _ready(serve, 503), 10, "/readyz 503 with Redis down")
            _, unready = await readyz(serve.url)
            await wait_until(_noticed(load), 10, "clients told of the outage (an error or a close)")
            await asyncio.sleep(OUTAGE_S)  # the outage itself (see OUTAGE_S)
            alive_in_outage = serve.proc.returncode is None
            await restart(valkey)
            restarted = time.monotonic()
            first_ack = await load.wait_acked_after(restarted, timeout=30)
            ready_s = await wait_until(lambda: _ready(serve, 200), 30, "/readyz 200 again")
            acks_after_restart = len(load.acks_since(restarted))
            await load.finish(timeout=30)
        # The load has left: what follows is the writer's drain and a clean stop.
        redis = aioredis.Redis.from_url(deployment.redis_url)
        try:
            stream = Keys(deployment.key_prefix).stream
            await wait_until(
                lambda: stream_empty(redis, stream), 30, "the writer drained the stream"
            )
        finally:
            await redis.aclose()
        exit_code = await serve.stop(signal.SIGINT)
    facts = {
        "serve alive during the outage": alive_in_outage,
        "readyz during the outage": unready.get("reason", unready),
        "s from restart to /readyz 200": round(ready_s, 2),
        "acks after the restart before the load stopped": acks_after_restart,
        "serve exit code": exit_code,
        "log: 'Future exception was never retrieved'": serve.count(
            "Future exception was never retrieved"
        ),
        "log: tracebacks": serve.count("Traceback"),
    }
    report = await collect_report(
        scenario,
        deployment,
        load,
        started=started,
        recovery_s=first_ack - restarted,
        notes=facts,
    )
    return report, facts, serve


def _noticed(load: LoadClient) -> Any:
    async def check() -> bool:
        return bool(load.errors) or bool(load.closes)

    return check


@pytest.mark.timeout(180)
async def test_valkey_sigkilled_with_appendonly_loses_nothing(
    own_valkey: ServerProcess, fresh_database: str, tmp_path: Path
) -> None:
    """Valkey (append-only, fsync every second) SIGKILLed under load and restarted: nothing
    acked is lost, clients get `overloaded` or a close, /readyz says 503 then 200, and the
    serve process stays up throughout and resumes by itself."""
    deployment = Deployment(fresh_database, own_valkey.url)
    report, facts, serve = await _kill_and_restart(
        own_valkey, deployment, tmp_path, "c. Valkey SIGKILLed (appendonly everysec), restarted"
    )
    report.check(min_acked=600)
    assert facts["serve alive during the outage"], serve.log[-3000:]
    assert facts["serve exit code"] == 0, serve.log[-3000:]
    assert "Redis" in str(facts["readyz during the outage"])
    # Clear errors only: `overloaded` (with retry_after_ms), never `internal`; no 1011 close.
    assert set(report.notes["errors"]) <= {"overloaded"}, report.render()
    assert "1011" not in report.notes["closes"], report.render()
    assert report.notes["errors"] or report.notes["closes"], "no client saw the outage"
    # An outage is logged as one line per failed attempt, not as tracebacks or orphaned
    # futures (docs/reliability.md).
    assert facts["log: 'Future exception was never retrieved'"] == 0, serve.log[-3000:]
    assert facts["log: tracebacks"] == 0, serve.log[-6000:]


@pytest.mark.timeout(180)
async def test_valkey_without_appendonly_measures_its_loss(
    fresh_database: str, tmp_path: Path
) -> None:
    """A Valkey without persistence SIGKILLed under load loses the acked messages not yet
    written (the figure is reported, not judged); the gateway survives, resumes by itself,
    and stores nothing twice."""
    with started_valkey(tmp_path / "valkey", appendonly=False) as valkey:
        deployment = Deployment(fresh_database, valkey.url)
        report, facts, serve = await _kill_and_restart(
            valkey, deployment, tmp_path, "c'. Valkey WITHOUT append-only SIGKILLed, restarted"
        )
    print("\n" + report.render(), flush=True)
    # What holds whatever Redis forgets: the process lives, service resumes, PostgreSQL's
    # unique (session, dedup key) keeps every message once.
    assert facts["serve alive during the outage"], serve.log[-3000:]
    assert facts["acks after the restart before the load stopped"] > 0
    assert report.duplicated == 0, report.render()
