"""Backing up the gateway's database with pg_dump and restoring it with pg_restore.

Both programs come with the embedded PostgreSQL (`storage.embedded.client_program`) and run as
children with the password in `PGPASSWORD`, never on their command line, where any local
account could read it.

**Backup.** `dump` writes a custom-format archive (`pg_dump -Fc`: compressed, restorable table
by table) to a temporary file beside the target, fsyncs it and renames it into place, so the
target is a complete archive or absent; the file is 0600, as it holds every chat. pg_dump reads
one consistent snapshot, so it is safe while gateways run. What it cannot see is what the
gateways acked but the batch writer has not yet committed: those messages wait in the Redis
ingest stream (`unwritten` counts them) and are in the dump only if it starts after their commit.

**Restore.** `restore` runs `pg_restore --clean --if-exists --single-transaction`: the objects of
the archive are dropped and recreated with its rows in one transaction, so a failure changes
nothing. Its callers first make sure it is safe (`read_archive`, `check_target`, `unwritten`):

* no other client is connected: a gateway or writer would keep writing into the database being
  replaced, or hold locks that stall the restore;
* the ingest stream is empty: the writer would write its entries into a database that may no
  longer hold their sessions;
* the database's schema is not newer than the archive's: `--clean` drops only what the archive
  holds, so a newer table would stay, with its rows, and its migration would fail to re-create
  it. An older schema is fine: `finish` applies the pending migrations afterwards.

**Redis after a restore.** `finish` deletes the gateway's per-session dedup and seq state and its
cached active sessions under the key prefix (`Keys.session_state`, `Keys.active`), not the
ingest stream (checked empty). The ingest script treats a missing state as "not loaded" and the
gateway reloads it from PostgreSQL on the session's next message (storage/buffer.py), the same
path as after `session_state_ttl_s` expires. Without that, the state would still describe the
database as it was before the restore: a message stored after the backup, re-sent with the same
client id, would be judged a duplicate of a row the restored database no longer has and be lost;
seqs would continue from the newer count, and a deleted session could stay cached as active.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from storage import migrate
from storage.embedded import client_program
from storage.keys import TEMPLATES, Keys

log = logging.getLogger(__name__)

# The last lines of a failed tool's output kept for its error message.
_ERROR_LINES = 8
# Keys deleted per UNLINK, and the SCAN hint, when clearing Redis state after a restore.
_CLEAR_BATCH = 1000
_COPY_HEADER = re.compile(r"^COPY [\w.\"]*schema_migrations \(([^)]*)\) FROM stdin;$")


class BackupError(Exception):
    """pg_dump or pg_restore failed, or could not run; the message says why."""


class Refused(BackupError):
    """A restore (or backup) refused before anything was changed; the message is one line."""


@dataclass(frozen=True)
class Dump:
    path: Path
    bytes: int
    tables: int  # tables whose rows were dumped


@dataclass(frozen=True)
class Archive:
    """A pg_dump custom-format archive as `pg_restore --list` sees it."""

    path: Path
    entries: int  # entries in its table of contents
    migrations: list[int]  # versions recorded in its schema_migrations, ascending


@dataclass(frozen=True)
class Restored:
    migrations_applied: list[str]
    sessions: int
    messages: int
    states_cleared: int  # per-session dedup/seq states deleted from Redis
    actives_cleared: int  # cached active sessions deleted from Redis


def default_path(data_dir: Path, now: datetime) -> Path:
    """`<data dir>/backups/chat-gateway-YYYYmmdd-HHMMSS.dump` for the time `now`."""
    return data_dir / "backups" / f"chat-gateway-{now:%Y%m%d-%H%M%S}.dump"


async def unwritten(redis: aioredis.Redis, keys: Keys) -> int:
    """Entries in the ingest stream: messages acked but not yet committed to PostgreSQL (the
    writer deletes each entry once its rows are committed)."""
    return int(await redis.xlen(keys.stream))


def dump(database_url: str, output: Path, on_table: Callable[[int], None] | None = None) -> Dump:
    """pg_dump the database to `output` (custom format), atomically, mode 0600.

    `on_table(n)` is called as pg_dump starts on the n-th table's rows (for a spinner). Raises
    `BackupError` when pg_dump fails; `output` is then untouched and no temporary file is left.
    """
    dsn, env = _libpq(database_url)
    folder = output.parent
    fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{output.name}-", suffix=".part")
    os.close(fd)  # mkstemp made it 0600; pg_dump truncates and writes it, keeping the mode
    tables = 0

    def line(text: str) -> None:
        nonlocal tables
        if "dumping contents of table" in text:
            tables += 1
            if on_table is not None:
                on_table(tables)

    try:
        argv = [
            str(client_program("pg_dump")), "--format=custom", "--verbose",
            f"--file={staging}", f"--dbname={dsn}",
        ]  # fmt: skip
        _run("pg_dump", argv, env, line)
        with open(staging, "rb") as file:
            os.fsync(file.fileno())
        os.replace(staging, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        raise
    _fsync_folder(folder)
    return Dump(output, output.stat().st_size, tables)


def read_archive(path: Path) -> Archive:
    """Check that `path` is a pg_dump custom-format archive of a chat-gateway database; raise
    `Refused` (one line) when it is missing, of another kind, or holds no schema_migrations."""
    if not path.is_file():
        raise Refused(f"{path}: no such file")
    pg_restore = str(client_program("pg_restore"))
    listed = subprocess.run(
        [pg_restore, "--list", str(path)], capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        why = _error_lines(listed.stderr)[-1:] or ["unreadable"]
        raise Refused(f"{path} is not a pg_dump custom-format archive ({why[0]})")
    entries = [line for line in listed.stdout.splitlines() if line and not line.startswith(";")]
    # The migrations recorded in it, read from its rows as a script (nothing is restored).
    data = subprocess.run(
        [pg_restore, "--data-only", "--table=schema_migrations", "--file=-", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    versions = _copied_versions(data.stdout) if data.returncode == 0 else None
    if not versions:
        raise Refused(f"{path} holds no chat-gateway database (no schema_migrations rows)")
    return Archive(path, len(entries), versions)


async def check_target(conn: asyncpg.Connection, archive: Archive, known: list[int]) -> None:
    """Raise `Refused` unless restoring `archive` through `conn`'s database is safe: no other
    client connected, an archive whose migrations this version knows, and a database whose
    schema is not newer than the archive's (see the module docstring)."""
    others = int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
    )
    if others:
        raise Refused(
            f"{others} other connection(s) to the database: stop the gateways and writers"
            " (serve, writer) that use it first, then restore"
        )
    unknown = sorted(set(archive.migrations) - set(known))
    if unknown:
        raise Refused(
            f"{archive.path} was made by a newer chat-gateway (migration {unknown[-1]:04d}"
            f" is not among this version's, which end at {max(known, default=0):04d}):"
            " restore it with that version"
        )
    current = await conn.fetchval(
        "SELECT max(version) FROM schema_migrations"
        if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        else "SELECT NULL::int"
    )
    newest = archive.migrations[-1]
    if current is not None and current > newest:
        raise Refused(
            f"the database is at migration {current:04d} and {archive.path} at {newest:04d}:"
            f" its newer tables would outlive the restore; first run `chat-gateway migrate"
            f" --to {newest} --allow-data-loss` (the restore replaces that data anyway), or"
            " restore into an empty database"
        )


def restore(database_url: str, archive: Archive, *, keep_owners: bool) -> None:
    """pg_restore the archive over the database in one transaction (nothing changes if it
    fails: raises `BackupError`). `keep_owners`: set each object's owner as dumped, right for
    the embedded server (one role, `gateway`, on both sides); else every object belongs to the
    restoring role, as a role of the dumped server may not exist on this one."""
    dsn, env = _libpq(database_url)
    argv = [
        str(client_program("pg_restore")), "--clean", "--if-exists", "--single-transaction",
        "--exit-on-error", "--verbose", f"--dbname={dsn}",
    ]  # fmt: skip
    if not keep_owners:
        argv.append("--no-owner")
    _run("pg_restore", [*argv, str(archive.path)], env, None)


async def finish(conn: asyncpg.Connection, redis: aioredis.Redis, keys: Keys) -> Restored:
    """After `restore`: apply the pending migrations, clear the per-session Redis state and
    cached active sessions (see the module docstring), and count what was restored."""
    applied = await migrate.apply_pending(conn)
    states = await _delete_matching(redis, _pattern(keys, "session_state"))
    actives = await _delete_matching(redis, _pattern(keys, "active"))
    sessions = int(await conn.fetchval("SELECT count(*) FROM sessions"))
    messages = int(await conn.fetchval("SELECT count(*) FROM messages"))
    return Restored([m.path.name for m in applied], sessions, messages, states, actives)


def _pattern(keys: Keys, template: str) -> str:
    """A SCAN pattern for every key of `template` under the prefix: each hole a wildcard, the
    prefix's own glob characters escaped (template pieces have none, see storage/keys.py)."""
    prefix = re.sub(r"([*?\[\]\\])", r"\\\1", keys.prefix)
    return prefix + re.sub(r"\{[a-z_]+\}", "*", TEMPLATES[template])


async def _delete_matching(redis: aioredis.Redis, pattern: str) -> int:
    """Delete every key matching the SCAN `pattern`; return how many."""
    deleted = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=_CLEAR_BATCH):
        batch.append(key)
        if len(batch) >= _CLEAR_BATCH:
            deleted += int(await redis.unlink(*batch))
            batch = []
    if batch:
        deleted += int(await redis.unlink(*batch))
    return deleted


def _copied_versions(script: str) -> list[int]:
    """The `version` column of schema_migrations' COPY block in a pg_restore script."""
    versions: list[int] = []
    lines = iter(script.splitlines())
    for line in lines:
        header = _COPY_HEADER.match(line)
        if header is None:
            continue
        columns = [c.strip().strip('"') for c in header.group(1).split(",")]
        if "version" not in columns:
            return []
        at = columns.index("version")
        for row in lines:
            if row == "\\.":
                break
            versions.append(int(row.split("\t")[at]))
        break
    return sorted(versions)


def _libpq(database_url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment for a libpq program with the
    password in PGPASSWORD. The environment is passed through to the child, as subprocess
    does by default (libpq's own PG* variables keep working); no setting is read from it."""
    parts = urlsplit(database_url)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        host = parts.netloc.rpartition("@")[2]
        user = parts.netloc.rpartition("@")[0].split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}@{host}")
    return urlunsplit(parts), env


def _run(
    name: str, argv: list[str], env: dict[str, str], on_line: Callable[[str], None] | None
) -> None:
    """Run a PostgreSQL client to completion, its output (with --verbose) logged at debug
    level; raise `BackupError` with its last error lines if it fails."""
    tail: deque[str] = deque(maxlen=200)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env, text=True, errors="replace",
        )  # fmt: skip
    except OSError as exc:
        raise BackupError(f"cannot run {name}: {exc}") from exc
    assert proc.stderr is not None
    with proc:
        for raw in proc.stderr:
            text = raw.rstrip("\n")
            log.debug("%s", text)
            tail.append(text)
            if on_line is not None:
                on_line(text)
    if proc.returncode != 0:
        lines = _error_lines("\n".join(tail))[-_ERROR_LINES:] or list(tail)[-_ERROR_LINES:]
        raise BackupError(f"{name} failed with exit code {proc.returncode}: " + " / ".join(lines))


def _error_lines(output: str) -> list[str]:
    """The lines of a client's output that report errors, without the program's name."""
    return [
        line.split(": ", 1)[1] if ": " in line else line
        for line in output.splitlines()
        if "error:" in line or line.startswith(("pg_dump: detail:", "pg_restore: detail:"))
    ]


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
