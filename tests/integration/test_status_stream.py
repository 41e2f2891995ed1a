"""Observed operating statuses on their own ``lbstatus-<id>`` stream, on a real Postgres: they
never lengthen the ``loadbalancer-<id>`` stream, carry the LB's project, fold into ``load`` and
the read model in commit order, and a status write racing an LB write makes the loser retry."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import asyncpg
import pytest

from libs.common.domain import commands as c
from libs.common.domain.model import LoadBalancerState, OperatingStatus
from libs.common.errors import Conflict
from libs.common.events import Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository, Outcome
from libs.common.streams import StreamId
from tests import builders

META = Metadata(actor="test")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
OS = OperatingStatus


@pytest.fixture
def repo(db: asyncpg.Pool) -> LoadBalancerRepository:
    return LoadBalancerRepository(PostgresEventStore(db), snapshot_every=5)


async def active_lb(repo: LoadBalancerRepository, vip: str) -> str:
    lb = builders.loadbalancer(vip)
    await repo.execute(lb.id, c.CreateLoadBalancer(loadbalancer=lb), META)
    await repo.execute(lb.id, c.Activate(amphora_ids=("amp-1",)), META)
    return lb.id


async def lb_body(db: asyncpg.Pool, lb_id: str) -> dict[str, str]:
    body: dict[str, str] = json.loads(
        await db.fetchval("SELECT body FROM loadbalancer_view WHERE id = $1", lb_id)
    )
    return body


async def test_flaps_go_to_the_status_stream_with_the_project_and_fold_into_load(
    db: asyncpg.Pool, repo: LoadBalancerRepository
) -> None:
    lb_id = await active_lb(repo, "127.77.1.10")
    store = PostgresEventStore(db)
    for n in range(12):  # past snapshot_every: snapshots are taken on status appends too
        status = (OS.ERROR, OS.ONLINE)[n % 2]
        await repo.execute(lb_id, c.RecordOperatingStatuses({lb_id: status}), META)
    assert [e.event_type for e in await store.read_stream(StreamId.loadbalancer(lb_id))] == [
        "LoadBalancerCreated",
        "LoadBalancerActivated",
    ]
    observed = await store.read_stream(StreamId.loadbalancer_status(lb_id))
    assert [e.event_type for e in observed] == ["OperatingStatusChanged"] * 12
    assert {e.metadata.project_id for e in observed} == {builders.PROJECT}
    state = await repo.load(lb_id)
    assert (state.version, state.status_version, state.revision) == (2, 12, 14)
    assert state.loadbalancer is not None and state.loadbalancer.operating_status == OS.ONLINE
    # An intent write keeps the observed status in the view it projects.
    await repo.execute(lb_id, c.UpdateLoadBalancer(changes={"name": "renamed"}, now=NOW), META)
    body = await lb_body(db, lb_id)
    assert (body["name"], body["operating_status"]) == ("renamed", "ONLINE")
    row = await db.fetchrow("SELECT version FROM loadbalancer_view WHERE id = $1", lb_id)
    assert row is not None and row["version"] == 15


class Renames:
    """A command factory for ``execute``: its N-th call renames the LB "take<N>"."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, state: LoadBalancerState) -> c.Command:
        self.calls += 1
        return c.UpdateLoadBalancer(changes={"name": f"take{self.calls}"}, now=NOW)


async def assert_renamed_on_the_status_it_retried_on(
    db: asyncpg.Pool, lb_id: str, rename: Renames, outcome: Outcome
) -> None:
    """The intent write decided twice; the second decision kept the status write's ERROR."""
    assert rename.calls == 2
    assert outcome.state.loadbalancer is not None
    assert outcome.state.loadbalancer.operating_status == OS.ERROR
    body = await lb_body(db, lb_id)
    assert (body["name"], body["operating_status"]) == ("take2", "ERROR")


async def test_a_status_write_racing_an_intent_write_makes_the_intent_write_retry(
    db: asyncpg.Pool, repo: LoadBalancerRepository
) -> None:
    lb_id = await active_lb(repo, "127.77.1.11")
    health = LoadBalancerRepository(PostgresEventStore(db))
    rename = Renames()

    # Health's write lands between this writer's first load and its append.
    load = repo._load

    async def load_then_race(lb: str) -> tuple[LoadBalancerState, int]:
        loaded = await load(lb)
        if rename.calls == 0:
            await health.execute(lb, c.RecordOperatingStatuses({lb: OS.ERROR}), META)
        return loaded

    repo._load = load_then_race  # type: ignore[method-assign]
    outcome = await repo.execute(lb_id, rename, META)
    await assert_renamed_on_the_status_it_retried_on(db, lb_id, rename, outcome)


async def test_an_intent_write_waiting_on_a_status_write_sees_its_commit_and_retries(
    db: asyncpg.Pool, repo: LoadBalancerRepository
) -> None:
    """The intent write loads, then waits on the LB's lock that an open status write holds;
    once that commits, the intent's append (after the lock) finds the status stream moved:
    it reloads and decides again instead of appending on the state it loaded first."""
    lb_id = await active_lb(repo, "127.77.1.12")
    health = LoadBalancerRepository(PostgresEventStore(db))
    rename = Renames()

    async with db.acquire() as conn:
        status = conn.transaction()
        await status.start()
        await health.execute(lb_id, c.RecordOperatingStatuses({lb_id: OS.ERROR}), META, conn=conn)
        intent = asyncio.ensure_future(repo.execute(lb_id, rename, META))
        while not intent.done() and not await db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE NOT granted"
        ):
            await asyncio.sleep(0.01)  # until the intent write waits on the status write
        assert not intent.done()
        await status.commit()
    outcome = await intent
    await assert_renamed_on_the_status_it_retried_on(db, lb_id, rename, outcome)


async def test_a_fresh_create_loads_nothing_and_refuses_an_id_in_use(
    db: asyncpg.Pool, repo: LoadBalancerRepository
) -> None:
    lb = builders.loadbalancer("127.77.1.12")
    outcome = await repo.execute(lb.id, c.CreateLoadBalancer(loadbalancer=lb), META, fresh=True)
    assert [e.event_type for e in outcome.envelopes] == ["LoadBalancerCreated"]
    assert (await lb_body(db, lb.id))["provisioning_status"] == "PENDING_CREATE"
    assert await repo.load(lb.id) == outcome.state
    # An id whose stream exists is no fresh id: the append refuses it and writes nothing.
    again = builders.loadbalancer("127.77.1.13").model_copy(update={"id": lb.id})
    with pytest.raises(Conflict):
        await repo.execute(lb.id, c.CreateLoadBalancer(loadbalancer=again), META, fresh=True)
    events = await PostgresEventStore(db).read_stream(StreamId.loadbalancer(lb.id))
    assert [e.event_type for e in events] == ["LoadBalancerCreated"]
    assert (await lb_body(db, lb.id))["vip_address"] == "127.77.1.12"
