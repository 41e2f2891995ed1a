"""Operating status from heartbeats, rolled up member -> pool -> listener -> LB as Octavia does.

``LbView`` is what a heartbeat is judged against: the parts of one load balancer's state that
the roll-up needs, flattened once per state version so that each heartbeat costs a few dict
lookups. ``roll_up`` gives the statuses a heartbeat implies (Octavia's ``_update_health``);
``serving`` tells whether the amphora runs every listener it should (if not, its heartbeat does
not count as a sign of life and the stale scan will fail it over). Pure module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from libs.common.domain.model import (
    AmphoraBounds,
    LoadBalancerState,
    OperatingStatus,
    ProvisioningStatus,
)
from libs.common.heartbeat_codec import Heartbeat, PoolReport

OS = OperatingStatus
PS = ProvisioningStatus
# Provisioning statuses whose operating status health records. While an LB is PENDING_* the
# provisioner owns it and its tree is in flux; the next heartbeat after it settles catches up.
RECORDED: Final = frozenset({PS.ACTIVE, PS.ERROR})
# Listener protocols HAProxy does not serve (Octavia runs them in LVS; Fulcrum renders none).
_NOT_HAPROXY: Final = frozenset({"UDP", "SCTP"})


@dataclass(frozen=True, slots=True)
class MemberView:
    id: str
    current: OperatingStatus


@dataclass(frozen=True, slots=True)
class PoolView:
    id: str
    admin_up: bool
    members: tuple[MemberView, ...]


@dataclass(frozen=True, slots=True)
class ListenerView:
    id: str
    admin_up: bool


@dataclass(frozen=True, slots=True)
class LbView:
    """One load balancer as of stream ``version``, with every observed status now recorded."""

    lb_id: str
    version: int
    provisioning_status: ProvisioningStatus
    admin_up: bool
    listeners: tuple[ListenerView, ...]
    pools: tuple[PoolView, ...]
    amphora_ids: frozenset[str]
    current: dict[str, OperatingStatus]
    # Listeners every serving amphora of an ACTIVE, enabled LB must report.
    expected_listeners: frozenset[str]
    # ACTIVE_ACTIVE only: how many amphorae the autoscaler may give it.
    amphora_bounds: AmphoraBounds | None = None
    # Its flavor's autoscaler settings (ACTIVE_ACTIVE only).
    autoscale: tuple[tuple[str, float], ...] = ()

    @property
    def recorded(self) -> bool:
        """Whether health records this LB's statuses now (ACTIVE or ERROR, not deleted)."""
        return self.provisioning_status in RECORDED

    @classmethod
    def of(cls, state: LoadBalancerState) -> LbView | None:
        """The view of ``state``; None for an unknown or deleted load balancer."""
        lb = state.loadbalancer
        if lb is None or lb.provisioning_status == PS.DELETED:
            return None
        members_by_pool: dict[str, list[MemberView]] = {}
        current: dict[str, OperatingStatus] = {lb.id: lb.operating_status}
        for member in state.members.values():
            if member.provisioning_status == PS.PENDING_DELETE:
                continue
            members_by_pool.setdefault(member.pool_id, []).append(
                MemberView(member.id, member.operating_status)
            )
            current[member.id] = member.operating_status
        listeners = []
        for listener in state.listeners.values():
            if listener.provisioning_status == PS.PENDING_DELETE:
                continue
            listeners.append(ListenerView(listener.id, listener.admin_state_up))
            current[listener.id] = listener.operating_status
        pools = []
        for pool in state.pools.values():
            if pool.provisioning_status == PS.PENDING_DELETE:
                continue
            pools.append(
                PoolView(pool.id, pool.admin_state_up, tuple(members_by_pool.get(pool.id, ())))
            )
            current[pool.id] = pool.operating_status
        expected = frozenset(
            li.id
            for li in state.listeners.values()
            if li.admin_state_up
            and li.provisioning_status == PS.ACTIVE
            and li.protocol.value not in _NOT_HAPROXY
        )
        return cls(
            lb_id=lb.id,
            version=state.version,
            provisioning_status=lb.provisioning_status,
            admin_up=lb.admin_state_up,
            listeners=tuple(listeners),
            pools=tuple(pools),
            amphora_ids=frozenset(state.amphora_ids),
            current=current,
            expected_listeners=expected,
            amphora_bounds=lb.amphora_bounds,
            autoscale=tuple(sorted(lb.autoscale.items())),
        )


def serving(view: LbView, amphora_id: str, heartbeat: Heartbeat) -> bool:
    """Whether the heartbeat shows the amphora serving the LB (Octavia's listener count check).

    Only an ACTIVE, enabled LB's own amphorae are held to it: while the LB is PENDING_* (config
    on its way), ERROR (a failover would not help) or disabled, any heartbeat is a sign of life.
    """
    if view.provisioning_status != PS.ACTIVE or not view.admin_up:
        return True
    if amphora_id not in view.amphora_ids:
        return True
    return view.expected_listeners.issubset(heartbeat.listeners.keys())


def _pools_by_id(heartbeat: Heartbeat) -> dict[str, PoolReport]:
    """Backends ``<pool_id>:<listener_id>`` merged per pool: a pool behind two listeners is UP
    if either backend is, and a member keeps the first status reported for it."""
    pools: dict[str, PoolReport] = {}
    for backend, report in heartbeat.pools.items():
        pool_id = backend.split(":", 1)[0]
        seen = pools.get(pool_id)
        if seen is None:
            pools[pool_id] = report
            continue
        status = "UP" if "UP" in (seen.status, report.status) else seen.status
        pools[pool_id] = PoolReport(status=status, members={**report.members, **seen.members})
    return pools


def _member_status(reported: str) -> OperatingStatus | None:
    # HAProxy adds transition counters ("UP 1/3", "DOWN 2/3"); the state is the first word.
    if reported.startswith("UP"):
        return OS.ONLINE
    if reported.startswith("DOWN"):
        return OS.ERROR
    if reported in ("DRAIN", "NOLB"):
        return OS.DRAINING
    if reported.startswith("MAINT"):
        return OS.OFFLINE
    if reported == "no check":
        return OS.NO_MONITOR
    return None  # unknown or transitional: keep what is recorded


def roll_up(view: LbView, heartbeat: Heartbeat) -> dict[str, OperatingStatus]:
    """The operating statuses ``heartbeat`` implies for the LB and its tree.

    Listener: OPEN -> ONLINE, FULL -> DEGRADED (LB DEGRADED), missing -> ERROR if enabled and
    the LB is ACTIVE, else OFFLINE. Pool: UP -> ONLINE, DOWN -> ERROR (LB ERROR), absent ->
    OFFLINE (its members untouched), disabled -> OFFLINE. Member: UP -> ONLINE, DOWN -> ERROR
    (pool and LB DEGRADED), DRAIN -> DRAINING, MAINT -> OFFLINE, "no check" -> NO_MONITOR,
    unreported -> OFFLINE unless NO_MONITOR. LB: ONLINE (OFFLINE if disabled), then as above;
    ERROR outranks DEGRADED, and a disabled LB stays OFFLINE. Unknown strings change nothing.
    """
    out: dict[str, OperatingStatus] = {}
    lb_status = OS.ONLINE if view.admin_up else OS.OFFLINE
    for listener in view.listeners:
        report = heartbeat.listeners.get(listener.id)
        if report is None:
            enabled_and_active = listener.admin_up and view.provisioning_status == PS.ACTIVE
            out[listener.id] = OS.ERROR if enabled_and_active else OS.OFFLINE
        elif report.status == "FULL":
            out[listener.id] = OS.DEGRADED
            if lb_status == OS.ONLINE:
                lb_status = OS.DEGRADED
        elif report.status == "OPEN":
            out[listener.id] = OS.ONLINE
    reported_pools = _pools_by_id(heartbeat)
    for pool in view.pools:
        pool_report = reported_pools.get(pool.id)
        if not pool.admin_up or pool_report is None:
            out[pool.id] = OS.OFFLINE
            continue
        pool_status: OperatingStatus | None = None
        if pool_report.status == "UP":
            pool_status = OS.ONLINE
        elif pool_report.status == "DOWN":
            pool_status = OS.ERROR
            if lb_status != OS.OFFLINE:
                lb_status = OS.ERROR
        for member in pool.members:
            reported = pool_report.members.get(member.id)
            if reported is None:
                if member.current != OS.NO_MONITOR:
                    out[member.id] = OS.OFFLINE
                continue
            status = _member_status(reported)
            if status is None:
                continue
            out[member.id] = status
            if status == OS.ERROR and pool_status == OS.ONLINE:
                pool_status = OS.DEGRADED
                if lb_status == OS.ONLINE:
                    lb_status = OS.DEGRADED
        if pool_status is not None:
            out[pool.id] = pool_status
    out[view.lb_id] = lb_status
    return out


def changes(view: LbView, statuses: dict[str, OperatingStatus]) -> dict[str, OperatingStatus]:
    """The subset of ``statuses`` that differs from what the view has recorded."""
    current = view.current
    return {rid: s for rid, s in statuses.items() if current.get(rid, s) != s}
