"""Shared benchmark plumbing: servers (embedded unless URLs are given), a fresh database,
server subprocesses, machine facts, CPU accounting, generated chat content, and timing and
percentile helpers. Every benchmark takes what it shares from here, never from another
benchmark, so each one can change without breaking the others. Benchmarks report ratios
against baselines run in the same session, so the numbers compare across machines."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import platform
import random
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gateway.ws.protocol import MessageItem
from storage import migrate
from storage.db import Connection
from storage.dedup import content_hash, dedup_key
from storage.embedded import embedded_postgres, embedded_redis
from storage.rows import COLUMNS

CHAT_GATEWAY = Path(sys.executable).parent / "chat-gateway"
# The first start on a machine copies the PostgreSQL binaries and runs initdb: allow for it.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
PROBE_INTERVAL_S = 0.05
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ITEM_PORTS = 20  # make_items spreads its messages over this many ports


class BenchError(Exception):
    """The run went wrong (an unexpected frame, a closed connection, a server that died)."""


# -- servers and databases -----------------------------------------------------------------


@contextlib.contextmanager
def servers(shared_buffers: str = "128MB") -> Iterator[tuple[str, str]]:
    """(database server URL, Redis URL): BENCH_DATABASE_URL / BENCH_REDIS_URL, else embedded
    servers in a throw-away folder."""
    with tempfile.TemporaryDirectory(prefix="cg-bench-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # as root, the embedded PostgreSQL runs as nobody
        with _servers_in(folder, shared_buffers) as urls:
            yield urls


@contextlib.contextmanager
def kept_servers(folder: Path, shared_buffers: str = "128MB") -> Iterator[tuple[str, str]]:
    """Like `servers`, but embedded servers keep their data in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with _servers_in(folder, shared_buffers) as urls:
        yield urls


@contextlib.contextmanager
def _servers_in(folder: Path, shared_buffers: str) -> Iterator[tuple[str, str]]:
    given_db, given_redis = os.environ.get("BENCH_DATABASE_URL"), os.environ.get("BENCH_REDIS_URL")
    with contextlib.ExitStack() as stack:
        db = given_db or stack.enter_context(
            embedded_postgres(folder / "postgres", shared_buffers=shared_buffers)
        )
        rd = given_redis or stack.enter_context(embedded_redis(folder / "redis"))
        yield db, rd


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new migrated database on the server, dropped afterwards."""
    name = f"cg_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    try:
        conn = await asyncpg.connect(url)
        await migrate.apply_pending(conn)
        await conn.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


# -- server subprocesses -------------------------------------------------------------------


@dataclass
class Server:
    """A server subprocess, its WebSocket URL, and everything it wrote to stderr."""

    name: str
    proc: asyncio.subprocess.Process
    port: int
    stderr: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=200))
    stderr_lines: int = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def server_process(
    name: str, argv: Sequence[str], port: int, cwd: Path, env: dict[str, str]
) -> AsyncIterator[Server]:
    """Start `argv`, yield it once it accepts TCP connections on `port`; SIGINT it on exit
    (SIGKILL if it does not stop in time).

    Readiness is a TCP connect, not the "Uvicorn running on" line: at `--log-level warning`
    uvicorn does not print that line, and it binds its socket only after the lifespan
    started, so an accepted connection means the app is ready."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    server = Server(name, proc, port)

    async def drain() -> None:  # for the whole run, so a chatty server never blocks on it
        assert proc.stderr is not None
        while line := (await proc.stderr.readline()).decode(errors="replace"):
            server.stderr.append(line)
            server.stderr_lines += 1

    drainer = asyncio.create_task(drain(), name=f"{name}-stderr")
    try:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await _wait_listening(port, drainer)
        except TimeoutError:
            raise BenchError(f"{name} was not up within {START_TIMEOUT_S:.0f} s") from None
        yield server
    except BaseException:
        sys.stderr.write(f"--- {name} stderr (last lines) ---\n{''.join(server.stderr)}")
        raise
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.wait_for(drainer, STOP_TIMEOUT_S)  # EOF once the process is gone


async def _wait_listening(port: int, drainer: asyncio.Task[None]) -> None:
    while True:
        if drainer.done():
            raise BenchError("the server exited while starting")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(PROBE_INTERVAL_S)  # not listening yet; only ever at startup
            continue
        writer.close()
        await writer.wait_closed()
        return


# -- the machine ---------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def tree_cpu_seconds(root: int) -> tuple[float, float]:
    """(CPU seconds of `root`, of its live descendants), user + system, from /proc; each
    includes the children it has reaped (PostgreSQL's short-lived autovacuum workers, say),
    whose CPU would otherwise vanish from the tree when they exit."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = sum(int(f) for f in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
    below, todo = 0.0, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        below += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return cpu.get(root, 0.0), below


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent not idle (nor waiting on I/O) since boot."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


# -- generated data ------------------------------------------------------------------------


def content_of_realistic_length(rng: random.Random) -> str:
    """Chat content: mostly short lines, some paragraphs, a few long code replies
    (log-normal lengths, median ~150 characters, capped at 8 KiB)."""
    length = min(int(rng.lognormvariate(5.0, 1.1)) + 1, 8192)
    words = "the of and to in is that for it as with was on be at by this code function return"
    vocabulary = words.split()
    text: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(vocabulary)
        text.append(word)
        size += len(word) + 1
    return " ".join(text)[:length]


def make_items(n: int, seed: int) -> list[tuple[int, MessageItem]]:
    """n (port, message) pairs spread over ITEM_PORTS ports, realistic content lengths."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        port = 9222 + i % ITEM_PORTS
        content = f"{i} " + content_of_realistic_length(rng)
        role = "user" if i % 2 else "assistant"
        out.append(
            (
                port,
                MessageItem(
                    client_id=f"m-{seed}-{i}",
                    role=role,
                    content=content,
                    content_type="markdown",
                    source="ide_extraction",
                    client_ts=datetime.now(UTC),
                    metadata_json='{"model":"bench"}',
                    dedup_key=dedup_key(port, role, content, None, f"m-{seed}-{i}"),
                    content_hash=content_hash(content),
                ),
            )
        )
    return out


# -- timing --------------------------------------------------------------------------------


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


async def copy_in_batches(
    conn: Connection, rows: Sequence[tuple[object, ...]], batch_rows: int
) -> float:
    """COPY `rows` (in the writer's COLUMNS order) into `messages`, `batch_rows` per
    transaction as the writer commits them; the seconds it took: the raw-COPY baseline."""
    with Timer() as timer:
        for start in range(0, len(rows), batch_rows):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "messages", records=rows[start : start + batch_rows], columns=COLUMNS
                )
    return timer.seconds


def percentile(sorted_ns: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of sorted samples."""
    return sorted_ns[max(1, math.ceil(q * len(sorted_ns))) - 1]


def ms(ns: float) -> str:
    return f"{ns / 1e6:.2f} ms"
