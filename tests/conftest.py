"""Shared fixtures: real PostgreSQL and Redis, and real gateways on ephemeral ports.

With `TEST_DATABASE_URL` / `TEST_REDIS_URL` the suite uses those servers; otherwise it starts
embedded ones for the session. Either way it creates its own database (dropped at the end)
and every gateway gets its own Redis key prefix, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from gateway.app import create_app
from gateway.context import Gateway
from gateway.server import uvicorn_config
from gateway.settings import Settings
from storage import migrate
from storage.embedded import _RELOCATED_DATA, embedded_postgres, embedded_redis

RECV_TIMEOUT = 10.0


@pytest.fixture(scope="session", autouse=True)
def no_relocated_clusters_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A test run leaves nothing behind in /var/lib/chat-gateway.

    As root, storage/embedded.py moves a PostgreSQL cluster whose folder `nobody` cannot
    traverse (all of pytest's 0700 temp folders) to /var/lib/chat-gateway/<hash> and leaves a
    symlink in its place. pytest prunes old temp folders, symlinks and all, but never the
    targets: any test that starts a cluster (in process, or through `chat-gateway serve` or
    a fault-suite deployment) and does not remove its target itself, or fails before it can,
    leaves ~200 MB there. So at the end of the session every cluster linked from this run's
    temp folders is removed: only this run's, since other runs may be using theirs.
    Autouse and session-scoped, it is torn down after every other fixture, once the servers
    are stopped.
    """
    yield
    for link in _symlinks_under(tmp_path_factory.getbasetemp()):
        target = link.resolve()
        # _RELOCATED_DATA is private, but the one place that folder is named.
        if target.parent == _RELOCATED_DATA and target.is_dir():
            shutil.rmtree(target, ignore_errors=True)


def _symlinks_under(root: Path) -> Iterator[Path]:
    """Every symlink in the tree under `root`, not following any."""
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            if path.is_symlink():
                yield path


@pytest.fixture(scope="session")
def server_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server: TEST_DATABASE_URL, else an embedded one for this session."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    path = tmp_path_factory.mktemp("pg") / "cluster"
    with embedded_postgres(path) as url:
        yield url
    if path.is_symlink():
        # As root the cluster lives outside pytest's 0700 temp folder (see storage/embedded.py).
        shutil.rmtree(path.resolve(), ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server: TEST_REDIS_URL, else an embedded Valkey for this session."""
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        yield given
        return
    with embedded_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@contextlib.asynccontextmanager
async def migrated_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """A new database on the server with every migration applied; dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = with_database(server_url, name)
        try:
            conn = await asyncpg.connect(url)
            try:
                await migrate.apply_pending(conn)
            finally:
                await conn.close()
            yield url
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def database_url(server_database_url: str) -> AsyncIterator[str]:
    """A fresh database with every migration applied, dropped after the session."""
    async with migrated_database(server_database_url, "cg_test") as url:
        yield url


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test database, for assertions."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    """Settings for one test's gateway: its own key prefix and user, fast writer polling."""
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        key_prefix=f"t{uuid.uuid4().hex[:10]}:",
        local_user=f"u{uuid.uuid4().hex[:10]}",
        writer_block_ms=20,
        database_pool_size=4,
        log_level="warning",
    )


class _Server(uvicorn.Server):
    """uvicorn with an event for 'startup finished' (lifespan done, accepting)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@dataclass
class RunningGateway:
    settings: Settings
    port: int
    app_state: Any

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app_state.gateway
        return gateway

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self, **kwargs: Any) -> Any:
        return connect(self.ws_url, open_timeout=RECV_TIMEOUT, **kwargs)


@contextlib.asynccontextmanager
async def run_gateway(settings: Settings) -> AsyncIterator[RunningGateway]:
    """A real uvicorn serving the gateway app on an ephemeral loopback port, in this loop."""
    app = create_app(settings)
    # IPPROTO_TCP given explicitly: asyncio sets TCP_NODELAY on accepted connections only
    # when the listening socket says it is TCP; without it every keep-alive HTTP answer
    # waited ~40 ms on Nagle and delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn_config(app, settings))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if not server.ready.is_set():
        ready.cancel()
        if task.done():
            task.result()  # raises the startup error
        raise TimeoutError("gateway did not start within 30 s")
    try:
        yield RunningGateway(settings, port, app.state)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
        sock.close()


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[RunningGateway]:
    async with run_gateway(settings) as running:
        yield running


@pytest.fixture
async def gateway_no_writer(settings: Settings) -> AsyncIterator[RunningGateway]:
    """A gateway whose messages stay in the buffer until a test writes them itself."""
    async with run_gateway(replace(settings, run_writer=False)) as running:
        yield running


@pytest.fixture
async def http(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=RECV_TIMEOUT) as client:
        yield client


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(frame).decode())


async def receive(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
    """The next frame as a dict; fails the test if none arrives within `timeout`."""
    raw = await asyncio.wait_for(ws.recv(), timeout)
    frame: dict[str, Any] = orjson.loads(raw)
    return frame


async def request(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a frame and return the next frame received (its answer)."""
    await send(ws, frame)
    return await receive(ws)


async def drained(running: RunningGateway, timeout: float = 15.0) -> None:
    """Wait (on the writer's commit events) until everything buffered is in PostgreSQL."""
    writer = running.gateway.writer
    assert writer is not None, "this gateway runs no writer"
    await asyncio.wait_for(writer.wait_drained(), timeout)


async def searchable(running: RunningGateway, timeout: float = 15.0) -> None:
    """Wait until everything acked so far is committed and indexed for search."""
    await drained(running, timeout)
    indexer = running.gateway.indexer
    assert indexer is not None, "this gateway runs no indexer"
    await asyncio.wait_for(indexer.wait_idle(), timeout)


async def count_messages(db: asyncpg.Pool, session_id: str | uuid.UUID) -> int:
    """Rows of the session in PostgreSQL."""
    n: int = await db.fetchval(
        "SELECT count(*) FROM messages WHERE session_id = $1", uuid.UUID(str(session_id))
    )
    return n


ROOT = Path(__file__).resolve().parent.parent
