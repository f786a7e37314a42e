"""Counters: read in constant time, recomputed on demand to find (and repair) drift.

The counters are `sessions.message_count` (kept by the writer), `user_stats` (sessions by
a trigger, messages by the writer; see sql/0002_stats.sql) and `global_stats`, the totals
over every user, which follow `user_stats` by a trigger (sql/0008_global_stats.sql). `verify`
recomputes them from the rows, in chunks of sessions so a large table shows progress and
holds no long lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from storage.db import Connection

_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Stats:
    sessions_active: int
    sessions_archived: int
    messages: int


async def read(conn: Connection, user_id: str) -> Stats:
    """The user's counters: one primary-key lookup, whatever the table sizes."""
    record = await conn.fetchrow(
        "SELECT sessions_active, sessions_archived, messages FROM user_stats WHERE user_id = $1",
        user_id,
    )
    return Stats(**dict(record)) if record else Stats(0, 0, 0)


@dataclass(frozen=True, slots=True)
class Totals:
    """Everyone's counters: users (who have had a session), sessions, messages."""

    users: int
    sessions_active: int
    sessions_archived: int
    messages: int


_TOTALS = (
    "SELECT coalesce(sum(users), 0) AS users,"
    " coalesce(sum(sessions_active), 0) AS sessions_active,"
    " coalesce(sum(sessions_archived), 0) AS sessions_archived,"
    " coalesce(sum(messages), 0) AS messages FROM global_stats"
)


async def totals(conn: Connection) -> Totals:
    """The global totals: a sum over the 16 rows of `global_stats`, whatever the table sizes."""
    record = await conn.fetchrow(_TOTALS)
    assert record is not None
    return Totals(**{k: int(v) for k, v in dict(record).items()})


@dataclass(slots=True)
class Drift:
    """What `verify` found wrong (and repaired, with fix=True)."""

    sessions_checked: int = 0
    session_counts: list[tuple[str, int, int]] = field(default_factory=list)  # id, kept, real
    user_counts: list[tuple[str, str, int, int]] = field(default_factory=list)  # user, what, ..
    total_counts: list[tuple[str, int, int]] = field(default_factory=list)  # what, kept, real

    @property
    def clean(self) -> bool:
        return not self.session_counts and not self.user_counts and not self.total_counts


async def verify(
    conn: Connection, *, fix: bool, progress: Callable[[int, int], None] | None = None
) -> Drift:
    """Recount every session's messages and every user's counters; report the differences
    and, with `fix`, overwrite the counters with the real counts."""
    drift = Drift()
    total = await conn.fetchval("SELECT count(*) FROM sessions")
    last_id = None
    while True:
        ids = await conn.fetch(
            "SELECT id FROM sessions WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
            last_id,
            _CHUNK,
        )
        if not ids:
            break
        last_id = ids[-1]["id"]
        rows = await conn.fetch(
            "SELECT s.id, s.message_count AS kept,"
            " (SELECT count(*) FROM messages m WHERE m.session_id = s.id) AS real"
            " FROM sessions s WHERE s.id = ANY($1::uuid[])",
            [r["id"] for r in ids],
        )
        wrong = [(str(r["id"]), r["kept"], r["real"]) for r in rows if r["kept"] != r["real"]]
        drift.session_counts += wrong
        if fix and wrong:
            await conn.execute(
                "UPDATE sessions s SET message_count = w.real"
                " FROM unnest($1::uuid[], $2::bigint[]) AS w(id, real) WHERE s.id = w.id",
                [w[0] for w in wrong],
                [w[2] for w in wrong],
            )
        drift.sessions_checked += len(ids)
        if progress:
            progress(drift.sessions_checked, total)
    # Messages from the rows themselves, not from the (possibly drifted) session counters.
    real_users = await conn.fetch(
        "SELECT s.user_id,"
        " count(*) FILTER (WHERE s.status = 'active') AS sessions_active,"
        " count(*) FILTER (WHERE s.status = 'archived') AS sessions_archived,"
        " coalesce(sum(c.n) FILTER (WHERE s.status <> 'deleted'), 0) AS messages"
        " FROM sessions s LEFT JOIN (SELECT session_id, count(*) AS n FROM messages"
        " GROUP BY session_id) c ON c.session_id = s.id GROUP BY s.user_id"
    )
    kept = {r["user_id"]: r for r in await conn.fetch("SELECT * FROM user_stats")}
    for real in real_users:
        have = kept.get(real["user_id"])
        for what in ("sessions_active", "sessions_archived", "messages"):
            counted = have[what] if have else 0
            if counted != real[what]:
                drift.user_counts.append((real["user_id"], what, counted, real[what]))
    if fix and drift.user_counts:
        wrong_users = {u for u, *_ in drift.user_counts}
        fixed = [r for r in real_users if r["user_id"] in wrong_users]
        await conn.execute(
            "INSERT INTO user_stats (user_id, sessions_active, sessions_archived, messages)"
            " SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])"
            " ON CONFLICT (user_id) DO UPDATE SET sessions_active = excluded.sessions_active,"
            " sessions_archived = excluded.sessions_archived, messages = excluded.messages",
            [r["user_id"] for r in fixed],
            [r["sessions_active"] for r in fixed],
            [r["sessions_archived"] for r in fixed],
            [r["messages"] for r in fixed],
        )
    # A user is a row of user_stats (one is made with their first session, and stays after
    # their sessions are purged) or, where one is missing, someone with sessions.
    users = len(set(kept) | {r["user_id"] for r in real_users})
    await _verify_totals(conn, real_users, users, drift, fix=fix)
    return drift


async def _verify_totals(
    conn: Connection, real_users: list[Any], users: int, drift: Drift, *, fix: bool
) -> None:
    """Compare the global totals with the real per-user counts (after their repair, so a
    fixed user counter that moved the totals by its trigger is not reported twice); with
    `fix`, put the real totals in one row and zero the others."""
    kept = await totals(conn)
    real = Totals(
        users=users,
        sessions_active=sum(r["sessions_active"] for r in real_users),
        sessions_archived=sum(r["sessions_archived"] for r in real_users),
        messages=sum(r["messages"] for r in real_users),
    )
    for what in ("users", "sessions_active", "sessions_archived", "messages"):
        if getattr(kept, what) != getattr(real, what):
            drift.total_counts.append((what, getattr(kept, what), getattr(real, what)))
    if fix and drift.total_counts:
        async with conn.transaction():
            await conn.execute("LOCK TABLE global_stats IN EXCLUSIVE MODE")
            await conn.execute(
                "UPDATE global_stats SET users = 0, sessions_active = 0, sessions_archived = 0,"
                " messages = 0"
            )
            await conn.execute(
                "UPDATE global_stats SET users = $1, sessions_active = $2,"
                " sessions_archived = $3, messages = $4 WHERE shard = 0",
                real.users,
                real.sessions_active,
                real.sessions_archived,
                real.messages,
            )
