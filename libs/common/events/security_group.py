"""Events of the ``securitygroup-<id>`` streams: a Neutron security group and its rules.

A group is the consistency boundary of its rules (a duplicate rule is refused against the
group's current rules). Creation carries the group's attributes and its default rules (the two
egress rules Neutron gives every new group); each rule is then added or removed on its own.
Load balancers refer to groups by id (``vip_sg_ids``); the provisioner renders the ingress
rules of those groups into the amphora's packet filter.
"""

from __future__ import annotations

from typing import ClassVar

from libs.common.events._payload import Changes, Stored
from libs.common.events._registry import Event


class SecurityGroupRule(Stored):
    """One rule, normalised as Neutron stores it (protocol lower-case or a number, the
    prefix with its mask, None for "any")."""

    id: str
    security_group_id: str
    project_id: str
    direction: str
    ethertype: str
    protocol: str | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None
    description: str = ""
    created_at: str


class SecurityGroupChanges(Changes):
    """Some of name, description and stateful of a group."""

    name: str | None = None
    description: str | None = None
    stateful: bool | None = None


class SecurityGroupEvent(Event):
    category: ClassVar[str] = "securitygroup"


class SecurityGroupCreated(SecurityGroupEvent, name="SecurityGroupCreated"):
    """A project made a group; ``rules`` are its default rules."""

    id: str
    project_id: str
    name: str
    description: str = ""
    stateful: bool = True
    created_at: str
    rules: tuple[SecurityGroupRule, ...] = ()


class SecurityGroupUpdated(SecurityGroupEvent, name="SecurityGroupUpdated"):
    id: str
    changes: SecurityGroupChanges
    updated_at: str


class SecurityGroupRuleAdded(SecurityGroupEvent, name="SecurityGroupRuleAdded"):
    rule: SecurityGroupRule


class SecurityGroupRuleRemoved(SecurityGroupEvent, name="SecurityGroupRuleRemoved"):
    security_group_id: str
    rule_id: str
    updated_at: str


class SecurityGroupDeleted(SecurityGroupEvent, name="SecurityGroupDeleted"):
    """The group is gone (no live load balancer referred to it)."""

    id: str
