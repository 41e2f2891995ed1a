"""Snapshots on a real Postgres: written in the append's transaction every N events, used by
``load`` (the events after them folded on top), ignored when of another shape; ``read_stream``
and the events table are untouched by them."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from libs.common.domain import commands as c
from libs.common.domain.evolve import fold
from libs.common.domain.model import PENDING_STATUSES, LoadBalancerState, OperatingStatus
from libs.common.events import Metadata
from libs.common.events.loadbalancer import SETTLING
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import (
    SNAPSHOT_SCHEMA_VERSION,
    LoadBalancerRepository,
    snapshot_of,
)
from libs.common.streams import StreamId
from tests import builders

META = Metadata(actor="test")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
EVERY = 5


async def grow(repo: LoadBalancerRepository, renames: int, vip: str = "127.77.0.10") -> str:
    """An ACTIVE LB on ``vip``, renamed ``renames`` times (two events each: update, settle)."""
    lb = builders.loadbalancer(vip)
    await repo.execute(lb.id, c.CreateLoadBalancer(loadbalancer=lb), META)
    await repo.execute(lb.id, c.Activate(amphora_ids=("amp-1",)), META)
    for n in range(renames):
        await repo.execute(lb.id, c.UpdateLoadBalancer(changes={"name": f"n{n}"}, now=NOW), META)
        await repo.execute(lb.id, c.ApplyChanges(), META)
    return lb.id


async def whole_fold(store: PostgresEventStore, lb_id: str) -> LoadBalancerState:
    return fold(e.payload for e in await store.read_stream(StreamId.loadbalancer(lb_id)))


async def snapshot_row(db: asyncpg.Pool, lb_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT stream_version, schema_version FROM snapshots WHERE stream_id = $1",
        StreamId.loadbalancer(lb_id),
    )


@pytest.fixture
def store(db: asyncpg.Pool) -> PostgresEventStore:
    return PostgresEventStore(db)


async def test_snapshots_are_written_every_n_events_and_load_equals_the_whole_fold(
    db: asyncpg.Pool, store: PostgresEventStore
) -> None:
    repo = LoadBalancerRepository(store, snapshot_every=EVERY)
    lb_id = await grow(repo, 11)  # 2 + 22 events
    events = await store.read_stream(StreamId.loadbalancer(lb_id))
    assert [e.stream_version for e in events] == list(range(1, 25))
    row = await snapshot_row(db, lb_id)
    assert row is not None and row["schema_version"] == SNAPSHOT_SCHEMA_VERSION
    assert 24 - EVERY < row["stream_version"] <= 24
    loaded = await repo.load(lb_id)
    assert loaded.model_dump_json() == (await whole_fold(store, lb_id)).model_dump_json()
    assert loaded.version == 24
    # read_stream is what it was: every event, from the first.
    again = await store.read_stream(StreamId.loadbalancer(lb_id))
    assert [e.event_id for e in again] == [e.event_id for e in events]
    assert (
        await db.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", events[0].stream_id)
        == 24
    )


async def test_load_starts_from_the_snapshot(db: asyncpg.Pool, store: PostgresEventStore) -> None:
    lb_id = await grow(LoadBalancerRepository(store, snapshot_every=EVERY), 3)
    # A repository that knows no state of the LB (another process's): it starts from the store.
    repo = LoadBalancerRepository(store, snapshot_every=EVERY)
    row = await snapshot_row(db, lb_id)
    assert row is not None
    # A snapshot saying something the events do not: load shows it, so load started from it.
    state = await whole_fold(store, lb_id)
    assert state.loadbalancer is not None
    marked = state.model_copy(
        update={"loadbalancer": state.loadbalancer.model_copy(update={"description": "marked"})}
    )
    snap = snapshot_of(StreamId.loadbalancer(lb_id), marked)
    await db.execute(
        "UPDATE snapshots SET stream_version = $2, state = $3 WHERE stream_id = $1",
        snap.stream_id,
        snap.stream_version,
        snap.state,
    )
    loaded = await repo.load(lb_id)
    assert loaded.loadbalancer is not None and loaded.loadbalancer.description == "marked"


async def test_a_snapshot_of_another_shape_is_ignored_and_replaced(
    db: asyncpg.Pool, store: PostgresEventStore
) -> None:
    lb_id = await grow(LoadBalancerRepository(store, snapshot_every=EVERY), 3)
    repo = LoadBalancerRepository(store, snapshot_every=EVERY)  # another process's
    stream_id = StreamId.loadbalancer(lb_id)
    await db.execute(
        'UPDATE snapshots SET schema_version = $2, state = \'{"shape": "old"}\' '
        "WHERE stream_id = $1",
        stream_id,
        SNAPSHOT_SCHEMA_VERSION + 7,
    )
    loaded = await repo.load(lb_id)
    assert loaded.model_dump_json() == (await whole_fold(store, lb_id)).model_dump_json()
    # The next append folded all 8 events itself: it writes a snapshot of this shape.
    await repo.execute(lb_id, c.UpdateLoadBalancer(changes={"name": "x"}, now=NOW), META)
    row = await snapshot_row(db, lb_id)
    assert row is not None
    assert (row["stream_version"], row["schema_version"]) == (9, SNAPSHOT_SCHEMA_VERSION)
    loaded = await repo.load(lb_id)
    assert loaded.model_dump_json() == (await whole_fold(store, lb_id)).model_dump_json()


async def test_an_unreadable_snapshot_of_this_shape_is_ignored_for_both_streams(
    db: asyncpg.Pool, store: PostgresEventStore
) -> None:
    """A snapshot whose state disagrees with its version is not folded on: both streams (the
    statuses too) are folded whole."""
    repo = LoadBalancerRepository(store, snapshot_every=EVERY)
    lb_id = await grow(repo, 3)
    for status in (OperatingStatus.ERROR, OperatingStatus.ONLINE, OperatingStatus.ERROR):
        await repo.execute(lb_id, c.RecordOperatingStatuses({lb_id: status}), META)
    expected = await repo.load(lb_id)
    assert expected.status_version == 3
    await db.execute(
        "UPDATE snapshots SET stream_version = stream_version - 1 WHERE stream_id = $1",
        StreamId.loadbalancer(lb_id),
    )

    loaded = await repo.load(lb_id)

    assert loaded.model_dump_json() == expected.model_dump_json()
    assert loaded.loadbalancer is not None
    assert loaded.loadbalancer.operating_status == OperatingStatus.ERROR


async def test_events_stay_insert_only(db: asyncpg.Pool, store: PostgresEventStore) -> None:
    repo = LoadBalancerRepository(store, snapshot_every=EVERY)
    lb_id = await grow(repo, 3)
    with pytest.raises(asyncpg.RaiseError, match="insert-only"):
        await db.execute("DELETE FROM events WHERE stream_id = $1", StreamId.loadbalancer(lb_id))


async def test_load_pending_reads_only_the_pending_period(
    db: asyncpg.Pool, store: PostgresEventStore
) -> None:
    repo = LoadBalancerRepository(store, snapshot_every=EVERY)
    created = builders.loadbalancer("127.77.0.11")
    await repo.execute(created.id, c.CreateLoadBalancer(loadbalancer=created), META)
    state, pending = await repo.load_pending(created.id)
    assert [e.event_type for e in pending] == ["LoadBalancerCreated"]

    lb_id = await grow(repo, 6)
    state, pending = await repo.load_pending(lb_id)
    assert pending == [] and state.version == 14
    await repo.execute(lb_id, c.UpdateLoadBalancer(changes={"name": "last"}, now=NOW), META)
    state, pending = await repo.load_pending(lb_id)
    assert [(e.stream_version, e.event_type) for e in pending] == [(15, "LoadBalancerUpdated")]
    whole = await store.read_stream(StreamId.loadbalancer(lb_id))
    assert state.model_dump_json() == fold(e.payload for e in whole).model_dump_json()


async def test_load_pending_reads_a_period_that_began_before_the_snapshot(
    db: asyncpg.Pool, store: PostgresEventStore
) -> None:
    repo = LoadBalancerRepository(store, snapshot_every=2)
    lb = builders.loadbalancer("127.77.0.12")
    await repo.execute(lb.id, c.CreateLoadBalancer(loadbalancer=lb), META)
    # Observed statuses while it is still PENDING_CREATE: a snapshot is taken after the
    # LoadBalancerCreated that opened the pending period.
    for status in (OperatingStatus.ERROR, OperatingStatus.ONLINE):
        await repo.execute(lb.id, c.RecordOperatingStatuses({lb.id: status}), META)
    assert (
        await db.fetchval(
            "SELECT stream_version FROM snapshots WHERE stream_id = $1",
            StreamId.loadbalancer(lb.id),
        )
        == 1
    )
    state, pending = await repo.load_pending(lb.id)
    assert [e.event_type for e in pending] == ["LoadBalancerCreated"]
    assert (state.version, state.status_version) == (1, 2)


@pytest.mark.parametrize("known", [True, False], ids=["known", "cold"])
@pytest.mark.parametrize("every", [2, 3, 1000])
async def test_load_pending_finds_the_period_whether_or_not_the_load_read_it(
    store: PostgresEventStore, every: int, known: bool
) -> None:
    """The period is taken from what the load folded when that reaches back far enough (a
    settling event, or the stream's start), else read from the store: the same either way,
    whether the repository knows a state of the LB (its own appends) or loads it cold."""
    writer = LoadBalancerRepository(store, snapshot_every=every)
    lb = builders.loadbalancer(f"127.77.0.{20 + every % 200}")
    settling = {e.event_type for e in SETTLING}
    history: list[c.Command] = [
        c.CreateLoadBalancer(loadbalancer=lb),
        c.RecordOperatingStatuses({lb.id: OperatingStatus.ERROR}),
        c.Activate(amphora_ids=("amp-1",)),
        c.UpdateLoadBalancer(changes={"name": "a"}, now=NOW),
        c.RecordOperatingStatuses({lb.id: OperatingStatus.ONLINE}),
        c.RecordOperatingStatuses({lb.id: OperatingStatus.ERROR}),
        c.ApplyChanges(),
        c.UpdateLoadBalancer(changes={"name": "b"}, now=NOW),
        c.RecordOperatingStatuses({lb.id: OperatingStatus.ONLINE}),
    ]
    for command in history:
        await writer.execute(lb.id, command, META)
        repo = writer if known else LoadBalancerRepository(store, snapshot_every=every)
        state, pending = await repo.load_pending(lb.id)
        whole = await store.read_stream(StreamId.loadbalancer(lb.id))
        last = max((e.stream_version for e in whole if e.event_type in settling), default=0)
        assert state.loadbalancer is not None
        busy = state.loadbalancer.provisioning_status in PENDING_STATUSES
        expected = [e.event_id for e in whole if e.stream_version > last] if busy else []
        assert [e.event_id for e in pending] == expected
