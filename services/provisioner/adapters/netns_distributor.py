"""The distributor of the netns driver: one namespace that owns a load balancer's VIP and
spreads its connections over several amphorae, in the kernel (nftables + policy routing).

Topology (``DistributorLayout``; slot ``s`` takes the ``s``-th /30 of ``links``: the
distributor's end ``.1``, the amphora's ``.2``)::

    network bridge br0 (fn-N)         distributor namespace             amphora namespace
    client ... --- port --------- eth0 <VIP>/24                   +-- dl0 <link .2>/30
                                       d1 <link .1>/30 -----------+    lo <VIP>/32 (no ARP)
                                       d2 ... (one veth per slot)      eth0 (its own address,
                                                                        on the bridge as ever)

- The distributor answers ARP for the VIP and is the only one to: an amphora holds the VIP on
  ``lo`` with ``arp_ignore=1`` / ``arp_announce=2``, and routes everything it sends *from* the
  VIP back through ``dl0`` (rule ``from <VIP> lookup AMPHORA_TABLE``): replies cross the
  distributor, whose conntrack sees both directions. Its other traffic (agent, members) keeps
  using its ``eth0``.
- New TCP/UDP connections to the VIP get a conntrack mark = a serving amphora's slot (jhash of
  the 5-tuple, ``rendering.distributor``); every later packet of the connection gets the
  firewall mark from the conntrack mark, and rule ``fwmark s lookup ROUTE_TABLE_BASE + s``
  sends it down slot ``s``'s link. The rule that delivers local addresses moves after these
  rules (pref 32765), so a marked packet to the VIP is forwarded rather than taken locally.
- ``add`` wires an amphora but does not let it serve; ``serve`` adds it to the hash map;
  ``drain`` takes it out of the map (its established connections keep their mark and their
  route); ``remove`` also deletes its rule and link: its connections' packets then fall
  through to the local table and the distributor answers them with a reset (TCP) or port
  unreachable (UDP), while every other connection is untouched. Each change of the serving set
  is one atomic ``nft -f`` transaction.

IPv4 VIPs only. The set of amphorae is kept by this object (the caller's state), slots are
handed out round robin so a slot comes back only after all others (no stale conntrack entry
of a removed amphora meets its successor). Needs root, iproute2 and nft.

What a distributor needs of the VIP network is ``DistributorNetwork``: ``NetnsNetwork`` (the
netns driver's bridges) is one, the docker driver's VIP networks (a docker bridge, the
containers' namespaces named by ``ip netns attach``) another.

``NetnsDistributors`` is the netns and docker drivers' ``Distribution``: one distributor per
load balancer (namespace ``<prefix>d<12 hex of the LB id>``), made when its first amphora is
added. What it knows lives in this process and in the kernel: after a restart the first
call for an LB adopts the distributor its namespace holds (``adopt``), connections untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass, replace
from typing import Final, Protocol

from libs.common.errors import InfrastructureError
from services.provisioner.adapters.netns_network import (
    VIP_INTERFACE,
    IpRoute,
    namespace_exists,
    short_id,
)
from services.provisioner.rendering.distributor import (
    NFT_TABLE,
    ROUTE_TABLE_BASE,
    distribution_ruleset,
)

__all__ = [
    "AMPHORA_TABLE",
    "DISTRIBUTOR_INTERFACE",
    "Backend",
    "DistributorLayout",
    "DistributorNetwork",
    "NetnsDistributor",
    "NetnsDistributors",
]

DISTRIBUTOR_INTERFACE: Final = "dl0"
AMPHORA_TABLE: Final = 200
_REPLY_RULE_PREF: Final = 100
_LOCAL_RULE_PREF: Final = 32765
_MAX_SLOTS: Final = 100
# ``ip -o link`` of a slot's link: "7: d3@if2: <...> ... link-netns <amphora namespace>".
_SLOT_LINK: Final = re.compile(r"^\d+: d(\d+)@\S+ .* link-netns (\S+)")
# The ruleset as nft lists it, "... map { 0x00000000 : 0x00000001, ... }": index -> slot.
_SERVING_MAP: Final = re.compile(r"map \{ ([^}]*) \}")
# conntrack -L's summary (on stderr): "... N flow entries have been shown."
_SHOWN: Final = re.compile(r"(\d+) flow entr(?:y|ies) ha(?:s|ve) been shown")


class NamedNetwork(Protocol):
    """A VIP network, by name."""

    @property
    def name(self) -> str: ...


class DistributorNetwork(Protocol):
    """The VIP networks a distributor plugs into and the amphorae it reaches (module doc)."""

    def namespace_for(self, amphora_id: str) -> str:
        """The name of the amphora's network namespace."""
        ...

    async def name_namespace(self, amphora_id: str) -> str:
        """The amphora's namespace, named (``namespace_for``) if it was not; raises
        InfrastructureError when the amphora does not run."""
        ...

    def network_for(self, vip_address: str | None) -> NamedNetwork:
        """The network whose subnet holds the VIP."""
        ...

    async def gateway(self, network: str) -> str:
        """The network's IPv4 gateway."""
        ...

    async def attach(
        self, network: str, namespace: str, address: str, address6: str | None = None
    ) -> str:
        """Plug the namespace into the network as ``eth0`` with ``address``; returns the
        bridge port's name. Deleting the namespace unplugs it."""
        ...


@dataclass(frozen=True)
class DistributorLayout:
    """Where a distributor lives: its namespace, the VIP network, the VIP (IPv4,
    outside the network's ``ip_range``), the IPv4 block its point-to-point links are cut from
    (one /30 per slot) and the jhash seed."""

    namespace: str
    network: str
    vip: str
    links: str
    seed: int = 0

    def link_addresses(self, slot: int) -> tuple[str, str]:
        """(distributor end, amphora end) of slot ``slot``'s link."""
        block = list(ipaddress.IPv4Network(self.links).subnets(new_prefix=30))[slot - 1]
        return str(block.network_address + 1), str(block.network_address + 2)

    @property
    def capacity(self) -> int:
        """How many slots ``links`` holds (at most ``_MAX_SLOTS``)."""
        prefix = ipaddress.IPv4Network(self.links).prefixlen
        return 0 if prefix > 30 else min(_MAX_SLOTS, 1 << (30 - prefix))


@dataclass(frozen=True)
class Backend:
    """An amphora behind the distributor: its namespace, its slot, whether it takes new
    connections."""

    namespace: str
    slot: int
    serving: bool

    @property
    def link(self) -> str:
        """The distributor's end of its link."""
        return f"d{self.slot}"


class NetnsDistributor:
    """One load balancer's distributor (see the module docstring)."""

    def __init__(
        self, network: DistributorNetwork, layout: DistributorLayout, command_timeout: float = 10.0
    ) -> None:
        if layout.capacity < 1:
            raise InfrastructureError(f"links block {layout.links} holds no /30")
        self._network = network
        self._layout = layout
        self._ip = IpRoute(command_timeout)
        self._nft = shutil.which("nft") or "/usr/sbin/nft"
        self._conntrack = shutil.which("conntrack") or "/usr/sbin/conntrack"
        self._backends: dict[str, Backend] = {}
        self._last_slot = 0
        self._lock = asyncio.Lock()

    @property
    def layout(self) -> DistributorLayout:
        return self._layout

    @property
    def backends(self) -> tuple[Backend, ...]:
        """The amphorae wired to the distributor, by slot."""
        return tuple(sorted(self._backends.values(), key=lambda b: b.slot))

    # -- the distributor itself --------------------------------------------------------------

    async def create(self) -> None:
        """The distributor namespace, recreated from scratch, holding the VIP on the network,
        forwarding, and the ruleset with no amphora (connections to the VIP are refused)."""
        layout = self._layout
        ns = layout.namespace
        if namespace_exists(ns):
            await self._ip.run("netns", "del", ns, check=False)
        await self._ip.run("netns", "add", ns)
        await self._sysctl(
            ns,
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.all.accept_local=1",
            # Every flow of a removed amphora gets its port unreachable at once (the global
            # net.ipv4.icmp_msgs_per_sec bound stays).
            "net.ipv4.icmp_ratelimit=0",
        )
        await self._network.attach(layout.network, ns, layout.vip)
        gateway = await self._network.gateway(layout.network)
        await self._ip.run("-n", ns, "route", "replace", "default", "via", gateway)
        await self._ip.run(
            "-n", ns, "rule", "add", "pref", str(_LOCAL_RULE_PREF), "lookup", "local"
        )
        await self._ip.run("-n", ns, "rule", "del", "pref", "0", "lookup", "local")
        self._backends.clear()
        await self._apply()

    async def adopt(self) -> bool:
        """Take over the distributor the layout's namespace already holds (one made by a
        provisioner that restarted since): its amphorae and slots from its links, the serving
        ones from its ruleset; nothing in the kernel changes, so established connections
        keep going. False when the namespace does not exist."""
        ns = self._layout.namespace
        if not namespace_exists(ns):
            return False
        _, links = await self._ip.run("-n", ns, "-o", "link", "show")
        _, script = await self._ip.run(
            "netns", "exec", ns, self._nft, "list", "chain", "ip", NFT_TABLE, "prerouting",
            check=False,
        )  # fmt: skip
        found = _SERVING_MAP.search(script)
        serving = set()
        if found is not None:
            serving = {int(pair.split(":")[1], 0) for pair in found.group(1).split(",")}
        backends: dict[str, Backend] = {}
        for line in links.splitlines():
            link = _SLOT_LINK.search(line)
            if link is not None:
                slot = int(link.group(1))
                backends[link.group(2)] = Backend(link.group(2), slot, slot in serving)
        self._backends = backends
        self._last_slot = max((b.slot for b in backends.values()), default=0)
        return True

    async def delete(self) -> None:
        """The distributor namespace (its port on the bridge and its links go with it); every
        amphora keeps its own namespace. Absent is fine."""
        if namespace_exists(self._layout.namespace):
            await self._ip.run("netns", "del", self._layout.namespace, check=False)
        self._backends.clear()

    # -- amphorae ----------------------------------------------------------------------------

    async def add(self, amphora_namespace: str) -> Backend:
        """Wire the amphora (link, VIP on its ``lo``, reply route, the slot's table and rule);
        it takes no connection until ``serve``."""
        async with self._lock:
            if amphora_namespace in self._backends:
                raise InfrastructureError(f"{amphora_namespace} is already behind the distributor")
            backend = Backend(amphora_namespace, self._next_slot(), serving=False)
            try:
                await self._wire(backend)
            except InfrastructureError:
                await self._unwire(backend)
                raise
            self._backends[amphora_namespace] = backend
            return backend

    async def serve(self, amphora_namespace: str) -> None:
        """The amphora joins the map: new connections may go to it."""
        await self._set_serving(amphora_namespace, serving=True)

    async def drain(self, amphora_namespace: str) -> None:
        """The amphora leaves the map: no new connection goes to it, established ones stay."""
        await self._set_serving(amphora_namespace, serving=False)

    async def remove(self, amphora_namespace: str) -> None:
        """The amphora leaves the map and loses its route and link: only the connections it
        held fail. Its namespace (when it still exists) loses the VIP and the reply rule."""
        async with self._lock:
            backend = self._known(amphora_namespace)
            del self._backends[amphora_namespace]
            await self._apply()
            await self._unwire(backend)

    async def connections(self, amphora_namespace: str) -> int:
        """The established TCP connections the distributor tracks to the amphora (0 when it
        is not behind the distributor)."""
        backend = self._backends.get(amphora_namespace)
        if backend is None:
            return 0
        _, text = await self._ip.run(
            "netns", "exec", self._layout.namespace, self._conntrack, "-L", "-p", "tcp",
            "--state", "ESTABLISHED", "--mark", str(backend.slot), "-d", self._layout.vip,
        )  # fmt: skip
        match = _SHOWN.search(text)
        if match is None:
            raise InfrastructureError(f"conntrack gave no count: {text[-200:]}")
        return int(match.group(1))

    # -- internals ---------------------------------------------------------------------------

    def _known(self, amphora_namespace: str) -> Backend:
        try:
            return self._backends[amphora_namespace]
        except KeyError:
            raise InfrastructureError(
                f"{amphora_namespace} is not behind the distributor {self._layout.namespace}"
            ) from None

    def _next_slot(self) -> int:
        taken = {b.slot for b in self._backends.values()}
        capacity = self._layout.capacity
        for step in range(1, capacity + 1):
            slot = (self._last_slot + step - 1) % capacity + 1
            if slot not in taken:
                self._last_slot = slot
                return slot
        raise InfrastructureError(f"the distributor has no free slot left ({capacity} in use)")

    async def _set_serving(self, amphora_namespace: str, *, serving: bool) -> None:
        async with self._lock:
            before = self._known(amphora_namespace)
            self._backends[amphora_namespace] = replace(before, serving=serving)
            try:
                await self._apply()
            except InfrastructureError:
                self._backends[amphora_namespace] = before
                raise

    async def _wire(self, backend: Backend) -> None:
        ns, amphora = self._layout.namespace, backend.namespace
        vip = self._layout.vip
        near, far = self._layout.link_addresses(backend.slot)
        table = str(ROUTE_TABLE_BASE + backend.slot)
        await self._ip.run("-n", ns, "link", "del", backend.link, check=False)
        await self._ip.run(
            "-n", ns, "link", "add", backend.link, "type", "veth",
            "peer", "name", DISTRIBUTOR_INTERFACE, "netns", amphora,
        )  # fmt: skip
        await self._ip.run("-n", ns, "addr", "add", f"{near}/30", "dev", backend.link)
        await self._sysctl(ns, f"net.ipv4.conf.{backend.link}.rp_filter=0")
        await self._ip.run("-n", ns, "link", "set", backend.link, "up")
        await self._ip.run(
            "-n", ns, "route", "replace", "default", "via", far, "dev", backend.link,
            "table", table,
        )  # fmt: skip
        await self._ip.run("-n", ns, "rule", "del", "pref", table, check=False)
        await self._ip.run(
            "-n", ns, "rule", "add", "pref", table, "fwmark", str(backend.slot), "lookup", table
        )
        await self._sysctl(
            amphora,
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
            "net.ipv4.conf.all.rp_filter=0",
            f"net.ipv4.conf.{DISTRIBUTOR_INTERFACE}.rp_filter=0",
        )
        await self._ip.run("-n", amphora, "addr", "add", f"{far}/30", "dev", DISTRIBUTOR_INTERFACE)
        await self._ip.run("-n", amphora, "link", "set", DISTRIBUTOR_INTERFACE, "up")
        await self._ip.run("-n", amphora, "link", "set", "lo", "up")
        await self._ip.run("-n", amphora, "addr", "replace", f"{vip}/32", "dev", "lo")
        await self._ip.run(
            "-n", amphora, "route", "replace", "default", "via", near,
            "dev", DISTRIBUTOR_INTERFACE, "table", str(AMPHORA_TABLE),
        )  # fmt: skip
        await self._ip.run("-n", amphora, "rule", "del", "pref", str(_REPLY_RULE_PREF), check=False)
        await self._ip.run(
            "-n", amphora, "rule", "add", "pref", str(_REPLY_RULE_PREF), "from", vip,
            "lookup", str(AMPHORA_TABLE),
        )  # fmt: skip

    async def _unwire(self, backend: Backend) -> None:
        """Undo ``_wire`` (what exists of it): the slot's rule and link, and in the amphora's
        namespace, when it still exists, the VIP, the reply rule and route."""
        ns = self._layout.namespace
        await self._ip.run(
            "-n", ns, "rule", "del", "pref", str(ROUTE_TABLE_BASE + backend.slot), check=False
        )
        await self._ip.run("-n", ns, "link", "del", backend.link, check=False)
        if not namespace_exists(backend.namespace):
            return
        amphora, vip = backend.namespace, self._layout.vip
        await self._ip.run("-n", amphora, "addr", "del", f"{vip}/32", "dev", "lo", check=False)
        await self._ip.run("-n", amphora, "rule", "del", "pref", str(_REPLY_RULE_PREF), check=False)
        await self._ip.run(
            "-n", amphora, "route", "flush", "table", str(AMPHORA_TABLE), check=False
        )
        await self._ip.run("-n", amphora, "link", "del", DISTRIBUTOR_INTERFACE, check=False)

    async def _apply(self) -> None:
        """The ruleset for the current serving set, in one nft transaction."""
        serving = [b.slot for b in self.backends if b.serving]
        script = distribution_ruleset(self._layout.vip, VIP_INTERFACE, serving, self._layout.seed)
        fd, path = tempfile.mkstemp(prefix="distributor-", suffix=".nft")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(script)
            await self._ip.run("netns", "exec", self._layout.namespace, self._nft, "-f", path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    async def _sysctl(self, namespace: str, *settings: str) -> None:
        await self._ip.run("netns", "exec", namespace, "sysctl", "-qw", *settings)


class NetnsDistributors:
    """The distributors of a driver's ACTIVE_ACTIVE load balancers, by LB id."""

    def __init__(
        self, network: DistributorNetwork, prefix: str, links: str, command_timeout: float = 10.0
    ) -> None:
        self._network = network
        self._prefix = prefix
        self._links = links
        self._timeout = command_timeout
        self._by_lb: dict[str, NetnsDistributor] = {}
        # LB id -> amphora namespace -> amphora id, of the amphorae added.
        self._amphorae: dict[str, dict[str, str]] = {}
        self._lock = asyncio.Lock()

    def namespace_for(self, lb_id: str) -> str:
        """The namespace of the LB's distributor."""
        return f"{self._prefix}d{short_id(lb_id)}"

    def distributor(self, lb_id: str) -> NetnsDistributor | None:
        """The LB's distributor, when this process made it."""
        return self._by_lb.get(lb_id)

    async def _made(self, lb_id: str, vip: str) -> NetnsDistributor:
        async with self._lock:
            distributor = self._by_lb.get(lb_id)
            if distributor is not None:
                return distributor
            network = self._network.network_for(vip).name
            layout = DistributorLayout(
                self.namespace_for(lb_id), network, vip, self._links, secrets.randbits(32)
            )
            distributor = NetnsDistributor(self._network, layout, self._timeout)
            try:
                if not await distributor.adopt():
                    await distributor.create()
            except InfrastructureError:
                await distributor.delete()
                raise
            self._by_lb[lb_id] = distributor
            self._amphorae[lb_id] = {}
            return distributor

    async def add(self, lb_id: str, vip: str, amphora_id: str) -> None:
        distributor = await self._made(lb_id, vip)
        namespace = await self._network.name_namespace(amphora_id)
        if all(b.namespace != namespace for b in distributor.backends):
            await distributor.add(namespace)
        self._amphorae[lb_id][namespace] = amphora_id

    async def serve(self, lb_id: str, vip: str, amphora_id: str) -> None:
        await self._set(lb_id, vip, amphora_id, serving=True)

    async def drain(self, lb_id: str, vip: str, amphora_id: str) -> None:
        await self._set(lb_id, vip, amphora_id, serving=False)

    async def _set(self, lb_id: str, vip: str, amphora_id: str, *, serving: bool) -> None:
        await self.add(lb_id, vip, amphora_id)
        distributor = self._by_lb[lb_id]
        namespace = self._network.namespace_for(amphora_id)
        if any(b.namespace == namespace and b.serving != serving for b in distributor.backends):
            if serving:
                await distributor.serve(namespace)
            else:
                await distributor.drain(namespace)

    async def remove(self, lb_id: str, amphora_id: str) -> None:
        distributor = self._by_lb.get(lb_id)
        namespace = self._network.namespace_for(amphora_id)
        if distributor is not None and any(b.namespace == namespace for b in distributor.backends):
            await distributor.remove(namespace)
        self._amphorae.get(lb_id, {}).pop(namespace, None)

    async def delete(self, lb_id: str) -> None:
        distributor = self._by_lb.pop(lb_id, None)
        self._amphorae.pop(lb_id, None)
        if distributor is not None:
            await distributor.delete()
        elif namespace_exists(self.namespace_for(lb_id)):
            await IpRoute(self._timeout).run("netns", "del", self.namespace_for(lb_id), check=False)

    async def connections(self, lb_id: str, amphora_id: str) -> int:
        distributor = self._by_lb.get(lb_id)
        if distributor is None:
            return 0
        return await distributor.connections(self._network.namespace_for(amphora_id))

    def serving(self, lb_id: str) -> tuple[str, ...]:
        distributor = self._by_lb.get(lb_id)
        if distributor is None:
            return ()
        # Amphorae of an adopted distributor are named once the lifecycle adds them again.
        names = self._amphorae[lb_id]
        return tuple(
            names[b.namespace] for b in distributor.backends if b.serving and b.namespace in names
        )
