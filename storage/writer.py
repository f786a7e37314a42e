"""The batch writer: drains the ingest stream into PostgreSQL.

Reads entries through the `writers` consumer group in size- and time-bounded batches, reads
the rows they name from the sessions' pending sets and pending-edit hashes (ingest.lua keeps
each row there once; an entry holds only session ids and seqs), writes each batch in one
transaction, and acknowledges the entries only after the commit, so a writer
that dies at any point leaves its entries pending for another writer to claim. Each writer
keeps a liveness key (`alive_ttl_ms`, see storage/streams.py); once a writer's key is gone, the
next writer that looks (every sixth of that TTL) takes over its pending entries, so a SIGKILLed
writer's backlog waits 2 to 3.5 s with the 3 s TTL, not `claim_idle_ms`. Claiming entries
pending longer than `claim_idle_ms` on any consumer stays as the fallback. A writer cut from
Redis for longer than its TTL may find its entries taken over when it returns: both write them
(idempotently, below), and its XACK after its commit, of entries it no longer owns, only
removes entries whose rows are committed.

Fast path: new rows go in with one COPY straight into `messages`, and the session counters are
updated from the batch itself. A batch that was already (partly) written, because a writer died
between commit and XACK, fails that COPY on the primary key; the batch is then written again
through a staging table with `ON CONFLICT DO NOTHING`, counting only rows really inserted. So a
batch written twice leaves one row per message and the counters right.

Edits (streaming growth) are upserts that keep the newest version (`edited_at`), whichever order
writers commit them in; several edits of one message in a batch become one row write.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

from storage import rows, streams
from storage.db import Connection
from storage.events import session_event
from storage.keys import WRITER_GROUP, Keys
from storage.outages import log_failure
from storage.rows import COLUMNS as COLUMNS  # re-exported: bench/ imports it from here
from storage.rows import CONTENT, CREATED_AT, PORT, ROLE, SEQ, SESSION_ID, USER_ID
from storage.scripts import lua
from storage.sessions import COLUMNS as SESSION_COLUMNS
from storage.sessions import Session, preview_of, session_from
from storage.streams import Entry

log = logging.getLogger(__name__)

# Batches kept in the search index stream when no indexer reads it (~ minutes of traffic).
INDEX_STREAM_MAXLEN = 100_000
# Dead letters kept (about: an approximate MAXLEN trims whole stream nodes, so the stream holds
# up to a node more). Overflow policy: the oldest dead letters are dropped, logged and counted
# (`BatchWriter.dead_letters_dropped`); copy them out before then to keep them all.
DEAD_LETTER_MAXLEN = 10_000


@dataclass(frozen=True, slots=True)
class WriterConfig:
    # A batch aims at `batch_rows` rows. An entry holds the rows of one ingest call (1 when
    # idle, hundreds under load), so the entries read per XREADGROUP follow the recent mean,
    # between 1 and `batch_entries`.
    batch_rows: int = 5000
    batch_entries: int = 500
    block_ms: int = 50  # how long a read waits for entries before writing what it has
    claim_idle_ms: int = 30_000  # entries pending this long on another consumer are claimed
    # The writer's liveness key expires this long after its last heartbeat (it beats every
    # third of it); other writers then take over its pending entries. 0: no key and no
    # takeover, only the idle claim (give every writer of a deployment the same setting).
    alive_ttl_ms: int = 3_000
    dead_letter_maxlen: int = DEAD_LETTER_MAXLEN  # dead letters kept; the oldest go first


@dataclass(frozen=True, slots=True)
class BatchResult:
    rows_inserted: int
    rows_edited: int
    replayed: bool  # True when the fast path hit rows already written (a replayed batch)
    # Sessions whose counters changed: one `updated` event each per batch, so a burst of
    # messages gives at most one session-list event per session per batch.
    sessions: list[Session] = field(default_factory=list)


class BatchWriter:
    """One consumer of the writer group. Run any number of them, in any processes."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        keys: Keys,
        config: WriterConfig | None = None,
        *,
        consumer: str | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys
        self._config = config or WriterConfig()
        self.consumer = consumer or streams.consumer_name()
        self._group = streams.GroupReader(
            redis,
            keys.stream,
            WRITER_GROUP,
            self.consumer,
            self._entries_per_read,
            alive_key=keys.writer_alive,
        )
        self.rows_written = 0
        self.dead_letters_dropped = 0  # oldest dead letters trimmed by the cap
        self._on_batch = on_batch  # (rows inserted, seconds) after each batch, for metrics
        self._rows_per_entry = 1.0  # moving mean, sizes the next read
        self._settle = redis.register_script(lua("settle.lua"))
        self._committed = asyncio.Condition()  # notified after every acknowledged batch

    async def ensure_group(self) -> None:
        """Create the consumer group at the start of the stream (`0`), so entries appended
        before any writer existed are written too."""
        await self._group.create()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BatchWriter]:
        """Run the writer loop for the lifetime of the context; on exit, drain the stream."""
        await self.ensure_group()
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(stop), name=f"writer-{self.consumer}")
        try:
            yield self
        finally:
            stop.set()
            await task

    async def run(self, stop: asyncio.Event) -> None:
        """Write batches until `stop` is set, then drain what is left and return; the
        writer's liveness key is kept meanwhile and deleted on return."""
        async with self._group.alive(self._config.alive_ttl_ms):
            await self._write_until(stop)

    async def _write_until(self, stop: asyncio.Event) -> None:
        next_take_over = next_claim = 0.0
        take_over_every = streams.take_over_every_s(self._config.alive_ttl_ms)
        own_pending_first = True  # after a start or a failure, retry our own pending entries
        while not stop.is_set():
            try:
                if self._config.alive_ttl_ms > 0 and time.monotonic() >= next_take_over:
                    await self.take_over()
                    next_take_over = time.monotonic() + take_over_every
                if time.monotonic() >= next_claim:
                    await self.claim_stale()
                    next_claim = time.monotonic() + self._config.claim_idle_ms / 2000
                if own_pending_first:
                    own_pending_first = await self._drain_own_pending()
                    continue
                if not await self.step(block_ms=self._config.block_ms):
                    await self._notify()  # idle: other writers may have drained the stream
            except Exception as exc:
                own_pending_first = True
                if streams.group_missing(exc):
                    # Redis lost the stream (a restart without its data, a deleted key): the
                    # gateway's next XADD creates a new stream; a group at its start reads it.
                    log.warning("ingest stream or writer group missing; recreating the group")
                    with contextlib.suppress(Exception):
                        await self.ensure_group()
                        continue
                # Whatever failed (PostgreSQL or Redis down, a bug), the writer must not die
                # while the gateway keeps acking: log, back off, retry its own pending first.
                log_failure(log, "writer batch failed; retrying in 1 s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)  # back off, but stop promptly
        try:
            await self.drain()
        except Exception:
            log.exception("writer could not drain at shutdown; entries stay pending")

    async def step(self, *, block_ms: int | None = None) -> int:
        """Read one batch of new entries and write it; returns the entries written."""
        entries = _unread(await self._group.read(block_ms=block_ms))
        if entries:
            await self.write(entries)
        return len(entries)

    async def drain(self) -> None:
        """Write everything still unread, without blocking (used at shutdown)."""
        await self._drain_own_pending()
        while await self.step(block_ms=None):
            pass

    async def _drain_own_pending(self) -> bool:
        """Write entries delivered to this consumer but not acknowledged; False when none."""
        entries = _unread(await self._group.read(own_pending=True))
        if entries:
            await self.write(entries)
        return bool(entries)

    async def take_over(self) -> int:
        """Claim and write the pending entries of writers whose liveness key is gone, whatever
        their idle time; returns the entries written."""
        claimed = 0
        async for entries, _ in self._group.taken_over():
            if entries:
                await self.write(entries)
                claimed += len(entries)
        return claimed

    async def claim_stale(self) -> int:
        """The fallback: claim and write entries pending longer than `claim_idle_ms` on any
        consumer (one that died keeping no liveness key); returns the entries written."""
        claimed = 0
        async for entries, _ in self._group.claimed(self._config.claim_idle_ms):
            if entries:
                log.warning("claimed %d stale entries from a dead writer", len(entries))
                await self.write(entries)
                claimed += len(entries)
        return claimed

    async def write(self, entries: list[Entry]) -> BatchResult:
        """Write the entries' rows in one transaction, then acknowledge them.

        A batch PostgreSQL refuses as data (SQLSTATE class 22, e.g. a character it cannot
        store) is split in halves until the refused entry is alone; that entry goes to the
        dead-letter stream, so one bad row never blocks the writer.
        """
        started = time.perf_counter()
        batch = await _Batch.read(self._redis, self._keys, entries)
        rows = batch.row_count / len(entries)
        self._rows_per_entry = 0.5 * self._rows_per_entry + 0.5 * max(rows, 1.0)
        try:
            async with self._pool.acquire() as conn:
                result = await write_batch(conn, batch)
        except asyncpg.DataError as exc:
            if len(entries) == 1:
                await self._dead_letter(entries[0], batch, exc)
                return BatchResult(0, 0, replayed=False)
            half = len(entries) // 2
            first, second = await self.write(entries[:half]), await self.write(entries[half:])
            return BatchResult(
                first.rows_inserted + second.rows_inserted,
                first.rows_edited + second.rows_edited,
                first.replayed or second.replayed,
                first.sessions + second.sessions,
            )
        await self._acknowledge(entries, batch, result.sessions)
        self.rows_written += result.rows_inserted
        if self._on_batch is not None:
            self._on_batch(result.rows_inserted, time.perf_counter() - started)
        await self._notify()
        return result

    async def _notify(self) -> None:
        async with self._committed:
            self._committed.notify_all()

    async def _dead_letter(self, entry: Entry, batch: _Batch, error: Exception) -> None:
        entry_id, fields = entry
        log.error(
            "stream entry %s refused by PostgreSQL (%s); moved to %s",
            entry_id.decode(),
            error,
            self._keys.dead_letters,
        )
        # The entry only names its rows, which settling removes from the buffer below: the
        # dead letter keeps the rows themselves (row0, row1, ...) beside the entry's fields.
        record: dict[Any, Any] = {
            **fields,
            **{f"row{i}".encode(): raw for i, raw in enumerate(batch.raw)},
            b"error": str(error).encode(),
            b"entry": entry_id,
        }
        cap = self._config.dead_letter_maxlen
        pipe = self._redis.pipeline(transaction=True)  # the lengths around this very XADD
        pipe.xlen(self._keys.dead_letters)
        pipe.xadd(self._keys.dead_letters, record, maxlen=cap, approximate=True)
        pipe.xlen(self._keys.dead_letters)
        before, _, after = await pipe.execute()
        if (dropped := before + 1 - after) > 0:
            self.dead_letters_dropped += dropped
            log.warning(
                "dead-letter stream %s is at its cap (~%d): its %d oldest entries were dropped",
                self._keys.dead_letters,
                cap,
                dropped,
            )
        await self._acknowledge([entry], batch, [])

    def _entries_per_read(self) -> int:
        wanted = round(self._config.batch_rows / self._rows_per_entry)
        return max(1, min(self._config.batch_entries, wanted))

    async def backlog(self) -> int:
        """Entries not yet written. Written entries are deleted from the stream right after
        their XACK, so this is simply the stream's length."""
        return int(await self._redis.xlen(self._keys.stream))

    async def wait_drained(self) -> None:
        """Return once every entry appended so far is written, by this writer or another;
        checks after each of this writer's commits and idle reads.

        Bound it with a timeout: with no writer running it waits forever.
        """
        while True:
            async with self._committed:
                if await self.backlog() == 0:
                    return
                await self._committed.wait()

    async def _acknowledge(
        self, entries: list[Entry], batch: _Batch, changed: list[Session]
    ) -> None:
        # Settle first (settle.lua): the rows leave the buffer and its count, and sessions
        # left with no rows leave their port's set, before the entries are acknowledged. A
        # writer that dies in between leaves the entries to be written again, and settling
        # them again removes, and subtracts, nothing twice; acknowledging first could leave
        # rows in the buffer, counted against its cap, for good.
        touched: dict[str, tuple[int, list[int], list[int | str]]] = {}  # a seq, runs, edits
        for session_id, seqs in batch.written.items():
            touched[session_id] = (seqs[0], [bound for run in _runs(seqs) for bound in run], [])
        for session_id, seq, digest in batch.edits_written:
            touched.setdefault(session_id, (seq, [], []))[2].extend((seq, digest))
        settle = []
        for session_id, (seq, runs, edits) in touched.items():
            row = batch.new.get((session_id, seq)) or batch.edits[(session_id, seq)]
            user_id, port = row[USER_ID], row[PORT]
            settle.append(
                [
                    self._keys.pending(session_id),
                    self._keys.pending_edits(session_id),
                    self._keys.port_buffered(user_id, port),
                    session_id,
                    runs,
                    edits,
                ]
            )
        if settle:
            await self._settle(args=[orjson.dumps([self._keys.buffered, settle])])
        ids = [entry_id for entry_id, _ in entries]
        pipe = self._redis.pipeline(transaction=False)
        pipe.xack(self._keys.stream, WRITER_GROUP, *ids)
        pipe.xdel(self._keys.stream, *ids)
        for channel, token in batch.notify:
            pipe.publish(channel, token)
        for session in changed:
            event = session_event("updated", session)
            pipe.publish(self._keys.user_channel(session.user_id), event)
        written = [[sid, seq] for sid, seqs in batch.written.items() for seq in seqs]
        written += [[sid, seq] for sid, seq, _ in batch.edits_written]
        if written:
            # Capped: an index stream nobody reads (no search indexer) must not grow forever.
            pipe.xadd(
                self._keys.index_stream,
                {"k": orjson.dumps(written)},
                maxlen=INDEX_STREAM_MAXLEN,
                approximate=True,
            )
        await pipe.execute()


@dataclass(slots=True)
class _Batch:
    """A batch's rows, decoded: new rows keyed by (session, seq) with later edits folded in,
    edits of rows not in this batch, and what to acknowledge afterwards."""

    new: dict[tuple[str, int], tuple[Any, ...]]
    edits: dict[tuple[str, int], tuple[Any, ...]]
    written: dict[str, list[int]]  # session -> seqs of new rows, to drop from `pending`
    edits_written: list[tuple[str, int, str]]  # (session, seq, sha1 of the edit row)
    notify: list[tuple[str, str]]
    raw: list[bytes]  # the rows as read, for a dead letter

    @property
    def row_count(self) -> int:
        return sum(map(len, self.written.values())) + len(self.edits_written)

    @classmethod
    async def read(cls, redis: aioredis.Redis, keys: Keys, entries: list[Entry]) -> _Batch:
        """The rows the entries name (see ingest.lua), read from the pending sets and
        hashes in one round trip and decoded. A row named but gone from the buffer was
        already written and settled (a replayed or taken-over entry): nothing to do. An edit
        is read in its newest version, which a later entry names too; writing it twice is
        idempotent, and settling removes only the version written."""
        batch = cls({}, {}, {}, [], [], [])
        new: dict[str, list[int]] = {}  # session -> seqs of the new rows named
        edited: dict[str, set[int]] = {}  # session -> seqs of the edits named
        for _, fields in entries:
            for name, value in fields.items():
                kind = name[:1]
                if kind == b"n":  # a durable frame's notify token
                    channel, _, token = value.decode().rpartition("|")
                    batch.notify.append((channel, token))
                    continue
                session_id, _, listed = value.decode().partition(" ")
                numbers = [int(seq) for seq in listed.split(" ")]
                if kind == b"r":
                    new.setdefault(session_id, []).extend(numbers)
                else:
                    edited.setdefault(session_id, set()).update(numbers)
        if not new and not edited:
            return batch
        pipe = redis.pipeline(transaction=False)
        new_runs = {session_id: _runs(seqs) for session_id, seqs in new.items()}
        for session_id, runs in new_runs.items():
            for low, high in runs:
                pipe.zrangebyscore(keys.pending(session_id), low, high)
        edited_seqs = {session_id: sorted(seqs) for session_id, seqs in edited.items()}
        for session_id, seqs in edited_seqs.items():
            pipe.hmget(keys.pending_edits(session_id), seqs)
        replies = iter(await pipe.execute())
        for session_id, runs in new_runs.items():
            for _ in runs:
                for raw in next(replies):
                    record = rows.copy_record(raw)
                    batch.new[(session_id, record[SEQ])] = record
                    batch.written.setdefault(session_id, []).append(record[SEQ])
                    batch.raw.append(raw)
        for session_id, seqs in edited_seqs.items():
            for seq, raw in zip(seqs, next(replies), strict=True):
                if raw is None:
                    continue
                record = rows.copy_record(raw)
                key = (session_id, seq)
                if key in batch.new:  # an edit of a row of this batch: the newer version
                    batch.new[key] = record
                else:
                    batch.edits[key] = record
                batch.edits_written.append((session_id, seq, hashlib.sha1(raw).hexdigest()))
                batch.raw.append(raw)
        return batch


_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS incoming_messages"
    " (LIKE messages INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_LOCK_SESSIONS = "SELECT 1 FROM sessions WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
# The session counters of rows just written, one array element per session: the writer's and
# the import's (storage/transfer.py), so both keep them by the same rules.
COUNTERS = f"""
UPDATE sessions s
   SET message_count = s.message_count + c.n,
       last_message_at = greatest(s.last_message_at, c.last_at),
       activity_at = greatest(s.activity_at, c.last_at),
       -- Looked up only while unset (coalesce stops at its first non-null argument).
       auto_title = coalesce(s.auto_title, session_first_user_line(s.id)),
       -- The batch's last row of the session is the preview unless a later one is already
       -- (two writers may commit out of seq order); an edit of the last one renews it.
       preview = CASE WHEN c.top >= coalesce(s.preview_seq, 0) THEN c.preview ELSE s.preview END,
       preview_role = CASE WHEN c.top >= coalesce(s.preview_seq, 0) THEN c.role
                           ELSE s.preview_role END,
       preview_seq = greatest(s.preview_seq, c.top),
       updated_at = now()
  FROM (SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[], $4::bigint[],
                             $5::text[], $6::text[])) AS c(id, n, last_at, top, preview, role)
 WHERE s.id = c.id
RETURNING {", ".join("s." + c.strip() for c in SESSION_COLUMNS.split(","))}
"""
USER_MESSAGES = """
INSERT INTO user_stats AS u (user_id, messages)
SELECT * FROM unnest($1::text[], $2::bigint[])
ON CONFLICT (user_id) DO UPDATE SET messages = u.messages + excluded.messages
"""
_UPSERT_EDITS = f"""
INSERT INTO messages ({", ".join(COLUMNS)})
SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::int[], $6::text[],
                     $7::uuid[], $8::text[], $9::text[], $10::text[], $11::text[],
                     $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::jsonb[])
ON CONFLICT (session_id, seq) DO UPDATE
   SET content = excluded.content, role = excluded.role, content_type = excluded.content_type,
       metadata = excluded.metadata, client_ts = excluded.client_ts,
       edited_at = excluded.edited_at
 WHERE messages.edited_at IS NULL OR messages.edited_at < excluded.edited_at
RETURNING session_id, seq, created_at, (xmax = 0) AS inserted
"""


async def write_batch(conn: Connection, batch: _Batch) -> BatchResult:
    """Write one batch in one transaction; idempotent (see the module docstring)."""
    new_rows = list(batch.new.values())
    try:
        async with conn.transaction():
            if new_rows:
                await conn.copy_records_to_table("messages", records=new_rows, columns=COLUMNS)
            written = [(r[SESSION_ID], r[SEQ], r[CREATED_AT], 1) for r in new_rows]
            written += await _upsert_edits(conn, batch)
            changed = await _update_counters(conn, batch, written)
        return BatchResult(len(new_rows), len(batch.edits), replayed=False, sessions=changed)
    except asyncpg.UniqueViolationError:
        log.info("batch of %d rows was partly written; rewriting idempotently", len(new_rows))
    async with conn.transaction():
        await conn.execute(_STAGING)
        if new_rows:
            await conn.copy_records_to_table("incoming_messages", records=new_rows, columns=COLUMNS)
        records = await conn.fetch(
            f"INSERT INTO messages ({', '.join(COLUMNS)})"
            f" SELECT {', '.join(COLUMNS)} FROM incoming_messages"
            " ON CONFLICT DO NOTHING RETURNING session_id, seq, created_at"
        )
        written = [(str(r["session_id"]), r["seq"], r["created_at"], 1) for r in records]
        written += await _upsert_edits(conn, batch)
        changed = await _update_counters(conn, batch, written)
    return BatchResult(len(records), len(batch.edits), replayed=True, sessions=changed)


# A row the batch wrote: session id (as text), seq, created_at, and 1 if it is a new message
# (0: an edit of a stored one).
_Written = tuple[str, int, datetime, int]


async def _upsert_edits(conn: Connection, batch: _Batch) -> list[_Written]:
    """Apply edits of rows from earlier batches; returns the rows this changed, each with 1
    if it inserted it (the edit arrived before its original was committed by another
    writer: a new message to count) or 0 if it updated it."""
    if not batch.edits:
        return []
    columns = list(zip(*batch.edits.values(), strict=True))
    records = await conn.fetch(_UPSERT_EDITS, *columns)
    return [(str(r["session_id"]), r["seq"], r["created_at"], int(r["inserted"])) for r in records]


async def _update_counters(
    conn: Connection, batch: _Batch, written: list[_Written]
) -> list[Session]:
    """Add the written rows to their sessions' counters (each row's 1 if new, 0 if an edit)
    and make each session's last written row its preview; session ids as text, one key each.
    Returns the updated sessions (for the session-list events: an edited last message
    changes the preview)."""
    per_session: dict[str, tuple[int, datetime, int]] = {}  # count, last created_at, top seq
    for session_id, seq, created_at, new in written:
        count, last, top = per_session.get(session_id, (0, created_at, seq))
        per_session[session_id] = (count + new, max(last, created_at), max(top, seq))
    if per_session:
        ids = sorted(per_session)
        tops = [per_session[i][2] for i in ids]
        last_rows = [
            batch.new.get((i, top)) or batch.edits[(i, top)]
            for i, top in zip(ids, tops, strict=True)
        ]
        # Lock the sessions in one global order first: concurrent writers touching the same
        # sessions then queue instead of deadlocking.
        await conn.execute(_LOCK_SESSIONS, ids)
        records = await conn.fetch(
            COUNTERS,
            ids,
            [per_session[i][0] for i in ids],
            [per_session[i][1] for i in ids],
            tops,
            [preview_of(row[CONTENT]) for row in last_rows],
            [row[ROLE] for row in last_rows],
        )
        changed = [session_from(r) for r in records]
        per_user: dict[str, int] = {}
        for session in changed:
            count = per_session[str(session.id)][0]
            if count and session.status != "deleted":  # a deleted session's are not counted
                per_user[session.user_id] = per_user.get(session.user_id, 0) + count
        if per_user:
            users = sorted(per_user)  # one lock order for every writer
            await conn.execute(USER_MESSAGES, users, [per_user[u] for u in users])
        return changed
    return []


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs as inclusive runs: [1, 2, 3, 7, 8] -> [(1, 3), (7, 8)]."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def _unread(entries: list[Entry]) -> list[Entry]:
    """The entries less pending ones deleted since their delivery (they have no fields)."""
    return [e for e in entries if e[1] is not None]
