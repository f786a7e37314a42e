"""Which PostgreSQL and Redis a command uses, said in the log exactly as it is.

Each URL comes from the first of:
1. the operator: `GATEWAY_DATABASE_URL` / `GATEWAY_REDIS_URL` or their flags;
2. a running `serve` on the same data folder, which records the URLs of its embedded servers
   and its PID in `<data>/servers.json` while it runs;
3. embedded servers started for this command from the data folder, and stopped on exit.

Only `serve` creates a cluster. A maintenance command (migrate, verify-counts, archive,
reindex, writer) run where no cluster exists says where it looked instead of creating an
empty one and failing on a missing table. A `servers.json` whose PID is gone (a killed
`serve`) is named in the log and ignored. Every URL not started here is probed first
(gateway/preflight.py), so a typo is one line, not a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.preflight import PreflightError, check_database_url, check_redis_url, masked
from gateway.settings import Settings
from storage.embedded import (
    embedded_postgres,
    embedded_redis,
    has_postgres_cluster,
    has_valkey_data,
    write_private_file,
)

log = logging.getLogger("chat_gateway")

SERVERS_FILE = "servers.json"


@dataclass(frozen=True)
class RecordedServers:
    """What a running `serve` wrote to `servers.json`: its PID and its embedded servers' URLs."""

    pid: int
    database_url: str
    redis_url: str


def running_serve(data_dir: Path) -> RecordedServers | None:
    """The `serve` recorded in `data_dir`, if its process still runs; a stale record (its
    process gone, or written by a version that recorded no PID) is logged and ignored."""
    path = data_dir / SERVERS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: unreadable (%s)", path, exc)
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    if not isinstance(pid, int) or not _process_exists(pid):
        log.warning(
            "ignoring %s: the serve that wrote it (PID %s) is no longer running; removed",
            path, pid,
        )  # fmt: skip
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return RecordedServers(pid, str(data.get("database_url", "")), str(data.get("redis_url", "")))


def check_folder_free(settings: Settings) -> None:
    """Raise if a running serve already keeps its embedded servers in this data folder and
    this serve would start its own there too (two clusters cannot share one folder)."""
    recorded = running_serve(settings.data_dir)
    if recorded and not (settings.database_url and settings.redis_url):
        raise PreflightError(
            f"another serve (PID {recorded.pid}) uses this folder"
            f" ({settings.data_dir.absolute()}): stop it, or give this one its own --data-dir"
        )


@contextlib.contextmanager
def servers_for(
    settings: Settings,
    *,
    serve: bool,
    redis: bool = True,
    labels: Mapping[str, str] | None = None,
) -> Iterator[Settings]:
    """`settings` with the URLs the command uses, after logging where each comes from.

    `serve=True` starts embedded servers for the URLs not given (creating a cluster on the
    first start) and records them; its caller has run `check_folder_free` first (before
    its port checks, so a second serve on the folder is named as such). Otherwise the
    command takes a running serve's servers, or starts the data folder's existing ones.
    `redis=False`: the command needs no Redis.
    `labels` names how each URL was set when not by its variable (a flag). Raises
    `PreflightError` before anything starts when a URL is bad or nothing can be found.
    """
    data_dir = settings.data_dir
    names = {"database_url": "GATEWAY_DATABASE_URL", "redis_url": "GATEWAY_REDIS_URL"}
    names.update({k: v for k, v in (labels or {}).items() if k in names})
    # A serve never shares another's servers; the other commands use a running serve's.
    recorded = None if serve else running_serve(data_dir)
    wanted = ("database_url", "redis_url") if redis else ("database_url",)
    urls: dict[str, str] = {}
    start: list[str] = []
    for name in wanted:
        given = getattr(settings, name)
        if given:
            _probe(name, names[name], given)
            log.info("%s: %s=%s", _WHAT[name], names[name], masked(given))
            urls[name] = given
        elif recorded and getattr(recorded, name):
            _probe(name, f"the {_WHAT[name]} of serve PID {recorded.pid}", getattr(recorded, name))
            log.info(
                "%s: the embedded %s of the serve running in %s (PID %d)",
                _WHAT[name], _SERVER[name], data_dir, recorded.pid,
            )  # fmt: skip
            urls[name] = getattr(recorded, name)
        else:
            if not serve:
                _require_existing(name, data_dir, names[name])
            start.append(name)
    with contextlib.ExitStack() as stack:
        for name in start:
            folder = data_dir / _FOLDER[name]
            log.info(
                "%s: embedded %s in %s, started for this command and stopped on exit",
                _WHAT[name], _SERVER[name], folder,
            )  # fmt: skip
            opened = embedded_postgres if name == "database_url" else embedded_redis
            urls[name] = stack.enter_context(opened(folder))
        resolved = dataclasses.replace(
            settings,
            database_url=urls["database_url"],
            redis_url=urls.get("redis_url", settings.redis_url),
        )
        if serve and start:
            stack.enter_context(_recorded(data_dir, resolved))
        yield resolved


_WHAT = {"database_url": "database", "redis_url": "redis"}
_SERVER = {"database_url": "PostgreSQL", "redis_url": "Valkey"}
_FOLDER = {"database_url": "postgres", "redis_url": "redis"}


def _probe(name: str, label: str, url: str) -> None:
    check = check_database_url if name == "database_url" else check_redis_url
    check(label, url)


def _require_existing(name: str, data_dir: Path, variable: str) -> None:
    folder = data_dir / _FOLDER[name]
    present = has_postgres_cluster if name == "database_url" else has_valkey_data
    if not present(folder):
        raise PreflightError(
            f"no {_WHAT[name]}: {variable} is not set, no serve is running in"
            f" {data_dir.absolute()}, and {folder.absolute()} holds no embedded {_SERVER[name]}"
            f" data; run this where `chat-gateway serve` ran, pass --data-dir, or set {variable}"
        )


@contextlib.contextmanager
def _recorded(data_dir: Path, settings: Settings) -> Iterator[None]:
    """`servers.json` for the other commands while this serve runs (0600: it holds passwords)."""
    path = data_dir / SERVERS_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": os.getpid(),
        "database_url": settings.database_url,
        "redis_url": settings.redis_url,
    }
    write_private_file(path, json.dumps(record))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another account's process: it exists
        return True
    return pid != os.getpid()
