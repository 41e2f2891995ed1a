"""Neutron security groups: rule validation with Neutron's normalisation and texts, the
group's decisions, its API bodies, and the project-scoped use cases.

A group lives in its stream ``securitygroup-<id>`` with its rules (libs/common/domain/
security_group.py folds it). Refusals are ``NeutronRefusal``: the HTTP layer answers them in
Neutron's error body ``{"NeutronError": {"type", "message", "detail"}}``.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from libs.common.domain.security_group import PROTOCOL_NUMBERS, SecurityGroup, protocol_number
from libs.common.errors import DomainError
from libs.common.events import Event, Metadata
from libs.common.events import security_group as ev
from libs.common.events.security_group import SecurityGroupRule
from services.api.domain.policy import Action, RequestContext, allowed

_SUPPORTED_PROTOCOLS: Final = (None, "any", *PROTOCOL_NUMBERS)
# Protocols with ports (Neutron's SG_PORT_PROTO_NAMES), by number.
PORT_PROTOCOLS: Final = frozenset({33, 132, 6, 17})
ICMP_PROTOCOLS: Final = frozenset({1, 58})
_IPV6_ONLY: Final = frozenset(
    {"ipv6-encap", "ipv6-frag", "ipv6-icmp", "icmpv6", "ipv6-nonxt", "ipv6-opts", "ipv6-route"}
    | {"41", "44", "58", "59", "60", "43"}
)
ETHERTYPES: Final = ("IPv4", "IPv6")
DIRECTIONS: Final = ("ingress", "egress")
_GROUP_ATTRS: Final = frozenset({"name", "description", "stateful", "tenant_id", "project_id"})
_GROUP_MUTABLE: Final = frozenset({"name", "description", "stateful"})
_RULE_ATTRS: Final = frozenset(
    {
        "security_group_id",
        "direction",
        "ethertype",
        "protocol",
        "port_range_min",
        "port_range_max",
        "remote_ip_prefix",
        "remote_group_id",
        "remote_address_group_id",
        "description",
        "tenant_id",
        "project_id",
    }
)
NAME_LENGTH: Final = 255


class NeutronRefusal(DomainError):
    """A refusal in Neutron's terms: its exception class name (``kind``) and message."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.kind = kind


def group_not_found(group_id: str) -> NeutronRefusal:
    return NeutronRefusal(404, "SecurityGroupNotFound", f"Security group {group_id} does not exist")


def rule_not_found(rule_id: str) -> NeutronRefusal:
    return NeutronRefusal(
        404, "SecurityGroupRuleNotFound", f"Security group rule {rule_id} does not exist"
    )


def group_in_use(group_id: str) -> NeutronRefusal:
    return NeutronRefusal(409, "SecurityGroupInUse", f"Security Group {group_id} in use.")


def bad_request(message: str) -> NeutronRefusal:
    return NeutronRefusal(400, "HTTPBadRequest", message)


def _invalid_input(kind: str, message: str) -> NeutronRefusal:
    return NeutronRefusal(400, kind, message)


def timestamp(now: datetime) -> str:
    """Neutron's timestamps: UTC, whole seconds, ``Z``."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- rules -----------------------------------------------------------------------------------


def _protocol(value: Any) -> str | None:
    if value is None or value == "any":
        return None
    refusal = _invalid_input(
        "SecurityGroupRuleInvalidProtocol",
        f"Security group rule protocol {value} not supported. Only protocol values "
        f"{_SUPPORTED_PROTOCOLS!r} and integer representations [0 to 255] are supported.",
    )
    if isinstance(value, bool):
        raise refusal
    try:
        number = int(value)
    except (TypeError, ValueError):
        if isinstance(value, str) and value.lower() in PROTOCOL_NUMBERS:
            return value.lower()
        raise refusal from None
    if 0 <= number <= 255:
        return str(value)
    raise refusal


def _ethertype(value: Any) -> str:
    if isinstance(value, str):
        for known in ETHERTYPES:
            if known.lower() == value.lower():
                return known
    raise _invalid_input(
        "SecurityGroupRuleInvalidEtherType",
        f"Security group rule for ethertype '{value}' not supported. Allowed values are "
        f"{list(ETHERTYPES)!r}.",
    )


def _port(value: Any) -> int | None:
    if value is None:
        return None
    refusal = _invalid_input("SecurityGroupInvalidPortValue", f"Invalid value for port {value}")
    if isinstance(value, bool):
        raise refusal
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise refusal from None
    if not 0 <= number <= 65535 or (isinstance(value, float) and value != number):
        raise refusal
    return number


def _check_ports(protocol: str | None, low: int | None, high: int | None) -> None:
    """Neutron's _validate_port_range."""
    if low is None and high is None:
        return
    if protocol is None:
        raise _invalid_input(
            "SecurityGroupProtocolRequiredWithPorts",
            "Must also specify protocol if port range is given.",
        )
    number = protocol_number(protocol)
    if number in PORT_PROTOCOLS:
        if low == 0 or high == 0:
            raise _invalid_input("SecurityGroupInvalidPortValue", "Invalid value for port 0")
        if low is None or high is None or low > high:
            raise _invalid_input(
                "SecurityGroupInvalidPortRange",
                "For TCP/UDP protocols, port_range_min must be <= port_range_max",
            )
    elif number in ICMP_PROTOCOLS:
        for attr, name, value in (
            ("port_range_min", "type", low),
            ("port_range_max", "code", high),
        ):
            if value is not None and not 0 <= value <= 255:
                raise _invalid_input(
                    "SecurityGroupInvalidIcmpValue",
                    f"Invalid value for ICMP {name} ({attr}) {value}. It must be 0 to 255.",
                )
        if low is None and high is not None:
            raise _invalid_input(
                "SecurityGroupMissingIcmpType",
                f"ICMP code (port-range-max) {high} is provided but ICMP type (port-range-min) "
                "is missing.",
            )
    else:
        raise _invalid_input(
            "SecurityGroupInvalidProtocolForPort",
            f"Ports cannot be specified for protocol {number}. Ports are only supported for "
            "DCCP, SCTP, TCP, UDP.",
        )


def _prefix(value: Any, ethertype: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        network = ipaddress.ip_interface(str(value))
    except ValueError:
        raise _invalid_input("InvalidCIDR", f"Invalid CIDR {value} given as IP prefix.") from None
    if ethertype != f"IPv{network.version}":
        raise _invalid_input(
            "SecurityGroupRuleParameterConflict",
            f"Conflicting value ethertype {ethertype} for CIDR {value}",
        )
    return f"{network.ip}/{network.network.prefixlen}"


def normalized_cidr(prefix: str | None) -> str | None:
    """The prefix without host bits (Neutron's ``normalized_cidr``)."""
    if prefix is None:
        return None
    return str(ipaddress.ip_network(prefix, strict=False))


def _required(fields: dict[str, Any], name: str) -> Any:
    if fields.get(name) is None:
        raise bad_request(f"Failed to parse request. Required attribute '{name}' not specified")
    return fields[name]


def _unrecognized(fields: dict[str, Any], known: frozenset[str]) -> None:
    extra = sorted(set(fields) - known)
    if extra:
        names = ", ".join(extra)
        raise bad_request(f"Unrecognized attribute(s) '{names}'")


def new_rule(
    fields: dict[str, Any], *, rule_id: str, project_id: str, now: datetime
) -> SecurityGroupRule:
    """A rule from a POST body, validated and normalised in Neutron's order."""
    _unrecognized(fields, _RULE_ATTRS)
    group_id = str(_required(fields, "security_group_id"))
    direction = _required(fields, "direction")
    if direction not in DIRECTIONS:
        raise bad_request(
            f"Invalid input for direction. Reason: '{direction}' is not in {list(DIRECTIONS)!r}."
        )
    ethertype = _ethertype(fields.get("ethertype", "IPv4"))
    protocol = _protocol(fields.get("protocol"))
    low, high = _port(fields.get("port_range_min")), _port(fields.get("port_range_max"))
    if ethertype == "IPv6":
        if protocol in ("icmp", "icmpv6"):
            protocol = "ipv6-icmp"
        elif protocol == "1":
            protocol = "58"
    if low == 1 and high == 65535:
        low = high = None
    _check_ports(protocol, low, high)
    prefix = _prefix(fields.get("remote_ip_prefix"), ethertype)
    if protocol in _IPV6_ONLY and ethertype == "IPv4":
        raise _invalid_input(
            "SecurityGroupEthertypeConflictWithProtocol",
            f"Invalid ethertype {ethertype} for protocol {protocol}.",
        )
    remotes = [fields.get(k) for k in ("remote_group_id", "remote_address_group_id")]
    if sum(1 for r in [prefix, *remotes] if r) > 1:
        raise _invalid_input(
            "SecurityGroupMultipleRemoteEntites",
            "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id may "
            "be provided.",
        )
    if fields.get("remote_address_group_id"):
        raise NeutronRefusal(
            404,
            "AddressGroupNotFound",
            f"Address group {fields['remote_address_group_id']} could not be found.",
        )
    return SecurityGroupRule(
        id=rule_id,
        security_group_id=group_id,
        project_id=project_id,
        direction=direction,
        ethertype=ethertype,
        protocol=protocol,
        port_range_min=low,
        port_range_max=high,
        remote_ip_prefix=prefix,
        remote_group_id=fields.get("remote_group_id") or None,
        description=str(fields.get("description") or ""),
        created_at=timestamp(now),
    )


def _rule_key(rule: SecurityGroupRule) -> tuple[Any, ...]:
    """What makes two rules the same (Neutron: an any-address prefix equals no prefix)."""
    cidr = normalized_cidr(rule.remote_ip_prefix)
    if cidr in ("0.0.0.0/0", "::/0"):
        cidr = None
    return (
        rule.direction,
        rule.ethertype,
        protocol_number(rule.protocol),
        rule.port_range_min,
        rule.port_range_max,
        cidr,
        rule.remote_group_id,
    )


def default_rules(group_id: str, project_id: str, now: datetime) -> tuple[SecurityGroupRule, ...]:
    """The two rules Neutron gives every new group: egress to anywhere, IPv4 and IPv6."""
    return tuple(
        SecurityGroupRule(
            id=str(uuid.uuid4()),
            security_group_id=group_id,
            project_id=project_id,
            direction="egress",
            ethertype=ethertype,
            created_at=timestamp(now),
        )
        for ethertype in ETHERTYPES
    )


# -- bodies ----------------------------------------------------------------------------------


def rule_body(rule: SecurityGroupRule, revision_number: int = 0) -> dict[str, Any]:
    """A rule as Neutron renders it."""
    return {
        "id": rule.id,
        "project_id": rule.project_id,
        "tenant_id": rule.project_id,
        "security_group_id": rule.security_group_id,
        "ethertype": rule.ethertype,
        "direction": rule.direction,
        "protocol": rule.protocol,
        "port_range_min": rule.port_range_min,
        "port_range_max": rule.port_range_max,
        "remote_ip_prefix": rule.remote_ip_prefix,
        "remote_address_group_id": None,
        "normalized_cidr": normalized_cidr(rule.remote_ip_prefix),
        "remote_group_id": rule.remote_group_id,
        "belongs_to_default_sg": False,
        "description": rule.description,
        "tags": [],
        "created_at": rule.created_at,
        "updated_at": rule.created_at,
        "revision_number": revision_number,
    }


def group_body(group: SecurityGroup) -> dict[str, Any]:
    """A group as Neutron renders it, its rules included."""
    return {
        "id": group.id,
        "name": group.name,
        "stateful": group.stateful,
        "tenant_id": group.project_id,
        "project_id": group.project_id,
        "description": group.description,
        "shared": False,
        "security_group_rules": [rule_body(r) for r in group.rules],
        "tags": [],
        "created_at": group.created_at,
        "updated_at": group.updated_at,
        "revision_number": group.version,
    }


# -- decisions -------------------------------------------------------------------------------


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise bad_request(f"Invalid input for name. Reason: '{value}' is not a valid string.")
    if len(value) > NAME_LENGTH:
        raise bad_request(
            f"Invalid input for name. Reason: '{value}' exceeds maximum length of {NAME_LENGTH}."
        )
    if value.lower() == "default":
        raise NeutronRefusal(
            409, "SecurityGroupDefaultAlreadyExists", "Default security group already exists."
        )
    return value


def _description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > NAME_LENGTH:
        raise bad_request(
            f"Invalid input for description. Reason: '{value}' is not a valid string."
        )
    return value


def _stateful(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise bad_request(
        f"Invalid input for stateful. Reason: '{value}' cannot be converted to boolean."
    )


def create_group(
    fields: dict[str, Any], *, group_id: str, project_id: str, now: datetime
) -> list[Event]:
    _unrecognized(fields, _GROUP_ATTRS)
    return [
        ev.SecurityGroupCreated(
            id=group_id,
            project_id=project_id,
            name=_name(fields.get("name", "")),
            description=_description(fields.get("description")),
            stateful=_stateful(fields.get("stateful", True)),
            created_at=timestamp(now),
            rules=default_rules(group_id, project_id, now),
        )
    ]


def update_group(state: SecurityGroup, fields: dict[str, Any], now: datetime) -> list[Event]:
    extra = set(fields) - _GROUP_MUTABLE
    if extra & _GROUP_ATTRS:
        name = sorted(extra & _GROUP_ATTRS)[0]
        raise bad_request(f"Cannot update read-only attribute {name}")
    _unrecognized(fields, _GROUP_MUTABLE)
    changes: dict[str, Any] = {}
    if "name" in fields:
        changes["name"] = _name(fields["name"])
    if "description" in fields:
        changes["description"] = _description(fields["description"])
    if "stateful" in fields:
        changes["stateful"] = _stateful(fields["stateful"])
    changes = {k: v for k, v in changes.items() if getattr(state, k) != v}
    if not changes:
        return []
    return [
        ev.SecurityGroupUpdated(
            id=state.id,
            changes=ev.SecurityGroupChanges(**changes),
            updated_at=timestamp(now),
        )
    ]


def add_rule(state: SecurityGroup, rule: SecurityGroupRule) -> list[Event]:
    """Refuses a rule equal to one the group has (409, Neutron's SecurityGroupRuleExists)."""
    if not state.exists:
        raise group_not_found(rule.security_group_id)
    key = _rule_key(rule)
    for existing in state.rules:
        if _rule_key(existing) == key:
            raise NeutronRefusal(
                409,
                "SecurityGroupRuleExists",
                f"Security group rule already exists. Rule id is {existing.id}.",
            )
    return [ev.SecurityGroupRuleAdded(rule=rule)]


def remove_rule(state: SecurityGroup, rule_id: str, now: datetime) -> list[Event]:
    if not state.exists or state.rule(rule_id) is None:
        raise rule_not_found(rule_id)
    return [
        ev.SecurityGroupRuleRemoved(
            security_group_id=state.id, rule_id=rule_id, updated_at=timestamp(now)
        )
    ]


# -- use cases -------------------------------------------------------------------------------

Decision = Callable[[SecurityGroup], list[Event]]


class SecurityGroupRepository(Protocol):
    async def load(self, group_id: str) -> SecurityGroup: ...

    async def execute(
        self, group_id: str, decide: Decision, metadata: Metadata, *, deleting: bool = False
    ) -> SecurityGroup:
        """Run ``decide`` on the group's current state and append its events with the read
        models; with ``deleting``, refuse (``group_in_use``) while a live load balancer
        refers to the group."""
        ...

    async def group_of_rule(self, rule_id: str) -> str | None: ...


@dataclass(frozen=True)
class Owner:
    """Whose groups a caller may see and change."""

    ctx: RequestContext

    def sees(self, group: SecurityGroup) -> bool:
        return group.exists and allowed(self.ctx, Action.READ, group.project_id)

    def changes(self, group: SecurityGroup) -> bool:
        return group.exists and allowed(self.ctx, Action.WRITE, group.project_id)


def _forbidden(action: str) -> NeutronRefusal:
    return NeutronRefusal(403, "PolicyNotAuthorized", f"rule:{action} is disallowed by policy")


def _now() -> datetime:
    return datetime.now(UTC)


class SecurityGroupAdministration:
    """Create, update and delete groups and rules; a caller sees only its project's groups
    (admins every one), others' are answered as absent."""

    def __init__(self, repo: SecurityGroupRepository) -> None:
        self._repo = repo

    def _project(self, ctx: RequestContext, fields: dict[str, Any], action: str) -> str:
        wanted = fields.get("project_id") or fields.get("tenant_id") or ctx.project_id
        if wanted is None or not allowed(ctx, Action.WRITE, str(wanted)):
            raise _forbidden(action)
        return str(wanted)

    async def visible(self, ctx: RequestContext, group_id: str) -> SecurityGroup:
        group = await self._repo.load(group_id)
        if not Owner(ctx).sees(group):
            raise group_not_found(group_id)
        return group

    async def _changeable(self, ctx: RequestContext, group_id: str, action: str) -> None:
        group = await self.visible(ctx, group_id)
        if not Owner(ctx).changes(group):
            raise _forbidden(action)

    async def create_group(
        self, ctx: RequestContext, fields: dict[str, Any], meta: Metadata
    ) -> SecurityGroup:
        project_id = self._project(ctx, fields, "create_security_group")
        group_id = str(uuid.uuid4())
        events = create_group(fields, group_id=group_id, project_id=project_id, now=_now())
        return await self._repo.execute(group_id, lambda _: events, meta)

    async def update_group(
        self, ctx: RequestContext, group_id: str, fields: dict[str, Any], meta: Metadata
    ) -> SecurityGroup:
        await self._changeable(ctx, group_id, "update_security_group")
        now = _now()
        return await self._repo.execute(group_id, lambda s: update_group(s, fields, now), meta)

    async def delete_group(self, ctx: RequestContext, group_id: str, meta: Metadata) -> None:
        await self._changeable(ctx, group_id, "delete_security_group")

        def decide(state: SecurityGroup) -> list[Event]:
            if not state.exists:
                raise group_not_found(group_id)
            return [ev.SecurityGroupDeleted(id=group_id)]

        await self._repo.execute(group_id, decide, meta, deleting=True)

    async def create_rule(
        self, ctx: RequestContext, fields: dict[str, Any], meta: Metadata
    ) -> SecurityGroupRule:
        group_id = str(_required(fields, "security_group_id"))
        group = await self.visible(ctx, group_id)
        if not Owner(ctx).changes(group):
            raise _forbidden("create_security_group_rule")
        rule = new_rule(fields, rule_id=str(uuid.uuid4()), project_id=group.project_id, now=_now())
        remote = rule.remote_group_id
        if remote is not None and not Owner(ctx).sees(await self._repo.load(remote)):
            raise group_not_found(remote)
        await self._repo.execute(group_id, lambda s: add_rule(s, rule), meta)
        return rule

    async def visible_rule(self, ctx: RequestContext, rule_id: str) -> SecurityGroupRule:
        group_id = await self._repo.group_of_rule(rule_id)
        group = await self._repo.load(group_id) if group_id else SecurityGroup()
        rule = group.rule(rule_id)
        if rule is None or not Owner(ctx).sees(group):
            raise rule_not_found(rule_id)
        return rule

    async def delete_rule(self, ctx: RequestContext, rule_id: str, meta: Metadata) -> None:
        rule = await self.visible_rule(ctx, rule_id)
        await self._changeable(ctx, rule.security_group_id, "delete_security_group_rule")
        now = _now()
        await self._repo.execute(
            rule.security_group_id, lambda s: remove_rule(s, rule_id, now), meta
        )
