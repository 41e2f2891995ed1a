"""What an LB's pending work is, which amphorae it needs, and what a failover replaces.

Pure: functions of the LB's folded state, its events and what the driver reports running.
An amphora's id derives from the event that asked for it and its role, so a redelivered event
or a restarted provisioner names the amphora it already started instead of a second one.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from libs.common.domain.model import LoadBalancer, LoadBalancerState, ProvisioningStatus, Topology
from libs.common.events import Envelope
from libs.common.events import loadbalancer as lb_ev
from libs.common.events import loadbalancer_status as status_ev

AMPHORA_NAMESPACE: Final = uuid.UUID("7c1e2f34-5a6b-4c8d-9e0f-a1b2c3d4e5f6")
PS = ProvisioningStatus
_PENDING: Final = (PS.PENDING_CREATE, PS.PENDING_UPDATE, PS.PENDING_DELETE)


class WorkKind(StrEnum):
    """The step an LB waits for."""

    NONE = "none"
    CREATE = "create"
    APPLY = "apply"
    FAILOVER = "failover"
    SCALE = "scale"
    DELETE = "delete"


@dataclass(frozen=True)
class PendingWork:
    """What the LB's stream says is left to do, the event that asked for it (create,
    failover, scale), and for "apply" the events since the last settlement."""

    kind: WorkKind
    cause: Envelope | None = None
    pending: tuple[Envelope, ...] = ()


def pending_work(state: LoadBalancerState, envelopes: Sequence[Envelope]) -> PendingWork:
    """The pending step, read off the state and the events since the last settlement."""
    lb = state.loadbalancer
    if lb is None or lb.provisioning_status not in _PENDING:
        return PendingWork(WorkKind.NONE)
    if lb.provisioning_status == PS.PENDING_DELETE:
        return PendingWork(WorkKind.DELETE)
    if lb.provisioning_status == PS.PENDING_CREATE:
        return PendingWork(WorkKind.CREATE, envelopes[0])
    pending: list[Envelope] = []
    for envelope in reversed(envelopes):
        if isinstance(envelope.payload, lb_ev.SETTLING):
            break
        if isinstance(envelope.payload, lb_ev.LoadBalancerFailoverRequested):
            return PendingWork(WorkKind.FAILOVER, envelope)
        if isinstance(envelope.payload, lb_ev.LoadBalancerScaled):
            return PendingWork(WorkKind.SCALE, envelope)
        if not isinstance(envelope.payload, status_ev.OperatingStatusChanged):
            pending.append(envelope)
    return PendingWork(WorkKind.APPLY, pending=tuple(reversed(pending)))


def roles_for(topology: str) -> tuple[str, ...]:
    """The amphora roles a topology needs (ACTIVE_ACTIVE: any number of STANDALONE ones)."""
    return ("MASTER", "BACKUP") if topology == "ACTIVE_STANDBY" else ("STANDALONE",)


def amphora_count(lb: LoadBalancer, current: int = 0) -> int:
    """How many amphorae the LB needs: its topology's roles; for ACTIVE_ACTIVE as many as it
    has now (``current``), within its bounds (at least ``amphora_min``)."""
    if lb.topology != Topology.ACTIVE_ACTIVE:
        return len(roles_for(lb.topology.value))
    bounds = lb.amphora_bounds
    minimum = bounds.amphora_min if bounds is not None else 1
    maximum = bounds.amphora_max if bounds is not None else minimum
    return min(max(minimum, current), max(minimum, maximum))


def amphora_id_for(cause_event_id: str, slot: str) -> str:
    """The amphora an event asks for: the same event always names the same amphora."""
    return str(uuid.uuid5(AMPHORA_NAMESPACE, f"{cause_event_id}:{slot}"))


@dataclass(frozen=True)
class AmphoraToBuild:
    """One amphora to start: its id and role."""

    amphora_id: str
    role: str


def may_use_spare(topology: str) -> bool:
    """Spares are booted without a role, so only a STANDALONE amphora can be one: SINGLE's,
    or any of ACTIVE_ACTIVE's."""
    return topology in (Topology.SINGLE.value, Topology.ACTIVE_ACTIVE.value)


def amphorae_to_build(
    topology: str, cause_event_id: str, taken_roles: Collection[str] = (), count: int = 1
) -> list[AmphoraToBuild]:
    """The amphorae the LB's topology needs besides those already in ``taken_roles`` (one
    role per amphora kept); ACTIVE_ACTIVE: STANDALONE ones up to ``count`` in all."""
    if topology == Topology.ACTIVE_ACTIVE.value:
        return [
            AmphoraToBuild(amphora_id_for(cause_event_id, f"ACTIVE_ACTIVE-{index}"), "STANDALONE")
            for index in range(len(taken_roles), count)
        ]
    return [
        AmphoraToBuild(amphora_id_for(cause_event_id, role), role)
        for role in roles_for(topology)
        if role not in taken_roles
    ]


@dataclass(frozen=True)
class FailoverPlan:
    """Which of the LB's amphorae are replaced, which stay, and what is built for them."""

    failed: tuple[str, ...]
    kept: tuple[str, ...]
    build: tuple[AmphoraToBuild, ...]


def plan_failover(
    state: LoadBalancerState,
    requested: str | None,
    cause_event_id: str,
    running_roles: Mapping[str, str],
) -> FailoverPlan:
    """Replace ``requested`` (None: every amphora) and any amphora of the LB that does not run
    (``running_roles``: amphora id -> role of those running). A replacement takes its
    predecessor's role; an LB that lost every amphora (or never had one) gets a full new set;
    an ACTIVE_ACTIVE LB gets back to as many as it had (at least ``amphora_min``)."""
    lb = state.loadbalancer
    assert lb is not None
    failed = tuple(a for a in state.amphora_ids if requested in (None, a) or a not in running_roles)
    kept = tuple(a for a in state.amphora_ids if a not in failed)
    taken = [running_roles[a] for a in kept]
    count = amphora_count(lb, len(state.amphora_ids))
    build = amphorae_to_build(lb.topology.value, cause_event_id, taken, count)
    return FailoverPlan(failed, kept, tuple(build))


@dataclass(frozen=True)
class ScalePlan:
    """What a scaling does: the amphorae built (scale-out) or drained and removed (scale-in),
    and those that stay."""

    kept: tuple[str, ...]
    build: tuple[AmphoraToBuild, ...]
    removed: tuple[str, ...]


def plan_scale(running: Sequence[str], target: int, cause_event_id: str) -> ScalePlan:
    """From the LB's ``running`` amphorae (in the LB's order) to ``target``: new STANDALONE
    amphorae named by the scaling event, or the last ones (the newest) removed."""
    if target >= len(running):
        build = amphorae_to_build(
            Topology.ACTIVE_ACTIVE.value, cause_event_id, ["STANDALONE"] * len(running), target
        )
        return ScalePlan(tuple(running), tuple(build), ())
    return ScalePlan(tuple(running[:target]), (), tuple(running[target:]))
