"""Known states on a real Postgres: a repository keeps the newest committed state of the load
balancers it works on and then reads only the events after it; every load equals a cold one
(another process's), whoever wrote, on either stream; an append in a caller's transaction
that rolls back leaves nothing behind."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from libs.common.domain import commands as c
from libs.common.domain.model import OperatingStatus
from libs.common.events import Envelope, Metadata
from libs.common.eventstore import PostgresEventStore, SnapshotRead
from libs.common.repository import LoadBalancerRepository
from tests import builders
from tests.integration.test_snapshots import grow

META = Metadata(actor="test")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class CountingStore(PostgresEventStore):
    """The real store, counting the events each load of a state read back."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.read: list[int] = []

    async def read_from_snapshot(
        self, stream_id: str, schema_version: int, beside: str, beside_version_key: str
    ) -> SnapshotRead:
        found = await super().read_from_snapshot(
            stream_id, schema_version, beside, beside_version_key
        )
        self.read.append(len(found.events) + len(found.beside))
        return found

    async def read_after(
        self, stream_id: str, after_version: int, beside: str, beside_after: int
    ) -> tuple[list[Envelope], list[Envelope]]:
        own, other = await super().read_after(stream_id, after_version, beside, beside_after)
        self.read.append(len(own) + len(other))
        return own, other


async def test_a_load_reads_only_the_events_after_the_state_the_repository_knows(
    db: asyncpg.Pool,
) -> None:
    store = CountingStore(db)
    api = LoadBalancerRepository(store, snapshot_every=1000)
    lb_id = await grow(api, 5, "127.77.4.10")  # 12 events, no snapshot
    store.read.clear()
    other = LoadBalancerRepository(PostgresEventStore(db))  # another process
    await other.execute(lb_id, c.UpdateLoadBalancer(changes={"name": "x"}, now=NOW), META)

    loaded = await api.load(lb_id)

    assert store.read == [1]  # the other process's event, not the 12 before it
    assert loaded.model_dump_json() == (await other.load(lb_id)).model_dump_json()
    cold = await LoadBalancerRepository(store).load(lb_id)
    assert store.read == [1, 13]
    assert cold.model_dump_json() == loaded.model_dump_json()


async def test_loads_equal_cold_loads_whoever_writes_either_stream(db: asyncpg.Pool) -> None:
    store = PostgresEventStore(db)
    api, provisioner, health = (LoadBalancerRepository(store, snapshot_every=3) for _ in "aph")
    lb = builders.loadbalancer("127.77.4.11")
    history: list[tuple[LoadBalancerRepository, c.Command]] = [
        (api, c.CreateLoadBalancer(loadbalancer=lb)),
        (health, c.RecordOperatingStatuses({lb.id: OperatingStatus.ERROR})),
        (provisioner, c.Activate(amphora_ids=("amp-1",))),
        (api, c.UpdateLoadBalancer(changes={"name": "a"}, now=NOW)),
        (health, c.RecordOperatingStatuses({lb.id: OperatingStatus.ONLINE})),
        (provisioner, c.ApplyChanges()),
        (api, c.UpdateLoadBalancer(changes={"description": "d"}, now=NOW)),
        (health, c.RecordOperatingStatuses({lb.id: OperatingStatus.ERROR})),
        (provisioner, c.ApplyChanges()),
    ]
    for writer, command in history:
        await writer.execute(lb.id, command, META)
        cold = LoadBalancerRepository(store)
        expected, period = await cold.load_pending(lb.id)
        for repo in (api, provisioner, health):
            state, pending = await repo.load_pending(lb.id)
            assert state.model_dump_json() == expected.model_dump_json()
            assert [e.event_id for e in pending] == [e.event_id for e in period]


async def test_an_append_in_a_transaction_that_rolls_back_leaves_the_known_state(
    db: asyncpg.Pool,
) -> None:
    repo = LoadBalancerRepository(PostgresEventStore(db))
    lb_id = await grow(repo, 0, "127.77.4.12")
    before = await repo.load(lb_id)
    async with db.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        renamed = await repo.execute(
            lb_id, c.UpdateLoadBalancer(changes={"name": "gone"}, now=NOW), META, conn=conn
        )
        assert renamed.state.loadbalancer is not None
        assert renamed.state.loadbalancer.name == "gone"
        await tx.rollback()

    assert (await repo.load(lb_id)).model_dump_json() == before.model_dump_json()
    await repo.execute(lb_id, c.UpdateLoadBalancer(changes={"name": "kept"}, now=NOW), META)
    lb = (await LoadBalancerRepository(PostgresEventStore(db)).load(lb_id)).loadbalancer
    assert lb is not None and lb.name == "kept"


@pytest.mark.parametrize("known_states", [1, 2])
async def test_the_least_recently_used_state_is_forgotten_first(
    db: asyncpg.Pool, known_states: int
) -> None:
    store = CountingStore(db)
    repo = LoadBalancerRepository(store, snapshot_every=1000, known_states=known_states)
    first = await grow(repo, 0, "127.77.4.13")
    await grow(repo, 0, "127.77.4.14")
    store.read.clear()

    await repo.load(first)

    # Known: nothing new to read; forgotten: both of its events read again.
    assert store.read == [0 if known_states == 2 else 2]


async def test_the_children_of_known_states_name_their_lb_until_gone_or_forgotten(
    db: asyncpg.Pool,
) -> None:
    repo = LoadBalancerRepository(PostgresEventStore(db), known_states=1)
    lb_id = await grow(repo, 0, "127.77.4.15")
    lb = (await repo.load(lb_id)).loadbalancer
    assert lb is not None
    listener = builders.listener(lb, 80)
    pool = builders.pool(lb)
    for child in (listener, pool):
        await repo.execute(lb_id, c.CreateChild(child=child), META)
        await repo.execute(lb_id, c.ApplyChanges(), META)
    assert (repo.holder(listener.id), repo.holder(pool.id), repo.holder(lb_id)) == (
        lb_id,
        lb_id,
        None,
    )
    assert repo.known(lb_id) == await repo.load(lb_id)

    other = LoadBalancerRepository(PostgresEventStore(db))  # another process deletes the pool
    await other.execute(lb_id, c.DeleteChild(kind="pools", child_id=pool.id), META)
    await other.execute(lb_id, c.ApplyChanges(), META)
    assert repo.holder(pool.id) == lb_id  # not read yet
    await repo.load(lb_id)
    assert (repo.holder(listener.id), repo.holder(pool.id)) == (lb_id, None)

    await grow(repo, 0, "127.77.4.16")  # the only state kept: the first LB's is forgotten
    assert (repo.holder(listener.id), repo.known(lb_id)) == (None, None)
