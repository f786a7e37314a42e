"""API and SQL latency of the hot reads on large tables (1M and 10M messages).

    python -m bench.api_latency [--messages 1000000 10000000] [--requests 1000] [--keep]

Per size, the script fills a fresh migrated database with COPY: 10 users (`me`, the local
single-user mode's user, with a tenth of the data, and nine others), 30 ports, 2,000 sessions
(one chain of sessions per user and port, each the previous one's rotation: archived, the
newest active unless idle for 30 days; a few deleted, some pinned, most titled) and the
messages, spread unevenly over the sessions, seq 1..n per session, created_at increasing over
90 days and written in time order across sessions, as the writer would. Contents come from a
pool of 100,000 texts of `content_of_realistic_length` (reused: generating each text anew would
take most of the run), half of them ending with one identifier-like word from a Zipf-ranked
list, so search has words of every frequency. The secondary indexes of `messages` are dropped
for the load and built afterwards (faster than maintaining them row by row); the script checks
that the final indexes and constraints are exactly the migrated ones. Then the counters
(`sessions.message_count`, `last_message_at`, `activity_at`, `user_stats`) are set from
aggregates, as `verify-counts --fix` would, `verify-counts`' own check must find them clean,
`VACUUM (ANALYZE)` runs (autovacuum would otherwise start on the fresh table in the middle of
the measurement), and the search index is filled the way the indexer's catch-up does it.

Before measuring, every file of the database is read once so the OS page cache holds it (a
server whose RAM exceeds its data). PostgreSQL's own buffers (`shared_buffers`) are sized like
a dedicated server's, a quarter of the RAM as PostgreSQL's documentation advises, unless
`--shared-buffers` says otherwise (the embedded server's default for a local gateway is
128MB); with BENCH_DATABASE_URL the server's own setting applies.
Then each query runs `--requests` times (after 50 unrecorded), parameters drawn up front at
random among `me`'s ports, sessions and search words: first directly against PostgreSQL by
calling the storage functions the API calls, timing only their statements (asyncpg's query
logger: what the API spends in SQL), then through the HTTP API of `chat-gateway serve` started
on the same database and Redis, one request at a time (`GET /healthz` first: the HTTP
stack's floor), each request sent by two keep-alive clients in turn: a bare HTTP/1.1 client
written on asyncio streams, whose figures are judged (the gateway's latency), and httpx, shown
beside them (about a millisecond more: a Python client library's own cost, not the gateway's;
which client goes first alternates, since the second finds the first's pages in PostgreSQL's
buffers). The client's garbage collector is off while it
records; a query past `--budget` seconds records fewer requests, and the table says so. For a
row that misses its target the script prints EXPLAIN (ANALYZE, BUFFERS) of the statements of
its slowest request, in the custom and the generic plan.

Targets (issue): at 10M, p99 < 2 ms in SQL and < 5 ms over HTTP for a port's newest messages,
a session page and the sessions list; stats the same at every size (within noise); search p99
< 50 ms at 1M. The script prints PASS or FAIL against them for every size it runs.

This module is the command; it ties four parts, each a module of its own: the data's shape
(bench/api_latency_data.py, pure), filling, keeping and warming a database
(bench/api_latency_db.py), the measurement in SQL and over HTTP (bench/api_latency_measure.py)
and the report (bench/api_latency_report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import uvloop

from bench.api_latency_data import SESSIONS, content_pool
from bench.api_latency_db import (
    database,
    generate,
    mark_complete,
    search_support,
    warm_page_cache,
    warm_shared_buffers,
)
from bench.api_latency_measure import (
    WARMUP,
    choose_workload,
    explain,
    measure_http,
    measure_sql,
    queries,
)
from bench.api_latency_report import SizeResult, size_report, stats_report
from bench.harness import kept_servers, machine, servers


async def main_async(
    sizes: list[int],
    requests: int,
    keep: bool,
    data_dir: Path,
    seed: int,
    budget_s: float,
    shared_buffers: str,
) -> None:
    print(f"# API and SQL latency on large tables; {machine()}")
    if "BENCH_DATABASE_URL" not in os.environ:
        print(f"# embedded PostgreSQL with shared_buffers={shared_buffers}")
    print(f"# {requests} requests per query and mode after {WARMUP} unrecorded")
    search = search_support()
    contents = content_pool(random.Random(seed))
    results: list[SizeResult] = []
    opened = kept_servers(data_dir, shared_buffers) if keep else servers(shared_buffers)
    with opened as (server_url, redis_url):
        for n in sizes:
            async with database(server_url, n, seed, keep) as (url, done):
                generated = done
                if generated is None:
                    print(f"# generating {n:,} messages", file=sys.stderr)
                    generated = await generate(url, n, seed, contents, search)
                    if keep:
                        await mark_complete(server_url, urlsplit(url).path[1:], generated)
                filled = search if generated.search.endswith("catch_up") else None
                workload = await choose_workload(
                    url, random.Random(seed + n), contents, WARMUP + requests
                )
                qs = queries(workload, filled)
                conn = await asyncpg.connect(url)
                try:
                    warmed = await warm_page_cache(conn)
                    warmed += "; " + await warm_shared_buffers(conn)
                finally:
                    await conn.close()
                print(f"  {warmed}", file=sys.stderr, flush=True)
                sql, sql_load = await measure_sql(url, redis_url, qs, requests, budget_s)
                http, http_load = await measure_http(url, redis_url, qs, requests, budget_s, filled)
                result = SizeResult(
                    n, generated, workload, qs, sql, http, (sql_load, http_load), warmed
                )
                print("\n".join(size_report(result, contents)), flush=True)
                for key in result.failed:
                    q = next(q for q in qs if q.key == key)
                    print(f"Plans of the slowest SQL request of {q.label} (FAIL):\n")
                    print("\n".join(await explain(url, sql[key].statements)), flush=True)
                results.append(result)
    print("\n".join(stats_report(results)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, nargs="+", default=[1_000_000, 10_000_000],
        help="table sizes, one database each (default 1000000 10000000)",
    )  # fmt: skip
    parser.add_argument(
        "--requests", type=int, default=1000,
        help="recorded requests per query and mode (default 1000)",
    )  # fmt: skip
    parser.add_argument(
        "--keep", action="store_true",
        help="keep the generated databases (in --data-dir unless BENCH_DATABASE_URL is set)"
        " and reuse them in later runs",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", type=Path, default=Path.home() / ".cache" / "chat-gateway-bench",
        help="where --keep's embedded servers keep their data",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="of the generated data (default 1)")
    quarter = f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') // 4 // 2**20}MB"
    parser.add_argument(
        "--shared-buffers", default=quarter,
        help=f"the embedded PostgreSQL's shared_buffers (default a quarter of the RAM: {quarter})",
    )  # fmt: skip
    parser.add_argument(
        "--budget", type=float, default=120.0,
        help="seconds one query may take per mode; fewer requests are recorded past it",
    )  # fmt: skip
    args = parser.parse_args()
    if min(args.messages) < SESSIONS or args.requests < 1:
        parser.error(f"--messages must be at least {SESSIONS}, --requests positive")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(
            main_async(
                sorted(args.messages), args.requests, args.keep, args.data_dir, args.seed,
                args.budget, args.shared_buffers,
            )
        )  # fmt: skip


if __name__ == "__main__":
    main()
