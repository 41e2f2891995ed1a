"""The SecurityGroup aggregate: one group and its rules, folded from its
``securitygroup-<id>`` stream. Pure; read by the API (decisions, bodies) and the provisioner
(the rules it renders into amphorae)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from pydantic import BaseModel, ConfigDict

from libs.common.events import Event
from libs.common.events import security_group as ev
from libs.common.events.security_group import SecurityGroupRule

# Neutron's protocol names (neutron-lib IP_PROTOCOL_MAP) and their numbers.
PROTOCOL_NUMBERS: Final[dict[str, int]] = {
    "ah": 51,
    "dccp": 33,
    "egp": 8,
    "esp": 50,
    "gre": 47,
    "hopopt": 0,
    "icmp": 1,
    "igmp": 2,
    "ip": 0,
    "ipip": 4,
    "ipv6-encap": 41,
    "ipv6-frag": 44,
    "ipv6-icmp": 58,
    "icmpv6": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "ipv6-route": 43,
    "ospf": 89,
    "pgm": 113,
    "rsvp": 46,
    "sctp": 132,
    "tcp": 6,
    "udp": 17,
    "udplite": 136,
    "vrrp": 112,
}


def protocol_number(protocol: str | None) -> int | None:
    """The IP protocol number of a stored rule's protocol (None: any)."""
    if protocol is None:
        return None
    return int(protocol) if protocol.isdigit() else PROTOCOL_NUMBERS[protocol]


class SecurityGroup(BaseModel):
    """A group's state; ``exists`` is False before its creation and after its deletion."""

    model_config = ConfigDict(frozen=True)

    version: int = 0
    exists: bool = False
    id: str = ""
    project_id: str = ""
    name: str = ""
    description: str = ""
    stateful: bool = True
    created_at: str = ""
    updated_at: str = ""
    rules: tuple[SecurityGroupRule, ...] = ()

    def rule(self, rule_id: str) -> SecurityGroupRule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    @property
    def ingress(self) -> tuple[SecurityGroupRule, ...]:
        return tuple(r for r in self.rules if r.direction == "ingress")


def evolve(state: SecurityGroup, event: Event) -> SecurityGroup:
    """Pure fold step."""
    version = state.version + 1
    match event:
        case ev.SecurityGroupCreated():
            return SecurityGroup(
                version=version,
                exists=True,
                id=event.id,
                project_id=event.project_id,
                name=event.name,
                description=event.description,
                stateful=event.stateful,
                created_at=event.created_at,
                updated_at=event.created_at,
                rules=event.rules,
            )
        case ev.SecurityGroupUpdated():
            return state.model_copy(
                update={**event.changes.given(), "version": version, "updated_at": event.updated_at}
            )
        case ev.SecurityGroupRuleAdded():
            return state.model_copy(
                update={
                    "version": version,
                    "rules": (*state.rules, event.rule),
                    "updated_at": event.rule.created_at,
                }
            )
        case ev.SecurityGroupRuleRemoved():
            rules = tuple(r for r in state.rules if r.id != event.rule_id)
            return state.model_copy(
                update={"version": version, "rules": rules, "updated_at": event.updated_at}
            )
        case ev.SecurityGroupDeleted():
            return SecurityGroup(version=version, id=state.id)
    return state.model_copy(update={"version": version})


def fold(events: Iterable[Event]) -> SecurityGroup:
    state = SecurityGroup()
    for event in events:
        state = evolve(state, event)
    return state
