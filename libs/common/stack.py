"""``fulcrum up``, ``status`` and ``down``: the whole stack on one machine, the embedded default.

``up`` picks the ports (a configured API port, else 9876 when free, else any free port; every
other port free-picked and kept in ``ports.json`` for the next start), prepares Postgres and
NATS, and hands Postgres, NATS and the four services (api, provisioner, health, housekeeping)
to supervisord (``supervision.py``), which restarts whatever crashes. It waits until every
part is ready, writes ``endpoint.txt``, ``clouds.yaml`` and ``ready``, then watches and reports
give-ups until SIGTERM/SIGINT, when it stops supervisord (services first, then NATS and
Postgres) and the amphorae.

Amphorae are nobody's children: the process driver starts them in sessions of their own, so
a crash of any service, of supervisord or of ``up`` itself leaves every VIP serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

import asyncpg

from libs.common.embedded import (
    LOOPBACK,
    EmbeddedNats,
    EmbeddedPostgres,
    free_tcp_port,
    free_udp_port,
)
from libs.common.errors import FulcrumError
from libs.common.secretstore import new_key
from libs.common.settings import default_subnets
from libs.common.supervision import (
    FATAL,
    Program,
    SupervisorClient,
    SupervisorUnreachable,
    read_restarts,
    render_config,
)

SERVICES: Final = ("api", "provisioner", "health", "housekeeping")
SERVERS: Final = ("postgres", "nats")
DEFAULT_API_PORT: Final = 9876
READY_TIMEOUT: Final = 120.0
# How long a client command waits for an answer before it says the server is unreachable.
CONNECT_TIMEOUT: Final = 3.0


class StackError(Exception):
    """The stack cannot start or be reached; the message is one line for the user."""


@dataclass
class StackPorts:
    """Every port of one stack; all on 127.0.0.1 (``health_udp`` is UDP)."""

    api: int
    postgres: int
    nats: int
    nats_monitor: int
    provisioner: int
    health: int
    housekeeping: int
    health_udp: int
    # VIPs of this stack come from 127.<vip_octet>.0.0/16: stacks side by side never share one.
    vip_octet: int = 77

    def service_port(self, name: str) -> int:
        port: int = getattr(self, name)
        return port


@dataclass
class StackPaths:
    """Where one stack keeps its files (all under ``state``)."""

    state: Path

    @property
    def ports(self) -> Path:
        return self.state / "ports.json"

    @property
    def supervisor_conf(self) -> Path:
        return self.state / "supervisord.conf"

    @property
    def supervisor_pid(self) -> Path:
        return self.state / "supervisord.pid"

    @property
    def restarts(self) -> Path:
        return self.state / "restarts.json"

    @property
    def supervisor_socket(self) -> str:
        wanted = self.state / "supervisor.sock"
        if len(str(wanted)) <= 100:  # AF_UNIX paths are short
            return str(wanted)
        digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:16]
        return f"{tempfile.gettempdir()}/fulcrum-supervisor-{digest}.sock"

    def log(self, name: str) -> Path:
        if name == "postgres":
            return self.state / "postgres" / "postgres.log"
        if name == "nats":
            return self.state / "nats" / "nats-server.log"
        return self.state / f"{name}.log"


def _secret(state: Path, name: str, make: Callable[[], str] | None = None) -> str:
    """A per-deployment secret kept in the state dir (created at first start)."""
    path = state / name
    if not path.exists():
        path.write_text(make() if make is not None else secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def service_environment(
    state: Path, pg_dsn: str, nats_url: str, ports: StackPorts
) -> dict[str, dict[str, str]]:
    """The FULCRUM_* environment of each service for this deployment."""
    heartbeat_key = _secret(state, "heartbeat.key")
    secret_keys = _secret(state, "secret.keys", new_key)
    api_url = f"http://{LOOPBACK}:{ports.api}"
    common = {
        "POSTGRES__DSN": pg_dsn,
        "NATS__URL": nats_url,
    }
    env: dict[str, dict[str, str]] = {
        "api": {
            **common,
            "PORT": str(ports.api),
            "PUBLIC_URL": api_url,
            "AUTH_STRATEGY": "keystone",
            "IDENTITY_FILE": str(state / "identity.yaml"),
            "ADMIN_PASSWORD": _secret(state, "admin.password"),
            "TOKEN_KEY": _secret(state, "token.key"),
            "ADMIN_TOKEN": _secret(state, "admin.token"),
            "SECRET_KEYS": secret_keys,
            "NETWORK__SUBNETS": json.dumps(vip_subnets(ports.vip_octet)),
        },
        "provisioner": {
            **common,
            "PORT": str(ports.provisioner),
            "STATE_DIR": str(state / "amphorae"),
            "CA_DIR": str(state / "ca"),
            "HEARTBEAT_KEY": heartbeat_key,
            "HEALTH_ENDPOINTS": f'["{LOOPBACK}:{ports.health_udp}"]',
            "SECRET_KEYS": secret_keys,
        },
        "health": {
            **common,
            "PORT": str(ports.health),
            "HEARTBEAT_KEY": heartbeat_key,
            "UDP_PORT": str(ports.health_udp),
        },
        "housekeeping": {
            **common,
            "PORT": str(ports.housekeeping),
            # Two booted spares: a new LB takes one instead of waiting for a boot.
            "SPARES__POOL_SIZE": "2",
            "CERTIFICATES__CA_CERT": str(state / "ca" / "ca.pem"),
        },
    }
    return {
        svc: {f"FULCRUM_{svc.upper()}_{k}": v for k, v in values.items()}
        for svc, values in env.items()
    }


def write_clouds_yaml(state: Path, api_url: str) -> Path:
    """A clouds.yaml the real ``openstack`` CLI and openstacksdk can use at once: cloud
    ``fulcrum`` (Keystone password of the bootstrap admin) and ``fulcrum-admin-token``."""
    path = state / "clouds.yaml"
    path.write_text(
        "clouds:\n"
        "  fulcrum:\n"
        "    auth_type: password\n"
        "    auth:\n"
        f"      auth_url: {api_url}/v3\n"
        "      username: admin\n"
        f"      password: {_secret(state, 'admin.password')}\n"
        "      project_name: admin\n"
        "      user_domain_name: Default\n"
        "      project_domain_name: Default\n"
        "    region_name: RegionOne\n"
        "    interface: public\n"
        "    identity_api_version: 3\n"
        "  fulcrum-admin-token:\n"
        "    auth_type: admin_token\n"
        "    auth:\n"
        f"      token: {_secret(state, 'admin.token')}\n"
        f"      endpoint: {api_url}\n"
        "    region_name: RegionOne\n"
    )
    path.chmod(0o600)
    return path


def stop_amphorae(state: Path, timeout: float = 15.0) -> None:
    """Stop every amphora the process driver started under ``state``, and its zygote: SIGTERM
    by pid (an agent stops its HAProxy), then SIGKILL of the session of any still running
    after ``timeout`` seconds."""
    pids = []
    for pid_file in [
        *(state / "amphorae").glob("*/agent.pid"),
        *(state / "amphorae").glob(".zygote/zygote.pid"),
    ]:
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            continue
        pids.append(pid)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _running(pid)]
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)  # agents lead their own session, HAProxy with them


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- ports -------------------------------------------------------------------------------------


def _port_free(kind: socket.SocketKind, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _tcp_free(port: int) -> bool:
    return _port_free(socket.SOCK_STREAM, port)


def _udp_free(port: int) -> bool:
    return _port_free(socket.SOCK_DGRAM, port)


def choose_ports(paths: StackPaths, api_port: int | None) -> StackPorts:
    """This start's ports: ``api_port`` when given (it must be free; 0: any free port), else
    the last start's ports where still free, else 9876 for the API when free, else
    kernel-picked free ports."""
    try:
        saved: dict[str, int] = json.loads(paths.ports.read_text())
    except (OSError, ValueError):
        saved = {}
    taken: set[int] = set()

    def pick(name: str, free: Callable[[int], bool], fresh: Callable[[], int]) -> int:
        for candidate in (saved.get(name), DEFAULT_API_PORT if name == "api" else None):
            if candidate and candidate not in taken and free(candidate):
                taken.add(candidate)
                return candidate
        port = fresh()
        while port in taken:
            port = fresh()
        taken.add(port)
        return port

    if api_port is None:
        api = pick("api", _tcp_free, free_tcp_port)
    elif api_port == 0:
        api = pick("any", _tcp_free, free_tcp_port)  # no saved port by that name: a fresh one
    else:
        if not _tcp_free(api_port):
            raise StackError(f"port {api_port} on {LOOPBACK} is in use (--port 0: any free)")
        taken.add(api_port)
        api = api_port
    ports = StackPorts(
        api=api,
        postgres=pick("postgres", _tcp_free, free_tcp_port),
        nats=pick("nats", _tcp_free, free_tcp_port),
        nats_monitor=pick("nats_monitor", _tcp_free, free_tcp_port),
        provisioner=pick("provisioner", _tcp_free, free_tcp_port),
        health=pick("health", _tcp_free, free_tcp_port),
        housekeeping=pick("housekeeping", _tcp_free, free_tcp_port),
        health_udp=pick("health_udp", _udp_free, free_udp_port),
        vip_octet=_vip_octet(saved.get("vip_octet"), paths.state),
    )
    paths.ports.write_text(json.dumps(asdict(ports), indent=1))
    return ports


def _loopback_listener_octets() -> set[int]:
    """Second octets of the 127.x addresses something listens on (TCP) or is bound to (UDP)."""
    octets = set()
    for table in ("/proc/net/tcp", "/proc/net/udp"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            address = line.split()[1].split(":")[0]  # little-endian hex: 0100007F = 127.0.0.1
            if address[6:8] == "7F":
                octets.add(int(address[4:6], 16))
    return octets


# Claims of VIP ranges by the stacks of this host: ``127.<N>`` holds the claimant's state dir.
VIP_CLAIMS: Final = Path(tempfile.gettempdir()) / "fulcrum-vip-ranges"


def _claimed_by_another(octet: int, state: Path) -> bool:
    try:
        claimant = Path((VIP_CLAIMS / f"127.{octet}").read_text().strip())
    except OSError:
        return False
    return claimant != state and _pid_alive(claimant / "supervisord.pid") is not None


def _vip_octet(saved: int | None, state: Path) -> int:
    """This stack's VIP range 127.<N>.0.0/16: the last start's, else the first of 77-126 that
    no running stack claims and nothing listens in (127.0 is everyone's loopback); claimed in
    ``VIP_CLAIMS`` for this state dir."""
    used = _loopback_listener_octets()
    VIP_CLAIMS.mkdir(exist_ok=True)
    for octet in (saved, *range(77, 127)):
        if not octet or _claimed_by_another(octet, state):
            continue
        if octet in used and octet != saved:
            continue
        (VIP_CLAIMS / f"127.{octet}").write_text(str(state))
        return int(octet)
    raise StackError("every VIP range 127.77-127.126.0.0/16 is taken; stop a stack first")


def vip_subnets(octet: int) -> list[dict[str, Any]]:
    """The embedded default subnet (``public-subnet``) on 127.<octet>.0.0/16."""
    (subnet,) = default_subnets()
    return [
        subnet.model_copy(
            update={
                "cidr": f"127.{octet}.0.0/16",
                "allocation_start": f"127.{octet}.0.10",
                "allocation_end": f"127.{octet}.255.250",
            }
        ).model_dump()
    ]


def load_ports(paths: StackPaths) -> StackPorts:
    """The ports of the stack under ``paths`` (StackError when it never started)."""
    try:
        return StackPorts(**json.loads(paths.ports.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise StackError(f"no stack under {paths.state} ({paths.ports} unreadable)") from exc


def _dsn(ports: StackPorts) -> str:
    return f"postgresql://postgres@{LOOPBACK}:{ports.postgres}/postgres"


def _nats_url(ports: StackPorts) -> str:
    return f"nats://{LOOPBACK}:{ports.nats}"


# -- status ------------------------------------------------------------------------------------


@dataclass
class PartStatus:
    """One supervised part: a service, Postgres or NATS."""

    name: str
    state: str
    pid: int | None
    uptime: float
    restarts: int
    crashes: int
    ready: bool
    detail: str = ""


@dataclass
class StackStatus:
    """Everything ``fulcrum status`` shows; ``ready`` only when every part is ready."""

    state_dir: str
    supervisor_pid: int | None
    ports: dict[str, int]
    parts: list[PartStatus] = field(default_factory=list)
    outbox_backlog: int | None = None
    outbox_oldest_seconds: float | None = None
    amphorae: dict[str, int] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return bool(self.parts) and all(part.ready for part in self.parts)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ready": self.ready}


def _http_ready(url: str, timeout: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return resp.status == 200, f"{url}: {resp.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")[:300]
        return False, f"{url}: {exc.code} {body}"
    except OSError as exc:
        return False, f"{url}: {exc}"


async def _database_facts(
    dsn: str, connect_timeout: float
) -> tuple[int, float | None, dict[str, int]] | None:
    """Outbox backlog, age of its oldest row and amphorae by state; None before the services
    created the tables. Raises what asyncpg raises when Postgres does not answer."""
    conn = await asyncpg.connect(dsn, timeout=connect_timeout, command_timeout=connect_timeout)
    try:
        backlog = await conn.fetchval("SELECT count(*) FROM outbox")
        oldest = await conn.fetchval(
            "SELECT extract(epoch FROM now() - min(e.recorded_at))::float8 "
            "FROM outbox o JOIN events e ON e.event_id = o.event_id"
        )
        rows = await conn.fetch("SELECT status, count(*) AS n FROM amphora_view GROUP BY status")
        return int(backlog), oldest, {row["status"]: int(row["n"]) for row in rows}
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()


def collect_status(paths: StackPaths, timeout: float = CONNECT_TIMEOUT) -> StackStatus:
    """Ask supervisord, every service's ``/readyz``, NATS' monitor and Postgres.

    Raises StackError when no stack answers under ``paths``.
    """
    ports = load_ports(paths)
    client = SupervisorClient(paths.supervisor_socket, timeout)
    try:
        processes = {info.name: info for info in client.processes()}
        supervisor_pid: int | None = client.pid()
    except SupervisorUnreachable as exc:
        raise StackError(f"no stack running under {paths.state} ({exc})") from exc
    counts = read_restarts(paths.restarts)
    status = StackStatus(str(paths.state), supervisor_pid, asdict(ports))
    database = (True, _dsn(ports))
    try:
        facts = asyncio.run(_database_facts(_dsn(ports), timeout))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        database = (False, f"{_dsn(ports)}: {exc!r}")
    else:
        if facts is not None:
            status.outbox_backlog, status.outbox_oldest_seconds, status.amphorae = facts
    probes = {
        "postgres": database,
        "nats": _http_ready(
            f"http://{LOOPBACK}:{ports.nats_monitor}/healthz?js-enabled-only=true", timeout
        ),
        **{
            name: _http_ready(f"http://{LOOPBACK}:{ports.service_port(name)}/readyz", timeout)
            for name in SERVICES
        },
    }
    for name in (*SERVERS, *SERVICES):
        info = processes.get(name)
        ok, detail = probes[name]
        running = info is not None and info.running
        status.parts.append(
            PartStatus(
                name=name,
                state=info.state if info else "MISSING",
                pid=info.pid if info else None,
                uptime=info.uptime if info else 0.0,
                restarts=int(counts.get(name, {}).get("restarts", 0)),
                crashes=int(counts.get(name, {}).get("crashes", 0)),
                ready=running and ok,
                detail=detail if not (running and ok) else "",
            )
        )
    return status


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def render_status(status: StackStatus) -> str:
    """The human-readable table of ``fulcrum status``."""
    lines = [
        f"Fulcrum stack in {status.state_dir}: {'READY' if status.ready else 'NOT READY'}",
        f"  supervisor pid {status.supervisor_pid}",
        f"  {'part':<13}{'state':<10}{'pid':>8}  {'uptime':>8}  {'restarts':>8}  ready",
    ]
    for part in status.parts:
        lines.append(
            f"  {part.name:<13}{part.state:<10}{part.pid or '-':>8}  "
            f"{_duration(part.uptime):>8}  {part.restarts:>8}  "
            f"{'yes' if part.ready else 'NO  ' + part.detail}"
        )
    if status.outbox_backlog is None:
        lines.append("  outbox: unknown (Postgres did not answer)")
    else:
        oldest = status.outbox_oldest_seconds
        age = f", oldest {oldest:.1f} s" if oldest is not None else ""
        lines.append(f"  outbox backlog: {status.outbox_backlog} events{age}")
    amphorae = ", ".join(f"{k} {v}" for k, v in sorted(status.amphorae.items())) or "none"
    lines.append(f"  amphorae: {amphorae}")
    ports = status.ports
    lines += [
        f"  API: http://{LOOPBACK}:{ports['api']}   Postgres: {LOOPBACK}:{ports['postgres']}"
        f"   NATS: {LOOPBACK}:{ports['nats']}   heartbeats: udp {LOOPBACK}:{ports['health_udp']}"
        f"   VIPs: 127.{ports['vip_octet']}.0.0/16",
        f"  /readyz: provisioner {ports['provisioner']}, health {ports['health']}, "
        f"housekeeping {ports['housekeeping']}",
    ]
    return "\n".join(lines) + "\n"


def run_status(state_dir: str, as_json: bool = False) -> int:
    """``fulcrum status``: 0 when every part is ready, 1 when not, 2 when no stack answers."""
    paths = StackPaths(Path(state_dir).resolve())
    try:
        status = collect_status(paths)
    except StackError as exc:
        print(f"fulcrum status: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(status.as_json(), indent=1))
    else:
        sys.stdout.write(render_status(status))
    return 0 if status.ready else 1


# -- up and down -------------------------------------------------------------------------------


def _pid_alive(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` when that process still runs a Fulcrum or supervisord
    command line (a reused pid does not count)."""
    try:
        pid = int(pid_file.read_text())
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if b"supervisor" not in command_line and b"fulcrum" not in command_line:
        return None
    return pid if _running(pid) else None


def _programs(
    paths: StackPaths, ports: StackPorts, pg: EmbeddedPostgres, nats_server: EmbeddedNats
) -> list[Program]:
    state = paths.state
    envs = service_environment(state, pg.dsn, nats_server.url, ports)
    programs = [
        Program(
            "postgres",
            pg.supervised_command(),
            paths.log("postgres"),
            priority=10,
            stop_signal="INT",  # fast shutdown: disconnect clients, checkpoint, exit
            stop_wait=30,
            environment={"LC_ALL": "C"},
        ),
        Program(
            "nats",
            nats_server.supervised_command(ports.nats_monitor),
            paths.log("nats"),
            priority=20,
        ),
    ]
    for name in SERVICES:
        programs.append(
            Program(
                name,
                [sys.executable, "-m", f"services.{name}"],
                paths.log(name),
                environment=envs[name],
                autostart=False,
            )
        )
    return programs


def _supervisor_environment() -> dict[str, str]:
    # PG* variables (PGDATA, PGPORT, ...) would steer Postgres and the services' drivers.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _wait_ready(
    paths: StackPaths, supervisord: subprocess.Popen[bytes], names: tuple[str, ...], deadline: float
) -> None:
    """Until the parts ``names`` are ready as ``fulcrum status`` sees them; StackError when
    supervisord exits, one of them keeps crashing at start, or ``deadline`` passes."""
    detail = ""
    while time.monotonic() < deadline:
        if supervisord.poll() is not None:
            raise StackError(f"supervisord exited with {supervisord.returncode}")
        try:
            parts = [p for p in collect_status(paths, 2.0).parts if p.name in names]
        except StackError as exc:  # its socket is not there yet
            detail = str(exc)
        else:
            for part in parts:
                if part.state == FATAL:
                    raise StackError(f"{part.name} keeps crashing at start")
            if all(part.ready for part in parts):
                return
            detail = "; ".join(f"{p.name}: {p.state} {p.detail}" for p in parts if not p.ready)
        time.sleep(0.1)
    raise StackError(f"{', '.join(names)} not ready after {READY_TIMEOUT:.0f} s: {detail}")


def _log_tails(paths: StackPaths) -> str:
    parts = []
    for name in (*SERVERS, *SERVICES):
        try:
            tail = paths.log(name).read_text(errors="replace")[-1500:]
        except OSError:
            continue
        parts.append(f"--- {paths.log(name)} ---\n{tail}")
    return "\n".join(parts)


def _endpoint_text(paths: StackPaths, ports: StackPorts, clouds: Path) -> str:
    api_url = f"http://{LOOPBACK}:{ports.api}"
    return (
        f"Fulcrum is up.\n"
        f"  API (Octavia v2, Neutron and Keystone subsets): {api_url}\n"
        f"  Postgres: {_dsn(ports)}\n  NATS: {_nats_url(ports)}\n"
        f"  VIPs: 127.{ports.vip_octet}.0.0/16 (subnet public-subnet)\n"
        f"  Heartbeats: udp {LOOPBACK}:{ports.health_udp}   readiness: "
        f"{api_url}/readyz, provisioner :{ports.provisioner}, health :{ports.health}, "
        f"housekeeping :{ports.housekeeping}\n"
        f"  clouds.yaml: {clouds}\n"
        f"Use it:\n"
        f"  export OS_CLIENT_CONFIG_FILE={clouds} OS_CLOUD=fulcrum\n"
        f"  openstack loadbalancer create --name my-lb --vip-subnet public-subnet\n"
        f"Status: fulcrum status --state-dir {paths.state}   Logs: {paths.state}/*.log   "
        f"Stop: make down\n"
    )


def run_up(state_dir: str, api_port: int | None) -> int:
    """Run the stack until SIGTERM/SIGINT; returns the exit code (1: it could not start)."""
    paths = StackPaths(Path(state_dir).resolve())
    state = paths.state
    state.mkdir(parents=True, exist_ok=True)
    (state / "ready").unlink(missing_ok=True)
    running = _pid_alive(paths.supervisor_pid)
    if running is not None:
        print(f"fulcrum up: a stack already runs under {state} (supervisord pid {running})")
        return 1
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    supervisord: subprocess.Popen[bytes] | None = None
    client = SupervisorClient(paths.supervisor_socket)
    try:
        ports = choose_ports(paths, api_port)
        pg = EmbeddedPostgres(state / "postgres", port=ports.postgres)
        nats_server = EmbeddedNats(state / "nats", port=ports.nats)
        paths.supervisor_conf.write_text(
            render_config(
                socket_path=paths.supervisor_socket,
                pid_file=paths.supervisor_pid,
                log_file=state / "supervisord.log",
                programs=_programs(paths, ports, pg, nats_server),
                restarts_file=paths.restarts,
                listener_log=state / "restarts.log",
            )
        )
        paths.restarts.unlink(missing_ok=True)
        # Its own session: a terminal's Ctrl-C reaches `up` only, which stops things in order;
        # and supervisord (with the services) outlives an `up` killed hard.
        with open(state / "supervisord.err", "ab") as errors:
            supervisord = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "supervisor.supervisord",
                    "-n",
                    "-c",
                    str(paths.supervisor_conf),
                ],
                env=_supervisor_environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
            )
        print(f"fulcrum up: supervisord pid {supervisord.pid}", flush=True)
        deadline = time.monotonic() + READY_TIMEOUT
        _wait_ready(paths, supervisord, SERVERS, deadline)
        for name in SERVICES:
            client.start(name)
        _wait_ready(paths, supervisord, SERVICES, deadline)
        clouds = write_clouds_yaml(state, f"http://{LOOPBACK}:{ports.api}")
        endpoint = _endpoint_text(paths, ports, clouds)
        (state / "endpoint.txt").write_text(endpoint)
        (state / "nats.url").write_text(_nats_url(ports))
        print(endpoint, flush=True)
        (state / "ready").write_text(str(os.getpid()))
        if _watch(supervisord, client, lambda: stopping):
            return 0
        # supervisord itself died: what it ran may still run, and the amphorae serve on.
        # Stopping them here would take every VIP down for a control-plane failure.
        supervisord = None
        print(
            "fulcrum up: supervisord died; the amphorae keep serving and the parts it ran may "
            f"still run. Stop them with: fulcrum down --state-dir {state}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except (StackError, FulcrumError, OSError, ValueError) as exc:
        print(f"fulcrum up: failed: {exc}\n{_log_tails(paths)}", file=sys.stderr, flush=True)
        return 1
    finally:
        (state / "ready").unlink(missing_ok=True)
        if supervisord is not None:
            _stop_supervisor(supervisord, client)
            stop_amphorae(state)


def _watch(
    supervisord: subprocess.Popen[bytes], client: SupervisorClient, stopping: Callable[[], bool]
) -> bool:
    """Until asked to stop (True) or supervisord dies (False): report every part supervisord
    gave up on, once, loudly."""
    reported: set[str] = set()
    while not stopping():
        if supervisord.poll() is not None:
            print(f"fulcrum up: supervisord exited ({supervisord.returncode})", flush=True)
            return False
        with contextlib.suppress(SupervisorUnreachable):
            for info in client.processes():
                if info.state == FATAL and info.name not in reported:
                    print(
                        f"fulcrum up: GAVE UP on {info.name}: it crashed at start too often in "
                        f"a row; the rest keeps running. Fix it, then: make down && make up",
                        flush=True,
                    )
                    reported.add(info.name)
                elif info.state != FATAL:
                    reported.discard(info.name)
        time.sleep(0.5)
    return True


def _stop_supervisor(supervisord: subprocess.Popen[bytes], client: SupervisorClient) -> None:
    if supervisord.poll() is None:
        supervisord.send_signal(signal.SIGTERM)  # stops programs in reverse priority order
        try:
            supervisord.wait(timeout=90)
        except subprocess.TimeoutExpired:
            supervisord.kill()
            supervisord.wait()


def run_down(state_dir: str) -> int:
    """``fulcrum down``: stop the stack under ``state_dir`` (``up`` first, or its supervisord
    when ``up`` is gone) and the amphorae; 0 also when nothing was running."""
    paths = StackPaths(Path(state_dir).resolve())
    stopped = False
    for pid_file in (paths.state / "fulcrum.pid", paths.supervisor_pid):
        pid = _pid_alive(pid_file)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        for _ in range(1200):  # up to 120 s
            if _pid_alive(pid_file) != pid:
                break
            time.sleep(0.1)
        else:
            print(f"fulcrum down: pid {pid} ignored SIGTERM for 120 s; SIGKILL", file=sys.stderr)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        print(f"fulcrum down: stopped pid {pid} ({pid_file.name})")
        stopped = True
    stopped = _stop_orphaned_parts(paths) or stopped
    stop_amphorae(paths.state)
    (paths.state / "ready").unlink(missing_ok=True)
    if not stopped:
        print(f"fulcrum down: nothing running under {paths.state}")
    return 0


# What each part's command line holds, to tell it from a process that reused its pid.
_PART_COMMANDS: Final = {
    "postgres": b"postgres",
    "nats": b"nats-server",
    **{name: f"services.{name}".encode() for name in SERVICES},
}


def _stop_orphaned_parts(paths: StackPaths) -> bool:
    """Stop the parts a dead supervisord left running (their last pids, as its event listener
    recorded them): services first, then NATS and Postgres. True when there were any."""
    if _pid_alive(paths.supervisor_pid) is not None:
        return False
    found = False
    for name in (*SERVICES, "nats", "postgres"):
        pid = int(read_restarts(paths.restarts).get(name, {}).get("pid") or 0)
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
        except OSError:
            continue
        if _PART_COMMANDS[name] not in command_line or not _running(pid):
            continue
        found = True
        os.kill(pid, signal.SIGINT if name == "postgres" else signal.SIGTERM)
        for _ in range(300):  # up to 30 s
            if not _running(pid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        print(f"fulcrum down: stopped {name} (pid {pid}), left by a dead supervisord")
    return found
