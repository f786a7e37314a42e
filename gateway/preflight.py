"""Checks a command runs before it starts anything: URLs that parse and answer, ports free.

Every failure is one `PreflightError` line naming what the operator set (the variable or the
flag), the target with its password masked, and the cause; the CLI prints it and exits 2.
Without these checks a bad URL surfaced as a traceback from deep inside asyncpg or redis-py,
and a port in use only after the embedded cluster had started and migrations had run.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import socket
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis

from gateway.auth import parse_duration

# How long a probe waits for a server before calling it unreachable: long enough for a
# server across a network, short enough that a typo in a port fails fast.
PROBE_TIMEOUT_S = 5.0

_DATABASE_SCHEMES = ("postgresql", "postgres")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
# `//user:password@` in any URL-like text, parsed or not.
_CREDENTIALS = re.compile(r"(//[^:/@]*):[^@/]*@")


class PreflightError(Exception):
    """A setting that would fail the command; the message is the one line to print."""


def check_at_least_one(flag: str, value: int) -> None:
    """A count flag the command cannot do with less than 1 of (`--batch`, `--top`)."""
    if value < 1:
        raise PreflightError(f"{flag}={value} must be at least 1")


def duration_flag(flag: str, text: str) -> int:
    """The seconds in a duration flag's value (`30d`), or the line naming the flag."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise PreflightError(f"{flag}: {exc}") from None


def masked(url: str) -> str:
    """`url` with its password replaced by `***`, fit for a log line or an error."""
    return _CREDENTIALS.sub(r"\1:***@", url)


def check_database_url(label: str, url: str) -> None:
    """Raise unless `url` is a PostgreSQL URL that accepts a connection."""
    example = "postgresql://user:password@host:5432/database"
    _check(label, url, _DATABASE_SCHEMES, example, _connect_database)


def check_redis_url(label: str, url: str) -> None:
    """Raise unless `url` is a Redis URL whose server answers PING."""
    _check(label, url, _REDIS_SCHEMES, "redis://[:password@]host:6379/0", _ping_redis)


def _check(
    label: str,
    url: str,
    schemes: tuple[str, ...],
    example: str,
    probe: Callable[[str], Coroutine[Any, Any, None]],
) -> None:
    _check_shape(label, url, schemes, example)
    try:
        asyncio.run(probe(url))
    except Exception as exc:  # any failure of the probe is the operator's one line
        raise PreflightError(f"{label}={masked(url)}: cannot connect: {_cause(exc)}") from None


def check_port_free(host: str, port: int, label: str) -> None:
    """Raise if `host:port` cannot be bound now (in use, or not an address of this machine).

    Binds the way uvicorn will (SO_REUSEADDR, so a port in TIME_WAIT is free) and lets go at
    once; a program that takes the port in between still fails at uvicorn's own bind.
    Port 0 (any free port) always passes.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PreflightError(f"cannot bind {host}:{port} ({label}): {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PreflightError(
                    f"port {port} on {host} is in use ({label}): another program listens"
                    " there; stop it or choose another port"
                ) from None
            raise PreflightError(f"cannot bind {host}:{port} ({label}): {exc.strerror}") from None


def _check_shape(label: str, url: str, schemes: tuple[str, ...], example: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number or too big
    except ValueError as exc:
        raise PreflightError(f"{label}={masked(url)}: {exc}; expected {example}") from None
    if parts.scheme not in schemes:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise PreflightError(
            f"{label}={masked(url)} has {got}; expected {' or '.join(s + '://' for s in schemes)}"
            f" ({example})"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise PreflightError(f"{label}={masked(url)} names no host; expected {example}")


async def _connect_database(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=PROBE_TIMEOUT_S)
    await conn.close()


async def _ping_redis(url: str) -> None:
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S
    )
    try:
        await client.ping()  # type: ignore[misc]  # redis-py 7 types sync|async
    finally:
        await client.aclose()


def _cause(exc: BaseException) -> str:
    """The reason in a few words: the OS error text, else the exception's own message."""
    if isinstance(exc, TimeoutError) or isinstance(exc.__cause__, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    # redis-py wraps the socket's OSError in its own ConnectionError: look one level down.
    for error in (exc, exc.__cause__, exc.__context__):
        if isinstance(error, OSError) and error.errno:
            return os.strerror(error.errno)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
