"""`chat-gateway backup` and `restore`, run as real subprocesses against a database of the
test's own: a round trip restores the state at backup time, and each refusal changes nothing."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from gateway.settings import Settings
from storage import migrate
from storage.keys import Keys
from tests.conftest import RECV_TIMEOUT, drained, migrated_database, request, run_gateway
from tests.processes import command_env, run_command
from tests.test_cli import default_data, workdir  # noqa: F401 - the fixture, shared
from tests.test_operator_errors import one_error_line

# Every table whose rows the round trip compares, with the order that makes them comparable.
_TABLES = {
    "sessions": "id",
    "messages": "session_id, seq",
    "user_stats": "user_id",
    "global_stats": "shard",
    "port_labels": "user_id, port",
}


@pytest.fixture
async def own_settings(server_database_url: str, settings: Settings) -> AsyncIterator[Settings]:
    """The test's settings (own key prefix and user) on a new migrated database of its own."""
    async with migrated_database(server_database_url, "cg_backup") as url:
        yield replace(settings, database_url=url)


async def cli(settings: Settings, cwd: Path, *args: str) -> tuple[int, str, str]:
    """Run a command against the test's database, Redis and key prefix."""
    urls = ("--database-url", settings.database_url, "--redis-url", settings.redis_url)
    env = command_env(GATEWAY_KEY_PREFIX=settings.key_prefix)
    return await run_command(*args, *urls, cwd=cwd, env=env)


async def snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of the compared tables that exist, in a fixed order."""
    conn = await asyncpg.connect(url)
    try:
        found: dict[str, list[dict[str, Any]]] = {}
        for table, order in _TABLES.items():
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY {order}")
                found[table] = [dict(r) for r in rows]
        return found
    finally:
        await conn.close()


async def send(settings: Settings, port: int, client_id: str, content: str) -> dict[str, Any]:
    """Store one message through a gateway of its own and wait until it is committed."""
    async with run_gateway(settings) as gateway, gateway.connect() as ws:
        ack = await request(
            ws, {"type": "message", "port": port, "id": client_id, "content": content}
        )
        await drained(gateway)
    return ack


async def backed_up(settings: Settings, cwd: Path) -> Path:
    """A backup of the test's database taken by the command, with one message stored before
    it and one after (a restore would visibly change the database)."""
    await send(settings, 9300, "seed", "a message to back up")
    output = cwd / "backup.dump"
    code, _, err = await cli(settings, cwd, "backup", "--output", str(output))
    assert code == 0, err
    await send(settings, 9300, "after", "not in the backup")
    return output


async def refused(settings: Settings, cwd: Path, *args: str) -> str:
    """Run `restore *args`, check that it exits 2 with one error line and leaves the database
    as it was; return the line."""
    before = await snapshot(settings.database_url)
    code, _, err = await cli(settings, cwd, "restore", *args)
    assert code == 2, err
    line = one_error_line(err)
    assert await snapshot(settings.database_url) == before
    return line


async def test_round_trip_restores_the_state_at_backup_time(
    own_settings: Settings,
    workdir: Path,  # noqa: F811
) -> None:
    """Backup, change, restore: the rows and counters are those at backup time, verify-counts
    finds no drift, and a message re-sent with the client id of one stored only after the
    backup is stored again, not taken for a duplicate."""
    settings = own_settings
    async with run_gateway(settings) as gateway:
        async with gateway.connect() as ws:
            first = await request(ws, {"type": "message", "port": 9301, "id": "a1", "content": "1"})
            await request(ws, {"type": "message", "port": 9301, "id": "a2", "content": "2"})
            other = await request(ws, {"type": "message", "port": 9302, "id": "b1", "content": "b"})
        await drained(gateway)
        before = await snapshot(settings.database_url)
        output = workdir / "chats.dump"
        code, out, err = await cli(settings, workdir, "backup", "--output", str(output))
        assert code == 0, err
        assert out.startswith(f"{output}: ") and "bytes" in out, out
        # After the backup: a session deleted, a message added.
        async with httpx.AsyncClient(base_url=gateway.http_url, timeout=RECV_TIMEOUT) as http:
            deleted = await http.delete(f"/api/sessions/{other['session_id']}")
            assert deleted.status_code == 204, deleted.text
        async with gateway.connect() as ws:
            later = await request(ws, {"type": "message", "port": 9301, "id": "a3", "content": "3"})
        assert later["results"][0]["seq"] == 3
        await drained(gateway)
    assert await snapshot(settings.database_url) != before

    code, out, err = await cli(settings, workdir, "restore", str(output), "--yes")
    assert code == 0, err
    assert "2 sessions, 3 messages" in out, out
    assert await snapshot(settings.database_url) == before
    code, out, err = await cli(settings, workdir, "verify-counts")
    assert code == 0, out + err

    again = await send(settings, 9301, "a3", "3")
    assert again["session_id"] == first["session_id"]
    assert again["results"][0]["duplicate"] is False
    assert again["results"][0]["seq"] == 3
    conn = await asyncpg.connect(settings.database_url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM messages WHERE content = '3'")
    finally:
        await conn.close()
    assert stored == 1


async def test_backup_by_default_goes_to_the_data_folder_private(
    own_settings: Settings,
    workdir: Path,  # noqa: F811
) -> None:
    """Without --output the archive lands in <data folder>/backups (0700) as a 0600 file."""
    await send(own_settings, 9303, "x", "private")
    code, out, err = await cli(own_settings, workdir, "backup")
    assert code == 0, err
    path = Path(out.split(": ", 1)[0])
    folder = default_data(workdir) / "backups"
    assert path.parent == folder and path.name.startswith("chat-gateway-"), out
    assert path.name.endswith(".dump")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(folder) == [path.name]  # no temporary file left


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        (b"this is not an archive\n", "is not a pg_dump custom-format archive"),
    ],
    ids=["missing", "not-an-archive"],
)
async def test_restore_refuses_a_bad_file(
    own_settings: Settings,
    workdir: Path,  # noqa: F811
    content: bytes | None,
    expected: str,
) -> None:
    """A missing file or one that is no pg_dump archive: one line, exit 2, nothing changed."""
    await send(own_settings, 9304, "x", "kept")
    path = workdir / "bad.dump"
    if content is not None:
        path.write_bytes(content)
    assert expected in await refused(own_settings, workdir, str(path), "--yes")


async def test_restore_refuses_while_another_client_is_connected(
    own_settings: Settings,
    workdir: Path,  # noqa: F811
) -> None:
    """A connection open to the database (a gateway's, a writer's) refuses the restore."""
    archive = await backed_up(own_settings, workdir)
    other = await asyncpg.connect(own_settings.database_url)
    try:
        line = await refused(own_settings, workdir, str(archive), "--yes")
    finally:
        await other.close()
    assert "1 other connection(s)" in line and "stop the gateways" in line, line


async def test_restore_refuses_while_the_buffer_holds_unwritten_messages(
    own_settings: Settings,
    workdir: Path,  # noqa: F811
    redis: aioredis.Redis,
) -> None:
    """Messages acked but not yet written (no writer ran) refuse the restore; backup warns."""
    archive = await backed_up(own_settings, workdir)
    no_writer = replace(own_settings, run_writer=False)
    async with run_gateway(no_writer) as gateway, gateway.connect() as ws:
        await request(ws, {"type": "message", "port": 9306, "id": "w", "content": "buffered"})
    assert await redis.xlen(Keys(own_settings.key_prefix).stream) == 1
    line = await refused(own_settings, workdir, str(archive), "--yes")
    assert "1 message(s) in the Redis buffer are not yet written" in line, line
    code, _, err = await cli(own_settings, workdir, "backup", "--output", str(archive))
    assert code == 0, err
    assert "1 message(s) acked by the gateways are still in the Redis buffer" in err, err


async def test_restore_without_yes_and_no_terminal_is_refused(
    own_settings: Settings,
    workdir: Path,  # noqa: F811
) -> None:
    """With no terminal to ask on and no --yes, restore refuses in a line naming --yes."""
    archive = await backed_up(own_settings, workdir)
    assert "--yes" in await refused(own_settings, workdir, str(archive))


async def test_an_older_archive_gets_the_newer_schema(
    own_settings: Settings,
    workdir: Path,  # noqa: F811
) -> None:
    """An archive one migration behind is refused over the newer schema (its tables would
    outlive the restore), and restored over its own version gets the newest migration."""
    await send(own_settings, 9308, "x", "old")
    newest = migrate.discover()[-1]
    older = newest.version - 1
    # Whatever the newest migration's down file says: the restore replaces its data anyway.
    going_down = ("migrate", "--to", str(older), "--allow-data-loss")
    code, _, err = await cli(own_settings, workdir, *going_down)
    assert code == 0, err
    archive = workdir / "older.dump"
    code, _, err = await cli(own_settings, workdir, "backup", "--output", str(archive))
    assert code == 0, err
    code, _, err = await cli(own_settings, workdir, "migrate")
    assert code == 0, err
    code, _, err = await cli(own_settings, workdir, "restore", str(archive), "--yes")
    assert code == 2, err
    assert f"--to {older} --allow-data-loss" in one_error_line(err), err
    code, _, err = await cli(own_settings, workdir, *going_down)
    assert code == 0, err
    code, out, err = await cli(own_settings, workdir, "restore", str(archive), "--yes")
    assert code == 0, err
    assert f"applied {newest.path.name}" in out, out
    code, out, err = await cli(own_settings, workdir, "verify-counts")
    assert code == 0, out + err
