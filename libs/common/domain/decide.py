"""``decide(command, state) -> events``: the LoadBalancer aggregate's rules.

Pure: raises a DomainError (nothing is written) or returns the events to append. It holds the
rules that need the LB's state: Octavia's lock (any PENDING_* makes the tree immutable, 409),
existence (404), uniqueness and in-use conflicts (409), cross-object protocol rules (400).
Field-level validation of input belongs to the API's schemas.
"""

from __future__ import annotations

from typing import Any, Final

from libs.common.domain import commands as c
from libs.common.domain.kinds import BY_KEY, CHILD_KINDS, POOL, kind_of
from libs.common.domain.model import (
    LISTENER_POOL_PROTOCOLS,
    PENDING_STATUSES,
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancer,
    LoadBalancerState,
    Member,
    Pool,
    ProvisioningStatus,
    Topology,
)
from libs.common.domain.stored import changes, snapshot
from libs.common.errors import (
    Conflict,
    InvalidState,
    NotFound,
    NotImplementedByProvider,
    ValidationFailed,
)
from libs.common.events import Event
from libs.common.events import housekeeping as hk
from libs.common.events import loadbalancer as ev
from libs.common.events import loadbalancer_status as status_ev

PS = ProvisioningStatus
MAX_RULES_PER_POLICY: Final = 50

# The TCP family shares one port space per LB; UDP and SCTP each have their own.
_PORT_FAMILY: Final[dict[str, str]] = {"UDP": "UDP", "SCTP": "SCTP"}
_HM_TYPES_BY_POOL: Final[dict[str, frozenset[str]]] = {
    "UDP": frozenset({"HTTP", "TCP", "UDP-CONNECT", "SCTP"}),
    "SCTP": frozenset({"HTTP", "TCP", "UDP-CONNECT", "SCTP"}),
}
_HM_TYPES_DEFAULT: Final = frozenset({"HTTP", "HTTPS", "PING", "TCP", "TLS-HELLO"})
_L7_LISTENER_PROTOCOLS: Final = frozenset({"HTTP", "TERMINATED_HTTPS"})


def decide(command: c.Command, state: LoadBalancerState) -> list[Event]:
    """Return the events that ``command`` produces, or raise a DomainError."""
    match command:
        case c.CreateLoadBalancer():
            return _create_loadbalancer(command, state)
        case c.UpdateLoadBalancer():
            lb = _require_lb(state)
            _require_status(lb, {PS.ACTIVE, PS.ERROR})
            stored = changes(LoadBalancer, command.changes)
            return [ev.LoadBalancerUpdated(changes=stored, updated_at=command.now)]
        case c.DeleteLoadBalancer():
            return _delete_loadbalancer(command, state)
        case c.FailoverLoadBalancer():
            lb = _require_lb(state)
            _require_status(lb, {PS.ACTIVE, PS.ERROR})
            if command.amphora_id is not None and command.amphora_id not in state.amphora_ids:
                raise NotFound.resource("Amphora", command.amphora_id)
            return [
                ev.LoadBalancerFailoverRequested(
                    amphora_id=command.amphora_id, reason=command.reason
                )
            ]
        case c.ScaleLoadBalancer():
            return _scale_loadbalancer(command, state)
        case c.CreateChild():
            _require_mutable(state)
            return _create_child(command, state)
        case c.UpdateChild():
            _require_mutable(state)
            return _update_child(command, state)
        case c.DeleteChild():
            _require_mutable(state)
            _require_child(state, command.kind, command.child_id)
            _check_delete(command, state)
            kind = BY_KEY[command.kind]
            return [kind.deleted.model_validate({kind.id_attr: command.child_id})]
        case c.ReplaceMembers():
            _require_mutable(state)
            return _replace_members(command, state)
        case c.Activate():
            _require_lb(state)
            return [ev.LoadBalancerActivated(amphora_ids=command.amphora_ids, at=command.now)]
        case c.ApplyChanges():
            lb = _require_lb(state)
            if lb.provisioning_status not in PENDING_STATUSES:
                return []  # nothing pending: a redelivered or stale request
            return [ev.ChangesApplied(at=command.now)]
        case c.FailProvisioning():
            lb = _require_lb(state)
            if lb.provisioning_status == PS.DELETED:
                return []
            return [ev.ProvisioningFailed(reason=command.reason, at=command.now)]
        case c.CompleteDeletion():
            lb = _require_lb(state)
            if lb.provisioning_status == PS.DELETED:
                return []
            return [ev.LoadBalancerDeleted()]
        case c.RedriveProvisioning():
            # The one command a PENDING_* LB accepts besides the provisioner's own: it only
            # records the request, so the immutability of the tree is untouched.
            lb = _require_lb(state)
            if lb.provisioning_status not in PENDING_STATUSES:
                return []  # settled since housekeeping looked
            return [
                hk.LoadBalancerRedriveRequested(
                    attempt=command.attempt,
                    pending_status=lb.provisioning_status.value,
                    pending_seconds=command.pending_seconds,
                )
            ]
        case c.RecordOperatingStatuses():
            return _record_operating(command, state)
    raise TypeError(f"unknown command {command!r}")


# --- load balancer --------------------------------------------------------------------------


def _require_lb(state: LoadBalancerState) -> LoadBalancer:
    lb = state.loadbalancer
    if lb is None or lb.provisioning_status == PS.DELETED:
        raise NotFound.resource("Load Balancer", lb.id if lb else "")
    return lb


def _require_status(lb: LoadBalancer, allowed: set[ProvisioningStatus]) -> None:
    if lb.provisioning_status not in allowed:
        raise InvalidState(
            f"Invalid state {lb.provisioning_status.value} of loadbalancer resource {lb.id}"
        )


def _require_mutable(state: LoadBalancerState) -> LoadBalancer:
    lb = _require_lb(state)
    if lb.provisioning_status != PS.ACTIVE:
        raise InvalidState(f"Load Balancer {lb.id} is immutable and cannot be updated.")
    return lb


def _create_loadbalancer(cmd: c.CreateLoadBalancer, state: LoadBalancerState) -> list[Event]:
    if state.loadbalancer is not None:
        raise Conflict(f"Load Balancer {cmd.loadbalancer.id} already exists.")
    # Validate the graph by folding its children into an empty tree one by one.
    tree = LoadBalancerState(loadbalancer=cmd.loadbalancer)
    for pool in cmd.pools:
        tree = _with(tree, "pools", pool)
    for listener in cmd.listeners:
        _check_listener(listener, tree, None)
        tree = _with(tree, "listeners", listener)
    for child in (*cmd.members, *cmd.healthmonitors, *cmd.l7policies, *cmd.l7rules):
        _check_child(child, tree)
        tree = _with(tree, kind_of(child).key, child)
    return [
        ev.LoadBalancerCreated(
            loadbalancer=snapshot(cmd.loadbalancer),
            **{k.key: tuple(snapshot(x) for x in getattr(cmd, k.key)) for k in CHILD_KINDS},
        )
    ]


def _with(state: LoadBalancerState, kind: str, child: Any) -> LoadBalancerState:
    return state.model_copy(update={kind: {**getattr(state, kind), child.id: child}})


def _delete_loadbalancer(cmd: c.DeleteLoadBalancer, state: LoadBalancerState) -> list[Event]:
    lb = _require_lb(state)
    _require_status(lb, {PS.ACTIVE, PS.ERROR})
    if not cmd.cascade and (state.listeners or state.pools):
        raise ValidationFailed(
            f"Validation failure: Cannot delete Load Balancer {lb.id} - it has children"
        )
    return [ev.LoadBalancerDeletionRequested(cascade=cmd.cascade)]


def _scale_loadbalancer(cmd: c.ScaleLoadBalancer, state: LoadBalancerState) -> list[Event]:
    """ACTIVE ACTIVE_ACTIVE LBs only, to a count within their bounds; the count they have
    already: nothing."""
    lb = _require_lb(state)
    _require_status(lb, {PS.ACTIVE})
    bounds = lb.amphora_bounds
    if lb.topology != Topology.ACTIVE_ACTIVE or bounds is None:
        raise ValidationFailed(
            f"Validation failure: Load Balancer {lb.id} is not ACTIVE_ACTIVE: it cannot scale."
        )
    if not bounds.amphora_min <= cmd.amphorae <= bounds.amphora_max:
        raise ValidationFailed(
            f"Validation failure: {cmd.amphorae} amphorae is outside the bounds of Load "
            f"Balancer {lb.id} ({bounds.amphora_min} to {bounds.amphora_max})."
        )
    before = len(state.amphora_ids)
    if cmd.amphorae == before:
        return []
    scaled = ev.LoadBalancerScaledOut if cmd.amphorae > before else ev.LoadBalancerScaledIn
    return [
        scaled(
            amphorae_before=before,
            amphorae=cmd.amphorae,
            measurements=dict(cmd.measurements),
            reason=cmd.reason,
        )
    ]


# --- children -------------------------------------------------------------------------------


def _require_child(state: LoadBalancerState, kind: str, child_id: str) -> Any:
    child = getattr(state, kind).get(child_id)
    if child is None or child.provisioning_status == PS.DELETED:
        raise NotFound.resource(BY_KEY[kind].label, child_id)
    return child


def _create_child(cmd: c.CreateChild, state: LoadBalancerState) -> list[Event]:
    child = cmd.child
    kind = kind_of(child)
    if child.id in getattr(state, kind.key):
        raise Conflict(f"{kind.label} {child.id} already exists.")
    _check_child(child, state, cmd.listener_id)
    fields: dict[str, Any] = {kind.snapshot_attr: snapshot(child)}
    if kind is POOL:
        fields["listener_id"] = cmd.listener_id
    return [kind.created.model_validate(fields)]


def _check_child(child: Any, state: LoadBalancerState, listener_id: str | None = None) -> None:
    match child:
        case Listener():
            _check_listener(child, state, None)
        case Pool():
            _check_pool(child, state, listener_id)
        case Member():
            _check_member(child, state, None)
        case HealthMonitor():
            _check_healthmonitor(child, state)
        case L7Policy():
            _check_l7policy(child, state)
        case L7Rule():
            _check_l7rule(child, state)


def _check_listener(listener: Listener, state: LoadBalancerState, current_id: str | None) -> None:
    family = _PORT_FAMILY.get(listener.protocol, "TCP")
    for other in state.listeners.values():
        if other.id == current_id or other.provisioning_status == PS.PENDING_DELETE:
            continue
        same_family = _PORT_FAMILY.get(other.protocol, "TCP") == family
        if same_family and other.protocol_port == listener.protocol_port:
            raise Conflict(
                "Another Listener on this Load Balancer is already using protocol "
                f"{other.protocol.value} and protocol_port {listener.protocol_port}"
            )
    if listener.default_pool_id is not None:
        pool = _require_child(state, "pools", listener.default_pool_id)
        _check_protocols(listener, pool)


def _check_protocols(listener: Listener, pool: Pool) -> None:
    if pool.protocol.value not in LISTENER_POOL_PROTOCOLS[listener.protocol.value]:
        raise ValidationFailed(
            f"Validation failure: The pool protocol '{pool.protocol.value}' is invalid while "
            f"the listener protocol is '{listener.protocol.value}'."
        )


def _check_pool(pool: Pool, state: LoadBalancerState, listener_id: str | None) -> None:
    if listener_id is None:
        return
    listener = _require_child(state, "listeners", listener_id)
    _check_protocols(listener, pool)
    if listener.default_pool_id is not None and listener.default_pool_id in state.pools:
        raise Conflict("This listener already has a default pool")


def _check_member(member: Member, state: LoadBalancerState, current_id: str | None) -> None:
    _require_child(state, "pools", member.pool_id)
    for other in state.members.values():
        if other.pool_id != member.pool_id or other.id in (current_id, member.id):
            continue
        if other.provisioning_status == PS.PENDING_DELETE:
            continue
        if other.address == member.address and other.protocol_port == member.protocol_port:
            raise _duplicate_member(member)


def _duplicate_member(member: Member) -> Conflict:
    return Conflict(
        "Another member on this pool is already using ip "
        f"{member.address} on protocol_port {member.protocol_port}"
    )


def _check_healthmonitor(hm: HealthMonitor, state: LoadBalancerState) -> None:
    pool = _require_child(state, "pools", hm.pool_id)
    existing = state.pool_healthmonitor(hm.pool_id)
    if existing is not None and existing.id != hm.id:
        raise Conflict("This pool already has a health monitor")
    allowed = _HM_TYPES_BY_POOL.get(pool.protocol.value, _HM_TYPES_DEFAULT)
    if hm.type.value not in allowed:
        raise ValidationFailed(
            f"Validation failure: The {hm.type.value} type is not supported for "
            f"{pool.protocol.value} pools."
        )


def _check_l7policy(policy: L7Policy, state: LoadBalancerState) -> None:
    listener = _require_child(state, "listeners", policy.listener_id)
    protocol = listener.protocol.value
    if protocol == "PROMETHEUS":
        raise ValidationFailed("Protocol PROMETHEUS listeners cannot have child objects.")
    if protocol not in _L7_LISTENER_PROTOCOLS:
        provider = state.loadbalancer.provider if state.loadbalancer else "amphora"
        raise NotImplementedByProvider(
            f"Provider '{provider}' does not support a requested option: "
            f"{protocol} protocol listeners do not support L7 policies"
        )
    if policy.redirect_pool_id is not None:
        pool = _require_child(state, "pools", policy.redirect_pool_id)
        _check_protocols(listener, pool)


def _check_l7rule(rule: L7Rule, state: LoadBalancerState) -> None:
    _require_child(state, "l7policies", rule.l7policy_id)
    existing = [r for r in state.l7rules.values() if r.l7policy_id == rule.l7policy_id]
    if len(existing) >= MAX_RULES_PER_POLICY:
        raise Conflict(f"Too many rules on L7 policy {rule.l7policy_id}")


def _update_child(cmd: c.UpdateChild, state: LoadBalancerState) -> list[Event]:
    current = _require_child(state, cmd.kind, cmd.child_id)
    proposed = current.updated(cmd.changes)
    match proposed:
        case Listener():
            _check_listener(proposed, state, current.id)
        case Member():
            _check_member(proposed, state, current.id)
        case L7Policy():
            _check_l7policy(proposed, state)
    kind = BY_KEY[cmd.kind]
    stored = changes(kind.model, cmd.changes)
    fields = {kind.id_attr: cmd.child_id, "changes": stored, "updated_at": cmd.now}
    return [kind.updated.model_validate(fields)]


def _check_delete(cmd: c.DeleteChild, state: LoadBalancerState) -> None:
    if cmd.kind == "pools":
        for policy in state.l7policies.values():
            if policy.redirect_pool_id == cmd.child_id:
                raise Conflict(f"Pool {cmd.child_id} is in use by L7 policy {policy.id}")


def _replace_members(cmd: c.ReplaceMembers, state: LoadBalancerState) -> list[Event]:
    _require_child(state, "pools", cmd.pool_id)
    existing = {(m.address, m.protocol_port): m for m in state.pool_members(cmd.pool_id)}
    wanted: dict[tuple[str, int], Member] = {}
    for member in cmd.members:
        key = (member.address, member.protocol_port)
        if key in wanted and key in existing:
            raise ValidationFailed(
                "Validation failure: Member must be updated only once in the same request."
            )
        if key in wanted:
            # Octavia inserts both; the second one hits the uniqueness check.
            raise _duplicate_member(member)
        wanted[key] = member
    events: list[Event] = []
    for key, member in wanted.items():
        old = existing.get(key)
        if old is None:
            events.append(ev.MemberAdded(member=snapshot(member)))
            continue
        changed = _member_changes(old, member)
        if changed:
            stored = changes(Member, changed)
            events.append(ev.MemberUpdated(member_id=old.id, changes=stored, updated_at=cmd.now))
    if not cmd.additive_only:
        events += [ev.MemberRemoved(member_id=m.id) for k, m in existing.items() if k not in wanted]
    return events


_MEMBER_MUTABLE: Final = (
    "name",
    "admin_state_up",
    "weight",
    "backup",
    "monitor_address",
    "monitor_port",
    "tags",
)


def _member_changes(old: Member, new: Member) -> dict[str, Any]:
    return {
        field: getattr(new, field)
        for field in _MEMBER_MUTABLE
        if getattr(new, field) != getattr(old, field)
    }


def _record_operating(cmd: c.RecordOperatingStatuses, state: LoadBalancerState) -> list[Event]:
    if state.loadbalancer is None or state.loadbalancer.provisioning_status == PS.DELETED:
        return []
    known: dict[str, Any] = {state.loadbalancer.id: state.loadbalancer}
    for kind in CHILD_KINDS:
        if kind.observed:
            known.update(getattr(state, kind.key))
    changed = {
        rid: status
        for rid, status in cmd.statuses.items()
        if rid in known and known[rid].operating_status != status
    }
    return [status_ev.OperatingStatusChanged(statuses=changed)] if changed else []
