"""Apply numbered plain-SQL migrations once each, in order, under a PostgreSQL advisory lock.

A migration is a file `NNNN_name.sql` (four or more digits, an underscore, a name of letters,
digits and underscores). Each is applied in its own transaction together with its row in
`schema_migrations`, so a file is either fully applied and recorded or not at all. The row keeps
the sha256 of the file's bytes: editing a file after it was applied is refused, because the
databases that already ran it would silently differ from new ones. Write a new migration instead.

Because every file runs inside a transaction, it must not contain `BEGIN`/`COMMIT` or statements
PostgreSQL refuses in a transaction block (`CREATE INDEX CONCURRENTLY`, `VACUUM`, ...).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

logger = logging.getLogger(__name__)

# Key of the session-level advisory lock serialising migration runs across processes: the ASCII
# bytes of "chatmigr", so it is recognisable and unlikely to collide with other advisory locks.
LOCK_KEY = 0x63686174_6D696772

_FILE_NAME = re.compile(r"(?P<version>[0-9]{4,})_(?P<name>[A-Za-z0-9_]+)\.sql", re.ASCII)

_MAX_VERSION = 2**31 - 1  # schema_migrations.version is a PostgreSQL int

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The migrations on disk cannot be applied safely; the message names the file(s) at fault."""


@dataclass(frozen=True)
class Migration:
    """One migration file; `name` is the part after the number (`core` for `0001_core.sql`)."""

    version: int
    name: str
    path: Path
    checksum: str  # sha256 hex of the file bytes


@dataclass(frozen=True)
class MigrationState:
    """A migration on disk and when it was applied; `applied_at` is None while pending."""

    migration: Migration
    applied_at: datetime | None


def sql_dir() -> Path:
    """The shipped migrations: `storage/sql` in a wheel, else the repository's top-level `sql/`."""
    # This module lives in the `storage` package, so its folder is `storage.__file__`'s folder.
    package_dir = Path(__file__).parent
    shipped = package_dir / "sql"
    if shipped.is_dir():
        return shipped
    return package_dir.parent / "sql"


def discover(directory: Path | None = None) -> list[Migration]:
    """Return the migrations in `directory` (default `sql_dir()`) sorted by version.

    Every `*.sql` file must be well named and versions must be unique: a typo such as
    `001_core.sql` would otherwise be skipped silently. Other files and folders are ignored.
    """
    folder = sql_dir() if directory is None else directory
    if not folder.is_dir():
        raise MigrationError(f"migrations folder {folder} does not exist")
    by_version: dict[int, Migration] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() != ".sql" or not path.is_file():
            continue
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(
                f"bad migration file name {path.name!r} in {folder}: expected NNNN_name.sql"
                " (digits, underscore, letters/digits/underscores, lowercase .sql)"
            )
        version = int(match["version"])
        if version > _MAX_VERSION:
            raise MigrationError(f"migration {path.name}: version does not fit an int column")
        if version in by_version:
            raise MigrationError(
                f"duplicate migration version {version} in {folder}:"
                f" {by_version[version].path.name} and {path.name}"
            )
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        by_version[version] = Migration(version, match["name"], path, checksum)
    return [by_version[version] for version in sorted(by_version)]


async def apply_pending(conn: asyncpg.Connection, directory: Path | None = None) -> list[Migration]:
    """Apply the migrations not yet recorded, in version order, and return them.

    Holds a session advisory lock for the whole run, so concurrent callers (several processes
    starting at once) queue up and each file is applied exactly once; a caller blocks for as long
    as another holds the lock. Checksums of applied migrations are verified before anything is
    applied. A failing migration is rolled back, stops the run and raises `MigrationError`; the
    ones before it stay applied.
    """
    if conn.is_in_transaction():
        # The lock is released when we return, but an outer transaction would commit later:
        # another process could take the lock, see nothing recorded and apply the files again.
        raise MigrationError("apply_pending needs a connection outside any transaction")
    migrations = discover(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        # Created under the lock: concurrent CREATE TABLE IF NOT EXISTS can still collide.
        await conn.execute(_CREATE_TABLE)
        applied = await _applied(conn)
        _verify(migrations, applied)
        pending = [m for m in migrations if m.version not in applied]
        newest = max(applied, default=None)
        for migration in pending:
            if newest is not None and migration.version < newest:
                logger.warning(
                    "applying %s after the newer version %d (out of order)",
                    migration.path.name,
                    newest,
                )
            await _apply_one(conn, migration)
        return pending
    finally:
        # A dead connection has already dropped its session lock; unlocking would only mask
        # the original error.
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def status(conn: asyncpg.Connection, directory: Path | None = None) -> list[MigrationState]:
    """Return every migration on disk, in version order, with when it was applied.

    Read-only: it neither creates `schema_migrations` (all pending if absent) nor takes the lock.
    It raises `MigrationError`, like `apply_pending`, when an applied file was edited or is
    missing from disk, so a health check cannot report a drifted schema as fine.
    """
    migrations = discover(directory)
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = await _applied(conn) if exists else {}
    _verify(migrations, applied)
    return [
        MigrationState(m, applied[m.version]["applied_at"] if m.version in applied else None)
        for m in migrations
    ]


async def _applied(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations")
    return {row["version"]: row for row in rows}


def _verify(migrations: list[Migration], applied: dict[int, asyncpg.Record]) -> None:
    """Raise one `MigrationError` listing every applied migration that drifted from disk."""
    on_disk = {m.version: m for m in migrations}
    problems: list[str] = []
    for version, row in sorted(applied.items()):
        migration = on_disk.get(version)
        if migration is None:
            problems.append(
                f"applied migration {version:04d}_{row['name']}.sql is missing from disk"
            )
        elif migration.checksum != row["checksum"]:
            problems.append(
                f"{migration.path.name} was edited after it was applied"
                f" (recorded sha256 {row['checksum']}, on disk {migration.checksum});"
                " restore it and put the change in a new migration"
            )
    if problems:
        raise MigrationError("; ".join(problems))


async def _apply_one(conn: asyncpg.Connection, migration: Migration) -> None:
    data = migration.path.read_bytes()
    # Re-hash what we run: the file may have changed since discover() read it.
    if hashlib.sha256(data).hexdigest() != migration.checksum:
        raise MigrationError(f"{migration.path.name} changed while migrations were running")
    try:
        sql = data.decode()
    except UnicodeDecodeError as exc:
        raise MigrationError(f"{migration.path.name} is not valid UTF-8: {exc}") from exc
    started = time.monotonic()
    try:
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"{migration.path.name} failed and was rolled back: {exc}") from exc
    logger.info("applied migration %s in %.3fs", migration.path.name, time.monotonic() - started)
