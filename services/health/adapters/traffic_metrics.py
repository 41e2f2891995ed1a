"""Traffic and member status as ``/metrics`` shows them, read at scrape time: the heartbeat
counters of ``listener_stats`` summed over a listener's amphorae (and over an LB's listeners),
those of ``member_stats`` summed over a member's amphorae (members the read model knows), and
the operating status of pools and members from the read model, labelled with ids and project.
Pools have no traffic counters of their own here (their members' counters add up to them)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import asyncpg
from prometheus_client.core import GaugeMetricFamily, Metric

# listener_stats column -> (family suffix, help)
_COUNTERS: Final = (
    ("active_connections", "active_connections", "Connections open now"),
    ("total_connections", "connections", "Connections accepted since the amphora started"),
    ("bytes_in", "bytes_in", "Bytes received from clients"),
    ("bytes_out", "bytes_out", "Bytes sent to clients"),
    ("request_errors", "request_errors", "Requests that failed"),
)
_LISTENER_LABELS: Final = ["loadbalancer_id", "listener_id", "project_id"]
_LB_LABELS: Final = ["loadbalancer_id", "project_id"]
_MEMBER_LABELS: Final = ["loadbalancer_id", "pool_id", "member_id", "project_id", "status"]
_MEMBER_TRAFFIC_LABELS: Final = ["loadbalancer_id", "pool_id", "member_id", "project_id"]
_SUMS: Final = ", ".join(f"sum(s.{column})::float8 AS {column}" for column, _, _ in _COUNTERS)
_POOL_LABELS: Final = ["loadbalancer_id", "pool_id", "project_id", "status"]


async def traffic_families(pool: asyncpg.Pool, namespace: str) -> Iterable[Metric]:
    """``<namespace>_listener_*``, ``_loadbalancer_*`` and ``_member_*`` traffic gauges (the
    heartbeat counters), ``_member_status`` and ``_pool_status`` (1 for the current operating
    status)."""
    async with pool.acquire() as conn:
        listeners = await conn.fetch(
            "SELECT s.lb_id, s.listener_id, coalesce(v.project_id, '') AS project_id, "
            + _SUMS
            + " FROM listener_stats s LEFT JOIN loadbalancer_view v ON v.id = s.lb_id "
            "GROUP BY s.lb_id, s.listener_id, v.project_id"
        )
        member_traffic = await conn.fetch(
            "SELECT s.lb_id, s.pool_id, s.member_id, coalesce(v.project_id, '') AS project_id, "
            + _SUMS
            + " FROM member_stats s JOIN member_view v ON v.id = s.member_id "
            "GROUP BY s.lb_id, s.pool_id, s.member_id, v.project_id"
        )
        members = await conn.fetch(
            "SELECT lb_id, parent_id, id, project_id, body->>'operating_status' AS status "
            "FROM member_view"
        )
        pools = await conn.fetch(
            "SELECT lb_id, id, project_id, body->>'operating_status' AS status FROM pool_view"
        )
    families: list[Metric] = []
    per_lb: dict[tuple[str, str], dict[str, float]] = {}
    for column, suffix, help in _COUNTERS:
        family = GaugeMetricFamily(
            f"{namespace}_listener_{suffix}",
            f"{help} on a listener, summed over its amphorae (heartbeat stats).",
            labels=_LISTENER_LABELS,
        )
        for row in listeners:
            family.add_metric([row["lb_id"], row["listener_id"], row["project_id"]], row[column])
            totals = per_lb.setdefault((row["lb_id"], row["project_id"]), {})
            totals[column] = totals.get(column, 0.0) + row[column]
        families.append(family)
    for column, suffix, help in _COUNTERS:
        family = GaugeMetricFamily(
            f"{namespace}_loadbalancer_{suffix}",
            f"{help} on a load balancer, summed over its listeners (heartbeat stats).",
            labels=_LB_LABELS,
        )
        for (lb_id, project_id), totals in per_lb.items():
            family.add_metric([lb_id, project_id], totals.get(column, 0.0))
        families.append(family)
    for column, suffix, help in _COUNTERS:
        family = GaugeMetricFamily(
            f"{namespace}_member_{suffix}",
            f"{help} through a member, summed over its amphorae (heartbeat stats).",
            labels=_MEMBER_TRAFFIC_LABELS,
        )
        for row in member_traffic:
            labels = [row["lb_id"], row["pool_id"], row["member_id"], row["project_id"]]
            family.add_metric(labels, row[column])
        families.append(family)
    member_status = GaugeMetricFamily(
        f"{namespace}_member_status",
        "1 for a member's current operating status (ONLINE, ERROR, NO_MONITOR, ...).",
        labels=_MEMBER_LABELS,
    )
    for row in members:
        labels = [row["lb_id"], row["parent_id"], row["id"], row["project_id"]]
        member_status.add_metric([*labels, row["status"] or ""], 1.0)
    pool_status = GaugeMetricFamily(
        f"{namespace}_pool_status",
        "1 for a pool's current operating status.",
        labels=_POOL_LABELS,
    )
    for row in pools:
        pool_status.add_metric(
            [row["lb_id"], row["id"], row["project_id"], row["status"] or ""], 1.0
        )
    return [*families, member_status, pool_status]
