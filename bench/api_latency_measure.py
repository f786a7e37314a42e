"""What bench.api_latency measures and how: the requests' parameters drawn up front, the
queries (the storage calls each API request makes, and the request itself), one request at a
time with the collector off, in SQL (asyncpg's query logger) and over HTTP (a bare keep-alive
client and httpx against `chat-gateway serve`), the CPU other processes took meanwhile, and
EXPLAIN of a slow request's statements."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import redis.asyncio as aioredis

from bench.api_latency_data import ME, Contents
from bench.api_latency_db import SearchSupport
from bench.harness import (
    CHAT_GATEWAY,
    free_port,
    machine_busy_seconds,
    server_process,
    tree_cpu_seconds,
)
from gateway.loadtest import client_gc_paused
from storage import sessions, stats
from storage.keys import Keys
from storage.messages import port_messages, session_messages

WARMUP = 50
PAGE = 100  # messages per page, as the UI asks
SESSIONS_PAGE = 50
SEARCH_RESULTS = 20  # the API's default


@dataclass
class Workload:
    """Every request's parameters, drawn up front (WARMUP + requests of each)."""

    ports: list[int]  # for a port's newest messages
    pages: list[tuple[uuid.UUID, int]]  # session, after_seq
    list_ports: list[int]  # for the sessions list of one port
    words: dict[str, list[str]]  # per word class
    me_messages: int
    me_sessions: int
    me_ports: int


async def choose_workload(url: str, rng: random.Random, contents: Contents, count: int) -> Workload:
    conn = await asyncpg.connect(url)
    try:
        live = await conn.fetch(
            "SELECT id, port, message_count FROM sessions"
            " WHERE user_id = $1 AND status <> 'deleted' ORDER BY id",
            ME,
        )
    finally:
        await conn.close()
    ports = sorted({r["port"] for r in live})
    with_messages = [r for r in live if r["message_count"] > 0]
    pages = []
    for _ in range(count):
        r = rng.choice(with_messages)
        pages.append((r["id"], rng.randint(0, max(0, r["message_count"] - PAGE))))
    return Workload(
        ports=[rng.choice(ports) for _ in range(count)],
        pages=pages,
        list_ports=[rng.choice(ports) for _ in range(count)],
        words={c: [rng.choice(ws) for _ in range(count)] for c, ws in contents.words.items()},
        me_messages=sum(r["message_count"] for r in live),
        me_sessions=len(live),
        me_ports=len(ports),
    )


@dataclass
class Storage:
    """What the storage functions need: one connection, the bench's Redis and key prefix."""

    conn: asyncpg.Connection
    redis: aioredis.Redis
    keys: Keys


@dataclass(frozen=True)
class Query:
    key: str
    label: str
    kind: str  # "list", "search", "stats" (which target applies) or "floor" (HTTP only)
    call: Callable[[Storage, int], Awaitable[object]]  # the API's storage calls, request i
    path: Callable[[int], str]  # the API request i


def queries(w: Workload, search: SearchSupport | None) -> list[Query]:
    async def page(s: Storage, i: int) -> object:
        # What GET /api/sessions/{id}/messages runs: the session, then the page.
        session_id, after = w.pages[i]
        assert await sessions.get_session(s.conn, ME, session_id) is not None
        return await session_messages(
            s.conn, s.redis, s.keys, session_id, after_seq=after, limit=PAGE
        )

    out = [
        Query(
            "port", f"(1) a port's newest {PAGE} messages", "list",
            lambda s, i: port_messages(s.conn, s.redis, s.keys, ME, w.ports[i], PAGE),
            lambda i: f"/api/ports/{w.ports[i]}/messages?limit={PAGE}",
        ),
        Query(
            "page", f"(2) a session page of {PAGE} (after_seq)", "list", page,
            lambda i: f"/api/sessions/{w.pages[i][0]}/messages"
            f"?after_seq={w.pages[i][1]}&limit={PAGE}",
        ),
        Query(
            "sessions", f"(3) sessions list, {SESSIONS_PAGE}", "list",
            lambda s, i: sessions.list_sessions(
                s.conn, ME, port=None, status=None, after=None, limit=SESSIONS_PAGE
            ),
            lambda i: f"/api/sessions?limit={SESSIONS_PAGE}",
        ),
        Query(
            "sessions_port", f"(3) sessions list of a port, {SESSIONS_PAGE}", "list",
            lambda s, i: sessions.list_sessions(
                s.conn, ME, port=w.list_ports[i], status=None, after=None, limit=SESSIONS_PAGE
            ),
            lambda i: f"/api/sessions?limit={SESSIONS_PAGE}&port={w.list_ports[i]}",
        ),
    ]  # fmt: skip
    if search is not None:
        for word_class, words in w.words.items():
            out.append(
                Query(
                    f"search_{word_class}", f"(4) search, a {word_class} word", "search",
                    _search_call(search, words),
                    _search_path(words),
                )
            )  # fmt: skip
    out.append(
        Query(
            "stats", "(5) stats", "stats",
            lambda s, i: stats.read(s.conn, ME),
            lambda i: "/api/stats",
        )
    )  # fmt: skip
    # The HTTP stack's own cost (client, uvicorn, Starlette; no storage): the floor of every
    # HTTP figure above it.
    out.insert(0, Query("healthz", "(0) GET /healthz", "floor", _no_storage, lambda i: "/healthz"))
    return out


async def _no_storage(s: Storage, i: int) -> object:
    return None


def _search_call(
    search: SearchSupport, words: list[str]
) -> Callable[[Storage, int], Awaitable[object]]:
    return lambda s, i: search.search(s.conn, ME, words[i], limit=SEARCH_RESULTS)


def _search_path(words: list[str]) -> Callable[[int], str]:
    return lambda i: f"/api/search?q={quote(words[i])}"


@dataclass
class Measured:
    """Sorted samples (ns) of one query in one mode, the ones judged (SQL mode: its
    statements; HTTP mode: a bare HTTP/1.1 client), and of the mode's second series (SQL
    mode: the whole storage call; HTTP mode: httpx); `statements` are those of the slowest
    request (SQL mode), to explain."""

    ns: list[int]
    cut_by_budget: bool
    second: list[int]
    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


class Load:
    """CPU the rest of the machine used meanwhile: busy time minus this process and its
    children (the embedded servers, the gateway). Near zero in a clean run."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.busy = machine_busy_seconds()
        self.ours = sum(tree_cpu_seconds(os.getpid()))
        self.wall_s = self.others_s = 0.0

    def stop(self) -> Load:
        self.wall_s = time.monotonic() - self.started
        ours = sum(tree_cpu_seconds(os.getpid())) - self.ours
        self.others_s = max(0.0, machine_busy_seconds() - self.busy - ours)
        return self

    @property
    def shared(self) -> bool:
        """Other processes took over a tenth of a core: the figures are not clean."""
        return self.others_s > 0.1 * self.wall_s

    def __str__(self) -> str:
        return f"{self.others_s:.1f} CPU-s in {self.wall_s:.0f} s"


async def run_requests(
    label: str, once: Callable[[int], Awaitable[tuple[int, int]]], requests: int, budget_s: float
) -> tuple[list[int], list[int], bool]:
    """WARMUP unrecorded requests, then `requests` recorded ones (fewer if they take more
    than `budget_s`), one at a time, the garbage collector off while recording. `once`
    measures two things per request: both come back sorted."""
    deadline = time.monotonic() + budget_s / 10
    for i in range(WARMUP):
        await once(i)
        if time.monotonic() > deadline:
            break
    samples: list[tuple[int, int]] = []
    with client_gc_paused():
        deadline = time.monotonic() + budget_s
        for i in range(WARMUP, WARMUP + requests):
            samples.append(await once(i))
            if time.monotonic() > deadline:
                break
    cut = len(samples) < requests
    print(
        f"  {label}: {len(samples)} requests{' (time budget)' if cut else ''}",
        file=sys.stderr, flush=True,
    )  # fmt: skip
    return sorted(a for a, _ in samples), sorted(b for _, b in samples), cut


async def measure_sql(
    url: str, redis_url: str, qs: Sequence[Query], requests: int, budget_s: float
) -> tuple[dict[str, Measured], Load]:
    """Each query through the storage functions the API calls; a sample is the time asyncpg
    spent on the statements they ran (nothing of Redis or of building the answer); the
    second series is the whole call (SQL, the Redis read of buffered rows, the merge)."""
    conn = await asyncpg.connect(url)
    redis = aioredis.Redis.from_url(redis_url)
    ran: list[Any] = []  # asyncpg LoggedQuery records of the current request
    conn.add_query_logger(ran.append)
    storage = Storage(conn, redis, Keys(f"cgbench{uuid.uuid4().hex[:8]}:"))
    out = {}
    load = Load()
    try:
        for q in qs:
            if q.kind == "floor":
                continue
            slowest: tuple[int, list[Any]] = (-1, [])

            async def once(i: int, q: Query = q) -> tuple[int, int]:
                nonlocal slowest
                ran.clear()
                start = time.perf_counter_ns()
                await q.call(storage, i)
                call = time.perf_counter_ns() - start
                await asyncio.sleep(0)  # the logger's callbacks run on the next iteration
                spent = sum(int(r.elapsed * 1e9) for r in ran)
                if spent > slowest[0]:
                    slowest = (spent, list(ran))
                return spent, call

            ns, calls, cut = await run_requests(f"{q.label}, SQL", once, requests, budget_s)
            statements = [(r.query, tuple(r.args)) for r in slowest[1]]
            out[q.key] = Measured(ns, cut, calls, statements)
        load.stop()
    finally:
        await redis.aclose()
        await conn.close()
    return out, load


class BareClient:
    """HTTP/1.1 GET over one keep-alive connection with nothing but asyncio streams: what a
    request costs a client that does no more than write it and read the body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[BareClient]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            yield cls(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()

    async def get(self, path: str) -> int:
        """The status, once the whole body is read (the gateway always sends its length)."""
        self._writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length:")
        )
        await self._reader.readexactly(length)
        return int(lines[0].split()[1])


async def measure_http(
    database_url: str,
    redis_url: str,
    qs: Sequence[Query],
    requests: int,
    budget_s: float,
    search: SearchSupport | None,
) -> tuple[dict[str, Measured], Load]:
    """Each query through `chat-gateway serve` on the database, one request at a time; a
    sample is send to last byte of the body. Judged: a bare HTTP/1.1 client on one keep-alive
    connection (the gateway's latency, not a client library's); second series: the same
    request from a keep-alive httpx client (a Python client's own cost added)."""
    prefix = f"cgbench{uuid.uuid4().hex[:8]}:"
    if search is not None:
        # The gateway's indexer would create its group and, finding none, schedule a
        # catch-up scan of every message in the middle of the measurement: the index is full.
        redis = aioredis.Redis.from_url(redis_url)
        try:
            await redis.xgroup_create(
                Keys(prefix).index_stream, search.index_group, id="0", mkstream=True
            )
        finally:
            await redis.aclose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_KEY_PREFIX": prefix,
    }
    port = free_port()
    argv = [str(CHAT_GATEWAY), "serve", "--port", str(port), "--log-level", "warning"]
    out = {}
    with tempfile.TemporaryDirectory(prefix="cg-latency-") as tmp:
        async with (
            server_process("gateway", argv, port, Path(tmp), env) as server,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client,
            BareClient.connect(port) as raw,
        ):
            probe = await client.get("/api/search", params={"q": "probe"})
            load = Load()
            for q in qs:
                if q.kind == "search" and probe.status_code == 404:
                    print("  no /api/search in this gateway: search over HTTP skipped")
                    continue

                async def with_httpx(path: str) -> int:
                    start = time.perf_counter_ns()
                    response = await client.get(path)
                    spent = time.perf_counter_ns() - start
                    if response.status_code != 200:
                        raise SystemExit(f"GET {path}: {response.status_code} {response.text}")
                    return spent

                async def bare(path: str) -> int:
                    start = time.perf_counter_ns()
                    status = await raw.get(path)
                    spent = time.perf_counter_ns() - start
                    if status != 200:
                        raise SystemExit(f"GET {path}: {status}")
                    return spent

                async def once(i: int, q: Query = q) -> tuple[int, int]:
                    # The same request from both clients, in turns first: the second one finds
                    # the first's pages in PostgreSQL's buffers, so neither gets it always.
                    if i % 2:
                        return await bare(q.path(i)), await with_httpx(q.path(i))
                    httpx_ns = await with_httpx(q.path(i))
                    return await bare(q.path(i)), httpx_ns

                ns, httpx_ns, cut = await run_requests(f"{q.label}, HTTP", once, requests, budget_s)
                out[q.key] = Measured(ns, cut, httpx_ns)
            load.stop()
            if server.stderr_lines:
                print(f"  the gateway wrote {server.stderr_lines} stderr lines; the last ones:")
                print("".join(server.stderr), end="")
    return out, load


async def explain(url: str, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement with its arguments: the custom plan, then
    the generic one, which a prepared statement (asyncpg prepares every query) may switch to
    after five runs."""
    conn = await asyncpg.connect(url)
    out = []
    try:
        for query, args in statements:
            if not query.lstrip().upper().startswith(("SELECT", "WITH")):
                continue  # BEGIN, SET LOCAL, COMMIT
            params = ", ".join(map(_literal, args))
            async with conn.transaction():
                custom = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {query}", *args)
                await conn.execute(f"PREPARE bench_explained AS {query}")
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                generic = await conn.fetch(
                    "EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_explained"
                    + (f"({params})" if args else "")
                )
                await conn.execute("DEALLOCATE bench_explained")
            out += [f"    {query.strip()}", f"    -- arguments {args!r}", "    -- custom plan:"]
            out += [f"    {r[0]}" for r in custom] + ["    -- generic plan:"]
            out += [f"    {r[0]}" for r in generic] + [""]
    finally:
        await conn.close()
    return out


def _literal(value: object) -> str:
    """A SQL literal of a statement argument (EXECUTE takes no bound parameters)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"
