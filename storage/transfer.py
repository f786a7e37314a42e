"""Chats in bulk: the import's writes (COPY, one transaction a chat) and the export's reads of
which sessions to write.

**Keys.** An imported chat's session id is `imported_session_id(user, chat id)`, a uuid5 over
a fixed namespace: the same chat imported again by the same user names the same session, and
two users importing one file get a session each. A message is keyed by its position in the
chat: the n-th message that is not blank is seq n. So a second run of the same file adds
nothing, and a run after messages were appended to a file adds exactly those: the rows past
the session's highest seq. What this cannot see is a file whose history changed in the middle
(a message edited, inserted or removed before the last stored one): the rows are not compared
one by one at import (that is `--verify`'s job, gateway/chat_import.py), but the last stored
message is, so a file whose messages shifted is refused, not appended to at a wrong position.

**One transaction a chat**, so a chat is in whole or not at all: an advisory lock on the
session id (two imports of one chat queue, the second finds it imported), the session's state,
the rows by COPY straight into `messages` (no staging table: under that lock no other writer
can hold rows past the session's highest seq, see `write_chat`), their search index, and the
session's row and counters last, so the `user_stats` row the live writer also updates is
locked for the end of the transaction only.

**Live ingest afterwards.** Imported sessions are archived: no live message goes to them
until one is unarchived, and then the ingest script finds no seq state for it in Redis and
loads it from PostgreSQL (storage/buffer.py, `_load_state`), highest seq included. Appending
to a session that was live deletes the state Redis may still hold for it after the commit,
and is refused while the session is active or has rows the writers have not committed yet.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import asyncpg
import redis.asyncio as aioredis

from storage import search
from storage.db import Connection
from storage.dedup import dedup_key
from storage.ids import new_id
from storage.keys import Keys
from storage.rows import COLUMNS, CONTENT, CREATED_AT, ROLE, SEQ, SESSION_ID
from storage.sessions import COLUMNS as SESSION_COLUMNS
from storage.sessions import Session, preview_of, session_from
from storage.writer import COUNTERS, USER_MESSAGES

SOURCE = "import"  # the `source` of every imported message
# Fixed for good: another namespace would import every chat again as new sessions.
NAMESPACE = uuid.UUID("5b0c2f0e-9d64-5d1f-8f3a-2b7e61c4a9d0")

Row = tuple[Any, ...]  # a `messages` row in storage.rows.COLUMNS order


def imported_session_id(user_id: str, chat_id: str) -> uuid.UUID:
    """The session a chat of this id imported by this user is, in every run."""
    return uuid.uuid5(NAMESPACE, f"{user_id}\0{chat_id}")


@dataclass(frozen=True, slots=True)
class ImportedSession:
    id: uuid.UUID
    user_id: str
    port: int
    ide_type: str
    title: str | None
    pinned: bool
    created_at: datetime


class ImportedMessage(NamedTuple):
    role: str
    content: str
    content_type: str
    client_id: str | None
    client_ts: datetime | None
    created_at: datetime
    edited_at: datetime | None
    metadata_json: str


class Refused(Exception):
    """The chat was left as it is in the database; the message says why."""


class Outcome(StrEnum):
    CREATED = "created"
    APPENDED = "appended"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Written:
    outcome: Outcome
    added: int
    stored_before: int  # the session's highest seq before this run


def message_rows(
    session: ImportedSession, messages: Sequence[ImportedMessage], start: int = 0
) -> list[Row]:
    """The chat's messages from position `start` on as rows, seq `start` + 1, ... in order
    (a run that finds the first `start` stored builds no row for them).

    Dedup keys are the protocol's (storage/dedup.py), so a live resend of an imported
    message after an unarchive is a duplicate, not a second copy; but they must be unique in
    a session, and a chat may say "ok" twice: a fingerprint seen before gets a key of its own
    from its occurrence, so no message is dropped. A client id seen twice is a broken file.
    """
    rows: list[Row] = []
    seen: dict[str, int] = {}  # dedup key -> seq: of every message, the stored ones too
    for seq, m in enumerate(messages, start=1):
        key = dedup_key(session.port, m.role, m.content, m.client_ts, m.client_id)
        if key in seen:
            if m.client_id is not None:
                raise Refused(
                    f"message id {m.client_id!r} is given twice (messages {seen[key]} and {seq})"
                )
            repeat = 1
            while (again := _repeat_key(key, repeat)) in seen:
                repeat += 1
            key = again
        seen[key] = seq
        if seq <= start:
            continue
        rows.append(
            (
                session.id,
                seq,
                new_id(int(m.created_at.timestamp() * 1000)),
                session.user_id,
                session.port,
                m.client_id,
                key,
                m.role,
                m.content,
                m.content_type,
                SOURCE,
                m.client_ts,
                m.created_at,
                m.edited_at,
                m.metadata_json,
            )
        )
    return rows


def _repeat_key(key: str, repeat: int) -> str:
    return hashlib.blake2b(f"import\0{repeat}\0{key}".encode(), digest_size=16).hexdigest()


RowsWriter = Callable[[Connection, list[Row]], Awaitable[None]]


async def copy_rows(conn: Connection, rows: list[Row]) -> None:
    """The rows into `messages` with one COPY."""
    await conn.copy_records_to_table("messages", records=rows, columns=COLUMNS)


_LOCK = "SELECT pg_advisory_xact_lock($1)"
_STATE = """
SELECT s.user_id, s.port, s.status, m.seq, m.role, m.content
  FROM sessions s
  LEFT JOIN LATERAL (SELECT seq, role, content FROM messages WHERE session_id = s.id
                      ORDER BY seq DESC LIMIT 1) m ON true
 WHERE s.id = $1
   FOR UPDATE OF s
"""
# A new session, archived, with its counters and names as the writer would have set them.
_CREATE = """
INSERT INTO sessions (id, user_id, port, ide_type, title, status, pinned, message_count,
                      last_message_at, activity_at, created_at, updated_at, archived_at,
                      auto_title, preview, preview_role, preview_seq)
VALUES ($1, $2, $3, $4, $5, 'archived', $6, $7, $8, greatest($9::timestamptz, $8), $9, now(), now(),
        session_first_user_line($1), $10, $11, $12)
"""


async def write_chat(
    conn: Connection,
    redis: aioredis.Redis,
    keys: Keys,
    session: ImportedSession,
    messages: Sequence[ImportedMessage],
    *,
    dry_run: bool = False,
    write_rows: RowsWriter = copy_rows,
) -> Written:
    """Import the chat's messages not stored yet, in one transaction (rolled back with `dry_run`,
    which so counts exactly what a real run would add). Raises Refused when the chat must be
    left alone: deleted, active, on another port, its last stored message not the file's,
    or rows of the session still in the Redis buffer. `write_rows` is how the rows go in
    (bench/ passes one INSERT per row, the baseline)."""
    tx = conn.transaction()
    await tx.start()
    try:
        written = await _write(conn, redis, keys, session, messages, write_rows)
    except BaseException:
        await tx.rollback()
        raise
    if dry_run:
        await tx.rollback()
        return written
    await tx.commit()
    if written.outcome is Outcome.APPENDED:
        # A seq counter Redis still holds from when the session was live is now behind.
        await redis.delete(keys.session_state(str(session.id)))
    return written


async def _write(
    conn: Connection,
    redis: aioredis.Redis,
    keys: Keys,
    session: ImportedSession,
    messages: Sequence[ImportedMessage],
    write_rows: RowsWriter,
) -> Written:
    await conn.execute(_LOCK, int.from_bytes(session.id.bytes[:8], "big", signed=True))
    state = await conn.fetchrow(_STATE, session.id)
    stored = 0
    if state is not None:
        stored = state["seq"] or 0
        if stored >= len(messages):
            return Written(Outcome.UNCHANGED, 0, stored)  # --verify tells whether they agree
        if state["status"] == "deleted":
            raise Refused("its session was deleted in the gateway")
        if state["port"] != session.port:
            raise Refused(f"its session is on port {state['port']}, the file says {session.port}")
        last = messages[stored - 1] if stored else None
        if last is not None and (last.role, last.content) != (state["role"], state["content"]):
            raise Refused(
                f"message {stored} differs from the one stored: the file's history changed"
                " (run with --verify to see where)"
            )
        if state["status"] == "active":
            raise Refused("its session is active: archive it to import more into it")
        sid = str(session.id)
        if await redis.exists(keys.pending(sid), keys.pending_edits(sid)):
            raise Refused("its session has messages not written yet: run again in a moment")
    tail = message_rows(session, messages, stored)
    if tail:
        await write_rows(conn, tail)
        await search.index_keys(conn, [(str(r[SESSION_ID]), r[SEQ]) for r in tail])
    last_row = tail[-1] if tail else None
    last_at = max(r[CREATED_AT] for r in tail) if tail else None
    if state is None:
        await conn.execute(
            _CREATE,
            session.id,
            session.user_id,
            session.port,
            session.ide_type,
            session.title,
            session.pinned,
            len(tail),
            last_at,
            session.created_at,
            preview_of(last_row[CONTENT]) if last_row else None,
            last_row[ROLE] if last_row else None,
            last_row[SEQ] if last_row else None,
        )
    else:
        assert last_row is not None and last_at is not None
        await conn.execute(
            COUNTERS,
            [session.id],
            [len(tail)],
            [last_at],
            [last_row[SEQ]],
            [preview_of(last_row[CONTENT])],
            [last_row[ROLE]],
        )
    if tail:
        await conn.execute(USER_MESSAGES, [session.user_id], [len(tail)])
    outcome = Outcome.CREATED if state is None else Outcome.APPENDED
    return Written(outcome, len(tail), stored)


async def activate(
    conn: Connection, user_id: str, port: int, session_id: uuid.UUID
) -> Session | None:
    """Make an archived session its port's active one if the port has none; the session,
    or None when the port had one (or got one meanwhile)."""
    try:
        record = await conn.fetchrow(
            f"UPDATE sessions SET status = 'active', archived_at = NULL, updated_at = now()"
            f" WHERE id = $1 AND user_id = $2 AND status = 'archived'"
            f" AND NOT EXISTS (SELECT 1 FROM sessions"
            f" WHERE user_id = $2 AND port = $3 AND status = 'active')"
            f" RETURNING {SESSION_COLUMNS}",
            session_id,
            user_id,
            port,
        )
    except asyncpg.UniqueViolationError:
        return None  # an active session was created between the check and the update
    return session_from(record) if record else None


async def session_by_id(conn: Connection, session_id: uuid.UUID) -> Session | None:
    """Any user's session (not deleted): the operator's export by id."""
    record = await conn.fetchrow(
        f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND status <> 'deleted'",
        session_id,
    )
    return session_from(record) if record else None


async def port_sessions(conn: Connection, user_id: str, port: int) -> list[Session]:
    """The user's sessions on the port (not deleted), oldest first: a port's export."""
    records = await conn.fetch(
        f"SELECT {SESSION_COLUMNS} FROM sessions"
        " WHERE user_id = $1 AND port = $2 AND status <> 'deleted' ORDER BY created_at, id",
        user_id,
        port,
    )
    return [session_from(r) for r in records]
