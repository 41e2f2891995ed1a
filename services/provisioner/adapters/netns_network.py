"""Network plumbing of the netns driver: per-network bridges, amphora namespaces and veths.

Topology, per VIP network ``N`` (``NetnsDriverSettings.networks``; subnets in 198.18.0.0/15,
and for a dual-stack network a /64 of fd00::/8 beside, each address below with its IPv6 twin)::

    root namespace                 network namespace fn-N             amphora namespace fa-<id>
    fn-N (veth, <gateway>/24) ---- up0 --+
                                         br0 (bridge) --- v<id> ----- eth0 <address>/24
                                         |                              (+ VIP /32: SINGLE, or
                                         +--- v<id2> ---- eth0 ...        keepalived's MASTER)

- The bridge lives in a namespace of its own (``<network_prefix><name>``), so the host's
  firewall never sees bridged traffic (docker's ``FORWARD DROP`` with ``br_netfilter`` would
  drop it on a root-namespace bridge) and the host keeps no bridge.
- One veth, the uplink, joins the host to the bridge: its host end (named like the network
  namespace) holds ``gateway``. Through it the provisioner reaches every agent, and amphorae
  reach the host (their default route).
- Each amphora gets its own namespace ``<namespace_prefix><first 12 hex of its id>`` with one
  interface, ``eth0``, addressed from the network's ``ip_range`` (round robin, so an address
  comes back only after the whole range; the host's ARP entry for it is dropped whenever an
  amphora there is plugged or unplugged, so no neighbour keeps a deleted amphora's MAC).
  ``ip_nonlocal_bind`` (IPv4 and IPv6) is on so a BACKUP's HAProxy binds the VIPs it does not
  hold. In a dual-stack network eth0 also holds the address of ``subnet6`` at the same offset
  (``NetnsNetworkSettings.address6_of``), and the default IPv6 route goes via ``gateway6``.

On an amphora host (``HostPlacement``, the provisioner's ``hosts`` setting) the network
namespace above is the network's *switch*, shared by every host, and each host has a bridge of
its own, ``<network_prefix><name>-<host>``, whose ``up0`` is joined to the switch's bridge by
the host's uplink (``h-<host>`` in the switch's namespace); its amphorae plug into the host's
bridge and take addresses from the host's share of ``ip_range``. A host's bridge is kept
after its last amphora (like the switch): setting its uplink or its bridge down (a lost host)
stays visible to ``reachable`` until an operator repairs it (``prepare_network``).

``<state_dir>/.networks/<name>.json`` marks a network namespace made here (removed with its
last amphora unless it is to be kept), ``<name>.last`` the last address handed out. Address
allocation and network changes hold ``locked()`` (also an flock on ``<state_dir>/.lock``, so
several provisioners on one host share a state dir safely). Needs root and iproute2.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from libs.common.errors import InfrastructureError
from services.provisioner.settings import NetnsDriverSettings, NetnsNetworkSettings

__all__ = [
    "VIP_INTERFACE",
    "Attachment",
    "HostPlacement",
    "IpRoute",
    "NetnsNetwork",
    "namespace_exists",
]

VIP_INTERFACE: Final = "eth0"
_BRIDGE: Final = "br0"
_UPLINK_INSIDE: Final = "up0"
_NETWORKS_DIR: Final = ".networks"
_LOCK_FILE: Final = ".lock"
_NETNS_DIR: Final = Path("/run/netns")
_POLL: Final = 0.02


def short_id(amphora_id: str) -> str:
    return amphora_id.replace("-", "").lower()[:12]


def namespace_exists(name: str) -> bool:
    return (_NETNS_DIR / name).exists()


@dataclass(frozen=True)
class Attachment:
    """An amphora's place on a network: its namespace, its bridge port and its address."""

    namespace: str
    port_name: str
    network: str
    address: str


@dataclass(frozen=True)
class HostPlacement:
    """The amphora host a ``NetnsNetwork`` plumbs: its name, its share of each network's
    ``ip_range`` (network name -> CIDR; the whole range when absent) and the lock file every
    host's provisioner takes to make the shared switch."""

    name: str
    ip_ranges: Mapping[str, str]
    switch_lock: Path


_SWITCH_LOCK: Final = asyncio.Lock()


class IpRoute:
    """iproute2, bounded in time; failures become InfrastructureError."""

    def __init__(self, timeout: float) -> None:
        self._ip = shutil.which("ip") or "/usr/sbin/ip"
        self._timeout = timeout

    async def run(self, *args: str, check: bool = True) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            self._ip,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), self._timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise InfrastructureError(f"ip {' '.join(args)} timed out") from None
        text = out.decode(errors="replace").strip()
        status = process.returncode or 0
        if check and status != 0:
            raise InfrastructureError(f"ip {' '.join(args)} failed: {text}")
        return status, text

    async def link_exists(self, name: str, namespace: str | None = None) -> bool:
        where = ("-n", namespace) if namespace else ()
        status, _ = await self.run(*where, "link", "show", "dev", name, check=False)
        return status == 0

    async def pids(self, namespace: str) -> list[int]:
        if not namespace_exists(namespace):
            return []
        status, text = await self.run("netns", "pids", namespace, check=False)
        return [int(p) for p in text.split() if p.isdigit()] if status == 0 else []


class NetnsNetwork:
    """The networks of ``settings`` and the amphora namespaces plugged into them."""

    def __init__(
        self, settings: NetnsDriverSettings, state_dir: Path, host: HostPlacement | None = None
    ) -> None:
        self._settings = settings
        self._state_dir = state_dir
        self._host = host
        self._ip = IpRoute(settings.command_timeout)
        self._lock = asyncio.Lock()
        (self._state_dir / _NETWORKS_DIR).mkdir(parents=True, exist_ok=True)

    # -- names -------------------------------------------------------------------------------

    def namespace_for(self, amphora_id: str) -> str:
        return f"{self._settings.namespace_prefix}{short_id(amphora_id)}"

    @staticmethod
    def port_for(amphora_id: str) -> str:
        """The bridge end of the amphora's veth."""
        return f"v{short_id(amphora_id)}"

    def network_namespace(self, network: str) -> str:
        """The namespace holding the network's bridge; the host end of its uplink has the
        same name."""
        return f"{self._settings.network_prefix}{network}"

    def bridge_namespace(self, network: str) -> str:
        """The namespace holding the bridge amphorae plug into: the network's own, or on an
        amphora host the host's."""
        if self._host is None:
            return self.network_namespace(network)
        return f"{self.network_namespace(network)}-{self._host.name}"

    def host_uplink(self) -> str:
        """On an amphora host: the switch's end of the host's uplink."""
        assert self._host is not None
        return f"h-{self._host.name}"

    def network_for(self, vip_address: str | None) -> NetnsNetworkSettings:
        """The network whose subnet (or subnet6) holds ``vip_address`` (the first network for
        none)."""
        networks = self._settings.networks
        if vip_address is None:
            return networks[0]
        address = ipaddress.ip_address(vip_address)
        for network in networks:
            if any(
                address in ipaddress.ip_network(subnet)
                for subnet in (network.subnet, network.subnet6)
                if subnet is not None
            ):
                return network
        subnets = ", ".join(s for n in networks for s in (n.subnet, n.subnet6) if s)
        raise InfrastructureError(f"VIP {vip_address} is in none of the netns subnets {subnets}")

    def network(self, name: str) -> NetnsNetworkSettings:
        for network in self._settings.networks:
            if network.name == name:
                return network
        raise InfrastructureError(f"netns network {name!r} is not configured")

    async def gateway(self, network: str) -> str:
        return self.network(network).gateway

    async def name_namespace(self, amphora_id: str) -> str:
        """The amphora's namespace (named when it was made)."""
        return self.namespace_for(amphora_id)

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Serializes address allocation and network changes, across processes too."""
        async with self._lock:
            fd = os.open(self._state_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    # -- networks ----------------------------------------------------------------------------

    def _network_marker(self, name: str) -> Path:
        return self._state_dir / _NETWORKS_DIR / f"{name}.json"

    async def prepare_network(self, name: str) -> None:
        """Create (or repair) network ``name`` and keep it after its last amphora is gone
        (operators, tests). Remove it with ``remove_network``."""
        async with self.locked():
            await self.ensure_network(self.network(name), keep=True)

    async def ensure_network(self, network: NetnsNetworkSettings, *, keep: bool) -> None:
        """Idempotent: every piece is checked and made when missing. Called under the lock.
        On an amphora host: the shared switch, then the host's bridge (both kept)."""
        if self._host is None:
            await self._ensure_switch(network, keep=keep)
            return
        async with _SWITCH_LOCK:
            fd = os.open(self._host.switch_lock, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
                await self._ensure_switch(network, keep=True)
            finally:
                os.close(fd)
        await self._ensure_host_bridge(network)

    async def _ensure_host_bridge(self, network: NetnsNetworkSettings) -> None:
        switch = self.network_namespace(network.name)
        ns = self.bridge_namespace(network.name)
        uplink = self.host_uplink()
        if not namespace_exists(ns):
            await self._ip.run("netns", "add", ns)
            self._network_marker(network.name).write_text(json.dumps({"keep": True}))
        await self._ip.run("-n", ns, "link", "set", "lo", "up")
        if not await self._ip.link_exists(_BRIDGE, ns):
            await self._ip.run("-n", ns, "link", "add", _BRIDGE, "type", "bridge")
        await self._ip.run("-n", ns, "link", "set", _BRIDGE, "up")
        if not await self._ip.link_exists(_UPLINK_INSIDE, ns):
            await self._ip.run("-n", switch, "link", "del", uplink, check=False)
            await self._ip.run(
                "-n", switch, "link", "add", uplink, "type", "veth",
                "peer", "name", _UPLINK_INSIDE, "netns", ns,
            )  # fmt: skip
        await self._ip.run("-n", switch, "link", "set", uplink, "master", _BRIDGE, "up")
        await self._ip.run("-n", ns, "link", "set", _UPLINK_INSIDE, "master", _BRIDGE, "up")

    async def reachable(self) -> bool:
        """Whether this host's amphorae can be reached: every bridge it has is up and joined
        to its switch by an uplink that is up (a host not plumbed yet is reachable)."""
        if self._host is None:
            return True
        for network in self._settings.networks:
            ns = self.bridge_namespace(network.name)
            if not namespace_exists(ns):
                continue
            status, text = await self._ip.run("-n", ns, "-br", "link", "show", check=False)
            states = {
                fields[0].split("@")[0]: fields[1]
                for fields in (line.split() for line in text.splitlines())
                if len(fields) > 1
            }
            if status != 0 or states.get(_BRIDGE) != "UP" or states.get(_UPLINK_INSIDE) != "UP":
                return False
        return True

    async def _ensure_switch(self, network: NetnsNetworkSettings, *, keep: bool) -> None:
        ns = self.network_namespace(network.name)
        marker = self._network_marker(network.name)
        if not namespace_exists(ns):
            await self._ip.run("netns", "add", ns)
            marker.write_text(json.dumps({"keep": keep}))
        elif keep and marker.exists():
            marker.write_text(json.dumps({"keep": True}))
        # (A namespace found without a marker was made by someone else: never deleted here.)
        await self._ip.run("-n", ns, "link", "set", "lo", "up")
        if not await self._ip.link_exists(_BRIDGE, ns):
            await self._ip.run("-n", ns, "link", "add", _BRIDGE, "type", "bridge")
        await self._ip.run("-n", ns, "link", "set", _BRIDGE, "up")
        if not await self._ip.link_exists(ns):
            if await self._ip.link_exists(_UPLINK_INSIDE, ns):
                await self._ip.run("-n", ns, "link", "del", _UPLINK_INSIDE)
            await self._ip.run(
                "link", "add", ns, "type", "veth", "peer", "name", _UPLINK_INSIDE, "netns", ns
            )
        await self._ip.run("-n", ns, "link", "set", _UPLINK_INSIDE, "master", _BRIDGE, "up")
        prefix = ipaddress.ip_network(network.subnet).prefixlen
        await self._ip.run("addr", "replace", f"{network.gateway}/{prefix}", "dev", ns)
        if network.gateway6 is not None:
            await self._ip.run("addr", "replace", f"{network.gateway6}/64", "dev", ns, "nodad")
        await self._ip.run("link", "set", ns, "up")

    async def remove_network(self, name: str) -> None:
        """Delete the network's namespace (bridge, ports) and uplink; absent is fine."""
        async with self.locked():
            await self._remove_network(name)

    async def _remove_network(self, name: str) -> None:
        """The network's namespace, or on an amphora host the host's bridge (its uplink goes
        with it; the shared switch stays)."""
        if self._host is not None:
            ns = self.bridge_namespace(name)
            if namespace_exists(ns):
                await self._ip.run("netns", "del", ns, check=False)
            self._network_marker(name).unlink(missing_ok=True)
            return
        ns = self.network_namespace(name)
        if await self._ip.link_exists(ns):
            await self._ip.run("link", "del", ns, check=False)
        if namespace_exists(ns):
            await self._ip.run("netns", "del", ns, check=False)
        self._network_marker(name).unlink(missing_ok=True)

    async def release_network(self, name: str, *, in_use: bool) -> None:
        """Remove the network unless it is ``in_use``, to be kept, or not made here. Called
        under the lock."""
        try:
            keep = bool(json.loads(self._network_marker(name).read_text()).get("keep", True))
        except (OSError, ValueError):
            return  # no marker: not created here
        if keep or in_use:
            return
        await self._remove_network(name)

    async def attach(
        self, network: str, namespace: str, address: str, address6: str | None = None
    ) -> str:
        """Plug an existing namespace (a client, a member) into ``network`` as ``eth0`` with
        ``address`` (and ``address6`` in a dual-stack network's subnet6); returns the bridge
        port's name. For tests and operators: the address must lie outside the network's
        ``ip_range``. Deleting the namespace unplugs it."""
        settings = self.network(network)
        ns = self.bridge_namespace(network)
        port = "p" + hashlib.sha256(namespace.encode()).hexdigest()[:12]
        prefix = ipaddress.ip_network(settings.subnet).prefixlen
        await self._ip.run(
            "-n", ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
            namespace,
        )  # fmt: skip
        await self._ip.run("-n", ns, "link", "set", port, "master", _BRIDGE, "up")
        await self._ip.run("-n", namespace, "addr", "add", f"{address}/{prefix}", "dev", "eth0")
        if address6 is not None:
            await self._ip.run(
                "-n", namespace, "addr", "add", f"{address6}/64", "dev", "eth0", "nodad"
            )
        await self._ip.run("-n", namespace, "link", "set", "eth0", "up")
        await self._ip.run("-n", namespace, "link", "set", "lo", "up")
        return port

    # -- amphorae ----------------------------------------------------------------------------

    def allocate(self, network: NetnsNetworkSettings, taken: Collection[str]) -> str:
        """The next address of ``ip_range`` not in ``taken`` after the last one handed out
        (round robin): an address comes back only after the whole range, long after
        neighbours forgot the MAC of the amphora that had it before. Called under the lock."""
        subnet = ipaddress.ip_network(network.subnet)
        unavailable = {*taken, network.gateway}
        reserved = {subnet.network_address, subnet.broadcast_address}
        ip_range = network.ip_range
        if self._host is not None:
            ip_range = self._host.ip_ranges.get(network.name, ip_range)
        hosts = [
            str(h)
            for h in ipaddress.ip_network(ip_range)
            if h not in reserved and str(h) not in unavailable
        ]
        if not hosts:
            raise InfrastructureError(f"no free amphora address left in {ip_range}")
        cursor = self._state_dir / _NETWORKS_DIR / f"{network.name}.last"
        try:
            last = ipaddress.IPv4Address(cursor.read_text().strip())
        except (OSError, ValueError):
            last = None
        after = [h for h in hosts if last is None or ipaddress.IPv4Address(h) > last]
        chosen = (after or hosts)[0]
        cursor.write_text(chosen)
        return chosen

    async def _forget_neighbour(self, attachment: Attachment) -> None:
        """Drop the host's ARP (and IPv6 neighbour) entry for the amphora's address: a new
        amphora there has another MAC, and a stale entry would black-hole the provisioner's
        connections."""
        uplink = self.network_namespace(attachment.network)
        await self._ip.run("neigh", "del", attachment.address, "dev", uplink, check=False)
        address6 = self.network(attachment.network).address6_of(attachment.address)
        if address6 is not None:
            await self._ip.run("neigh", "del", address6, "dev", uplink, check=False)

    async def plug(self, attachment: Attachment) -> None:
        """The amphora's namespace with eth0 on the bridge (recreated from scratch)."""
        network = self.network(attachment.network)
        ns, bridge_ns = attachment.namespace, self.bridge_namespace(network.name)
        port = attachment.port_name
        await self._ip.run("-n", bridge_ns, "link", "del", port, check=False)
        if namespace_exists(ns):
            await self._ip.run("netns", "del", ns, check=False)
        await self._ip.run("netns", "add", ns)
        await self._ip.run(
            "-n", bridge_ns, "link", "add", port, "type", "veth",
            "peer", "name", VIP_INTERFACE, "netns", ns,
        )  # fmt: skip
        await self._ip.run("-n", bridge_ns, "link", "set", port, "master", _BRIDGE)
        await self._ip.run("-n", bridge_ns, "link", "set", port, "up")
        prefix = ipaddress.ip_network(network.subnet).prefixlen
        # A BACKUP's HAProxy binds the VIPs before keepalived gives it the addresses.
        await self._ip.run(
            "netns", "exec", ns, "sysctl", "-qw",
            "net.ipv4.ip_nonlocal_bind=1", "net.ipv6.ip_nonlocal_bind=1",
        )  # fmt: skip
        await self._ip.run("-n", ns, "link", "set", "lo", "up")
        address = f"{attachment.address}/{prefix}"
        await self._ip.run("-n", ns, "addr", "add", address, "dev", VIP_INTERFACE)
        address6 = network.address6_of(attachment.address)
        if address6 is not None:
            # No duplicate address detection: the address is the amphora's by construction.
            await self._ip.run(
                "-n", ns, "addr", "add", f"{address6}/64", "dev", VIP_INTERFACE, "nodad"
            )
        await self._ip.run("-n", ns, "link", "set", VIP_INTERFACE, "up")
        await self._ip.run("-n", ns, "route", "add", "default", "via", network.gateway)
        if network.gateway6 is not None:
            await self._ip.run("-n", ns, "-6", "route", "add", "default", "via", network.gateway6)
        await self._forget_neighbour(attachment)

    async def unplug(self, attachment: Attachment) -> None:
        """SIGKILL whatever still runs in the amphora's namespace (bounded by the stop
        timeout), then remove its port, its namespace and the host's ARP entry; absent is
        fine."""
        deadline = time.monotonic() + self._settings.stop_timeout
        while time.monotonic() < deadline:
            remaining = await self._ip.pids(attachment.namespace)
            if not remaining:
                break
            for target in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)
            await asyncio.sleep(_POLL)
        bridge_ns = self.bridge_namespace(attachment.network)
        if namespace_exists(bridge_ns):
            await self._ip.run("-n", bridge_ns, "link", "del", attachment.port_name, check=False)
        if namespace_exists(attachment.namespace):
            await self._ip.run("netns", "del", attachment.namespace, check=False)
        await self._forget_neighbour(attachment)
