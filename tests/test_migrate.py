"""Migrations runner against a real PostgreSQL: each test gets a fresh database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from storage.indexer import catch_up
from storage.migrate import (
    LOCK_KEY,
    DataLossError,
    DownEffect,
    MigrationError,
    apply_pending,
    discover,
    migrate_to,
    sql_dir,
    status,
)
from storage.sessions import find_or_create_active, preview_of, set_port_label
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


async def _lock_is_free(dsn: str) -> bool:
    """Whether another session can take the migration lock at once."""
    other = await asyncpg.connect(dsn)
    try:
        taken: bool = await other.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
        if taken:
            await other.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        return taken
    finally:
        await other.close()


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
    assert await _lock_is_free(dsn)
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


# --- down files and migrate_to --------------------------------------------------------------

# Three reversible migrations; undoing the first loses data.
_REVERSIBLE = {
    "0001_a.sql": "CREATE TABLE a (x int);",
    "0001_a.down.sql": "-- loses data: table a\nDROP TABLE a;",
    "0002_b.sql": "CREATE TABLE b (x int);",
    "0002_b.down.sql": "-- keeps data: b holds nothing\nDROP TABLE b;",
    "0003_c.sql": "CREATE TABLE c (x int);",
    "0003_c.down.sql": "-- keeps data: c holds nothing\nDROP TABLE c;",
}

# What undoing each shipped migration costs, as its down file's first line says. The tests
# below hold the "keeps data" ones to it; a new migration's down file is classified here too.
_SHIPPED_EFFECTS = {
    1: DownEffect.LOSES_DATA,  # sessions and messages
    2: DownEffect.KEEPS_DATA,  # per-user counters, recounted by 0002's backfill
    3: DownEffect.KEEPS_DATA,  # the search index, rebuilt by `chat-gateway reindex`
    4: DownEffect.KEEPS_DATA,  # automatic titles, recomputed by 0004's backfill
    5: DownEffect.KEEPS_DATA,  # a generated column
    6: DownEffect.KEEPS_DATA,  # previews, recomputed by 0006's backfill
    7: DownEffect.LOSES_DATA,  # port labels
    8: DownEffect.KEEPS_DATA,  # global totals, summed again by 0008's backfill
}

# The public schema as pg_catalog describes it. Columns are numbered by rank, not attnum: a
# column dropped and added again keeps its dropped slot, while the visible order is the same.
_CATALOG = {
    "tables": "SELECT relname, relkind::text FROM pg_class"
    " WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
    " ORDER BY 1",
    "columns": "SELECT c.relname, rank() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,"
    " format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attgenerated::text,"
    " pg_get_expr(d.adbin, d.adrelid)"
    " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
    " LEFT JOIN pg_attrdef d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum)"
    " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')"
    " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes"
    " WHERE schemaname = 'public' ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
    " FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "functions": "SELECT proname, pg_get_function_identity_arguments(oid), pg_get_functiondef(oid)"
    " FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1, 2",
    "triggers": "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger"
    " WHERE NOT tgisinternal ORDER BY 1, 2",
}

# The tables holding data, as far as they exist at a version.
_DATA_TABLES = ("sessions", "messages", "user_stats", "message_search", "port_labels")

_MESSAGE_COLUMNS = (
    "session_id", "seq", "id", "user_id", "port", "client_id", "dedup_key", "role", "content",
    "content_type", "source", "client_ts", "created_at", "edited_at", "metadata",
)  # fmt: skip


async def _schema(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {what: [tuple(r) for r in await conn.fetch(sql)] for what, sql in _CATALOG.items()}


async def _data(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    return {
        table: [dict(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]
        for table in _DATA_TABLES
        if await _table_exists(conn, table)
    }


def _without(rows: list[dict[str, Any]], *columns: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in columns} for row in rows]


async def _reindex(dsn: str) -> int | None:
    """What `chat-gateway reindex` does: index every message missing from the search index."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        return await catch_up(pool)
    finally:
        await pool.close()


async def _fill(conn: asyncpg.Connection, dsn: str) -> None:
    """Two users' sessions (one titled, one archived) with messages, their counters, automatic
    titles and previews set as the writer sets them, their search rows and a port label."""
    chats = {
        ("ann", 9000): [
            "# Fix the parser\nit drops `src/app.py`",
            "```py\nprint(1)\n```\n**Done**",
        ],
        ("ann", 9001): ["> a question about the café", "an answer", "thanks"],
        ("bob", 9000): ["hello there"],
    }
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for (user, port), contents in chats.items():
        session, _ = await find_or_create_active(conn, user, port, "vscode")
        rows = [
            (session.id, seq, uuid.uuid4(), user, port, None, uuid.uuid4(),
             "user" if seq % 2 else "assistant", content, "text/markdown", "ide", None,
             start + timedelta(seconds=seq), None, "{}")
            for seq, content in enumerate(contents, 1)
        ]  # fmt: skip
        await conn.copy_records_to_table("messages", records=rows, columns=_MESSAGE_COLUMNS)
        last = rows[-1]
        await conn.execute(
            "UPDATE sessions SET message_count = $2, last_message_at = $3,"
            " activity_at = greatest(activity_at, $3), auto_title = session_first_user_line(id),"
            " preview = $4, preview_role = $5, preview_seq = $6 WHERE id = $1",
            session.id, len(rows), last[12], preview_of(str(last[8])), last[7], last[1],
        )  # fmt: skip
        await conn.execute(
            "UPDATE user_stats SET messages = messages + $2 WHERE user_id = $1", user, len(rows)
        )
    await conn.execute("UPDATE sessions SET title = 'Parser work' WHERE port = 9000")
    await conn.execute(
        "UPDATE sessions SET status = 'archived', archived_at = now() WHERE port = 9001"
    )
    await set_port_label(conn, "ann", 9000, "parser")
    assert await _reindex(dsn) == 6


def _versions(migrations: list[Any]) -> list[int]:
    return [m.version for m in migrations]


def test_every_shipped_migration_has_a_down_file() -> None:
    """Every migration in sql/ ships a down file, headed `-- irreversible: <why>` if need be."""
    missing = [m.path.name for m in discover() if m.down is None]
    assert not missing, f"write a down file for {missing} (see storage/migrate.py)"


def test_shipped_down_files_say_what_undoing_them_costs() -> None:
    """The shipped down files' headers classify them as _SHIPPED_EFFECTS, which the tests use."""
    assert {m.version: m.down.effect for m in discover() if m.down} == _SHIPPED_EFFECTS


async def test_down_to_zero_and_up_again_gives_a_fresh_schema(
    conn: asyncpg.Connection, dsn: str
) -> None:
    """Every migration undone on a database holding data leaves only schema_migrations, and
    applying them all again gives exactly the schema of a fresh migration."""
    shipped = _versions(discover())
    await migrate_to(conn, shipped[-1])
    fresh = await _schema(conn)
    await _fill(conn, dsn)
    down = await migrate_to(conn, 0, allow_data_loss=True)
    assert (_versions(down.reverted), down.applied) == (shipped[::-1], [])
    empty = await _schema(conn)
    assert empty["tables"] == [("schema_migrations", "r")]
    assert empty["functions"] == empty["triggers"] == []
    assert await _recorded(conn) == []
    up = await migrate_to(conn, shipped[-1])
    assert (up.reverted, _versions(up.applied)) == ([], shipped)
    assert await _schema(conn) == fresh


async def test_data_losing_down_is_refused_and_changes_nothing(
    conn: asyncpg.Connection, dsn: str
) -> None:
    """Going below 0007 or 0001 without allow_data_loss fails naming their down files and the
    flag, and changes neither the schema nor the data."""
    await migrate_to(conn, 7)
    await _fill(conn, dsn)
    schema, data, recorded = await _schema(conn), await _data(conn), await _recorded(conn)
    with pytest.raises(DataLossError, match=r"0007_port_labels\.down\.sql .*--allow-data-loss"):
        await migrate_to(conn, 5)
    with pytest.raises(
        DataLossError, match=r"0007_port_labels\.down\.sql .*; 0001_core\.down\.sql \("
    ) as info:
        await migrate_to(conn, 0)
    assert _versions(info.value.migrations) == [7, 1]
    assert (await _schema(conn), await _data(conn), await _recorded(conn)) == (
        schema, data, recorded,
    )  # fmt: skip


async def test_down_to_five_and_up_keeps_sessions_and_recomputes_previews(
    conn: asyncpg.Connection, dsn: str
) -> None:
    """Down to 5 with allow_data_loss and back to 7 loses the port labels only: sessions and
    messages stay, and the previews come back as the writer had set them."""
    await migrate_to(conn, 7)
    await _fill(conn, dsn)
    before = await _data(conn)
    down = await migrate_to(conn, 5, allow_data_loss=True)
    assert _versions(down.reverted) == [7, 6]
    at_five = await _data(conn)
    assert "port_labels" not in at_five
    assert at_five["messages"] == before["messages"]
    assert at_five["sessions"] == _without(
        before["sessions"], "preview", "preview_role", "preview_seq"
    )
    await migrate_to(conn, 7)
    assert await _data(conn) == before | {"port_labels": []}


async def test_down_to_one_and_up_keeps_derived_data_and_reindex_rebuilds_search(
    conn: asyncpg.Connection, dsn: str
) -> None:
    """Down to 1 and back needs the flag only for 0007: counters, automatic titles, name words
    and previews come back equal, and `reindex` rebuilds the search rows as they were."""
    await migrate_to(conn, 7)
    await _fill(conn, dsn)
    before = await _data(conn)
    await migrate_to(conn, 6, allow_data_loss=True)
    down = await migrate_to(conn, 1)  # 0006 to 0002 keep data: no flag needed
    assert _versions(down.reverted) == [6, 5, 4, 3, 2]
    at_one = await _data(conn)
    assert at_one["messages"] == before["messages"]
    derived = ("auto_title", "name_words", "preview", "preview_role", "preview_seq")
    assert at_one["sessions"] == _without(before["sessions"], *derived)
    await migrate_to(conn, 7)
    assert await _data(conn) == before | {"message_search": [], "port_labels": []}
    assert await _reindex(dsn) == len(before["message_search"])
    assert await _data(conn) == before | {"port_labels": []}


def test_down_files_are_found_beside_their_migrations(tmp_path: Path) -> None:
    """discover() attaches each NNNN_name.down.sql to its migration with its header's effect."""
    _write(tmp_path, _REVERSIBLE | {"0004_d.sql": "SELECT 1;"})
    found = [
        (m.version, m.down and (m.down.path.name, m.down.effect, m.down.note, len(m.down.checksum)))
        for m in discover(tmp_path)
    ]
    assert found == [
        (1, ("0001_a.down.sql", DownEffect.LOSES_DATA, "table a", 64)),
        (2, ("0002_b.down.sql", DownEffect.KEEPS_DATA, "b holds nothing", 64)),
        (3, ("0003_c.down.sql", DownEffect.KEEPS_DATA, "c holds nothing", 64)),
        (4, None),
    ]


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("0002_bee.down.sql", r"0002_bee\.down\.sql .*no up file 0002_bee\.sql; version 2's up"
         r" file is 0002_b\.sql"),
        ("0009_b.down.sql", r"0009_b\.down\.sql .*no up file 0009_b\.sql$"),
        ("0001_a.DOWN.sql", r"bad migration file name '0001_a\.DOWN\.sql'"),
        ("001_a.down.sql", r"bad migration file name '001_a\.down\.sql'"),
    ],
)  # fmt: skip
def test_stray_or_misnamed_down_file_is_refused(
    tmp_path: Path, file_name: str, expected: str
) -> None:
    """A down file whose name matches no up file is refused, naming it."""
    _write(tmp_path, _REVERSIBLE | {file_name: "-- keeps data: nothing\nSELECT 1;"})
    with pytest.raises(MigrationError, match=expected):
        discover(tmp_path)


@pytest.mark.parametrize(
    "first_line",
    ["DROP TABLE a;", "-- loses data:", "-- loses data: ", "-- Loses data: a", "-- drops a", ""],
)
def test_down_file_without_its_header_is_refused(tmp_path: Path, first_line: str) -> None:
    """A down file whose first line does not say what undoing costs is refused, naming it."""
    _write(tmp_path, _REVERSIBLE | {"0001_a.down.sql": f"{first_line}\nDROP TABLE a;"})
    with pytest.raises(MigrationError, match=r"down file 0001_a\.down\.sql must start with"):
        discover(tmp_path)


async def test_applying_records_the_down_file_checksum(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Applying a migration records its down file's sha256 beside its own, NULL without one."""
    _write(tmp_path, _REVERSIBLE | {"0004_d.sql": "SELECT 1;"})
    await apply_pending(conn, tmp_path)
    rows = await conn.fetch("SELECT version, down_checksum FROM schema_migrations ORDER BY 1")
    assert [tuple(row) for row in rows] == [
        (m.version, m.down.checksum if m.down else None) for m in discover(tmp_path)
    ]


async def test_migrate_to_goes_up_and_down_to_the_target(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """migrate_to applies pending files up to the target only, and undoes newer ones newest
    first, each with its schema_migrations row."""
    _write(tmp_path, _REVERSIBLE)
    up = await migrate_to(conn, 2, tmp_path)
    assert (up.reverted, _versions(up.applied)) == ([], [1, 2])
    assert not await _table_exists(conn, "c")
    assert _versions((await migrate_to(conn, 3, tmp_path)).applied) == [3]
    down = await migrate_to(conn, 1, tmp_path)
    assert (_versions(down.reverted), down.applied) == ([3, 2], [])
    assert [await _table_exists(conn, table) for table in "abc"] == [True, False, False]
    assert [row[0] for row in await _recorded(conn)] == [1]
    again = await migrate_to(conn, 1, tmp_path)
    assert (again.reverted, again.applied) == ([], [])


async def test_migrate_to_fills_a_gap_below_the_target(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A pending file below the target is applied once the applied ones above it are undone."""
    _write(tmp_path, {k: v for k, v in _REVERSIBLE.items() if not k.startswith("0002")})
    await apply_pending(conn, tmp_path)
    _write(tmp_path, {k: v for k, v in _REVERSIBLE.items() if k.startswith("0002")})
    result = await migrate_to(conn, 2, tmp_path)
    assert (_versions(result.reverted), _versions(result.applied)) == ([3], [2])


async def test_edited_down_file_is_refused_and_changes_nothing(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A down file edited since its migration was applied is refused before any step runs;
    status reports it, and runs that do not undo that migration go on."""
    _write(tmp_path, _REVERSIBLE)
    await apply_pending(conn, tmp_path)
    _write(tmp_path, {"0002_b.down.sql": "-- keeps data: b holds nothing\nDROP TABLE b CASCADE;"})
    with pytest.raises(MigrationError, match=r"0002_b\.down\.sql was edited after 0002_b\.sql"):
        await migrate_to(conn, 1, tmp_path)
    assert [await _table_exists(conn, table) for table in "abc"] == [True, True, True]
    assert [row[0] for row in await _recorded(conn)] == [1, 2, 3]
    assert [s.down_edited for s in await status(conn, tmp_path)] == [False, True, False]
    assert await apply_pending(conn, tmp_path) == []
    assert _versions((await migrate_to(conn, 2, tmp_path)).reverted) == [3]


async def test_down_file_added_after_its_migration_ran_is_used(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A down file shipped after its migration was applied (none recorded) runs as it is."""
    _write(tmp_path, {"0001_a.sql": _REVERSIBLE["0001_a.sql"]})
    await apply_pending(conn, tmp_path)
    _write(tmp_path, {"0001_a.down.sql": _REVERSIBLE["0001_a.down.sql"]})
    result = await migrate_to(conn, 0, tmp_path, allow_data_loss=True)
    assert _versions(result.reverted) == [1]
    assert not await _table_exists(conn, "a")


async def test_table_of_older_releases_keeps_working(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A schema_migrations written before down files existed is read by status, gains its
    down_checksum column at the next run, and its migrations can be undone."""
    _write(tmp_path, {k: v for k, v in _REVERSIBLE.items() if k.startswith("0001")})
    # What older releases created and recorded.
    await conn.execute(
        "CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL,"
        " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    await conn.execute(_REVERSIBLE["0001_a.sql"])
    await conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (1, 'a', $1)",
        discover(tmp_path)[0].checksum,
    )
    [state] = await status(conn, tmp_path)
    assert state.applied_at is not None and not state.down_edited
    _write(tmp_path, {k: v for k, v in _REVERSIBLE.items() if k.startswith("0002")})
    assert _versions(await apply_pending(conn, tmp_path)) == [2]
    rows = await conn.fetch("SELECT version, down_checksum FROM schema_migrations ORDER BY 1")
    assert [tuple(row) for row in rows] == [(1, None), (2, discover(tmp_path)[1].down.checksum)]  # type: ignore[union-attr]
    result = await migrate_to(conn, 0, tmp_path, allow_data_loss=True)
    assert _versions(result.reverted) == [2, 1]


async def test_missing_down_file_is_refused_naming_the_version(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Going below a migration without a down file fails naming its version; nothing is undone."""
    _write(tmp_path, {k: v for k, v in _REVERSIBLE.items() if k != "0002_b.down.sql"})
    await apply_pending(conn, tmp_path)
    with pytest.raises(MigrationError, match=r"version 2 \(0002_b\.sql\) has no down file"):
        await migrate_to(conn, 1, tmp_path)
    assert [row[0] for row in await _recorded(conn)] == [1, 2, 3]
    assert await _table_exists(conn, "c")


async def test_irreversible_migration_is_refused_with_its_reason(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Going below an `-- irreversible:` migration fails with its reason, even with
    allow_data_loss; nothing is undone."""
    irreversible = "-- irreversible: b's rows were merged into a\n"
    _write(tmp_path, _REVERSIBLE | {"0002_b.down.sql": irreversible})
    await apply_pending(conn, tmp_path)
    with pytest.raises(MigrationError, match=r"version 2 is irreversible: b's rows were merged"):
        await migrate_to(conn, 0, tmp_path, allow_data_loss=True)
    assert [row[0] for row in await _recorded(conn)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("target", "expected"),
    [(4, r"version 4: the newest migration is 0003_c\.sql"), (-1, "versions are 0 or more")],
)
async def test_target_outside_the_versions_is_refused(
    conn: asyncpg.Connection, tmp_path: Path, target: int, expected: str
) -> None:
    """A target above the newest version on disk or below 0 is refused, touching nothing."""
    _write(tmp_path, _REVERSIBLE)
    with pytest.raises(MigrationError, match=expected):
        await migrate_to(conn, target, tmp_path)
    assert not await _table_exists(conn, "schema_migrations")


async def test_failing_down_rolls_back_and_stops(
    conn: asyncpg.Connection, dsn: str, tmp_path: Path
) -> None:
    """A failing down file is rolled back and its migration stays recorded; the steps before
    it stay undone, and the lock is freed."""
    failing = "-- keeps data: b holds nothing\nDROP TABLE b; SELECT 1 / 0;"
    _write(tmp_path, _REVERSIBLE | {"0002_b.down.sql": failing})
    await apply_pending(conn, tmp_path)
    with pytest.raises(
        MigrationError, match=r"0002_b\.down\.sql failed and was rolled back"
    ) as info:
        await migrate_to(conn, 0, tmp_path, allow_data_loss=True)
    assert isinstance(info.value.__cause__, asyncpg.DivisionByZeroError)
    assert [await _table_exists(conn, table) for table in "abc"] == [True, True, False]
    assert [row[0] for row in await _recorded(conn)] == [1, 2]
    assert await _lock_is_free(dsn)


async def test_migrate_to_waits_for_the_migration_lock(
    conn: asyncpg.Connection, dsn: str, tmp_path: Path
) -> None:
    """migrate_to waits while another process holds the migration lock, then runs."""
    _write(tmp_path, _REVERSIBLE)
    other = await asyncpg.connect(dsn)
    try:
        await other.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        run = asyncio.create_task(migrate_to(conn, 3, tmp_path))
        # The wait happens in the server: its lock table is the only place it shows.
        async with asyncio.timeout(10):
            while not await other.fetchval(  # noqa: ASYNC110
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE d.datname = current_database() AND l.locktype = 'advisory'"
                " AND NOT l.granted"
            ):
                await asyncio.sleep(0.01)
        assert not run.done()
        assert not await _table_exists(other, "schema_migrations")
        await other.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        assert _versions((await asyncio.wait_for(run, 10)).applied) == [1, 2, 3]
    finally:
        await other.close()
