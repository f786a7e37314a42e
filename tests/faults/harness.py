"""The fault suite's harness: real processes, a resending load client, recording subscribers,
and one report per scenario.

A scenario starts its own servers when it kills them (`started_postgres`, `started_valkey`:
`storage.embedded.ServerProcess` handles), runs `chat-gateway serve` and `chat-gateway writer`
as subprocesses (`gateway_process`, `writer_process`), drives them with a `LoadClient` and
`Subscriber`s, injects its fault, and ends with `collect_report`, which reads PostgreSQL once
the writers drained and counts what the promise forbids:

* lost: acked (an `ack` frame reached the client) but not stored, or stored under another id
  or seq than the ack said;
* duplicated: one client id stored twice;
* seq gaps: a session's seqs in PostgreSQL are not exactly 1..n;
* subscriber gaps, duplicates and disorder: a subscriber missed a stored seq, got one twice,
  or got one after a higher one.

`Report.check()` prints the report (visible with `pytest -s` or `-rA`) and fails on any of
them. Clients behave as docs/protocol.md asks: the load client resends every unacked frame
with the same client id after an error frame or a dropped connection (a resend is never
stored twice), and subscribers resume with `since_seq`.

Every wait here is bounded: by an event with a timeout, or, for a state only another
process knows (a stream's length, `/readyz`), by `wait_until`, which asks at a fixed interval
until a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import re
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from storage.embedded import ServerProcess, postgres_server, redis_server
from tests.processes import CHAT_GATEWAY, command_env, stop_process

START_TIMEOUT = 60.0  # a `serve` or `writer` process up and ready
STOP_TIMEOUT = 30.0  # a process gone after its stop signal
IO_TIMEOUT = 10.0  # one HTTP request, one WebSocket handshake
_LOG_LINES = 5000  # stderr lines kept per process (an outage can log hundreds per second)
_RUNNING = re.compile(r"Uvicorn running on (http://\S+)")


# --- Servers the test owns ------------------------------------------------------------------


@contextlib.contextmanager
def started_postgres(data_dir: Path) -> Iterator[ServerProcess]:
    """A PostgreSQL of this test's own, started; stopped and its cluster deleted on exit.

    As root the cluster may live in /var/lib/chat-gateway (see storage/embedded.py): that
    folder is removed too, so a run leaves nothing behind.
    """
    server = postgres_server(data_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if data_dir.is_symlink():
            shutil.rmtree(data_dir.resolve(), ignore_errors=True)
            data_dir.unlink()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def started_valkey(data_dir: Path, *, appendonly: bool = True) -> Iterator[ServerProcess]:
    """A Valkey of this test's own (append-only, fsync every second, unless told otherwise),
    started; stopped on exit."""
    server = redis_server(data_dir, appendonly=appendonly)
    try:
        server.start()
        yield server
    finally:
        server.stop()


async def restart(server: ServerProcess) -> None:
    """Start a stopped or killed server again on its port and data dir; return once it
    accepts connections. The spawn happens in this (the main) thread, which outlives the
    server; the wait runs in a worker thread so that the load keeps running meanwhile."""
    server.start(wait=False)
    await asyncio.to_thread(server.wait_ready)


# --- chat-gateway processes -----------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """What every process of one scenario shares: the servers, a key prefix and a user."""

    database_url: str
    redis_url: str
    key_prefix: str = field(default_factory=lambda: f"f{uuid.uuid4().hex[:8]}:")
    user: str = field(default_factory=lambda: f"fault{uuid.uuid4().hex[:8]}")

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a `chat-gateway` process of this deployment, plus `extra`
        (GATEWAY_* settings, e.g. GATEWAY_WRITER_CLAIM_IDLE_MS)."""
        return command_env(
            GATEWAY_DATABASE_URL=self.database_url,
            GATEWAY_REDIS_URL=self.redis_url,
            GATEWAY_KEY_PREFIX=self.key_prefix,
            GATEWAY_LOCAL_USER=self.user,
            GATEWAY_WRITER_BLOCK_MS="20",
            GATEWAY_LOG_LEVEL="info",
            **extra,
        )


class ChildProcess:
    """A running `chat-gateway` subprocess and the stderr lines it wrote so far."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.lines: collections.deque[str] = collections.deque(maxlen=_LOG_LINES)
        self.url = ""  # `serve` only: its http://127.0.0.1:<port>
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def count(self, text: str) -> int:
        """Log lines (of those kept) that contain `text`."""
        return sum(text in line for line in self.lines)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as when the machine or the OOM killer takes it."""
        if self.proc.returncode is None:
            self.proc.kill()

    async def stop(
        self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT
    ) -> int:
        """Send `sig` and return the exit code; fails the test if it is not gone in time."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.name} ignored {sig.name} for {timeout:.0f} s:\n{self.log[-3000:]}"
            ) from None

    async def _read(self, ready: Callable[[ChildProcess, str], bool]) -> None:
        assert self.proc.stderr is not None
        while line := (await self.proc.stderr.readline()).decode(errors="replace"):
            self.lines.append(line)
            if not self._ready.done() and ready(self, line):
                self._ready.set_result(None)
        if not self._ready.done():
            self._ready.set_exception(
                AssertionError(f"{self.name} exited while starting:\n{self.log[-3000:]}")
            )


@contextlib.asynccontextmanager
async def _child(
    name: str,
    args: Sequence[str],
    env: dict[str, str],
    cwd: Path,
    ready: Callable[[ChildProcess, str], bool],
) -> AsyncIterator[ChildProcess]:
    """Run `chat-gateway *args` until the context exits; yield it once `ready` saw its line."""
    proc = await asyncio.create_subprocess_exec(
        CHAT_GATEWAY, *args, cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    child = ChildProcess(name, proc)
    child._reader = asyncio.create_task(child._read(ready), name=f"{name}-stderr")
    try:
        try:
            await asyncio.wait_for(asyncio.shield(child._ready), START_TIMEOUT)
        except TimeoutError:
            raise AssertionError(
                f"{name} was not up within {START_TIMEOUT:.0f} s:\n{child.log[-3000:]}"
            ) from None
        yield child
    finally:
        await stop_process(proc, STOP_TIMEOUT)
        await asyncio.wait_for(child._reader, IO_TIMEOUT)  # EOF once the process is gone
        if child._ready.done() and not child._ready.cancelled():
            child._ready.exception()  # retrieved: no "exception was never retrieved"


@contextlib.asynccontextmanager
async def gateway_process(
    deployment: Deployment, cwd: Path, *args: str, **env: str
) -> AsyncIterator[ChildProcess]:
    """`chat-gateway serve --port 0 *args` for the deployment, up once uvicorn accepts
    (migrations applied, lifespan done); its `url` is the port it bound. Stopped with SIGINT
    on exit if still running."""

    def ready(child: ChildProcess, line: str) -> bool:
        if match := _RUNNING.search(line):
            child.url = match.group(1)
        return bool(child.url)  # uvicorn logs this after "Application startup complete"

    async with _child(
        "serve", ["serve", "--port", "0", *args], deployment.env(**env), cwd, ready
    ) as child:
        yield child


@contextlib.asynccontextmanager
async def writer_process(
    deployment: Deployment, cwd: Path, **env: str
) -> AsyncIterator[ChildProcess]:
    """`chat-gateway writer` for the deployment, up once it logged that it runs (its
    consumer group exists). Stopped with SIGINT (it drains first) on exit if still running."""
    async with _child(
        "writer", ["writer"], deployment.env(**env), cwd, lambda _, line: " running" in line
    ) as child:
        yield child


async def readyz(base_url: str) -> tuple[int, dict[str, Any]]:
    """`GET /readyz`: its status code and body."""
    async with httpx.AsyncClient(timeout=IO_TIMEOUT) as http:
        response = await http.get(base_url + "/readyz")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Ask `check` every `interval` s until it holds; return the seconds it took, or fail
    after `timeout`. Only for states another process holds and announces to no one."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - started


async def stream_empty(redis: aioredis.Redis, stream: str) -> bool:
    """Whether every entry of `stream` is written: writers delete entries after their XACK."""
    return int(await redis.xlen(stream)) == 0


# --- The load client ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acked:
    """One message the gateway acknowledged: what the ack promised."""

    client_id: str
    session_id: str
    seq: int
    id: str
    durability: str
    at: float  # time.monotonic() when the ack arrived


OnPersisted = Callable[[list[Acked]], Awaitable[None]]


class LoadClient:
    """`connections` WebSocket clients, each sending `message` frames on its own port (one
    session per port) at `rate` frames per second, with up to `window` frames in flight.

    Every frame has a unique client id. A frame is unacked until its `ack` arrives; after an
    error frame (`overloaded` and the like: resent after `retry_after_ms`) or a dropped
    connection (reconnect with exponential backoff, then resend every unacked frame in
    order), it is sent again with the same id. Every `durable_every`-th frame is
    `durable: true`; `on_persisted` is awaited with its results as soon as such an ack
    arrives, before the client reads on (to check PostgreSQL at that very moment).

    Use as an async context manager; `finish` stops new frames and waits for the unacked.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        connections: int = 6,
        rate: float = 40.0,
        window: int = 16,
        port_base: int = 9300,
        durable_every: int = 0,
        on_persisted: OnPersisted | None = None,
    ) -> None:
        self.urls = list(urls)  # replace it to send the clients elsewhere (a new gateway)
        self.connections = connections
        self.rate = rate
        self.window = window
        self.port_base = port_base
        self.durable_every = durable_every
        self._on_persisted = on_persisted
        self.run_id = uuid.uuid4().hex[:6]
        self.acked: dict[str, Acked] = {}
        self.errors: collections.Counter[str] = collections.Counter()
        self.closes: collections.Counter[int | None] = collections.Counter()
        self.connects = 0
        self.failed_connects = 0
        self.sent = 0  # frames sent, resends included
        self.resent = 0
        self._unacked: list[dict[str, dict[str, Any]]] = [{} for _ in range(connections)]
        self._numbers = [itertools.count() for _ in range(connections)]  # per client, for ids
        self._frames = 0  # new frames made, to pick the durable ones
        self._sending = True
        self._closed = False
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> LoadClient:
        self._tasks = [
            asyncio.create_task(self._run(i), name=f"load-{i}") for i in range(self.connections)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True  # ends a client loop even where a cancellation got swallowed
        await _cancel(self._tasks)

    def summary(self) -> str:
        """What the clients went through, for failure messages."""
        return (
            f"sent {self.sent}, resent {self.resent}, unacked {self.unacked}, errors"
            f" {dict(self.errors)}, closes {dict(self.closes)}, connects {self.connects},"
            f" failed connects {self.failed_connects}"
        )

    @property
    def unacked(self) -> int:
        return sum(map(len, self._unacked))

    def acks_since(self, moment: float) -> list[Acked]:
        return [a for a in self.acked.values() if a.at >= moment]

    def newest_seqs(self) -> dict[str, int]:
        """The highest acked seq of each session so far."""
        newest: dict[str, int] = {}
        for ack in self.acked.values():
            newest[ack.session_id] = max(newest.get(ack.session_id, 0), ack.seq)
        return newest

    async def wait_acked(self, count: int, timeout: float) -> None:
        """Return once at least `count` messages are acked in all; fail after `timeout`."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(self.acked) >= count)
        except TimeoutError:
            raise AssertionError(
                f"{len(self.acked)} of {count} acks in {timeout:g} s; {self.summary()}"
            ) from None

    async def wait_acked_after(self, moment: float, timeout: float) -> float:
        """Wait for the first ack that arrives after `moment` (time.monotonic()); return
        when it came."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: bool(self.acks_since(moment)))
        except TimeoutError:
            raise AssertionError(f"no ack within {timeout:g} s after the fault") from None
        return min(a.at for a in self.acks_since(moment))

    async def finish(self, timeout: float) -> None:
        """Stop sending new frames; wait until every sent frame is acked; fail after
        `timeout` with what is still unacked."""
        self._sending = False
        try:
            async with asyncio.timeout(timeout), self._changed:
                self._changed.notify_all()
                await self._changed.wait_for(lambda: self.unacked == 0)
        except TimeoutError:
            raise AssertionError(
                f"{self.unacked} frames still unacked {timeout:g} s after the load stopped;"
                f" {self.summary()}"
            ) from None

    def stop_sending(self) -> None:
        """No new frames from now on (unacked ones are still resent)."""
        self._sending = False

    async def _run(self, index: int) -> None:
        backoff = 0.05
        for attempt in itertools.count():
            if self._closed or (not self._sending and not self._unacked[index]):
                return
            url = self.urls[(index + attempt) % len(self.urls)]
            try:
                async with connect(url, open_timeout=IO_TIMEOUT, close_timeout=1) as ws:
                    self.connects += 1
                    backoff = 0.05
                    with contextlib.suppress(ConnectionClosed):
                        await self._session(index, ws)
                self.closes[ws.close_code] += 1  # 1006: gone without a close frame
            except (OSError, TimeoutError, InvalidHandshake):
                self.failed_connects += 1
            # Jittered exponential backoff, so clients do not storm a server coming back.
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 1.0)

    async def _session(self, index: int, ws: ClientConnection) -> None:
        """One connection's life: resend the unacked, send new frames, read acks."""
        unacked = self._unacked[index]
        queue: collections.deque[str] = collections.deque(unacked)  # refs to (re)send
        self.resent += len(queue)
        inflight: set[str] = set()
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        numbers = self._numbers[index]

        def resend_later(ref: str, delay_s: float) -> None:
            def again() -> None:
                if ref in unacked:
                    queue.append(ref)
                    self.resent += 1
                    wake.set()

            loop.call_later(delay_s, again)

        async def send() -> None:
            next_new = time.monotonic()
            while True:
                if queue and len(inflight) < self.window:
                    ref = queue.popleft()
                    if ref in unacked and ref not in inflight:
                        inflight.add(ref)
                        await ws.send(orjson.dumps(unacked[ref]).decode())
                        self.sent += 1
                    continue
                now = time.monotonic()
                if self._sending and len(inflight) < self.window and now >= next_new:
                    ref = f"{self.run_id}-{index}-{next(numbers)}"
                    frame: dict[str, Any] = {
                        "type": "message",
                        "ref": ref,
                        "id": ref,
                        "port": self.port_base + index,
                        "content": f"load {ref}",
                    }
                    self._frames += 1
                    if self.durable_every and self._frames % self.durable_every == 0:
                        frame["durable"] = True
                    unacked[ref] = frame
                    queue.append(ref)
                    next_new = max(next_new + 1 / self.rate, now - 1)  # pacing, not a wait
                    continue
                wake.clear()
                pause = max(0.0, next_new - now) if self._sending else 1.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), pause)

        async def receive() -> None:
            async for raw in ws:
                frame = orjson.loads(raw)
                ref = frame.get("ref")
                if ref not in unacked:
                    continue
                inflight.discard(ref)
                if frame["type"] == "ack":
                    await self._record(unacked.pop(ref), frame)
                else:
                    code = frame.get("code", frame["type"])
                    self.errors[code] += 1
                    retry_ms = (frame.get("details") or {}).get("retry_after_ms", 200)
                    resend_later(ref, min(retry_ms, 1000) / 1000)
                wake.set()

        sender = asyncio.create_task(send(), name=f"load-{index}-send")
        receiver = asyncio.create_task(receive(), name=f"load-{index}-receive")
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver):
                task.cancel()
            for task in (sender, receiver):
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task  # re-raises a bug in either (anything but a closed socket)

    async def _record(self, frame: dict[str, Any], ack: dict[str, Any]) -> None:
        now = time.monotonic()
        results = [
            Acked(r["client_id"], ack["session_id"], r["seq"], r["id"], ack["durability"], now)
            for r in ack["results"]
        ]
        if ack["durability"] == "persisted" and self._on_persisted is not None:
            await self._on_persisted(results)
        async with self._changed:
            for result in results:
                self.acked[result.client_id] = result
            self._changed.notify_all()


# --- Subscribers ----------------------------------------------------------------------------


class Subscriber:
    """A live feed client: subscribes to a port (following its rotations) or to one session,
    from seq 0, and records every seq it gets per session. After a dropped connection it
    reconnects (to the next of `urls`, with backoff) and resumes with `since_seq` (and
    `since_session_id` for a port). A `resync` event needs nothing from it: the gateway
    recovers message feeds in place (docs/protocol.md), so it only counts them.
    """

    def __init__(
        self, urls: Sequence[str], *, port: int | None = None, session_id: str | None = None
    ) -> None:
        assert (port is None) != (session_id is None), "a port or a session"
        self.urls = list(urls)
        self.port = port
        self.session: str | None = session_id  # the session followed now
        self.received: dict[str, list[int]] = collections.defaultdict(list)
        self.resumes = 0
        self.resyncs = 0
        self.closes: collections.Counter[int | None] = collections.Counter()
        self._changed = asyncio.Condition()
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run(), name="subscriber")
        try:
            await asyncio.wait_for(asyncio.shield(self._subscribed.wait()), IO_TIMEOUT)
        except TimeoutError:
            self._task.cancel()
            raise AssertionError("the subscriber was not subscribed in time") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._closed = True
        await _cancel([self._task])

    def last_seq(self, session_id: str) -> int:
        seqs = self.received.get(session_id)
        return max(seqs) if seqs else 0

    async def wait_for(self, session_id: str, seq: int, timeout: float) -> None:
        """Return once seq `seq` of the session has arrived; fail after `timeout`."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self.last_seq(session_id) >= seq)
        except TimeoutError:
            raise AssertionError(
                f"subscriber got up to seq {self.last_seq(session_id)} of {seq} in {session_id}"
                f" within {timeout:g} s"
            ) from None

    def faults(self, stored: dict[str, set[int]]) -> tuple[int, int, int]:
        """(gaps, duplicates, disorder) against `stored`, the seqs in PostgreSQL of each
        session this subscriber should have seen whole: stored seqs it never got, seqs it got
        twice, seqs that came after a higher one."""
        gaps = duplicates = disorder = 0
        for session_id in {*stored, *self.received}:
            seqs = self.received.get(session_id, [])
            gaps += len(stored.get(session_id, set()) - set(seqs))
            duplicates += len(seqs) - len(set(seqs))
            disorder += sum(b < a for a, b in itertools.pairwise(seqs))
        return gaps, duplicates, disorder

    def _subscribe_frame(self) -> dict[str, Any]:
        since = self.last_seq(self.session) if self.session else 0
        if self.port is None:
            return {"type": "subscribe", "session_id": self.session, "since_seq": since}
        frame: dict[str, Any] = {"type": "subscribe", "port": self.port, "since_seq": since}
        if self.session is not None:
            frame["since_session_id"] = self.session
        return frame

    async def _run(self) -> None:
        backoff = 0.05
        for attempt in itertools.count():
            if self._closed:
                return
            url = self.urls[attempt % len(self.urls)]
            try:
                async with connect(url, open_timeout=IO_TIMEOUT, close_timeout=1) as ws:
                    backoff = 0.05
                    if attempt:
                        self.resumes += 1
                    await ws.send(orjson.dumps(self._subscribe_frame()).decode())
                    with contextlib.suppress(ConnectionClosed):
                        async for raw in ws:
                            frame = orjson.loads(raw)
                            if frame["type"] == "resync":
                                self.resyncs += 1
                            else:
                                await self._on_frame(frame)
                self.closes[ws.close_code] += 1
            except (OSError, TimeoutError, InvalidHandshake):
                pass
            await asyncio.sleep(backoff * (0.5 + random.random()))  # reconnect backoff
            backoff = min(backoff * 2, 1.0)

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "subscribed":
            if self.port is not None and frame.get("session") and self.session is None:
                self.session = frame["session"]["id"]
            self._subscribed.set()
        elif kind == "session" and self.port is not None and frame.get("activated"):
            self.session = frame["session"]["id"]
        elif kind == "message" and not frame["edited"]:
            async with self._changed:
                self.received[frame["session_id"]].append(frame["message"]["seq"])
                if self.port is not None and self.session is None:
                    self.session = frame["session_id"]
                self._changed.notify_all()


async def caught_up(feeds: Sequence[Subscriber], seqs: dict[str, int]) -> None:
    """Wait until each feed has got up to `seqs[s]` of the session `s` it follows (each must
    follow one of them)."""
    waits = [
        feed.wait_for(feed.session, seqs[feed.session], timeout=30)
        for feed in feeds
        if feed.session in seqs
    ]
    assert len(waits) == len(feeds), "a feed follows no session of the load"
    await asyncio.gather(*waits)


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel client tasks and wait for them, bounded: each also checks its `_closed` flag."""
    pending = set(tasks)
    for _ in range(3):  # again for a task that swallowed a cancellation mid-cleanup
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=IO_TIMEOUT / 3)
    assert not pending, f"{len(pending)} client tasks did not stop: {pending}"


# --- The report -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredRow:
    client_id: str | None
    session_id: str
    port: int
    seq: int
    id: str


async def stored_rows(database_url: str, user: str) -> list[StoredRow]:
    """Every message row of the user in PostgreSQL."""
    conn = await asyncpg.connect(database_url)
    try:
        records = await conn.fetch(
            "SELECT client_id, session_id, port, seq, id FROM messages WHERE user_id = $1", user
        )
    finally:
        await conn.close()
    return [
        StoredRow(r["client_id"], str(r["session_id"]), r["port"], r["seq"], str(r["id"]))
        for r in records
    ]


@dataclass
class Report:
    """What one scenario did to the promise. Times are seconds; None: not measured."""

    scenario: str
    acked: int
    stored: int
    lost: int
    duplicated: int
    seq_gaps: int
    subscriber_gaps: int = 0
    subscriber_duplicates: int = 0
    subscriber_disorder: int = 0
    recovery_s: float | None = None
    duration_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        recovery = "n/a" if self.recovery_s is None else f"{self.recovery_s:.2f} s"
        lines = [
            f"FAULT REPORT {self.scenario}",
            f"  acked {self.acked}, stored {self.stored}, lost {self.lost},"
            f" duplicated {self.duplicated}, seq gaps {self.seq_gaps}",
            f"  subscriber gaps {self.subscriber_gaps}, duplicates"
            f" {self.subscriber_duplicates}, disorder {self.subscriber_disorder}",
            f"  time to recover {recovery}, duration {self.duration_s:.1f} s",
        ]
        lines += [f"  {key}: {value}" for key, value in self.notes.items()]
        return "\n".join(lines)

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.seq_gaps
            or self.subscriber_gaps
            or self.subscriber_duplicates
            or self.subscriber_disorder
        )

    def check(self, *, min_acked: int = 1) -> None:
        """Print the report, then fail on any loss, duplicate or gap (or on too little load
        for the scenario to mean anything)."""
        print("\n" + self.render(), flush=True)
        assert self.acked >= min_acked, f"only {self.acked} acks: the load did not run\n{self}"
        assert self.clean, self.render()

    def __str__(self) -> str:
        return self.render()


async def collect_report(
    scenario: str,
    deployment: Deployment,
    load: LoadClient | Sequence[LoadClient],
    *,
    subscribers: Sequence[Subscriber] = (),
    started: float,
    recovery_s: float | None = None,
    notes: dict[str, Any] | None = None,
) -> Report:
    """Compare what was acked (and seen live) with PostgreSQL. Call it once the writers have
    drained: whatever is acked and not in PostgreSQL counts as lost."""
    loads = [load] if isinstance(load, LoadClient) else list(load)
    acked = {k: v for client in loads for k, v in client.acked.items()}
    rows = await stored_rows(deployment.database_url, deployment.user)
    by_client: dict[str | None, list[StoredRow]] = collections.defaultdict(list)
    per_session: dict[str, set[int]] = collections.defaultdict(set)
    per_port: dict[int, set[str]] = collections.defaultdict(set)
    for row in rows:
        by_client[row.client_id].append(row)
        per_session[row.session_id].add(row.seq)
        per_port[row.port].add(row.session_id)
    lost = 0
    for ack in acked.values():
        found = by_client.get(ack.client_id, [])
        if (ack.session_id, ack.seq, ack.id) not in {(r.session_id, r.seq, r.id) for r in found}:
            lost += 1
    duplicated = sum(len(v) - 1 for k, v in by_client.items() if k is not None and len(v) > 1)
    seq_gaps = sum(max(seqs) - len(seqs) for seqs in per_session.values())
    gaps = duplicates = disorder = 0
    for subscriber in subscribers:
        # A port feed must have seen every session of its port; a session feed its session.
        followed = per_port[subscriber.port] if subscriber.port is not None else set()
        if subscriber.port is None and subscriber.session is not None:
            followed = {subscriber.session}
        g, d, o = subscriber.faults({sid: per_session[sid] for sid in followed})
        gaps, duplicates, disorder = gaps + g, duplicates + d, disorder + o
    return Report(
        scenario=scenario,
        acked=len(acked),
        stored=len(rows),
        lost=lost,
        duplicated=duplicated,
        seq_gaps=seq_gaps,
        subscriber_gaps=gaps,
        subscriber_duplicates=duplicates,
        subscriber_disorder=disorder,
        recovery_s=recovery_s,
        duration_s=time.monotonic() - started,
        notes={
            "frames sent": sum(c.sent for c in loads),
            "resent": sum(c.resent for c in loads),
            "errors": dict(sum((c.errors for c in loads), collections.Counter())),
            "closes": {
                str(k): v for k, v in sum((c.closes for c in loads), collections.Counter()).items()
            },
            "connects": sum(c.connects for c in loads),
            "failed connects": sum(c.failed_connects for c in loads),
            **(notes or {}),
        },
    )
