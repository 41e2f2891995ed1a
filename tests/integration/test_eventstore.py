"""The event store against a real Postgres (and the in-memory one, same contract)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from libs.common.errors import ConcurrencyError
from libs.common.events import Metadata
from libs.common.events.amphora import AmphoraDeleted
from libs.common.eventstore import (
    AppendRider,
    EventStore,
    InMemoryEventStore,
    PostgresEventStore,
    StreamGuard,
)

META = Metadata(correlation_id="c-1", actor="test")


def deleted(n: int) -> AmphoraDeleted:
    return AmphoraDeleted(amphora_id=f"a{n}")


@pytest.fixture(params=["postgres", "memory"])
async def store(request: pytest.FixtureRequest, db: asyncpg.Pool) -> AsyncIterator[EventStore]:
    """The same contract suite runs against both stores."""
    yield InMemoryEventStore() if request.param == "memory" else PostgresEventStore(db)


async def test_append_then_read_stream_in_order(store: EventStore) -> None:
    await store.append("amphora-x", 0, [deleted(1), deleted(2)], META)
    await store.append("amphora-x", 2, [deleted(3)], META)
    events = await store.read_stream("amphora-x")
    assert [e.stream_version for e in events] == [1, 2, 3]
    assert [e.payload.amphora_id for e in events] == ["a1", "a2", "a3"]  # type: ignore[attr-defined]
    assert events[0].metadata.correlation_id == "c-1"
    assert (await store.read_stream("amphora-x", after_version=2))[0].stream_version == 3


async def test_stale_expected_version_is_a_concurrency_error(store: EventStore) -> None:
    await store.append("amphora-y", 0, [deleted(1)], META)
    with pytest.raises(ConcurrencyError):
        await store.append("amphora-y", 0, [deleted(2)], META)
    with pytest.raises(ConcurrencyError):
        await store.append("amphora-y", 5, [deleted(2)], META)  # ahead of the stream: no gaps
    assert len(await store.read_stream("amphora-y")) == 1


async def test_read_all_follows_global_order(store: EventStore) -> None:
    await store.append("amphora-a", 0, [deleted(1)], META)
    await store.append("amphora-b", 0, [deleted(2)], META)
    everything = await store.read_all()
    assert [e.stream_id for e in everything] == ["amphora-a", "amphora-b"]
    positions = [e.global_position or 0 for e in everything]
    assert positions == sorted(positions)
    assert await store.read_all(after_position=positions[0]) == everything[1:]


async def test_concurrent_appends_at_the_same_version_exactly_one_wins(
    db: asyncpg.Pool,
) -> None:
    store = PostgresEventStore(db)
    results = await asyncio.gather(
        *(store.append("amphora-race", 0, [deleted(i)], META) for i in range(8)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, ConcurrencyError)]
    assert len(winners) == 1 and len(losers) == 7
    assert len(await store.read_stream("amphora-race")) == 1
    assert await db.fetchval("SELECT count(*) FROM outbox") == 1  # nothing half-written


async def test_events_are_insert_only(db: asyncpg.Pool) -> None:
    await PostgresEventStore(db).append("amphora-z", 0, [deleted(1)], META)
    with pytest.raises(asyncpg.RaiseError, match="insert-only"):
        await db.execute("UPDATE events SET event_type = 'x'")
    with pytest.raises(asyncpg.RaiseError, match="insert-only"):
        await db.execute("DELETE FROM events")


async def test_in_transaction_hook_failure_rolls_back_everything(db: asyncpg.Pool) -> None:
    async def boom(conn: asyncpg.Connection, _: object) -> None:
        raise RuntimeError("projection failed")

    with pytest.raises(RuntimeError):
        await PostgresEventStore(db).append("amphora-h", 0, [deleted(1)], META, in_transaction=boom)
    assert await db.fetchval("SELECT count(*) FROM events") == 0
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0


async def test_an_append_in_a_callers_transaction_costs_two_statements_and_undoes_its_failures(
    db: asyncpg.Pool,
) -> None:
    store = PostgresEventStore(db)

    async def boom(conn: asyncpg.Connection, _: object) -> None:
        await conn.execute(
            "INSERT INTO outbox (event_id, subject, body) VALUES (gen_random_uuid(), 'x', '{}')"
        )
        raise RuntimeError("projection failed")

    statements: list[str] = []

    def log(query: asyncpg.connection.LoggedQuery) -> None:
        statements.append(query.query.split()[0])

    async with db.acquire() as conn, conn.transaction():
        conn.add_query_logger(log)
        await store.append("amphora-j", 0, [deleted(1)], META, conn=conn)
        await asyncio.sleep(0)  # the logger is called soon after each statement
        assert statements == ["SAVEPOINT", "WITH"]  # no release: the commit covers it
        conn.remove_query_logger(log)
        with pytest.raises(ConcurrencyError):
            await store.append("amphora-j", 0, [deleted(2)], META, conn=conn)
        with pytest.raises(RuntimeError):
            await store.append("amphora-j", 1, [deleted(2)], META, conn=conn, in_transaction=boom)
        await store.append("amphora-j", 1, [deleted(3)], META, conn=conn)
    events = await store.read_stream("amphora-j")
    assert [e.payload.amphora_id for e in events] == ["a1", "a3"]  # type: ignore[attr-defined]
    assert await db.fetchval("SELECT count(*) FROM outbox") == 2


async def test_an_append_on_a_connection_outside_a_transaction_commits_on_its_own(
    db: asyncpg.Pool,
) -> None:
    store = PostgresEventStore(db)
    async with db.acquire() as conn:
        await store.append("amphora-k", 0, [deleted(1)], META, conn=conn)
        assert not conn.is_in_transaction()
        with pytest.raises(ConcurrencyError):
            await store.append("amphora-k", 0, [deleted(2)], META, conn=conn)
        assert not conn.is_in_transaction()
        assert len(await store.read_stream("amphora-k")) == 1  # seen by another connection


async def test_a_guarded_append_of_its_own_is_one_statement_and_a_hook_adds_a_transaction(
    db: asyncpg.Pool,
) -> None:
    """Without a hook the guard's lock, its check and the append are one statement, which
    commits on its own; with one, BEGIN, the append, the hook's work, COMMIT. A refusal (the
    guarded stream moved) or a failing hook leaves nothing."""
    store = PostgresEventStore(db)
    await store.append("amphora-other", 0, [deleted(1)], META)
    guard = StreamGuard("amphora-pair", "amphora-other", 1)
    projected: list[int] = []

    async def project(conn: asyncpg.Connection, stored: list[object]) -> None:
        projected.append(len(stored))

    async def boom(conn: asyncpg.Connection, _: object) -> None:
        raise RuntimeError("projection failed")

    statements: list[str] = []

    def log(query: asyncpg.connection.LoggedQuery) -> None:
        statements.append(" ".join(query.query.split()[:2]))

    async with db.acquire() as conn:
        conn.add_query_logger(log)
        await store.append("amphora-m", 0, [deleted(1)], META, conn=conn, guard=guard)
        await asyncio.sleep(0)  # the logger is called soon after each statement
        assert statements == ["WITH current"] and not conn.is_in_transaction()
        await store.append(
            "amphora-m", 1, [deleted(2)], META, conn=conn, guard=guard, in_transaction=project
        )
        await asyncio.sleep(0)
        assert statements[1:] == ["BEGIN;", "WITH current", "COMMIT;"]
        assert projected == [1] and not conn.is_in_transaction()
        conn.remove_query_logger(log)
        moved = StreamGuard("amphora-pair", "amphora-other", 0)
        for hook in (None, project):
            with pytest.raises(ConcurrencyError):
                await store.append(
                    "amphora-m", 2, [deleted(3)], META, conn=conn, guard=moved, in_transaction=hook
                )
            assert not conn.is_in_transaction()
        with pytest.raises(RuntimeError):
            await store.append(
                "amphora-m", 2, [deleted(3)], META, conn=conn, guard=guard, in_transaction=boom
            )
        assert not conn.is_in_transaction()
    await store.append("amphora-m", 2, [deleted(4)], META, guard=guard)
    events = await store.read_stream("amphora-m")
    assert [e.payload.amphora_id for e in events] == ["a1", "a2", "a4"]  # type: ignore[attr-defined]
    assert projected == [1]


async def test_a_guarded_append_waits_for_the_lock_and_sees_what_its_holder_committed(
    db: asyncpg.Pool,
) -> None:
    """The append's statement starts while another transaction holds the guard's lock and
    has moved the guarded stream; once that commits, the check (after the lock) sees the
    move and refuses the append, although the statement's own snapshot predates it."""
    store = PostgresEventStore(db)
    guard = StreamGuard("amphora-pair-w", "amphora-other-w", 0)
    async with db.acquire() as holder:
        held = holder.transaction()
        await held.start()
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", guard.lock_key
        )
        await store.append("amphora-other-w", 0, [deleted(1)], META, conn=holder)
        waiting = asyncio.ensure_future(
            store.append("amphora-w", 0, [deleted(2)], META, guard=guard)
        )
        while not await db.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
            await asyncio.sleep(0.01)  # until the append's statement waits on the lock
        assert not waiting.done()
        await held.commit()
    with pytest.raises(ConcurrencyError):
        await waiting
    assert await store.read_stream("amphora-w") == []
    assert await db.fetchval("SELECT count(*) FROM outbox") == 1  # the holder's event's only


async def test_a_riders_writes_are_made_with_the_append_or_not_at_all(db: asyncpg.Pool) -> None:
    store = PostgresEventStore(db)
    await db.execute("CREATE TABLE rides (event_id uuid, note text)")
    rider = AppendRider(
        "ride AS (INSERT INTO rides SELECT event_id, $1 FROM inserted)", ("carried",)
    )
    made = await store.append("amphora-n", 0, [deleted(1)], META, rider=rider)
    with pytest.raises(ConcurrencyError):  # a stale version: one statement, refused whole
        await store.append("amphora-n", 0, [deleted(2)], META, rider=rider)
    guard = StreamGuard("amphora-n", "amphora-none", 0)
    await store.append("amphora-n", 1, [deleted(3)], META, rider=rider, guard=guard)

    rides = await db.fetch("SELECT event_id, note FROM rides ORDER BY note, event_id")
    events = await store.read_stream("amphora-n")
    assert sorted(r["event_id"] for r in rides) == sorted(e.event_id for e in events)
    assert {r["note"] for r in rides} == {"carried"} and made[0].event_id in {
        r["event_id"] for r in rides
    }
