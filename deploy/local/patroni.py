"""Postgres managed by Patroni (PyPI ``patroni``) with one etcd as its consensus store.

``PatroniCluster(state_dir, ports)`` renders, under ``state_dir``, the etcd configuration and one
Patroni configuration per member (YAML): N Postgres members (2 by default) on 127.0.0.1, one
primary and, with ``synchronous_mode``, one synchronous standby, so a commit is acknowledged
only once it is on two servers. Postgres is the ``pgserver`` wheel's (``pg_basebackup`` and
``pg_rewind`` included); etcd is Debian's ``etcd-server``. A crashed primary is failed over at
once (``primary_start_timeout: 0``) and rejoins as a standby (``pg_rewind``).

``render_for_compose(state_dir, role)`` renders the same configuration for the compose profile
``cluster`` (deploy/compose.yaml), where etcd and every member run in their own container.

Interface for the launchers:

- ``programs()``: supervisord ``Program``s for etcd and every Patroni member;
- ``start()`` / ``stop()`` (or ``with cluster:``): the same processes as children, for tests;
- ``kill_orphaned_postgres()``: after the Patroni processes are gone, any Postgres left behind;
- ``wait_ready(timeout)``: a primary and a streaming synchronous standby, and the database made;
- ``dsn``: the multi-host DSN services use (``target_session_attrs=read-write``);
- ``members()`` / ``primary()``: the cluster as Patroni's REST API reports it;
- ``measure_failover()``: kill -9 the primary's postmaster, return the seconds until a write
  commits on the promoted standby (and wait until the old primary is back as sync standby).

Credentials (superuser, replication, REST API) are generated into the state dir (0600) at the
first render and kept; every TCP login, replication included, is password-authenticated
(scram-sha-256) and only from 127.0.0.1. As root, Patroni (and so Postgres) runs in a user
namespace as uid 65534, like ``EmbeddedPostgres``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import asyncpg
import yaml

from deploy.local.embedded import (
    EmbeddedServerError,
    _Child,
    _privilege_drop_wrapper,
    find_postgres_bin_dir,
)
from deploy.local.environment import _secret
from deploy.local.ports import LOOPBACK, free_tcp_port
from deploy.local.supervision import Program

__all__ = [
    "DATABASE",
    "FailoverMeasure",
    "Member",
    "PatroniCluster",
    "PatroniPorts",
    "find_etcd",
    "render_for_compose",
]

DATABASE: Final = "fulcrum"
SCOPE: Final = "fulcrum"
SUPERUSER: Final = "postgres"
REPLICATION_USER: Final = "replicator"
# Patroni's timing: a member's HA loop runs every LOOP_WAIT s; the leader key lives TTL s
# (Patroni's minimum) when its holder disappears without releasing it.
TTL: Final = 20
LOOP_WAIT: Final = 1
RETRY_TIMEOUT: Final = 5
_POLL: Final = 0.2
_HTTP_TIMEOUT: Final = 2.0
_POSTGRES_PARAMETERS: Final[dict[str, Any]] = {
    "max_connections": 300,
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_level": "replica",
    "wal_log_hints": "on",
    "hot_standby": "on",
    "wal_keep_size": "128MB",
    "password_encryption": "scram-sha-256",
}
_PG_HBA: Final = [
    f"host replication {REPLICATION_USER} {LOOPBACK}/32 scram-sha-256",
    f"host all all {LOOPBACK}/32 scram-sha-256",
]


def find_etcd() -> Path:
    """The ``etcd`` binary on PATH (Debian ``etcd-server``); EmbeddedServerError when absent."""
    for directory in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]:
        candidate = Path(directory) / "etcd"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedServerError("etcd", "binary not found on PATH (apt-get install etcd-server)")


@dataclass(frozen=True)
class PatroniPorts:
    """Every port of one Patroni cluster on 127.0.0.1: etcd's, then per member its Postgres
    port and its REST API port (same order: member i is ``pg<i>``)."""

    etcd_client: int
    etcd_peer: int
    postgres: tuple[int, ...]
    restapi: tuple[int, ...]

    @classmethod
    def pick(cls, members: int = 2) -> PatroniPorts:
        """Free ports now (kernel-picked, all distinct)."""
        chosen: list[int] = []
        while len(chosen) < 2 + 2 * members:
            port = free_tcp_port()
            if port not in chosen:
                chosen.append(port)
        return cls(
            etcd_client=chosen[0],
            etcd_peer=chosen[1],
            postgres=tuple(chosen[2 : 2 + members]),
            restapi=tuple(chosen[2 + members :]),
        )


@dataclass(frozen=True)
class Member:
    """A member as Patroni reports it. ``role``: ``leader``, ``sync_standby`` or ``replica``;
    ``state``: ``running`` (primary), ``streaming`` (standby), ``stopped``, ``starting``..."""

    name: str
    role: str
    state: str
    port: int
    api_url: str
    timeline: int | None = None

    @property
    def is_primary(self) -> bool:
        return self.role == "leader" and self.state == "running"


class PatroniCluster:
    """etcd plus ``len(ports.postgres)`` Patroni members, configured under ``state_dir``.

    Layout: ``etcd.yaml``, ``etcd/`` (its data), ``pg<i>/patroni.yaml``, ``pg<i>/data``,
    ``logs/``, and the password files. Constructing it renders nothing; ``programs()`` and
    ``start()`` render the configs (idempotent: passwords are kept, ports are those given).
    """

    def __init__(
        self,
        state_dir: Path,
        ports: PatroniPorts | None = None,
        *,
        bin_dir: Path | None = None,
        database: str = DATABASE,
        stop_timeout: float = 30.0,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.ports = ports if ports is not None else PatroniPorts.pick()
        if len(self.ports.postgres) != len(self.ports.restapi) or not self.ports.postgres:
            raise ValueError(f"one postgres and one REST port per member: {self.ports}")
        self.database = database
        self.log_dir = self.state_dir / "logs"
        self._bin_dir = bin_dir
        self._stop_timeout = stop_timeout
        self._children: list[_Child] = []

    # --- configuration ---------------------------------------------------------------------

    @property
    def member_names(self) -> list[str]:
        return [f"pg{i}" for i in range(len(self.ports.postgres))]

    def member_dir(self, name: str) -> Path:
        return self.state_dir / name

    def data_dir(self, name: str) -> Path:
        return self.member_dir(name) / "data"

    @property
    def etcd_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.etcd_client}"

    def _password(self, name: str) -> str:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return _secret(self.state_dir, name)

    @property
    def superuser_password(self) -> str:
        return self._password("postgres.password")

    @property
    def dsn(self) -> str:
        """The services' DSN: every member, ``target_session_attrs=read-write``."""
        return self.database_dsn(self.database)

    @property
    def admin_dsn(self) -> str:
        """The multi-host DSN of the ``postgres`` database (for creating databases)."""
        return self.database_dsn("postgres")

    def database_dsn(self, database: str) -> str:
        hosts = ",".join(f"{LOOPBACK}:{port}" for port in self.ports.postgres)
        return (
            f"postgresql://{SUPERUSER}:{self.superuser_password}@{hosts}/{database}"
            "?target_session_attrs=read-write"
        )

    def member_dsn(self, name: str, database: str | None = None) -> str:
        """A DSN of one member only (whatever its role)."""
        port = self.ports.postgres[self.member_names.index(name)]
        db = database or self.database
        return f"postgresql://{SUPERUSER}:{self.superuser_password}@{LOOPBACK}:{port}/{db}"

    def etcd_config(self) -> dict[str, Any]:
        """etcd's configuration (``etcd --config-file``): one node, loopback only."""
        peer = f"http://{LOOPBACK}:{self.ports.etcd_peer}"
        return {
            "name": "etcd0",
            "data-dir": str(self.state_dir / "etcd"),
            "listen-client-urls": self.etcd_url,
            "advertise-client-urls": self.etcd_url,
            "listen-peer-urls": peer,
            "initial-advertise-peer-urls": peer,
            "initial-cluster": f"etcd0={peer}",
            "initial-cluster-state": "new",
            "initial-cluster-token": f"{SCOPE}-patroni",
            "enable-v2": False,
            # The config file's default is off (the command line's is on): Patroni speaks HTTP/JSON.
            "enable-grpc-gateway": True,
            "logger": "zap",
            "log-outputs": ["stderr"],
        }

    def patroni_config(self, name: str) -> dict[str, Any]:
        """The Patroni configuration of member ``name`` (pure but for the kept passwords)."""
        index = self.member_names.index(name)
        pg_port = self.ports.postgres[index]
        api_port = self.ports.restapi[index]
        bin_dir = self._bin_dir if self._bin_dir is not None else find_postgres_bin_dir()
        return {
            "scope": SCOPE,
            "namespace": "/fulcrum/",
            "name": name,
            "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
            "restapi": {
                "listen": f"{LOOPBACK}:{api_port}",
                "connect_address": f"{LOOPBACK}:{api_port}",
                "authentication": {
                    "username": "patroni",
                    "password": self._password("patroni-api.password"),
                },
            },
            "etcd3": {"hosts": [f"{LOOPBACK}:{self.ports.etcd_client}"], "protocol": "http"},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL,
                    "loop_wait": LOOP_WAIT,
                    "retry_timeout": RETRY_TIMEOUT,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": True,
                    "primary_start_timeout": 0,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": dict(_POSTGRES_PARAMETERS),
                    },
                },
                "initdb": [
                    {"encoding": "UTF8"},
                    {"locale": "C"},
                    {"auth-host": "scram-sha-256"},
                    {"auth-local": "scram-sha-256"},
                ],
            },
            "postgresql": {
                "listen": f"{LOOPBACK}:{pg_port}",
                "connect_address": f"{LOOPBACK}:{pg_port}",
                "data_dir": str(self.data_dir(name)),
                "bin_dir": str(bin_dir),
                "pgpass": str(self.member_dir(name) / "pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": self.superuser_password},
                    "replication": {
                        "username": REPLICATION_USER,
                        "password": self._password("replication.password"),
                    },
                    "rewind": {"username": SUPERUSER, "password": self.superuser_password},
                },
                # No unix socket: every login is TCP on loopback with a password.
                "parameters": {"unix_socket_directories": ""},
                "pg_hba": list(_PG_HBA),
                "basebackup": [{"checkpoint": "fast"}],
            },
            "watchdog": {"mode": "off"},
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
        }

    def render(self) -> None:
        """Write ``etcd.yaml`` and every ``pg<i>/patroni.yaml`` (0600: they hold passwords)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        _write_private(self.state_dir / "etcd.yaml", yaml.safe_dump(self.etcd_config()))
        for name in self.member_names:
            self.member_dir(name).mkdir(mode=0o700, exist_ok=True)
            _write_private(self._patroni_file(name), yaml.safe_dump(self.patroni_config(name)))

    def _patroni_file(self, name: str) -> Path:
        return self.member_dir(name) / "patroni.yaml"

    def etcd_command(self) -> list[str]:
        return [str(find_etcd()), "--config-file", str(self.state_dir / "etcd.yaml")]

    def patroni_command(self, name: str) -> list[str]:
        """Patroni of member ``name``; as root inside the uid-65534 user namespace (which
        execs Patroni, so the pid is Patroni's)."""
        patroni = Path(sys.executable).parent / "patroni"
        return [*_privilege_drop_wrapper(), str(patroni), str(self._patroni_file(name))]

    # --- supervised (fulcrum up-cluster) ---------------------------------------------------

    def programs(self, prefix: str = "") -> list[Program]:
        """Render the configs; supervisord programs ``<prefix>etcd`` and ``<prefix>pg<i>``.

        etcd starts first (priority); a Patroni member waiting for etcd retries on its own.
        Stopping a member (TERM) stops its Postgres first (``stop_wait`` covers it).
        """
        self.render()
        programs = [
            Program(
                name=f"{prefix}etcd",
                command=self.etcd_command(),
                log_file=self.log_dir / "etcd.log",
                priority=10,
                startsecs=1,
            )
        ]
        for name in self.member_names:
            programs.append(
                Program(
                    name=f"{prefix}{name}",
                    command=self.patroni_command(name),
                    log_file=self.log_dir / f"{name}.log",
                    environment=_patroni_environment(),
                    priority=20,
                    stop_wait=self._stop_timeout,
                    startsecs=3,
                )
            )
        return programs

    # --- children (tests, benches) ---------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Render, start etcd and every member as children, and ``wait_ready(timeout)``.

        Raises EmbeddedServerError (with the logs' tails) when a process dies or the cluster is
        not ready in time; whatever was started is stopped then.
        """
        if self._children:
            return
        self.render()
        try:
            etcd = _Child(
                "etcd",
                self.log_dir / "etcd.log",
                stop_signal=signal.SIGTERM,
                stop_timeout=10.0,
                die_with_parent=True,
            )
            self._children.append(etcd)
            etcd.spawn(self.etcd_command())
            for name in self.member_names:
                child = _Child(
                    f"patroni {name}",
                    self.log_dir / f"{name}.log",
                    stop_signal=signal.SIGTERM,
                    stop_timeout=self._stop_timeout,
                    die_with_parent=True,
                )
                self._children.append(child)
                child.spawn(self.patroni_command(name))
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every member (TERM: Patroni stops its Postgres), then etcd; no-op when stopped.

        A Postgres left behind by a Patroni killed hard is killed by its ``postmaster.pid``."""
        children, self._children = self._children, []
        members = [c for c in children if c.name.startswith("patroni")]
        for child in members:
            if child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        for child in members:
            child.stop()
        self.kill_orphaned_postgres()
        for child in children:
            child.stop()

    def kill_orphaned_postgres(self) -> list[int]:
        """SIGKILL every member's postmaster still running (by ``postmaster.pid``); for after
        the Patroni processes are gone (a Patroni killed hard leaves its Postgres running).
        Returns the pids killed."""
        killed = []
        for name in self.member_names:
            pid = self.postmaster_pid(name)
            if pid is not None:
                _kill(pid)
                killed.append(pid)
        return killed

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

    # --- observation -----------------------------------------------------------------------

    def members(self) -> list[Member]:
        """The members as the first answering member's REST API (``GET /cluster``) lists
        them; empty when none answers."""
        for port in self.ports.restapi:
            try:
                with urllib.request.urlopen(
                    f"http://{LOOPBACK}:{port}/cluster", timeout=_HTTP_TIMEOUT
                ) as response:
                    body = json.loads(response.read())
            except (OSError, ValueError):
                continue
            return [
                Member(
                    name=m["name"],
                    role=m.get("role", ""),
                    state=m.get("state", ""),
                    port=int(m.get("port", 0)),
                    api_url=m.get("api_url", ""),
                    timeline=m.get("timeline"),
                )
                for m in body.get("members", [])
            ]
        return []

    def primary(self) -> Member | None:
        """The running primary, or None (none elected, or no REST API answering)."""
        return next((m for m in self.members() if m.is_primary), None)

    def postmaster_pid(self, name: str) -> int | None:
        """Pid of member ``name``'s running postmaster (from ``postmaster.pid``), else None."""
        try:
            pid = int((self.data_dir(name) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid

    def healthy(self) -> bool:
        """A running primary and every other member a streaming synchronous standby or
        replica, with at least one synchronous standby."""
        members = self.members()
        if len(members) != len(self.member_names):
            return False
        primaries = [m for m in members if m.is_primary]
        sync = [m for m in members if m.role == "sync_standby" and m.state == "streaming"]
        others = [m for m in members if not m.is_primary]
        return (
            len(primaries) == 1
            and (len(members) == 1 or bool(sync))
            and all(m.state == "streaming" for m in others)
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until ``healthy()``, then make the database if missing.

        Raises EmbeddedServerError with the logs' tails after ``timeout`` s, or at once when a
        child process (``start()``) has died.
        """
        deadline = time.monotonic() + timeout
        while not self.healthy():
            for child in self._children:
                child.check_alive()
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    "patroni",
                    f"no primary with a streaming sync standby after {timeout} s: {self.members()}",
                    log_tail=self.log_tails(),
                )
            time.sleep(_POLL)
        _run_async(self._ensure_database(max(deadline, time.monotonic() + 5.0)))

    async def _ensure_database(self, deadline: float) -> None:
        """Create the database on the primary, then wait until every member serves it: asyncpg
        stops at the first host of a multi-host DSN that refuses the database (a standby yet
        to replay its creation) instead of trying the next one."""
        conn = await asyncpg.connect(self.admin_dsn, timeout=_HTTP_TIMEOUT)
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()
        for name in self.member_names:
            while True:
                try:
                    conn = await asyncpg.connect(self.member_dsn(name), timeout=_HTTP_TIMEOUT)
                except (OSError, asyncpg.PostgresError) as exc:
                    if time.monotonic() > deadline:
                        raise EmbeddedServerError(
                            "patroni", f"{name} does not serve {self.database}: {exc!r}"
                        ) from exc
                    await asyncio.sleep(0.05)
                    continue
                await conn.close()
                break

    def log_tails(self, size: int = 2000) -> str:
        """The end of every log of this cluster (for failure messages)."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            text = log.read_bytes()[-size:].decode(errors="replace")
            parts.append(f"--- {log.name} ---\n{text}")
        return "\n".join(parts)

    # --- failover ----------------------------------------------------------------------------

    def kill_primary_postgres(self) -> str:
        """kill -9 the primary's postmaster (its backends exit with it); return its name."""
        primary = self.primary()
        if primary is None:
            raise EmbeddedServerError("patroni", f"no primary to kill: {self.members()}")
        pid = self.postmaster_pid(primary.name)
        if pid is None:
            raise EmbeddedServerError("patroni", f"no postmaster.pid for {primary.name}")
        os.kill(pid, signal.SIGKILL)
        return primary.name

    async def measure_failover(self, limit: float = 60.0) -> FailoverMeasure:
        """Kill the primary's postmaster; return the seconds until a write commits again on
        the multi-host DSN, and how long until the cluster was healthy again (old primary
        back as synchronous standby). Raises TimeoutError past ``limit`` s."""
        killed = self.kill_primary_postgres()
        started = time.monotonic()
        deadline = started + limit
        while True:
            try:
                conn = await asyncpg.connect(self.admin_dsn, timeout=_HTTP_TIMEOUT)
                try:
                    await conn.execute("SELECT txid_current()")
                finally:
                    await conn.close()
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no writable primary {limit} s after the kill") from None
                await asyncio.sleep(0.05)
        window = time.monotonic() - started
        while not await asyncio.to_thread(self.healthy):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{killed} not back as standby {limit} s after the kill")
            await asyncio.sleep(_POLL)
        primary = await asyncio.to_thread(self.primary)
        return FailoverMeasure(
            killed=killed,
            promoted=primary.name if primary else "",
            window=window,
            healed=time.monotonic() - started,
        )


# The compose profile `cluster`: etcd and every member in its own container, on the default
# ports, each addressed by its service name (etcd, pg0, pg1...) on the compose network.
COMPOSE_ETCD: Final = "etcd"
COMPOSE_POSTGRES_PORT: Final = 5432
COMPOSE_RESTAPI_PORT: Final = 8008
_COMPOSE_ETCD_PORTS: Final = (2379, 2380)
_ANY: Final = "0.0.0.0"


def render_for_compose(state_dir: Path, role: str, members: int = 2) -> Path:
    """Write the configuration of ``role`` (``etcd`` or a member ``pg<i>``) of the compose
    profile under ``state_dir`` and return its path; the same settings as ``PatroniCluster``
    but for addresses: every server listens on all interfaces and is advertised by service
    name; logins (password-authenticated) come from the compose network only (``samenet``:
    the subnets the member's container is attached to).
    Passwords are the files of ``state_dir`` (the deployment's secrets copied there)."""
    cluster = PatroniCluster(
        state_dir,
        PatroniPorts(
            *_COMPOSE_ETCD_PORTS,
            postgres=(COMPOSE_POSTGRES_PORT,) * members,
            restapi=(COMPOSE_RESTAPI_PORT,) * members,
        ),
    )
    cluster.state_dir.mkdir(parents=True, exist_ok=True)
    if role == COMPOSE_ETCD:
        client_port, peer_port = _COMPOSE_ETCD_PORTS
        peer = f"http://{COMPOSE_ETCD}:{peer_port}"
        config = cluster.etcd_config() | {
            "listen-client-urls": f"http://{_ANY}:{client_port}",
            "advertise-client-urls": f"http://{COMPOSE_ETCD}:{client_port}",
            "listen-peer-urls": f"http://{_ANY}:{peer_port}",
            "initial-advertise-peer-urls": peer,
            "initial-cluster": f"etcd0={peer}",
        }
        path = cluster.state_dir / "etcd.yaml"
    else:
        config = cluster.patroni_config(role)
        config["restapi"] |= {
            "listen": f"{_ANY}:{COMPOSE_RESTAPI_PORT}",
            "connect_address": f"{role}:{COMPOSE_RESTAPI_PORT}",
        }
        config["etcd3"]["hosts"] = [f"{COMPOSE_ETCD}:{_COMPOSE_ETCD_PORTS[0]}"]
        config["postgresql"] |= {
            "listen": f"{_ANY}:{COMPOSE_POSTGRES_PORT}",
            "connect_address": f"{role}:{COMPOSE_POSTGRES_PORT}",
            "pg_hba": [rule.replace(f"{LOOPBACK}/32", "samenet") for rule in _PG_HBA],
        }
        cluster.member_dir(role).mkdir(mode=0o700, exist_ok=True)
        path = cluster._patroni_file(role)
    _write_private(path, yaml.safe_dump(config))
    return path


@dataclass(frozen=True)
class FailoverMeasure:
    """One failover: the member killed, the one promoted, seconds until writes commit again
    (``window``) and until the killed one was a synchronous standby again (``healed``)."""

    killed: str
    promoted: str
    window: float
    healed: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _patroni_environment() -> dict[str, str]:
    # PG* variables of the launcher's environment would steer Patroni's libpq connections.
    return {"PYTHONUNBUFFERED": "1"}


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _run_async(coro: Any) -> None:
    """Run ``coro`` to completion from synchronous code, also inside a running loop (a
    private loop on a short-lived thread then)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="patroni") as pool:
        pool.submit(asyncio.run, coro).result()
