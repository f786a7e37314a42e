"""The search indexer: fills `message_search` from the index stream, off the ingest hot path.

After each commit the batch writer appends one entry to `Keys.index_stream` with the
(session_id, seq) keys it wrote or edited. The indexer reads that stream through the `indexers`
consumer group in large batches, (re)indexes the keys' committed rows with one
`INSERT ... SELECT search_document(content) ... ON CONFLICT DO UPDATE` per batch, and
acknowledges (and deletes) the entries only after the commit. So ingest never waits for
indexing: the writer's only cost is one XADD in a pipeline it sends anyway, and search lags
ingest by the indexer's backlog, which the contract allows. Indexing costs more server CPU per
row than the COPY itself (docs/search.md), so while the writers fall behind (their oldest
unwritten entry is older than `yield_to_writer_ms`) the indexer waits: under a burst, ingest
keeps its full rate and search catches up afterwards.

* **Crash before the commit or between commit and XACK:** the entries stay pending; the same
  consumer re-reads them on restart, another takes them over once the dead one's liveness key
  has expired (`alive_ttl_ms`, as for the writer: storage/streams.py), or claims them after
  `claim_idle_ms` if it kept none. Indexing is idempotent, and an older version never replaces
  a newer one (see storage/search.py).
* **Lost entries:** the writer caps the stream (about 100k entries, minutes of traffic), so
  an indexer that was down or far behind finds entries trimmed before it read them; and rows
  written before the stream existed never had entries. Both are repaired by `catch_up`, a
  keyset scan of `messages` that indexes every row missing from the index or indexed at an
  older version. It runs in the background when the consumer group is first created, and
  when the indexer sees that entries went missing unread: the stream has had more entries
  added than the group has read plus those still in it (checked at start, every `check_s`,
  and before each read while the indexer is behind, the only time the cap can bite), or a
  pending entry was trimmed. A Redis key remembers that a catch-up is owed until one
  finishes, so a restart in the middle does not forget it. Search then misses the lost rows
  for as long as the scan takes (about a minute per million messages here).
* **A row PostgreSQL refuses to index** (a tsvector over its 1 MB limit): the batch is split
  until that row is alone; it is logged and skipped, and the rest is indexed.

Run any number of indexers (one per `serve` process is the default); they share the work
through the group, and `catch_up` runs in one of them at a time (an advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import orjson
import redis.asyncio as aioredis

from storage import search, streams
from storage.db import Connection
from storage.keys import Keys
from storage.outages import log_failure
from storage.streams import Entry

log = logging.getLogger(__name__)

INDEX_GROUP = "indexers"
# Session-level advisory lock held by the one catch-up scan running: ASCII "chatsrch".
CATCH_UP_LOCK = 0x63686174_73726368
_FIRST_KEY = (uuid.UUID(int=0), 0)

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class IndexerConfig:
    # Keys aimed at per statement (one transaction). An entry holds one writer batch: 1 key
    # when idle, up to the writer's 5,000 under load; a read takes as many entries as fit.
    batch_rows: int = 20_000
    batch_entries: int = 200  # most entries per read
    block_ms: int = 100  # how long a read waits for entries (and so the idle lag)
    claim_idle_ms: int = 30_000  # entries pending this long on another consumer are claimed
    # The indexer's liveness key expires this long after its last heartbeat (a beat every
    # third of it); other indexers then take over its pending entries, checking every sixth
    # of it. 0: no key and no takeover, only the idle claim (give all indexers the same).
    alive_ttl_ms: int = 3_000
    check_s: float = 15.0  # how often to claim stale entries and look for trimmed ones
    catch_up_rows: int = 5_000  # messages scanned per catch-up statement
    # Ingest first: while the oldest entry of the ingest stream (the writers' backlog) is older
    # than this, the indexer and its catch-up wait, 50 ms at a time, instead of taking CPU and
    # I/O from the writers. A writer keeping up writes every entry within its block time plus
    # one batch (~50 + 100 ms). 0: never wait.
    yield_to_writer_ms: int = 250


class Indexer:
    """One consumer of the `indexers` group; lives in `serve` next to the writer."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        keys: Keys,
        config: IndexerConfig | None = None,
        *,
        consumer: str | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys
        self._config = config or IndexerConfig()
        self.consumer = consumer or streams.consumer_name()
        self._group = streams.GroupReader(
            redis,
            keys.index_stream,
            INDEX_GROUP,
            self.consumer,
            self._entries_per_read,
            alive_key=keys.writer_alive,
        )
        self.rows_indexed = 0
        # Age of the oldest entry of the last batch when it was committed: how far search
        # lagged behind the writer's commit. For metrics and the benchmark.
        self.lag_s = 0.0
        self._on_batch = on_batch  # (rows written, lag_s) after each batch, for metrics
        self._keys_per_entry = 1.0  # moving mean, sizes the next read
        self._catch_up: asyncio.Task[None] | None = None
        self._catching_up = False  # set before the task starts, cleared as its last step
        self._indexed = asyncio.Condition()  # notified after every batch and idle read

    @property
    def _owed(self) -> str:
        """Redis key set while a catch-up scan is owed (cleared when one completes)."""
        return f"{self._keys.index_stream}:catch-up"

    async def ensure_group(self) -> bool:
        """Create the consumer group at the start of the stream; True if this created it
        (then the rows written before it existed need a catch-up)."""
        if not await self._group.create():
            return False
        await self._redis.set(self._owed, "group created")
        return True

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Indexer]:
        """Run the indexer for the lifetime of the context. On exit it finishes its batch and
        stops; what is left stays in the stream for the next start (nothing is lost). A
        catch-up that is owed starts before this returns (so `wait_idle` covers it)."""
        await self.ensure_group()
        await self._check_lost_entries()
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(stop), name=f"indexer-{self.consumer}")
        try:
            yield self
        finally:
            stop.set()
            await task

    async def run(self, stop: asyncio.Event) -> None:
        """Index batches until `stop` is set; a catch-up it started is cancelled (it resumes
        at the next start, as the Redis marker says it is still owed). The indexer's liveness
        key is kept meanwhile and deleted on return."""
        async with self._group.alive(self._config.alive_ttl_ms):
            await self._index_until(stop)

    async def _index_until(self, stop: asyncio.Event) -> None:
        next_check = next_take_over = 0.0
        take_over_every = streams.take_over_every_s(self._config.alive_ttl_ms)
        behind = False  # the last read was full: more is waiting, the cap may trim it
        own_pending_first = True  # after a start or a failure, retry our own pending entries
        recreate = False
        try:
            while not stop.is_set():
                try:
                    if recreate:
                        await self.ensure_group()
                        recreate, next_check = False, 0.0  # check now: a catch-up is owed
                    if self._config.alive_ttl_ms > 0 and time.monotonic() >= next_take_over:
                        await self._take_over()
                        next_take_over = time.monotonic() + take_over_every
                    if time.monotonic() >= next_check:
                        await self._claim_stale()
                        next_check = time.monotonic() + self._config.check_s
                        behind = True  # check now
                    if behind:
                        await self._check_lost_entries()
                    if own_pending_first:
                        own_pending_first = await self._index_own_pending()
                        continue
                    if await self.writer_behind():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 0.05)
                        continue
                    wanted = self._entries_per_read()
                    read = await self.step(block_ms=self._config.block_ms)
                    behind = read >= wanted
                    if not read:
                        await self._notify()  # idle: other indexers may have done the rest
                except Exception as exc:
                    own_pending_first = True
                    if streams.group_missing(exc):
                        # The stream is gone (Redis lost its data, or the key was deleted):
                        # start over with a new group, which owes a catch-up.
                        log.warning("index stream or its group is missing; recreating them")
                        recreate = True
                        continue
                    # PostgreSQL or Redis down, or a bug: search may lag, ingest must go on.
                    log_failure(log, "indexer batch failed; retrying in 1 s", exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            if self._catch_up is not None:
                self._catch_up.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._catch_up

    async def step(self, *, block_ms: int | None = None) -> int:
        """Read one batch of new entries and index it; returns the entries indexed."""
        entries = await self._present(await self._group.read(block_ms=block_ms))
        if entries:
            await self.index(entries)
        return len(entries)

    async def drain(self) -> None:
        """Index everything unread, without blocking (the benchmark; tests use wait_idle)."""
        await self._index_own_pending()
        while await self.step(block_ms=None):
            pass

    async def index(self, entries: list[Entry]) -> int:
        """Index the entries' keys (each once), then acknowledge and delete the entries;
        returns the rows written."""
        keys = sorted({key for entry in entries for key in _announced(entry)})
        self._keys_per_entry = 0.5 * self._keys_per_entry + 0.5 * max(len(keys) / len(entries), 1)
        written = 0
        step = self._config.batch_rows
        for start in range(0, len(keys), step):
            async with self._pool.acquire() as conn:
                written += await _index_resilient(conn, keys[start : start + step])
        ids = [entry_id for entry_id, _ in entries]
        pipe = self._redis.pipeline(transaction=False)
        pipe.xack(self._keys.index_stream, INDEX_GROUP, *ids)
        pipe.xdel(self._keys.index_stream, *ids)
        await pipe.execute()
        self.lag_s = max(0.0, time.time() - streams.id_ms(ids[0]) / 1000)
        self.rows_indexed += written
        if self._on_batch is not None:
            self._on_batch(written, self.lag_s)
        await self._notify()
        return written

    async def writer_behind(self) -> bool:
        """Whether the batch writers are behind: the oldest entry they have not finished is
        older than `yield_to_writer_ms` (by Redis's clock, which stamped it)."""
        limit = self._config.yield_to_writer_ms
        if limit <= 0:
            return False
        pipe = self._redis.pipeline(transaction=False)
        pipe.xrange(self._keys.stream, count=1)
        pipe.time()
        oldest, (seconds, micros) = await pipe.execute()
        now_ms = seconds * 1000 + micros // 1000
        return bool(oldest) and now_ms - streams.id_ms(oldest[0][0]) > limit

    async def _until_writer_keeps_up(self) -> None:
        # Polls: the writers' backlog is a Redis stream's length; nothing announces its drop.
        while True:
            if not await self.writer_behind():
                return
            await asyncio.sleep(0.05)

    async def backlog(self) -> int:
        """Entries not yet indexed: indexed entries are deleted, so the stream's length."""
        return int(await self._redis.xlen(self._keys.index_stream))

    @property
    def catching_up(self) -> bool:
        return self._catching_up

    async def wait_idle(self) -> None:
        """Return once every entry appended so far is indexed (by this indexer or another)
        and no catch-up of this one is running. Checks after each batch and idle read.

        Bound it with a timeout: with no indexer running it waits forever.
        """
        while True:
            async with self._indexed:
                if not self.catching_up and await self.backlog() == 0:
                    return
                await self._indexed.wait()

    def start_catch_up(self) -> None:
        """Start a background catch-up unless one is running; it clears the owed marker when
        it completes. Its outcome is logged."""
        if self._catching_up:
            return
        self._catching_up = True
        self._catch_up = asyncio.create_task(self._run_catch_up(), name="search-catch-up")

    async def _run_catch_up(self) -> None:
        try:
            indexed = await catch_up(
                self._pool,
                batch_rows=self._config.catch_up_rows,
                between_batches=self._until_writer_keeps_up,
            )
            if indexed is not None:  # None: another process's catch-up holds the lock
                await self._redis.delete(self._owed)
                log.info("search catch-up done: %d rows indexed", indexed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("search catch-up failed; it is retried at the next check")
        finally:
            self._catching_up = False
            await self._notify()  # wait_idle may be waiting for this

    async def _check_lost_entries(self) -> None:
        """Start a catch-up if one is owed, or if entries went missing before the group read
        them: more were added to the stream than the group has read plus those still waiting
        in it (pending ones are in it too: they are deleted only once acknowledged)."""
        pipe = self._redis.pipeline(transaction=True)  # both answers from the same instant
        pipe.xinfo_stream(self._keys.index_stream)
        pipe.xinfo_groups(self._keys.index_stream)
        stream, groups = await pipe.execute()
        group = next((g for g in groups if streams.text(g["name"]) == INDEX_GROUP), None)
        added = stream.get("entries-added")  # None before Redis 7: no detection
        if group is not None and added is not None:
            unread = added - (group.get("entries-read") or 0)
            if unread > stream["length"] - group["pending"]:
                log.warning("%d index entries were trimmed unread; catching up", unread)
                await self._redis.set(self._owed, "entries trimmed")
        if not self.catching_up and await self._redis.exists(self._owed):
            self.start_catch_up()

    async def _present(self, entries: list[Entry]) -> list[Entry]:
        """The entries that still exist; one trimmed while pending (its id comes back with
        no fields) is acknowledged and a catch-up is owed for its lost keys."""
        gone = [entry_id for entry_id, fields in entries if fields is None]
        if gone:
            log.warning("%d pending index entries were trimmed; catching up", len(gone))
            await self._redis.xack(self._keys.index_stream, INDEX_GROUP, *gone)
            await self._redis.set(self._owed, "pending entries trimmed")
            self.start_catch_up()
        return [entry for entry in entries if entry[1] is not None]

    async def _index_own_pending(self) -> bool:
        """Index entries delivered to this consumer but not acknowledged; False when none."""
        entries = await self._present(await self._group.read(own_pending=True))
        if entries:
            await self.index(entries)
        return bool(entries)

    async def _take_over(self) -> None:
        """Take over the pending entries of indexers whose liveness key is gone; index them."""
        async for entries, trimmed in self._group.taken_over():
            await self._index_claimed(entries, trimmed)

    async def _claim_stale(self) -> None:
        """The fallback: claim entries pending longer than `claim_idle_ms` on any consumer
        (one that died keeping no liveness key); index them."""
        async for entries, trimmed in self._group.claimed(self._config.claim_idle_ms):
            if entries:
                log.warning("claimed %d stale index entries from a dead indexer", len(entries))
            await self._index_claimed(entries, trimmed)

    async def _index_claimed(self, entries: list[Entry], trimmed: list[bytes]) -> None:
        if trimmed:  # pending entries trimmed: their keys are lost
            log.warning("%d stale index entries were trimmed; catching up", len(trimmed))
            await self._redis.set(self._owed, "pending entries trimmed")
            self.start_catch_up()
        if entries:
            await self.index(entries)

    def _entries_per_read(self) -> int:
        wanted = round(self._config.batch_rows / self._keys_per_entry)
        return max(1, min(self._config.batch_entries, wanted))

    async def _notify(self) -> None:
        async with self._indexed:
            self._indexed.notify_all()


async def catch_up(
    pool: asyncpg.Pool,
    *,
    batch_rows: int = 5_000,
    between_batches: Callable[[], Awaitable[None]] | None = None,
) -> int | None:
    """Index every message missing from the search index or indexed at an older version,
    scanning `messages` in primary-key order, `batch_rows` per statement, awaiting
    `between_batches` (if given) after each; safe while ingest and indexers run. Returns
    the rows indexed, or None when another catch-up holds the lock (it does the work).

    This is the repair for lost index entries and the way to build the index for rows
    written before it existed (`chat-gateway reindex`); on a fully indexed table it only
    compares versions (8 s per million messages on the benchmark VM, docs/search.md).
    """
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", CATCH_UP_LOCK):
            return None
        try:
            indexed = 0
            after: tuple[uuid.UUID, int] | None = _FIRST_KEY
            while after is not None:
                try:
                    count, next_after = await search.index_missing(conn, after, batch_rows)
                except (asyncpg.DataError, asyncpg.ProgramLimitExceededError):
                    count, next_after = await _index_span_resilient(conn, after, batch_rows)
                indexed += count
                after = next_after
                if between_batches is not None:
                    await between_batches()
            return indexed
        finally:
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock($1)", CATCH_UP_LOCK)


async def _index_span_resilient(
    conn: Connection, after: tuple[uuid.UUID, int], limit: int
) -> tuple[int, tuple[uuid.UUID, int] | None]:
    """A catch-up step one of whose rows cannot be indexed: the same span, key by key."""
    records = await conn.fetch(
        "SELECT session_id, seq FROM messages WHERE (session_id, seq) > ($1, $2)"
        " ORDER BY session_id, seq LIMIT $3",
        after[0],
        after[1],
        limit,
    )
    if not records:
        return 0, None
    keys = [(str(r["session_id"]), int(r["seq"])) for r in records]
    count = await _index_resilient(conn, keys)
    last = records[-1]
    return count, (last["session_id"], last["seq"])


async def _index_resilient(conn: Connection, keys: Sequence[Key]) -> int:
    """Index the keys; if PostgreSQL refuses a row as data, split until it is alone and skip
    it (logged), so one message never stops search for the rest."""
    try:
        return await search.index_keys(conn, keys)
    except (asyncpg.DataError, asyncpg.ProgramLimitExceededError) as exc:
        if len(keys) == 1:
            log.error("message %s/%d cannot be indexed for search: %s", *keys[0], exc)
            return 0
        half = len(keys) // 2
        return await _index_resilient(conn, keys[:half]) + await _index_resilient(conn, keys[half:])


def _announced(entry: Entry) -> list[Key]:
    """The (session_id, seq) keys an index entry announces; none (logged) if it is not one
    the writer wrote, so a stray entry cannot stop the indexer."""
    try:
        return [(str(k[0]), int(k[1])) for k in orjson.loads(entry[1][b"k"])]
    except (KeyError, IndexError, TypeError, ValueError):
        log.error("index stream entry %r is not a list of keys; skipped", entry[0])
        return []


