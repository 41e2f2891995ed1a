"""Health checks of UDP members, run by the agent (HAProxy checks the TCP family's).

``probe`` runs one check of one member and says whether it passed:

- UDP-CONNECT: a datagram to the member; an ICMP port unreachable (ECONNREFUSED on the
  connected socket) within ``timeout`` fails it, an answer or silence passes (as Octavia's
  ``nc -uz`` check);
- TCP: a connection accepted within ``timeout``;
- HTTP: ``http_method url_path`` answered with a status in ``expected_codes``;
- PING: one ICMP echo answered (``ping -c 1``).

``MemberHealth`` counts results into a state: ``rise`` passes in a row bring a member up,
``fall`` failures take it down; a member starts up (a monitor confirms or refutes it at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from dataclasses import dataclass
from typing import Final

from libs.common.agent_contract import UdpMonitor, UdpMonitorType

_PAYLOAD: Final = b"fulcrum-udp-check\n"


def expected(codes: str, status: int) -> bool:
    """Whether ``status`` is in Octavia's ``expected_codes`` ("200", "200-204", "200,202")."""
    for part in codes.split(","):
        low, _, high = part.partition("-")
        if int(low) <= status <= int(high or low):
            return True
    return False


async def _udp_connect(address: str, port: int, patience: float) -> bool:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (address, port))
        await loop.sock_sendall(sock, _PAYLOAD)
        try:
            await asyncio.wait_for(loop.sock_recv(sock, 2048), patience)
        except TimeoutError:
            return True  # silence: nothing refused the datagram
        return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return False
    finally:
        sock.close()


async def _tcp(address: str, port: int, patience: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), patience)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _http(address: str, port: int, monitor: UdpMonitor) -> bool:
    host = monitor.domain_name or (f"[{address}]" if ":" in address else address)
    version = "1.1" if monitor.http_version >= 1.1 else "1.0"
    request = (
        f"{monitor.http_method} {monitor.url_path} HTTP/{version}\r\nHost: {host}\r\n"
        "Connection: close\r\nUser-Agent: fulcrum-amphora-check\r\n\r\n"
    ).encode()

    async def exchange() -> bool:
        reader, writer = await asyncio.open_connection(address, port)
        try:
            writer.write(request)
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
        parts = line.split()
        return (
            len(parts) >= 2
            and parts[1].isdigit()
            and expected(monitor.expected_codes, int(parts[1]))
        )

    try:
        return await asyncio.wait_for(exchange(), monitor.timeout)
    except (OSError, TimeoutError, ValueError):
        return False


async def _ping(address: str, patience: float) -> bool:
    binary = shutil.which("ping")
    if binary is None:
        return False
    wait = str(max(1, int(patience)))
    process = await asyncio.create_subprocess_exec(
        binary, "-n", "-q", "-c", "1", "-W", wait, address,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        return await asyncio.wait_for(process.wait(), patience + 1) == 0
    except TimeoutError:
        process.kill()
        await process.wait()
        return False


async def probe(monitor: UdpMonitor, address: str, port: int) -> bool:
    """One check of the member at ``address:port``: True when it passed."""
    match monitor.type:
        case UdpMonitorType.UDP_CONNECT:
            return await _udp_connect(address, port, monitor.timeout)
        case UdpMonitorType.TCP:
            return await _tcp(address, port, monitor.timeout)
        case UdpMonitorType.HTTP:
            return await _http(address, port, monitor)
        case UdpMonitorType.PING:
            return await _ping(address, monitor.timeout)


@dataclass
class MemberHealth:
    """Consecutive results -> up or down (``rise`` / ``fall`` in a row)."""

    rise: int
    fall: int
    up: bool = True
    _streak: int = 0

    def record(self, passed: bool) -> bool:
        """Count one result; True when the state changed."""
        if passed == self.up:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak >= (self.rise if passed else self.fall):
            self.up, self._streak = passed, 0
            return True
        return False
