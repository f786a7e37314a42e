"""Every Redis key and channel name, built in one place from one prefix.

Tests and co-tenant deployments isolate themselves by prefix. Every name is the prefix plus one
of `TEMPLATES`, whose `{holes}` are filled in: `Keys`' methods fill them in Python, and
`lua_prelude` turns the same templates into Lua functions that the scripts prepend (see
`script`), so the Lua scripts build no name by hand. tests/test_keys.py runs the scripts and
checks that what they touch is what `Keys` names.

Names are plain strings: the ingest script touches keys it derives from its arguments, which
is fine on a standalone Redis or a primary/replica pair; sharding the ingest stream across a
cluster is separate work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storage.scripts import lua

WRITER_GROUP = "writers"

# Name -> the key after the prefix, with `{hole}`s. Each name is the `Keys` member that builds
# it (its docstring says what the key holds). Holes are Lua identifiers: the prelude's
# functions take them as parameters, in the order they first appear.
TEMPLATES: dict[str, str] = {
    "stream": "ingest",
    "index_stream": "index",
    "dead_letters": "dead",
    "active": "active:{user}:{port}",
    "session_state": "s:{session}",
    "pending": "b:{session}",
    "pending_edits": "e:{session}",
    "port_buffered": "bp:{user}:{port}",
    "buffered": "buffered",
    "session_channel": "ev:s:{session}",
    "user_channel": "ev:u:{user}",
    "presence": "presence",
    "presence_port": "presence:{user}:{port}",
    "persisted_channel": "persisted:{process}",
    "writer_alive": "alive:{consumer}",
}
_HOLE = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    def _name(self, template: str, **holes: str | int) -> str:
        return self.prefix + TEMPLATES[template].format(**holes)

    @property
    def stream(self) -> str:
        """The ingest stream the batch writers drain through the consumer group."""
        return self._name("stream")

    @property
    def index_stream(self) -> str:
        """Stream of committed (session_id, seq) keys to (re)index for search: one entry per
        writer batch, field `k` = JSON [[session_id, seq], ...]. Search indexing reads it off
        the ingest hot path (see docs/search.md)."""
        return self._name("index_stream")

    @property
    def dead_letters(self) -> str:
        """Stream of ingest entries PostgreSQL refused, kept for inspection and replay."""
        return self._name("dead_letters")

    def active(self, user_id: str, port: int) -> str:
        """String: the id of the user's active session on the port."""
        return self._name("active", user=user_id, port=port)

    def session_state(self, session_id: str) -> str:
        """Hash: field `#` is the last seq; every other field is a dedup key whose value is
        `seq|id|content_hash|created_ms`. Expires when the session is idle; reloaded from
        PostgreSQL on demand."""
        return self._name("session_state", session=session_id)

    def pending(self, session_id: str) -> str:
        """Sorted set by seq: the session's new rows still in the buffer (not yet committed),
        for read-your-writes. The writer removes a row once it is committed."""
        return self._name("pending", session=session_id)

    def pending_edits(self, session_id: str) -> str:
        """Hash seq -> row: the newest buffered edit of each message, until it is committed.
        Kept apart from `pending` so the writer can drop committed new rows by seq range."""
        return self._name("pending_edits", session=session_id)

    def port_buffered(self, user_id: str, port: int) -> str:
        """Set of the user's sessions on the port that have rows in the buffer (in `pending`
        or `pending_edits`), whatever their age: the port's reads look there, not at its few
        newest sessions. The ingest script adds a session as it stores a row; the writer's
        settle script removes it once both are empty, in the same script, so a session that
        still holds rows is never missing."""
        return self._name("port_buffered", user=user_id, port=port)

    @property
    def buffered(self) -> str:
        """String: how many rows all `pending` sets and `pending_edits` hashes hold (messages
        acked but not yet committed), for the buffer cap. The ingest script adds the rows it
        adds and the settle script subtracts the rows it removes (clamped at 0), so replays
        and concurrent writers keep it exact."""
        return self._name("buffered")

    def session_channel(self, session_id: str) -> str:
        """Pub/sub: the session's stored rows and edits, published by the ingest script in seq
        order (one JSON array of rows per script call)."""
        return self._name("session_channel", session=session_id)

    def user_channel(self, user_id: str) -> str:
        """Pub/sub: the user's session events (created, updated, archived, deleted) and
        presence changes, as JSON objects."""
        return self._name("user_channel", user=user_id)

    def presence(self) -> str:
        """Sorted set of `user|port|connection` by expiry time: which IDE connections serve
        which ports, kept alive by the process that holds the connection."""
        return self._name("presence")

    def presence_port(self, user_id: str, port: int) -> str:
        """Sorted set of the connection ids serving the user's port, by expiry time."""
        return self._name("presence_port", user=user_id, port=port)

    def persisted_channel(self, process_id: str) -> str:
        """Pub/sub channel on which writers tell one gateway process its durable frames are
        committed."""
        return self._name("persisted_channel", process=process_id)

    def writer_alive(self, consumer: str) -> str:
        """String with a TTL: set while the stream consumer named `consumer` (a batch writer
        or a search indexer; names are unique) is alive, refreshed by its heartbeat. Once it
        is gone, another consumer takes over that consumer's pending entries at once."""
        return self._name("writer_alive", consumer=consumer)


def lua_prelude() -> str:
    """Lua source defining `key_names(prefix)`, which returns a table of functions, one per
    template, each building that name: `key_names(p).active(user, port)` is
    `Keys(p).active(user, port)`. Plain concatenation, as fast as names built by hand.

    One line, so the line numbers in a script's error messages stay those of its file."""
    functions = []
    for name, template in TEMPLATES.items():
        holes = list(dict.fromkeys(_HOLE.findall(template)))
        parts = ["prefix"]
        for i, piece in enumerate(_HOLE.split(template)):
            if i % 2:  # a hole's name
                parts.append(piece)
            elif piece:
                parts.append(_lua_string(piece))
        functions.append(f"{name} = function({', '.join(holes)}) return {' .. '.join(parts)} end")
    return f"local function key_names(prefix) return {{{', '.join(functions)}}} end"


def script(name: str) -> str:
    """The source of `storage/<name>` with `lua_prelude` prepended, on the first line after
    the script's shebang line (`#!lua flags=...`, which must stay first) if it has one."""
    source = lua(name)
    if source.startswith("#!"):
        shebang, _, body = source.partition("\n")
        return f"{shebang}\n{lua_prelude()} {body}"
    return f"{lua_prelude()} {source}"


def _lua_string(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_:.-]*", text):
        raise ValueError(f"key template piece {text!r} needs escaping in Lua")
    return f"'{text}'"
