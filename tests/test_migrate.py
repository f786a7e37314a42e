"""Migrations runner against a real PostgreSQL: each test gets a fresh database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from storage.migrate import (
    LOCK_KEY,
    MigrationError,
    apply_pending,
    discover,
    sql_dir,
    status,
)
from tests.conftest import with_database


@pytest.fixture
async def dsn(server_database_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"migrate_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(server_database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield with_database(server_database_url, name)
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's fresh database."""
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, sql in files.items():
        (folder / name).write_text(sql)


async def _recorded(conn: asyncpg.Connection) -> list[tuple[int, str, str]]:
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY 1")
    return [(row["version"], row["name"], row["checksum"]) for row in rows]


async def _table_exists(conn: asyncpg.Connection, table: str) -> bool:
    exists: bool = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
    return exists


# Each file appends its version to `steps`, so the order they ran in is visible.
_ORDERED = {
    "0010_third.sql": "INSERT INTO steps (version) VALUES (10);",
    "0001_first.sql": "CREATE TABLE steps (id serial PRIMARY KEY, version int NOT NULL);"
    " INSERT INTO steps (version) VALUES (1);",
    "0002_second.sql": "INSERT INTO steps (version) VALUES (2);",
}


def test_discover_real_sql_dir_sorted() -> None:
    """The shipped sql/ folder discovers as a list sorted by version."""
    migrations = discover(sql_dir())
    assert isinstance(migrations, list)
    versions = [m.version for m in migrations]
    assert versions == sorted(versions)
    assert discover() == migrations


def test_discover_parses_names_and_ignores_other_files(tmp_path: Path) -> None:
    """discover() sorts by number, keeps the name part and skips non-SQL files and folders."""
    _write(tmp_path, _ORDERED | {"README.md": "notes"})
    (tmp_path / "drafts").mkdir()
    migrations = discover(tmp_path)
    assert [(m.version, m.name, m.path.name) for m in migrations] == [
        (1, "first", "0001_first.sql"),
        (2, "second", "0002_second.sql"),
        (10, "third", "0010_third.sql"),
    ]
    assert all(len(m.checksum) == 64 for m in migrations)


async def test_applies_in_order_and_records_checksums(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Pending files run in version order and each is recorded with its sha256."""
    _write(tmp_path, _ORDERED)
    applied = await apply_pending(conn, tmp_path)
    assert [m.version for m in applied] == [1, 2, 10]
    steps = await conn.fetch("SELECT version FROM steps ORDER BY id")
    assert [row["version"] for row in steps] == [1, 2, 10]
    assert await _recorded(conn) == [(m.version, m.name, m.checksum) for m in discover(tmp_path)]


async def test_second_run_applies_nothing(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """Running again with no new files applies nothing and changes nothing."""
    _write(tmp_path, _ORDERED)
    await apply_pending(conn, tmp_path)
    assert await apply_pending(conn, tmp_path) == []
    assert await conn.fetchval("SELECT count(*) FROM steps") == 3


async def test_new_file_is_applied_later(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """A file added after a run is the only one applied by the next run."""
    _write(tmp_path, _ORDERED)
    await apply_pending(conn, tmp_path)
    _write(tmp_path, {"0011_fourth.sql": "INSERT INTO steps (version) VALUES (11);"})
    assert [m.version for m in await apply_pending(conn, tmp_path)] == [11]


async def test_edited_applied_file_is_refused(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """Editing an applied file fails naming it, before any pending file is applied."""
    _write(tmp_path, {"0001_core.sql": "CREATE TABLE a (x int);"})
    await apply_pending(conn, tmp_path)
    _write(
        tmp_path,
        {"0001_core.sql": "CREATE TABLE a (x bigint);", "0002_more.sql": "CREATE TABLE b ();"},
    )
    with pytest.raises(MigrationError, match=r"0001_core\.sql was edited"):
        await apply_pending(conn, tmp_path)
    with pytest.raises(MigrationError, match=r"0001_core\.sql was edited"):
        await status(conn, tmp_path)
    assert not await _table_exists(conn, "b")
    assert [row[0] for row in await _recorded(conn)] == [1]


async def test_applied_file_missing_from_disk_is_refused(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A recorded version whose file was deleted is refused, naming it."""
    _write(tmp_path, {"0001_core.sql": "SELECT 1;", "0002_gone.sql": "SELECT 2;"})
    await apply_pending(conn, tmp_path)
    (tmp_path / "0002_gone.sql").unlink()
    with pytest.raises(MigrationError, match=r"0002_gone\.sql is missing"):
        await apply_pending(conn, tmp_path)


async def test_failing_migration_rolls_back(
    conn: asyncpg.Connection, dsn: str, tmp_path: Path
) -> None:
    """A failing file is rolled back and unrecorded, earlier ones stay, and the lock is freed."""
    _write(
        tmp_path,
        {
            "0001_good.sql": "CREATE TABLE good (x int);",
            "0002_bad.sql": "CREATE TABLE bad (x int); SELECT 1 / 0;",
            "0003_after.sql": "CREATE TABLE after (x int);",
        },
    )
    with pytest.raises(MigrationError, match=r"0002_bad\.sql failed") as info:
        await apply_pending(conn, tmp_path)
    assert isinstance(info.value.__cause__, asyncpg.DivisionByZeroError)
    assert await _table_exists(conn, "good")
    assert not await _table_exists(conn, "bad")
    assert not await _table_exists(conn, "after")
    assert [row[0] for row in await _recorded(conn)] == [1]
    other = await asyncpg.connect(dsn)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
        await other.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await other.close()
    _write(tmp_path, {"0002_bad.sql": "CREATE TABLE bad (x int);"})
    assert [m.version for m in await apply_pending(conn, tmp_path)] == [2, 3]


async def test_concurrent_runs_apply_each_file_once(dsn: str, tmp_path: Path) -> None:
    """Two runs started together apply every file exactly once between them."""
    _write(
        tmp_path,
        {
            "0001_hits.sql": "CREATE TABLE hits (n int); INSERT INTO hits VALUES (1);",
            # Slow enough that the second run is surely waiting on the lock meanwhile.
            "0002_slow.sql": "SELECT pg_sleep(0.3); INSERT INTO hits VALUES (2);",
        },
    )
    first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        results = await asyncio.gather(
            apply_pending(first, tmp_path), apply_pending(second, tmp_path)
        )
        assert sorted(len(applied) for applied in results) == [0, 2]
        rows = await first.fetch("SELECT n FROM hits ORDER BY n")
        assert [row["n"] for row in rows] == [1, 2]
        assert [row[0] for row in await _recorded(first)] == [1, 2]
    finally:
        await first.close()
        await second.close()


async def test_refuses_connection_in_transaction(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """apply_pending refuses to run inside a caller's transaction, which would outlive the lock."""
    _write(tmp_path, {"0001_core.sql": "CREATE TABLE a (x int);"})
    async with conn.transaction():
        with pytest.raises(MigrationError, match="outside any transaction"):
            await apply_pending(conn, tmp_path)


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    """Two files with the same number are refused, naming both."""
    _write(tmp_path, {"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"})
    with pytest.raises(MigrationError, match=r"0001_a\.sql and 0001_b\.sql"):
        discover(tmp_path)


@pytest.mark.parametrize(
    "file_name",
    ["1_core.sql", "001_core.sql", "0001-core.sql", "0001_.sql", "abcd_core.sql",
     "0001_core.SQL", "0001_my core.sql", "99999999999_huge.sql"],
)  # fmt: skip
def test_bad_names_are_refused(tmp_path: Path, file_name: str) -> None:
    """A .sql file not named NNNN_name.sql is refused rather than skipped."""
    _write(tmp_path, {"0001_ok.sql": "SELECT 1;", file_name: "SELECT 2;"})
    with pytest.raises(MigrationError, match=file_name.replace(".", r"\.")):
        discover(tmp_path)


def test_missing_folder_is_refused(tmp_path: Path) -> None:
    """A migrations folder that does not exist is an error, not an empty list."""
    with pytest.raises(MigrationError, match="does not exist"):
        discover(tmp_path / "nope")


async def test_bad_folder_applies_nothing(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """apply_pending on a folder with a bad file touches nothing, not even schema_migrations."""
    _write(tmp_path, {"0001_a.sql": "CREATE TABLE a ();", "0001_b.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="duplicate"):
        await apply_pending(conn, tmp_path)
    assert not await _table_exists(conn, "schema_migrations")


async def test_status_lists_applied_and_pending(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """status() lists every file in order, with applied_at set only on applied ones."""
    _write(tmp_path, _ORDERED)
    before = await status(conn, tmp_path)
    assert [s.migration.version for s in before] == [1, 2, 10]
    assert all(s.applied_at is None for s in before)
    assert not await _table_exists(conn, "schema_migrations")
    await apply_pending(conn, tmp_path)
    _write(tmp_path, {"0011_fourth.sql": "SELECT 1;"})
    after = await status(conn, tmp_path)
    assert [s.migration.version for s in after] == [1, 2, 10, 11]
    assert [s.applied_at is not None for s in after] == [True, True, True, False]
    assert after[0].migration == discover(tmp_path)[0]
