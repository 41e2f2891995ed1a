"""Events of the ``loadbalancer-<id>`` stream: the LB and every child it owns.

Children events carry a full resource snapshot on creation and a dict of changed fields on
update, so evolve treats every kind alike. Statuses change only through these events.
"""

from __future__ import annotations

from typing import Any, ClassVar

from libs.common.domain.model import (
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancer,
    Member,
    OperatingStatus,
    Pool,
)
from libs.common.events._registry import Event


class LoadBalancerEvent(Event):
    category: ClassVar[str] = "loadbalancer"


class LoadBalancerCreated(LoadBalancerEvent, name="LoadBalancerCreated"):
    """A load balancer (and, for a graph create, its whole tree) was accepted."""

    loadbalancer: LoadBalancer
    listeners: tuple[Listener, ...] = ()
    pools: tuple[Pool, ...] = ()
    members: tuple[Member, ...] = ()
    healthmonitors: tuple[HealthMonitor, ...] = ()
    l7policies: tuple[L7Policy, ...] = ()
    l7rules: tuple[L7Rule, ...] = ()


class LoadBalancerUpdated(LoadBalancerEvent, name="LoadBalancerUpdated"):
    changes: dict[str, Any]


class LoadBalancerDeletionRequested(LoadBalancerEvent, name="LoadBalancerDeletionRequested"):
    """The LB (and with cascade every child) went PENDING_DELETE."""

    cascade: bool = False


class LoadBalancerDeleted(LoadBalancerEvent, name="LoadBalancerDeleted"):
    """The amphorae are gone; the LB is DELETED and its VIP free."""


class LoadBalancerActivated(LoadBalancerEvent, name="LoadBalancerActivated"):
    """The LB serves on its VIP from these amphorae; every pending child is settled."""

    amphora_ids: tuple[str, ...]


class ChangesApplied(LoadBalancerEvent, name="ChangesApplied"):
    """The config of every pending change runs on the amphorae; pending children settle."""


class ProvisioningFailed(LoadBalancerEvent, name="ProvisioningFailed"):
    """A step failed: the LB and every pending child go ERROR with ``reason``."""

    reason: str


class LoadBalancerFailoverRequested(LoadBalancerEvent, name="LoadBalancerFailoverRequested"):
    """Replace the LB's amphorae (all of them, or only ``amphora_id``)."""

    amphora_id: str | None = None
    reason: str = ""


class OperatingStatusChanged(LoadBalancerEvent, name="OperatingStatusChanged"):
    """Observed operating statuses that changed, by resource id (from health)."""

    statuses: dict[str, OperatingStatus]


class ListenerCreated(LoadBalancerEvent, name="ListenerCreated"):
    listener: Listener


class ListenerUpdated(LoadBalancerEvent, name="ListenerUpdated"):
    listener_id: str
    changes: dict[str, Any]


class ListenerDeleted(LoadBalancerEvent, name="ListenerDeleted"):
    listener_id: str


class PoolCreated(LoadBalancerEvent, name="PoolCreated"):
    pool: Pool
    listener_id: str | None = None


class PoolUpdated(LoadBalancerEvent, name="PoolUpdated"):
    pool_id: str
    changes: dict[str, Any]


class PoolDeleted(LoadBalancerEvent, name="PoolDeleted"):
    pool_id: str


class MemberAdded(LoadBalancerEvent, name="MemberAdded"):
    member: Member


class MemberUpdated(LoadBalancerEvent, name="MemberUpdated"):
    member_id: str
    changes: dict[str, Any]


class MemberRemoved(LoadBalancerEvent, name="MemberRemoved"):
    member_id: str


class HealthMonitorCreated(LoadBalancerEvent, name="HealthMonitorCreated"):
    healthmonitor: HealthMonitor


class HealthMonitorUpdated(LoadBalancerEvent, name="HealthMonitorUpdated"):
    healthmonitor_id: str
    changes: dict[str, Any]


class HealthMonitorDeleted(LoadBalancerEvent, name="HealthMonitorDeleted"):
    healthmonitor_id: str


class L7PolicyCreated(LoadBalancerEvent, name="L7PolicyCreated"):
    l7policy: L7Policy


class L7PolicyUpdated(LoadBalancerEvent, name="L7PolicyUpdated"):
    l7policy_id: str
    changes: dict[str, Any]


class L7PolicyDeleted(LoadBalancerEvent, name="L7PolicyDeleted"):
    l7policy_id: str


class L7RuleCreated(LoadBalancerEvent, name="L7RuleCreated"):
    l7rule: L7Rule


class L7RuleUpdated(LoadBalancerEvent, name="L7RuleUpdated"):
    l7rule_id: str
    changes: dict[str, Any]


class L7RuleDeleted(LoadBalancerEvent, name="L7RuleDeleted"):
    l7rule_id: str
