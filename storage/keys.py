"""Every Redis key and channel name, built in one place from one prefix.

Tests and co-tenant deployments isolate themselves by prefix. Names are plain strings: the ingest
script touches keys it derives from its arguments, which is fine on a standalone Redis or a
primary/replica pair; sharding the ingest stream across a cluster is separate work.
"""

from __future__ import annotations

from dataclasses import dataclass

WRITER_GROUP = "writers"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def stream(self) -> str:
        """The ingest stream the batch writers drain through the consumer group."""
        return f"{self.prefix}ingest"

    @property
    def index_stream(self) -> str:
        """Stream of committed (session_id, seq) keys to (re)index for search: one entry per
        writer batch, field `k` = JSON [[session_id, seq], ...]. Search indexing reads it off
        the ingest hot path (see docs/search.md)."""
        return f"{self.prefix}index"

    @property
    def dead_letters(self) -> str:
        """Stream of ingest entries PostgreSQL refused, kept for inspection and replay."""
        return f"{self.prefix}dead"

    def active(self, user_id: str, port: int) -> str:
        """String: the id of the user's active session on the port."""
        return f"{self.prefix}active:{user_id}:{port}"

    def session_state(self, session_id: str) -> str:
        """Hash: field `#` is the last seq; every other field is a dedup key whose value is
        `seq|id|content_hash|created_ms`. Expires when the session is idle; reloaded from
        PostgreSQL on demand."""
        return f"{self.prefix}s:{session_id}"

    def pending(self, session_id: str) -> str:
        """Sorted set by seq: the session's new rows still in the buffer (not yet committed),
        for read-your-writes. The writer removes a row once it is committed."""
        return f"{self.prefix}b:{session_id}"

    def pending_edits(self, session_id: str) -> str:
        """Hash seq -> row: the newest buffered edit of each message, until it is committed.
        Kept apart from `pending` so the writer can drop committed new rows by seq range."""
        return f"{self.prefix}e:{session_id}"

    def port_buffered(self, user_id: str, port: int) -> str:
        """Set of the user's sessions on the port that have rows in the buffer (in `pending`
        or `pending_edits`), whatever their age: the port's reads look there, not at its few
        newest sessions. The ingest script adds a session as it stores a row; the writer's
        settle script removes it once both are empty, in the same script, so a session that
        still holds rows is never missing."""
        return f"{self.prefix}bp:{user_id}:{port}"

    @property
    def buffered(self) -> str:
        """String: how many rows all `pending` sets and `pending_edits` hashes hold (messages
        acked but not yet committed), for the buffer cap. The ingest script adds the rows it
        adds and the settle script subtracts the rows it removes (clamped at 0), so replays
        and concurrent writers keep it exact."""
        return f"{self.prefix}buffered"

    def session_channel(self, session_id: str) -> str:
        """Pub/sub: the session's stored rows and edits, published by the ingest script in seq
        order (one JSON array of rows per script call)."""
        return f"{self.prefix}ev:s:{session_id}"

    def user_channel(self, user_id: str) -> str:
        """Pub/sub: the user's session events (created, updated, archived, deleted) and
        presence changes, as JSON objects."""
        return f"{self.prefix}ev:u:{user_id}"

    def presence(self) -> str:
        """Sorted set of `user|port|connection` by expiry time: which IDE connections serve
        which ports, kept alive by the process that holds the connection."""
        return f"{self.prefix}presence"

    def presence_port(self, user_id: str, port: int) -> str:
        """Sorted set of the connection ids serving the user's port, by expiry time."""
        return f"{self.prefix}presence:{user_id}:{port}"

    def persisted_channel(self, process_id: str) -> str:
        """Pub/sub channel on which writers tell one gateway process its durable frames are
        committed."""
        return f"{self.prefix}persisted:{process_id}"

    def writer_alive(self, consumer: str) -> str:
        """String with a TTL: set while the stream consumer named `consumer` (a batch writer
        or a search indexer; names are unique) is alive, refreshed by its heartbeat. Once it
        is gone, another consumer takes over that consumer's pending entries at once."""
        return f"{self.prefix}alive:{consumer}"
