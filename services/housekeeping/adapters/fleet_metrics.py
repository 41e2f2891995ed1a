"""The fleet as ``/metrics`` shows it, read from the read models at scrape time (one grouped
``count(*)`` per table, and the outbox backlog): load balancers by provisioning and operating
status, amphorae by status, outbox rows waiting and the oldest one's age."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg
from prometheus_client.core import GaugeMetricFamily, Metric

from libs.common.outbox import backlog


async def fleet_families(pool: asyncpg.Pool, namespace: str) -> Iterable[Metric]:
    """The families ``<namespace>_loadbalancers``, ``_amphorae``, ``_outbox_backlog_rows`` and
    ``_outbox_oldest_age_seconds``."""
    async with pool.acquire() as conn:
        lbs = await conn.fetch(
            "SELECT body->>'provisioning_status' AS provisioning, "
            "body->>'operating_status' AS operating, count(*) AS n "
            "FROM loadbalancer_view GROUP BY 1, 2"
        )
        amphorae = await conn.fetch("SELECT status, count(*) AS n FROM amphora_view GROUP BY 1")
        waiting = await backlog(conn)
    by_status = GaugeMetricFamily(
        f"{namespace}_loadbalancers",
        "Load balancers by provisioning and operating status (read model).",
        labels=["provisioning_status", "operating_status"],
    )
    for row in lbs:
        by_status.add_metric([row["provisioning"] or "", row["operating"] or ""], row["n"])
    amphora_status = GaugeMetricFamily(
        f"{namespace}_amphorae",
        "Amphorae by status (read model).",
        labels=["status"],
    )
    for row in amphorae:
        amphora_status.add_metric([row["status"]], row["n"])
    rows = GaugeMetricFamily(
        f"{namespace}_outbox_backlog_rows",
        "Outbox rows appended and not yet published to the bus.",
        value=waiting.rows,
    )
    age = GaugeMetricFamily(
        f"{namespace}_outbox_oldest_age_seconds",
        "Age of the oldest outbox row waiting (0 when none waits).",
        value=waiting.oldest_age or 0.0,
    )
    return [by_status, amphora_status, rows, age]
