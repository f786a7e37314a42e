"""The `chat-gateway` command line: serve, writer, migrate, verify-counts, archive, reindex,
token, db-health (gateway/cli_health.py). Its grammar and help pages are
gateway/cli_parser.py; which servers each command uses is gateway/servers.py.

Every setting is checked before anything starts: a bad flag, variable or URL, a port in use,
or a folder another serve runs on is one line naming it, and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import ipaddress
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import asyncpg
import msgspec
import prometheus_client
import redis.asyncio as aioredis
import uvicorn

from gateway import VERSION, cli_health, cli_purge, loadtest
from gateway.app import create_app
from gateway.auth import TokenVerifier, issue_token, parse_duration
from gateway.cli_backup import run_backup, run_restore
from gateway.cli_parser import build_parser
from gateway.cli_transfer import HANDLERS as TRANSFER_HANDLERS
from gateway.lifecycle import SessionLifecycle
from gateway.local_token import AUTO, load_or_create_local_token
from gateway.logs import configure_logging
from gateway.metrics import Metrics
from gateway.metrics_listener import parse_address
from gateway.persistence import running_persistence
from gateway.preflight import PreflightError, check_at_least_one, check_port_free, duration_flag
from gateway.progress import progress_bar
from gateway.server import uvicorn_config, uvicorn_options
from gateway.servers import check_folder_free, servers_for
from gateway.settings import Settings
from storage import migrate, stats
from storage.buffer import IngestBuffer
from storage.db import create_pool
from storage.embedded import EmbeddedServerError
from storage.indexer import catch_up
from storage.keys import Keys

log = logging.getLogger("chat_gateway")

Labels = Mapping[str, str]

# The flag that sets each setting, for error lines that name what the operator typed.
FLAGS = {
    "database_url": "--database-url",
    "redis_url": "--redis-url",
    "data_dir": "--data-dir",
    "log_level": "--log-level",
    "log_format": "--log-format",
    "host": "--host",
    "port": "--port",
    "workers": "--workers",
    "local_token": "--local-token",
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        sys.exit(2)
    given = {name: flag for name, flag in FLAGS.items() if getattr(args, name, None) is not None}
    overrides = {name: getattr(args, name) for name in given}
    if getattr(args, "no_writer", False):
        overrides["run_writer"] = False
        given["run_writer"] = "--no-writer"
    try:
        settings = Settings.from_env(**overrides)
        settings.validate(given)
        configure_logging(settings)
    except ValueError as exc:
        _fail(str(exc))
    try:
        HANDLERS[args.command](settings, args, given)
    except PreflightError as exc:
        _fail(str(exc))
    except (
        migrate.MigrationError,
        EmbeddedServerError,
        asyncpg.PostgresError,
        ConnectionError,
        OSError,
    ) as exc:
        log.error("%s", exc)
        sys.exit(1)


def _fail(line: str) -> NoReturn:
    """One line on stderr and exit 2: a setting is wrong and nothing was started."""
    print(f"chat-gateway: error: {line}", file=sys.stderr)
    sys.exit(2)


# --- serve --------------------------------------------------------------------------------


def _serve(settings: Settings, args: argparse.Namespace, given: Labels) -> None:
    if settings.local_mode and not _is_loopback(settings.host):
        raise PreflightError(
            f"refusing to bind {settings.host}: with no GATEWAY_AUTH_SECRET the gateway runs"
            " in local single-user mode and only binds to loopback (127.0.0.1 or ::1)"
        )
    try:
        TokenVerifier.from_settings(settings)
    except ValueError as exc:
        raise PreflightError(str(exc)) from None
    check_folder_free(settings)
    check_port_free(settings.host, settings.port, _label(given, "port"))
    try:
        metrics_address = parse_address(settings.metrics_address)
    except ValueError as exc:
        raise PreflightError(str(exc)) from None
    if metrics_address is not None:
        check_port_free(metrics_address.host, metrics_address.port, "GATEWAY_METRICS_ADDRESS")
    if metrics_address is not None and settings.workers > 1:
        raise PreflightError(
            "GATEWAY_METRICS_ADDRESS serves one process's metrics: use --workers 1 with it"
        )
    if settings.local_token == AUTO and settings.local_mode:
        settings = _with_local_token(settings)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal; turning
    # it into SystemExit(0) lets the embedded servers stop and servers.json go, with exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    with servers_for(settings, serve=True, labels=given) as settings:
        asyncio.run(_apply_migrations(settings.database_url))
        log.info(
            "chat-gateway %s starting: %s, writer %s",
            VERSION,
            _mode(settings),
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


def _with_local_token(settings: Settings) -> Settings:
    """Settings holding the data folder's local token (created on first use), and the URL
    that signs a browser in with it, said once at start."""
    path, token = load_or_create_local_token(settings.data_dir)
    port = settings.port or "PORT"
    log.info(
        "local token in %s (mode 0600); open http://%s:%s/?token=%s",
        path, _url_host(settings.host), port, token,
    )  # fmt: skip
    return dataclasses.replace(settings, local_token=token)


def _mode(settings: Settings) -> str:
    if not settings.local_mode:
        return "token mode"
    if settings.local_token:
        return "local mode with the data folder's token"
    return "local single-user mode (open to every account on this machine)"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


# --- writer and maintenance ---------------------------------------------------------------


def _writer(settings: Settings, args: argparse.Namespace, given: Labels) -> None:
    if settings.writer_metrics_port:
        check_port_free(settings.host, settings.writer_metrics_port, "GATEWAY_WRITER_METRICS_PORT")
    with servers_for(settings, serve=False, labels=given) as settings:
        asyncio.run(_run_writer(settings))


async def _run_writer(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics = Metrics(settings.slow_query_s, settings.very_slow_query_s)
    # The writer's connection and the indexer's, plus one for a catch-up the indexer starts.
    pool = await create_pool(
        settings.database_url,
        settings.pool_settings(max_size=3),
        on_query=metrics.observe_query,
        on_acquire=metrics.observe_acquire,
    )
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


def _migrate(settings: Settings, args: argparse.Namespace, given: Labels) -> None:
    if args.allow_data_loss and args.to is None:
        raise PreflightError("--allow-data-loss goes with --to N: plain migrate never goes down")
    if args.to is not None:
        migrations = migrate.discover()  # a bad file: MigrationError, exit 1 like a plain run
        try:
            migrate.check_target(args.to, migrations)
        except migrate.MigrationError as exc:
            raise PreflightError(f"--to: {exc}") from None
    with servers_for(settings, serve=False, redis=False, labels=given) as settings:
        if args.status:
            asyncio.run(_print_status(settings.database_url))
        elif args.to is not None:
            result = asyncio.run(_migrate_to(settings.database_url, args.to, args.allow_data_loss))
            for migration in result.reverted:
                print(f"reverted {migration.path.name}")
            for migration in result.applied:
                print(f"applied {migration.path.name}")
            moved = result.reverted or result.applied
            print(
                f"at version {args.to}: reverted {len(result.reverted)},"
                f" applied {len(result.applied)}"
                if moved
                else f"at version {args.to}: nothing to do"
            )
        else:
            applied = asyncio.run(_apply_migrations(settings.database_url))
            print(f"applied {len(applied)} migration(s)" if applied else "nothing to apply")


async def _apply_migrations(dsn: str) -> list[migrate.Migration]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate.apply_pending(conn)
    finally:
        await conn.close()


async def _migrate_to(dsn: str, target: int, allow_data_loss: bool) -> migrate.MigrateResult:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate.migrate_to(conn, target, allow_data_loss=allow_data_loss)
    finally:
        await conn.close()


async def _print_status(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        states = await migrate.status(conn)
    finally:
        await conn.close()
    # "down file": what undoing it costs (its header), "none" if it cannot be undone.
    print(f"{'':4}  {'migration':<32} {'down file':<18} applied")
    for state in states:
        when = state.applied_at.isoformat(timespec="seconds") if state.applied_at else "pending"
        down = state.migration.down
        undo = str(down.effect) if down else "none"
        if state.down_edited:
            undo += ", edited"
        print(f"{state.migration.version:04d}  {state.migration.name:<32} {undo:<18} {when}")


def _verify_counts(settings: Settings, args: argparse.Namespace, given: Labels) -> None:
    with servers_for(settings, serve=False, redis=False, labels=given) as settings:
        drift = asyncio.run(_run_verify(settings.database_url, args.fix))
    for session_id, kept, real in drift.session_counts[:20]:
        print(f"session {session_id}: message_count {kept}, real {real}")
    for user_id, what, kept, real in drift.user_counts[:20]:
        print(f"user {user_id}: {what} {kept}, real {real}")
    for what, kept, real in drift.total_counts:
        print(f"global total {what}: {kept}, real {real}")
    print(
        f"checked {drift.sessions_checked} sessions: {len(drift.session_counts)} session"
        f" counters and {len(drift.user_counts)} user counters drifted"
        + (f", and {len(drift.total_counts)} global totals" if drift.total_counts else "")
        + (" (fixed)" if args.fix and not drift.clean else "")
    )
    if not drift.clean and not args.fix:
        sys.exit(1)


async def _run_verify(dsn: str, fix: bool) -> stats.Drift:
    conn = await asyncpg.connect(dsn)
    try:
        total = int(await conn.fetchval("SELECT count(*) FROM sessions"))
        with progress_bar("sessions checked", total) as done:
            async with conn.transaction():
                return await stats.verify(conn, fix=fix, progress=lambda n, _total: done(n))
    finally:
        await conn.close()


def _archive(settings: Settings, args: argparse.Namespace, given: Labels) -> None:
    older_than = duration_flag("--older-than", args.older_than)
    check_at_least_one("--batch", args.batch)
    with servers_for(settings, serve=False, labels=given) as settings:
        archived = asyncio.run(_run_archive(settings, older_than, args.batch))
    print(f"archived {archived} session(s) inactive for more than {args.older_than}")


async def _run_archive(settings: Settings, older_than_s: int, batch: int) -> int:
    pool = await create_pool(settings.database_url, settings.pool_settings(max_size=1))
    redis = aioredis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.key_prefix)
    buffer = IngestBuffer(redis, pool, keys, state_ttl_s=settings.session_state_ttl_s)
    lifecycle = SessionLifecycle(pool, redis, keys, buffer)
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    try:
        # How many will go is known only as they go (sessions stay active meanwhile).
        with progress_bar("sessions archived", None) as done:
            return await lifecycle.archive_inactive(cutoff, batch, done)
    finally:
        await redis.aclose()
        await pool.close()


def _reindex(settings: Settings, args: argparse.Namespace, given: Labels) -> None:
    check_at_least_one("--batch", args.batch)
    with servers_for(settings, serve=False, redis=False, labels=given) as settings:
        indexed = asyncio.run(_run_reindex(settings.database_url, args.batch))
    if indexed is None:
        raise SystemExit("another catch-up (a gateway's indexer or a reindex) is running")
    print(f"indexed {indexed} message(s) for search")


async def _run_reindex(dsn: str, batch: int) -> int | None:
    """The catch-up with a bar over every message: the total is counted first (one scan,
    seconds at millions of rows) so the bar ends at 100 %, not at a planner's estimate."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            total = int(await conn.fetchval("SELECT count(*) FROM messages"))
        with progress_bar("messages scanned", total) as done:
            batches = 0

            async def step() -> None:
                nonlocal batches
                batches += 1
                done(min(batches * batch, total))

            indexed = await catch_up(pool, batch_rows=batch, between_batches=step)
            done(total)
            return indexed
    finally:
        await pool.close()


# --- token --------------------------------------------------------------------------------


def _token(settings: Settings, args: argparse.Namespace, given: Labels) -> None:
    if not settings.auth_secret:
        raise PreflightError(
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
                admin=args.admin,
            )
        )
    except ValueError as exc:
        raise PreflightError(str(exc)) from None


# --- loadtest -----------------------------------------------------------------------------


def _loadtest(settings: Settings, args: argparse.Namespace, given: Labels) -> None:
    plan = _load_plan(args)
    if args.plot is not None:
        _check_plot(args.plot)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    timeline: list[loadtest.AckSample] | None = [] if args.plot is not None else None
    # A flat-out --duration run has no count to reach: a spinner with the count instead.
    total = loadtest.expected_acks(plan) if plan.new_frames is not None else None
    with progress_bar("messages acked", total) as done:
        report = asyncio.run(loadtest.run(plan, done, timeline))
    print(msgspec.json.encode(report).decode() if args.json else "\n".join(report.lines()))
    if timeline is not None:
        title = f"{plan.connections} connections, {plan.ports} ports, {args.url}"
        loadtest.plot(timeline, args.plot, title)
    if not report.ok():
        sys.exit(1)


def _load_plan(args: argparse.Namespace) -> loadtest.Plan:
    """The plan the flags ask for, each wrong flag refused in one line."""
    if not args.url.startswith(("http://", "https://")):
        raise PreflightError(f"URL={args.url!r} must start with http:// or https://")
    if args.messages is not None and args.duration is not None:
        raise PreflightError("--messages and --duration: give one, a count of frames or a time")
    for name in ("connections", "ports", "messages", "in_flight", "batch", "content_bytes"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise PreflightError(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration is not None and not 0 < args.duration < math.inf:
        raise PreflightError("--duration must be a number of seconds above 0")
    if args.subscribers < 0 or args.rate < 0:
        raise PreflightError("--subscribers and --rate must not be negative")
    for name in ("resend_share", "edit_share"):
        if not 0 <= getattr(args, name) <= 1:
            raise PreflightError(f"--{name.replace('_', '-')} is from 0 to 1")
    return loadtest.Plan(
        url=args.url, connections=args.connections, ports=args.ports,
        messages=10_000 if args.messages is None else args.messages,
        duration_s=args.duration or 0.0, rate=args.rate, in_flight=args.in_flight,
        batch=args.batch, resend_share=args.resend_share, edit_share=args.edit_share,
        subscribers=args.subscribers, content_bytes=args.content_bytes, token=args.token,
        persist_wait_s=args.persist_wait, check_persisted=not args.no_persistence_check,
    )  # fmt: skip


def _check_plot(path: Path) -> None:
    """--plot needs matplotlib (an extra) and a folder to write to: say so before the run."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        raise PreflightError("--plot needs matplotlib: pip install 'chat-gateway[plot]'") from None
    if not path.parent.is_dir():
        raise PreflightError(f"--plot={path}: there is no folder {path.parent}")


HANDLERS: dict[str, Callable[[Settings, argparse.Namespace, Labels], None]] = {
    "loadtest": _loadtest,
    "serve": _serve,
    "writer": _writer,
    "migrate": _migrate,
    "verify-counts": _verify_counts,
    "archive": _archive,
    "reindex": _reindex,
    **TRANSFER_HANDLERS,
    "token": _token,
    "db-health": cli_health.run,
    "backup": run_backup,
    "restore": run_restore,
    "purge": cli_purge.run,
}


def _label(given: Labels, name: str) -> str:
    """How the operator set `name`: the flag typed, else its variable."""
    return given.get(name) or f"GATEWAY_{name.upper()}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
