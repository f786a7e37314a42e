"""`chat-gateway loadtest URL`: K IDE connections over P ports, S subscriber tabs per port, flat
out or at a paced rate, for a count of frames or for a time, and a report of what was offered,
acked, refused, fanned out and persisted.

Each IDE connection sends `message` frames (or `extracted` batches) of user and assistant
messages with unique client ids, and re-sends a share of what it already sent, as IDE
extensions re-send transcripts: those must come back `duplicate`. Another share are edits: the
newest assistant message again with the same id and longer content, a reply still being
written, which must come back `updated`. Paced runs are open loop: each frame has a due time
and its latency is measured from that time, not from when a busy client got round to sending
it, so a slow gateway cannot hide behind the client (coordinated omission).

Subscriber tabs (`ui` connections subscribed to a port before the load starts) must get every
seq of the port's session once and in order (`SeqTracker` counts gaps and duplicates; an edit
of a seq already seen is neither). Their fan-out latency runs from the send of the frame to the
event's arrival: senders and tabs share this process and its clock.

Persistence: one poller reads each session's committed `message_count` through the API while
the run goes and after it. Seqs are gap-free per session, so a session whose count reaches the
highest seq acked in it holds every message acked in it, and the first sample that covers an
acked seq dates its commit (`CommitWatch`: the ack-to-commit lag). The run fails
(`Report.ok`) when something acked was not persisted in time, or a tab missed or repeated a
seq. `Plan.check_persisted=False` reads nothing over HTTP, for servers that have no API.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import itertools
import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

_PERCENTILES = (50, 95, 99)
_TAIL = (50, 99)  # fan-out and commit lag: the median and the tail
SAMPLE_INTERVAL_S = 0.1  # how often committed counts are read: the commit lag's resolution
_SAMPLE_CONCURRENCY = 8  # API reads in flight at once: many sessions must not flood the gateway
_EDIT_CHUNK = " and the reply goes on" * 2  # what each edit adds to a growing assistant reply
_PLOT_BIN_S = 0.1  # the latency panel's percentiles are per bin of this many seconds

AckSample = tuple[float, float, int]  # seconds since the start, ack latency in ms, acked


@dataclass(frozen=True)
class Plan:
    """What to offer: how many frames, over how many connections and ports, how fast."""

    url: str  # the gateway's base URL, http(s)://host:port
    connections: int = 50
    ports: int = 10
    messages: int = 10_000  # frames of new messages, re-sends and edits not counted
    rate: float = 0.0  # frames per second over all connections; 0: flat out
    in_flight: int = 10  # per connection, flat out only (paced runs are open loop)
    batch: int = 1  # messages per frame: 1 sends `message`, more send `extracted`
    resend_share: float = 0.1  # share of frames re-sent (the dedup path)
    content_bytes: int = 300
    token: str = ""
    first_port: int = 9222
    persist_wait_s: float = 60.0  # how long writers and subscribers get to catch up at the end
    subscribers: int = 0  # UI tabs per port, subscribed before the load; 0: none
    edit_share: float = 0.0  # share of frames that grow the newest assistant message (edits)
    duration_s: float = 0.0  # 0: send `messages` frames; else run this long, see `new_frames`
    check_persisted: bool = True  # False: no HTTP reads, no persistence check, no commit lag

    @property
    def new_frames(self) -> int | None:
        """Frames of new messages over all connections; None: flat out until `duration_s`.

        Paced for a time, the frames offered (re-sends and edits included, as `rate` counts
        them) are rate x duration, so the run takes the duration asked.
        """
        if not self.duration_s:
            return self.messages
        if self.rate > 0:
            extras = 1 + self.resend_share + self.edit_share
            return max(1, round(self.rate * self.duration_s / extras))
        return None


class Report(msgspec.Struct, kw_only=True):
    """The run's figures (`--json` prints this)."""

    frames_offered: int = 0
    messages_offered: int = 0
    acked: int = 0
    created: int = 0
    duplicates: int = 0
    edits: int = 0  # acked `updated`: an earlier message grown in place
    errors: dict[str, int] = msgspec.field(default_factory=dict)
    duration_s: float = 0.0
    acked_per_s: float = 0.0
    ack_latency_ms: dict[str, float] = msgspec.field(default_factory=dict)
    sessions: int = 0
    persistence_checked: bool = True  # False: persisted, not_persisted and commit lag unknown
    persisted: bool = False
    not_persisted: int = 0  # messages acked but missing from PostgreSQL after the wait
    commit_lag_ms: dict[str, float] = msgspec.field(default_factory=dict)
    # Mean time between two reads of a session: the lag's resolution. 0 when no session needed
    # a second read (each was committed when first read: a short or light run).
    commit_sample_ms: float = 0.0
    subscribers: int = 0  # tabs connected
    fanout_events: int = 0  # message events the tabs got, edits included
    fanout_latency_ms: dict[str, float] = msgspec.field(default_factory=dict)
    subscriber_gaps: int = 0  # seqs a tab never got, those still missing at the end included
    subscriber_duplicates: int = 0  # seqs a tab got twice (edits are not duplicates)
    subscriber_missed_edits: int = 0  # edits acked on a tab's port that it got no event for
    subscribers_dropped: int = 0  # tabs the gateway closed during the run

    def ok(self) -> bool:
        """Whether the run passes: all acked is persisted (or unchecked), and no tab missed or
        repeated a seq or missed an edit."""
        persisted = self.persisted or not self.persistence_checked
        tabs_erred = self.subscriber_gaps or self.subscriber_duplicates
        return persisted and not tabs_erred and not self.subscriber_missed_edits

    def lines(self) -> list[str]:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        lines = [
            f"offered    {self.frames_offered} frames, {self.messages_offered} messages",
            f"acked      {self.acked} messages: {self.created} new, {self.duplicates}"
            f" duplicates, {self.edits} edits",
            f"errors     {errors}",
            f"throughput {self.acked_per_s:,.0f} messages/s acked over {self.duration_s:.2f} s",
            f"ack (ms)   {_joined(self.ack_latency_ms)}",
        ]
        if not self.persistence_checked:
            lines.append("persisted  not checked (no HTTP API reads)")
        else:
            lines += [
                f"persisted  {'yes' if self.persisted else 'NO'}: {self.sessions} sessions"
                f" checked, {self.not_persisted} acked messages missing",
                f"commit lag {_joined(self.commit_lag_ms)} ms after the ack ({self._sampling()})",
            ]
        if self.subscribers:
            lines += [
                f"tabs       {self.subscribers} subscribed: {self.fanout_events} events,"
                f" {self.subscriber_gaps} gaps, {self.subscriber_duplicates} duplicates,"
                f" {self.subscriber_missed_edits} edits missed, {self.subscribers_dropped}"
                " dropped",
                f"fan-out    {_joined(self.fanout_latency_ms)} ms from send to tab",
            ]
        return lines

    def _sampling(self) -> str:
        if not self.commit_sample_ms:
            return "each session read once: committed by its first read"
        return f"sampled every {self.commit_sample_ms:.0f} ms"


def _joined(figures: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in figures.items()) or "none"


class SeqTracker:
    """What one tab got of one session: seqs must come once each, in order, from `last` + 1.

    A seq past the next one counts the seqs skipped as gaps; a seq already seen counts as a
    duplicate unless its event is an edit (the same seq, grown in place).
    """

    __slots__ = ("duplicates", "gaps", "last")

    def __init__(self, last: int = 0) -> None:
        self.last = last  # the highest seq seen
        self.gaps = 0
        self.duplicates = 0

    def see(self, seq: int, edited: bool) -> None:
        if seq > self.last:
            self.gaps += seq - self.last - 1
            self.last = seq
        elif not edited:
            self.duplicates += 1

    def short_of(self, newest: int) -> int:
        """Seqs up to `newest` not seen yet: gaps once the run is over."""
        return max(0, newest - self.last)


class CommitWatch:
    """Ack-to-commit lag from samples of committed counts, without any I/O.

    Per session, a heap of (seq, ack time) of the messages acked as new; a sample showing
    `count` committed pops every seq up to it, its lag the sample's time minus its ack's. The
    resolution is the time between samples; an ack whose seq was already seen committed counts
    0 (it was committed before its ack reached us).
    """

    def __init__(self) -> None:
        self.committed: dict[str, int] = {}
        self.lags_ms: list[float] = []
        self._pending: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self._last_sample: dict[str, float] = {}
        self._periods: list[float] = []

    def acked(self, session_id: str, seq: int, at: float) -> None:
        if self.committed.get(session_id, 0) >= seq:
            self.lags_ms.append(0.0)
        else:
            heapq.heappush(self._pending[session_id], (seq, at))

    def sampled(self, session_id: str, count: int, at: float) -> None:
        if (previous := self._last_sample.get(session_id)) is not None:
            self._periods.append(at - previous)
        self._last_sample[session_id] = at
        self.committed[session_id] = max(count, self.committed.get(session_id, 0))
        pending = self._pending[session_id]
        while pending and pending[0][0] <= count:
            _, acked_at = heapq.heappop(pending)
            self.lags_ms.append(max(0.0, at - acked_at) * 1000)

    def behind(self, newest_seq: dict[str, int]) -> list[str]:
        """Sessions whose committed count is short of the highest seq acked in them."""
        return [s for s, seq in newest_seq.items() if self.committed.get(s, 0) < seq]

    def missing(self, newest_seq: dict[str, int]) -> int:
        return sum(max(0, seq - self.committed.get(s, 0)) for s, seq in newest_seq.items())

    def sample_ms(self) -> float:
        """The mean time between two reads of a session, in ms."""
        return 1000 * sum(self._periods) / len(self._periods) if self._periods else 0.0


@dataclass
class _FanOut:
    """Send times by message version (client id, content length: edits make it longer), so
    tabs in this process can time the events they get. Off when there are no tabs."""

    enabled: bool
    sent_at: dict[tuple[str, int], float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def sent(self, items: list[dict[str, Any]], at: float) -> None:
        if self.enabled:
            for item in items:  # a re-send of the same version keeps the first send's time
                self.sent_at.setdefault((item["id"], len(item["content"])), at)

    def arrived(self, client_id: str | None, content: str, at: float) -> None:
        if client_id is not None and (sent := self.sent_at.get((client_id, len(content)))):
            self.latencies_ms.append((at - sent) * 1000)


@dataclass
class _Tally:
    fanout: _FanOut
    watch: CommitWatch | None
    timeline: list[AckSample] | None
    start: float = 0.0  # perf_counter when the load began, all connections open
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    acked: int = 0
    created: int = 0
    duplicates: int = 0
    edits: int = 0
    frames: int = 0
    messages: int = 0
    newest_seq: dict[str, int] = field(default_factory=dict)  # session id -> highest seq acked
    session_port: dict[str, int] = field(default_factory=dict)
    edits_by_port: Counter[int] = field(default_factory=Counter)


async def run(
    plan: Plan,
    progress: Callable[[int], None] | None = None,
    timeline: list[AckSample] | None = None,
) -> Report:
    """Run the plan against the gateway; check that tabs got and PostgreSQL holds what it acked.

    `timeline`, when given, gets one sample per answered frame, for `plot`.
    """
    watch = CommitWatch() if plan.check_persisted else None
    tally = _Tally(_FanOut(enabled=plan.subscribers > 0), watch, timeline)
    async with contextlib.AsyncExitStack() as stack:
        tabs = [
            await stack.enter_async_context(_tab(plan, port, tally.fanout))
            for port in range(plan.first_port, plan.first_port + plan.ports)
            for _ in range(plan.subscribers)
        ]
        sockets = [
            await stack.enter_async_context(_connect(plan, index))
            for index in range(plan.connections)
        ]
        load_over = asyncio.Event()
        poller = None
        if watch is not None:
            poller = asyncio.create_task(_poll_commits(plan, tally, watch, load_over))
            stack.push_async_callback(_stopped, poller)
        with client_gc_paused():
            tally.start = time.perf_counter()
            await _load(plan, sockets, tally, progress)
            duration = time.perf_counter() - tally.start
        load_over.set()
        await _settle(plan, tabs, tally, poller)
    return _report(plan, tally, tabs, duration)


@contextlib.contextmanager
def client_gc_paused() -> Iterator[None]:
    """No garbage collection in a measuring client while it measures (one collection first).

    What a load client keeps (every frame sent, every latency) only grows, so its collector's
    full passes take longer and longer, and each stalls every connection of the client at
    once: tens of milliseconds that would be counted as the server's latency (a bare echo
    server measured an ack p99 of 52 ms at 5,000 frames/s). A run makes little cyclic
    garbage; the collector is back on (if it was) once the block ends. The benchmarks' own
    clients (bench/) pause theirs with this too.
    """
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def expected_acks(plan: Plan) -> int:
    """Messages the run will have acked if nothing is refused, re-sends and edits included;
    0 for a flat-out `duration_s` run, whose count is not known in advance."""
    if plan.new_frames is None:
        return 0
    frames = _split(plan.new_frames, plan.connections)
    extras = (int(f * plan.resend_share) + int(f * plan.edit_share) for f in frames)
    return (sum(frames) + sum(extras)) * plan.batch


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@contextlib.asynccontextmanager
async def _socket(plan: Plan, kind: str, ports: list[int]) -> AsyncIterator[ClientConnection]:
    """A connection that said hello and was welcomed."""
    ws_url = plan.url.replace("http", "ws", 1).rstrip("/") + "/ws"
    async with connect(ws_url, additional_headers=_auth(plan), open_timeout=30) as ws:
        hello = {"type": "hello", "kind": kind, "ports": ports, "client": {"name": "loadtest"}}
        await ws.send(orjson.dumps(hello).decode())
        welcome = orjson.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise ConnectionError(f"the gateway refused the hello: {welcome}")
        yield ws


def _connect(plan: Plan, index: int) -> contextlib.AbstractAsyncContextManager[ClientConnection]:
    return _socket(plan, "ide", [plan.first_port + index % plan.ports])


async def _stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _load(
    plan: Plan,
    sockets: list[ClientConnection],
    tally: _Tally,
    progress: Callable[[int], None] | None,
) -> None:
    """Drive every IDE connection to its end, redrawing the progress meanwhile."""
    total = plan.new_frames
    frames_each: list[int | None] = (
        [None] * plan.connections if total is None else [*_split(total, plan.connections)]
    )
    beat = asyncio.create_task(_progress_beat(tally, progress))
    try:
        await asyncio.gather(
            *(
                _Driver(plan, ws, index, frames, tally).run()
                for index, (ws, frames) in enumerate(zip(sockets, frames_each, strict=True))
            )
        )
    finally:
        await _stopped(beat)
    if progress is not None:
        progress(tally.acked)


async def _progress_beat(tally: _Tally, progress: Callable[[int], None] | None) -> None:
    """Redraw the progress a few times a second until the drivers are done (cancelled)."""
    if progress is None:
        return
    while True:
        progress(tally.acked)
        await asyncio.sleep(0.2)  # a display refresh, not synchronisation


class _Driver:
    """One IDE connection: sends its schedule and reads one answer (ack or error) per frame."""

    def __init__(
        self, plan: Plan, ws: ClientConnection, index: int, frames: int | None, tally: _Tally
    ) -> None:
        self.plan, self.ws, self.index, self.frames, self.tally = plan, ws, index, frames, tally
        self.port = plan.first_port + index % plan.ports
        self.due: dict[str, float] = {}  # ref -> when its frame was due (paced) or sent
        self.slots = asyncio.Semaphore(plan.in_flight if plan.rate <= 0 else 1 << 30)
        self.interval = plan.connections / plan.rate if plan.rate > 0 else 0.0
        self.sent = self.answered = 0
        self.finished = False  # the sender is done: the receiver ends with the last answer

    async def run(self) -> None:
        sending = asyncio.create_task(self._send())
        receiving = asyncio.create_task(self._receive())
        try:
            await asyncio.wait({sending, receiving}, return_when=asyncio.FIRST_COMPLETED)
            if receiving.done():
                receiving.result()  # it ends before the sender only by failing: raise that
            sending.result()
            self.finished = True
            if self.answered < self.sent:
                await receiving  # it returns with the last answer
        finally:  # when every frame is answered, the receiver waits for nothing: cancel it
            await _stopped(sending)
            await _stopped(receiving)

    async def _send(self) -> None:
        plan, start = self.plan, self.tally.start
        deadline = start + plan.duration_s if self.frames is None else math.inf
        run_id = uuid.uuid4().hex[:8]
        for number, items in enumerate(_schedule(plan, run_id, self.frames)):
            await self.slots.acquire()
            if time.perf_counter() >= deadline:
                return
            when = start + (number + self.index / plan.connections) * self.interval
            if self.interval and (wait := when - time.perf_counter()) > 0:
                await asyncio.sleep(wait)  # the pace itself: open loop
            ref = f"{self.index}-{number}"
            body: dict[str, Any] = (
                {"type": "message", "port": self.port, **items[0]}
                if plan.batch == 1
                else {"type": "extracted", "port": self.port, "messages": items}
            )
            now = time.perf_counter()
            self.due[ref] = when if self.interval else now
            self.tally.fanout.sent(items, now)
            self.tally.frames += 1
            self.tally.messages += len(items)
            self.sent += 1
            await self.ws.send(orjson.dumps({**body, "ref": ref}).decode())

    async def _receive(self) -> None:
        tally = self.tally
        while True:
            answer = orjson.loads(await self.ws.recv())
            now = time.perf_counter()
            self.answered += 1
            self.slots.release()
            acked = 0
            if answer.get("type") == "ack":
                acked = _count_ack(tally, answer, self.port, now)
            else:
                tally.errors[str(answer.get("code", answer.get("type")))] += 1
            if (due := self.due.pop(str(answer.get("ref")), None)) is not None:
                tally.latencies_ms.append((now - due) * 1000)
                if tally.timeline is not None:
                    tally.timeline.append((now - tally.start, (now - due) * 1000, acked))
            if self.finished and self.answered == self.sent:
                return


def _schedule(plan: Plan, run_id: str, frames: int | None) -> Iterator[list[dict[str, Any]]]:
    """New frames (None: without end), each followed now and then by a re-send of an earlier
    frame as last sent, which must come back duplicate, and by an edit: the frame holding the
    newest assistant message, that message grown (its other items come back duplicate)."""
    padding = "x" * max(0, plan.content_bytes - 40)
    resend, edit = _Every(frames, plan.resend_share), _Every(frames, plan.edit_share)
    sent: list[list[dict[str, Any]]] = []
    growing = 0  # index in `sent` of the frame with the newest assistant message
    for number in itertools.count() if frames is None else range(frames):
        items = [_item(run_id, number * plan.batch + i, padding) for i in range(plan.batch)]
        sent.append(items)
        if any(item["role"] == "assistant" for item in items):
            growing = len(sent) - 1
        yield items
        if resend.due(number):
            yield sent[(number * 7919) % len(sent)]
        if edit.due(number):
            sent[growing] = _grown(sent[growing])
            yield sent[growing]


class _Every:
    """When the extras of one kind (re-sends, edits) come: after every `every` new frames, and
    `int(frames * share)` of them in all (no limit on an endless run)."""

    def __init__(self, frames: int | None, share: float) -> None:
        if frames is None:
            self.limit: float = math.inf
            self.every = max(1, round(1 / share)) if share > 0 else 0
        else:
            self.limit = int(frames * share)
            self.every = frames // self.limit if self.limit else 0
        self.done = 0

    def due(self, number: int) -> bool:
        if self.every and (number + 1) % self.every == 0 and self.done < self.limit:
            self.done += 1
            return True
        return False


def _item(run_id: str, position: int, padding: str) -> dict[str, Any]:
    """Message `position` of a connection's transcript: user and assistant take turns."""
    role = "assistant" if position % 2 else "user"
    return {"id": f"{run_id}-{position}", "role": role,
            "content": f"load {run_id} {position} {padding}"}  # fmt: skip


def _grown(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frame again, its last assistant message (else its last) longer, as a reply grows."""
    roles = [item["role"] for item in items]
    at = len(roles) - 1 - roles[::-1].index("assistant") if "assistant" in roles else -1
    grown = [*items]
    grown[at] = {**items[at], "content": items[at]["content"] + _EDIT_CHUNK}
    return grown


def _count_ack(tally: _Tally, ack: dict[str, Any], port: int, now: float) -> int:
    """Count the ack's results; returns how many there were."""
    session_id = str(ack["session_id"])
    tally.session_port[session_id] = port
    results = ack["results"]
    for result in results:
        tally.acked += 1
        seq = int(result["seq"])
        if result.get("duplicate"):
            tally.duplicates += 1
        elif result.get("updated"):
            tally.edits += 1
            tally.edits_by_port[port] += 1
        else:
            tally.created += 1
            if tally.watch is not None:
                tally.watch.acked(session_id, seq, now)
        if seq > tally.newest_seq.get(session_id, 0):
            tally.newest_seq[session_id] = seq
    return len(results)


class _Tab:
    """A UI tab subscribed to a port: checks the seqs it gets and times their fan-out."""

    def __init__(self, ws: ClientConnection, port: int, subscribed: dict[str, Any],
                 fanout: _FanOut) -> None:  # fmt: skip
        self.ws, self.port, self.fanout = ws, port, fanout
        session = subscribed.get("session")
        last = int(subscribed.get("last_seq") or 0)
        self.tracks = {} if not session else {str(session["id"]): SeqTracker(last)}
        self.events = self.edits = 0
        self.dropped = False
        self.targets: dict[str, int] | None = None  # session -> highest seq acked, at the end
        self.edits_acked = 0  # edits acked on the port, known at the end
        self.caught_up = asyncio.Event()

    async def read(self) -> None:
        """Take events until cancelled; an end before that is the gateway dropping the tab."""
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                self._event(orjson.loads(raw))
        self.dropped = True
        self.caught_up.set()  # nothing more will come

    def _event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "message":
            return  # session and presence events: not what is checked
        message, session_id = event["message"], str(event["session_id"])
        track = self.tracks.setdefault(session_id, SeqTracker())  # a new session: from seq 1
        edited = bool(event.get("edited"))
        track.see(int(message["seq"]), edited)
        self.events += 1
        self.edits += edited
        self.fanout.arrived(message.get("client_id"), message["content"], time.perf_counter())
        if self.targets is not None and self._reached():
            self.caught_up.set()

    def expect(self, targets: dict[str, int], edits: int) -> None:
        """The run is over: be caught up once these sessions are seen up to these seqs, and
        this many edits."""
        self.targets, self.edits_acked = targets, edits
        if self._reached():
            self.caught_up.set()

    def _reached(self) -> bool:
        targets = self.targets or {}
        seen = all(s in self.tracks and self.tracks[s].last >= n for s, n in targets.items())
        return seen and self.edits >= self.edits_acked

    def missed_edits(self) -> int:
        """Edits acked on the port with no event here: the tab shows an older version."""
        return max(0, self.edits_acked - self.edits)

    def gaps(self) -> int:
        """Seqs skipped, and those still missing of the sessions expected."""
        skipped = sum(track.gaps for track in self.tracks.values())
        targets = self.targets or {}
        return skipped + sum(
            self.tracks.get(s, SeqTracker()).short_of(n) for s, n in targets.items()
        )

    def duplicates(self) -> int:
        return sum(track.duplicates for track in self.tracks.values())


@contextlib.asynccontextmanager
async def _tab(plan: Plan, port: int, fanout: _FanOut) -> AsyncIterator[_Tab]:
    """A tab subscribed to `port`, reading its events until the context ends."""
    async with _socket(plan, "ui", []) as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "port": port, "ref": "tab"}).decode())
        answer = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        if answer.get("type") != "subscribed":
            raise ConnectionError(f"the gateway refused the subscription: {answer}")
        tab = _Tab(ws, port, answer, fanout)
        reader = asyncio.create_task(tab.read())
        try:
            yield tab
        finally:
            await _stopped(reader)


async def _settle(
    plan: Plan, tabs: list[_Tab], tally: _Tally, poller: asyncio.Task[None] | None
) -> None:
    """After the load: tabs and writers get `persist_wait_s` to catch up with what was acked."""
    for tab in tabs:
        newest = {s: n for s, n in tally.newest_seq.items() if tally.session_port[s] == tab.port}
        tab.expect(newest, tally.edits_by_port[tab.port])
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(plan.persist_wait_s):
            await asyncio.gather(*(tab.caught_up.wait() for tab in tabs))
    if poller is not None:
        await poller  # it stops by itself, `persist_wait_s` after the load at the latest


async def _poll_commits(
    plan: Plan, tally: _Tally, watch: CommitWatch, load_over: asyncio.Event
) -> None:
    """Every SAMPLE_INTERVAL_S, read the committed count of each session still behind; once
    the load is over, go on until none is behind or `persist_wait_s` has passed."""
    limit = asyncio.Semaphore(_SAMPLE_CONCURRENCY)
    deadline = math.inf
    async with httpx.AsyncClient(base_url=plan.url, headers=_auth(plan), timeout=30) as http:

        async def read(session_id: str) -> None:
            async with limit:
                response = await http.get(f"/api/sessions/{session_id}")
            if response.status_code == 200:
                count = int(response.json()["message_count"])
                watch.sampled(session_id, count, time.perf_counter())

        while True:
            if load_over.is_set() and deadline == math.inf:
                deadline = time.monotonic() + plan.persist_wait_s
            behind = watch.behind(tally.newest_seq)
            if (load_over.is_set() and not behind) or time.monotonic() > deadline:
                return
            began = time.perf_counter()
            await asyncio.gather(*(read(s) for s in behind))
            # The sampling period (the lag's resolution), not synchronisation: the writer has
            # no event for us.
            await asyncio.sleep(max(0.0, SAMPLE_INTERVAL_S - (time.perf_counter() - began)))


def _report(plan: Plan, tally: _Tally, tabs: list[_Tab], duration: float) -> Report:
    watch = tally.watch
    missing = watch.missing(tally.newest_seq) if watch is not None else 0
    return Report(
        frames_offered=tally.frames,
        messages_offered=tally.messages,
        acked=tally.acked,
        created=tally.created,
        duplicates=tally.duplicates,
        edits=tally.edits,
        errors=dict(tally.errors),
        duration_s=duration,
        acked_per_s=tally.acked / duration if duration else 0.0,
        ack_latency_ms=_percentiles(sorted(tally.latencies_ms)),
        sessions=len(tally.newest_seq),
        persistence_checked=watch is not None,
        persisted=watch is not None and missing == 0,
        not_persisted=missing,
        commit_lag_ms=_percentiles(sorted(watch.lags_ms), _TAIL) if watch is not None else {},
        commit_sample_ms=watch.sample_ms() if watch is not None else 0.0,
        subscribers=len(tabs),
        fanout_events=sum(tab.events for tab in tabs),
        fanout_latency_ms=_percentiles(sorted(tally.fanout.latencies_ms), _TAIL),
        subscriber_gaps=sum(tab.gaps() for tab in tabs),
        subscriber_duplicates=sum(tab.duplicates() for tab in tabs),
        subscriber_missed_edits=sum(tab.missed_edits() for tab in tabs),
        subscribers_dropped=sum(tab.dropped for tab in tabs),
    )


def _auth(plan: Plan) -> dict[str, str]:
    return {"Authorization": f"Bearer {plan.token}"} if plan.token else {}


def _percentiles(sorted_ms: list[float], which: Sequence[int] = _PERCENTILES) -> dict[str, float]:
    if not sorted_ms:
        return {}
    picked = {f"p{p}": sorted_ms[min(len(sorted_ms) - 1, len(sorted_ms) * p // 100)]
              for p in which}  # fmt: skip
    return picked | {"max": sorted_ms[-1]}


def plot(timeline: Sequence[AckSample], path: str | Path, title: str = "") -> None:
    """Draw the run to a PNG: ack latency p50/p99 per 0.1 s, and acked messages per second.

    matplotlib is imported here, not at the top: only `--plot` needs it (the `plot` extra).
    The Agg canvas draws to a file with no display and no global pyplot state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 6), layout="constrained")
    FigureCanvasAgg(figure)
    latency, throughput = figure.subplots(2, 1, sharex=True)
    times, p50, p99 = _latency_bins(timeline)
    latency.plot(times, p50, label="p50", linewidth=1)
    latency.plot(times, p99, label="p99", linewidth=1)
    latency.set_ylabel(f"ack latency, ms (per {_PLOT_BIN_S:g} s)")
    latency.legend(loc="upper right")
    latency.set_title(title)
    seconds, acked = _throughput(timeline)
    throughput.bar(seconds, acked, width=1.0, align="edge")
    throughput.set_ylabel("messages acked per second")
    throughput.set_xlabel("seconds since the load began")
    figure.savefig(path, dpi=100)


def _latency_bins(timeline: Sequence[AckSample]) -> tuple[list[float], list[float], list[float]]:
    """Per bin of _PLOT_BIN_S seconds that had acks: its middle, p50 and p99."""
    bins: dict[int, list[float]] = defaultdict(list)
    for at, latency_ms, _ in timeline:
        bins[int(at / _PLOT_BIN_S)].append(latency_ms)
    times, p50, p99 = [], [], []
    for number in sorted(bins):
        figures = _percentiles(sorted(bins[number]), _TAIL)
        times.append((number + 0.5) * _PLOT_BIN_S)
        p50.append(figures["p50"])
        p99.append(figures["p99"])
    return times, p50, p99


def _throughput(timeline: Sequence[AckSample]) -> tuple[list[int], list[int]]:
    """Messages acked in each whole second of the run, quiet seconds included."""
    per_second: Counter[int] = Counter()
    for at, _, acked in timeline:
        per_second[int(at)] += acked
    seconds = list(range(max(per_second) + 1)) if per_second else []
    return seconds, [per_second[s] for s in seconds]
