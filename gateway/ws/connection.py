"""One WebSocket connection: read frames, dispatch them, send replies and events in order.

The reader never waits for an ingest to finish before reading the next frame: it submits the
frame (fixing its place in the seq order) and queues the reply coroutine in the outbox, which
the sender awaits in order. The outbox is bounded by `max_inflight_frames`; when it is full the
reader stops reading, and TCP backpressure slows the client down instead of gateway memory
growing. If the client goes away, the sender stops and every wait of the reader ends with it.

Live events (subscriptions) cannot wait: they are pushed into the same outbox at once, and a
connection whose outbox is full, or holds more than `max_outbox_bytes` of events, is a
subscriber too slow to keep up: it is closed with 1013 and can resume with `since_seq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, assert_never

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from gateway import VERSION
from gateway.errors import BadRequest, CloseCode, Forbidden, GatewayError, Internal, RateLimited
from gateway.ws import frames
from gateway.ws.frames import Frame
from gateway.ws.live import Send, Subscriptions
from gateway.ws.protocol import (
    Command,
    FrameError,
    Hello,
    Ingest,
    Ping,
    SessionNew,
    Subscribe,
    Unsubscribe,
    parse_frame,
)

if TYPE_CHECKING:
    from gateway.lifecycle import SessionLifecycle
    from gateway.metrics import Metrics
    from gateway.rate_limits import ConnectionLimits, RateLimits
    from gateway.ws.ingest import Ingestor
    from gateway.ws.live import LiveContext
    from gateway.ws.presence import Presence
    from gateway.ws.protocol import Limits

_COMMAND_TYPES: dict[type, str] = {
    Hello: "hello",
    Ingest: "message",  # `message` and `extracted` frames alike
    Ping: "ping",
    SessionNew: "session.new",
    Subscribe: "subscribe",
    Unsubscribe: "unsubscribe",
}

log = logging.getLogger(__name__)

# A teardown step failing this way only means the client already left: nothing to report.
# OSError covers the server's "client disconnected" (uvicorn raises a subclass of it);
# WebSocketDisconnected is Starlette refusing a send (our close) on a socket whose earlier
# send already failed because the client had gone.
_CLIENT_LEFT: tuple[type[Exception], ...] = (WebSocketDisconnect, WebSocketDisconnected, OSError)


@contextlib.contextmanager
def _teardown_step(what: str, expected: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Run one step of a connection's teardown: a failure is logged as a warning with its
    exception, and teardown goes on (one failed step must not keep the socket or the
    subscriptions alive), but it is never silent. `expected` failures are not logged;
    cancellation (a BaseException) passes through untouched."""
    try:
        yield
    except expected:
        pass
    except Exception:
        log.warning("connection teardown: %s failed", what, exc_info=True)


@dataclass(frozen=True, slots=True)
class Event:
    """A live event's frame: counted against the connection's event byte budget."""

    frame: Frame


@dataclass(frozen=True, slots=True)
class Streamed:
    """A reply of several frames, written by `run` through the sender (e.g. a catch-up)."""

    run: Callable[[Send], Awaitable[None]]


# A reply: a ready frame, a live event, a coroutine that produces a frame (an ingest waiting
# for its ack), or a streamed reply.
Reply = Frame | Event | Coroutine[Any, Any, Frame] | Streamed
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


@dataclass(frozen=True, slots=True)
class ConnectionParts:
    """What a connection uses of its process, and nothing more: built once per process."""

    ingestor: Ingestor
    lifecycle: SessionLifecycle  # `session.new`
    live: LiveContext  # subscriptions, and the hub whose resets they recover from
    presence: Presence
    limits: Limits
    metrics: Metrics  # frames in and out, errors
    registry: ConnectionRegistry
    rate_limits: RateLimits  # messages per second, connections and subscriptions
    max_inflight_frames: int  # the outbox's bound (see the module docstring)
    max_outbox_bytes: int  # live events queued past this: too slow a subscriber


async def serve_connection(websocket: WebSocket, parts: ConnectionParts, user_id: str) -> None:
    """Run one accepted connection until the client leaves or a protocol error closes it.

    A user past their connection limit gets a `forbidden` frame saying so, then close 1008
    (policy: do not reconnect at once)."""
    try:
        limits = parts.rate_limits.open_connection(user_id)
    except Forbidden as exc:
        with _teardown_step("refusing a connection", _CLIENT_LEFT):
            await websocket.send_text(frames.error(exc, None).text)
            await websocket.close(int(CloseCode.POLICY), "too many connections")
        return
    connection = Connection(websocket, parts, user_id, limits)
    await parts.registry.add(connection)
    try:
        await connection.run()
    finally:
        limits.close()
        await parts.registry.remove(connection)


class Connection:
    def __init__(
        self, websocket: WebSocket, parts: ConnectionParts, user_id: str, limits: ConnectionLimits
    ) -> None:
        self.id = uuid.uuid4().hex
        self._rate_limits = limits
        self._websocket = websocket
        self._ingestor = parts.ingestor
        self._lifecycle = parts.lifecycle
        self._limits = parts.limits
        self._metrics = parts.metrics
        self._presence = parts.presence
        self._hub = parts.live.hub
        self.state = ConnectionState(user_id)
        # Bounded: a full outbox stops the reader (see the module docstring).
        self._outbox: asyncio.Queue[tuple[Reply, str | None]] = asyncio.Queue(
            parts.max_inflight_frames
        )
        self._event_bytes = 0  # bytes of live events queued, against max_outbox_bytes
        self._max_event_bytes = parts.max_outbox_bytes
        # Set once the connection cannot take a live event; the reader is then cancelled and
        # `run` closes with 1013. A flag and a cancel, not an Event with a task waiting on it:
        # that task cost every idle connection memory for nothing.
        self._too_slow = False
        self._reader: asyncio.Task[CloseCode | None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._subscriptions = Subscriptions(
            parts.live, user_id, self._push_event, self._push_streamed
        )

    @property
    def inflight(self) -> int:
        """Frames read whose replies are not sent yet (at most `max_inflight_frames`)."""
        return self._outbox.qsize()

    async def run(self) -> None:
        # Live events lost to a pub/sub reset are recovered by the subscriptions themselves.
        self._hub.on_reset(self._subscriptions.on_reset)
        self._sender = asyncio.create_task(self._send_replies(), name="ws-sender")
        reader = self._reader = asyncio.create_task(self._read_frames(), name="ws-reader")
        close_code: CloseCode | None = None
        try:
            # `wait`, not `await reader`: a cancelled reader must not cancel `run` with it.
            await asyncio.wait({reader})
            if reader.cancelled() and self._too_slow:
                log.info("closing a subscriber too slow to keep up (user %s)", self.state.user_id)
                close_code = CloseCode.TRY_AGAIN
            else:
                close_code = reader.result()
        except (WebSocketDisconnect, ClientGone):
            pass
        except Exception:
            log.exception("connection of user %s failed", self.state.user_id)
            close_code = CloseCode.INTERNAL
        finally:
            if not reader.done():  # `run` itself was cancelled
                reader.cancel()
                with (
                    contextlib.suppress(asyncio.CancelledError),
                    _teardown_step("stopping the reader", (*_CLIENT_LEFT, ClientGone)),
                ):
                    await reader
            await self._leave()
            if close_code is not None and close_code != CloseCode.TRY_AGAIN:
                # Let queued replies (e.g. the error saying why) go out first; not for a
                # too-slow client, which by definition does not take them. Not taking them
                # in time, or leaving, is the client's choice: no failure of ours.
                with _teardown_step("flushing replies", (TimeoutError, ClientGone)):
                    await asyncio.wait_for(self._flushed(), _FLUSH_BEFORE_CLOSE_S)
            self._sender.cancel()
            # A sender that died of anything but the client leaving is a bug: logged here,
            # where its exception is first retrieved.
            with (
                contextlib.suppress(asyncio.CancelledError),
                _teardown_step("the sender", _CLIENT_LEFT),
            ):
                await self._sender
            self._discard()
            if close_code is not None:
                with _teardown_step("closing the socket", _CLIENT_LEFT):
                    await self._websocket.close(int(close_code))

    async def _read_frames(self) -> CloseCode | None:
        while True:
            message = await self._websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            text = message.get("text")
            if text is None:
                error = BadRequest("binary frames are not supported; send JSON text frames")
                await self._queue(frames.error(error, None), None)
                return CloseCode.UNSUPPORTED_DATA
            try:
                command = parse_frame(text, self._limits)
            except FrameError as exc:
                self._metrics.frames_in.inc("invalid")
                await self._queue(frames.error(exc, exc.ref), None)
                continue
            self._metrics.frames_in.inc(_COMMAND_TYPES[type(command)])
            await self._dispatch(command)

    async def _dispatch(self, command: Command) -> None:
        # Exhaustive: a command type added to `Command` without a case here fails mypy
        # (assert_never), instead of falling into another command's branch.
        match command:
            case Ingest():
                try:
                    self._rate_limits.check_messages(len(command.items))
                except RateLimited as exc:
                    await self._queue(frames.error(exc, command.ref), None)
                    return
                reply = self._ingestor.start_ingest(self.state.user_id, command)
                await self._queue(reply, command.ref)
            case Ping():
                await self._queue(frames.pong(command.ref), None)
            case Hello():
                self.state.kind, self.state.client = command.kind, command.client
                if command.kind == "ide":
                    await self._presence.up(self.id, self.state.user_id, command.ports)
                welcome = frames.welcome(command.ref, self.state.user_id, VERSION, self._limits)
                await self._queue(welcome, None)
            case Subscribe():
                subscriptions, ref, limits = self._subscriptions, command.ref, self._rate_limits

                async def subscribe(send: Send) -> None:
                    # Here, in the sender, the earlier subscribes of this connection are done.
                    if not subscriptions.holds(command.target):
                        limits.check_subscriptions(subscriptions.count)
                    await subscriptions.subscribe(send, ref, command.target, command.since_seq)

                await self._queue(Streamed(subscribe), ref)
            case Unsubscribe():
                await self._queue(self._unsubscribe(command.ref, command.target), command.ref)
            case SessionNew():
                # Earlier frames of this connection go to the old session: wait for them
                # first, and read nothing further until the new session is in place.
                await self._flushed()
                await self._queue(self._new_session(command), command.ref)
                await self._flushed()
            case _:
                assert_never(command)

    async def _unsubscribe(self, ref: str | None, target: Any) -> Frame:
        await self._subscriptions.unsubscribe(target)
        return frames.unsubscribed(ref, target)

    async def _leave(self) -> None:
        """Drop this connection's subscriptions and presence (it is gone)."""
        self._hub.off_reset(self._subscriptions.on_reset)
        with _teardown_step("dropping the subscriptions"):
            await self._subscriptions.close()
        with _teardown_step("marking the ports offline"):
            await self._presence.down(self.id)

    def _push_event(self, frame: Frame) -> None:
        """Queue a live event now; a connection that cannot take it is too slow (1013)."""
        if self._too_slow:
            return
        size = len(frame.text)
        if self._event_bytes + size > self._max_event_bytes or self._outbox.full():
            self._fall_behind()
            return
        self._event_bytes += size
        self._outbox.put_nowait((Event(frame), None))

    def _push_streamed(self, run: Callable[[Send], Awaitable[None]]) -> None:
        """Queue a streamed reply from a live event (a port subscription's rotation)."""
        if self._too_slow:
            return
        if self._outbox.full():
            self._fall_behind()
            return
        self._outbox.put_nowait((Streamed(run), None))

    def _fall_behind(self) -> None:
        """Too slow a subscriber: stop reading its frames; `run` closes it with 1013."""
        self._too_slow = True
        if self._reader is not None:
            self._reader.cancel()

    async def _new_session(self, command: SessionNew) -> Frame:
        _, new = await self._lifecycle.rotate(self.state.user_id, command.port, command.title)
        return frames.session_reply(command.ref, new)

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

    async def _send(self, frame: Frame) -> None:
        await self._websocket.send_text(frame.text)
        self._metrics.frames_out.inc(frame.kind)
        if frame.error_code is not None:
            self._metrics.errors.inc(frame.error_code)

    async def _send_replies(self) -> None:
        """Send replies in the order their frames arrived; a failed reply becomes an error."""
        send = self._send
        while True:
            reply, ref = await self._outbox.get()
            try:
                if isinstance(reply, Frame):
                    await send(reply)
                    continue
                if isinstance(reply, Event):
                    await send(reply.frame)
                    self._event_bytes -= len(reply.frame.text)
                    continue
                try:
                    if isinstance(reply, Streamed):
                        await reply.run(send)
                        continue
                    frame = await reply
                except GatewayError as exc:
                    frame = frames.error(exc, ref)
                except Exception:
                    log.exception("handling a frame failed")
                    frame = frames.error(Internal("internal error while handling the frame"), ref)
                await send(frame)
            finally:
                self._outbox.task_done()

    def _discard(self) -> None:
        """Close reply coroutines that will never be sent (the client is gone)."""
        while not self._outbox.empty():
            reply, _ = self._outbox.get_nowait()
            if isinstance(reply, Coroutine):
                reply.close()
