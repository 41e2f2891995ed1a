"""The addresses of one local stack: its ports on 127.0.0.1 and its VIP range in 127.0.0.0/8.

``PortPicker`` picks (and saves) the ports of any stack, ``choose_ports`` those of the
embedded default (``StackPorts``); the cluster stack names its own (``cluster.py``).

A start keeps the ports of the last start where they are still free (``ports.json`` in the
state dir), so clients configured once keep working; the API takes 9876 when free. Each stack
claims a VIP range 127.<N>.0.0/16 of its own, so stacks side by side never share a VIP.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from deploy.local.state import StackError, StackPaths, fulcrum_process_alive, pid_alive

LOOPBACK: Final = "127.0.0.1"
DEFAULT_API_PORT: Final = 9876
# Claims of VIP ranges by the stacks of this host: ``127.<N>`` holds the claimant's state dir
# and the pid of the process that claimed it.
VIP_CLAIMS: Final = Path(tempfile.gettempdir()) / "fulcrum-vip-ranges"


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick)."""
    return _free_port(socket.SOCK_STREAM)


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to now (the kernel's pick)."""
    return _free_port(socket.SOCK_DGRAM)


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(kind: socket.SocketKind, port: int) -> bool:
    """Whether nothing listens on (TCP) or is bound to (UDP) ``port``; a TCP port whose only
    sockets are closed connections waiting out TIME_WAIT counts as free, as it does for the
    servers (which all bind with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _tcp_free(port: int) -> bool:
    return _port_free(socket.SOCK_STREAM, port)


def _udp_free(port: int) -> bool:
    return _port_free(socket.SOCK_DGRAM, port)


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
    # The API's operator listener (/healthz, /readyz, /metrics); 0: on the API's port.
    api_operator: int = 0

    def service_port(self, name: str) -> int:
        port: int = getattr(self, name)
        return port

    def operator_port(self, name: str) -> int:
        """Where ``name`` answers /readyz and /metrics (the API: its operator listener)."""
        if name == "api" and self.api_operator:
            return self.api_operator
        return self.service_port(name)

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api}"

    @property
    def postgres_dsn(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.postgres}/postgres"

    @property
    def nats_url(self) -> str:
        return f"nats://{LOOPBACK}:{self.nats}"


class PortPicker:
    """Picks the ports of one start: a name's port of the last start (``ports.json``) where it
    is still free, else a preferred one when free, else a kernel-picked free port; never one
    port twice. ``save`` writes what was picked (plus anything else given) to ``ports.json``."""

    def __init__(self, paths: StackPaths) -> None:
        self._paths = paths
        try:
            self.saved: dict[str, int] = json.loads(paths.ports.read_text())
        except (OSError, ValueError):
            self.saved = {}
        self.taken: set[int] = set()
        self.picked: dict[str, int] = {}

    def _pick(
        self,
        name: str,
        free: Callable[[int], bool],
        fresh: Callable[[], int],
        preferred: int | None,
    ) -> int:
        for candidate in (self.saved.get(name), preferred):
            if candidate and candidate not in self.taken and free(candidate):
                port = candidate
                break
        else:
            port = fresh()
            while port in self.taken:
                port = fresh()
        self.taken.add(port)
        self.picked[name] = port
        return port

    def tcp(self, name: str, preferred: int | None = None) -> int:
        return self._pick(name, _tcp_free, free_tcp_port, preferred)

    def udp(self, name: str) -> int:
        return self._pick(name, _udp_free, free_udp_port, None)

    def api(self, name: str, api_port: int | None) -> int:
        """The API's (or its front's) port: ``api_port`` when given (it must be free; 0: any
        free port), else the last start's where still free, else 9876 when free."""
        if api_port is None:
            return self.tcp(name, DEFAULT_API_PORT)
        if api_port == 0:
            port = self._pick("", _tcp_free, free_tcp_port, None)  # never the saved one
        else:
            if not _tcp_free(api_port):
                raise StackError(f"port {api_port} on {LOOPBACK} is in use (--port 0: any free)")
            port = api_port
        self.taken.add(port)
        self.picked.pop("", None)
        self.picked[name] = port
        return port

    def vip_octet(self) -> int:
        """This stack's VIP range 127.<N>.0.0/16 (see ``_vip_octet``)."""
        octet = _vip_octet(self.saved.get("vip_octet"), self._paths.state)
        self.picked["vip_octet"] = octet
        return octet

    def record(self, name: str, port: int) -> None:
        """Save a port picked elsewhere (e.g. by a server's own configuration) with the rest."""
        self.taken.add(port)
        self.picked[name] = port

    def save(self) -> dict[str, int]:
        self._paths.ports.write_text(json.dumps(self.picked, indent=1))
        return dict(self.picked)


def choose_ports(paths: StackPaths, api_port: int | None) -> StackPorts:
    """This start's ports (``PortPicker``): ``api_port`` when given (it must be free; 0: any
    free port), else the last start's ports where still free, else 9876 for the API when
    free, else kernel-picked free ports."""
    picker = PortPicker(paths)
    ports = StackPorts(
        api=picker.api("api", api_port),
        postgres=picker.tcp("postgres"),
        nats=picker.tcp("nats"),
        nats_monitor=picker.tcp("nats_monitor"),
        provisioner=picker.tcp("provisioner"),
        health=picker.tcp("health"),
        housekeeping=picker.tcp("housekeeping"),
        health_udp=picker.udp("health_udp"),
        vip_octet=picker.vip_octet(),
        api_operator=picker.tcp("api_operator"),
    )
    picker.save()
    return ports


def load_ports(paths: StackPaths) -> StackPorts:
    """The ports of the stack under ``paths`` (StackError when it never started)."""
    try:
        return StackPorts(**json.loads(paths.ports.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise StackError(f"no stack under {paths.state} ({paths.ports} unreadable)") from exc


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


def _claimed_by_another(octet: int, state: Path) -> bool:
    """Whether another stack holds ``127.<octet>``: its claim names another state dir and
    that stack's supervisor runs, or the process that claimed it (a start still under way,
    before its supervisor is up) does."""
    try:
        claimant, _, claimer = (VIP_CLAIMS / f"127.{octet}").read_text().partition("\n")
    except OSError:
        return False
    if Path(claimant.strip()) == state:
        return False
    if pid_alive(StackPaths(Path(claimant.strip())).supervisor_pid) is not None:
        return True
    return claimer.strip().isdigit() and fulcrum_process_alive(int(claimer))


def _vip_octet(saved: int | None, state: Path) -> int:
    """This stack's VIP range 127.<N>.0.0/16: the last start's, else the first of 77-126 that
    no running or starting stack claims and nothing listens in (127.0 is everyone's
    loopback); claimed in ``VIP_CLAIMS`` for this state dir and this process, under a lock so
    that stacks starting at the same moment never take the same range."""
    VIP_CLAIMS.mkdir(exist_ok=True)
    with (VIP_CLAIMS / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = _loopback_listener_octets()
        for octet in (saved, *range(77, 127)):
            if not octet or _claimed_by_another(octet, state):
                continue
            if octet in used and octet != saved:
                continue
            (VIP_CLAIMS / f"127.{octet}").write_text(f"{state}\n{os.getpid()}\n")
            return int(octet)
    raise StackError("every VIP range 127.77-127.126.0.0/16 is taken; stop a stack first")
