"""Apply numbered plain-SQL migrations once each, in order, under a PostgreSQL advisory lock,
and undo them again with their down files.

A migration is a file `NNNN_name.sql` (four or more digits, an underscore, a name of letters,
digits and underscores). Each is applied in its own transaction together with its row in
`schema_migrations`, so a file is either fully applied and recorded or not at all. The row keeps
the sha256 of the file's bytes: editing a file after it was applied is refused, because the
databases that already ran it would silently differ from new ones. Write a new migration instead.

**Down files.** `NNNN_name.down.sql`, beside `NNNN_name.sql`, undoes it: it drops what the up
file created, in reverse order, and restores what it altered. `migrate_to(conn, N)` runs the
down files of the applied migrations above N, newest first, each in its own transaction with
the deletion of its `schema_migrations` row, then applies the pending ones up to N; everything
under the same lock, after the same checksum checks. A down file whose name matches no up file
is an error (a typo would otherwise leave its migration silently irreversible). A migration
without a down file can be applied but not undone.

The first line of a down file says what undoing costs, in one of three forms:

    -- loses data: <what>     it drops data nothing recomputes (what users wrote): refused
                              unless `allow_data_loss` (`migrate --to N --allow-data-loss`)
    -- keeps data: <how>      nothing users wrote is lost: what it drops is derived, and
                              re-applying the up file (or the command named) recomputes it
    -- irreversible: <why>    it cannot be undone; going below its version is refused

Any other first line is an error, so a down file cannot lose data by forgetting to say so.

The down file's sha256 is recorded beside its migration's when the up file is applied
(`down_checksum`). A down whose file differs from the recorded one is refused: the down that
runs must be the one shipped, and reviewed, with the up that ran. NULL means nothing to
compare: the row was written before down files existed (the column is added to older tables
under the lock, and those databases keep working) or the migration had no down file then; the
file on disk runs as it is. To run a deliberately fixed down file, set that row's
`down_checksum` to NULL first.

Because every file runs inside a transaction, it must not contain `BEGIN`/`COMMIT` or statements
PostgreSQL refuses in a transaction block (`CREATE INDEX CONCURRENTLY`, `VACUUM`, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

logger = logging.getLogger(__name__)

# Key of the session-level advisory lock serialising migration runs across processes: the ASCII
# bytes of "chatmigr", so it is recognisable and unlikely to collide with other advisory locks.
LOCK_KEY = 0x63686174_6D696772

_FILE_NAME = re.compile(r"(?P<version>[0-9]{4,})_(?P<name>[A-Za-z0-9_]+)\.sql", re.ASCII)
_DOWN_FILE_NAME = re.compile(r"(?P<version>[0-9]{4,})_(?P<name>[A-Za-z0-9_]+)\.down\.sql", re.ASCII)
_DOWN_HEADER = re.compile(r"-- (?P<effect>loses data|keeps data|irreversible): (?P<note>\S.*)")

_MAX_VERSION = 2**31 - 1  # schema_migrations.version is a PostgreSQL int

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    down_checksum text
)
"""
# Tables created before down files existed lack the column; NULL there means "not recorded".
# Altered only when missing: ALTER TABLE needs ownership and an exclusive lock even when IF NOT
# EXISTS makes it a no-op, and a gateway's role may own nothing.
_HAS_DOWN_CHECKSUM = """
SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'schema_migrations'::regclass
                                          AND attname = 'down_checksum' AND NOT attisdropped)
"""
_ADD_DOWN_CHECKSUM = "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS down_checksum text"


class MigrationError(Exception):
    """The migrations on disk cannot be applied safely; the message names the file(s) at fault."""


class DataLossError(MigrationError):
    """Going down would run down files that lose data and that was not allowed; nothing ran."""

    def __init__(self, message: str, migrations: list[Migration]) -> None:
        super().__init__(message)
        self.migrations = migrations


class DownEffect(enum.StrEnum):
    """What running a down file costs, from its first line (see the module docstring)."""

    KEEPS_DATA = "keeps data"
    LOSES_DATA = "loses data"
    IRREVERSIBLE = "irreversible"


@dataclass(frozen=True)
class DownFile:
    """A migration's down file; `note` is the rest of its first line (what, how or why)."""

    path: Path
    checksum: str  # sha256 hex of the file bytes
    effect: DownEffect
    note: str


@dataclass(frozen=True)
class Migration:
    """One migration file; `name` is the part after the number (`core` for `0001_core.sql`)."""

    version: int
    name: str
    path: Path
    checksum: str  # sha256 hex of the file bytes
    down: DownFile | None = None  # None: it cannot be undone


@dataclass(frozen=True)
class MigrationState:
    """A migration on disk and when it was applied; `applied_at` is None while pending.

    `down_edited`: applied, and its down file differs from the one recorded then (going below
    it is refused).
    """

    migration: Migration
    applied_at: datetime | None
    down_edited: bool = False


@dataclass(frozen=True)
class MigrateResult:
    """What `migrate_to` did: the migrations undone (in that order, newest first), then the
    ones applied (oldest first)."""

    reverted: list[Migration]
    applied: list[Migration]


def sql_dir() -> Path:
    """The shipped migrations: `storage/sql` in a wheel, else the repository's top-level `sql/`."""
    # This module lives in the `storage` package, so its folder is `storage.__file__`'s folder.
    package_dir = Path(__file__).parent
    shipped = package_dir / "sql"
    if shipped.is_dir():
        return shipped
    return package_dir.parent / "sql"


def discover(directory: Path | None = None) -> list[Migration]:
    """Return the migrations in `directory` (default `sql_dir()`) sorted by version, each with
    its down file if it has one.

    Every `*.sql` file must be well named and versions must be unique: a typo such as
    `001_core.sql` would otherwise be skipped silently. Every down file must name an up file
    and start with its header line. Other files and folders are ignored.
    """
    folder = sql_dir() if directory is None else directory
    if not folder.is_dir():
        raise MigrationError(f"migrations folder {folder} does not exist")
    by_version: dict[int, Migration] = {}
    downs: list[tuple[re.Match[str], Path]] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() != ".sql" or not path.is_file():
            continue
        if down_match := _DOWN_FILE_NAME.fullmatch(path.name):
            downs.append((down_match, path))
            continue
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(
                f"bad migration file name {path.name!r} in {folder}: expected NNNN_name.sql or"
                " NNNN_name.down.sql (digits, underscore, letters/digits/underscores,"
                " lowercase .sql)"
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
    for match, path in downs:
        up = by_version.get(int(match["version"]))
        if up is None or up.name != match["name"]:
            found = f"; version {up.version}'s up file is {up.path.name}" if up else ""
            raise MigrationError(
                f"down file {path.name} in {folder} has no up file"
                f" {match['version']}_{match['name']}.sql{found}"
            )
        by_version[up.version] = dataclasses.replace(up, down=_read_down(path))
    return [by_version[version] for version in sorted(by_version)]


def _read_down(path: Path) -> DownFile:
    data = path.read_bytes()
    first_line = _decode(path, data).partition("\n")[0].rstrip()
    header = _DOWN_HEADER.fullmatch(first_line)
    if header is None:
        raise MigrationError(
            f"down file {path.name} must start with `-- loses data: <what>`,"
            f" `-- keeps data: <how>` or `-- irreversible: <why>`; it starts {first_line!r}"
        )
    return DownFile(
        path, hashlib.sha256(data).hexdigest(), DownEffect(header["effect"]), header["note"]
    )


def check_target(target: int, migrations: list[Migration]) -> None:
    """Raise `MigrationError` unless `target` is 0 (nothing applied) up to the newest version."""
    if target < 0:
        raise MigrationError(f"cannot migrate to version {target}: versions are 0 or more")
    newest = migrations[-1].version if migrations else 0
    if target > newest:
        what = (
            f"the newest migration is {migrations[-1].path.name}"
            if migrations
            else "there are no migrations"
        )
        raise MigrationError(f"cannot migrate to version {target}: {what}")


async def apply_pending(conn: asyncpg.Connection, directory: Path | None = None) -> list[Migration]:
    """Apply the migrations not yet recorded, in version order, and return them.

    Holds a session advisory lock for the whole run, so concurrent callers (several processes
    starting at once) queue up and each file is applied exactly once; a caller blocks for as long
    as another holds the lock. Checksums of applied migrations are verified before anything is
    applied. A failing migration is rolled back, stops the run and raises `MigrationError`; the
    ones before it stay applied. Never runs a down file.
    """
    migrations = discover(directory)
    newest = migrations[-1].version if migrations else 0
    result = await _migrate(conn, migrations, newest, False, "apply_pending")
    return result.applied


async def migrate_to(
    conn: asyncpg.Connection,
    target: int,
    directory: Path | None = None,
    *,
    allow_data_loss: bool = False,
) -> MigrateResult:
    """Bring the schema to version `target`: undo the applied migrations above it, newest
    first, with their down files, then apply the pending ones up to it, oldest first.

    `target` 0 undoes every migration; above the newest version on disk is an error. Under the
    same lock and checksum checks as `apply_pending`, and everything is checked before the
    first step: an applied file edited or missing, a down file missing, edited since its
    migration was applied or irreversible, each raises `MigrationError`, and a down that loses
    data raises `DataLossError` unless `allow_data_loss`; either way nothing was changed. A
    failing step is rolled back and stops the run; the steps before it stay done.
    """
    migrations = discover(directory)
    check_target(target, migrations)
    return await _migrate(conn, migrations, target, allow_data_loss, "migrate_to")


async def status(conn: asyncpg.Connection, directory: Path | None = None) -> list[MigrationState]:
    """Return every migration on disk, in version order, with when it was applied.

    Read-only: it neither creates `schema_migrations` (all pending if absent) nor takes the lock.
    It raises `MigrationError`, like `apply_pending`, when an applied file was edited or is
    missing from disk, so a health check cannot report a drifted schema as fine. An edited down
    file is reported (`down_edited`), not raised: it blocks only going below its migration.
    """
    migrations = discover(directory)
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = await _applied(conn) if exists else {}
    _verify(migrations, applied)
    states = []
    for m in migrations:
        row = applied.get(m.version)
        states.append(
            MigrationState(
                m,
                row["applied_at"] if row else None,
                down_edited=row is not None and _down_edited(m, row),
            )
        )
    return states


async def _migrate(
    conn: asyncpg.Connection,
    migrations: list[Migration],
    target: int,
    allow_data_loss: bool,
    caller: str,
) -> MigrateResult:
    if conn.is_in_transaction():
        # The lock is released when we return, but an outer transaction would commit later:
        # another process could take the lock, see nothing recorded and apply the files again.
        raise MigrationError(f"{caller} needs a connection outside any transaction")
    async with _locked(conn):
        applied = await _applied(conn)
        _verify(migrations, applied)
        downs = [m for m in reversed(migrations) if m.version in applied and m.version > target]
        ups = [m for m in migrations if m.version not in applied and m.version <= target]
        _check_downs(downs, applied, target, allow_data_loss)
        for migration in downs:
            await _revert_one(conn, migration)
        newest = max((v for v in applied if v <= target), default=None)
        for migration in ups:
            if newest is not None and migration.version < newest:
                logger.warning(
                    "applying %s after the newer version %d (out of order)",
                    migration.path.name,
                    newest,
                )
            await _apply_one(conn, migration)
        return MigrateResult(downs, ups)


@contextlib.asynccontextmanager
async def _locked(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Hold the migration lock, with `schema_migrations` in its current shape."""
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        # Created under the lock: concurrent CREATE TABLE IF NOT EXISTS can still collide.
        await conn.execute(_CREATE_TABLE)
        if not await conn.fetchval(_HAS_DOWN_CHECKSUM):
            await conn.execute(_ADD_DOWN_CHECKSUM)
        yield
    finally:
        # A dead connection has already dropped its session lock; unlocking would only mask
        # the original error.
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def _applied(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    # to_jsonb gives NULL for a column the table lacks: status() is read-only and must read a
    # table created before down files existed, which only the lock holder alters.
    rows = await conn.fetch(
        "SELECT version, name, checksum, applied_at,"
        " to_jsonb(m) ->> 'down_checksum' AS down_checksum FROM schema_migrations m"
    )
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


def _down_edited(migration: Migration, row: asyncpg.Record) -> bool:
    recorded = row["down_checksum"]
    down = migration.down
    return recorded is not None and down is not None and down.checksum != recorded


def _check_downs(
    downs: list[Migration],
    applied: dict[int, asyncpg.Record],
    target: int,
    allow_data_loss: bool,
) -> None:
    """Raise unless every down step can run: one error listing every step that cannot."""
    problems: list[str] = []
    for m in downs:
        if m.down is None:
            problems.append(
                f"version {m.version} ({m.path.name}) has no down file"
                f" {m.path.name.removesuffix('.sql')}.down.sql"
            )
        elif m.down.effect is DownEffect.IRREVERSIBLE:
            problems.append(f"version {m.version} is irreversible: {m.down.note}")
        elif _down_edited(m, applied[m.version]):
            problems.append(
                f"{m.down.path.name} was edited after {m.path.name} was applied (recorded"
                f" sha256 {applied[m.version]['down_checksum']}, on disk {m.down.checksum});"
                " restore it, or set its schema_migrations.down_checksum to NULL to run it"
            )
    if problems:
        raise MigrationError(f"cannot go down to version {target}: " + "; ".join(problems))
    losing = [m for m in downs if m.down is not None and m.down.effect is DownEffect.LOSES_DATA]
    if losing and not allow_data_loss:
        what = "; ".join(f"{m.down.path.name} ({m.down.note})" for m in losing if m.down)
        raise DataLossError(
            f"going down to version {target} loses data: {what}; nothing was changed;"
            " run it with --allow-data-loss to accept that",
            losing,
        )


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise MigrationError(f"{path.name} is not valid UTF-8: {exc}") from exc


def _read_checked(path: Path, checksum: str) -> str:
    data = path.read_bytes()
    # Re-hash what we run: the file may have changed since discover() read it.
    if hashlib.sha256(data).hexdigest() != checksum:
        raise MigrationError(f"{path.name} changed while migrations were running")
    return _decode(path, data)


async def _apply_one(conn: asyncpg.Connection, migration: Migration) -> None:
    took = await _run_file(
        conn,
        migration.path,
        migration.checksum,
        "INSERT INTO schema_migrations (version, name, checksum, down_checksum)"
        " VALUES ($1, $2, $3, $4)",
        migration.version,
        migration.name,
        migration.checksum,
        migration.down.checksum if migration.down else None,
    )
    logger.info("applied migration %s in %.3fs", migration.path.name, took)


async def _revert_one(conn: asyncpg.Connection, migration: Migration) -> None:
    down = migration.down
    assert down is not None, "checked by _check_downs"
    took = await _run_file(
        conn,
        down.path,
        down.checksum,
        "DELETE FROM schema_migrations WHERE version = $1",
        migration.version,
    )
    logger.info("reverted migration %s in %.3fs", migration.path.name, took)


async def _run_file(
    conn: asyncpg.Connection, path: Path, checksum: str, record: str, *args: object
) -> float:
    """Run an up or down file and the `record` statement in one transaction; return seconds."""
    sql = _read_checked(path, checksum)
    started = time.monotonic()
    try:
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute(record, *args)
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"{path.name} failed and was rolled back: {exc}") from exc
    return time.monotonic() - started
