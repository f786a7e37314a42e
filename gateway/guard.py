"""What every request must show before any route sees it, and what every response carries.

**Host.** A browser tricked by DNS rebinding sends our address a request whose Host names the
attacker's domain (`evil.example:8000`): refusing any Host not on the allow-list stops it,
in local and token mode alike. The default list holds the names of the address served:
`localhost`, `127.0.0.1` and `[::1]` for a loopback address, the address itself for another
one, and anything (`*`) for a wildcard bind (0.0.0.0, ::), whose names cannot be known:
set `GATEWAY_ALLOWED_HOSTS` there.

**Origin.** A page on another site may open a WebSocket to us or send a form-like POST: the
browser then sends that page's `Origin`. A request with an `Origin` is let through only if
it is our own origin (its host and port are the request's Host) or on
`GATEWAY_ALLOWED_ORIGINS`. Clients that send no Origin (IDE extensions, scripts, curl) are
not browsers acting for a page, and pass.

Refusals are 403 with the contract's error body; a WebSocket handshake is refused with the
same 403 where the server supports denial responses, else accepted and closed with 1008.

**Headers.** Every HTTP response gets `X-Content-Type-Options: nosniff`, `Referrer-Policy:
no-referrer` and a `frame-ancestors 'none'` policy (the UI page adds its full policy),
so no response is sniffed into a script, leaks a `?token=` URL, or is framed by another site.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import wire
from gateway.errors import CloseCode, ErrorCode

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Responses that set their own policy (the UI page) keep it; it has frame-ancestors too.
    "content-security-policy": "frame-ancestors 'none'",
    "x-frame-options": "DENY",  # for browsers that predate frame-ancestors
}


@dataclass(frozen=True, slots=True)
class Allowed:
    """The allow-lists in force: Host names (lowercase, without port; IPv6 in brackets) and
    extra origins (`scheme://host[:port]`). `*` in either allows anything."""

    hosts: frozenset[str]
    origins: frozenset[str]

    @classmethod
    def for_address(cls, host: str, hosts: str, origins: str) -> Allowed:
        """The lists for a server bound to `host`, from the comma-separated settings (empty:
        the defaults in the module docstring)."""
        named = _split(hosts)
        return cls(
            frozenset(h.lower() for h in named) if named else default_hosts(host),
            frozenset(o.lower().rstrip("/") for o in _split(origins)),
        )

    def host_allowed(self, host_header: str | None) -> bool:
        if "*" in self.hosts:
            return True
        name = _host_name(host_header)
        return name is not None and name in self.hosts

    def origin_allowed(self, origin: str, host_header: str | None) -> bool:
        origin = origin.lower().rstrip("/")
        if "*" in self.origins or origin in self.origins:
            return True
        parts = urlsplit(origin)
        # Our own origin: the page was served by us, under the Host it now sends.
        return (
            parts.scheme in ("http", "https")
            and host_header is not None
            and parts.netloc == host_header.lower()
        )


def default_hosts(host: str) -> frozenset[str]:
    """The names a server bound to `host` is reached by."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:  # a name: it, and nothing else
        return frozenset({host.lower()})
    if address.is_unspecified:
        return frozenset({"*"})
    if address.is_loopback:
        return frozenset(LOOPBACK_NAMES)
    return frozenset({f"[{address}]" if address.version == 6 else str(address)})


class Guard:
    """ASGI middleware: the Host and Origin checks, and the security headers."""

    def __init__(self, app: ASGIApp, allowed: Allowed) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self.refusal(headers.get("host"), headers.get("origin"))
        if refusal is not None:
            log.info("refused %s %s: %s", scope["type"], scope.get("path"), refusal)
            if scope["type"] == "http":
                await _send_403(send, refusal, websocket=False)
            else:
                await _refuse_handshake(scope, receive, send, refusal)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in response_headers:
                        response_headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """Why a request with these headers is refused, or None."""
        if not self.allowed.host_allowed(host):
            return (
                f"Host {host!r} is not one this gateway serves; add it to"
                " GATEWAY_ALLOWED_HOSTS if it should be"
            )
        if origin is not None and not self.allowed.origin_allowed(origin, host):
            return (
                f"Origin {origin!r} may not use this gateway; add it to"
                " GATEWAY_ALLOWED_ORIGINS if it should"
            )
        return None


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _host_name(host_header: str | None) -> str | None:
    """The Host header's name without its port (`[::1]:8000` → `[::1]`), lowercase."""
    if not host_header:
        return None
    value = host_header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else None
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _error_body(message: str) -> bytes:
    return wire.encode(wire.error(ErrorCode.FORBIDDEN, message))


async def _send_403(send: Send, message: str, *, websocket: bool) -> None:
    prefix = "websocket.http.response" if websocket else "http.response"
    body = _error_body(message)
    headers: Iterable[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()),
    ]
    await send({"type": f"{prefix}.start", "status": 403, "headers": list(headers)})
    await send({"type": f"{prefix}.body", "body": body})


async def _refuse_handshake(scope: Scope, receive: Receive, send: Send, message: str) -> None:
    """403 instead of the upgrade; servers without the denial-response extension can only
    accept and close, with 1008 (policy violation)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await _send_403(send, message, websocket=True)
        return
    first: Any = await receive()  # websocket.connect
    if first["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    # A close reason is at most 123 bytes.
    reason = message.encode()[:120].decode(errors="ignore")
    await send({"type": "websocket.close", "code": int(CloseCode.POLICY), "reason": reason})
