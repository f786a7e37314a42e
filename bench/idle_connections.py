"""Idle connections: how much memory each costs the gateway, and what it spends keeping them.

    python -m bench.idle_connections [--connections 10000] [--idle 15]

IDE extensions keep one WebSocket open all day and send only when their chat changes, so a
gateway process holds many connections that do nothing. This starts `chat-gateway serve` on
its default settings (with embedded PostgreSQL and Valkey, or BENCH_DATABASE_URL /
BENCH_REDIS_URL), opens a first 100 connections to warm it up, reads its resident memory
(RSS), then opens the rest: each says `hello` as an IDE on one of the 30 debug ports
(9222-9251) and waits for `welcome`, then stays idle. Per connection is the RSS gained over
those connections divided by their number. It then lets them idle for `--idle` seconds and
reads the gateway's CPU meanwhile (uvicorn pings each connection every 5 s), checks that a
message sent on one of them is still acked, and closes them all.

The target (issue 15): 10,000 connections in one process at no more than 40 KiB each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.e2e import target_server
from bench.harness import fresh_database, machine, servers, tree_cpu_seconds

WARM_CONNECTIONS = 100
OPENING_AT_ONCE = 200  # handshakes in flight while connecting
FIRST_PORT, PORTS = 9222, 30
TIMEOUT_S = 60.0


def rss_kib(pid: int) -> int:
    """The process's resident set size, in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def open_idle(
    url: str, count: int, stack: contextlib.AsyncExitStack, first: int = 0
) -> list[ClientConnection]:
    """Open `count` connections that said hello as IDEs and were welcomed."""
    limit = asyncio.Semaphore(OPENING_AT_ONCE)

    async def one(index: int) -> ClientConnection:
        async with limit:
            ws = await stack.enter_async_context(
                connect(url, open_timeout=TIMEOUT_S, max_queue=4, ping_interval=None)
            )
            port = FIRST_PORT + index % PORTS
            await ws.send(orjson.dumps({"type": "hello", "kind": "ide", "ports": [port]}).decode())
            welcome = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"hello refused: {welcome}")
            return ws

    return list(await asyncio.gather(*(one(first + i) for i in range(count))))


async def still_acks(ws: ClientConnection) -> float:
    """Send one message on an idle connection; the time to its ack, in ms."""
    frame = {"type": "message", "port": FIRST_PORT, "role": "user", "id": f"idle-{time.time_ns()}",
             "content": "still there?", "ref": "check"}  # fmt: skip
    started = time.perf_counter()
    await ws.send(orjson.dumps(frame).decode())  # text: the gateway takes no binary frames
    async with asyncio.timeout(TIMEOUT_S):
        while (answer := orjson.loads(await ws.recv())).get("ref") != "check":
            pass  # presence events of other connections' hellos
    if answer.get("type") != "ack":
        raise RuntimeError(f"the message was not acked: {answer}")
    return (time.perf_counter() - started) * 1000


@contextlib.asynccontextmanager
async def gateway() -> AsyncIterator[tuple[str, int]]:
    """A default `chat-gateway serve`: its WebSocket URL and PID."""
    with servers() as (server_url, redis_url):
        async with (
            fresh_database(server_url) as database_url,
            target_server("gateway", database_url, redis_url, workers=1) as server,
        ):
            yield server.url, server.proc.pid


async def main_async(connections: int, idle_s: float) -> None:
    print(f"# idle connections: {connections}; {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    async with gateway() as (url, pid), contextlib.AsyncExitStack() as stack:
        sockets = await open_idle(url, WARM_CONNECTIONS, stack)
        before = rss_kib(pid)
        started = time.perf_counter()
        sockets += await open_idle(url, connections - WARM_CONNECTIONS, stack, WARM_CONNECTIONS)
        opened_s = time.perf_counter() - started
        after = rss_kib(pid)
        cpu_before, _ = tree_cpu_seconds(pid)
        await asyncio.sleep(idle_s)  # the idle period being measured, not synchronisation
        cpu_after, _ = tree_cpu_seconds(pid)
        ack_ms = await still_acks(sockets[-1])
        added = connections - WARM_CONNECTIONS
        per_connection = (after - before) / added
        print("| connections | gateway RSS | per connection | opening | idle CPU | an ack then |")
        print("|---|---|---|---|---|---|")
        idle_cpu = 100 * (cpu_after - cpu_before) / idle_s
        print(f"| {connections:,} | {after / 1024:.0f} MiB (from {before / 1024:.0f} MiB at"
              f" {WARM_CONNECTIONS}) | {per_connection:.1f} KiB | {added / opened_s:,.0f}/s"
              f" | {idle_cpu:.1f} % of a core | {ack_ms:.1f} ms |")  # fmt: skip
        verdict = "PASS" if per_connection <= 40 else "FAIL"
        print(f"# target <= 40 KiB per connection: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000, help="(default 10000)")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds idle (default 15)")
    args = parser.parse_args()
    if args.connections <= WARM_CONNECTIONS:
        parser.error(f"--connections must be above {WARM_CONNECTIONS}")
    # Each connection is a file descriptor here too.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 1000:
        wanted = min(hard, args.connections + 1000)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        if wanted < args.connections + 1000:
            sys.exit(f"open files are limited to {hard}: raise `ulimit -n` for this many")
    asyncio.run(main_async(args.connections, args.idle))


if __name__ == "__main__":
    main()
