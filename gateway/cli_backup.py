"""`chat-gateway backup` and `chat-gateway restore`: the database to a pg_dump archive and back
(storage/backup.py says what each step guards against)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import redis.asyncio as aioredis

from gateway.preflight import PreflightError, masked
from gateway.progress import progress_bar
from gateway.servers import servers_for
from gateway.settings import Settings
from storage import backup, migrate
from storage.keys import Keys

log = logging.getLogger("chat_gateway")

T = TypeVar("T")

Command = Callable[..., argparse.ArgumentParser]


def add_parser(command: Command, epilog: str) -> None:
    """The commands' grammar, through cli_parser's `command` (its shared flags)."""
    dump = command(
        "backup",
        "write the database to a pg_dump archive (safe while gateways run)",
        "Write the gateway's database to a pg_dump custom-format archive, mode 0600 (it holds"
        " every chat), atomically: the file is complete or absent. Safe while gateways run:"
        " pg_dump reads one consistent snapshot. Messages the gateways acked that are still in"
        " the Redis buffer, not yet committed by the batch writer, are not in the archive; a"
        " warning gives their count. Prints the file's path and size.",
        epilog,
    )
    dump.add_argument(
        "--output", type=Path, metavar="FILE",
        help="where to write the archive (default <data folder>/backups/"
        "chat-gateway-YYYYmmdd-HHMMSS.dump, UTC time, folder created 0700)",
    )  # fmt: skip
    load = command(
        "restore",
        "replace the database with a backup's archive (gateways stopped)",
        "Replace the gateway's database with an archive written by `chat-gateway backup`, in"
        " one transaction (pg_restore --clean --if-exists --single-transaction), then apply"
        " the migrations newer than the archive and clear the gateways' per-session dedup and"
        " seq state in Redis, which is reloaded from the restored database. Refused, changing"
        " nothing, when FILE is not such an archive, when anything else is connected to the"
        " database (stop every serve and writer first), or when the Redis buffer still holds"
        " messages not written to PostgreSQL (start a writer to drain it first).",
        epilog,
    )
    load.add_argument("file", type=Path, metavar="FILE", help="the archive to restore")
    load.add_argument(
        "--yes", action="store_true",
        help="replace the database without asking (default: ask on a terminal; refuse"
        " without one)",
    )  # fmt: skip


def run_backup(settings: Settings, args: argparse.Namespace, given: Mapping[str, str]) -> None:
    output: Path | None = args.output
    if output is not None and not output.parent.is_dir():
        raise PreflightError(f"--output={output}: there is no folder {output.parent}")
    if output is not None and output.is_dir():
        raise PreflightError(f"--output={output} is a folder: name the archive file")
    with servers_for(settings, serve=False, redis=True, labels=given) as settings:
        if output is None:
            output = backup.default_path(settings.data_dir, datetime.now(UTC))
            output.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        waiting = asyncio.run(_unwritten(settings.redis_url, Keys(settings.key_prefix)))
        if waiting:
            log.warning(
                "%d message(s) acked by the gateways are still in the Redis buffer, not yet"
                " written to PostgreSQL: they are not in this backup (is a writer running?)",
                waiting,
            )
        with progress_bar("tables dumped", None) as done:
            result = _reported(lambda: backup.dump(settings.database_url, output, done))
    print(f"{result.path}: {result.bytes:,} bytes, {result.tables} tables")


def run_restore(settings: Settings, args: argparse.Namespace, given: Mapping[str, str]) -> None:
    if not args.yes and not sys.stdin.isatty():
        raise PreflightError("restore replaces the whole database: pass --yes to confirm")
    try:
        archive = backup.read_archive(args.file)
    except backup.Refused as exc:
        raise PreflightError(str(exc)) from None
    # Objects keep their dumped owner only on the embedded server, where both sides are `gateway`.
    embedded = not settings.database_url
    with servers_for(settings, serve=False, redis=True, labels=given) as settings:
        url, keys = settings.database_url, Keys(settings.key_prefix)
        _checked(url, settings.redis_url, keys, archive)
        if not args.yes:
            _confirm(url, archive)
            _checked(url, settings.redis_url, keys, archive)  # time passed while we asked
        _reported(lambda: backup.restore(url, archive, keep_owners=embedded))
        restored = asyncio.run(_finish(url, settings.redis_url, keys))
    for name in restored.migrations_applied:
        print(f"applied {name}")
    print(
        f"restored {archive.path}: {restored.sessions} sessions, {restored.messages} messages;"
        f" cleared the Redis state of {restored.states_cleared} session(s) and"
        f" {restored.actives_cleared} cached active session(s)"
    )


def _checked(database_url: str, redis_url: str, keys: Keys, archive: backup.Archive) -> None:
    """Refuse (PreflightError, nothing changed) unless the restore is safe now."""
    try:
        asyncio.run(_check(database_url, redis_url, keys, archive))
    except backup.Refused as exc:
        raise PreflightError(str(exc)) from None


async def _check(database_url: str, redis_url: str, keys: Keys, archive: backup.Archive) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await backup.check_target(conn, archive, [m.version for m in migrate.discover()])
    finally:
        await conn.close()
    waiting = await _unwritten(redis_url, keys)
    if waiting:
        raise backup.Refused(
            f"{waiting} message(s) in the Redis buffer are not yet written to PostgreSQL: run"
            " `chat-gateway writer` until they are (it drains the buffer), then restore"
        )


def _confirm(database_url: str, archive: backup.Archive) -> None:
    question = (
        f"Replace every session and message in {masked(database_url)} with those of"
        f" {archive.path}? [y/N] "
    )
    try:
        answer = input(question)
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise PreflightError("restore not confirmed: nothing was changed")


async def _unwritten(redis_url: str, keys: Keys) -> int:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        return await backup.unwritten(redis, keys)
    finally:
        await redis.aclose()


async def _finish(database_url: str, redis_url: str, keys: Keys) -> backup.Restored:
    conn = await asyncpg.connect(database_url)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        return await backup.finish(conn, redis, keys)
    finally:
        await redis.aclose()
        await conn.close()


def _reported(step: Callable[[], T]) -> T:
    """Run a pg_dump or pg_restore step; its failure is one logged error and exit status 1."""
    try:
        return step()
    except backup.BackupError as exc:
        log.error("%s", exc)
        sys.exit(1)
