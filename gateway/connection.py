"""One WebSocket connection: read frames, dispatch them, send replies in order.

The reader never waits for an ingest to finish before reading the next frame: it submits the
frame (fixing its place in the seq order) and queues the reply coroutine in the outbox, which
the sender awaits in order. The outbox is bounded by `max_inflight_frames`; when it is full the
reader stops reading, and TCP backpressure slows the client down instead of gateway memory
growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.errors import BadRequest, CloseCode, GatewayError, Internal
from gateway.ingest import Ingestor
from gateway.protocol import (
    FrameError,
    Hello,
    Ingest,
    Limits,
    Ping,
    SessionNew,
    encode_error,
    encode_pong,
    encode_session_reply,
    encode_welcome,
    parse_frame,
)

log = logging.getLogger(__name__)

VERSION = "0.1.0"

Reply = str | Awaitable[str]


@dataclass(slots=True)
class ConnectionState:
    user_id: str
    kind: str = "tool"
    client: str | None = None


async def serve_connection(
    websocket: WebSocket, ingestor: Ingestor, limits: Limits, user_id: str, max_inflight: int
) -> None:
    """Run one accepted connection until the client leaves or a protocol error closes it."""
    state = ConnectionState(user_id)
    outbox: asyncio.Queue[tuple[Reply, str | None]] = asyncio.Queue(maxsize=max_inflight)
    sender = asyncio.create_task(_send_replies(websocket, outbox), name="ws-sender")
    close_code: CloseCode | None = None
    try:
        close_code = await _read_frames(websocket, ingestor, limits, state, outbox, sender)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("connection of user %s failed", user_id)
        close_code = CloseCode.INTERNAL
    finally:
        if close_code is None:
            sender.cancel()
        else:
            # Let queued replies go out first, then close with the code.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(outbox.join(), timeout=5)
            sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        _discard(outbox)
        if close_code is not None:
            with contextlib.suppress(Exception):
                await websocket.close(int(close_code))


async def _read_frames(
    websocket: WebSocket,
    ingestor: Ingestor,
    limits: Limits,
    state: ConnectionState,
    outbox: asyncio.Queue[tuple[Reply, str | None]],
    sender: asyncio.Task[None],
) -> CloseCode | None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        if sender.done():
            return None  # the client stopped taking replies; nothing more to do here
        text = message.get("text")
        if text is None:
            error = BadRequest("binary frames are not supported; send JSON text frames")
            await outbox.put((encode_error(error, None), None))
            return CloseCode.UNSUPPORTED_DATA
        try:
            command = parse_frame(text, limits)
        except FrameError as exc:
            await outbox.put((encode_error(exc, exc.ref), None))
            continue
        if isinstance(command, Ingest):
            await outbox.put((ingestor.start_ingest(state.user_id, command), command.ref))
        elif isinstance(command, Ping):
            await outbox.put((encode_pong(command.ref), None))
        elif isinstance(command, Hello):
            state.kind, state.client = command.kind, command.client
            reply = encode_welcome(command.ref, state.user_id, VERSION, limits)
            await outbox.put((reply, None))
        elif isinstance(command, SessionNew):
            # Earlier frames of this connection go to the old session: wait for them first,
            # and read nothing further until the new session is in place.
            await outbox.join()
            await outbox.put((_new_session(ingestor, state, command), command.ref))
            await outbox.join()


async def _new_session(ingestor: Ingestor, state: ConnectionState, command: SessionNew) -> str:
    _, new = await ingestor.new_session(state.user_id, command.port, command.title)
    return encode_session_reply(command.ref, new.to_json())


async def _send_replies(
    websocket: WebSocket, outbox: asyncio.Queue[tuple[Reply, str | None]]
) -> None:
    """Send replies in the order their frames arrived; a failed reply becomes an error frame."""
    while True:
        reply, ref = await outbox.get()
        try:
            if isinstance(reply, str):
                text = reply
            else:
                try:
                    text = await reply
                except GatewayError as exc:
                    text = encode_error(exc, ref)
                except Exception:
                    log.exception("handling a frame failed")
                    text = encode_error(Internal("internal error while handling the frame"), ref)
            await websocket.send_text(text)
        finally:
            outbox.task_done()


def _discard(outbox: asyncio.Queue[tuple[Reply, str | None]]) -> None:
    """Close reply coroutines that will never be sent (the client is gone)."""
    while not outbox.empty():
        reply, _ = outbox.get_nowait()
        if isinstance(reply, Coroutine):
            reply.close()
