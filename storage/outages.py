"""Telling a dependency that is down from a bug, for the loops that retry until it is back.

The writer, the indexer, the ingest flusher and the presence heartbeat retry whatever failed.
While PostgreSQL or Redis is unreachable they fail at every attempt, for as long as the
outage lasts: one warning line with the reason each time says enough, where a traceback each
time buried the log. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging

import asyncpg
import redis.exceptions

# Connection refused or reset, a server shutting down or not yet accepting, a timeout.
_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.InterfaceError,  # the connection was closed under a query
)


def is_outage(exc: BaseException) -> bool:
    """The error says a server is unreachable or going away, not that our code is wrong."""
    return isinstance(exc, _OUTAGES)


def log_failure(log: logging.Logger, what: str, exc: BaseException) -> None:
    """Log a failed attempt: one line for an outage, the traceback for anything else."""
    if is_outage(exc):
        # The text only: a record holding the error would keep its traceback's frames (and
        # whatever they reference) alive for as long as the record lives.
        log.warning("%s: %s", what, str(exc) or type(exc).__name__)
    else:
        log.error(what, exc_info=exc)
