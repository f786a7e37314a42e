"""One WebSocket connection: read frames, dispatch them, send replies in order.

The reader never waits for an ingest to finish before reading the next frame: it submits the
frame (fixing its place in the seq order) and queues the reply coroutine in the outbox, which
the sender awaits in order. The outbox is bounded by `max_inflight_frames`; when it is full the
reader stops reading, and TCP backpressure slows the client down instead of gateway memory
growing. If the client goes away, the sender stops and every wait of the reader ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

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

# A reply: ready text, or a coroutine that produces it (an ingest waiting for its ack).
Reply = str | Coroutine[Any, Any, str]
# How long queued replies may take to go out before a closing connection gives up on them.
_FLUSH_BEFORE_CLOSE_S = 5.0


class ClientGone(Exception):
    """The sender stopped (the client left): stop reading."""


@dataclass(slots=True)
class ConnectionState:
    user_id: str
    kind: str = "tool"
    client: str | None = None


class ConnectionRegistry:
    """The open connections of this process (for presence, metrics and tests)."""

    def __init__(self) -> None:
        self._open: set[Connection] = set()
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._open))

    async def add(self, connection: Connection) -> None:
        async with self._changed:
            self._open.add(connection)
            self._changed.notify_all()

    async def remove(self, connection: Connection) -> None:
        async with self._changed:
            self._open.discard(connection)
            self._changed.notify_all()

    async def wait_for_count(self, count: int) -> None:
        """Return once exactly `count` connections are open (bound it with a timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._open) == count)


async def serve_connection(
    websocket: WebSocket,
    ingestor: Ingestor,
    limits: Limits,
    user_id: str,
    max_inflight: int,
    registry: ConnectionRegistry,
) -> None:
    """Run one accepted connection until the client leaves or a protocol error closes it."""
    connection = Connection(websocket, ingestor, limits, user_id, max_inflight)
    await registry.add(connection)
    try:
        await connection.run()
    finally:
        await registry.remove(connection)


class Connection:
    def __init__(
        self,
        websocket: WebSocket,
        ingestor: Ingestor,
        limits: Limits,
        user_id: str,
        max_inflight: int,
    ) -> None:
        self._websocket = websocket
        self._ingestor = ingestor
        self._limits = limits
        self.state = ConnectionState(user_id)
        # Bounded: a full outbox stops the reader (see the module docstring).
        self._outbox: asyncio.Queue[tuple[Reply, str | None]] = asyncio.Queue(max_inflight)
        self._sender: asyncio.Task[None] | None = None

    @property
    def inflight(self) -> int:
        """Frames read whose replies are not sent yet (at most `max_inflight_frames`)."""
        return self._outbox.qsize()

    async def run(self) -> None:
        self._sender = asyncio.create_task(self._send_replies(), name="ws-sender")
        close_code: CloseCode | None = None
        try:
            close_code = await self._read_frames()
        except (WebSocketDisconnect, ClientGone):
            pass
        except Exception:
            log.exception("connection of user %s failed", self.state.user_id)
            close_code = CloseCode.INTERNAL
        finally:
            if close_code is not None:
                # Let queued replies (e.g. the error saying why) go out first.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._flushed(), _FLUSH_BEFORE_CLOSE_S)
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sender
            self._discard()
            if close_code is not None:
                with contextlib.suppress(Exception):
                    await self._websocket.close(int(close_code))

    async def _read_frames(self) -> CloseCode | None:
        while True:
            message = await self._websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            text = message.get("text")
            if text is None:
                error = BadRequest("binary frames are not supported; send JSON text frames")
                await self._queue(encode_error(error, None), None)
                return CloseCode.UNSUPPORTED_DATA
            try:
                command = parse_frame(text, self._limits)
            except FrameError as exc:
                await self._queue(encode_error(exc, exc.ref), None)
                continue
            await self._dispatch(command)

    async def _dispatch(self, command: Hello | Ingest | Ping | SessionNew) -> None:
        if isinstance(command, Ingest):
            reply = self._ingestor.start_ingest(self.state.user_id, command)
            await self._queue(reply, command.ref)
        elif isinstance(command, Ping):
            await self._queue(encode_pong(command.ref), None)
        elif isinstance(command, Hello):
            self.state.kind, self.state.client = command.kind, command.client
            welcome = encode_welcome(command.ref, self.state.user_id, VERSION, self._limits)
            await self._queue(welcome, None)
        else:
            # Earlier frames of this connection go to the old session: wait for them first,
            # and read nothing further until the new session is in place.
            await self._flushed()
            await self._queue(self._new_session(command), command.ref)
            await self._flushed()

    async def _new_session(self, command: SessionNew) -> str:
        _, new = await self._ingestor.new_session(
            self.state.user_id, command.port, command.title
        )
        return encode_session_reply(command.ref, new.to_json())

    async def _queue(self, reply: Reply, ref: str | None) -> None:
        """Queue a reply; waits while the outbox is full, unless the client is gone."""
        try:
            self._outbox.put_nowait((reply, ref))
            return
        except asyncio.QueueFull:
            pass
        await self._unless_client_gone(self._outbox.put((reply, ref)), reply)

    async def _flushed(self) -> None:
        """Wait until every queued reply was sent, unless the client is gone."""
        await self._unless_client_gone(self._outbox.join())

    async def _unless_client_gone(
        self, waiting: Coroutine[Any, Any, None], reply: Reply | None = None
    ) -> None:
        assert self._sender is not None
        task = asyncio.ensure_future(waiting)
        await asyncio.wait({task, self._sender}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            if isinstance(reply, Coroutine):
                reply.close()
            raise ClientGone

    async def _send_replies(self) -> None:
        """Send replies in the order their frames arrived; a failed reply becomes an error."""
        while True:
            reply, ref = await self._outbox.get()
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
                        error = Internal("internal error while handling the frame")
                        text = encode_error(error, ref)
                await self._websocket.send_text(text)
            finally:
                self._outbox.task_done()

    def _discard(self) -> None:
        """Close reply coroutines that will never be sent (the client is gone)."""
        while not self._outbox.empty():
            reply, _ = self._outbox.get_nowait()
            if isinstance(reply, Coroutine):
                reply.close()
