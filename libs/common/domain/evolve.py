"""``evolve(state, event) -> state``: the LoadBalancer aggregate's pure fold.

Never raises and does no I/O: an event that refers to a missing child is a no-op for it.
Statuses follow Octavia: a change makes its target PENDING_* and the LB PENDING_UPDATE; the
provisioner's ChangesApplied/LoadBalancerActivated settle them; ProvisioningFailed turns them ERROR.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from libs.common.domain.kinds import BY_CREATED, BY_DELETED, BY_UPDATED, CHILD_KINDS
from libs.common.domain.model import (
    PENDING_STATUSES,
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancer,
    LoadBalancerState,
    Member,
    OperatingStatus,
    Pool,
    ProvisioningStatus,
    Resource,
)
from libs.common.domain.stored import applied, restored
from libs.common.events import Event
from libs.common.events import loadbalancer as ev
from libs.common.events import loadbalancer_status as status_ev

PS = ProvisioningStatus
_GONE = frozenset({PS.PENDING_DELETE, PS.DELETED})
_CHILD_KINDS: Final = tuple(kind.key for kind in CHILD_KINDS)


def fold(events: Iterable[Event], state: LoadBalancerState | None = None) -> LoadBalancerState:
    """Rebuild state by applying ``events`` in stream order."""
    state = state or LoadBalancerState()
    for event in events:
        state = evolve(state, event)
    return state


def evolve(state: LoadBalancerState, event: Event) -> LoadBalancerState:
    """Apply one event of the ``loadbalancer`` stream; bumps ``version`` by one."""
    state = _apply(state, event)
    return state.model_copy(update={"version": state.version + 1})


def observe(state: LoadBalancerState, event: Event) -> LoadBalancerState:
    """Apply one event of the ``lbstatus`` stream; bumps ``status_version`` by one."""
    state = _apply(state, event)
    return state.model_copy(update={"status_version": state.status_version + 1})


def _apply(state: LoadBalancerState, event: Event) -> LoadBalancerState:
    kind = BY_CREATED.get(type(event))
    if kind is not None:
        child = restored(kind.model, getattr(event, kind.snapshot_attr))
        state = _put(state, kind.key, child)
        if isinstance(event, ev.PoolCreated) and event.listener_id in state.listeners:
            listener = state.listeners[event.listener_id]
            state = _put(state, "listeners", listener.updated({"default_pool_id": child.id}))
        if isinstance(child, L7Policy):
            state = _renumber_policies(state, child.listener_id, child.id)
        return _lb_pending_update(state)
    kind = BY_UPDATED.get(type(event))
    if kind is not None:
        assert isinstance(event, ev.ChildUpdated)
        target_id = getattr(event, kind.id_attr)
        given = applied(kind.model, event.changes)
        changes = {
            **given,
            "updated_at": event.updated_at,
            "provisioning_status": PS.PENDING_UPDATE,
        }
        state = _change(state, kind.key, target_id, changes)
        if isinstance(event, ev.L7PolicyUpdated) and target_id in state.l7policies:
            moved = target_id if "position" in given else None
            state = _renumber_policies(state, state.l7policies[target_id].listener_id, moved)
        return _lb_pending_update(state)
    kind = BY_DELETED.get(type(event))
    if kind is not None:
        target_id = getattr(event, kind.id_attr)
        state = _mark_deleting(state, kind.key, target_id)
        if isinstance(event, ev.L7PolicyDeleted) and target_id in state.l7policies:
            state = _renumber_policies(state, state.l7policies[target_id].listener_id, None)
        return _lb_pending_update(state)
    handler = _LB_HANDLERS.get(type(event))
    return handler(state, event) if handler else state


def _put(state: LoadBalancerState, collection: str, child: Resource) -> LoadBalancerState:
    items = dict(getattr(state, collection))
    items[child.id] = child
    return state.model_copy(update={collection: items})


def _change(
    state: LoadBalancerState, collection: str, target_id: str, changes: dict[str, Any]
) -> LoadBalancerState:
    current = getattr(state, collection).get(target_id)
    if current is None:
        return state
    return _put(state, collection, current.updated(changes))


def _renumber_policies(
    state: LoadBalancerState, listener_id: str, moved_id: str | None
) -> LoadBalancerState:
    """Keep a listener's live L7 policies at positions 1..N (Octavia's ordering list).

    ``moved_id`` was just placed at its requested position: it goes there (clamped to the end)
    and the others shift; every other policy keeps its relative order.
    """
    live = [
        p
        for p in state.l7policies.values()
        if p.listener_id == listener_id and p.provisioning_status not in _GONE
    ]
    ordered = sorted(
        (p for p in live if p.id != moved_id), key=lambda p: (p.position, p.created_at, p.id)
    )
    moved = state.l7policies.get(moved_id or "")
    if moved is not None and moved.provisioning_status not in _GONE:
        ordered.insert(min(max(moved.position, 1), len(ordered) + 1) - 1, moved)
    for position, policy in enumerate(ordered, start=1):
        if policy.position != position:
            state = _put(state, "l7policies", policy.updated({"position": position}))
    return state


def _lb_pending_update(state: LoadBalancerState) -> LoadBalancerState:
    lb = state.loadbalancer
    if lb is None or lb.provisioning_status in PENDING_STATUSES:
        return state
    return state.model_copy(
        update={"loadbalancer": lb.updated({"provisioning_status": PS.PENDING_UPDATE})}
    )


def _dependents(state: LoadBalancerState, collection: str, target_id: str) -> list[tuple[str, str]]:
    """Children that go with a deleted parent (Octavia deletes them with it)."""
    out: list[tuple[str, str]] = []
    if collection == "pools":
        out += [("members", m.id) for m in state.members.values() if m.pool_id == target_id]
        out += [
            ("healthmonitors", h.id)
            for h in state.healthmonitors.values()
            if h.pool_id == target_id
        ]
    elif collection == "listeners":
        for policy in state.l7policies.values():
            if policy.listener_id == target_id:
                out += [("l7policies", policy.id), *_dependents(state, "l7policies", policy.id)]
    elif collection == "l7policies":
        out += [("l7rules", r.id) for r in state.l7rules.values() if r.l7policy_id == target_id]
    return out


def _mark_deleting(state: LoadBalancerState, collection: str, target_id: str) -> LoadBalancerState:
    for kind, child_id in [(collection, target_id), *_dependents(state, collection, target_id)]:
        state = _change(state, kind, child_id, {"provisioning_status": PS.PENDING_DELETE})
    if collection == "pools":
        for listener in list(state.listeners.values()):
            if listener.default_pool_id == target_id:
                state = _put(state, "listeners", listener.updated({"default_pool_id": None}))
    return state


def _touched(resource: Resource, at: datetime | None) -> dict[str, Any]:
    """``updated_at`` of a status change by the worker (never before ``created_at``)."""
    if at is None:
        return {}
    created = resource.created_at
    return {"updated_at": max(at, created) if created is not None else at}


def _listeners_of(state: LoadBalancerState, child: Resource) -> set[str]:
    """The listeners a change of ``child`` touches (Octavia's worker marks them ACTIVE)."""
    match child:
        case Listener():
            return {child.id}
        case Pool():
            return {li.id for li in state.pool_listeners(child.id)}
        case Member() | HealthMonitor():
            return {li.id for li in state.pool_listeners(child.pool_id)}
        case L7Policy():
            return {child.listener_id}
        case L7Rule():
            policy = state.l7policies.get(child.l7policy_id)
            return {policy.listener_id} if policy is not None else set()
    return set()


def _settle(state: LoadBalancerState, at: datetime | None) -> LoadBalancerState:
    """Pending children become ACTIVE (or vanish when PENDING_DELETE); the LB goes ACTIVE.
    Settled children, and the listeners their changes touch, get ``updated_at`` = ``at``."""
    touched: set[str] = set()
    for collection in _CHILD_KINDS:
        for child in getattr(state, collection).values():
            if child.provisioning_status in PENDING_STATUSES:
                touched |= _listeners_of(state, child)
    update: dict[str, Any] = {}
    for collection in _CHILD_KINDS:
        items: dict[str, Resource] = {}
        for child_id, child in getattr(state, collection).items():
            status = child.provisioning_status
            if status == PS.PENDING_DELETE:
                continue
            if status in PENDING_STATUSES:
                settled = _settled_statuses(state, collection, child)
                child = child.updated({**settled, **_touched(child, at)})
            elif collection == "listeners" and child_id in touched:
                child = child.updated(_touched(child, at))
            items[child_id] = child
        update[collection] = items
    lb = state.loadbalancer
    if lb is not None and lb.provisioning_status != PS.DELETED:
        update["loadbalancer"] = lb.updated(
            {
                "provisioning_status": PS.ACTIVE,
                "provisioning_error": "",
                "operating_status": lb.operating_status
                if lb.operating_status != OperatingStatus.OFFLINE or not lb.admin_state_up
                else OperatingStatus.ONLINE,
                **(_touched(lb, at) if lb.provisioning_status in PENDING_STATUSES else {}),
            }
        )
    return state.model_copy(update=update)


def _settled_statuses(state: LoadBalancerState, collection: str, child: Resource) -> dict[str, Any]:
    changes: dict[str, Any] = {"provisioning_status": PS.ACTIVE}
    if collection in ("healthmonitors", "l7policies", "l7rules"):
        # Set by the control plane, not observed (Octavia's worker does the same).
        changes["operating_status"] = (
            OperatingStatus.ONLINE if child.admin_state_up else OperatingStatus.OFFLINE
        )
    elif isinstance(child, Member) and child.operating_status == OperatingStatus.OFFLINE:
        has_monitor = state.pool_healthmonitor(child.pool_id) is not None
        if not has_monitor and child.admin_state_up:
            changes["operating_status"] = OperatingStatus.NO_MONITOR
    elif collection == "listeners" and child.admin_state_up:
        if child.operating_status == OperatingStatus.OFFLINE:
            changes["operating_status"] = OperatingStatus.ONLINE
    return changes


def _on_created(state: LoadBalancerState, event: Event) -> LoadBalancerState:
    assert isinstance(event, ev.LoadBalancerCreated)
    update: dict[str, Any] = {
        kind.key: {x.id: restored(kind.model, x) for x in getattr(event, kind.key)}
        for kind in CHILD_KINDS
    }
    lb = restored(LoadBalancer, event.loadbalancer)
    return state.model_copy(update={**update, "loadbalancer": lb})


def _on_updated(state: LoadBalancerState, event: Event) -> LoadBalancerState:
    assert isinstance(event, ev.LoadBalancerUpdated)
    lb = state.loadbalancer
    if lb is None:
        return state
    changes = {
        **applied(LoadBalancer, event.changes),
        "updated_at": event.updated_at,
        "provisioning_status": PS.PENDING_UPDATE,
    }
    return state.model_copy(update={"loadbalancer": lb.updated(changes)})


def _on_deletion_requested(state: LoadBalancerState, event: Event) -> LoadBalancerState:
    assert isinstance(event, ev.LoadBalancerDeletionRequested)
    lb = state.loadbalancer
    if lb is None:
        return state
    state = state.model_copy(
        update={"loadbalancer": lb.updated({"provisioning_status": PS.PENDING_DELETE})}
    )
    for collection in _CHILD_KINDS:
        for child_id in list(getattr(state, collection)):
            state = _change(state, collection, child_id, {"provisioning_status": PS.PENDING_DELETE})
    return state


def _on_deleted(state: LoadBalancerState, event: Event) -> LoadBalancerState:
    lb = state.loadbalancer
    if lb is None:
        return state
    update: dict[str, Any] = {c: {} for c in _CHILD_KINDS}
    update["amphora_ids"] = ()
    update["loadbalancer"] = lb.updated(
        {"provisioning_status": PS.DELETED, "operating_status": OperatingStatus.OFFLINE}
    )
    return state.model_copy(update=update)


def _on_activated(state: LoadBalancerState, event: Event) -> LoadBalancerState:
    assert isinstance(event, ev.LoadBalancerActivated)
    return _settle(state.model_copy(update={"amphora_ids": event.amphora_ids}), event.at)


def _on_changes_applied(state: LoadBalancerState, event: Event) -> LoadBalancerState:
    assert isinstance(event, ev.ChangesApplied)
    return _settle(state, event.at)


def _on_failed(state: LoadBalancerState, event: Event) -> LoadBalancerState:
    assert isinstance(event, ev.ProvisioningFailed)
    lb = state.loadbalancer
    if lb is None or lb.provisioning_status == PS.DELETED:
        return state
    update: dict[str, Any] = {}
    for collection in _CHILD_KINDS:
        update[collection] = {
            child_id: child.updated({"provisioning_status": PS.ERROR, **_touched(child, event.at)})
            if child.provisioning_status in PENDING_STATUSES
            else child
            for child_id, child in getattr(state, collection).items()
        }
    update["loadbalancer"] = lb.updated(
        {
            "provisioning_status": PS.ERROR,
            "provisioning_error": event.reason,
            **_touched(lb, event.at),
        }
    )
    state = state.model_copy(update=update)
    # A policy whose deletion failed is live again: give it back a place in the order.
    for listener_id in state.listeners:
        state = _renumber_policies(state, listener_id, None)
    return state


def _on_pending_update(state: LoadBalancerState, event: Event) -> LoadBalancerState:
    """A failover or a scaling: the LB waits for the provisioner."""
    return _lb_pending_update(state)


def _on_operating_status(state: LoadBalancerState, event: Event) -> LoadBalancerState:
    assert isinstance(event, status_ev.OperatingStatusChanged)
    for resource_id, status in event.statuses.items():
        lb = state.loadbalancer
        if lb is not None and lb.id == resource_id:
            state = state.model_copy(
                update={"loadbalancer": lb.updated({"operating_status": status})}
            )
            continue
        for collection in _CHILD_KINDS:
            if resource_id in getattr(state, collection):
                state = _change(state, collection, resource_id, {"operating_status": status})
                break
    return state


_LB_HANDLERS = {
    ev.LoadBalancerCreated: _on_created,
    ev.LoadBalancerUpdated: _on_updated,
    ev.LoadBalancerDeletionRequested: _on_deletion_requested,
    ev.LoadBalancerDeleted: _on_deleted,
    ev.LoadBalancerActivated: _on_activated,
    ev.ChangesApplied: _on_changes_applied,
    ev.ProvisioningFailed: _on_failed,
    ev.LoadBalancerFailoverRequested: _on_pending_update,
    ev.LoadBalancerScaledOut: _on_pending_update,
    ev.LoadBalancerScaledIn: _on_pending_update,
    status_ev.OperatingStatusChanged: _on_operating_status,
}
