"""Embedded PostgreSQL and Valkey: real server processes started from the pip-installed binaries."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

from storage.embedded import EmbeddedServerError, embedded_postgres, embedded_redis
from tests.processes import alive, exited

ROOT = Path(__file__).resolve().parents[1]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as nobody")


def _remove_cluster(path: Path) -> None:
    """Delete a data dir, and its relocated cluster under /var/lib when it is a symlink."""
    if path.is_symlink():
        shutil.rmtree(path.resolve(), ignore_errors=True)
        path.unlink()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pg_dir(tmp_path: Path) -> Iterator[Path]:
    """A PostgreSQL data dir under tmp_path, removed with its relocated cluster afterwards."""
    path = tmp_path / "pg"
    yield path
    _remove_cluster(path)


def _postmaster_pid(data_dir: Path) -> int:
    """The running postmaster's pid, from the first line of postmaster.pid."""
    return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


async def _fetch(dsn: str, query: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def test_postgres_accepts_asyncpg_from_a_running_loop(pg_dir: Path) -> None:
    """Entered inside a running event loop, PostgreSQL starts and asyncpg runs SELECT 1."""
    with embedded_postgres(pg_dir) as dsn:
        assert dsn.startswith("postgresql://gateway:") and dsn.endswith("/gateway")
        assert await _fetch(dsn, "SELECT 1") == 1
        assert await _fetch(dsn, "SELECT current_database() || ':' || current_user") == (
            "gateway:gateway"
        )
        assert await _fetch(dsn, "SHOW fsync") == "on"


async def test_postgres_keeps_data_across_restarts(pg_dir: Path) -> None:
    """A table created before a stop is there after a restart, with the same password."""
    with embedded_postgres(pg_dir) as first_dsn:
        conn = await asyncpg.connect(first_dsn)
        try:
            await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')")
        finally:
            await conn.close()
        pid = _postmaster_pid(pg_dir)
    assert not alive(pid)
    assert not (pg_dir / "postmaster.pid").exists()  # a clean shutdown removes it
    with embedded_postgres(pg_dir) as second_dsn:
        assert await _fetch(second_dsn, "SELECT v FROM kept") == "hello"
    assert second_dsn.split("@")[0] == first_dsn.split("@")[0]


def test_postgres_start_failure_reports_the_log(pg_dir: Path) -> None:
    """A port already in use fails fast with an error that quotes the server log."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with (
            pytest.raises(EmbeddedServerError, match="Address already in use"),
            embedded_postgres(pg_dir, port=port),
        ):
            pytest.fail("PostgreSQL started on a busy port")


def test_valkey_set_get_and_stops_on_exit(tmp_path: Path) -> None:
    """Valkey starts with a password, SET/GET work, and its process is gone after exit."""
    with embedded_redis(tmp_path / "vk") as url:
        assert url.startswith("redis://:") and url.endswith("/0")
        with redis.Redis.from_url(url) as client:
            client.set("k", "v")
            assert client.get("k") == b"v"
            pid = int(client.info("server")["process_id"])
        anonymous = redis.Redis.from_url("redis://" + url.split("@")[1])
        with anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.get("k")
    assert not alive(pid)


async def test_valkey_keeps_stream_entries_across_restarts(tmp_path: Path) -> None:
    """An XADD entry survives a stop and start of the same data dir (AOF)."""
    with embedded_redis(tmp_path / "vk") as url:
        client = redis.asyncio.Redis.from_url(url)
        try:
            entry_id = await client.xadd("s", {"f": "v"})
        finally:
            await client.aclose()
    with embedded_redis(tmp_path / "vk") as url:
        client = redis.asyncio.Redis.from_url(url)
        try:
            assert await client.xrange("s") == [(entry_id, {b"f": b"v"})]
        finally:
            await client.aclose()


def test_valkey_start_failure_reports_the_log(tmp_path: Path) -> None:
    """A port already in use fails fast with an error that quotes the server log."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with (
            pytest.raises(EmbeddedServerError, match=r"(?i)address already in use"),
            embedded_redis(tmp_path / "vk", port=port),
        ):
            pytest.fail("Valkey started on a busy port")


_CHILD = """
import sys
from pathlib import Path
from tests.processes import alive, exited
from storage.embedded import embedded_postgres, embedded_redis
with embedded_postgres(Path(sys.argv[1])), embedded_redis(Path(sys.argv[2])) as url:
    import redis
    with redis.Redis.from_url(url) as client:
        valkey_pid = client.info("server")["process_id"]
    postmaster_pid = (Path(sys.argv[1]) / "postmaster.pid").read_text().split()[0]
    print(postmaster_pid, valkey_pid, flush=True)
    sys.stdin.read()
"""


async def test_servers_die_when_their_parent_is_killed(pg_dir: Path, tmp_path: Path) -> None:
    """SIGKILL of the process that started them stops both servers (parent-death signal)."""
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(pg_dir), str(tmp_path / "vk"),
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert parent.stdout is not None and parent.stdin is not None
    line = await asyncio.wait_for(parent.stdout.readline(), 60)  # both servers are up
    assert line, "the child exited before starting the servers"
    postmaster, valkey = (int(pid) for pid in line.split())
    assert alive(postmaster) and alive(valkey)
    parent.kill()
    await parent.wait()
    parent.stdin.close()
    await asyncio.wait_for(exited({postmaster, valkey}), 10)


@as_root
async def test_postgres_relocates_a_dir_nobody_cannot_reach(tmp_path: Path) -> None:
    """As root, a data dir under a 0700 folder becomes a symlink to a cluster nobody owns."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    requested = private / "pg"
    try:
        with embedded_postgres(requested) as dsn:
            assert await _fetch(dsn, "SELECT 1") == 1
        assert requested.is_symlink()
        cluster = requested.resolve()
        assert cluster.parent == Path("/var/lib/chat-gateway")
        assert cluster.stat().st_uid != 0 and (cluster / "PG_VERSION").exists()
        with embedded_postgres(requested) as dsn:  # the symlink is followed on restart
            assert await _fetch(dsn, "SELECT 1") == 1
        assert requested.resolve() == cluster
    finally:
        _remove_cluster(requested)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A fresh folder every user can traverse to (tmp_path's base is 0700 under root)."""
    parent = Path(tempfile.mkdtemp(dir="/tmp", prefix="test-embedded-"))
    parent.chmod(0o755)
    yield parent
    shutil.rmtree(parent)


@as_root
async def test_postgres_uses_a_reachable_dir_in_place(open_dir: Path) -> None:
    """As root, a data dir nobody can traverse to holds the cluster itself, owned by nobody."""
    requested = open_dir / "pg"
    with embedded_postgres(requested) as dsn:
        assert await _fetch(dsn, "SELECT 1") == 1
    assert not requested.is_symlink()
    assert requested.stat().st_uid != 0 and (requested / "PG_VERSION").exists()
