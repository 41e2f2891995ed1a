"""Outbox relay and JetStream consumers against real Postgres and a real ``nats-server -js``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from deploy.local.embedded import EmbeddedNats
from libs.common import bus, subjects
from libs.common.events import Envelope, Metadata
from libs.common.events.amphora import AmphoraDeleted, AmphoraFailed
from libs.common.eventstore import PostgresEventStore
from libs.common.outbox import OutboxRelay
from libs.common.settings import NatsSettings, RelaySettings
from tests.integration.conftest import Jet

META = Metadata(correlation_id="c", actor="test")
EFFECTS_DDL = (
    "CREATE TABLE IF NOT EXISTS effects (event_id uuid, stream_id text, version int, "
    "seen_at timestamptz DEFAULT clock_timestamp())"
)


async def record_effect(envelope: Envelope, conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO effects (event_id, stream_id, version) VALUES ($1, $2, $3)",
        envelope.event_id,
        envelope.stream_id,
        envelope.stream_version,
    )


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


class Harness:
    """Runs relays and consumers as tasks and cancels them all at the end."""

    def __init__(self, db: asyncpg.Pool, dsn: str, jet_settings: NatsSettings) -> None:
        self.db = db
        self.dsn = dsn
        self.settings = jet_settings
        self.tasks: list[asyncio.Task[None]] = []
        self.store = PostgresEventStore(db)
        self._ncs: list[NatsClient] = []

    def start(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def relay(self, publisher: bus.JetStreamPublisher | None = None) -> OutboxRelay:
        nc = await bus.connect(self.settings, "relay")
        self._ncs.append(nc)
        relay = OutboxRelay(
            self.dsn,
            publisher or bus.JetStreamPublisher(nc.jetstream(), self.settings),
            RelaySettings(poll_interval=0.2, max_backoff=0.5),
        )
        self.start(relay.run())
        return relay

    async def consumer(
        self,
        name: str = "test-effects",
        acked_unhandled: frozenset[str] = frozenset(),
        *,
        linger: float = bus.FETCH_LINGER,
    ) -> None:
        """A consumer recording effects, woken by its connection's reconnects."""
        reconnects = bus.Reconnects()
        nc = await bus.connect(self.settings, name, reconnects)
        self._ncs.append(nc)
        spec = bus.ConsumerSpec(
            name,
            [subjects.ALL_EVENTS],
            record_effect,
            nak_delay=0.1,
            acked_unhandled=acked_unhandled,
        )
        runner = bus.ConsumerRunner(
            nc.jetstream(), self.db, spec, self.settings, reconnects=reconnects, linger=linger
        )
        self.start(runner.run())

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for nc in self._ncs:
            await nc.close()
        self._ncs.clear()

    async def effects(self) -> list[asyncpg.Record]:
        return await self.db.fetch("SELECT * FROM effects ORDER BY seen_at")


@pytest.fixture
async def harness(db: asyncpg.Pool, pg_dsn: str, jet: Jet) -> AsyncIterator[Harness]:
    await db.execute(EFFECTS_DDL)
    h = Harness(db, pg_dsn, jet.settings)
    try:
        yield h
    finally:
        await h.close()


async def append_many(store: PostgresEventStore, streams: int, per_stream: int) -> None:
    for v in range(per_stream):
        for s in range(streams):
            await store.append(f"amphora-s{s}", v, [AmphoraDeleted(amphora_id=f"{s}-{v}")], META)


async def test_events_flow_from_append_to_consumer_once(harness: Harness) -> None:
    await harness.relay()
    await harness.consumer()
    await append_many(harness.store, streams=3, per_stream=4)
    await wait_until(lambda: _count(harness.db, "effects", 12))
    await wait_until(lambda: _count(harness.db, "outbox", 0))
    rows = await harness.effects()
    assert len({r["event_id"] for r in rows}) == 12


async def test_redelivery_produces_one_effect(harness: Harness, jet: Jet) -> None:
    await harness.consumer()
    envelope = (await harness.store.append("amphora-r", 0, [AmphoraDeleted(amphora_id="r")], META))[
        0
    ]
    body = json.dumps(envelope.to_wire()).encode()
    subject = subjects.event_subject(envelope.stream_id, envelope.event_type)
    # The same event published twice with different msg ids: the bus cannot dedupe it,
    # so the consumer's processed_messages row must.
    await jet.js.publish(subject, body, headers={bus.Header.MSG_ID: "one"})
    await jet.js.publish(subject, body, headers={bus.Header.MSG_ID: "two"})
    await wait_until(lambda: _count(harness.db, "processed_messages", 1))
    await asyncio.sleep(0.5)
    assert len(await harness.effects()) == 1


async def test_event_types_acked_unhandled_reach_neither_handler_nor_database(
    harness: Harness, jet: Jet
) -> None:
    await harness.relay()
    await harness.consumer("test-some", acked_unhandled=frozenset({"AmphoraDeleted"}))
    deleted = AmphoraDeleted(amphora_id="u")
    failed = AmphoraFailed(amphora_id="u", reason="test")
    await harness.store.append("amphora-u", 0, [deleted, failed, deleted], META)
    await wait_until(lambda: _count(harness.db, "effects", 1))
    await wait_until(lambda: _count(harness.db, "outbox", 0))

    async def all_acked() -> bool:
        info = await jet.js.consumer_info(jet.settings.stream, "test-some")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await wait_until(all_acked)
    await asyncio.sleep(0.3)  # room for a late effect to show
    assert [r["version"] for r in await harness.effects()] == [2]
    assert await _count(harness.db, "processed_messages", 1)


async def test_duplicate_msg_id_is_absorbed_by_jetstream(jet: Jet) -> None:
    publisher = bus.JetStreamPublisher(jet.js, jet.settings)
    subject = subjects.event_subject("amphora-d", "AmphoraDeleted")
    first = await publisher.publish(subject, b"{}", "same-id")
    again = await publisher.publish(subject, b"{}", "same-id")
    assert not first.duplicate and again.duplicate
    assert again.stream_sequence == first.stream_sequence


class CrashAfterPublish:
    """Publishes for real, then dies before the relay can delete the outbox row."""

    def __init__(self, inner: bus.JetStreamPublisher, crash_after: int) -> None:
        self.inner = inner
        self.left = crash_after

    async def publish(self, *args: object, **kwargs: object) -> bus.Published:
        result = await self.inner.publish(*args, **kwargs)  # type: ignore[arg-type]
        self.left -= 1
        if self.left == 0:
            raise asyncio.CancelledError  # the relay process dies here
        return result


async def test_relay_killed_between_publish_and_delete_loses_and_doubles_nothing(
    harness: Harness, jet: Jet
) -> None:
    await harness.consumer()
    await append_many(harness.store, streams=2, per_stream=5)
    crashing = CrashAfterPublish(bus.JetStreamPublisher(jet.js, jet.settings), crash_after=4)
    dead = await harness.relay(crashing)  # type: ignore[arg-type]
    await asyncio.gather(harness.tasks[-1], return_exceptions=True)
    assert dead.published == 3  # the 4th was published but its row was never deleted
    assert await harness.db.fetchval("SELECT count(*) FROM outbox") == 7
    restarted = await harness.relay()
    await wait_until(lambda: _count(harness.db, "outbox", 0))
    await wait_until(lambda: _count(harness.db, "effects", 10))
    await asyncio.sleep(0.5)
    assert restarted.duplicates == 1  # the republished row was absorbed by Nats-Msg-Id
    assert len(await harness.effects()) == 10


async def test_nats_down_for_10s_loses_nothing_and_keeps_per_stream_order(
    db: asyncpg.Pool, pg_dsn: str, nats_factory: EmbeddedNats
) -> None:
    await db.execute(EFFECTS_DDL)
    url = nats_factory.start()
    settings = NatsSettings(url=url, ack_wait=5.0, max_deliver=3)
    nc = await bus.connect(settings, "setup")
    await bus.ensure_stream(nc.jetstream(), settings)
    await nc.close()
    h = Harness(db, pg_dsn, settings)
    try:
        await h.relay()
        await h.consumer()
        await append_many(h.store, streams=3, per_stream=2)
        await wait_until(lambda: _count(db, "effects", 6))
        nats_factory.stop()
        appended_while_down = asyncio.ensure_future(append_many_later(h.store))
        await asyncio.sleep(10)
        await appended_while_down
        assert await db.fetchval("SELECT count(*) FROM outbox") == 9  # all waiting
        nats_factory.start()
        await wait_until(lambda: _count(db, "effects", 15), timeout=30)
        await wait_until(lambda: _count(db, "outbox", 0))
        rows = await h.effects()
        for s in range(3):
            versions = [r["version"] for r in rows if r["stream_id"] == f"amphora-s{s}"]
            assert versions == sorted(versions) == list(range(1, 6))
    finally:
        await h.close()


async def append_many_later(store: PostgresEventStore) -> None:
    for v in range(2, 5):
        for s in range(3):
            await store.append(f"amphora-s{s}", v, [AmphoraDeleted(amphora_id=f"{s}-{v}")], META)
        await asyncio.sleep(1)


async def test_two_relays_only_one_publishes(harness: Harness) -> None:
    first = await harness.relay()
    second = await harness.relay()
    await harness.consumer()
    await append_many(harness.store, streams=4, per_stream=5)
    await wait_until(lambda: _count(harness.db, "effects", 20))
    assert sorted([first.published, second.published]) == [0, 20]
    assert [first.active, second.active].count(True) == 1


async def test_standby_relay_takes_over_when_the_active_one_dies(harness: Harness) -> None:
    first = await harness.relay()
    await wait_until(lambda: _is(first.active))
    second = await harness.relay()
    harness.tasks[0].cancel()  # the active relay dies; its connection and lock go with it
    await wait_until(lambda: _is(second.active), timeout=10)
    await harness.consumer()
    await append_many(harness.store, streams=1, per_stream=3)
    await wait_until(lambda: _count(harness.db, "effects", 3))
    assert second.published == 3


async def test_poison_message_is_dead_lettered_and_does_not_block(
    harness: Harness, jet: Jet
) -> None:
    await harness.relay()
    await harness.consumer()
    await jet.js.publish(subjects.event_subject("amphora-p", "NoSuchEvent"), b"not json")
    bogus = {
        "event_id": "00000000-0000-0000-0000-000000000001",
        "event_type": "NoSuchEvent",
        "schema_version": 1,
        "stream_id": "amphora-p",
        "stream_version": 1,
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "data": {},
    }
    await jet.js.publish(
        subjects.event_subject("amphora-p", "NoSuchEvent"), json.dumps(bogus).encode()
    )
    await append_many(harness.store, streams=1, per_stream=3)
    await wait_until(lambda: _count(harness.db, "effects", 3))
    await wait_until(lambda: _count(harness.db, "dead_letters", 2))
    reasons = [r["reason"] for r in await harness.db.fetch("SELECT reason FROM dead_letters")]
    assert all(r.startswith("undecodable event") for r in reasons)


async def test_failing_handler_is_retried_then_dead_lettered(
    db: asyncpg.Pool, jet: Jet, harness: Harness
) -> None:
    calls = 0

    async def always_fails(envelope: Envelope, conn: asyncpg.Connection) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("handler bug")

    spec = bus.ConsumerSpec("test-failing", [subjects.ALL_EVENTS], always_fails, nak_delay=0.05)
    harness.start(bus.ConsumerRunner(jet.js, db, spec, jet.settings).run())
    await harness.relay()
    await harness.store.append("amphora-f", 0, [AmphoraDeleted(amphora_id="f")], META)
    await wait_until(lambda: _count(db, "dead_letters", 1))
    assert calls == jet.settings.max_deliver
    assert await db.fetchval("SELECT count(*) FROM processed_messages") == 0  # rolled back


async def _count(db: asyncpg.Pool, table: str, expected: int) -> bool:
    return bool(await db.fetchval(f"SELECT count(*) FROM {table}") == expected)


async def _is(value: bool) -> bool:
    return value


async def test_the_handler_runs_holding_its_events_work_lock(
    harness: Harness, jet: Jet, db: asyncpg.Pool
) -> None:
    """The consumer takes ``work_lock``'s lock with the processed row: while the handler runs,
    no other transaction gets it; an event without a key takes none."""
    others_got: dict[str, bool] = {}

    async def handler(envelope: Envelope, conn: asyncpg.Connection) -> None:
        async with db.acquire() as other, other.transaction():
            others_got[envelope.aggregate_id] = await other.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", "locked-key"
            )

    spec = bus.ConsumerSpec(
        "test-work-lock",
        [subjects.ALL_EVENTS],
        handler,
        nak_delay=0.1,
        work_lock=lambda envelope: "locked-key" if envelope.aggregate_id == "held" else None,
    )
    harness.start(bus.ConsumerRunner(jet.js, db, spec, jet.settings).run())
    await harness.relay()
    for amphora in ("held", "free"):  # one after the other: the handlers do not overlap
        await harness.store.append(f"amphora-{amphora}", 0, [AmphoraDeleted(amphora_id="x")], META)

        async def handled(amphora: str = amphora) -> bool:
            return amphora in others_got

        await wait_until(handled)
    assert others_got == {"held": False, "free": True}
    async with db.acquire() as conn, conn.transaction():  # released with its transaction
        assert await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", "locked-key"
        )


async def test_an_idle_consumer_takes_a_new_event_at_once(harness: Harness) -> None:
    """Its pull request waits on the server (``FETCH_LINGER``); a message is handed over as
    it arrives, not when the request expires."""
    await harness.relay()
    await harness.consumer(linger=30.0)
    await asyncio.sleep(1.0)  # idle: the consumer's request waits
    appended = time.monotonic()
    await harness.store.append("amphora-idle", 0, [AmphoraDeleted(amphora_id="idle")], META)
    await wait_until(lambda: _effects(harness.db, 1), timeout=10.0)
    assert time.monotonic() - appended < 2.0


async def _effects(db: asyncpg.Pool, count: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM effects") == count)
