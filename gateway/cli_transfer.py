"""`chat-gateway import` and `chat-gateway export`: their flags, and their handlers.

Hooked into the command line by gateway/cli_parser.py (`add_commands`) and gateway/cli.py
(`HANDLERS`). The work is gateway/chat_import.py's and gateway/chat_export.py's; this is
flags, servers, progress and the summary. A wrong flag is one line and exit 2 before any
server starts; a run that skipped a file or a chat, or found a difference, exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import asyncpg
import redis.asyncio as aioredis

from gateway import chat_import
from gateway.chat_export import FORMATS, Format, export
from gateway.chat_format import Limits
from gateway.preflight import PreflightError
from gateway.progress import progress_bar
from gateway.servers import servers_for
from gateway.settings import Settings
from storage import sessions, transfer
from storage.keys import Keys

Labels = Mapping[str, str]
_POOL_SIZE = chat_import.JOBS + 1  # the jobs' connections and one for the rest

_IMPORT_EPILOG = """\
formats (docs/import-export.md has a sample of each):
  *.json            a chat {"id", "title", "user", "port", "messages": [{"role", "content",
                    "timestamp", ...}]}, an array of them, or ChatGPT's conversations.json
  *.jsonl, *.ndjson a transcript: one message a line, after an optional {"type": "chat", ...}

idempotent:
  A chat is its session, whatever the run: a second run adds nothing, and a run after messages
  were appended to a file adds just those. A file whose earlier messages changed is refused
  and reported; --verify says where it differs."""


def add_commands(command: Callable[..., argparse.ArgumentParser], maintenance_epilog: str) -> None:
    """Add `import` and `export` with `command(name, summary, description, epilog)`, the
    parser's own factory (shared options included)."""
    imp = command(
        "import",
        "load chat files (JSON, JSON Lines, ChatGPT's export) as archived sessions",
        "Load chats from a file or a folder of them into sessions and messages: each chat"
        " becomes an archived session with its messages in their order and with their times,"
        " in one transaction a chat, written with COPY. Files and chats that cannot be read or"
        " break a rule are reported and skipped (exit 1). Messages go in searchable.",
        _IMPORT_EPILOG + "\n\n" + maintenance_epilog,
    )
    imp.add_argument("path", metavar="PATH", nargs="?", help="a chat file, or a folder of them")
    imp.add_argument(
        "--user",
        help="import every chat as this user (default: the file's `user`, else the local"
        " user, GATEWAY_LOCAL_USER)",
    )
    imp.add_argument(
        "--port", type=int, default=chat_import.DEFAULT_PORT,
        help=f"the port of chats whose file names none (default {chat_import.DEFAULT_PORT})",
    )  # fmt: skip
    imp.add_argument(
        "--active", action="store_true",
        help="make each port's newest imported chat its active session, where the port has"
        " none (default: every imported session is archived)",
    )  # fmt: skip
    imp.add_argument(
        "--dry-run", action="store_true",
        help="do everything but commit: say what a run would add, write nothing",
    )  # fmt: skip
    imp.add_argument(
        "--verify", action="store_true",
        help="import nothing: compare the files with the database and report each difference"
        " (exit 1 if any)",
    )  # fmt: skip

    exp = command(
        "export",
        "write a session, or a port's sessions, as Markdown, JSON or an LLM message list",
        "Write one session (--session) or all of a user's sessions on a port (--port), oldest"
        " first, to stdout or --output: a Markdown transcript, the JSON chat format that"
        " `import` reads, or an LLM message list [{role, content}] (JSON Lines of"
        ' {"messages": [...]} for a port). Streamed: a session of any length is read a page'
        " at a time.",
        maintenance_epilog,
    )
    exp.add_argument("--session", metavar="ID", help="the session's id (any user's)")
    exp.add_argument("--port", type=int, help="every session of --user on this port")
    exp.add_argument("--user", help="whose port, with --port (default: the local user)")
    exp.add_argument(
        "--format", choices=FORMATS, default="markdown", help="what to write (default markdown)"
    )
    exp.add_argument(
        "--output", metavar="FILE", type=Path,
        help="write here (replaced whole once complete) instead of to stdout",
    )  # fmt: skip


# --- import -------------------------------------------------------------------------------


def _import(settings: Settings, args: argparse.Namespace, given: Labels) -> None:
    if args.path is None:
        raise PreflightError("import needs PATH: a chat file or a folder of them")
    path = Path(args.path)
    if not path.exists():
        raise PreflightError(f"PATH {path}: there is no such file or folder")
    if not 1 <= args.port <= 65535:
        raise PreflightError(f"--port={args.port} must be from 1 to 65535")
    if args.verify and (args.dry_run or args.active):
        raise PreflightError("--verify only compares: it goes with neither --dry-run nor --active")
    if args.user is not None and (not args.user.strip() or "\0" in args.user):
        raise PreflightError("--user must name a user")
    try:
        files, others = chat_import.chat_files(path)
    except OSError as exc:
        raise PreflightError(f"PATH {path}: {exc}") from None
    if not files:
        raise PreflightError(f"PATH {path} holds no .json, .jsonl or .ndjson file")
    options = chat_import.Options(
        default_user=settings.local_user,
        user=args.user,
        port=args.port,
        dry_run=args.dry_run,
        active=args.active,
        limits=Limits(settings.max_content_bytes, settings.max_metadata_bytes),
    )
    with servers_for(settings, serve=False, labels=given) as settings:
        summary = asyncio.run(_run_import(settings, files, options, verify=args.verify))
    summary.other_files = others
    for line in summary.lines(dry_run=args.dry_run, verify=args.verify):
        print(line)
    if not summary.clean:
        sys.exit(1)


async def _run_import(
    settings: Settings, files: list[Path], options: chat_import.Options, *, verify: bool
) -> chat_import.Summary:
    def report(line: str) -> None:
        print(line, file=sys.stderr)

    async with _connections(settings) as (pool, redis, keys):
        what = "chats compared" if verify else "chats imported"
        with progress_bar(what, len(files)) as done:
            if verify:
                return await chat_import.verify_files(
                    pool, redis, keys, files, options, report, done
                )
            return await chat_import.import_files(pool, redis, keys, files, options, report, done)


@contextlib.asynccontextmanager
async def _connections(
    settings: Settings,
) -> AsyncIterator[tuple[asyncpg.Pool, aioredis.Redis, Keys]]:
    # No statement timeout: one chat's COPY may rightly take long.
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=_POOL_SIZE)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        yield pool, redis, Keys(settings.key_prefix)
    finally:
        await redis.aclose()
        await pool.close()


# --- export -------------------------------------------------------------------------------


def _export(settings: Settings, args: argparse.Namespace, given: Labels) -> None:
    if (args.session is None) == (args.port is None):
        raise PreflightError("export needs one of --session ID or --port P")
    session_id = None
    if args.session is not None:
        try:
            session_id = uuid.UUID(args.session)
        except ValueError:
            raise PreflightError(f"--session={args.session!r} is not a session id") from None
        if args.user is not None:
            raise PreflightError("--user goes with --port: --session names a session of anyone")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise PreflightError(f"--port={args.port} must be from 1 to 65535")
    output: Path | None = args.output
    if output is not None and not output.parent.is_dir():
        raise PreflightError(f"--output={output}: there is no folder {output.parent}")
    user = args.user or settings.local_user
    with servers_for(settings, serve=False, labels=given) as settings:
        found = asyncio.run(_run_export(settings, output, args.format, session_id, user, args.port))
    if not found:
        what = f"session {session_id}" if session_id else f"session of {user} on port {args.port}"
        print(f"chat-gateway: error: there is no {what}", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def _destination(output: Path | None) -> Iterator[BinaryIO]:
    """stdout, or a file written beside `output` and renamed onto it once complete (a
    failed export leaves whatever was there before)."""
    if output is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    partial = output.with_name(f".{output.name}.partial")
    try:
        with partial.open("wb") as stream:
            yield stream
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


async def _run_export(
    settings: Settings,
    output: Path | None,
    fmt: Format,
    session_id: uuid.UUID | None,
    user: str,
    port: int | None,
) -> bool:
    """Write the export; False (and nothing written) when there is nothing to export."""
    async with _connections(settings) as (pool, redis, keys):
        async with pool.acquire() as conn:
            if session_id is not None:
                one = await transfer.session_by_id(conn, session_id)
                chosen: list[sessions.Session] = [one] if one else []
            else:
                assert port is not None
                chosen = await transfer.port_sessions(conn, user, port)
        if not chosen:
            return False
        with _destination(output) as stream:
            async for piece in export(pool, redis, keys, chosen, fmt, several=port is not None):
                stream.write(piece)
    return True


HANDLERS: dict[str, Callable[[Settings, argparse.Namespace, Labels], None]] = {
    "import": _import,
    "export": _export,
}
