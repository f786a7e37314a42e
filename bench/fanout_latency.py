"""Fan-out latency, send to delivery, through the real gateway against a bare broadcast server.

    python -m bench.fanout_latency [--subscribers 1 10 100 1000] [--messages 200]

What a browser tab watching a session waits for: the time from an IDE connection sending a
`message` frame to each subscriber of that session receiving it, with 1 to 1,000 subscribers
on one session. The gateway (`chat-gateway serve` in a temporary folder, with its embedded
PostgreSQL and Valkey unless BENCH_DATABASE_URL / BENCH_REDIS_URL are set) runs the whole
path: parse, the ingest script in Valkey (dedup, seq, stream append, PUBLISH), the hub's
pub/sub read, one encode per process, then every subscriber connection's outbox and sender.
The baseline (`bench/broadcast_baseline.py`, a Starlette app on the same uvicorn options)
sends the frame to every subscriber straight from the handler that read it: the floor any
in-process fan-out has on this machine. Both run as subprocesses, measured by the same client
in the same session; the ratio gateway / baseline is the price of the gateway's path.

Per run: one IDE connection sends a first message (creating the session; its ack names it),
N subscriber connections subscribe to the session, then `--warmup` unrecorded messages and
`--messages` recorded ones are sent one at a time. Each carries its send time
(`time.perf_counter_ns` in this process) in its content; every subscriber's reader records
delivery minus send, and the next message goes once the ack and all N deliveries are in.

The client is one Python process holding all N + 1 sockets, on the same 2-core box as the
servers: at N = 1,000 it decodes 1,000 frames per message, one after another, so the last
delivery of a message is stamped only after the client has read the 999 before it. The
figures at large N are the client's cost as much as the server's; the second table shows the
CPU each side spent per message, and what other processes spent meanwhile (a run where that
column is not near zero shared the machine and should be repeated). The client's garbage
collector is off while it records (a full collection over 1,000 connections would stall every
reader at once); the servers' collectors run as usual and are part of what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.harness import (
    CHAT_GATEWAY,
    STOP_TIMEOUT_S,
    BenchError,
    Server,
    free_port,
    fresh_database,
    machine,
    machine_busy_seconds,
    ms,
    percentile,
    server_process,
    tree_cpu_seconds,
)
from gateway.loadtest import client_gc_paused

ROOT = Path(__file__).resolve().parent.parent
# Opening and subscribing N connections: a base plus a per-connection allowance.
CONNECT_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_PER_SUBSCRIBER_S = 0.1
CONNECT_CONCURRENCY = 50
# Sockets beyond the subscribers: the IDE connection, database and Redis pools, logs, pipes.
SPARE_FILES = 256
FIRST_PORT = 9300  # each N gets its own port, hence its own gateway session


# -- servers -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def gateway_process() -> AsyncIterator[Server]:
    """`chat-gateway serve` in a throw-away folder: embedded servers unless BENCH_DATABASE_URL
    / BENCH_REDIS_URL are given (then a fresh database and its own Redis key prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    given_db, given_redis = os.environ.get("BENCH_DATABASE_URL"), os.environ.get("BENCH_REDIS_URL")
    if given_redis:
        env["GATEWAY_REDIS_URL"] = given_redis
        env["GATEWAY_KEY_PREFIX"] = f"cgbench{uuid.uuid4().hex[:8]}:"
    port = free_port()
    argv = [str(CHAT_GATEWAY), "serve", "--port", str(port), "--log-level", "warning"]
    with tempfile.TemporaryDirectory(prefix="cg-fanout-") as tmp:
        os.chmod(tmp, 0o755)  # as root, the embedded PostgreSQL runs as nobody
        env["GATEWAY_DATA_DIR"] = f"{tmp}/data"  # not the user's own data folder
        async with contextlib.AsyncExitStack() as stack:
            if given_db:
                env["GATEWAY_DATABASE_URL"] = await stack.enter_async_context(
                    fresh_database(given_db)
                )
            yield await stack.enter_async_context(
                server_process("gateway", argv, port, Path(tmp), env)
            )


@contextlib.asynccontextmanager
async def baseline_process() -> AsyncIterator[Server]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.broadcast_baseline", "--port", str(port),
            "--log-level", "warning"]  # fmt: skip
    async with server_process("baseline", argv, port, ROOT, dict(os.environ)) as server:
        yield server


def raise_file_limit(subscribers: int) -> None:
    """Raise the soft open-files limit (inherited by the servers) to fit the sockets."""
    needed = subscribers + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(
                f"{subscribers} subscribers need {needed} open files; the hard limit is {hard}"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# -- client --------------------------------------------------------------------------------


class Fanout:
    """The message in flight: its deliveries, counted down by the subscribers' readers."""

    def __init__(self, subscribers: int) -> None:
        self.subscribers = subscribers
        self.index = -1
        self.remaining = 0
        self.latencies: list[int] = []  # ns, one per subscriber, in delivery order
        self.all_delivered = asyncio.Event()
        self.failure: BaseException | None = None
        self.closing = False

    def expect(self, index: int) -> None:
        self.index, self.remaining, self.latencies = index, self.subscribers, []
        self.all_delivered.clear()

    def delivered(self, index: int, latency_ns: int) -> None:
        if index != self.index or self.remaining == 0:
            self.fail(BenchError(f"got message {index} while waiting for {self.index}"))
            return
        self.latencies.append(latency_ns)
        self.remaining -= 1
        if self.remaining == 0:
            self.all_delivered.set()

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.all_delivered.set()


def dial(url: str) -> connect:
    """A client connection; keepalive pings would add frames nobody measures, and compression
    is off on the servers too."""
    return connect(url, compression=None, ping_interval=None, close_timeout=5)


async def read_deliveries(ws: ClientConnection, fanout: Fanout) -> None:
    """A subscriber's reader: stamp each `message` frame the moment it is handed over."""
    try:
        async for raw in ws:
            received = time.perf_counter_ns()
            frame = orjson.loads(raw)
            if frame.get("type") != "message":
                raise BenchError(f"a subscriber got {str(raw)[:300]}")
            sent = orjson.loads(frame["message"]["content"])
            fanout.delivered(sent["i"], received - sent["t"])
    except ConnectionClosed as exc:
        if not fanout.closing:
            fanout.fail(BenchError(f"the server closed a subscriber: {exc}"))
    except Exception as exc:
        fanout.fail(exc)
    else:
        if not fanout.closing:
            fanout.fail(BenchError("the server closed a subscriber"))


async def request(ws: ClientConnection, frame: dict[str, object], answer: str) -> dict[str, object]:
    """Send a frame and read the next one, which must be of type `answer`."""
    await ws.send(orjson.dumps(frame).decode())
    raw = await ws.recv()
    reply: dict[str, object] = orjson.loads(raw)
    if reply.get("type") != answer:
        raise BenchError(f"expected {answer!r}, got {str(raw)[:300]}")
    return reply


async def open_subscribers(url: str, session_id: object, n: int) -> list[ClientConnection]:
    """N connections, each subscribed to the session (its `subscribed` received)."""
    opened: list[ClientConnection] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one() -> None:
        async with gate:
            ws = await dial(url)
            opened.append(ws)
            await request(ws, {"type": "subscribe", "session_id": session_id}, "subscribed")

    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S + n * CONNECT_TIMEOUT_PER_SUBSCRIBER_S):
            await asyncio.gather(*(open_one() for _ in range(n)))
    except BaseException:
        await close_all(opened)
        raise
    return opened


async def close_all(connections: Sequence[ClientConnection]) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)


async def send_one(
    ide: ClientConnection, port: int, index: int, fanout: Fanout, timeout_s: float
) -> list[int]:
    """Send message `index`; return its latencies once it is acked and everywhere."""
    fanout.expect(index)
    sent = time.perf_counter_ns()
    content = orjson.dumps({"i": index, "t": sent}).decode()
    await ide.send(orjson.dumps({"type": "message", "port": port, "content": content}).decode())
    try:
        async with asyncio.timeout(timeout_s):
            raw = await ide.recv()
            if orjson.loads(raw).get("type") != "ack":
                raise BenchError(f"message {index} was answered {str(raw)[:300]}")
            await fanout.all_delivered.wait()
    except TimeoutError:
        raise BenchError(
            f"message {index}: {fanout.remaining} of {fanout.subscribers} deliveries missing"
            f" after {timeout_s:g} s"
        ) from None
    if fanout.failure is not None:
        raise fanout.failure
    return fanout.latencies


@dataclass(frozen=True)
class Run:
    latencies_ns: list[int]  # sorted; one per (message, subscriber)
    first_ns: list[int]  # sorted; per message, its earliest delivery
    last_ns: list[int]  # sorted; per message, its latest delivery
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float  # the server process itself
    server_children_cpu_s: float  # its embedded PostgreSQL and Valkey (none for the baseline)
    # Everything else on the machine (the other server idling, anything else running): a
    # check that the figures are not someone else's load.
    others_cpu_s: float


async def measure(
    server: Server, n: int, port: int, messages: int, warmup: int, timeout_s: float
) -> Run:
    """One run against one server: N subscribers on one session, `messages` recorded sends."""
    async with dial(server.url) as ide:
        async with asyncio.timeout(timeout_s):
            opener = {"type": "message", "port": port, "content": f"fan-out run, N={n}"}
            session_id = (await request(ide, opener, "ack"))["session_id"]
        subscribers = await open_subscribers(server.url, session_id, n)
        fanout = Fanout(n)
        readers = [asyncio.create_task(read_deliveries(ws, fanout)) for ws in subscribers]
        try:
            for index in range(warmup):
                await send_one(ide, port, index, fanout, timeout_s)
            latencies: list[int] = []
            first: list[int] = []
            last: list[int] = []
            # The client's own collector would stall every reader at once (it holds all N
            # connections); it stays off while recording, so its pauses are not in the
            # figures. The servers' collectors run as usual.
            with client_gc_paused():
                server_before = tree_cpu_seconds(server.proc.pid)
                busy_before = machine_busy_seconds()
                client_before, wall_before = time.process_time(), time.perf_counter()
                for index in range(warmup, warmup + messages):
                    these = await send_one(ide, port, index, fanout, timeout_s)
                    latencies.extend(these)
                    first.append(min(these))
                    last.append(max(these))
            wall_s = time.perf_counter() - wall_before
            client_cpu_s = time.process_time() - client_before
            server_after = tree_cpu_seconds(server.proc.pid)
            busy_s = machine_busy_seconds() - busy_before
        finally:
            fanout.closing = True
            await close_all(subscribers)
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    server_cpu_s = server_after[0] - server_before[0]
    children_cpu_s = server_after[1] - server_before[1]
    return Run(
        sorted(latencies),
        sorted(first),
        sorted(last),
        wall_s,
        client_cpu_s,
        server_cpu_s,
        children_cpu_s,
        max(0.0, busy_s - client_cpu_s - server_cpu_s - children_cpu_s),
    )


# -- report --------------------------------------------------------------------------------


def latency_row(n: int, gateway: Run, baseline: Run) -> str:
    g50, g99 = percentile(gateway.latencies_ns, 0.5), percentile(gateway.latencies_ns, 0.99)
    b50, b99 = percentile(baseline.latencies_ns, 0.5), percentile(baseline.latencies_ns, 0.99)
    cells = [
        f"{n:,}",
        ms(g50),
        ms(g99),
        ms(gateway.latencies_ns[-1]),
        ms(b50),
        ms(b99),
        f"{g50 / b50:.1f}",
        f"{g99 / b99:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def detail_row(n: int, name: str, run: Run, messages: int) -> str:
    cells = [
        f"{n:,}",
        name,
        ms(percentile(run.first_ns, 0.5)),
        ms(percentile(run.last_ns, 0.5)),
        ms(run.wall_s / messages * 1e9),
        f"{run.server_cpu_s / messages * 1e3:.2f}",
        f"{run.server_children_cpu_s / messages * 1e3:.2f}",
        f"{run.client_cpu_s / messages * 1e3:.2f}",
        f"{run.others_cpu_s / messages * 1e3:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


async def main_async(subscribers: list[int], messages: int, warmup: int, timeout_s: float) -> None:
    raise_file_limit(max(subscribers))
    print(
        f"# fan-out latency, {messages} messages per run (after {warmup} unrecorded); {machine()}"
    )
    print(
        "# client, gateway, PostgreSQL and Valkey share this machine; at large N the client's"
        " own CPU (one Python process reading every subscriber's frame) is part of each figure"
    )
    results: list[tuple[int, Run, Run]] = []
    async with gateway_process() as gateway, baseline_process() as baseline:
        print()
        print("| N | gateway p50 | p99 | max | baseline p50 | p99 | ratio p50 | ratio p99 |")
        print("|---|---|---|---|---|---|---|---|")
        sys.stdout.flush()
        for i, n in enumerate(subscribers):
            port = FIRST_PORT + i
            g = await measure(gateway, n, port, messages, warmup, timeout_s)
            b = await measure(baseline, n, port, messages, warmup, timeout_s)
            results.append((n, g, b))
            print(latency_row(n, g, b))
            sys.stdout.flush()
    print()
    print("Per message (medians over messages; CPU in ms per message, user + system):")
    print()
    print(
        "| N | server | first delivery p50 | last delivery p50 | wall per message"
        " | server CPU | its PG + Valkey CPU | client CPU | other processes' CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, g, b in results:
        print(detail_row(n, "gateway", g, messages))
        print(detail_row(n, "baseline", b, messages))
    for server in (gateway, baseline):
        if server.stderr_lines:
            print(f"\n# {server.name} wrote {server.stderr_lines} stderr lines; the last ones:")
            print("".join(server.stderr), end="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--subscribers", type=int, nargs="+", default=[1, 10, 100, 1000],
        help="subscriber counts, one run per count and server (default 1 10 100 1000)",
    )  # fmt: skip
    parser.add_argument(
        "--messages", type=int, default=200, help="recorded messages per run (default 200)"
    )
    parser.add_argument(
        "--warmup", type=int, default=10,
        help="messages sent first in each run and not recorded (default 10)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=30.0,
        help="seconds one message may take to be acked and delivered everywhere (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop",
        help="the client's event loop (default uvloop, as the servers use: a cheaper client)",
    )  # fmt: skip
    args = parser.parse_args()
    if min(args.subscribers) < 1 or args.messages < 1 or args.warmup < 0:
        parser.error("--subscribers and --messages must be positive, --warmup not negative")
    factory = uvloop.new_event_loop if args.loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main_async(args.subscribers, args.messages, args.warmup, args.timeout))


if __name__ == "__main__":
    main()
