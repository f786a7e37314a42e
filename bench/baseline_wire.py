"""What the end-to-end baselines (bench/echo_server.py, naive_server.py, reference_server.py)
share: just enough of the gateway's protocol for `gateway.loadtest`, and the way each one is
started, so the three differ only in what they do with a message.

The protocol subset: `hello` is answered `welcome`; `message` and `extracted` are answered
one `ack` with the frame's `ref`, the session and one `{seq, duplicate}` per item. No
validation, no auth, no subscriptions: whatever the gateway does beyond this is what the
benchmark's ratios price.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.server import uvicorn_options
from gateway.settings import Settings

USER = "local"  # every baseline serves one user, as the gateway does in local mode
WELCOME = '{"type":"welcome","user_id":"local","server":"baseline"}'
_SESSIONS = uuid.UUID("5d1b2e4c-7a0f-4c8e-9a55-0c9f3b1e2d10")  # uuid5 namespace


class Item:
    """One message of a frame, with what every baseline stores of it."""

    __slots__ = ("client_id", "content", "dedup_key", "role")

    def __init__(self, raw: dict[str, Any]) -> None:
        self.client_id: str = raw.get("id") or raw.get("client_id") or ""
        self.role: str = raw.get("role", "user")
        self.content: str = raw["content"]
        # 128 bits of the client id (or of the content without one), as the gateway's key.
        digest = hashlib.blake2b((self.client_id or self.content).encode(), digest_size=16).digest()
        self.dedup_key = str(uuid.UUID(bytes=digest))


def items_of(frame: dict[str, Any]) -> list[Item]:
    """The frame's messages: the frame itself for `message`, its list for `extracted`."""
    if frame["type"] == "message":
        return [Item(frame)]
    return [Item(raw) for raw in frame["messages"]]


def session_id(port: int) -> str:
    """The port's one session: fixed per port, so no baseline needs a session lookup."""
    return str(uuid.uuid5(_SESSIONS, f"{USER}:{port}"))


def ack(ref: Any, port: int, seqs: list[int]) -> str:
    """The `ack` of a frame; a negative seq is a duplicate of the message with that seq."""
    results = [{"seq": abs(s), "duplicate": s < 0} for s in seqs]
    frame = {"type": "ack", "ref": ref, "session_id": session_id(port), "results": results}
    return orjson.dumps(frame).decode()


def answering_each_frame(answer: Callable[[dict[str, Any]], Awaitable[str]]) -> WebSocketRoute:
    """`/ws` answering each frame before reading the next: `hello` with WELCOME, any other
    with what `answer` makes of it."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                frame = orjson.loads(await websocket.receive_text())
                reply = WELCOME if frame["type"] == "hello" else await answer(frame)
                await websocket.send_text(reply)
        except WebSocketDisconnect:
            pass

    return WebSocketRoute("/ws", endpoint)


def serve(create_app: Callable[[argparse.Namespace], Starlette], description: str) -> None:
    """`python -m bench.<baseline> --port P [--database-url U] [--redis-url U]`: the app on
    the gateway's own uvicorn options (same WebSocket implementation, no compression)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--key-prefix", default="cgref:")
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args()
    options = uvicorn_options(Settings()) | {"log_level": args.log_level}
    config = uvicorn.Config(create_app(args), host=args.host, port=args.port, **options)
    # uvicorn stops gracefully on SIGINT, then re-raises it: that is the normal way out.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()
