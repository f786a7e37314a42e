"""Live feeds: a connection's subscriptions, caught up from storage and then fed live.

The no-gap, no-duplicate handshake for a session:

1. listen to the session's channel (the hub returns once Redis confirmed the subscription);
   events from now on are held in the feed's backlog;
2. read from storage every message after `since_seq`, page by page (buffer then PostgreSQL:
   every acked message is in one of them);
3. send the backlog, skipping what the pages already had, and switch the feed to live.

Every message is allocated by the ingest script, which also publishes it: a script that ran
before step 1 wrote rows that step 2 reads; one that ran after step 1 reaches the backlog;
one in between does both, and the seq check drops the second copy. Edits carry their version
(`edited_at` in ms) so an edit is sent unless the client already got that version.

Feeds never block the hub: they push frames into the connection without waiting, and a
connection that cannot take more is closed with 1013 (see `gateway/ws/connection.py`).

**Recovery.** Pub/sub may lose publications (the hub's connection was reset: see
`gateway/ws/hub.py`). A session feed that may have missed something goes back to step 2 from the
last seq it sent, in order after whatever the connection has queued: after every hub reset,
and whenever a message arrives whose seq is not the next one (seqs are dense per session, and
the ingest script publishes them in order, so a jump means a loss). Feeds without seqs (the
session list, a port's session and presence events) cannot tell what they missed: after a
reset their clients get a `resync` event and re-fetch (docs/protocol.md); a port feed also
looks up its port's active session again and follows it if it changed meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import orjson
import redis.asyncio as aioredis

from gateway.errors import NotFound
from gateway.ws import frames
from gateway.ws.frames import Frame
from gateway.ws.hub import Hub
from gateway.ws.protocol import ByPort, BySession, SessionList, Target
from storage import events, rows, sessions
from storage.keys import Keys
from storage.messages import last_seq, message_from_row, session_messages

Send = Callable[[Frame], Awaitable[None]]
Push = Callable[[Frame], None]
Later = Callable[[Callable[[Send], Awaitable[None]]], None]

CATCH_UP_PAGE = 500
# Live events held while a feed catches up. Past this the backlog is dropped and the feed
# reads storage again instead: everything in the backlog is in storage too.
BACKLOG_LIMIT = 5000


@dataclass(frozen=True, slots=True)
class LiveMessage:
    seq: int
    version: int  # edited_at in ms; 0 for a message's first version
    frame: Frame  # the `message` frame, encoded once per process


@dataclass(frozen=True, slots=True)
class UserEvent:
    port: int
    event: str | None  # created, updated, archived, deleted; None for presence and labels
    session_id: str | None
    activated: bool  # the event made the session its port's active one
    frame: Frame  # the `session`, `presence` or `port` frame


def decode_rows(data: bytes) -> list[LiveMessage]:
    """A session channel publication (a JSON array of rows) as encoded `message` frames."""
    out = []
    for raw in orjson.loads(data):
        row = rows.from_json(raw)
        edited = row.edited_ms is not None
        frame = frames.message_event(message_from_row(row), row.port, edited=edited)
        out.append(LiveMessage(row.seq, row.version, frame))
    return out


def decode_user_event(data: bytes) -> UserEvent:
    """A user channel publication (storage/events.py) as an encoded `session` or `presence`
    frame, with what feeds route it by."""
    event = events.decode(data)
    frame = frames.user_event(event)
    if isinstance(event, events.PresenceEvent):
        return UserEvent(event.presence.port, None, None, False, frame)
    if isinstance(event, events.PortLabelEvent):
        return UserEvent(event.port_label.port, None, None, False, frame)
    session = event.session
    return UserEvent(session.port, event.event, str(session.id), event.activated, frame)


@dataclass(frozen=True, slots=True)
class LiveContext:
    """What feeds need from the process."""

    hub: Hub
    pool: asyncpg.Pool
    redis: aioredis.Redis
    keys: Keys


class SessionFeed:
    """One connection's view of one session's messages."""

    def __init__(
        self, context: LiveContext, session_id: str, port: int, push: Push, later: Later
    ) -> None:
        self.session_id = session_id
        self.port = port
        self._context = context
        self._push = push
        self._later = later
        self.last_seq = 0
        self._live = False
        self._backlog: list[LiveMessage] = []
        self._overflowed = False
        self._versions: dict[int, int] = {}  # seq -> version sent, while catching up
        self._recovering = False  # a catch-up is queued (see `recover`)
        self._stopped = False
        self.recoveries = 0  # catch-ups run after a reset or a gap (tests and metrics)

    @property
    def channel(self) -> str:
        return self._context.keys.session_channel(self.session_id)

    async def start(self) -> None:
        await self._context.hub.listen(self.channel, self.on_messages, decode_rows)

    async def stop(self) -> None:
        self._stopped = True
        await self._context.hub.unlisten(self.channel, self.on_messages)

    def on_messages(self, messages: list[LiveMessage]) -> None:
        for index, message in enumerate(messages):
            if not self._live:
                self._hold(messages[index:])
                return
            if message.version == 0 and message.seq > self.last_seq + 1:
                # A seq jump: what came between was lost on the way. Hold this and what
                # follows, and read the gap from storage.
                self.recover()
                self._hold(messages[index:])
                return
            if self._is_new(message):
                self._push(message.frame)

    def _hold(self, messages: list[LiveMessage]) -> None:
        """Keep events for the catch-up under way; past the limit, storage has them."""
        if len(self._backlog) + len(messages) <= BACKLOG_LIMIT:
            self._backlog.extend(messages)
        else:
            self._overflowed = True
            self._backlog.clear()

    def recover(self) -> None:
        """Live events may have been lost: stop sending live, and catch up again from the
        last seq sent, in order after what the connection has queued."""
        self._live = False
        if self._recovering or self._stopped:
            return
        self._recovering = True
        self._later(self._catch_up_again)

    async def _catch_up_again(self, send: Send) -> None:
        self._recovering = False
        if self._stopped:
            return
        self.recoveries += 1
        await self.go_live(send, self.last_seq)

    def _is_new(self, message: LiveMessage) -> bool:
        if message.version == 0:
            if message.seq <= self.last_seq:
                return False
            self.last_seq = message.seq
            return True
        if message.version <= self._versions.get(message.seq, 0):
            return False
        self._versions[message.seq] = message.version
        return True

    async def go_live(self, send: Send, since_seq: int | None) -> None:
        """Catch up from `since_seq` (None: nothing to catch up), then switch to live."""
        if since_seq is not None:
            self.last_seq = since_seq
        while True:
            if since_seq is not None:
                await self._read_storage(send)
            # Send the backlog; new events may arrive while we send, so repeat until it is
            # empty, then go live with no await in between.
            while self._backlog and not self._overflowed:
                backlog, self._backlog = self._backlog, []
                for message in backlog:
                    if self._is_new(message):
                        await send(message.frame)
            if not self._overflowed:
                break
            self._overflowed = False  # too much arrived meanwhile: storage has all of it
            since_seq = self.last_seq
        if self._recovering:
            return  # reset again meanwhile: stay off live until the queued catch-up runs
        self._live = True
        self._versions.clear()

    async def _read_storage(self, send: Send) -> None:
        context = self._context
        session_id = uuid.UUID(self.session_id)
        while True:
            async with context.pool.acquire() as conn:
                page = await session_messages(
                    conn,
                    context.redis,
                    context.keys,
                    session_id,
                    after_seq=self.last_seq,
                    limit=CATCH_UP_PAGE,
                )
            for message in page.messages:
                edited = message.edited_at
                version = int(edited.timestamp() * 1000) if edited else 0
                self._versions[message.seq] = version
                self.last_seq = message.seq
                await send(frames.message_event(message, self.port, edited=False))
            if not page.has_more:
                return


class Subscriptions:
    """Every subscription of one connection, keyed by what it names."""

    def __init__(self, context: LiveContext, user_id: str, push: Push, later: Later) -> None:
        self.context = context
        self.user_id = user_id
        self.push = push  # a frame now, without waiting (too slow a client is closed)
        self.later = later  # a streamed reply, in order after what is queued
        self._sessions: dict[str, SessionFeed] = {}
        self.ports: dict[int, PortFeed] = {}
        self._session_list = False

    @property
    def count(self) -> int:
        """How many subscriptions the connection holds."""
        return len(self._sessions) + len(self.ports) + int(self._session_list)

    def holds(self, target: Target) -> bool:
        """Whether `target` is subscribed already (subscribing again replaces it)."""
        if isinstance(target, SessionList):
            return self._session_list
        if isinstance(target, BySession):
            return str(target.session_id) in self._sessions
        return target.port in self.ports

    async def subscribe(
        self, send: Send, ref: str | None, target: Target, since_seq: int | None
    ) -> None:
        """Run inside the connection's sender: `send` writes frames in order."""
        await self.unsubscribe(target)  # subscribing again restarts (e.g. a new since_seq)
        context = self.context
        if isinstance(target, SessionList):
            await context.hub.listen(
                context.keys.user_channel(self.user_id), self._on_user_event, decode_user_event
            )
            self._session_list = True
            await send(frames.subscribed(ref, target, None, None))
            return
        if isinstance(target, BySession):
            async with context.pool.acquire() as conn:
                session = await sessions.get_session(conn, self.user_id, target.session_id)
            if session is None:
                raise NotFound("no such session")
            feed = SessionFeed(context, str(session.id), session.port, self.push, self.later)
            self._sessions[feed.session_id] = feed
            try:
                await self.start_feed(feed, send, ref, target, session, since_seq)
            except BaseException:
                await self.unsubscribe(target)
                raise
            return
        port_feed = PortFeed(self, target.port)
        self.ports[target.port] = port_feed
        try:
            await port_feed.start(send, ref, since_seq, target.since_session_id)
        except BaseException:
            await self.unsubscribe(target)
            raise

    async def start_feed(
        self,
        feed: SessionFeed,
        send: Send,
        ref: str | None,
        target: Target,
        session: sessions.Session | None,
        since_seq: int | None,
    ) -> None:
        await feed.start()
        context = self.context
        async with context.pool.acquire() as conn:
            newest = await last_seq(conn, context.redis, context.keys, feed.session_id)
        if since_seq is None:
            feed.last_seq = newest
        await send(frames.subscribed(ref, target, session, newest))
        await feed.go_live(send, since_seq)

    async def unsubscribe(self, target: Target) -> bool:
        """Drop the subscription; False if there was none."""
        if isinstance(target, SessionList):
            if not self._session_list:
                return False
            self._session_list = False
            await self.context.hub.unlisten(
                self.context.keys.user_channel(self.user_id), self._on_user_event
            )
            return True
        if isinstance(target, BySession):
            feed = self._sessions.pop(str(target.session_id), None)
            if feed is None:
                return False
            await feed.stop()
            return True
        port_feed = self.ports.pop(target.port, None)
        if port_feed is None:
            return False
        await port_feed.stop()
        return True

    async def close(self) -> None:
        for session_id in list(self._sessions):
            await self.unsubscribe(BySession(uuid.UUID(session_id)))
        for port in list(self.ports):
            await self.unsubscribe(ByPort(port))
        await self.unsubscribe(SessionList())

    def _on_user_event(self, event: UserEvent) -> None:
        self.push(event.frame)

    def on_reset(self) -> None:
        """The hub's connection was reset: anything published meanwhile may be lost."""
        for feed in self._sessions.values():
            feed.recover()
        for port_feed in self.ports.values():
            port_feed.on_reset()
        if self._session_list:
            self.push(frames.resync(SessionList()))


class PortFeed:
    """A port subscription: the port's active session's messages, following rotations, and
    the port's session and presence events."""

    def __init__(self, owner: Subscriptions, port: int) -> None:
        self._owner = owner
        self.port = port
        self.feed: SessionFeed | None = None

    @property
    def _channel(self) -> str:
        return self._owner.context.keys.user_channel(self._owner.user_id)

    async def start(
        self,
        send: Send,
        ref: str | None,
        since_seq: int | None,
        since_session_id: uuid.UUID | None,
    ) -> None:
        context = self._owner.context
        await context.hub.listen(self._channel, self._on_user_event, decode_user_event)
        session = await self._active_session()
        if session is None:
            await send(frames.subscribed(ref, ByPort(self.port), None, 0))
            return
        if since_seq is not None and since_session_id not in (None, session.id):
            since_seq = 0  # the port rotated while the client was away: all of the new one
        self.feed = SessionFeed(
            context, str(session.id), self.port, self._owner.push, self._owner.later
        )
        await self._owner.start_feed(
            self.feed, send, ref, ByPort(self.port), session, since_seq
        )

    async def stop(self) -> None:
        await self._owner.context.hub.unlisten(self._channel, self._on_user_event)
        if self.feed is not None:
            await self.feed.stop()
            self.feed = None

    async def _active_session(self) -> sessions.Session | None:
        context = self._owner.context
        async with context.pool.acquire() as conn:
            return await sessions.find_active(conn, self._owner.user_id, self.port)

    def _on_user_event(self, event: UserEvent) -> None:
        if event.port != self.port:
            return
        current = self.feed.session_id if self.feed else None
        # Another session became the port's active one (created, or unarchived): follow it.
        # Only `activated` events say so: a late counter update of the old session also says
        # status active, and must not pull the subscription back.
        switch = event.activated and event.session_id != current
        if event.event == "updated" and not switch:
            return  # counters and renames are for session-list subscribers
        self._owner.push(event.frame)
        if switch:
            assert event.session_id is not None
            self._owner.later(self._switcher(event.session_id))

    def on_reset(self) -> None:
        """Tell the client to re-fetch the port's sessions and presence; catch the current
        session up, then follow the port's active session if it changed meanwhile."""
        self._owner.push(frames.resync(ByPort(self.port)))
        if self.feed is not None:
            self.feed.recover()
        self._owner.later(self._follow_active)

    async def _follow_active(self, send: Send) -> None:
        if self._owner.ports.get(self.port) is not self:
            return  # unsubscribed meanwhile
        session = await self._active_session()
        if session is not None and (self.feed is None or self.feed.session_id != str(session.id)):
            # The event that activated it may be among the lost: say which session the
            # messages that follow belong to, as that event would have.
            await send(frames.user_event(events.SessionEvent("updated", session, activated=True)))
            await self._switcher(str(session.id))(send)

    def _switcher(self, session_id: str) -> Callable[[Send], Awaitable[None]]:
        async def switch(send: Send) -> None:
            if self._owner.ports.get(self.port) is not self:
                return  # unsubscribed meanwhile
            if self.feed is not None:
                if self.feed.session_id == session_id:
                    return
                await self.feed.stop()
            # The new session's messages from its first one: they are all new to the client.
            self.feed = SessionFeed(
                self._owner.context, session_id, self.port, self._owner.push, self._owner.later
            )
            await self.feed.start()
            await self.feed.go_live(send, 0)

        return switch
