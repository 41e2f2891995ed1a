"""The stale scan across replicas: one active scanner, AmphoraFailed exactly once, takeover when
the holder dies, and the circuit breaker holding a mass outage until heartbeats resume. A scan
asks the database only about the amphorae its replica has not heard lately, unless an amphora
booted since the directory's last whole load could be left out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import asyncpg

from libs.common.eventstore import PostgresEventStore
from libs.common.metrics import Metrics
from libs.common.repository import AmphoraRepository
from services.health.app import SCANNER
from services.health.handlers.directory import AmphoraDirectory
from services.health.handlers.stale_scan import ScanPolicy, StaleScanner
from tests.integration.health.conftest import (
    Beating,
    Sender,
    StartHealth,
    count_events,
    create_site,
    eventually,
)


async def amphora_status(db: asyncpg.Pool, amphora_id: str) -> str:
    status: str = await db.fetchval("SELECT status FROM amphora_view WHERE id = $1", amphora_id)
    return status


async def failed_events(db: asyncpg.Pool, amphora_id: str | None = None) -> int:
    stream = f"amphora-{amphora_id}" if amphora_id else None
    return await count_events(db, "AmphoraFailed", stream)


async def test_a_silent_amphora_fails_exactly_once_with_two_scanners_and_a_takeover(
    db: asyncpg.Pool, start_health: StartHealth, senders: Callable[[tuple[str, int]], Sender]
) -> None:
    silent, alive = await create_site(db), await create_site(db)
    first = await start_health()
    second = await start_health()
    beating = Beating(senders(first.udp), [silent, alive]).start()
    try:
        await eventually(
            lambda: _is(first.scanning != second.scanning), what="exactly one active scanner"
        )
        await asyncio.sleep(0.5)
        assert await failed_events(db) == 0

        beating.sites = [alive]
        went_silent = time.monotonic()
        await eventually(
            lambda: _equals(amphora_status(db, silent.amphora_id), "PENDING_DELETE"),
            what="the silent amphora to fail",
        )
        detected = time.monotonic() - went_silent
        # Timeout 1 s, scans every 0.2 s; its last beat went up to one interval before
        # ``went_silent``, so the silence may be detected that much sooner.
        assert 1.0 - beating.interval <= detected < 5.0, detected
        await asyncio.sleep(1.5)  # many more scans by either replica
        assert await failed_events(db, silent.amphora_id) == 1
        assert await failed_events(db) == 1
        assert await amphora_status(db, alive.amphora_id) == "ALLOCATED"
        reason = await db.fetchval(
            "SELECT data->>'reason' FROM events WHERE event_type = 'AmphoraFailed'"
        )
        assert reason.startswith("no heartbeat for")

        # The active scanner's replica dies; the standby takes over within seconds.
        active, standby = (first, second) if first.scanning else (second, first)
        await active.stop()
        if active is first:
            await beating.stop()
            beating = Beating(senders(second.udp), [alive]).start()
        await eventually(lambda: _is(standby.scanning), timeout=5.0, what="the takeover")
        beating.sites = []
        await eventually(
            lambda: _equals(amphora_status(db, alive.amphora_id), "PENDING_DELETE"),
            what="the second amphora to fail after the takeover",
        )
        await asyncio.sleep(1.0)
        assert await failed_events(db, alive.amphora_id) == 1
    finally:
        await beating.stop()


def local_scanner(
    db: asyncpg.Pool, directory: AmphoraDirectory, heard: dict[str, float]
) -> StaleScanner:
    """A scanner (timeout 1 s, boot grace 0.2 s) judging by ``heard`` as its replica's receipts."""
    policy = ScanPolicy(
        heartbeat_timeout=1.0, health_check_interval=0.2, failover_threshold=0, stale_grace=0.2
    )
    return StaleScanner(
        "postgresql://unused",
        AmphoraRepository(PostgresEventStore(db)),
        policy,
        Metrics("fulcrum_health"),
        lambda: 0.0,
        unheard=lambda before, within: directory.unheard(heard, before, within),
    )


async def test_a_scan_asks_only_about_amphorae_its_replica_has_not_heard_lately(
    db: asyncpg.Pool,
) -> None:
    site = await create_site(db)
    # The database's last-seen is 10 s old; this replica heard the amphora just now (its flush
    # is pending): a sign of life, so no failover, and no query either.
    await db.execute(
        "INSERT INTO amphora_health (amphora_id, last_seen, seq) "
        "VALUES ($1, clock_timestamp() - interval '10 s', 1)",
        site.amphora_id,
    )
    directory = AmphoraDirectory(db, 600)
    await directory.reload()
    heard = {site.amphora_id: time.monotonic()}
    scanner = local_scanner(db, directory, heard)
    async with db.acquire() as conn:
        decision = await scanner.scan(conn)
        assert (decision.fail, decision.late, scanner.queries) == ((), 0, 0)
        heard[site.amphora_id] -= 0.6  # past the lateness bound (half the timeout)
        decision = await scanner.scan(conn)
        assert [a.amphora_id for a in decision.fail] == [site.amphora_id]
        assert scanner.queries == 1


async def test_an_amphora_booted_after_the_directory_loaded_is_still_judged(
    db: asyncpg.Pool,
) -> None:
    directory = AmphoraDirectory(db, 600)
    await directory.reload()  # its last whole load: the site below is not in it
    site = await create_site(db)
    assert directory.unheard({}, time.monotonic(), 60.0) == []
    scanner = local_scanner(db, directory, {})
    async with db.acquire() as conn:
        await asyncio.sleep(1.3)  # past timeout + grace since its boot, and the load as old
        decision = await scanner.scan(conn)
    assert directory.unheard({}, time.monotonic(), 0.7) is None
    assert [a.amphora_id for a in decision.fail] == [site.amphora_id]
    assert decision.fail[0].silent_for is None and scanner.queries == 1


async def test_an_amphora_that_never_beats_fails_after_the_boot_grace(
    db: asyncpg.Pool, start_health: StartHealth
) -> None:
    site = await create_site(db)
    booted = time.monotonic()
    await start_health(stale_grace=1.5)
    await eventually(
        lambda: _equals(amphora_status(db, site.amphora_id), "PENDING_DELETE"),
        what="the never-heard amphora to fail",
    )
    assert time.monotonic() - booted >= 2.5  # timeout 1 s + grace 1.5 s
    reason = await db.fetchval(
        "SELECT data->>'reason' FROM events WHERE event_type = 'AmphoraFailed'"
    )
    assert reason == "never sent a heartbeat"


async def test_breaker_stops_a_mass_failover_and_releases_on_resume(
    db: asyncpg.Pool, start_health: StartHealth, senders: Callable[[tuple[str, int]], Sender]
) -> None:
    sites = [await create_site(db) for _ in range(20)]
    health = await start_health(failover_threshold=10)
    beating = Beating(senders(health.udp), sites).start()
    try:
        await eventually(lambda: _stopped_is(db, 0, with_rows=20), what="all 20 heard")
        await asyncio.sleep(1.3)  # past the scanner's start-up settle

        beating.sites = []  # all 20 fall silent at once
        await eventually(lambda: _stopped_is(db, 20), timeout=5.0, what="20 held by the breaker")
        await asyncio.sleep(2.0)  # ten more scans
        assert await failed_events(db) == 0
        assert health.metric("amphorae_failed_total") == 0
        assert health.metric("breaker_trips_total") >= 1
        assert {await amphora_status(db, s.amphora_id) for s in sites} == {"ALLOCATED"}
        assert health.app[SCANNER].stopped == 20

        beating.sites = sites  # heartbeats resume
        await eventually(lambda: _stopped_is(db, 0), what="all 20 released")
        assert health.metric("amphorae_released_total") == 20
        await asyncio.sleep(1.5)
        assert await failed_events(db) == 0

        # Below the threshold the breaker stays closed: three silent amphorae fail over.
        beating.sites = sites[3:]
        await eventually(
            lambda: _failed_is(db, 3), timeout=5.0, what="three failovers below the threshold"
        )
        await asyncio.sleep(1.0)
        assert await failed_events(db) == 3
    finally:
        await beating.stop()


async def _is(value: bool) -> bool:
    return value


async def _equals(awaitable: object, wanted: str) -> bool:
    return await awaitable == wanted  # type: ignore[misc]


async def _stopped_is(db: asyncpg.Pool, count: int, with_rows: int | None = None) -> bool:
    row = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE failover_stopped) AS stopped, "
        "count(*) FILTER (WHERE last_seen IS NOT NULL) AS heard FROM amphora_health"
    )
    return bool(row["stopped"] == count and (with_rows is None or row["heard"] == with_rows))


async def _failed_is(db: asyncpg.Pool, count: int) -> bool:
    return await failed_events(db) == count


async def test_a_stalled_service_fails_no_amphora_that_kept_beating(
    db: asyncpg.Pool, start_health: StartHealth, senders: Callable[[tuple[str, int]], Sender]
) -> None:
    """The health process does not run for twice the timeout (a long scrape, a pause) while
    its amphorae go on beating: their beats wait in the socket, and no scan judges them
    before they are read. An amphora that stays silent is still failed after the stall."""
    alive, silent = await create_site(db), await create_site(db)
    health = await start_health(receive_gather=0.05)
    sender = senders(health.udp)
    beating = Beating(sender, [alive, silent]).start()
    try:
        await eventually(lambda: _is(health.scanning), what="the active scanner")
        await asyncio.sleep(1.5)  # the scanner settled, both heard
        await beating.stop()

        stop = threading.Event()

        def beat_meanwhile() -> None:
            while not stop.wait(0.1):
                sender.beat(alive)

        thread = threading.Thread(target=beat_meanwhile)
        thread.start()
        try:
            time.sleep(2.0)  # noqa: ASYNC251 (the stall under test: nothing else runs)
            await asyncio.sleep(1.5)  # many scans after it, the alive one still beating
        finally:
            stop.set()
            thread.join()

        assert await failed_events(db, alive.amphora_id) == 0
        await eventually(
            lambda: _equals(amphora_status(db, silent.amphora_id), "PENDING_DELETE"),
            what="the silent amphora to fail",
        )
    finally:
        await beating.stop()
