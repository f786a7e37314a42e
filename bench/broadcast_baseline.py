"""A bare in-process broadcast server: the floor for fan-out latency (see bench/fanout_latency.py).

    python -m bench.broadcast_baseline --port 8001 [--log-level warning]

One Starlette app on uvicorn with the gateway's uvicorn options (`gateway.server.uvicorn_options`
with a default `Settings()`: the same WebSocket implementation, frame limit, no compression).
Its `/ws` speaks just enough of the gateway's protocol for the benchmark client:

* `{"type": "subscribe", ...}` adds the connection to the subscribers (whatever it names) and
  is answered `{"type": "subscribed"}`;
* `{"type": "message", "content": ...}` is encoded once as
  `{"type": "message", "message": {"content": ...}}` and sent to every subscriber from the
  handler that read it, one `send_text` after another, then the sender gets
  `{"type": "ack", "session_id": "baseline"}`.

No Redis, no PostgreSQL, no validation, no per-connection outbox, no backpressure: whatever the
gateway does beyond this is what the benchmark's ratio prices. Not a server to use for anything
else (a slow subscriber stalls every broadcast).
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.server import uvicorn_options
from gateway.settings import Settings

SUBSCRIBED = '{"type":"subscribed"}'
ACK = '{"type":"ack","session_id":"baseline"}'


def create_app() -> Starlette:
    """The broadcast app; its subscriber set lives in this closure, one per app."""
    subscribers: set[WebSocket] = set()

    async def broadcast(text: str) -> None:
        for subscriber in list(subscribers):
            try:
                await subscriber.send_text(text)
            except Exception:  # it left mid-broadcast; its own handler is finishing too
                subscribers.discard(subscriber)

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                frame: dict[str, Any] = orjson.loads(await websocket.receive_text())
                kind = frame.get("type")
                if kind == "subscribe":
                    subscribers.add(websocket)
                    await websocket.send_text(SUBSCRIBED)
                elif kind == "message":
                    event = {"type": "message", "message": {"content": frame.get("content")}}
                    await broadcast(orjson.dumps(event).decode())
                    await websocket.send_text(ACK)
                else:
                    await websocket.send_text('{"type":"error","code":"bad_request"}')
        except WebSocketDisconnect:
            pass
        finally:
            subscribers.discard(websocket)

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args()
    options = uvicorn_options(Settings()) | {"log_level": args.log_level}
    config = uvicorn.Config(create_app(), host=args.host, port=args.port, **options)
    # uvicorn stops gracefully on SIGINT, then re-raises it: that is the normal way out.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
