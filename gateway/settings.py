"""One frozen settings object, built from `GATEWAY_*` environment variables and CLI flags.

Nothing else in the project reads `os.environ`: the CLI calls `Settings.from_env()` and passes
overrides from its flags; workers spawned by uvicorn rebuild the same object from the
environment the CLI exported (see `Settings.to_env`).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import logging
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import platformdirs

from storage.db import PoolSettings

log = logging.getLogger(__name__)

ENV_PREFIX = "GATEWAY_"
# The data folder of earlier versions, in the working directory.
LEGACY_DATA_DIR = Path(".gateway-data")


def default_data_dir() -> Path:
    """`./.gateway-data` where it exists (earlier versions kept their data there), else the
    platform's user data folder (`~/.local/share/chat-gateway` on Linux, honouring
    XDG_DATA_HOME), so a command's data does not depend on the folder it is run from."""
    return LEGACY_DATA_DIR if LEGACY_DATA_DIR.is_dir() else platform_data_dir()


def platform_data_dir() -> Path:
    """This user's data folder for chat-gateway, as the platform defines it."""
    return Path(platformdirs.user_data_dir("chat-gateway", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Every knob of the gateway; each field says what its default means."""

    # PostgreSQL DSN. Empty: `serve` starts an embedded PostgreSQL under `data_dir`.
    database_url: str = ""
    # Redis URL. Empty: `serve` starts an embedded Valkey under `data_dir`.
    redis_url: str = ""
    # HMAC secret for HS256 tokens (`chat-gateway token` mints them). Empty, and no public
    # key or JWKS URL below: local single-user mode (user `local_user`, loopback only).
    auth_secret: str = ""
    # Tokens from an identity service instead: its PEM public key (the text or a file's
    # path) for RS256/ES256, or the URL of its JWKS document. See gateway/auth.py.
    auth_public_key: str = ""
    auth_jwks_url: str = ""
    # Checked when set: a token's `aud` must hold this, its `iss` must equal this.
    auth_audience: str = ""
    auth_issuer: str = ""
    local_user: str = "me"
    # Token mode: users who are operators (the database health report) without the `admin`
    # claim in their tokens, comma-separated. Empty: only tokens with that claim.
    admin_users: str = ""
    # Local mode only. Empty: any process that reaches the port is `local_user`, which on a
    # shared machine means every account. `auto`: requests must carry the token kept in
    # `<data_dir>/local-token` (created 0600 on first start; `serve --local-token`) as a
    # Bearer header, `?token=` or the UI's cookie. Any other value is the token itself.
    local_token: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    # Host header names requests may carry, comma-separated (`*`: any), against DNS
    # rebinding. Empty: the names of `host` (localhost, 127.0.0.1 and [::1] for loopback;
    # any for 0.0.0.0 or ::). See gateway/guard.py.
    allowed_hosts: str = ""
    # Origins besides the gateway's own whose pages may use it (WebSocket and HTTP),
    # comma-separated `scheme://host[:port]` (`*`: any). Empty: only the gateway's own
    # origin; requests without an Origin (IDE extensions, scripts) are never refused for it.
    allowed_origins: str = ""
    workers: int = 1
    # Run the batch writer inside `serve`. False: only the gateway (run `chat-gateway writer`).
    run_writer: bool = True
    # Where the embedded servers keep their data across restarts (see default_data_dir).
    data_dir: Path = field(default_factory=default_data_dir)
    # Every Redis key starts with this; tests isolate themselves with their own prefix.
    key_prefix: str = "cg:"
    # Largest WebSocket frame accepted; larger frames close the connection with 1009.
    max_frame_bytes: int = 1 << 20
    # Largest message content in UTF-8 bytes; larger gets a `too_large` error frame.
    max_content_bytes: int = 256 << 10
    # Largest `metadata` object, encoded as JSON.
    max_metadata_bytes: int = 16 << 10
    # Most items in one `extracted` frame.
    max_batch_items: int = 500
    # Most ports one `hello` may name (an IDE serves a few); more gets `too_large`.
    max_ports_per_hello: int = 64
    # Frames a connection may have in flight (read but not yet answered) before the gateway
    # stops reading from it: per-connection backpressure instead of an unbounded queue.
    max_inflight_frames: int = 1000
    # Live events a connection may have queued, in bytes; a subscriber that falls further
    # behind is closed with 1013 (it resumes with since_seq).
    max_outbox_bytes: int = 8 << 20
    # Messages in the Redis buffer not yet committed to PostgreSQL (PostgreSQL down or slow,
    # no writer running) past which new messages get `overloaded` with `retry_after_ms`,
    # nothing stored, instead of Redis growing until it runs out of memory; acked ones stay,
    # and service resumes by itself as the writers catch up. A frame can go past it by its
    # own items. Size Redis's maxmemory for it (compose.yaml); 0: no cap.
    max_buffered_messages: int = 1_000_000
    # Frames waiting in this process for the next ingest script call, across all
    # connections; past it a frame gets `overloaded` at once (its connection keeps reading).
    # 0: no cap (each connection still caps its own frames, max_inflight_frames).
    max_queued_ingests: int = 100_000
    # Limits of gateway/rate_limits.py, counted per gateway process; 0: off. Messages per
    # second one connection may send (a token bucket holding `rate_limit_burst_s` seconds
    # of it); past it a frame gets `rate_limited` with `retry_after_ms`, nothing stored.
    rate_limit_connection_msgs_s: float = 10_000.0
    # The same for all connections of one user together. Token mode only: local mode has
    # one user, whom a limit would protect from nobody.
    rate_limit_user_msgs_s: float = 2_000.0
    rate_limit_burst_s: float = 2.0
    # Connections one user may hold open (token mode only); past it a new one gets a
    # `forbidden` error frame and is closed with 1008.
    max_connections_per_user: int = 100
    # Subscriptions one connection may hold; past it `subscribe` gets `forbidden`.
    max_subscriptions_per_connection: int = 1_000
    # Presence: an IDE connection's ports stay online this long after the last heartbeat of
    # its process (heartbeats every third of it), so a dead process's ports go offline.
    presence_ttl_s: float = 15.0
    # How long a `durable: true` frame waits for the PostgreSQL commit before an error.
    durable_timeout_s: float = 30.0
    # Writer: most stream entries read per batch, and how long it blocks waiting for entries.
    writer_batch_entries: int = 500
    writer_block_ms: int = 50
    # Writer: entries pending longer than this on a dead consumer are claimed by a live one.
    writer_claim_idle_ms: int = 30_000
    # Writer: its liveness key in Redis expires this long after its last heartbeat (it beats
    # every third of it); the other writers then take over its pending entries at once, so a
    # killed writer's backlog waits at most this long plus a sixth, not writer_claim_idle_ms.
    # 0: no liveness key, takeover by writer_claim_idle_ms only; give all writers the same.
    writer_alive_ttl_ms: int = 3_000
    # `chat-gateway writer` serves its Prometheus metrics (rows written, batch sizes and
    # times, search indexing, slow queries) on this port of `host`; 0: not served. A
    # gateway's own writer reports on the gateway's /metrics instead.
    writer_metrics_port: int = 0
    # Dedup and seq state of a session idle this long leaves Redis; it is reloaded from
    # PostgreSQL on the session's next message.
    session_state_ttl_s: int = 7 * 24 * 3600
    # The PostgreSQL pool of each process: at most this many connections (a gateway worker;
    # `chat-gateway writer` uses 3). Size PostgreSQL's max_connections for workers x this.
    database_pool_size: int = 10
    # Connections the pool keeps open even when idle (each holds a PostgreSQL backend, about
    # 10 MB); 0: none, the first query after a quiet spell connects.
    database_pool_min_size: int = 1
    # How long opening one connection may take before the query waiting for it fails.
    database_connect_timeout_s: float = 10.0
    # PostgreSQL cancels a statement running longer (its statement_timeout, set on each
    # pooled connection), and the query fails with QueryCanceledError; 0: no limit.
    database_statement_timeout_s: float = 60.0
    # A pooled connection idle this long is closed (down to database_pool_min_size); 0: never.
    database_idle_lifetime_s: float = 300.0
    # Where /metrics is served: empty, on the public listener; `host:port`, on that address
    # only (one worker; the public /metrics is then 404); `off`, nowhere. See
    # gateway/metrics_listener.py.
    metrics_address: str = ""
    # Queries slower than this are counted in /metrics and logged as warnings; slower than
    # the second, counted apart too and logged as errors (every query's count and mean time
    # are in /metrics as well).
    slow_query_s: float = 0.5
    very_slow_query_s: float = 5.0
    # /readyz answers 503 when the oldest unwritten ingest entry is older than this.
    ready_max_writer_lag_s: float = 30.0
    # `text` (human) or `json` (one object per line, for log shippers).
    log_format: str = "text"
    # CPython's first and third GC thresholds for gateway processes (its defaults are 700
    # and 10); see gateway/server.py:tune_gc for why and the measurements.
    gc_young_collection_threshold: int = 50_000
    gc_full_collection_threshold: int = 1000
    log_level: str = "info"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `GATEWAY_<FIELD>` variables, then explicit overrides (CLI flags).

        Each variable is parsed as its field's type; a bad value raises `ValueError` with one
        line naming the variable (`GATEWAY_PORT='x' is not a valid int`). A `GATEWAY_*`
        variable that names no field is ignored with a warning naming the closest field:
        a typo would otherwise leave its setting at the default without a word.
        """
        env = os.environ if environ is None else environ
        types = _field_types(cls)
        _warn_unknown(env, types)
        values: dict[str, Any] = {}
        for name, kind in types.items():
            raw = env.get(_env_name(name))
            if raw is not None:
                values[name] = _parse(name, kind, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that rebuilds these settings in a worker process."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[_env_name(f.name)] = (
                ("1" if value else "0") if isinstance(value, bool) else str(value)
            )
        return out

    def pool_settings(self, max_size: int | None = None) -> PoolSettings:
        """The PostgreSQL pool these settings describe (`max_size`: a command's own size)."""
        return PoolSettings(
            max_size=max_size or self.database_pool_size,
            min_size=self.database_pool_min_size,
            connect_timeout_s=self.database_connect_timeout_s,
            statement_timeout_s=self.database_statement_timeout_s,
            idle_lifetime_s=self.database_idle_lifetime_s,
        )

    @property
    def admin_user_ids(self) -> frozenset[str]:
        """`admin_users` as a set of user ids."""
        return frozenset(u.strip() for u in self.admin_users.split(",") if u.strip())

    @property
    def local_mode(self) -> bool:
        """No source of trust for tokens: every connection is `local_user`."""
        return not (self.auth_secret or self.auth_public_key or self.auth_jwks_url)

    def validate(self, names: Mapping[str, str] | None = None) -> None:
        """Raise `ValueError` with one line naming the first setting out of its range.

        `from_env` checks each value's type; this checks what a type cannot say (a port past
        65535, no workers, a host that is no address), so a command fails before it starts
        anything rather than after. `names` says how a field was set when not by its
        variable (the CLI passes the flags it was given, like `{"port": "--port"}`), so the
        line names what the operator typed. URLs are the CLI's to check (it also connects).
        """
        for name, problem in _range_problems(self):
            label = (names or {}).get(name) or _env_name(name)
            raise ValueError(f"{label}={getattr(self, name)!r} {problem}")


def _env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _field_types(cls: type[Settings]) -> dict[str, type]:
    """Each field's resolved type (the annotations are strings under `from __future__`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _warn_unknown(env: Mapping[str, str], types: Mapping[str, type]) -> None:
    for variable in sorted(env):
        if not variable.startswith(ENV_PREFIX):
            continue
        name = variable.removeprefix(ENV_PREFIX).lower()
        if name in types and variable == _env_name(name):
            continue
        # Matched without the prefix, which every candidate shares and would make anything
        # look close.
        close = difflib.get_close_matches(name, types, n=1)
        hint = f" (did you mean {_env_name(close[0])}?)" if close else ""
        log.warning("%s is not a setting%s; ignored", variable, hint)


# msgspec's lax mode reads `true`/`false`/`1`/`0` (any case); these spellings were accepted
# before msgspec parsed settings and stay accepted.
_BOOL_SPELLINGS = {"yes": "true", "on": "true", "no": "false", "off": "false", "": "false"}


def _parse(name: str, kind: type, raw: str) -> Any:
    """`raw` as a value of `kind`; `strict=False` is msgspec's mode for text input (env vars)."""
    text = _BOOL_SPELLINGS.get(raw.lower(), raw) if kind is bool else raw
    try:
        return msgspec.convert(text, kind, strict=False, dec_hook=_decode_extra)
    except msgspec.ValidationError:
        raise ValueError(f"{_env_name(name)}={raw!r} is not a valid {kind.__name__}") from None


def _decode_extra(kind: type, value: Any) -> Any:
    """msgspec's hook for the field types it has no decoder for."""
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(f"no settings decoder for {kind!r}")


# Ranges the fields' types cannot express. Any other number must merely not be negative.
_PORT_FIELDS = ("port", "writer_metrics_port")
# Zero would mean nothing works (no workers, no connection, every frame too large) or, for
# `writer_block_ms`, XREADGROUP blocking forever.
_POSITIVE_FIELDS = (
    "workers", "database_pool_size", "max_frame_bytes", "max_content_bytes",
    "max_metadata_bytes", "max_batch_items", "max_ports_per_hello", "max_inflight_frames",
    "max_outbox_bytes",
    "writer_batch_entries", "writer_block_ms", "writer_claim_idle_ms", "presence_ttl_s",
    "durable_timeout_s", "session_state_ttl_s", "database_connect_timeout_s",
)  # fmt: skip
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LOG_FORMATS = ("text", "json")
# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _range_problems(settings: Settings) -> typing.Iterator[tuple[str, str]]:
    """Each field whose value is out of its range, with what is wrong, in field order."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if f.name in _PORT_FIELDS and not 0 <= value <= 65535:
            yield f.name, "is out of range: a TCP port is 0 to 65535"
        elif f.name in _POSITIVE_FIELDS and value <= 0:
            yield f.name, "must be greater than 0"
        elif value < 0:
            yield f.name, "must not be negative"
    if settings.database_pool_min_size > settings.database_pool_size:
        yield "database_pool_min_size", (
            f"is more than GATEWAY_DATABASE_POOL_SIZE={settings.database_pool_size}"
        )
    if not _is_host(settings.host):
        yield "host", "is not an IP address or a host name"
    if settings.log_level not in _LOG_LEVELS:
        yield "log_level", f"is not one of {', '.join(_LOG_LEVELS)}"
    if settings.log_format not in _LOG_FORMATS:
        yield "log_format", f"is not one of {', '.join(_LOG_FORMATS)}"


def _is_host(host: str) -> bool:
    """An IP address (v4 or v6) or a syntactically valid host name; whether the name
    resolves is for the bind check to find (it needs a resolver, this does not)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # An all-digit last label is a mistyped address (`300.1.1.1`), not a name.
        last = host.rstrip(".").rsplit(".", 1)[-1]
        return len(host) <= 253 and bool(_HOST_NAME.fullmatch(host)) and not last.isdigit()
    return True
