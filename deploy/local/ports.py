"""The addresses of one local stack: its ports on 127.0.0.1 and its VIP range in 127.0.0.0/8.

A start keeps the ports of the last start where they are still free (``ports.json`` in the
state dir), so clients configured once keep working; the API takes 9876 when free. Each stack
claims a VIP range 127.<N>.0.0/16 of its own, so stacks side by side never share a VIP.
"""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from deploy.local.state import StackError, StackPaths, pid_alive

LOOPBACK: Final = "127.0.0.1"
DEFAULT_API_PORT: Final = 9876
# Claims of VIP ranges by the stacks of this host: ``127.<N>`` holds the claimant's state dir.
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

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api}"

    @property
    def postgres_dsn(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.postgres}/postgres"

    @property
    def nats_url(self) -> str:
        return f"nats://{LOOPBACK}:{self.nats}"


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
    try:
        claimant = Path((VIP_CLAIMS / f"127.{octet}").read_text().strip())
    except OSError:
        return False
    return claimant != state and pid_alive(StackPaths(claimant).supervisor_pid) is not None


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
