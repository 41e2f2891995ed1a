"""The amphora's UDP data plane: nftables DNAT (``services.amphora.udp_ruleset``) kept in step
with the members' health (``services.amphora.udp_health``).

``apply`` installs a ``UdpConfig``: the table is replaced when the listeners' rules change, else
only the slot maps are rewritten (live, one transaction; persistence state and flows stay). One
monitor task per monitored member runs its checks; a member that goes down leaves the slot
maps at once and its flows are removed from conntrack (``conntrack -D``), so its clients move
to another member with their next datagram; one that comes back takes its share again. A
member drained (weight 0) takes no new flows but keeps its own; a disabled one loses them. UDP is
served only by an amphora with a network namespace of its own (it turns on forwarding there).
LEAST_CONNECTIONS listeners get their flows counted per member from conntrack every
``LC_INTERVAL``; their slots all go to the members with the fewest flows (ties share them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from libs.common.agent_contract import (
    UdpAlgorithm,
    UdpConfig,
    UdpListener,
    UdpListenerStatus,
    UdpMember,
    UdpMemberState,
    UdpStatus,
)
from libs.common.errors import Conflict
from services.amphora.adapters.nftables import Nftables
from services.amphora.udp_health import MemberHealth, probe
from services.amphora.udp_ruleset import SlotTable, assign_slots, elements, endpoint, ruleset

log = logging.getLogger(__name__)

_FORWARDING: Final = (
    Path("/proc/sys/net/ipv4/ip_forward"),
    Path("/proc/sys/net/ipv6/conf/all/forwarding"),
)
_IN_SERVICE: Final = frozenset({UdpMemberState.UP, UdpMemberState.NO_CHECK})
_FLOWING: Final = _IN_SERVICE | {UdpMemberState.DRAIN}
_NO_TRAFFIC: Final = {"conns": 0, "rx": 0, "tx": 0, "totconns": 0, "ereq": 0}
# Seconds between two counts of a LEAST_CONNECTIONS listener's flows.
LC_INTERVAL: Final = 0.5
# Seconds a conntrack listing or deletion may take before it is killed (and counts as failed).
CONNTRACK_TIMEOUT: Final = 5.0

# (listener id, member id)
MemberKey = tuple[str, str]


def default_conntrack_binary() -> Path | None:
    found = shutil.which("conntrack")
    return Path(found) if found else None


@dataclass
class UdpDataPlane:
    """One amphora's UDP listeners. ``own_namespace`` False: UDP configs are refused (409)."""

    nft: Nftables
    own_namespace: bool
    conntrack: Path | None = field(default_factory=default_conntrack_binary)
    _config: UdpConfig = field(default_factory=UdpConfig)
    _sha256: str | None = None
    _structure: str | None = None
    _slots: dict[str, SlotTable] = field(default_factory=dict)
    _health: dict[MemberKey, MemberHealth] = field(default_factory=dict)
    _monitors: dict[MemberKey, asyncio.Task[None]] = field(default_factory=dict)
    # LEAST_CONNECTIONS: listener id -> the members (ids) with the fewest flows now.
    _least: dict[str, frozenset[str]] = field(default_factory=dict)
    _balancer: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def config_sha256(self) -> str | None:
        return self._sha256

    # -- state of members ----------------------------------------------------------------

    def _state(self, listener: UdpListener, member: UdpMember) -> UdpMemberState:
        if not member.enabled:
            return UdpMemberState.MAINT
        if member.weight == 0:
            return UdpMemberState.DRAIN
        if listener.monitor is None:
            return UdpMemberState.NO_CHECK
        health = self._health.get((listener.id, member.id))
        return UdpMemberState.UP if health is None or health.up else UdpMemberState.DOWN

    def status(self) -> UdpStatus:
        return UdpStatus(
            config_sha256=self._sha256,
            listeners=[
                UdpListenerStatus(
                    id=li.id,
                    pool_id=li.pool_id,
                    members={m.id: self._state(li, m) for m in li.members},
                )
                for li in self._config.listeners
            ],
        )

    def heartbeat_part(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The UDP listeners and pools in the heartbeat's v3 form (no traffic counters)."""
        listeners: dict[str, Any] = {}
        pools: dict[str, Any] = {}
        for li in self._config.listeners:
            listeners[li.id] = {"status": "OPEN", "stats": dict(_NO_TRAFFIC)}
            if li.pool_id is None:
                continue
            members = {m.id: self._state(li, m).value for m in li.members}
            up = any(UdpMemberState(s) in _IN_SERVICE for s in members.values())
            pools[f"{li.pool_id}:{li.id}"] = {"status": "UP" if up else "DOWN", "members": members}
        return listeners, pools

    # -- applying ------------------------------------------------------------------------

    def _elements(self) -> str:
        tables: dict[str, SlotTable] = {}
        endpoints: dict[str, str] = {}
        for li in self._config.listeners:
            weights = {m.id: m.weight for m in li.members if self._state(li, m) in _IN_SERVICE}
            least = self._least.get(li.id, frozenset()) & weights.keys()
            if li.algorithm is UdpAlgorithm.LEAST_CONNECTIONS and least:
                weights = {m: 1 for m in weights if m in least}
            tables[li.id] = assign_slots(self._slots.get(li.id, []), weights)
            endpoints.update({m.id: endpoint(m.address, m.port) for m in li.members})
        self._slots = tables
        return elements(self._config, tables, endpoints)

    async def apply(self, config: UdpConfig) -> str:
        """Serve ``config`` (every UDP listener); returns its sha256. Same config: no-op."""
        text = config.model_dump_json()
        digest = hashlib.sha256(text.encode()).hexdigest()
        if config.listeners and not self.own_namespace:
            raise Conflict("this amphora has no network namespace of its own: it cannot serve UDP")
        async with self._lock:
            if digest == self._sha256 or (not config.listeners and self._structure is None):
                return digest  # the same, or nothing to remove: nft is not even needed
            before = self._flowing()
            structure = ruleset(config)
            self._config = config
            self._keep_health()
            script = self._elements()
            if structure != self._structure:
                await self.nft.apply(structure + script)
            else:
                await self.nft.apply(script)
            self._structure, self._sha256 = structure, (digest if config.listeners else None)
            if config.listeners:
                _enable_forwarding()
            await self._forget_flows(before - self._flowing())
        self._restart_monitors()
        self._restart_balancer()
        return digest

    async def discard(self) -> None:
        """Stop serving UDP: monitors stopped, table removed."""
        await self.apply(UdpConfig())
        await self.close()

    async def close(self) -> None:
        tasks = list(self._monitors.values())
        if self._balancer is not None:
            tasks.append(self._balancer)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._monitors.clear()
        self._balancer = None

    def _keep_health(self) -> None:
        """Keep the health of members whose check is unchanged; forget the rest."""
        wanted = {
            (li.id, m.id): li.monitor
            for li in self._config.listeners
            for m in li.members
            if li.monitor is not None
        }
        for key in list(self._health):
            if key not in wanted:
                del self._health[key]
        for key, monitor in wanted.items():
            if monitor is not None and key not in self._health:
                self._health[key] = MemberHealth(rise=monitor.rise, fall=monitor.fall)

    def _flowing(self) -> set[tuple[str, int, str, int]]:
        """(VIP, port, member address, member port) of every member whose flows may go on:
        those in a slot map, and those draining (weight 0: no new flows, old ones finish)."""
        return {
            (vip, li.port, m.address, m.port)
            for li in self._config.listeners
            for m in li.members
            if self._state(li, m) in _FLOWING
            for vip in li.addresses
        }

    async def _forget_flows(self, gone: set[tuple[str, int, str, int]]) -> None:
        """Delete the conntrack entries of flows to members that left the maps."""
        if self.conntrack is None:
            return
        for vip, port, address, member_port in sorted(gone):
            process = await asyncio.create_subprocess_exec(
                str(self.conntrack), "-D", "-p", "udp",
                "--orig-dst", vip, "--dport", str(port),
                "--reply-src", address, "--reply-port-src", str(member_port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await _finished(process)

    # -- monitors ------------------------------------------------------------------------

    def _restart_monitors(self) -> None:
        wanted: dict[MemberKey, tuple[UdpListener, UdpMember]] = {
            (li.id, m.id): (li, m)
            for li in self._config.listeners
            for m in li.members
            if li.monitor is not None
        }
        for key, task in list(self._monitors.items()):
            task.cancel()
            del self._monitors[key]
        for key, (li, m) in wanted.items():
            self._monitors[key] = asyncio.create_task(self._monitor(key, li, m), name=f"udp {key}")

    async def _monitor(self, key: MemberKey, listener: UdpListener, member: UdpMember) -> None:
        monitor = listener.monitor
        assert monitor is not None
        address = member.monitor_address or member.address
        port = member.monitor_port or member.port
        while True:
            try:
                passed = await probe(monitor, address, port)
            except Exception:
                log.exception("udp: check of member %s failed to run", member.id)
                passed = False
            health = self._health.get(key)
            if health is not None and health.record(passed):
                log.info(
                    "udp member %s of listener %s is %s",
                    member.id, listener.id, "up" if health.up else "down",
                )  # fmt: skip
                try:
                    await self._refresh()
                except Exception:
                    log.exception("udp: the slot maps could not follow member %s", member.id)
            await asyncio.sleep(monitor.delay)

    # -- LEAST_CONNECTIONS ---------------------------------------------------------------

    def _restart_balancer(self) -> None:
        if self._balancer is not None:
            self._balancer.cancel()
            self._balancer = None
        least_connections = any(
            li.algorithm is UdpAlgorithm.LEAST_CONNECTIONS for li in self._config.listeners
        )
        if least_connections and self.conntrack is not None:
            self._balancer = asyncio.create_task(self._balance(), name="udp least connections")

    async def _balance(self) -> None:
        """Every LC_INTERVAL: count each LEAST_CONNECTIONS listener's flows per member
        (conntrack) and give the slots to the members with the fewest."""
        while True:
            try:
                least = {
                    li.id: await self._fewest_flows(li)
                    for li in self._config.listeners
                    if li.algorithm is UdpAlgorithm.LEAST_CONNECTIONS
                }
                if least != self._least:
                    counted, self._least = self._least, least
                    try:
                        await self._refresh()
                    except BaseException:
                        self._least = counted  # not in the maps: the next round tries again
                        raise
            except Exception:
                log.exception("udp: least-connections balancing failed this round")
            await asyncio.sleep(LC_INTERVAL)

    async def _fewest_flows(self, listener: UdpListener) -> frozenset[str]:
        """The listener's members in service with the fewest flows in conntrack."""
        members = {
            (m.address, m.port): m.id
            for m in listener.members
            if self._state(listener, m) in _IN_SERVICE
        }
        counts = dict.fromkeys(members.values(), 0)
        assert self.conntrack is not None
        for vip in listener.addresses:
            process = await asyncio.create_subprocess_exec(
                str(self.conntrack), "-L", "-p", "udp", "--orig-dst", vip,
                "--dport", str(listener.port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            out = await _finished(process)
            for reply in flow_replies(out.decode(errors="replace")):
                member = members.get(reply)
                if member is not None:
                    counts[member] += 1
        if not counts:
            return frozenset()
        fewest = min(counts.values())
        return frozenset(m for m, n in counts.items() if n == fewest)

    async def _refresh(self) -> None:
        """Slot maps rewritten after a health change (nothing else is touched)."""
        async with self._lock:
            if self._structure is None or not self._config.listeners:
                return
            script = self._elements()
            await self.nft.apply(script)
            await self._forget_flows(self._stopped())

    def _stopped(self) -> set[tuple[str, int, str, int]]:
        """Like ``_flowing``, for the members whose flows must end (down, or disabled)."""
        return {
            (vip, li.port, m.address, m.port)
            for li in self._config.listeners
            for m in li.members
            if self._state(li, m) not in _FLOWING
            for vip in li.addresses
        }


def flow_replies(listing: str) -> list[tuple[str, int]]:
    """(address, port) each flow of a ``conntrack -L`` listing is answered from: the reply
    direction's source, the second ``src=``/``sport=`` of a line."""
    replies = []
    for line in listing.splitlines():
        sources = [t[4:] for t in line.split() if t.startswith("src=")]
        ports = [t[6:] for t in line.split() if t.startswith("sport=")]
        if len(sources) >= 2 and len(ports) >= 2 and ports[1].isdigit():
            replies.append((sources[1], int(ports[1])))
    return replies


def _enable_forwarding() -> None:
    """Forward in the amphora's namespace: DNATed datagrams leave for the members."""
    for path in _FORWARDING:
        with contextlib.suppress(OSError):
            path.write_text("1\n")


async def _finished(process: asyncio.subprocess.Process) -> bytes:
    """``process``'s standard output once it exits; killed after ``CONNTRACK_TIMEOUT`` (a
    hung conntrack must not stall the balancing or a config change): TimeoutError then."""
    try:
        out, _ = await asyncio.wait_for(process.communicate(), CONNTRACK_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return out or b""
