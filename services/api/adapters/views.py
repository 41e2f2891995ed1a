"""``PostgresViews``: every read the API makes, from the projector's ``*_view`` tables.

Bodies are returned as the stored JSON text so handlers can send them without re-encoding.
Attribute names interpolated into SQL come only from the whitelists in ``domain/kinds.py``.
Also reads ``listener_stats`` and ``member_stats`` (written by the health service),
``quota_view`` (written by adapters/quotas.py) and the ``amphora_list`` view (amphorae with
their load balancer's project). Every table is defined in ``libs.common.schema``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from libs.common.errors import ValidationFailed
from libs.common.readmodel import VIEW_TABLES
from services.api.adapters import catalog
from services.api.domain.kinds import KINDS, Kind
from services.api.domain.queries import ListQuery, Page

TABLES: Final[dict[str, str]] = {
    "loadbalancer": "loadbalancer_view",
    **VIEW_TABLES,
    **catalog.CATALOG_TABLES,
    "amphora": "amphora_list",
}
STATS_FIELDS: Final = (
    "bytes_in",
    "bytes_out",
    "active_connections",
    "total_connections",
    "request_errors",
)
# Quota resource names (as Octavia's quota API spells them) -> counted view and condition.
_QUOTA_COUNTS: Final = {
    "loadbalancer": "loadbalancer_view WHERE project_id = $1 "
    "AND body->>'provisioning_status' <> 'DELETED'",
    "listener": "listener_view WHERE project_id = $1",
    "pool": "pool_view WHERE project_id = $1",
    "member": "member_view WHERE project_id = $1",
    "healthmonitor": "healthmonitor_view WHERE project_id = $1",
    "l7policy": "l7policy_view WHERE project_id = $1",
    "l7rule": "l7rule_view WHERE project_id = $1",
}
_QUOTA_LOCK_NAMESPACE: Final = 0x51554F54  # "QUOT"
_LIVE_LB: Final = "body->>'provisioning_status' <> 'DELETED'"
_STATS_SQL: Final = "SELECT " + ", ".join(
    f"coalesce(sum({f}), 0)::bigint AS {f}" for f in STATS_FIELDS
)


@dataclass(frozen=True, slots=True)
class OfferingRow:
    """A flavor's or availability zone's state and its profile's provider and data."""

    enabled: bool
    provider_name: str
    data: str


@dataclass(frozen=True, slots=True)
class AmphoraRow:
    """One amphora's load balancer, that LB's project ("" for none) and its stored body."""

    id: str
    lb_id: str | None
    project_id: str
    status: str
    body: str


@dataclass(frozen=True, slots=True)
class ViewRow:
    """One resource's location and its stored body (JSON text)."""

    id: str
    lb_id: str
    parent_id: str
    project_id: str
    body: str


def _select_one(kind: Kind) -> str:
    live = f" AND {_LIVE_LB}" if kind.key == "loadbalancer" else ""
    return (
        f"SELECT id, lb_id, parent_id, project_id, body FROM {TABLES[kind.key]} WHERE id = $1{live}"
    )


class PostgresViews:
    """Read queries; each runs on the pool (statements are prepared and cached per connection)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._one_sql = {key: _select_one(kind) for key, kind in KINDS.items()}

    async def get(self, kind: Kind, resource_id: str) -> ViewRow | None:
        """The live resource ``resource_id`` of ``kind`` (a DELETED LB counts as absent)."""
        row = await self._pool.fetchrow(self._one_sql[kind.key], resource_id)
        return ViewRow(*row) if row is not None else None

    async def list_page(self, query: ListQuery) -> Page:
        """One page of bodies in the query's order; raises ValidationFailed on a bad marker."""
        marker = None
        if query.marker is not None:
            columns = ", ".join(sorted({"created_at", "body", *query.kind.columns.values()}))
            marker = await self._pool.fetchrow(
                f"SELECT {columns} FROM {TABLES[query.kind.key]} WHERE id = $1", query.marker
            )
            if marker is None:
                raise ValidationFailed(f"Supplied pagination marker '{query.marker}' is not valid.")
        sql, params = page_sql(query, marker)
        rows = await self._pool.fetch(sql, *params)
        if query.page_reverse:
            rows = list(reversed(rows))
        return Page(bodies=[r["body"] for r in rows], ids=[r["id"] for r in rows])

    async def tree(self, lb_id: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """(parent id, body) of an LB's listeners, pools, members and monitors, oldest first."""
        parts = [
            f"SELECT '{key}' AS kind, created_at, id, parent_id, body FROM {VIEW_TABLES[key]} "
            "WHERE lb_id = $1"
            for key in ("listeners", "pools", "members", "healthmonitors")
        ]
        rows = await self._pool.fetch(" UNION ALL ".join(parts) + " ORDER BY created_at, id", lb_id)
        out: dict[str, list[tuple[str, dict[str, Any]]]] = {
            "listeners": [],
            "pools": [],
            "members": [],
            "healthmonitors": [],
        }
        for row in rows:
            out[row["kind"]].append((row["parent_id"], json.loads(row["body"])))
        return out

    async def stats(
        self,
        *,
        lb_id: str | None = None,
        listener_id: str | None = None,
        member_id: str | None = None,
    ) -> dict[str, int]:
        """The five counters summed over amphorae (and listeners, for an LB)."""
        if member_id is not None:
            row = await self._pool.fetchrow(
                _STATS_SQL + " FROM member_stats WHERE member_id = $1", member_id
            )
        elif listener_id is not None:
            row = await self._pool.fetchrow(
                _STATS_SQL + " FROM listener_stats WHERE listener_id = $1", listener_id
            )
        else:
            row = await self._pool.fetchrow(
                _STATS_SQL + " FROM listener_stats WHERE lb_id = $1", lb_id
            )
        return {f: int(row[f]) for f in STATS_FIELDS}

    async def entry(self, kind: Kind, key: str) -> str | None:
        """The body (JSON text) of a catalog entry (flavor, zone, profile), or None."""
        body: str | None = await self._pool.fetchval(
            f"SELECT body FROM {TABLES[kind.key]} WHERE id = $1", key
        )
        return body

    async def flavor_offering(self, flavor_id: str) -> OfferingRow | None:
        """The flavor's enabled flag with its profile's provider and ``flavor_data``."""
        return await self._offering("flavor", "flavorprofile", "flavor_data", flavor_id)

    async def availability_zone_offering(self, name: str) -> OfferingRow | None:
        """The zone's enabled flag with its profile's provider and ``availability_zone_data``."""
        return await self._offering(
            "availabilityzone", "availabilityzoneprofile", "availability_zone_data", name
        )

    async def _offering(
        self, entries: str, profiles: str, data_attr: str, key: str
    ) -> OfferingRow | None:
        row = await self._pool.fetchrow(
            f"SELECT (e.body->>'enabled')::boolean AS enabled, "
            f"p.body->>'provider_name' AS provider_name, p.body->>'{data_attr}' AS data "
            f"FROM {TABLES[entries]} e JOIN {TABLES[profiles]} p ON p.id = e.profile_id "
            "WHERE e.id = $1",
            key,
        )
        return OfferingRow(*row) if row is not None else None

    async def amphora(self, amphora_id: str) -> AmphoraRow | None:
        """An amphora (DELETED ones too, until purged) with its load balancer's project."""
        row = await self._pool.fetchrow(
            "SELECT a.id, a.lb_id, coalesce(lb.project_id, '') AS project_id, a.status, a.body "
            "FROM amphora_view a LEFT JOIN loadbalancer_view lb ON lb.id = a.lb_id "
            "WHERE a.id = $1",
            amphora_id,
        )
        return AmphoraRow(*row) if row is not None else None

    async def amphora_stats(self, amphora_id: str) -> list[dict[str, Any]]:
        """Octavia's ``amphora_stats``: one entry per listener the amphora reported on."""
        rows = await self._pool.fetch(
            "SELECT amphora_id AS id, listener_id, lb_id AS loadbalancer_id, "
            + ", ".join(STATS_FIELDS)
            + " FROM listener_stats WHERE amphora_id = $1 ORDER BY listener_id",
            amphora_id,
        )
        return [dict(r) for r in rows]

    async def quota_page(
        self, project_id: str | None, marker: str | None, limit: int | None, reverse: bool
    ) -> list[tuple[str, dict[str, int | None]]]:
        """Stored quotas as (project id, stored body), ordered by project id, after
        ``marker`` (a project id) in the page's direction; ``limit`` None: all of them."""
        op, order = ("<", "DESC") if reverse else (">", "ASC")
        rows = await self._pool.fetch(
            "SELECT project_id, body FROM quota_view "
            "WHERE ($1::text IS NULL OR project_id = $1) "
            f"AND ($2::text IS NULL OR project_id {op} $2) "
            f"ORDER BY project_id {order} LIMIT $3",
            project_id,
            marker,
            limit,
        )
        if reverse:
            rows = list(reversed(rows))
        return [(r["project_id"], json.loads(r["body"])) for r in rows]

    async def quota_limits(self, project_id: str) -> dict[str, int | None]:
        """The project's stored quota (None values mean "the default"); {} when none stored."""
        raw = await self._pool.fetchval(
            "SELECT body FROM quota_view WHERE project_id = $1", project_id
        )
        if raw is None:
            return {}
        body: dict[str, Any] = json.loads(raw)
        return {k: body.get(k) for k in _QUOTA_COUNTS}

    @asynccontextmanager
    async def locked_project(self, project_id: str) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a transaction holding the project's quota lock (commit at exit):
        quota-checked creates of one project run one at a time."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", _QUOTA_LOCK_NAMESPACE, project_id
            )
            yield conn

    async def count_pool_members(self, pool_id: str) -> int:
        count: int = await self._pool.fetchval(
            "SELECT count(*) FROM member_view WHERE parent_id = $1", pool_id
        )
        return count

    async def count_live(
        self, conn: asyncpg.Connection, project_id: str, resources: list[str]
    ) -> dict[str, int]:
        """How many of each quota resource the project holds now."""
        if not resources:
            return {}
        sql = "SELECT " + ", ".join(
            f"(SELECT count(*) FROM {_QUOTA_COUNTS[r]}) AS {r}" for r in resources
        )
        row = await conn.fetchrow(sql, project_id)
        return {r: int(row[r]) for r in resources}

    async def free_addresses(
        self, subnet_id: str, first: str, last: str, reserved: list[str], count: int
    ) -> list[str]:
        """Up to ``count`` lowest unallocated addresses in [first, last] of a subnet."""
        rows = await self._pool.fetch(
            """
            WITH taken AS (
                SELECT address::inet AS a FROM vip_allocations WHERE subnet_id = $1
                UNION SELECT unnest($4::inet[])
            ), inrange AS (
                SELECT a FROM taken WHERE a BETWEEN $2::inet AND $3::inet
            )
            SELECT host(c) AS address FROM (
                SELECT $2::inet AS c
                UNION ALL
                SELECT a + 1 FROM inrange WHERE a < $3::inet
            ) candidates
            WHERE NOT EXISTS (SELECT 1 FROM inrange t WHERE t.a = candidates.c)
            ORDER BY c LIMIT $5
            """,
            subnet_id,
            first,
            last,
            reserved,
            count,
        )
        return [r["address"] for r in rows]

    async def address_taken(self, subnet_id: str, address: str) -> bool:
        taken: bool = await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM vip_allocations "
            "WHERE subnet_id = $1 AND address::inet = $2::inet)",
            subnet_id,
            address,
        )
        return taken


def page_sql(query: ListQuery, marker: asyncpg.Record | None) -> tuple[str, list[Any]]:
    """The statement and parameters of ``query``'s page after the ``marker`` row (if any).

    In the default order (``created_at``, ``id``, one direction) an index answers it by
    reading the page's rows only (schema migration 6), at any table size."""
    params: list[Any] = []
    where = _conditions(query, params)
    if marker is not None:
        where.append(_after_marker(query, marker, params))
    order = ", ".join(
        f"{_sort_expr(query.kind, attr)} {'DESC' if desc != query.page_reverse else 'ASC'}"
        for attr, desc in query.sort
    )
    params.append(query.limit)
    sql = (
        f"SELECT id, body FROM {TABLES[query.kind.key]}"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" ORDER BY {order} LIMIT ${len(params)}"
    )
    return sql, params


def _filter_expr(kind: Kind, attr: str) -> str:
    return kind.columns.get(attr) or f"body->>'{attr}'"


def _sort_expr(kind: Kind, attr: str) -> str:
    if attr == "created_at":
        return "created_at"
    return kind.columns.get(attr) or f"(body->'{attr}')"


def _conditions(query: ListQuery, params: list[Any]) -> list[str]:
    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    kind = query.kind
    where: list[str] = []
    if kind.key == "loadbalancer":
        where.append(_LIVE_LB)
    if query.project_id is not None:
        where.append(f"project_id = {param(query.project_id)}")
    if query.parent_id is not None:
        where.append(f"parent_id = {param(query.parent_id)}")
    for attr, value in query.filters:
        where.append(f"{_filter_expr(kind, attr)} = {param(value)}")
    if query.tags_all:
        where.append(f"body->'tags' @> {param(json.dumps(list(query.tags_all)))}::jsonb")
    if query.tags_any:
        where.append(f"body->'tags' ?| {param(list(query.tags_any))}::text[]")
    if query.not_tags_all:
        where.append(f"NOT body->'tags' @> {param(json.dumps(list(query.not_tags_all)))}::jsonb")
    if query.not_tags_any:
        where.append(f"NOT body->'tags' ?| {param(list(query.not_tags_any))}::text[]")
    return where


def _after_marker(query: ListQuery, marker: asyncpg.Record, params: list[Any]) -> str:
    """Keyset condition: rows strictly after the marker row in the (possibly reversed) order.

    When every key runs one way, a row comparison ``(k1, k2, ...) > (v1, v2, ...)``, which an
    index in that order answers by seeking; else the equivalent expansion
    ``k1 > v1 OR (k1 = v1 AND k2 > v2) OR ...``."""
    body = json.loads(marker["body"])
    exprs: list[str] = []
    values: list[str] = []
    ops: list[str] = []
    for attr, desc in query.sort:
        exprs.append(_sort_expr(query.kind, attr))
        if attr == "created_at":
            params.append(marker["created_at"])
            values.append(f"${len(params)}")
        elif attr in query.kind.columns:
            params.append(marker[query.kind.columns[attr]])
            values.append(f"${len(params)}")
        else:
            params.append(json.dumps(body.get(attr)))
            values.append(f"${len(params)}::jsonb")
        ops.append("<" if desc != query.page_reverse else ">")
    if len(set(ops)) == 1:
        return f"({', '.join(exprs)}) {ops[0]} ({', '.join(values)})"
    terms: list[str] = []
    equal: list[str] = []
    for expr, value, op in zip(exprs, values, ops, strict=True):
        terms.append("(" + " AND ".join([*equal, f"{expr} {op} {value}"]) + ")")
        equal.append(f"{expr} = {value}")
    return "(" + " OR ".join(terms) + ")"
