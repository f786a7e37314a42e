"""Fixtures of the fault suite: deployments on the session's servers, or on servers of the
test's own that it may stop and kill (see tests/faults/harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storage.embedded import ServerProcess
from tests.conftest import migrated_database
from tests.faults.harness import Deployment, started_postgres, started_valkey


@pytest.fixture
async def shared_deployment(server_database_url: str, redis_url: str) -> AsyncIterator[Deployment]:
    """A fresh database on the session's PostgreSQL and a fresh key prefix on its Redis: for
    scenarios that kill only chat-gateway processes (those servers may not be ours to kill)."""
    async with migrated_database(server_database_url, "cg_fault") as database_url:
        yield Deployment(database_url, redis_url)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[ServerProcess]:
    """A PostgreSQL of this test's own, to stop and restart; its cluster is removed after."""
    with started_postgres(tmp_path / "pg") as server:
        yield server


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[ServerProcess]:
    """A Valkey of this test's own (append-only, fsync every second), to SIGKILL and restart."""
    with started_valkey(tmp_path / "valkey") as server:
        yield server
