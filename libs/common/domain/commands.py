"""Commands to the LoadBalancer aggregate: imperatives built by the API and the provisioner.

Commands carry fully built resources (ids, defaults and timestamps chosen by the caller), so
``decide`` stays pure and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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

Child = Listener | Pool | Member | HealthMonitor | L7Policy | L7Rule


@dataclass(frozen=True)
class CreateLoadBalancer:
    """Create an LB, optionally with its whole tree (Octavia's single-call create)."""

    loadbalancer: LoadBalancer
    listeners: tuple[Listener, ...] = ()
    pools: tuple[Pool, ...] = ()
    members: tuple[Member, ...] = ()
    healthmonitors: tuple[HealthMonitor, ...] = ()
    l7policies: tuple[L7Policy, ...] = ()
    l7rules: tuple[L7Rule, ...] = ()


@dataclass(frozen=True)
class UpdateLoadBalancer:
    changes: dict[str, Any]
    now: datetime


@dataclass(frozen=True)
class DeleteLoadBalancer:
    cascade: bool = False


@dataclass(frozen=True)
class FailoverLoadBalancer:
    amphora_id: str | None = None
    reason: str = "requested by an administrator"


@dataclass(frozen=True)
class ScaleLoadBalancer:
    """Grow or shrink an ACTIVE ACTIVE_ACTIVE LB to ``amphorae`` (within its bounds), because
    of ``measurements`` (per amphora: name -> value) and ``reason``."""

    amphorae: int
    measurements: dict[str, float] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class CreateChild:
    """Create one listener, pool, member, health monitor, L7 policy or L7 rule."""

    child: Child
    # For a pool created with listener_id: it becomes that listener's default pool.
    listener_id: str | None = None


@dataclass(frozen=True)
class UpdateChild:
    # The kind's key in libs.common.domain.kinds (its state collection: "listeners", ...).
    kind: str
    child_id: str
    changes: dict[str, Any]
    now: datetime


@dataclass(frozen=True)
class DeleteChild:
    kind: str
    child_id: str


@dataclass(frozen=True)
class ReplaceMembers:
    """Octavia's batch member update: members matched by (address, protocol_port)."""

    pool_id: str
    members: tuple[Member, ...]
    additive_only: bool
    now: datetime


# Commands of the provisioner and the health service.
def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Activate:
    amphora_ids: tuple[str, ...]
    now: datetime = field(default_factory=_utcnow)


@dataclass(frozen=True)
class ApplyChanges:
    now: datetime = field(default_factory=_utcnow)


@dataclass(frozen=True)
class FailProvisioning:
    reason: str
    now: datetime = field(default_factory=_utcnow)


@dataclass(frozen=True)
class CompleteDeletion:
    pass


@dataclass(frozen=True)
class RedriveProvisioning:
    """Housekeeping: the pending work outlived its bound; have the provisioner act again.

    Allowed only while the LB is PENDING_* (a no-op otherwise): it changes no status.
    """

    attempt: int
    pending_seconds: float


@dataclass(frozen=True)
class RecordOperatingStatuses:
    statuses: dict[str, OperatingStatus] = field(default_factory=dict)


Command = (
    CreateLoadBalancer
    | UpdateLoadBalancer
    | DeleteLoadBalancer
    | FailoverLoadBalancer
    | ScaleLoadBalancer
    | CreateChild
    | UpdateChild
    | DeleteChild
    | ReplaceMembers
    | Activate
    | ApplyChanges
    | FailProvisioning
    | CompleteDeletion
    | RedriveProvisioning
    | RecordOperatingStatuses
)
