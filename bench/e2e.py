"""End to end, in one run on one machine with one client: the gateway against its baselines.

    python -m bench.e2e [--messages 100000] [--connections 200] [--in-flight 10] [--rate R]

The same load (`gateway.loadtest`: K IDE connections over P ports, N frames of new messages
flat out with F frames in flight each, plus 10 % re-sends) is offered in turn to:

1. `echo`: a WebSocket server that acks and stores nothing (the transport limit);
2. `copy`: no WebSocket; the same number of rows COPYed into the same schema (the storage
   limit, in rows/s);
3. `naive`: one awaited transaction per message before its ack;
4. `reference`: the gateway's design and nothing else (bench/reference_server.py);
5. `gateway`: `chat-gateway serve` on its default settings, every feature on (`--workers 2`
   adds a row with two worker processes).

Every server gets a fresh database on the same PostgreSQL and its own key prefix on the same
Valkey. "Persisted" throughput counts from the first frame until PostgreSQL holds every
message acked as new (polled with `count(*)`), so a server cannot look fast by acking what it
has not written. Ratios are against `reference` and `naive` of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.harness import (
    CHAT_GATEWAY,
    Server,
    copy_in_batches,
    free_port,
    fresh_database,
    machine,
    server_process,
    servers,
    tree_cpu_seconds,
)
from gateway import loadtest
from storage.writer import WriterConfig

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("echo", "copy", "naive", "reference", "gateway")
PERSIST_TIMEOUT_S = 300.0
COUNT_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Result:
    target: str
    acked_per_s: float  # acked messages (new and re-sent) per second of the load
    persisted_per_s: float | None  # new messages per second until all were committed
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    acked: int = 0  # messages acked, re-sends included
    duplicates: int = 0  # re-sends acked as duplicates (the echo server keeps nothing: 0)
    # CPU time per message acked, from the first frame until all was persisted: of the
    # server's processes, and of PostgreSQL and Valkey. Steadier than throughput on a small
    # machine, where the load client competes for the same cores.
    server_cpu_us: float | None = None
    storage_cpu_us: float | None = None


@contextlib.asynccontextmanager
async def target_server(
    target: str, database_url: str, redis_url: str, workers: int
) -> AsyncIterator[Server]:
    """The target's server process, on a free port, stopped on exit."""
    port = free_port()
    prefix = f"cge2e{uuid.uuid4().hex[:8]}:"
    if target != "gateway":
        argv = [sys.executable, "-m", f"bench.{target}_server", "--port", str(port),
                "--database-url", database_url, "--redis-url", redis_url,
                "--key-prefix", prefix]  # fmt: skip
        async with server_process(target, argv, port, ROOT, dict(os.environ)) as server:
            yield server
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_DATABASE_URL": database_url, "GATEWAY_REDIS_URL": redis_url,
            "GATEWAY_KEY_PREFIX": prefix}  # fmt: skip
    argv = [str(CHAT_GATEWAY), "serve", "--port", str(port), "--log-level", "warning",
            "--workers", str(workers)]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cg-e2e-") as tmp:
        env["GATEWAY_DATA_DIR"] = f"{tmp}/data"  # not the user's own data folder
        async with server_process("gateway", argv, port, Path(tmp), env) as server:
            yield server


async def run_target(
    target: str, plan: loadtest.Plan, server_url: str, redis_url: str, workers: int = 1
) -> Result:
    """Offer the plan to one target and wait until what it acked as new is in PostgreSQL."""
    async with fresh_database(server_url) as database_url:
        if target == "copy":
            return await raw_copy(database_url, plan.messages)
        async with target_server(target, database_url, redis_url, workers) as server:
            url = f"http://127.0.0.1:{server.port}"
            cpu_before = _cpu_split(server.proc.pid)
            started = time.perf_counter()
            report = await loadtest.run(_quiet(plan, url))
            persisted_s = (
                None
                if target == "echo"
                else await _until_stored(database_url, report.created) - started
            )
            cpu = [after - before for after, before in zip(_cpu_split(server.proc.pid),
                                                           cpu_before, strict=True)]  # fmt: skip
    latency = report.ack_latency_ms
    per_message_us = 1e6 / max(1, report.acked)
    return Result(
        target=target if workers == 1 else f"{target}, {workers} workers",
        acked_per_s=report.acked_per_s,
        persisted_per_s=report.created / persisted_s if persisted_s else None,
        p50_ms=latency.get("p50"),
        p99_ms=latency.get("p99"),
        errors=sum(report.errors.values()),
        acked=report.acked,
        duplicates=report.duplicates,
        server_cpu_us=cpu[0] * per_message_us,
        storage_cpu_us=max(0.0, cpu[1]) * per_message_us,
    )


def _cpu_split(server_pid: int) -> tuple[float, float]:
    """CPU seconds so far of the target server (with its worker processes), and of
    PostgreSQL and Valkey (this process's other children)."""
    own, workers = tree_cpu_seconds(server_pid)
    _, children = tree_cpu_seconds(os.getpid())
    return own + workers, children - own - workers


def _quiet(plan: loadtest.Plan, url: str) -> loadtest.Plan:
    """The plan against this URL; persistence is checked here, in PostgreSQL, for every target
    alike (the baselines have no HTTP API)."""
    return dataclasses.replace(plan, url=url, check_persisted=False)


async def _until_stored(database_url: str, rows: int) -> float:
    """The perf_counter time when `messages` first held `rows` rows."""
    conn = await asyncpg.connect(database_url)
    try:
        async with asyncio.timeout(PERSIST_TIMEOUT_S):
            while await conn.fetchval("SELECT count(*) FROM messages") < rows:  # noqa: ASYNC110
                await asyncio.sleep(COUNT_INTERVAL_S)  # polling: no server tells us of commits
        return time.perf_counter()
    finally:
        await conn.close()


async def raw_copy(database_url: str, rows: int) -> Result:
    """The storage limit: the rows of a run COPYed in the writer's batch size."""
    session = uuid.uuid4()
    now = datetime.now(UTC)
    records = [
        (session, seq, uuid.uuid4(), "local", 9222, f"c-{seq}", uuid.uuid4(), "user",
         f"load copy {seq} " + "x" * 260, "text", "ide_extraction", None, now, None, "{}")
        for seq in range(1, rows + 1)
    ]  # fmt: skip
    conn = await asyncpg.connect(database_url)
    try:
        _, before = tree_cpu_seconds(os.getpid())
        seconds = await copy_in_batches(conn, records, WriterConfig().batch_rows)
        _, after = tree_cpu_seconds(os.getpid())
    finally:
        await conn.close()
    return Result("copy", rows / seconds, rows / seconds, None, None, 0, acked=rows,
                  storage_cpu_us=(after - before) * 1e6 / rows)  # fmt: skip


def table(results: Sequence[Result]) -> list[str]:
    by_name = {r.target: r for r in results}
    reference, naive = by_name.get("reference"), by_name.get("naive")

    def ratio(result: Result, base: Result | None) -> str:
        if base is None or not base.persisted_per_s or not result.persisted_per_s:
            return "-"
        return f"{result.persisted_per_s / base.persisted_per_s:.2f}"

    def number(value: float | None, unit: str = "") -> str:
        return "-" if value is None else f"{value:,.0f}{unit}" if unit else f"{value:.1f}"

    lines = ["| target | acked msg/s | persisted msg/s | ack p50 ms | ack p99 ms | errors"
             " | server CPU us/msg | PostgreSQL+Valkey CPU us/msg | vs reference | vs naive |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        lines.append(
            f"| {r.target} | {number(r.acked_per_s, ' ')} | {number(r.persisted_per_s, ' ')}"
            f" | {number(r.p50_ms)} | {number(r.p99_ms)} | {r.errors}"
            f" | {number(r.server_cpu_us)} | {number(r.storage_cpu_us)}"
            f" | {ratio(r, reference)} | {ratio(r, naive)} |"
        )
    return lines


async def main_async(args: argparse.Namespace) -> None:
    plan = loadtest.Plan(
        url="", connections=args.connections, ports=args.ports, messages=args.messages,
        in_flight=args.in_flight, batch=args.batch, resend_share=0.1, content_bytes=300,
        rate=args.rate,
    )  # fmt: skip
    pace = f"paced at {plan.rate:g} frames/s" if plan.rate else f"{plan.in_flight} in flight each"
    print(f"# e2e: {plan.connections} connections over {plan.ports} ports, {plan.messages}"
          f" frames of {plan.batch} + 10 % re-sends, {pace}")  # fmt: skip
    print(f"# {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    results = []
    with servers(shared_buffers="512MB") as (server_url, redis_url):
        for target in args.targets:
            results.append(await run_target(target, plan, server_url, redis_url))
            print(f"# {target} done: {results[-1]}", file=sys.stderr)
        if args.workers > 1 and "gateway" in args.targets:
            results.append(await run_target("gateway", plan, server_url, redis_url, args.workers))
    print("\n".join(table(results)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="frames of new messages")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--ports", type=int, default=10)
    parser.add_argument("--in-flight", type=int, default=10, help="frames unanswered, flat out")
    parser.add_argument(
        "--rate", type=float, default=0.0,
        help="frames per second over all connections, open loop (0: flat out): for ack"
        " latency at a given load, which flat out is only queueing",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=1, help="messages per frame")
    parser.add_argument("--workers", type=int, default=1, help="also run the gateway with N")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
