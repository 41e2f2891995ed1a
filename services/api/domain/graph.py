"""Octavia's single-call create: a load balancer with its listeners, pools, members, monitors,
L7 policies and rules, built as one ``CreateLoadBalancer`` command.

Pools are named: a pool given by ``name`` alone refers to its full definition elsewhere in the
request (top-level ``pools``, a listener's ``default_pool`` or a policy's ``redirect_pool``).
Pure; ``decide`` then checks the tree (ports, protocols, one monitor per pool).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from libs.common.domain import commands as c
from libs.common.domain.kinds import CHILD_KINDS, kind_of
from libs.common.domain.model import L7Policy, LoadBalancer, Pool, Resource
from libs.common.errors import ValidationFailed
from services.api.domain import builders, rules


@dataclass
class Graph:
    """The children of a single-call create, by kind key, in the order they were built."""

    children: dict[str, list[Resource]] = field(
        default_factory=lambda: {kind.key: [] for kind in CHILD_KINDS}
    )

    def add(self, child: Resource) -> None:
        self.children[kind_of(child).key].append(child)

    def command(self, lb: LoadBalancer) -> c.CreateLoadBalancer:
        """The CreateLoadBalancer of ``lb`` with this tree."""
        trees: dict[str, Any] = {key: tuple(items) for key, items in self.children.items()}
        return c.CreateLoadBalancer(loadbalancer=lb, **trees)

    def quota_counts(self) -> dict[str, int]:
        return {kind.quota: len(self.children[kind.key]) for kind in CHILD_KINDS}


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed(f"Validation failure: {message}")


def _is_reference(pool: dict[str, Any]) -> bool:
    return set(pool) == {"name"}


def _pool_definitions(fields: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every full pool definition and every name referenced, in request order."""
    definitions: list[dict[str, Any]] = []
    references: list[str] = []

    def visit(pool: dict[str, Any] | None) -> None:
        if pool is None:
            return
        if _is_reference(pool):
            references.append(pool["name"])
        else:
            definitions.append(pool)

    for pool in fields.get("pools") or ():
        visit(pool)
    for listener in fields.get("listeners") or ():
        visit(listener.get("default_pool"))
        for policy in listener.get("l7policies") or ():
            visit(policy.get("redirect_pool"))
    return definitions, references


def build_graph(
    lb: LoadBalancer,
    fields: dict[str, Any],
    *,
    reserved_ips: Collection[str],
    subnet_ids: Collection[str],
    now: datetime,
) -> Graph:
    """The tree below ``lb`` from the request; raises ValidationFailed (400) when incoherent."""
    graph = Graph()
    definitions, references = _pool_definitions(fields)
    names = [str(p.get("name") or "") for p in definitions]
    if any(not name for name in names):
        raise _invalid("Pools must be named when creating a fully populated loadbalancer.")
    if any(count > 1 for count in Counter(names).values()):
        raise _invalid("Pool names must be unique when creating a fully populated loadbalancer.")
    missing = [name for name in references if name not in names]
    if missing:
        raise _invalid(f"Pool '{missing[0]}' was referenced but no full definition was found.")
    for definition in definitions:
        for attribute in ("protocol", "lb_algorithm"):
            if definition.get(attribute) is None:
                raise _invalid(
                    f"Pool definition for '{definition['name']}' missing required attribute: "
                    f"{attribute}"
                )
    pool_ids: dict[str, str] = {}
    for definition in definitions:
        pool = builders.new_pool(
            definition, pool_id=_new_id(), lb_id=lb.id, project_id=lb.project_id, now=now
        )
        rules.check_pool(pool)
        pool_ids[definition["name"]] = pool.id
        graph.add(pool)
        _pool_children(graph, pool, definition, reserved_ips, subnet_ids, now)
    for listener_fields in fields.get("listeners") or ():
        _listener(graph, lb, listener_fields, pool_ids, now)
    return graph


def _pool_children(
    graph: Graph,
    pool: Pool,
    definition: dict[str, Any],
    reserved_ips: Collection[str],
    subnet_ids: Collection[str],
    now: datetime,
) -> None:
    hm_fields = definition.get("healthmonitor")
    if hm_fields is not None:
        hm = builders.new_healthmonitor(
            hm_fields, hm_id=_new_id(), pool_id=pool.id, project_id=pool.project_id, now=now
        )
        rules.check_healthmonitor_type(hm, pool)
        rules.check_healthmonitor(hm)
        graph.add(hm)
    for member_fields in definition.get("members") or ():
        if member_fields.get("request_sriov"):
            raise _invalid("SR-IOV member ports are not available.")
        member = builders.new_member(
            member_fields,
            member_id=_new_id(),
            pool_id=pool.id,
            project_id=pool.project_id,
            monitored=hm_fields is not None,
            now=now,
        )
        rules.check_member(member, reserved_ips, subnet_ids)
        graph.add(member)


def _listener(
    graph: Graph,
    lb: LoadBalancer,
    fields: dict[str, Any],
    pool_ids: dict[str, str],
    now: datetime,
) -> None:
    default_pool = fields.get("default_pool")
    data = dict(fields)
    if default_pool is not None:
        data["default_pool_id"] = pool_ids[default_pool["name"]]
    listener = builders.new_listener(
        data, listener_id=_new_id(), lb_id=lb.id, project_id=lb.project_id, now=now
    )
    rules.check_listener(listener, lb)
    graph.add(listener)
    ordered: list[tuple[dict[str, Any], L7Policy]] = []
    for policy_fields in fields.get("l7policies") or ():
        data = dict(policy_fields)
        redirect_pool = policy_fields.get("redirect_pool")
        if redirect_pool is not None:
            data["redirect_pool_id"] = pool_ids[redirect_pool["name"]]
        requested = policy_fields.get("position") or len(ordered) + 1
        policy = builders.new_l7policy(
            data,
            policy_id=_new_id(),
            listener_id=listener.id,
            project_id=lb.project_id,
            position=requested,
            now=now,
        )
        ordered.insert(min(requested, len(ordered) + 1) - 1, (policy_fields, policy))
    for position, (policy_fields, policy) in enumerate(ordered, start=1):
        placed = policy.updated({"position": position})
        graph.add(placed)
        for rule_fields in policy_fields.get("rules") or ():
            rule = builders.new_l7rule(
                rule_fields,
                rule_id=_new_id(),
                policy_id=placed.id,
                project_id=lb.project_id,
                now=now,
            )
            rules.check_l7rule(rule)
            graph.add(rule)


def _new_id() -> str:
    return str(uuid.uuid4())
