"""Signed bearer tokens: `<payload>.<signature>`, both base64url, HMAC-SHA256 over the payload.

The payload is `{"u": user_id, "exp": unix_seconds}`. No token store: anyone holding the
secret can mint tokens (`chat-gateway token --user U`), and a token is valid until it expires.
Without a secret the gateway is in local single-user mode and no token is needed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

import orjson

from gateway.errors import Unauthorized
from gateway.settings import Settings

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_USER_CHARS = 128


def parse_duration(text: str) -> int:
    """Seconds in a duration like `90s`, `15m`, `12h` or `30d`."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 12h or 1d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def issue_token(secret: str, user_id: str, ttl_s: int, *, now: float | None = None) -> str:
    if not user_id or len(user_id) > MAX_USER_CHARS:
        raise ValueError(f"user id must be 1 to {MAX_USER_CHARS} characters")
    issued = time.time() if now is None else now
    payload = _b64(orjson.dumps({"u": user_id, "exp": int(issued + ttl_s)}))
    return f"{payload}.{_sign(secret, payload)}"


def verify_token(secret: str, token: str, *, now: float | None = None) -> str:
    """The token's user id, or `Unauthorized` saying what is wrong with it."""
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise Unauthorized("malformed token")
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    if not hmac.compare_digest(signature.encode(), _sign(secret, payload).encode()):
        raise Unauthorized("invalid token signature")
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        user_id, expires = claims["u"], claims["exp"]
    except (ValueError, KeyError, TypeError):
        raise Unauthorized("malformed token") from None
    if not isinstance(user_id, str) or not isinstance(expires, int):
        raise Unauthorized("malformed token")
    if (time.time() if now is None else now) >= expires:
        raise Unauthorized("token expired")
    return user_id


def bearer_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token from `Authorization: Bearer …`, else from `?token=` (browsers' WebSockets
    cannot set headers)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None


def authenticate(settings: Settings, authorization: str | None, query_token: str | None) -> str:
    """The user of a request: the local user in local mode, else the token's user."""
    if settings.local_mode:
        return settings.local_user
    token = bearer_token(authorization, query_token)
    if token is None:
        raise Unauthorized("a token is required: Authorization: Bearer <token> or ?token=")
    return verify_token(settings.auth_secret, token)


def _sign(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return _b64(digest)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
