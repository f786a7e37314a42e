"""The `chat-gateway` command line: serve, writer, migrate, verify-counts, archive, reindex,
token.

With no database or Redis URL, `serve` starts an embedded PostgreSQL and Valkey under the data
folder and records their URLs in `<data>/servers.json` while it runs, so `chat-gateway writer`
and `chat-gateway migrate` started beside it find the same servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import prometheus_client
import redis.asyncio as aioredis
import uvicorn

from gateway import VERSION
from gateway.app import create_app
from gateway.auth import issue_token, parse_duration
from gateway.lifecycle import SessionLifecycle
from gateway.logs import configure_logging
from gateway.metrics import Metrics
from gateway.persistence import running_persistence
from gateway.server import uvicorn_config, uvicorn_options
from gateway.settings import Settings
from storage import migrate, stats
from storage.buffer import IngestBuffer
from storage.db import create_pool
from storage.embedded import EmbeddedServerError, embedded_postgres, embedded_redis
from storage.indexer import catch_up
from storage.keys import Keys

log = logging.getLogger("chat_gateway")

SERVERS_FILE = "servers.json"


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        sys.exit(2)
    try:
        settings = Settings.from_env(
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            workers=getattr(args, "workers", None),
            run_writer=False if getattr(args, "no_writer", False) else None,
            data_dir=args.data_dir,
            database_url=args.database_url,
            redis_url=args.redis_url,
            log_level=args.log_level,
            log_format=getattr(args, "log_format", None),
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        configure_logging(settings)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        args.handler(settings, args)
    except (
        migrate.MigrationError,
        EmbeddedServerError,
        asyncpg.PostgresError,
        ConnectionError,
        OSError,
    ) as exc:
        log.error("%s", exc)
        sys.exit(1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-gateway",
        description="Real-time WebSocket chat gateway with PostgreSQL persistence.",
    )
    parser.add_argument("--version", action="version", version=f"chat-gateway {VERSION}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url", help="PostgreSQL DSN (env GATEWAY_DATABASE_URL; default: embedded)"
    )
    common.add_argument(
        "--redis-url", help="Redis URL (env GATEWAY_REDIS_URL; default: embedded Valkey)"
    )
    common.add_argument(
        "--data-dir",
        type=Path,
        help="where embedded servers keep their data (env GATEWAY_DATA_DIR; ./.gateway-data)",
    )
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    common.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text lines, or one JSON object per line (env GATEWAY_LOG_FORMAT; text)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve", parents=[common], help="run the gateway (HTTP + WebSocket) and the writer"
    )
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 8000; 0 picks a free one)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument(
        "--no-writer", action="store_true", help="do not run the batch writer in-process"
    )
    serve.set_defaults(handler=_serve)

    writer = sub.add_parser(
        "writer", parents=[common], help="run only the batch writer (scale out: run several)"
    )
    writer.set_defaults(handler=_writer)

    mig = sub.add_parser(
        "migrate", parents=[common], help="apply pending SQL migrations in order, under a lock"
    )
    mig.add_argument("--status", action="store_true", help="list migrations, apply nothing")
    mig.set_defaults(handler=_migrate)

    verify = sub.add_parser(
        "verify-counts",
        parents=[common],
        help="recount sessions and messages; report (or --fix) counters that drifted",
    )
    verify.add_argument("--fix", action="store_true", help="overwrite drifted counters")
    verify.set_defaults(handler=_verify_counts)

    archive = sub.add_parser(
        "archive", parents=[common], help="archive sessions inactive for a while, in batches"
    )
    archive.add_argument(
        "--older-than", required=True, help="inactivity that archives a session, like 30d"
    )
    archive.add_argument("--batch", type=int, default=500, help="sessions per transaction")
    archive.set_defaults(handler=_archive)

    reindex = sub.add_parser(
        "reindex",
        parents=[common],
        help="index for search every message missing from the index (safe while serving)",
    )
    reindex.add_argument(
        "--batch", type=int, default=5_000, help="messages scanned per statement (default 5000)"
    )
    reindex.set_defaults(handler=_reindex)

    token = sub.add_parser(
        "token",
        help="print a signed token for a user (needs GATEWAY_AUTH_SECRET)",
        description="Print an HS256 JWT for a user, signed with GATEWAY_AUTH_SECRET, with the"
        " `aud` and `iss` of GATEWAY_AUTH_AUDIENCE / GATEWAY_AUTH_ISSUER when they are set.",
    )
    token.add_argument("--user", required=True, help="the user id the token speaks for")
    token.add_argument("--ttl", default="1d", help="lifetime, like 30m, 12h or 7d (default 1d)")
    token.set_defaults(
        handler=_token, data_dir=None, database_url=None, redis_url=None, log_level=None
    )
    return parser


def _verify_counts(settings: Settings, args: argparse.Namespace) -> None:
    with _servers(settings, publish=False, redis=False) as settings:
        drift = asyncio.run(_run_verify(settings.database_url, args.fix))
    for session_id, kept, real in drift.session_counts[:20]:
        print(f"session {session_id}: message_count {kept}, real {real}")
    for user_id, what, kept, real in drift.user_counts[:20]:
        print(f"user {user_id}: {what} {kept}, real {real}")
    print(
        f"checked {drift.sessions_checked} sessions: {len(drift.session_counts)} session"
        f" counters and {len(drift.user_counts)} user counters drifted"
        + (" (fixed)" if args.fix and not drift.clean else "")
    )
    if not drift.clean and not args.fix:
        sys.exit(1)


async def _run_verify(dsn: str, fix: bool) -> stats.Drift:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            return await stats.verify(conn, fix=fix, progress=_progress("sessions"))
    finally:
        await conn.close()
        print(file=sys.stderr)


def _archive(settings: Settings, args: argparse.Namespace) -> None:
    try:
        older_than = parse_duration(args.older_than)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if args.batch < 1:
        raise SystemExit("--batch must be at least 1")
    with _servers(settings, publish=False) as settings:
        archived = asyncio.run(_run_archive(settings, older_than, args.batch))
    print(f"archived {archived} session(s) inactive for more than {args.older_than}")


async def _run_archive(settings: Settings, older_than_s: int, batch: int) -> int:
    pool = await create_pool(settings.database_url, size=1)
    redis = aioredis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.key_prefix)
    buffer = IngestBuffer(redis, pool, keys, state_ttl_s=settings.session_state_ttl_s)
    lifecycle = SessionLifecycle(pool, redis, keys, buffer)
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)

    def progress(archived: int) -> None:
        print(f"\rarchived {archived} session(s)", end="", file=sys.stderr, flush=True)

    try:
        return await lifecycle.archive_inactive(cutoff, batch, progress)
    finally:
        print(file=sys.stderr)
        await redis.aclose()
        await pool.close()


def _reindex(settings: Settings, args: argparse.Namespace) -> None:
    if args.batch < 1:
        raise SystemExit("--batch must be at least 1")
    with _servers(settings, publish=False, redis=False) as settings:
        indexed = asyncio.run(_run_reindex(settings.database_url, args.batch))
    if indexed is None:
        raise SystemExit("another catch-up (a gateway's indexer or a reindex) is running")
    print(f"indexed {indexed} message(s) for search")


async def _run_reindex(dsn: str, batch: int) -> int | None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            # An estimate (the planner's row count): counting would scan the table once more.
            estimate = int(
                await conn.fetchval(
                    "SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'messages'::regclass"
                )
            )
        report, batches = _progress("messages scanned"), 0

        async def step() -> None:
            nonlocal batches
            batches += 1
            scanned = batches * batch
            report(min(scanned, estimate) if estimate else scanned, max(estimate, scanned))

        return await catch_up(pool, batch_rows=batch, between_batches=step)
    finally:
        await pool.close()
        print(file=sys.stderr)


def _progress(what: str) -> Callable[[int, int], None]:
    """A one-line progress report on stderr, redrawn in place."""

    def report(done: int, total: int) -> None:
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        print(f"\r{what} [{bar:<30}] {done}/{total}", end="", file=sys.stderr, flush=True)

    return report


def _token(settings: Settings, args: argparse.Namespace) -> None:
    if not settings.auth_secret:
        raise SystemExit(
            "set GATEWAY_AUTH_SECRET (the gateway's secret) to sign tokens; with"
            " GATEWAY_AUTH_PUBLIC_KEY or GATEWAY_AUTH_JWKS_URL your identity service issues them"
        )
    try:
        ttl = parse_duration(args.ttl)
        print(
            issue_token(
                settings.auth_secret,
                args.user,
                ttl,
                audience=settings.auth_audience,
                issuer=settings.auth_issuer,
            )
        )
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    if settings.local_mode and not _is_loopback(settings.host):
        raise SystemExit(
            f"refusing to bind {settings.host}: with no GATEWAY_AUTH_SECRET the gateway runs"
            " in local single-user mode and only binds to loopback (127.0.0.1 or ::1)"
        )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal; turning
    # it into SystemExit(0) lets the embedded servers stop and servers.json go, with exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    with _servers(settings, publish=True) as settings:
        asyncio.run(_apply_migrations(settings.database_url))
        log.info(
            "chat-gateway %s starting: %s mode, writer %s",
            VERSION,
            "local single-user" if settings.local_mode else "token auth",
            "in-process" if settings.run_writer else "off",
        )
        if settings.workers > 1:
            # Workers are separate processes: they rebuild the settings from the environment.
            os.environ.update(settings.to_env())
            uvicorn.run(
                "gateway.app:create_app_from_env",
                factory=True,
                host=settings.host,
                port=settings.port,
                workers=settings.workers,
                **uvicorn_options(settings),
            )
        else:
            config = uvicorn_config(
                create_app(settings), settings, host=settings.host, port=settings.port
            )
            uvicorn.Server(config).run()


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _writer(settings: Settings, args: argparse.Namespace) -> None:
    with _servers(settings, publish=False) as settings:
        asyncio.run(_run_writer(settings))


async def _run_writer(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics = Metrics(settings.slow_query_s)
    # The writer's connection and the indexer's, plus one for a catch-up the indexer starts.
    pool = await create_pool(settings.database_url, size=3, on_query=metrics.observe_query)
    redis = aioredis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.key_prefix)
    try:
        if settings.writer_metrics_port:
            # A thread of prometheus-client's: counters and histograms only (the shared-state
            # gauges are the gateways' to report).
            prometheus_client.start_http_server(
                settings.writer_metrics_port, addr=settings.host, registry=metrics.registry
            )
        async with running_persistence(settings, pool, redis, keys, metrics) as persistence:
            writer = persistence.writer
            log.info("writer %s running; Ctrl-C drains and stops", writer.consumer)
            await stop.wait()
        log.info("writer stopped after writing %d rows", writer.rows_written)
    finally:
        await redis.aclose()
        await pool.close()


def _migrate(settings: Settings, args: argparse.Namespace) -> None:
    with _servers(settings, publish=False, redis=False) as settings:
        if args.status:
            asyncio.run(_print_status(settings.database_url))
        else:
            applied = asyncio.run(_apply_migrations(settings.database_url))
            print(f"applied {len(applied)} migration(s)" if applied else "nothing to apply")


async def _apply_migrations(dsn: str) -> list[migrate.Migration]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate.apply_pending(conn)
    finally:
        await conn.close()


async def _print_status(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        states = await migrate.status(conn)
    finally:
        await conn.close()
    for state in states:
        when = state.applied_at.isoformat(timespec="seconds") if state.applied_at else "pending"
        print(f"{state.migration.version:04d}  {state.migration.name:<32} {when}")


@contextlib.contextmanager
def _servers(settings: Settings, *, publish: bool, redis: bool = True) -> Iterator[Settings]:
    """Settings with URLs filled in: given ones, those of a running `serve` (servers.json),
    or embedded servers started here and stopped on exit."""
    data_dir = settings.data_dir
    recorded = _recorded_servers(data_dir) if not publish else {}
    database_url = settings.database_url or recorded.get("database_url", "")
    redis_url = settings.redis_url or recorded.get("redis_url", "")
    with contextlib.ExitStack() as stack:
        if not database_url:
            log.info("no GATEWAY_DATABASE_URL: starting embedded PostgreSQL in %s", data_dir)
            database_url = stack.enter_context(embedded_postgres(data_dir / "postgres"))
        if redis and not redis_url:
            log.info("no GATEWAY_REDIS_URL: starting embedded Valkey in %s", data_dir)
            redis_url = stack.enter_context(embedded_redis(data_dir / "redis"))
        resolved = dataclasses.replace(settings, database_url=database_url, redis_url=redis_url)
        if publish and (not settings.database_url or not settings.redis_url):
            stack.enter_context(_published(data_dir, resolved))
        yield resolved


@contextlib.contextmanager
def _published(data_dir: Path, settings: Settings) -> Iterator[None]:
    path = data_dir / SERVERS_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"database_url": settings.database_url, "redis_url": settings.redis_url})
    )
    path.chmod(0o600)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _recorded_servers(data_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((data_dir / SERVERS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if data:
        log.info("using the embedded servers of the running `serve` (%s)", data_dir)
    return {k: str(v) for k, v in data.items()}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
