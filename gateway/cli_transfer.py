"""`chat-gateway import`: its flags, and its handler.

Hooked into the command line by gateway/cli_parser.py (`add_commands`) and gateway/cli.py
(`HANDLERS`). The work is gateway/chat_import.py's; this is flags, servers, progress and
the summary. A wrong flag is one line and exit 2 before any
server starts; a run that skipped a file or a chat, or found a difference, exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from gateway import chat_import
from gateway.chat_format import Limits
from gateway.preflight import PreflightError
from gateway.progress import progress_bar
from gateway.servers import servers_for
from gateway.settings import Settings
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
    """Add `import` with `command(name, summary, description, epilog)`, the
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


HANDLERS: dict[str, Callable[[Settings, argparse.Namespace, Labels], None]] = {
    "import": _import,
}
