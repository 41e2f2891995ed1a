"""Read models: Octavia-shaped bodies of every resource, kept in ``*_view`` tables.

The projector runs inside the append transaction (read-your-writes). It diffs the bodies of the
state before and after the append and writes only rows that changed, each guarded by the LB's
revision (``LoadBalancerState.revision``). VIP addresses (the primary and the additional ones)
are claimed in ``vip_allocations`` in the same transaction, so the store itself refuses an
address twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg

from libs.common.domain.amphora import Amphora
from libs.common.domain.kinds import BY_KEY, CHILD_KINDS
from libs.common.domain.model import LoadBalancerState, ProvisioningStatus, Resource
from libs.common.errors import Conflict
from libs.common.eventstore import AppendRider

VIEW_TABLES: Final[dict[str, str]] = {kind.key: kind.view_table for kind in CHILD_KINDS}


def api_time(value: datetime | None) -> str | None:
    """Octavia's timestamp format: ISO 8601 to the second, no zone."""
    return value.strftime("%Y-%m-%dT%H:%M:%S") if value else None


def cert_time(recorded: str | None) -> str | None:
    """An amphora's ``cert_expiration`` as recorded (ISO 8601, any offset) in Octavia's
    format: naive UTC to the second. Recorded values compare equal when their renders do."""
    if recorded is None:
        return None
    moment = datetime.fromisoformat(recorded)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return api_time(moment)


def _common(resource: Resource) -> dict[str, Any]:
    """The fields every body shares; ``tenant_id`` repeats ``project_id``, as Octavia's do."""
    body = resource.model_dump(mode="json")
    body["created_at"] = api_time(resource.created_at)
    body["updated_at"] = api_time(resource.updated_at)
    body["tags"] = list(resource.tags)
    body["tenant_id"] = body["project_id"]
    return body


def _ids(items: Iterable[Resource]) -> list[dict[str, str]]:
    return [{"id": item.id} for item in items]


def _live(items: Iterable[Any]) -> list[Any]:
    return [i for i in items if i.provisioning_status != ProvisioningStatus.DELETED]


def resource_bodies(state: LoadBalancerState) -> dict[str, dict[str, dict[str, Any]]]:
    """Every resource of the tree as its Octavia API body, by kind then id."""
    lb = state.loadbalancer
    if lb is None:
        return {}
    lb_ref = [{"id": lb.id}]
    out: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in VIEW_TABLES}
    body = _common(lb)
    body.pop("topology")
    body.pop("amphora_bounds", None)
    body.pop("autoscale", None)
    body.pop("provisioning_error")
    body.update(
        vip_vnic_type="normal",
        additional_vips=[
            {"subnet_id": vip.subnet_id, "ip_address": vip.ip_address} for vip in lb.additional_vips
        ],
        vip_sg_ids=list(lb.vip_sg_ids or ()),
        listeners=_ids(state.listeners.values()),
        pools=_ids(state.pools.values()),
    )
    out["loadbalancer"] = {lb.id: body}
    for listener in state.listeners.values():
        body = _common(listener)
        body.pop("loadbalancer_id")
        body.update(
            loadbalancers=lb_ref,
            l7policies=_ids(state.listener_policies(listener.id)),
            sni_container_refs=list(listener.sni_container_refs),
        )
        out["listeners"][listener.id] = body
    for pool in state.pools.values():
        body = _common(pool)
        body.pop("loadbalancer_id")
        hm = state.pool_healthmonitor(pool.id)
        body.update(
            loadbalancers=lb_ref,
            listeners=_ids(state.shown_pool_listeners(pool.id)),
            members=_ids(state.pool_members(pool.id)),
            healthmonitor_id=hm.id if hm else None,
        )
        out["pools"][pool.id] = body
    for member in state.members.values():
        body = _common(member)
        body.pop("pool_id")
        out["members"][member.id] = body
    for hm in state.healthmonitors.values():
        body = _common(hm)
        body.pop("pool_id")
        body["pools"] = [{"id": hm.pool_id}]
        out["healthmonitors"][hm.id] = body
    for policy in state.l7policies.values():
        body = _common(policy)
        body["rules"] = _ids(state.policy_rules(policy.id))
        out["l7policies"][policy.id] = body
    for rule in state.l7rules.values():
        body = _common(rule)
        body.pop("l7policy_id")
        out["l7rules"][rule.id] = body
    return out


@dataclass(frozen=True)
class ViewLocation:
    """The columns of a resource's view row that place it: its LB, parent and project."""

    id: str
    lb_id: str
    parent_id: str
    project_id: str


def located(state: LoadBalancerState, kind: str, resource_id: str) -> ViewLocation | None:
    """Where the view row of ``resource_id`` (an LB, or a child of collection ``kind``)
    projected from ``state`` places it; None when ``state`` projects no such row or its LB
    is DELETED (whose rows housekeeping purges, the state keeping them)."""
    lb = state.loadbalancer
    if lb is None or lb.provisioning_status == ProvisioningStatus.DELETED:
        return None
    if kind == "loadbalancer":
        return ViewLocation(lb.id, lb.id, lb.id, lb.project_id) if resource_id == lb.id else None
    if resource_id not in getattr(state, kind):
        return None
    return ViewLocation(resource_id, lb.id, _parent_id(state, kind, resource_id), lb.project_id)


def _parent_id(state: LoadBalancerState, kind: str, resource_id: str) -> str:
    child = getattr(state, kind)[resource_id]
    return str(getattr(child, BY_KEY[kind].parent_field))


def _upsert_views_ctes(when: str) -> str:
    """CTEs that upsert rows into every view table of a load balancer's tree: rows (kind,
    id, lb_id, parent_id, project_id, version, created_at, body) come as arrays ($1-$8) and
    are taken ``when`` (an SQL condition), each table takes those of its kind, and a row
    replaces one only at a higher ``version``."""
    tables = {"loadbalancer": "loadbalancer_view", **VIEW_TABLES}
    inserts = ",\n".join(
        f"view_{kind} AS (\n"
        f"    INSERT INTO {table} (id, lb_id, parent_id, project_id, version, created_at, body)\n"
        "    SELECT id, lb_id, parent_id, project_id, version, created_at, body::jsonb\n"
        f"    FROM view_rows WHERE kind = '{kind}'\n"
        "    ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, body = EXCLUDED.body\n"
        f"    WHERE {table}.version < EXCLUDED.version\n)"
        for kind, table in tables.items()
    )
    return (
        "view_rows AS (\n"
        "    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],\n"
        "                         $6::int[], $7::timestamptz[], $8::text[])\n"
        "        AS r(kind, id, lb_id, parent_id, project_id, version, created_at, body)\n"
        f"    WHERE {when}\n"
        f"),\n{inserts}"
    )


# A projection's upserts are one round trip whatever the kinds it touches (a child's create
# changes the LB's body, its parent's and its own): a statement of their own, or CTEs riding
# an append's statement (made only if its events are: ``inserted`` has rows).
_UPSERT_VIEWS_SQL: Final = f"WITH {_upsert_views_ctes('true')}\nSELECT 1"
_UPSERT_VIEWS_RIDING: Final = _upsert_views_ctes("EXISTS (SELECT 1 FROM inserted)")


@dataclass(frozen=True)
class ViewChanges:
    """What a projection from ``before`` to ``after`` writes: the view rows whose bodies
    changed (``upserts``: arrays in ``_upsert_views_ctes``' order) and the ids gone, by
    table."""

    before: LoadBalancerState
    after: LoadBalancerState
    upserts: tuple[list[Any], ...] | None
    gone: dict[str, list[str]]

    def rider(self) -> AppendRider | None:
        """The upserts, to ride the append of ``after``'s events; None when there are none."""
        return None if self.upserts is None else AppendRider(_UPSERT_VIEWS_RIDING, self.upserts)

    @property
    def beyond_upserts(self) -> bool:
        """Whether ``project_loadbalancer`` writes more than the upserts: rows gone, or the
        VIP claims of a create or their release at a deletion."""
        return bool(self.gone) or _vip_claims_move(self.before, self.after)


def view_changes(before: LoadBalancerState, after: LoadBalancerState) -> ViewChanges:
    """The view rows that changed between ``before`` and ``after`` (a pure function)."""
    lb = after.loadbalancer
    if lb is None:
        return ViewChanges(before, after, None, {})
    old, new = resource_bodies(before), resource_bodies(after)
    rows: list[tuple[str, str, str, datetime, str]] = []  # kind, id, parent, created, body
    if old.get("loadbalancer") != new["loadbalancer"]:
        rows.append(
            ("loadbalancer", lb.id, lb.id, lb.created_at, json.dumps(new["loadbalancer"][lb.id]))
        )
    gone: dict[str, list[str]] = {}
    for kind, table in VIEW_TABLES.items():
        old_bodies, new_bodies = old.get(kind, {}), new[kind]
        removed = [rid for rid in old_bodies if rid not in new_bodies]
        if removed:
            gone[table] = removed
        children = getattr(after, kind)
        rows += [
            (
                kind,
                rid,
                _parent_id(after, kind, rid),
                children[rid].created_at,
                json.dumps(body),
            )
            for rid, body in new_bodies.items()
            if old_bodies.get(rid) != body
        ]
    upserts = (
        (
            [kind for kind, *_ in rows],
            [rid for _, rid, *_ in rows],
            [lb.id] * len(rows),
            [parent for _, _, parent, *_ in rows],
            [lb.project_id] * len(rows),
            [after.revision] * len(rows),
            [created for *_, created, _ in rows],
            [body for *_, body in rows],
        )
        if rows
        else None
    )
    return ViewChanges(before, after, upserts, gone)


async def project_loadbalancer(
    conn: asyncpg.Connection,
    before: LoadBalancerState,
    after: LoadBalancerState,
    changes: ViewChanges | None = None,
    *,
    upserted: bool = False,
) -> None:
    """Write the view rows that changed between ``before`` and ``after`` (same transaction):
    ``changes`` when computed already (``view_changes``), their upserts but when ``upserted``
    (they rode the append: ``ViewChanges.rider``)."""
    if after.loadbalancer is None:
        return
    await _claim_vip(conn, before, after)
    changes = changes or view_changes(before, after)
    for table, ids in changes.gone.items():
        await conn.execute(f"DELETE FROM {table} WHERE id = ANY($1::text[])", ids)
    if changes.upserts is not None and not upserted:
        await conn.execute(_UPSERT_VIEWS_SQL, *changes.upserts)


def _vip_claims_move(before: LoadBalancerState, after: LoadBalancerState) -> bool:
    """Whether ``_claim_vip`` writes: the LB is created (claims) or deleted (released)."""
    lb = after.loadbalancer
    return lb is not None and (
        before.loadbalancer is None or lb.provisioning_status == ProvisioningStatus.DELETED
    )


async def _claim_vip(
    conn: asyncpg.Connection, before: LoadBalancerState, after: LoadBalancerState
) -> None:
    lb = after.loadbalancer
    assert lb is not None
    if not _vip_claims_move(before, after):
        return
    if before.loadbalancer is None:
        # ON CONFLICT instead of a savepoint around a failing insert: one round trip per VIP,
        # and the Conflict raised here aborts the whole append all the same.
        claims = [(lb.vip_subnet_id, lb.vip_address)]
        claims += [(vip.subnet_id, vip.ip_address) for vip in lb.additional_vips]
        for subnet_id, address in claims:
            claimed = await conn.fetchval(
                "INSERT INTO vip_allocations (subnet_id, address, lb_id) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING RETURNING lb_id",
                subnet_id,
                address,
                lb.id,
            )
            if claimed is None:
                raise Conflict(f"IP address {address} already allocated in subnet {subnet_id}.")
    else:
        await conn.execute("DELETE FROM vip_allocations WHERE lb_id = $1", lb.id)


def amphora_body(amp: Amphora, created_at: datetime, updated_at: datetime | None) -> dict[str, Any]:
    """Octavia's amphora representation (``agent_url`` stays internal)."""
    return {
        "id": amp.id,
        "loadbalancer_id": amp.loadbalancer_id,
        "compute_id": amp.compute_id,
        "lb_network_ip": amp.lb_network_ip,
        "vrrp_ip": amp.vrrp_ip,
        "ha_ip": amp.ha_ip,
        "vrrp_port_id": None,
        "ha_port_id": None,
        "cert_expiration": cert_time(amp.cert_expiration),
        "cert_busy": False,
        "role": amp.role,
        "status": amp.status.value,
        "vrrp_interface": None,
        "vrrp_id": 1 if amp.topology == "ACTIVE_STANDBY" else None,
        "vrrp_priority": {"MASTER": 100, "BACKUP": 90}.get(amp.role),
        "cached_zone": amp.host or None,  # the amphora host it was placed on
        "image_id": None,
        "compute_flavor": amp.driver,
        "created_at": api_time(created_at),
        "updated_at": api_time(updated_at),
    }


async def project_amphora(conn: asyncpg.Connection, amp: Amphora, occurred_at: datetime) -> None:
    """Upsert one amphora's view row at its stream version (same transaction as the append),
    in one statement: a new row is created at ``occurred_at``, an existing one keeps its
    creation time and is updated at ``occurred_at``."""
    await conn.execute(
        "INSERT INTO amphora_view (id, lb_id, status, agent_url, version, created_at, body) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT (id) DO UPDATE SET "
        "lb_id = $2, status = $3, agent_url = $4, version = $5, "
        "body = $7::jsonb || jsonb_build_object("
        "'created_at', amphora_view.body -> 'created_at', 'updated_at', $8::text) "
        "WHERE amphora_view.version < $5",
        amp.id,
        amp.loadbalancer_id,
        amp.status.value,
        amp.agent_url,
        amp.version,
        occurred_at,
        json.dumps(amphora_body(amp, occurred_at, None)),
        api_time(occurred_at),
    )


async def creates_waiting(conn: asyncpg.Connection | asyncpg.Pool, within: float) -> bool:
    """Whether a load balancer created less than ``within`` s ago is still PENDING_CREATE (one
    stuck longer no longer counts): the spare pools wait for such creates before refilling."""
    waiting: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM loadbalancer_view "
        "WHERE body->>'provisioning_status' = 'PENDING_CREATE' "
        "AND created_at > clock_timestamp() - make_interval(secs => $1))",
        within,
    )
    return waiting
