"""The buffered row: how one message sits in Redis between its ack and its commit.

A row is a flat JSON object. The gateway encodes everything it knows before the ingest call
(`encode`, the "row tail"); storage/lua/ingest.lua completes it with what only the script knows
and writes it to the stream entry, the session's pending set (or pending-edits hash, for an
edit) and the session channel. Every reader decodes it here: the writer into COPY records
(`copy_record`, its hot path), everyone else into a `BufferedRow`.

    {"sid": session id, "seq": seq, "id": message id,          <- written by ingest.lua
     "at": created ms, "ed": edited ms or null,                <- written by ingest.lua
     "user", "port", "cid": client id, "dk": dedup key, "role", "content",
     "ct": content type, "src": source, "cts": client timestamp (ISO 8601) or null,
     "meta": metadata (any JSON)}                              <- `encode`

Short keys because every row is stored three times and published once. ingest.lua writes the
first five fields by string concatenation, in that order, and then the tail minus its opening
brace: a change to those five names is a change to ingest.lua too (tests/test_keys.py and
the ingest tests read rows the script wrote).

The script's reply codes and per-item outcome flags are defined here too, as enums of the
values ingest.lua returns (see the reply format at the top of that script).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

import orjson


class Reply(StrEnum):
    """The first element of ingest.lua's reply to one request."""

    NO_SESSION = "S"  # no active session is cached for (user, port): resolve it, retry
    NOT_LOADED = "L"  # the session's dedup state is not in Redis: load it, retry
    FULL = "O"  # the buffer is at its cap: nothing stored; the reply carries the count
    OK = "K"  # served: session, stream entry and one (seq, id, flag) per item follow


class Flag(IntEnum):
    """What ingest.lua did with one item of a served request."""

    STORED = 0  # new: stored with a fresh seq
    DUPLICATE = 1  # already stored and committed with the same content
    UPDATED = 2  # same client id, new content: an edit in place (same id and seq)
    DUPLICATE_BUFFERED = 3  # a duplicate whose original is not committed yet


# Flag by value without the enum's call overhead: one lookup per acked item.
FLAGS: tuple[Flag, ...] = tuple(Flag)

# The `messages` columns a row fills, in the order of `copy_record`'s tuples.
COLUMNS = (
    "session_id",
    "seq",
    "id",
    "user_id",
    "port",
    "client_id",
    "dedup_key",
    "role",
    "content",
    "content_type",
    "source",
    "client_ts",
    "created_at",
    "edited_at",
    "metadata",
)
# Positions in a `copy_record` tuple that the writer reads back.
SESSION_ID, SEQ, USER_ID, PORT, ROLE, CONTENT, CREATED_AT, EDITED_AT = 0, 1, 3, 4, 7, 8, 12, 13


# Not frozen: building a frozen 15-field dataclass took 1.45 us against 0.23 us, on the live
# path once per row per process (decode_rows went from about 4 to 6 us a row). Treat it as
# read-only all the same.
@dataclass(slots=True)
class BufferedRow:
    """A decoded row. Times stay as stored (ms, ISO text); the properties convert them."""

    session_id: str
    seq: int
    id: str
    created_ms: int
    edited_ms: int | None  # None for a message's first version
    user_id: str
    port: int
    client_id: str | None
    dedup_key: str
    role: str
    content: str
    content_type: str
    source: str
    client_ts: str | None
    metadata: Any

    @property
    def version(self) -> int:
        """The row's version for live feeds: edited ms, or 0 for the first version."""
        return self.edited_ms or 0

    @property
    def created_at(self) -> datetime:
        return from_ms(self.created_ms)

    @property
    def edited_at(self) -> datetime | None:
        return from_ms(self.edited_ms) if self.edited_ms is not None else None

    @property
    def timestamp(self) -> datetime | None:
        """The client's own timestamp of the message, if it sent one."""
        return datetime.fromisoformat(self.client_ts) if self.client_ts else None


def encode(
    user_id: str,
    port: int,
    *,
    client_id: str | None,
    dedup_key: str,
    role: str,
    content: str,
    content_type: str,
    source: str,
    client_ts: datetime | None,
    metadata_json: str,
) -> str:
    """The row tail: the row's JSON object without its opening brace and without the fields
    ingest.lua prepends. `metadata_json` is inserted as already-encoded JSON."""
    row = orjson.dumps(
        {
            "user": user_id,
            "port": port,
            "cid": client_id,
            "dk": dedup_key,
            "role": role,
            "content": content,
            "ct": content_type,
            "src": source,
            "cts": client_ts.isoformat() if client_ts else None,
            "meta": orjson.Fragment(metadata_json),
        }
    )
    return row[1:].decode()


def decode(raw: bytes | str) -> BufferedRow:
    """One row as stored in a pending set, a pending-edits hash or a stream entry."""
    return from_json(orjson.loads(raw))


def from_json(row: dict[str, Any]) -> BufferedRow:
    """A row already parsed from JSON (a session channel publication is an array of rows)."""
    return BufferedRow(
        row["sid"],
        row["seq"],
        row["id"],
        row["at"],
        row["ed"],
        row["user"],
        row["port"],
        row["cid"],
        row["dk"],
        row["role"],
        row["content"],
        row["ct"],
        row["src"],
        row["cts"],
        row["meta"],
    )


_EMPTY_JSON = "{}"  # what most messages carry as metadata: no encoding needed


def copy_record(raw: bytes) -> tuple[Any, ...]:
    """One row as a COPY record for `messages`, in COLUMNS order: the writer's hot path.

    Straight from the parsed JSON to the tuple, with no `BufferedRow` in between (an object
    per row the writer would build and drop at once). uuids stay strings: asyncpg encodes a
    str for a uuid column, and skipping uuid.UUID() saved a tenth of the writer's CPU per row.
    """
    row = orjson.loads(raw)
    client_ts = row["cts"]
    edited = row["ed"]
    return (
        row["sid"],
        row["seq"],
        row["id"],
        row["user"],
        row["port"],
        row["cid"],
        row["dk"],
        row["role"],
        row["content"],
        row["ct"],
        row["src"],
        datetime.fromisoformat(client_ts) if client_ts else None,
        from_ms(row["at"]),
        from_ms(edited) if edited is not None else None,
        _EMPTY_JSON if (meta := row["meta"]) == {} else orjson.dumps(meta).decode(),
    )


@functools.lru_cache(maxsize=4096)
def from_ms(ms: int) -> datetime:
    """A row's millisecond timestamp as an aware datetime.

    Cached: ingest.lua stamps every row of one call with the same millisecond, so the writer
    meets each value hundreds of times in a row under load, and the cache hit costs a fifth
    of building the datetime (datetimes are immutable, so sharing one is safe).
    """
    return datetime.fromtimestamp(ms / 1000, UTC)
