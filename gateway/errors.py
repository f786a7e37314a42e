"""Error codes, close codes and the exception tree, defined once for the whole gateway.

Every error a client can see is a `GatewayError`: it carries the contract's error `code`, the
HTTP status it maps to, and optional `details`. The WebSocket loop turns one into an `error`
frame; the HTTP API into `{"error": {...}}` with that status.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    INTERNAL = "internal"


class CloseCode(IntEnum):
    """WebSocket close codes of the contract, and whether a client should reconnect."""

    NORMAL = 1000  # done; reconnect only if you want to
    UNSUPPORTED_DATA = 1003  # binary frame: fix the client, do not retry as is
    POLICY = 1008  # abuse: do not reconnect at once
    TOO_BIG = 1009  # frame over the size limit: fix the client
    INTERNAL = 1011  # server bug or dependency down: reconnect with backoff
    TRY_AGAIN = 1013  # overloaded or too slow a reader: reconnect (with since_seq) later
    UNAUTHORIZED = 4401  # bad or missing token: get a new one first


class GatewayError(Exception):
    """Base of every error shown to a client."""

    code: ErrorCode = ErrorCode.INTERNAL
    http_status: int = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(GatewayError):
    code = ErrorCode.BAD_REQUEST
    http_status = 400


class Unauthorized(GatewayError):
    code = ErrorCode.UNAUTHORIZED
    http_status = 401


class Forbidden(GatewayError):
    """Understood and refused by policy: a foreign origin, or a limit on how many."""

    code = ErrorCode.FORBIDDEN
    http_status = 403


class NotFound(GatewayError):
    code = ErrorCode.NOT_FOUND
    http_status = 404


class TooLarge(GatewayError):
    code = ErrorCode.TOO_LARGE
    http_status = 413


class Overloaded(GatewayError):
    """The gateway or a dependency cannot take more now; retry after `retry_after_ms`."""

    code = ErrorCode.OVERLOADED
    http_status = 503

    def __init__(self, message: str, *, retry_after_ms: int) -> None:
        super().__init__(message, details={"retry_after_ms": retry_after_ms})


class RateLimited(GatewayError):
    """This client (or user) sends faster than its limit; retry after `retry_after_ms`."""

    code = ErrorCode.RATE_LIMITED
    http_status = 429

    def __init__(self, message: str, *, retry_after_ms: int) -> None:
        super().__init__(message, details={"retry_after_ms": retry_after_ms})


class Internal(GatewayError):
    code = ErrorCode.INTERNAL
    http_status = 500
