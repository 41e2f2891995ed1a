"""Member changes through HAProxy's runtime API: no reload for add, remove, weight, enable.

``plan_member_changes`` is pure. Given the LB state, the events since the last settlement and
the freshly rendered configuration, it returns the runtime operations that reproduce the
change, or None when a reload is needed (any non-member change, a member field the runtime
API cannot set, a cookie-persistence pool whose servers carry cookies). After the operations
the rendered configuration is stored without reload, so the next reload matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from libs.common.domain.model import LoadBalancerState, ProvisioningStatus
from libs.common.events import Envelope
from libs.common.events import loadbalancer as ev
from services.provisioner.rendering import backend_name

PS = ProvisioningStatus
# Member fields the runtime API can change (or that do not reach HAProxy at all).
_RUNTIME_FIELDS: Final = frozenset({"weight", "admin_state_up", "name", "tags", "updated_at"})
# Listener protocols the amphora's kernel serves (no HAProxy backend to change at runtime).
_KERNEL_PROTOCOLS: Final = frozenset({"UDP", "SCTP"})


@dataclass(frozen=True)
class ServerOp:
    """One runtime change of one server in one backend."""

    backend: str
    server: str
    weight: int | None = None
    state: str | None = None  # ready | maint
    add_address: str | None = None
    add_port: int | None = None
    add_options: tuple[str, ...] = field(default_factory=tuple)
    delete: bool = False


def server_lines(config: str) -> dict[tuple[str, str], list[str]]:
    """``(backend, server) -> tokens after the address`` for every server line of a config."""
    out: dict[tuple[str, str], list[str]] = {}
    backend: str | None = None
    for raw in config.splitlines():
        line = raw.strip()
        if raw and not raw[0].isspace():
            backend = line.split()[1] if line.startswith("backend ") else None
            continue
        if backend is not None and line.startswith("server "):
            tokens = line.split()
            out[(backend, tokens[1])] = tokens[2:]
    return out


def needs_reload(pending: Sequence[Envelope]) -> bool:
    """Whether the change of ``pending`` needs a reload whatever the LB renders: none pending,
    or an event besides a member's add, remove or update of fields the runtime API sets. Known
    before anything is rendered (``plan_member_changes`` may still want a reload)."""
    return not pending or not all(_member_only(e.payload) for e in pending)


def _member_only(payload: object) -> bool:
    match payload:
        case ev.MemberAdded() | ev.MemberRemoved():
            return True
        case ev.MemberUpdated():
            return set(payload.changes.given()) <= _RUNTIME_FIELDS
        case _:
            return False


def plan_member_changes(
    state: LoadBalancerState, pending: Sequence[Envelope], rendered: str
) -> list[ServerOp] | None:
    """The runtime operations for a members-only change, or None if it needs a reload."""
    if needs_reload(pending):
        return None
    lines = server_lines(rendered)
    ops: list[ServerOp] = []
    for envelope in pending:
        payload = envelope.payload
        if _kernel_served(state, payload):
            return None  # a UDP pool: its members are in the kernel's maps, pushed whole
        match payload:
            case ev.MemberAdded():
                member = state.members.get(payload.member.id)
                if member is None or member.provisioning_status == PS.PENDING_DELETE:
                    continue
                for backend in _backends(state, member.pool_id):
                    tokens = lines.get((backend, member.id))
                    if tokens is None or "cookie" in tokens:
                        return None  # not rendered as expected, or cookies: reload
                    host, _, port = tokens[0].rpartition(":")
                    ops.append(
                        ServerOp(
                            backend,
                            member.id,
                            add_address=host.strip("[]"),
                            add_port=int(port),
                            add_options=tuple(tokens[1:]),
                        )
                    )
            case ev.MemberUpdated():
                member = state.members.get(payload.member_id)
                if member is None:
                    continue
                for backend in _backends(state, member.pool_id):
                    ops.append(
                        ServerOp(
                            backend,
                            member.id,
                            weight=member.weight if "weight" in payload.changes else None,
                            state=("ready" if member.admin_state_up else "maint")
                            if "admin_state_up" in payload.changes
                            else None,
                        )
                    )
            case ev.MemberRemoved():
                member = state.members.get(payload.member_id)
                if member is None:
                    continue
                ops += [
                    ServerOp(backend, member.id, delete=True)
                    for backend in _backends(state, member.pool_id)
                ]
            case _:
                return None
    return ops


def _kernel_served(state: LoadBalancerState, payload: object) -> bool:
    """Whether the event is about a member of a pool that a UDP listener uses."""
    match payload:
        case ev.MemberAdded():
            member_id = payload.member.id
        case ev.MemberUpdated() | ev.MemberRemoved():
            member_id = payload.member_id
        case _:
            return False
    member = state.members.get(member_id)
    return member is not None and any(
        li.protocol.value in _KERNEL_PROTOCOLS for li in state.pool_listeners(member.pool_id)
    )


def _backends(state: LoadBalancerState, pool_id: str) -> list[str]:
    """Backends rendering ``pool_id``: one per enabled listener that routes to it."""
    return [
        backend_name(pool_id, listener.id)
        for listener in state.pool_listeners(pool_id)
        if listener.admin_state_up and listener.provisioning_status != PS.PENDING_DELETE
    ]
