"""Limits on how much one connection or one user may do: messages per second (token
buckets), connections per user, subscriptions per connection.

The defaults protect a shared deployment without getting in a local user's way:

* per connection (both modes), messages per second: far above one IDE or tab, a runaway
  client is what it stops;
* per user (token mode only: local mode has exactly one user, so there is nobody to protect
  from them, and a flat-out load test as that user must not be throttled): messages per
  second and open connections.

Everything is counted in this process. With `--workers N` a user may reach N times the
per-user figures; a limit shared across processes would cost a Redis round trip per frame.
A limit of 0 is off.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.errors import Forbidden, RateLimited
from gateway.settings import Settings


class TokenBucket:
    """`rate` tokens a second, holding at most `capacity`; starts full.

    A frame of n messages takes n tokens. One larger than the whole bucket may go when the
    bucket is full (it empties it), so no frame the size limits allow is refused forever.
    """

    __slots__ = ("_at", "_clock", "_tokens", "capacity", "rate")

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._at = clock()

    def take(self, count: int) -> int:
        """Take `count` tokens and return 0, or take none and return the milliseconds until
        they are there."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        cost = min(float(count), self.capacity)
        if self._tokens >= cost:
            self._tokens -= cost
            return 0
        return max(1, math.ceil((cost - self._tokens) / self.rate * 1000))

    def refund(self, count: int) -> None:
        """Give back tokens taken for a frame that another limit then refused."""
        self._tokens = min(self.capacity, self._tokens + count)


def _bucket(rate: float, burst_s: float) -> TokenBucket | None:
    return TokenBucket(rate, max(1.0, rate * burst_s)) if rate > 0 else None


@dataclass
class _User:
    connections: int = 0
    bucket: TokenBucket | None = None
    # Every HTTP send of the user's, as one connection would (HTTP sends hold no connection).
    http: TokenBucket | None = None


@dataclass
class RateLimits:
    """The limits of one gateway process, and the per-user state they keep."""

    per_connection_rate: float
    per_user_rate: float
    burst_s: float
    max_connections_per_user: int
    max_subscriptions_per_connection: int
    _users: dict[str, _User] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        per_user = not settings.local_mode
        return cls(
            per_connection_rate=settings.rate_limit_connection_msgs_s,
            per_user_rate=settings.rate_limit_user_msgs_s if per_user else 0.0,
            burst_s=settings.rate_limit_burst_s,
            max_connections_per_user=settings.max_connections_per_user if per_user else 0,
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        )

    def open_connection(self, user_id: str) -> ConnectionLimits:
        """Count a new connection of `user_id`; `Forbidden` past the user's limit. Call
        `close` on the result when the connection ends."""
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _User(bucket=_bucket(self.per_user_rate, self.burst_s))
        limit = self.max_connections_per_user
        if limit and user.connections >= limit:
            raise Forbidden(
                f"user {user_id} has {user.connections} connections open here, the limit"
                " (GATEWAY_MAX_CONNECTIONS_PER_USER); close some first"
            )
        user.connections += 1
        own = _bucket(self.per_connection_rate, self.burst_s)
        return ConnectionLimits(self, user_id, user, own)

    def connection_closed(self, user_id: str, user: _User) -> None:
        user.connections -= 1
        if user.connections <= 0 and user.http is None:
            self._users.pop(user_id, None)

    def check_http_messages(self, user_id: str, count: int) -> None:
        """Take `count` messages sent over HTTP from the user's HTTP bucket (the per-connection
        rate: all of a user's HTTP sends are one "connection") and from the user's bucket, or
        raise `RateLimited` with when to retry. The user's entry stays while they send over
        HTTP: one per user who ever did, in this process."""
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _User(bucket=_bucket(self.per_user_rate, self.burst_s))
        if user.http is None:
            user.http = _bucket(self.per_connection_rate, self.burst_s)
        ConnectionLimits(self, user_id, user, user.http).check_messages(count, over_http=True)


class ConnectionLimits:
    """One connection's view of the limits: its own bucket and its user's."""

    __slots__ = ("_bucket", "_closed", "_limits", "_user", "_user_id")

    def __init__(
        self, limits: RateLimits, user_id: str, user: _User, bucket: TokenBucket | None
    ) -> None:
        self._limits = limits
        self._user_id = user_id
        self._user = user
        self._bucket = bucket
        self._closed = False

    def check_messages(self, count: int, *, over_http: bool = False) -> None:
        """Take `count` messages from the connection's and the user's buckets, or raise
        `RateLimited` with when to retry (nothing taken from either then)."""
        own, users = self._bucket, self._user.bucket
        if own is not None and (wait := own.take(count)):
            where = "over HTTP" if over_http else "on this connection"
            raise RateLimited(
                f"more than {own.rate:g} messages/s {where}"
                " (GATEWAY_RATE_LIMIT_CONNECTION_MSGS_S); nothing was stored",
                retry_after_ms=wait,
            )
        if users is not None and (wait := users.take(count)):
            if own is not None:
                own.refund(count)  # the frame was not taken
            raise RateLimited(
                f"more than {users.rate:g} messages/s for user {self._user_id}"
                " (GATEWAY_RATE_LIMIT_USER_MSGS_S); nothing was stored",
                retry_after_ms=wait,
            )

    def check_subscriptions(self, current: int) -> None:
        """Raise `Forbidden` if a connection holding `current` subscriptions may not add one."""
        limit = self._limits.max_subscriptions_per_connection
        if limit and current >= limit:
            raise Forbidden(
                f"this connection holds {current} subscriptions, the limit"
                " (GATEWAY_MAX_SUBSCRIPTIONS_PER_CONNECTION); unsubscribe first"
            )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._limits.connection_closed(self._user_id, self._user)
