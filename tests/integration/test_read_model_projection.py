"""The load balancer's read model on a real Postgres (``project_loadbalancer``): every row an
append changes, whatever its table, is written in the append's transaction at the new
revision; a projection of an older revision never replaces a newer row; a child that is gone
loses its row."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from libs.common.domain import commands as c
from libs.common.domain.model import Listener, LoadBalancer, LoadBalancerState
from libs.common.eventstore import PostgresEventStore
from libs.common.readmodel import VIEW_TABLES, project_loadbalancer, resource_bodies
from libs.common.repository import LoadBalancerRepository
from tests import builders
from tests.integration.test_status_stream import META, active_lb


@pytest.fixture
def repo(db: asyncpg.Pool) -> LoadBalancerRepository:
    return LoadBalancerRepository(PostgresEventStore(db))


async def stored(db: asyncpg.Pool, lb_id: str) -> dict[str, dict[str, tuple[int, Any]]]:
    """Every view row of the LB's tree: kind -> id -> (version, body)."""
    tables = {"loadbalancer": "loadbalancer_view", **VIEW_TABLES}
    out: dict[str, dict[str, tuple[int, Any]]] = {}
    for kind, table in tables.items():
        rows = await db.fetch(f"SELECT id, version, body FROM {table} WHERE lb_id = $1", lb_id)
        out[kind] = {r["id"]: (r["version"], json.loads(r["body"])) for r in rows}
    return out


def expected(state: LoadBalancerState) -> dict[str, dict[str, Any]]:
    bodies = resource_bodies(state)
    return {kind: bodies.get(kind, {}) for kind in ("loadbalancer", *VIEW_TABLES)}


def bodies_of(rows: dict[str, dict[str, tuple[int, Any]]]) -> dict[str, dict[str, Any]]:
    return {kind: {rid: body for rid, (_, body) in of.items()} for kind, of in rows.items()}


async def lb_with_a_listener(
    repo: LoadBalancerRepository, vip: str
) -> tuple[LoadBalancer, Listener]:
    """An ACTIVE LB at ``vip`` and a listener built for it (not created yet)."""
    lb = (await repo.load(await active_lb(repo, vip))).loadbalancer
    assert lb is not None
    return lb, builders.listener(lb, 80)


async def test_a_child_create_writes_the_lb_its_parent_and_itself(
    db: asyncpg.Pool, repo: LoadBalancerRepository
) -> None:
    lb, listener = await lb_with_a_listener(repo, "127.77.5.10")
    lb_id = lb.id
    await repo.execute(lb_id, c.CreateChild(child=listener), META)
    await repo.execute(lb_id, c.ApplyChanges(), META)
    pool = builders.pool(lb)

    outcome = await repo.execute(lb_id, c.CreateChild(child=pool, listener_id=listener.id), META)

    rows = await stored(db, lb_id)
    assert bodies_of(rows) == expected(outcome.state)
    revision = outcome.state.revision
    assert rows["loadbalancer"][lb_id][0] == revision
    assert rows["loadbalancer"][lb_id][1]["provisioning_status"] == "PENDING_UPDATE"
    assert rows["listeners"][listener.id] == (revision, rows["listeners"][listener.id][1])
    assert rows["listeners"][listener.id][1]["default_pool_id"] == pool.id
    assert rows["pools"][pool.id][0] == revision

    member = builders.member(pool, 8080)
    await repo.execute(lb_id, c.ApplyChanges(), META)
    outcome = await repo.execute(lb_id, c.CreateChild(child=member), META)
    applied = await repo.execute(lb_id, c.ApplyChanges(), META)

    rows = await stored(db, lb_id)
    assert bodies_of(rows) == expected(applied.state)
    assert rows["members"][member.id][1]["provisioning_status"] == "ACTIVE"
    assert rows["pools"][pool.id][1]["members"] == [{"id": member.id}]


async def test_an_older_revision_never_replaces_a_newer_row(
    db: asyncpg.Pool, repo: LoadBalancerRepository
) -> None:
    lb, listener = await lb_with_a_listener(repo, "127.77.5.11")
    lb_id = lb.id
    older = (await repo.execute(lb_id, c.CreateChild(child=listener), META)).state
    newer = (await repo.execute(lb_id, c.ApplyChanges(), META)).state
    assert older.loadbalancer is not None
    # A "before" that differs from ``older`` in every row, so that each is written again.
    before = older.model_copy(
        update={
            "loadbalancer": older.loadbalancer.model_copy(update={"name": "other"}),
            "listeners": {},
        }
    )

    async with db.acquire() as conn, conn.transaction():
        await project_loadbalancer(conn, before, older)

    rows = await stored(db, lb_id)
    assert bodies_of(rows) == expected(newer)
    assert {version for of in rows.values() for version, _ in of.values()} == {newer.revision}


async def test_a_child_that_is_gone_loses_its_row(
    db: asyncpg.Pool, repo: LoadBalancerRepository
) -> None:
    lb, listener = await lb_with_a_listener(repo, "127.77.5.12")
    lb_id = lb.id
    await repo.execute(lb_id, c.CreateChild(child=listener), META)
    await repo.execute(lb_id, c.ApplyChanges(), META)

    await repo.execute(lb_id, c.DeleteChild(kind="listeners", child_id=listener.id), META)
    applied = await repo.execute(lb_id, c.ApplyChanges(), META)

    rows = await stored(db, lb_id)
    assert rows["listeners"] == {}
    assert bodies_of(rows) == expected(applied.state)
    assert rows["loadbalancer"][lb_id][1]["listeners"] == []


async def test_a_childs_create_writes_its_view_rows_in_the_appends_statement(
    db: asyncpg.Pool, repo: LoadBalancerRepository
) -> None:
    """The changed rows ride the append's statement, which (taking the LB's lock too) is
    all the write costs: one statement, committed on its own."""
    lb, listener = await lb_with_a_listener(repo, "127.77.5.12")
    statements: list[str] = []

    def log(query: asyncpg.connection.LoggedQuery) -> None:
        statements.append(" ".join(query.query.split()[:2]))

    async with db.acquire() as conn:
        conn.add_query_logger(log)
        outcome = await repo.execute(lb.id, c.CreateChild(child=listener), META, conn=conn)
        await asyncio.sleep(0)  # the logger is called soon after each statement
        conn.remove_query_logger(log)

    assert statements == ["WITH current"]
    rows = await stored(db, lb.id)
    assert bodies_of(rows) == expected(outcome.state)
    assert rows["listeners"][listener.id][0] == outcome.state.revision
