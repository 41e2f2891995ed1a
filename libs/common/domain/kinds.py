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
    # The singular name: the quota resource (as Octavia's quota API spells it), the created
    # event's snapshot attribute, "<name>_id" in the other events and "<name>_view".
    name: str
    model: type[Resource]
    # How messages name it ("Listener 123 already exists.").
    label: str
    # The model field that holds the parent's id (the view's parent_id column).
    parent_field: str
    created: type[Event]
    updated: type[Event]
    deleted: type[Event]
    # Whether health reports its operating status.
    observed: bool = True

    @property
    def quota(self) -> str:
        return self.name

    @property
    def snapshot_attr(self) -> str:
        return self.name

    @property
    def id_attr(self) -> str:
        return f"{self.name}_id"

    @property
    def view_table(self) -> str:
        return f"{self.name}_view"


LISTENER: Final = ChildKind(
    key="listeners",
    name="listener",
    model=Listener,
    label="Listener",
    parent_field="loadbalancer_id",
    created=ev.ListenerCreated,
    updated=ev.ListenerUpdated,
    deleted=ev.ListenerDeleted,
)
POOL: Final = ChildKind(
    key="pools",
    name="pool",
    model=Pool,
    label="Pool",
    parent_field="loadbalancer_id",
    created=ev.PoolCreated,
    updated=ev.PoolUpdated,
    deleted=ev.PoolDeleted,
)
MEMBER: Final = ChildKind(
    key="members",
    name="member",
    model=Member,
    label="Member",
    parent_field="pool_id",
    created=ev.MemberAdded,
    updated=ev.MemberUpdated,
    deleted=ev.MemberRemoved,
)
HEALTHMONITOR: Final = ChildKind(
    key="healthmonitors",
    name="healthmonitor",
    model=HealthMonitor,
    label="Health Monitor",
    parent_field="pool_id",
    created=ev.HealthMonitorCreated,
    updated=ev.HealthMonitorUpdated,
    deleted=ev.HealthMonitorDeleted,
)
L7POLICY: Final = ChildKind(
    key="l7policies",
    name="l7policy",
    model=L7Policy,
    label="L7 Policy",
    parent_field="listener_id",
    created=ev.L7PolicyCreated,
    updated=ev.L7PolicyUpdated,
    deleted=ev.L7PolicyDeleted,
    observed=False,
)
L7RULE: Final = ChildKind(
    key="l7rules",
    name="l7rule",
    model=L7Rule,
    label="L7 Rule",
    parent_field="l7policy_id",
    created=ev.L7RuleCreated,
    updated=ev.L7RuleUpdated,
    deleted=ev.L7RuleDeleted,
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
