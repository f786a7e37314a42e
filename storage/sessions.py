"""Session queries: find or create a port's active session, rotate it, read one.

PostgreSQL is the source of truth for which session is active: the partial unique index
`sessions_one_active` makes racing creators meet on one row. Redis only caches the answer
(see `storage/buffer.py`).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.db import Connection
from storage.ids import new_id

COLUMNS = (
    "id, user_id, port, ide_type, title, status, pinned, message_count, last_message_at,"
    " created_at, updated_at, auto_title, preview, preview_role"
)


@dataclass(frozen=True, slots=True)
class Session:
    id: uuid.UUID
    user_id: str
    port: int
    ide_type: str
    title: str | None
    status: str
    pinned: bool
    message_count: int
    last_message_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # The first line of its first user message (sql/0004), set by the writer; None until then.
    auto_title: str | None = None
    # The first words of its last message and that message's role (sql/0006, `preview_of`),
    # set by the writer; None while it has none.
    preview: str | None = None
    preview_role: str | None = None


def session_from(record: asyncpg.Record) -> Session:
    return Session(**dict(record))


PREVIEW_CHARS = 120
# Markdown's marks that would show as noise in a one-line preview: code fences (with their
# language), backticks, bold and strike marks, heading and quote marks at a line's start.
_FENCES = re.compile(r"`{3,}[\w+#.-]*")
_LINE_MARKS = re.compile(r"^(?:#+[ \t]|>[ \t]?)", re.MULTILINE)
# The preview is made from this many characters of the message: enough for 120 once marks
# and white space are gone, and the cost (about 40 ns a character) bounded.
_PREVIEW_SOURCE_CHARS = 300


def preview_of(content: str) -> str | None:
    """A session's preview of its last message: its first words, markdown's noisy marks
    dropped and white space collapsed, at most `PREVIEW_CHARS` characters (None if nothing
    is left). The writer sets it; sql/0006's `session_preview` is the same rule in SQL, for
    the backfill (tests/test_sessions.py holds them to one another)."""
    # Each regular expression only where its mark is: Python's take 10 µs on 300 characters
    # even where nothing matches; the `in` tests and replaces, under one.
    text = content[:_PREVIEW_SOURCE_CHARS]
    if "```" in text:
        text = _FENCES.sub("", text)
    text = text.replace("`", "").replace("**", "").replace("~~", "")
    if "#" in text or ">" in text:
        text = _LINE_MARKS.sub("", text)
    return " ".join(text.split())[:PREVIEW_CHARS].rstrip() or None


async def find_or_create_active(
    conn: Connection, user_id: str, port: int, ide_type: str
) -> tuple[Session, bool]:
    """The user's active session on the port, created if there is none; True if created.

    Safe under races: a concurrent creator's insert loses on the unique index and reads the
    winner's row instead.
    """
    while True:
        created = await conn.fetchrow(
            f"INSERT INTO sessions (id, user_id, port, ide_type) VALUES ($1, $2, $3, $4)"
            f" ON CONFLICT (user_id, port) WHERE status = 'active' DO NOTHING"
            f" RETURNING {COLUMNS}",
            new_id(),
            user_id,
            port,
            ide_type,
        )
        if created is not None:
            return session_from(created), True
        found = await conn.fetchrow(
            f"SELECT {COLUMNS} FROM sessions"
            f" WHERE user_id = $1 AND port = $2 AND status = 'active'",
            user_id,
            port,
        )
        if found is not None:
            return session_from(found), False
        # The active session was archived between our insert and select: try again.


async def rotate(
    conn: Connection, user_id: str, port: int, ide_type: str, title: str | None
) -> tuple[Session | None, Session]:
    """Archive the port's active session (if any) and create a new active one, atomically."""
    while True:
        try:
            async with conn.transaction():
                old = await conn.fetchrow(
                    f"UPDATE sessions SET status = 'archived', archived_at = now(),"
                    f" updated_at = now()"
                    f" WHERE user_id = $1 AND port = $2 AND status = 'active'"
                    f" RETURNING {COLUMNS}",
                    user_id,
                    port,
                )
                new = await conn.fetchrow(
                    f"INSERT INTO sessions (id, user_id, port, ide_type, title)"
                    f" VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}",
                    new_id(),
                    user_id,
                    port,
                    ide_type,
                    title,
                )
        except asyncpg.UniqueViolationError:
            # A concurrent creator committed an active session after our UPDATE's snapshot.
            continue
        assert new is not None
        return (session_from(old) if old else None), session_from(new)


@dataclass(frozen=True, slots=True)
class Change:
    """A PATCH: fields left as None stay as they are (`clear_title` sets the title to null)."""

    title: str | None = None
    clear_title: bool = False
    pinned: bool | None = None
    status: str | None = None  # "active" (unarchive) or "archived"


async def update(
    conn: Connection, user_id: str, session_id: uuid.UUID, change: Change
) -> tuple[Session, Session | None] | None:
    """Apply the change; None if the session is not the user's (or deleted). Unarchiving
    makes the session its port's active one, archiving the one that was: that one is
    returned second."""
    while True:
        try:
            async with conn.transaction():
                current = await conn.fetchrow(
                    "SELECT port, status FROM sessions"
                    " WHERE id = $1 AND user_id = $2 AND status <> 'deleted' FOR UPDATE",
                    session_id,
                    user_id,
                )
                if current is None:
                    return None
                displaced = None
                if change.status == "active" and current["status"] != "active":
                    displaced = await conn.fetchrow(
                        f"UPDATE sessions SET status = 'archived', archived_at = now(),"
                        f" updated_at = now()"
                        f" WHERE user_id = $1 AND port = $2 AND status = 'active'"
                        f" RETURNING {COLUMNS}",
                        user_id,
                        current["port"],
                    )
                record = await conn.fetchrow(
                    f"UPDATE sessions SET"
                    f" title = CASE WHEN $3 THEN NULL ELSE coalesce($4, title) END,"
                    f" pinned = coalesce($5, pinned),"
                    f" status = coalesce($6, status),"
                    f" archived_at = CASE WHEN $6 = 'archived' AND status <> 'archived'"
                    f"   THEN now() WHEN $6 = 'active' THEN NULL ELSE archived_at END,"
                    f" updated_at = now()"
                    f" WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}",
                    session_id,
                    user_id,
                    change.clear_title,
                    change.title,
                    change.pinned,
                    change.status,
                )
        except asyncpg.UniqueViolationError:
            continue  # a concurrent creator made another session active: try again
        assert record is not None
        return session_from(record), (session_from(displaced) if displaced else None)


async def soft_delete(conn: Connection, user_id: str, session_id: uuid.UUID) -> Session | None:
    """Mark the session deleted (its messages stay, unreachable); None if not the user's."""
    record = await conn.fetchrow(
        f"UPDATE sessions SET status = 'deleted', deleted_at = now(), updated_at = now()"
        f" WHERE id = $1 AND user_id = $2 AND status <> 'deleted' RETURNING {COLUMNS}",
        session_id,
        user_id,
    )
    return session_from(record) if record else None


async def find_active(conn: Connection, user_id: str, port: int) -> Session | None:
    """The user's active session on the port, if there is one (never creates one)."""
    record = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM sessions WHERE user_id = $1 AND port = $2 AND status = 'active'",
        user_id,
        port,
    )
    return session_from(record) if record else None


async def get_session(conn: Connection, user_id: str, session_id: uuid.UUID) -> Session | None:
    """The session if it exists, belongs to the user and is not deleted."""
    record = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM sessions WHERE id = $1 AND user_id = $2 AND status <> 'deleted'",
        session_id,
        user_id,
    )
    return session_from(record) if record else None


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What the ingest script must know of a stored message to dedup against it."""

    seq: int
    id: uuid.UUID
    dedup_key: uuid.UUID
    content: str
    created_at: datetime


async def stored_keys(conn: Connection, session_id: uuid.UUID) -> list[StoredKey]:
    """Every committed message's dedup state, to reload a session's Redis state."""
    records = await conn.fetch(
        "SELECT seq, id, dedup_key, content, created_at FROM messages WHERE session_id = $1",
        session_id,
    )
    return [StoredKey(**dict(r)) for r in records]


@dataclass(frozen=True, slots=True)
class PortSummary:
    port: int
    ide_type: str
    active: Session | None
    last_activity_at: datetime
    label: str | None = None  # the user's name for the port (sql/0007); None: none given


async def user_ports(conn: Connection, user_id: str) -> list[PortSummary]:
    """The ports the user has sessions on (not deleted), each with its active session and
    label."""
    records = await conn.fetch(
        f"SELECT DISTINCT ON (port) {COLUMNS}, activity_at FROM sessions"
        " WHERE user_id = $1 AND status <> 'deleted'"
        " ORDER BY port, (status = 'active') DESC, activity_at DESC",
        user_id,
    )
    found = await conn.fetch("SELECT port, label FROM port_labels WHERE user_id = $1", user_id)
    labels: dict[int, str] = {r["port"]: r["label"] for r in found}
    out = []
    for record in records:
        values = dict(record)
        activity = values.pop("activity_at")
        session = Session(**values)
        active = session if session.status == "active" else None
        out.append(
            PortSummary(session.port, session.ide_type, active, activity, labels.get(session.port))
        )
    return out


async def set_port_label(conn: Connection, user_id: str, port: int, label: str | None) -> None:
    """Give the user's port a label, or take it away (None)."""
    if label is None:
        await conn.execute(
            "DELETE FROM port_labels WHERE user_id = $1 AND port = $2", user_id, port
        )
        return
    await conn.execute(
        "INSERT INTO port_labels (user_id, port, label) VALUES ($1, $2, $3)"
        " ON CONFLICT (user_id, port) DO UPDATE SET label = excluded.label, updated_at = now()",
        user_id,
        port,
        label,
    )


async def list_sessions(
    conn: Connection,
    user_id: str,
    *,
    port: int | None,
    status: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    pinned: bool | None = None,
    title_contains: str | None = None,
) -> tuple[list[Session], tuple[datetime, uuid.UUID] | None]:
    """The user's sessions, newest activity first, keyset-paginated on (activity_at, id);
    returns the page and the key to continue after (None on the last page)."""
    where = ["user_id = $1", "status <> 'deleted'"]
    args: list[object] = [user_id]
    if port is not None:
        args.append(port)
        where.append(f"port = ${len(args)}")
    if status is not None:
        args.append(status)
        where.append(f"status = ${len(args)}")
    if pinned is not None:
        args.append(pinned)
        where.append(f"pinned = ${len(args)}")
    if title_contains:
        # A literal substring: the LIKE wildcards in the user's text are escaped.
        escaped = title_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        args.append(f"%{escaped}%")
        where.append(f"title ILIKE ${len(args)}")
    if after is not None:
        args += [after[0], after[1]]
        where.append(f"(activity_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    records = await conn.fetch(
        f"SELECT {COLUMNS}, activity_at FROM sessions WHERE {' AND '.join(where)}"
        f" ORDER BY activity_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )
    page = []
    for record in records[:limit]:
        values = dict(record)
        values.pop("activity_at")
        page.append(Session(**values))
    next_key = None
    if len(records) > limit:
        last = records[limit - 1]
        next_key = (last["activity_at"], last["id"])
    return page, next_key


async def archive_inactive(conn: Connection, cutoff: datetime, limit: int) -> list[Session]:
    """Archive up to `limit` active, unpinned sessions with no activity since `cutoff`;
    returns them. Short transactions: call it until it returns nothing."""
    records = await conn.fetch(
        f"UPDATE sessions SET status = 'archived', archived_at = now(), updated_at = now()"
        f" WHERE id IN (SELECT id FROM sessions WHERE status = 'active' AND NOT pinned"
        f" AND activity_at < $1 ORDER BY activity_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
        f" RETURNING {COLUMNS}",
        cutoff,
        limit,
    )
    return [session_from(r) for r in records]


_PURGE = """
WITH doomed AS (
    SELECT id FROM sessions WHERE status = 'deleted' AND deleted_at < $1
     ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED
), search_rows AS (
    DELETE FROM message_search s USING doomed d WHERE s.session_id = d.id
), message_rows AS (
    DELETE FROM messages m USING doomed d WHERE m.session_id = d.id RETURNING 1
), session_rows AS (
    DELETE FROM sessions s USING doomed d WHERE s.id = d.id RETURNING 1
)
SELECT (SELECT count(*) FROM session_rows) AS sessions,
       (SELECT count(*) FROM message_rows) AS messages
"""


async def purge_deleted(conn: Connection, cutoff: datetime, limit: int) -> tuple[int, int]:
    """Remove up to `limit` sessions soft-deleted before `cutoff`, with their messages and
    search rows, in one statement; returns (sessions, messages) removed. Call it until it
    removes no session: short transactions beside live traffic (the partial index
    `sessions_deleted` finds them). The counters need nothing: a deleted session's messages
    were taken off its user's when it was deleted."""
    record = await conn.fetchrow(_PURGE, cutoff, limit)
    assert record is not None
    return int(record["sessions"]), int(record["messages"])
