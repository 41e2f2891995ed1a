"""The scrape-time families read from Postgres: the fleet (housekeeping: LBs by status,
amphorae by status, outbox backlog) and traffic (health: listener and LB counters from the
heartbeat stats, member traffic, pool and member status), on a real database."""

from __future__ import annotations

import json
from collections.abc import Iterable

import asyncpg
from prometheus_client.core import Metric

from services.health.adapters.traffic_metrics import traffic_families
from services.housekeeping.adapters.fleet_metrics import fleet_families


def samples(families: Iterable[Metric]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


async def _view(db: asyncpg.Pool, table: str, id: str, lb: str, parent: str, body: dict) -> None:
    await db.execute(
        f"INSERT INTO {table} (id, lb_id, parent_id, project_id, version, created_at, body) "
        "VALUES ($1, $2, $3, 'p1', 1, now(), $4::jsonb)",
        id,
        lb,
        parent,
        json.dumps(body),
    )


async def test_fleet_counts_lbs_and_amphorae_by_status_and_the_outbox(db: asyncpg.Pool) -> None:
    active = {"provisioning_status": "ACTIVE", "operating_status": "ONLINE"}
    pending = {"provisioning_status": "PENDING_CREATE", "operating_status": "OFFLINE"}
    for lb_id, body in (("lb1", active), ("lb2", active), ("lb3", pending)):
        await _view(db, "loadbalancer_view", lb_id, lb_id, "p1", body)
    for amphora_id, status in (("a1", "ALLOCATED"), ("a2", "ALLOCATED"), ("a3", "READY")):
        await db.execute(
            "INSERT INTO amphora_view (id, lb_id, status, agent_url, version, created_at, body) "
            "VALUES ($1, NULL, $2, 'https://127.0.0.1:1', 1, now(), '{}'::jsonb)",
            amphora_id,
            status,
        )

    found = samples(await fleet_families(db, "fulcrum_housekeeping"))

    def lbs(provisioning: str, operating: str) -> float:
        labels = {"provisioning_status": provisioning, "operating_status": operating}
        return found[("fulcrum_housekeeping_loadbalancers", frozenset(labels.items()))]

    assert lbs("ACTIVE", "ONLINE") == 2
    assert lbs("PENDING_CREATE", "OFFLINE") == 1
    amphorae = "fulcrum_housekeeping_amphorae"
    assert found[(amphorae, frozenset({("status", "ALLOCATED")}))] == 2
    assert found[(amphorae, frozenset({("status", "READY")}))] == 1
    assert found[("fulcrum_housekeeping_outbox_backlog_rows", frozenset())] == 0
    assert found[("fulcrum_housekeeping_outbox_oldest_age_seconds", frozenset())] == 0


async def test_traffic_per_listener_lb_and_member_and_member_status(db: asyncpg.Pool) -> None:
    await _view(db, "loadbalancer_view", "lb1", "lb1", "p1", {})
    await _view(db, "pool_view", "pool1", "lb1", "lb1", {"operating_status": "DEGRADED"})
    await _view(db, "member_view", "m1", "lb1", "pool1", {"operating_status": "ONLINE"})
    await _view(db, "member_view", "m2", "lb1", "pool1", {"operating_status": "ERROR"})
    for listener, amphora, bytes_in in (("l1", "a1", 100), ("l1", "a2", 50), ("l2", "a1", 7)):
        await db.execute(
            "INSERT INTO listener_stats (listener_id, amphora_id, lb_id, bytes_in, bytes_out, "
            "active_connections, total_connections, request_errors) "
            "VALUES ($1, $2, 'lb1', $3, 2, 1, 3, 1)",
            listener,
            amphora,
            bytes_in,
        )

    for member, amphora, bytes_out in (("m1", "a1", 1000), ("m1", "a2", 500), ("m2", "a1", 9)):
        await db.execute(
            "INSERT INTO member_stats (member_id, amphora_id, pool_id, lb_id, bytes_in, "
            "bytes_out, active_connections, total_connections, request_errors) "
            "VALUES ($1, $2, 'pool1', 'lb1', 4, $3, 1, 6, 1)",
            member,
            amphora,
            bytes_out,
        )

    found = samples(await traffic_families(db, "fulcrum_health"))

    def listener(name: str, listener_id: str) -> float:
        labels = {"loadbalancer_id": "lb1", "listener_id": listener_id, "project_id": "p1"}
        return found[(f"fulcrum_health_listener_{name}", frozenset(labels.items()))]

    lb_labels = frozenset({("loadbalancer_id", "lb1"), ("project_id", "p1")})
    assert listener("bytes_in", "l1") == 150
    assert listener("bytes_in", "l2") == 7
    assert listener("active_connections", "l1") == 2
    assert listener("request_errors", "l1") == 2
    assert found[("fulcrum_health_loadbalancer_bytes_in", lb_labels)] == 157
    assert found[("fulcrum_health_loadbalancer_connections", lb_labels)] == 9
    member = {"loadbalancer_id": "lb1", "pool_id": "pool1", "project_id": "p1"}
    assert (
        found[
            (
                "fulcrum_health_member_status",
                frozenset({**member, "member_id": "m2", "status": "ERROR"}.items()),
            )
        ]
        == 1
    )
    m1 = frozenset({**member, "member_id": "m1"}.items())
    m2 = frozenset({**member, "member_id": "m2"}.items())
    assert found[("fulcrum_health_member_bytes_out", m1)] == 1500
    assert found[("fulcrum_health_member_bytes_out", m2)] == 9
    assert found[("fulcrum_health_member_bytes_in", m1)] == 8
    assert found[("fulcrum_health_member_active_connections", m1)] == 2
    assert found[("fulcrum_health_member_connections", m1)] == 12
    assert found[("fulcrum_health_member_request_errors", m2)] == 1
    pool = {"loadbalancer_id": "lb1", "pool_id": "pool1", "project_id": "p1", "status": "DEGRADED"}
    assert found[("fulcrum_health_pool_status", frozenset(pool.items()))] == 1
