"""The child kinds of the LoadBalancer aggregate, in one table.

Each descriptor names everything that differs between listeners, pools, members, health
monitors, L7 policies and L7 rules: the state collection, the model, the label in messages,
the parent field, the view table, the quota resource and the events. ``decide``, ``evolve``,
the read model and the API take their per-kind facts from here; adding a kind is one entry
(plus its model, state collection, events and API schemas).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from libs.common.domain.model import (
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    Member,
    Pool,
    Resource,
)
from libs.common.events import Event
from libs.common.events import loadbalancer as ev


@dataclass(frozen=True)
class ChildKind:
    """One child kind. ``key`` is its collection in LoadBalancerState and in the API's kinds."""

    key: str
    model: type[Resource]
    # How messages name it ("Listener 123 already exists.").
    label: str
    # The model field that holds the parent's id (the view's parent_id column).
    parent_field: str
    view_table: str
    # The quota resource, as Octavia's quota API spells it.
    quota: str
    created: type[Event]
    updated: type[Event]
    deleted: type[Event]
    # The created event's snapshot attribute and the update/delete events' id attribute.
    snapshot_attr: str
    id_attr: str
    # Whether health observes its operating status (else the control plane sets it on settling).
    observed: bool


LISTENER: Final = ChildKind(
    key="listeners",
    model=Listener,
    label="Listener",
    parent_field="loadbalancer_id",
    view_table="listener_view",
    quota="listener",
    created=ev.ListenerCreated,
    updated=ev.ListenerUpdated,
    deleted=ev.ListenerDeleted,
    snapshot_attr="listener",
    id_attr="listener_id",
    observed=True,
)
POOL: Final = ChildKind(
    key="pools",
    model=Pool,
    label="Pool",
    parent_field="loadbalancer_id",
    view_table="pool_view",
    quota="pool",
    created=ev.PoolCreated,
    updated=ev.PoolUpdated,
    deleted=ev.PoolDeleted,
    snapshot_attr="pool",
    id_attr="pool_id",
    observed=True,
)
MEMBER: Final = ChildKind(
    key="members",
    model=Member,
    label="Member",
    parent_field="pool_id",
    view_table="member_view",
    quota="member",
    created=ev.MemberAdded,
    updated=ev.MemberUpdated,
    deleted=ev.MemberRemoved,
    snapshot_attr="member",
    id_attr="member_id",
    observed=True,
)
HEALTHMONITOR: Final = ChildKind(
    key="healthmonitors",
    model=HealthMonitor,
    label="Health Monitor",
    parent_field="pool_id",
    view_table="healthmonitor_view",
    quota="healthmonitor",
    created=ev.HealthMonitorCreated,
    updated=ev.HealthMonitorUpdated,
    deleted=ev.HealthMonitorDeleted,
    snapshot_attr="healthmonitor",
    id_attr="healthmonitor_id",
    observed=True,
)
L7POLICY: Final = ChildKind(
    key="l7policies",
    model=L7Policy,
    label="L7 Policy",
    parent_field="listener_id",
    view_table="l7policy_view",
    quota="l7policy",
    created=ev.L7PolicyCreated,
    updated=ev.L7PolicyUpdated,
    deleted=ev.L7PolicyDeleted,
    snapshot_attr="l7policy",
    id_attr="l7policy_id",
    observed=False,
)
L7RULE: Final = ChildKind(
    key="l7rules",
    model=L7Rule,
    label="L7 Rule",
    parent_field="l7policy_id",
    view_table="l7rule_view",
    quota="l7rule",
    created=ev.L7RuleCreated,
    updated=ev.L7RuleUpdated,
    deleted=ev.L7RuleDeleted,
    snapshot_attr="l7rule",
    id_attr="l7rule_id",
    observed=False,
)

# The order in which state, events and views list the kinds.
CHILD_KINDS: Final[tuple[ChildKind, ...]] = (
    LISTENER,
    POOL,
    MEMBER,
    HEALTHMONITOR,
    L7POLICY,
    L7RULE,
)
BY_KEY: Final = {k.key: k for k in CHILD_KINDS}
BY_MODEL: Final[dict[type[Resource], ChildKind]] = {k.model: k for k in CHILD_KINDS}
BY_CREATED: Final[dict[type[Event], ChildKind]] = {k.created: k for k in CHILD_KINDS}
BY_UPDATED: Final[dict[type[Event], ChildKind]] = {k.updated: k for k in CHILD_KINDS}
BY_DELETED: Final[dict[type[Event], ChildKind]] = {k.deleted: k for k in CHILD_KINDS}


def kind_of(child: Resource) -> ChildKind:
    """The kind of a child resource; raises KeyError for anything else."""
    return BY_MODEL[type(child)]
