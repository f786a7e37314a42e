"""`/metrics` on an address of its own (`GATEWAY_METRICS_ADDRESS`), off the public listener.

Metrics tell whoever reads them the buffer depth, connection counts and query rates: an
operator's business, not every client's. With `GATEWAY_METRICS_ADDRESS=127.0.0.1:9100` each
gateway process answers Prometheus there and the public listener's `/metrics` is 404; `off`
serves them nowhere; empty (the default) keeps them on the public listener.

The listener is a few lines of asyncio in the gateway's own event loop, not a second uvicorn
(which would take over the process's signal handlers) nor prometheus-client's threaded server
(whose scrape cannot await the Redis read the shared-state gauges need). It answers `GET
/metrics` and nothing else, one request per connection, with bounded reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

OFF = "off"
_MAX_REQUEST_BYTES = 8192
_READ_TIMEOUT_S = 5.0

Render = Callable[[], Awaitable[tuple[bytes, str]]]


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int


def parse_address(text: str) -> Address | None:
    """`host:port` (IPv6 in brackets) as an Address; None for empty or `off`. A bad value is a
    ValueError naming the setting."""
    if text in ("", OFF):
        return None
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    problem = None
    # Port 0: any free port (tests read the one bound from the app's state).
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        problem = "is not host:port with a port from 0 to 65535"
    else:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                problem = "needs an IP address (or localhost) as its host"
    if problem:
        raise ValueError(f"GATEWAY_METRICS_ADDRESS={text!r} {problem}, or `off`")
    return Address(host, int(port_text))


@contextlib.asynccontextmanager
async def metrics_listener(address: Address, render: Render) -> AsyncIterator[int]:
    """Serve `render`'s exposition at http://address/metrics while the context lasts; yields
    the port bound (the given one, or the one chosen for port 0)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > _MAX_REQUEST_BYTES:
                raise ValueError("request too long")
            method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "GET" and path.split("?", 1)[0] == "/metrics":
                body, content_type = await render()
                status = "200 OK"
            else:
                body, content_type, status = b"not found\n", "text/plain", "404 Not Found"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that sent no complete, sane request gets nothing
        except ConnectionError:
            pass  # the scraper left
        finally:
            writer.close()

    server = await asyncio.start_server(
        answer, address.host, address.port, limit=_MAX_REQUEST_BYTES
    )
    port: int = server.sockets[0].getsockname()[1]
    log.info("metrics on http://%s:%d/metrics", address.host, port)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()
