"""The amphora's VIP interface: host addresses (/32, /128) added and removed with iproute2,
announced so that neighbours move to this amphora at once: gratuitous ARP for IPv4,
unsolicited neighbour advertisements (RFC 4861 7.2.6: to all-nodes, Override set) for IPv6.

VIPs are always plugged as host routes (``/32``, ``/128``): the interface's own address (or
the driver's on-link route) already gives the subnet route, and a host address is never a
secondary that the kernel would drop together with the primary. IPv6 VIPs skip duplicate
address detection (``nodad``): the control plane hands each address to one LB, and a
tentative address could neither answer nor be announced for a second. Runs inside the
amphora's network namespace; needs CAP_NET_ADMIN and CAP_NET_RAW.

``plug`` returns once the address is held and the first announcement burst is sent; the
repeats follow in a background task (cancelled by ``unplug`` of that address), so a caller
does not wait out their pauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import shutil
import socket
import struct
from typing import Final

from libs.common.errors import InfrastructureError

logger = logging.getLogger(__name__)

_ETH_P_ARP: Final = 0x0806
_ETH_P_ALL: Final = 0x0003
_ALL_NODES: Final = "ff02::1"
_NA_TYPE: Final = 136
_NA_OVERRIDE: Final = 0x20000000
_TARGET_LINK_LAYER_OPTION: Final = 2
_BROADCAST: Final = b"\xff" * 6
_MIN_FRAME: Final = 60
# Gratuitous ARP bursts: both a request and a reply per round (hosts differ in which they
# honour), repeated after these pauses in case one is lost.
_GARP_PAUSES: Final = (0.0, 0.05, 0.2)


def _host_prefix(address: str) -> int:
    return 32 if ipaddress.ip_address(address).version == 4 else 128


def garp_frames(mac: bytes, address: str) -> list[bytes]:
    """Ethernet frames announcing ``address`` at ``mac``: an ARP request and an ARP reply,
    both with sender = target = the address (RFC 5227's announcement). Pure."""
    ip = ipaddress.IPv4Address(address).packed
    frames = []
    for op, target_mac in ((1, b"\x00" * 6), (2, _BROADCAST)):
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, ip, target_mac, ip)
        frame = _BROADCAST + mac + struct.pack("!H", _ETH_P_ARP) + arp
        frames.append(frame.ljust(_MIN_FRAME, b"\x00"))
    return frames


def unsolicited_na(mac: bytes, address: str) -> bytes:
    """The ICMPv6 neighbour advertisement announcing IPv6 ``address`` at ``mac``: Override
    set, Solicited and Router clear, with the target link-layer address option. The checksum
    is left 0: the kernel fills it for raw ICMPv6 sockets. Pure."""
    target = ipaddress.IPv6Address(address).packed
    header = struct.pack("!BBHI", _NA_TYPE, 0, 0, _NA_OVERRIDE)
    option = struct.pack("!BB6s", _TARGET_LINK_LAYER_OPTION, 1, mac)
    return header + target + option


class VipInterface:
    """One network interface that carries VIPs (``eth0`` of a netns amphora)."""

    def __init__(self, name: str, ip_binary: str | None = None) -> None:
        self.name = name
        self._ip = ip_binary or shutil.which("ip") or "/usr/sbin/ip"
        # Per plugged address: its gratuitous ARP repeats, while they run.
        self._repeats: dict[str, asyncio.Task[None]] = {}

    async def _ip_command(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            self._ip,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise InfrastructureError(
                f"ip {' '.join(args)} failed: {err.decode(errors='replace').strip()}"
            )
        return out.decode()

    async def host_addresses(self) -> list[str]:
        """The /32 (and /128) addresses on the interface: the VIPs it holds now."""
        text = await self._ip_command("-j", "addr", "show", "dev", self.name)
        found: list[str] = []
        for link in json.loads(text or "[]"):
            for info in link.get("addr_info", []):
                local = str(info.get("local", ""))
                if local and info.get("prefixlen") == _host_prefix(local):
                    found.append(local)
        return found

    async def plug(self, address: str) -> None:
        """Hold ``address`` (idempotent) and announce it with gratuitous ARP: the first burst
        before returning, the repeats in the background."""
        extra = ("nodad",) if ipaddress.ip_address(address).version == 6 else ()
        await self._ip_command(
            "addr", "replace", f"{address}/{_host_prefix(address)}", "dev", self.name, *extra
        )
        self._cancel_repeats(address)
        await self.announce(address, _GARP_PAUSES[:1])
        repeats = asyncio.create_task(
            self.announce(address, _GARP_PAUSES[1:]), name=f"VIP announcements {address}"
        )
        self._repeats[address] = repeats
        repeats.add_done_callback(lambda done: self._repeated(address, done))

    def _repeated(self, address: str, done: asyncio.Task[None]) -> None:
        if self._repeats.get(address) is done:
            del self._repeats[address]
        if not done.cancelled() and done.exception() is not None:
            logger.warning("announcement repeats for %s failed: %s", address, done.exception())

    def _cancel_repeats(self, address: str) -> None:
        repeats = self._repeats.pop(address, None)
        if repeats is not None:
            repeats.cancel()

    async def unplug(self, address: str) -> None:
        """Drop ``address`` from the interface (its pending announcements stop); absent is
        fine."""
        self._cancel_repeats(address)
        if address in await self.host_addresses():
            await self._ip_command(
                "addr", "del", f"{address}/{_host_prefix(address)}", "dev", self.name
            )

    def _mac(self) -> bytes:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        try:
            sock.bind((self.name, 0))
            mac: bytes = sock.getsockname()[4]
            return mac
        finally:
            sock.close()

    async def announce(self, address: str, pauses: tuple[float, ...] = _GARP_PAUSES) -> None:
        """Announce ``address`` (gratuitous ARP, or unsolicited NA for IPv6), one burst after
        each of ``pauses``."""
        if ipaddress.ip_address(address).version == 6:
            await self._advertise(address, pauses)
            return
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ARP))
        try:
            sock.bind((self.name, 0))
            mac = sock.getsockname()[4]
            frames = garp_frames(mac, address)
            for pause in pauses:
                await asyncio.sleep(pause)
                for frame in frames:
                    with contextlib.suppress(OSError):  # a full queue must not fail the plug
                        sock.send(frame)
        except OSError as exc:
            raise InfrastructureError(f"gratuitous ARP on {self.name} failed: {exc}") from exc
        finally:
            sock.close()

    async def _advertise(self, address: str, pauses: tuple[float, ...]) -> None:
        """Unsolicited neighbour advertisements to all nodes, hop limit 255 (RFC 4861)."""
        try:
            message = unsolicited_na(self._mac(), address)
            index = socket.if_nametoindex(self.name)
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        except OSError as exc:
            raise InfrastructureError(f"neighbour advertisement on {self.name}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            for pause in pauses:
                await asyncio.sleep(pause)
                with contextlib.suppress(OSError):  # a full queue must not fail the plug
                    sock.sendto(message, (_ALL_NODES, 0, 0, index))
        except OSError as exc:
            raise InfrastructureError(f"neighbour advertisement on {self.name}: {exc}") from exc
        finally:
            sock.close()
