"""The `chat-gateway` command line's grammar: commands, flags, and their help pages.

The options every command shares (URLs, data folder, logging) are global: they may come
before the command or after it. argparse gives a subcommand's own defaults precedence over
the values parsed before it, so the subcommands' copies default to SUPPRESS (absent unless
typed) and the top level's to None.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from gateway import VERSION, cli_health, cli_purge
from gateway.cli_backup import add_parser as add_backup_parsers
from gateway.cli_transfer import add_commands as add_transfer_commands
from gateway.settings import Settings, platform_data_dir

_SERVE_EPILOG = """\
who may connect:
  With none of GATEWAY_AUTH_SECRET, GATEWAY_AUTH_PUBLIC_KEY or GATEWAY_AUTH_JWKS_URL set, serve
  runs in local mode: every request is the local user, and it binds only to loopback. Loopback
  is shared by every account on this machine, so any local account can then read and write
  these chats. --local-token (GATEWAY_LOCAL_TOKEN=auto) closes that: requests must carry the
  token kept in <data folder>/local-token (mode 0600), and the URL printed at start holds it.
  For several users, set GATEWAY_AUTH_SECRET (at least 32 bytes) and mint tokens with
  `chat-gateway token --user NAME`, or point GATEWAY_AUTH_PUBLIC_KEY / GATEWAY_AUTH_JWKS_URL
  at your identity service. See docs/security.md.

servers:
  With no URLs, serve starts an embedded PostgreSQL and Valkey in the data folder (created on
  the first start) and records them in <data folder>/servers.json, where the other commands
  find them while it runs."""

_MAINTENANCE_EPILOG = """\
servers:
  The database (and Redis) come from --database-url / --redis-url or their variables, else
  from a serve running on the same data folder, else from the folder's embedded servers,
  started for the command and stopped after it. A folder where serve never ran is an error:
  this command never creates a database."""


def build_parser() -> argparse.ArgumentParser:
    """The parser; `args.command` names the command (None when none was given)."""
    parser = argparse.ArgumentParser(
        prog="chat-gateway",
        description="Real-time WebSocket chat gateway with PostgreSQL persistence.",
        epilog="Run `chat-gateway COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"chat-gateway {VERSION}")
    _add_shared(parser, default=None)
    shared = argparse.ArgumentParser(add_help=False)
    _add_shared(shared, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str, description: str, epilog: str | None = None,
                parents: tuple[argparse.ArgumentParser, ...] = (shared,),
                ) -> argparse.ArgumentParser:  # fmt: skip
        return sub.add_parser(
            name, help=summary, description=textwrap.fill(description, 78), epilog=epilog,
            parents=list(parents),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip

    serve = command(
        "serve",
        "run the gateway (HTTP, WebSocket, web UI) and the batch writer",
        "Run the gateway: the WebSocket endpoint /ws, the HTTP API under /api, the web UI at /"
        " and, unless --no-writer, the batch writer that moves buffered messages into"
        " PostgreSQL. Migrations are applied first.",
        _SERVE_EPILOG,
    )
    serve.add_argument(
        "--host", help=f"interface to bind (env GATEWAY_HOST; default {Settings.host})"
    )
    serve.add_argument(
        "--port", type=int,
        help=f"TCP port, 0 for any free one (env GATEWAY_PORT; default {Settings.port})",
    )  # fmt: skip
    serve.add_argument(
        "--workers", type=int,
        help=f"gateway processes (env GATEWAY_WORKERS; default {Settings.workers})",
    )  # fmt: skip
    serve.add_argument(
        "--no-writer", action="store_true",
        help="do not run the batch writer here; run `chat-gateway writer` instead"
        " (env GATEWAY_RUN_WRITER=0; default: the writer runs)",
    )  # fmt: skip
    serve.add_argument(
        "--local-token", action="store_const", const="auto",
        help="local mode with a token: require the token in <data folder>/local-token"
        " (created 0600 on first use) from every request (env GATEWAY_LOCAL_TOKEN=auto;"
        " default: off)",
    )  # fmt: skip

    command(
        "writer",
        "run only the batch writer (scale out: run several)",
        "Move buffered messages from Redis into PostgreSQL until Ctrl-C, then drain and stop."
        " Several writers share the work; a dead one's backlog passes to the others.",
        _MAINTENANCE_EPILOG,
    )

    mig = command(
        "migrate",
        "apply pending SQL migrations in order, or go up or down to a version, under a lock",
        "Apply the numbered SQL migrations not yet applied, in order, under an advisory lock,"
        " checking the checksums of those already applied. With --to N, go up or down to"
        " version N instead: undo the applied migrations above N with their down files"
        " (NNNN_name.down.sql), newest first, then apply the pending ones up to N. A down file"
        " whose first line is `-- loses data: ...` runs only with --allow-data-loss; without"
        " it nothing is changed. Stop the gateways before going down: serve applies every"
        " pending migration when it starts.",
        _MAINTENANCE_EPILOG,
    )
    mig_mode = mig.add_mutually_exclusive_group()
    mig_mode.add_argument(
        "--status", action="store_true",
        help="list migrations, when each was applied, and whether its down file keeps data,"
        " loses data or is missing; apply nothing",
    )  # fmt: skip
    mig_mode.add_argument(
        "--to", type=int, metavar="N",
        help="go up or down to version N; 0 undoes every migration (default: apply all pending,"
        " never go down)",
    )  # fmt: skip
    mig.add_argument(
        "--allow-data-loss", action="store_true",
        help="with --to: also run the down files that lose data (default: refuse, changing"
        " nothing)",
    )  # fmt: skip

    verify = command(
        "verify-counts",
        "recount sessions and messages; report (or --fix) counters that drifted",
        "Recount every session's messages and every user's sessions and messages, and report"
        " the kept counters that differ. Exits 1 when some drifted and --fix was not given.",
        _MAINTENANCE_EPILOG,
    )
    verify.add_argument("--fix", action="store_true", help="overwrite drifted counters")

    archive = command(
        "archive",
        "archive sessions inactive for a while, in batches",
        "Archive every active session with no message for longer than --older-than, a batch"
        " of sessions per transaction; live subscribers see each archive.",
        _MAINTENANCE_EPILOG,
    )
    archive.add_argument(
        "--older-than", required=True, help="inactivity that archives a session, like 30d"
    )
    archive.add_argument(
        "--batch", type=int, default=500, help="sessions per transaction (default 500)"
    )

    reindex = command(
        "reindex",
        "index for search every message missing from the index (safe while serving)",
        "Index for search every message missing from the search index or indexed by an older"
        " version, scanning the messages in key order. Safe while gateways run; a second run"
        " reports 0.",
        _MAINTENANCE_EPILOG,
    )
    reindex.add_argument(
        "--batch", type=int, default=5_000, help="messages scanned per statement (default 5000)"
    )
    add_transfer_commands(command, _MAINTENANCE_EPILOG)

    load = command(
        "loadtest",
        "offer load to a gateway and report what it acked, fanned out and persisted",
        "Open K IDE connections over P ports (and S subscribed UI tabs per port), send new"
        " user and assistant messages (with re-sends of some, which must come back duplicate,"
        " and edits growing the newest reply, which must come back updated) flat out or at a"
        " paced rate (open loop), for a count of frames or a time, then report what was"
        " offered, acked and refused, throughput and ack latency, fan-out latency and seq gaps"
        " at the tabs, ack-to-commit lag, and whether every acked message reached PostgreSQL"
        " (exit 1 if not, or if a tab missed or repeated a seq). Works against any gateway URL.",
        parents=(),
    )
    load.add_argument("url", metavar="URL", help="the gateway, like http://127.0.0.1:8000")
    for flag, kind, default, what in (
        ("--connections", int, 50, "IDE connections"),
        ("--ports", int, 10, "ports they spread over"),
        ("--subscribers", int, 0, "UI tabs subscribed to each port, checked for seq gaps"),
        ("--rate", float, 0.0, "frames per second over all connections; 0: flat out"),
        ("--in-flight", int, 10, "frames unanswered per connection when flat out"),
        ("--batch", int, 1, "messages per frame (more than 1: extracted batches)"),
        ("--resend-share", float, 0.1, "share of frames re-sent, to exercise dedup"),
        ("--edit-share", float, 0.0, "share of frames that grow the newest assistant reply"),
        ("--content-bytes", int, 300, "size of each message's content"),
        ("--persist-wait", float, 60.0, "seconds writers and tabs get to catch up at the end"),
    ):
        load.add_argument(flag, type=kind, default=default, help=f"{what} (default {default})")
    load.add_argument(
        "--messages", type=int, default=None,
        help="frames of new messages, over all connections (default 10000; not with --duration)",
    )  # fmt: skip
    load.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS",
        help="run for this long instead of for a count of frames; with --rate, rate x duration"
        " frames (default: none, a count; not with --messages)",
    )  # fmt: skip
    load.add_argument("--token", default="", help="a token for token-mode gateways (default: none)")
    load.add_argument(
        "--plot", type=Path, default=None, metavar="FILE.png",
        help="draw ack latency and throughput over time to this PNG (needs matplotlib; default:"
        " no plot)",
    )  # fmt: skip
    load.add_argument(
        "--no-persistence-check", action="store_true",
        help="read nothing through the HTTP API, for servers that have none: no persistence"
        " check and no commit lag (default: checked)",
    )  # fmt: skip
    load.add_argument("--json", action="store_true", help="print the report as one JSON object")

    token = command(
        "token",
        "print a signed token for a user (needs GATEWAY_AUTH_SECRET)",
        "Print an HS256 JWT for a user, signed with GATEWAY_AUTH_SECRET, with the `aud` and"
        " `iss` of GATEWAY_AUTH_AUDIENCE / GATEWAY_AUTH_ISSUER when they are set.",
        parents=(),
    )
    token.add_argument("--user", required=True, help="the user id the token speaks for")
    token.add_argument("--ttl", default="1d", help="lifetime, like 30m, 12h or 7d (default 1d)")
    token.add_argument(
        "--admin", action="store_true",
        help="with the admin claim: the user is an operator (the database health report)"
        " (default: a plain user)",
    )  # fmt: skip
    cli_health.add_parser(command, _MAINTENANCE_EPILOG)
    add_backup_parsers(command, _MAINTENANCE_EPILOG)  # backup, restore
    cli_purge.add_parser(command, _MAINTENANCE_EPILOG)
    return parser


def _default_data() -> str:
    """The platform's data folder as the user would type it (`~` for the home folder)."""
    folder, home = str(platform_data_dir()), str(Path.home())
    return "~" + folder.removeprefix(home) if folder.startswith(home + "/") else folder


def _add_shared(parser: argparse.ArgumentParser, *, default: object) -> None:
    """The options every command takes, before or after its name."""
    group = parser.add_argument_group("shared options (before or after the command)")
    group.add_argument(
        "--database-url", default=default,
        help="PostgreSQL URL (env GATEWAY_DATABASE_URL; default: embedded PostgreSQL)",
    )  # fmt: skip
    group.add_argument(
        "--redis-url", default=default,
        help="Redis URL (env GATEWAY_REDIS_URL; default: embedded Valkey)",
    )  # fmt: skip
    group.add_argument(
        "--data-dir", type=Path, default=default,
        help="where the embedded servers keep their data (env GATEWAY_DATA_DIR; default"
        f" ./.gateway-data if it exists, else {_default_data()})",
    )  # fmt: skip
    group.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default=default,
        help=f"(env GATEWAY_LOG_LEVEL; default {Settings.log_level})",
    )  # fmt: skip
    group.add_argument(
        "--log-format", choices=["text", "json"], default=default,
        help="text lines, or one JSON object per line (env GATEWAY_LOG_FORMAT;"
        f" default {Settings.log_format})",
    )  # fmt: skip
