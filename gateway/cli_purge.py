"""`chat-gateway purge --deleted-older-than 30d`: remove soft-deleted sessions for good, with
their messages and search rows, a batch of sessions per transaction (storage/sessions.py
`purge_deleted`). Soft deletion hides a session at once; this is the retention that frees
the space, once whatever grace period the operator keeps has passed."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import asyncpg

from gateway.preflight import check_at_least_one, duration_flag
from gateway.progress import progress_bar
from gateway.servers import servers_for
from gateway.settings import Settings
from storage.sessions import purge_deleted

Command = Callable[..., argparse.ArgumentParser]


def add_parser(command: Command, epilog: str) -> None:
    """The command's grammar, through cli_parser's `command` (its shared flags)."""
    parser = command(
        "purge",
        "remove sessions deleted a while ago, with their messages, in batches",
        "Remove for good every session deleted (soft-deleted: hidden from every read) longer"
        " ago than --deleted-older-than, with its messages and search rows, a batch of"
        " sessions per transaction. Safe while gateways run. Nothing that is not deleted is"
        " touched, and the counters need no change.",
        epilog,
    )
    parser.add_argument(
        "--deleted-older-than", required=True, metavar="AGE",
        help="how long ago a session must have been deleted, like 30d or 12h",
    )  # fmt: skip
    parser.add_argument(
        "--batch", type=int, default=500, help="sessions per transaction (default 500)"
    )


def run(settings: Settings, args: argparse.Namespace, given: Mapping[str, str]) -> None:
    age = duration_flag("--deleted-older-than", args.deleted_older_than)
    check_at_least_one("--batch", args.batch)
    with servers_for(settings, serve=False, redis=False, labels=given) as settings:
        sessions, messages = asyncio.run(_purge(settings.database_url, age, args.batch))
    print(
        f"purged {sessions} session(s) and {messages} message(s) deleted more than"
        f" {args.deleted_older_than} ago"
    )


async def _purge(dsn: str, age_s: int, batch: int) -> tuple[int, int]:
    cutoff = datetime.now(UTC) - timedelta(seconds=age_s)
    conn = await asyncpg.connect(dsn)
    sessions = messages = 0
    try:
        # How many will go is known only as they go (sessions are deleted meanwhile).
        with progress_bar("sessions purged", None) as done:
            while True:
                purged, rows = await purge_deleted(conn, cutoff, batch)
                if not purged:
                    return sessions, messages
                sessions, messages = sessions + purged, messages + rows
                done(sessions)
    finally:
        await conn.close()
